//! The corpus that real writers make (tests/corpus/make_corpus.py: the `safetensors` and `gguf`
//! Python packages, stdlib zipfile/pickle with a stub torch) plus the malicious and damaged
//! files, each checked against the verdict its manifest names.
//!
//! Needs python3 (or `LINKFARM_PYTHON`); the generator pip-installs its packages when missing.
//! When it cannot run, the test says so and passes, unless `LINKFARM_REQUIRE_CORPUS=1` (.ci/run
//! sets it, after making a venv with the packages) makes that a failure.

use std::path::Path;
use std::process::Command;

use linkfarm_formats::{check, FileType, Limits, Reason};

#[test]
fn every_corpus_file_gets_the_verdict_its_manifest_names() {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus/make_corpus.py");
    let python = std::env::var_os("LINKFARM_PYTHON").unwrap_or_else(|| "python3".into());
    let out = Command::new(python).arg(&script).arg(dir.path()).output();
    let required = std::env::var_os("LINKFARM_REQUIRE_CORPUS").is_some_and(|v| v == "1");
    match &out {
        Ok(o) if o.status.success() => {}
        _ => {
            let why = match out {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            assert!(!required, "the corpus generator failed: {why}");
            eprintln!("SKIPPED: the corpus generator could not run: {why}");
            return;
        }
    }
    let manifest: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert!(manifest.len() >= 80, "only {} files", manifest.len());
    let mut failures = Vec::new();
    for m in &manifest {
        let name = m["file"].as_str().unwrap();
        let expect = m["expect"].as_str().unwrap();
        let ft = FileType::from_name(name).unwrap_or_else(|| panic!("{name}: no type"));
        let mut f = std::fs::File::open(dir.path().join(name)).unwrap();
        let got = check(&mut f, ft, &Limits::default());
        let ok = match (expect, &got) {
            ("ok", Ok(v)) => m["kind"]
                .as_str()
                .is_none_or(|k| v.kind.map(|g| g.kind.as_str()) == Some(k)),
            ("corrupt", Err(r)) => r.reason == Reason::Corrupt,
            ("unsafe", Err(r)) => r.reason == Reason::Unsafe,
            _ => false,
        } && m["words"].as_str().is_none_or(|w| match &got {
            Err(r) => r.message.contains(w),
            Ok(_) => false,
        });
        if !ok {
            failures.push(format!("{name}: expected {expect} {}, got {got:?}", m["words"]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
