//! `linkfarm verify` as a user runs it (SPEC §11): a good file passes, a truncated safetensors
//! and an unsafe pickle FAIL, a LoRA in checkpoints/ WARNs, other files are skipped, symlinks
//! and FIFOs are never opened, and the exit code says whether anything failed.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_linkfarm"));
    c.env_remove("LINKFARM_CONFIG");
    c
}

use linkfarm_testsupport::safetensors;

/// A protocol-2 pickle that calls os.system (as Linux pickles it: posix.system).
fn evil_pickle() -> Vec<u8> {
    b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.".to_vec()
}

fn tree(root: &Path) {
    let models = root.join("models");
    for d in ["checkpoints", "loras", "vae"] {
        fs::create_dir_all(models.join(d)).unwrap();
    }
    let good = safetensors(&["model.diffusion_model.x", "first_stage_model.decoder.y"]);
    fs::write(models.join("checkpoints/good.safetensors"), &good).unwrap();
    fs::write(
        models.join("checkpoints/half.safetensors"),
        &good[..good.len() - 3],
    )
    .unwrap();
    fs::write(models.join("loras/evil.pt"), evil_pickle()).unwrap();
    fs::write(models.join("loras/preview.gif"), b"GIF89a").unwrap();
    fs::write(models.join(".DS_Store"), b"\0\0\0\x01Bud1").unwrap();
    // Never followed, never opened: a link to an unsafe file outside, and a FIFO that would
    // block an open without O_NONBLOCK.
    fs::create_dir(root.join("outside")).unwrap();
    fs::write(root.join("outside/evil.pt"), evil_pickle()).unwrap();
    symlink(root.join("outside/evil.pt"), models.join("vae/linked.pt")).unwrap();
    nix::unistd::mkfifo(
        &models.join("vae/fifo.safetensors"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn verify_fails_the_truncated_and_the_unsafe_and_passes_the_good() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let models = dir.path().join("models");
    let o = bin().arg("verify").arg(&models).output().unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 2, "{out}");
    assert!(
        fails[0].contains("half.safetensors") && fails[0].contains("truncated"),
        "{out}"
    );
    assert!(
        fails[1].contains("evil.pt") && fails[1].contains("posix.system"),
        "{out}"
    );
    assert!(
        !out.contains("good.safetensors"),
        "an OK file printed a line: {out}"
    );
    assert!(
        !out.contains("linked.pt") && !out.contains("outside"),
        "followed a symlink: {out}"
    );
    assert!(
        out.contains("3 checked: 1 ok, 0 warn, 2 fail; 4 skipped"),
        "{out}"
    );

    // Only the good file: exit 0; --hash prints its SHA-256 and the short form.
    let good = models.join("checkpoints/good.safetensors");
    let o = bin().arg("verify").arg("--hash").arg(&good).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let (d, _) = linkfarm_formats::hash::sha256(&mut fs::File::open(&good).unwrap()).unwrap();
    assert!(
        stdout(&o).contains(&format!("{}  {}  {}", d.hex(), &d.hex()[..10], good.display())),
        "{}",
        stdout(&o)
    );
}

#[test]
fn verify_warns_of_a_lora_in_checkpoints_and_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("models/checkpoints");
    fs::create_dir_all(&ck).unwrap();
    fs::write(
        ck.join("lora.safetensors"),
        safetensors(&["lora_unet_a.lora_down.weight", "lora_unet_a.lora_up.weight"]),
    )
    .unwrap();
    let o = bin().args(["verify", "--json"]).arg(dir.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "a WARN is not a failure");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["summary"]["warn"], 1, "{v}");
    assert_eq!(v["files"][0]["status"], "warn");
    assert_eq!(v["files"][0]["kind"], "lora");
    assert_eq!(v["files"][0]["reason"], "kind");
}

#[test]
fn verify_without_paths_checks_every_farms_target_dir() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    fs::create_dir(dir.path().join("links")).unwrap();
    let cfg = dir.path().join("linkfarm.yaml");
    fs::write(
        &cfg,
        "version: 1\nfarms:\n  - name: m\n    target_dir: models\n    link_dir: links\n    entries: \"*\"\n",
    )
    .unwrap();
    let o = bin().arg("-c").arg(&cfg).arg("verify").output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("2 fail"), "{}", stdout(&o));
}

#[test]
fn verify_without_paths_checks_an_inbox_s_target_dir() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let cfg = dir.path().join("linkfarm.yaml");
    fs::write(
        &cfg,
        "version: 1\ninboxes:\n  - name: in\n    dir: inbox\n    target_dir: models\n",
    )
    .unwrap();
    let o = bin().arg("-c").arg(&cfg).arg("verify").output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("2 fail"), "{}", stdout(&o));
}
