//! The man page and shell completions in packaging/ are generated from the clap definitions; this
//! test fails when they drift. `LINKFARM_BLESS=1 cargo test -p linkfarm --test docs` rewrites them.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use linkfarm::cli::Cli;

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging")
}

fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    // One page for linkfarm and one per subcommand (linkfarm-run.1, ...), as clap_mangen links them.
    let tmp = tempfile::tempdir().unwrap();
    clap_mangen::generate_to(Cli::command(), tmp.path()).unwrap();
    for e in std::fs::read_dir(tmp.path()).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name.to_string_lossy().starts_with("linkfarm-help") {
            continue;
        }
        out.push((
            packaging().join("man").join(name),
            std::fs::read(e.path()).unwrap(),
        ));
    }
    for (shell, file) in [
        (Shell::Bash, "linkfarm.bash"),
        (Shell::Zsh, "_linkfarm"),
        (Shell::Fish, "linkfarm.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "linkfarm", &mut buf);
        out.push((packaging().join("completions").join(file), buf));
    }
    out
}

#[test]
fn man_page_and_completions_match_the_cli() {
    let bless = std::env::var_os("LINKFARM_BLESS").is_some();
    let mut stale = Vec::new();
    for (path, content) in generated() {
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(content.as_slice()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date (run LINKFARM_BLESS=1 cargo test -p linkfarm --test docs): {stale:?}"
    );
}

#[test]
fn every_subcommand_has_help() {
    let cmd = Cli::command();
    for sub in cmd.get_subcommands() {
        assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
    }
    for name in ["run", "check", "apply", "validate", "status"] {
        assert!(cmd.find_subcommand(name).is_some(), "{name}");
    }
}
