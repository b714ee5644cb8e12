//! Crashes: `kill -9` of `linkfarm apply` and of the daemon at random points of long passes that
//! adopt, quarantine and replace; then a restart must converge, lose nothing, and leave nothing.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A tree that needs a long pass: `n` entries, each in a random broken state.
fn build(root: &Path, n: u64, rng: &mut Rng, counter: &mut u64) {
    let models = root.join("models");
    let up = root.join("up");
    fs::create_dir_all(&models).unwrap();
    fs::create_dir_all(&up).unwrap();
    let mut write = |p: &Path| {
        *counter += 1;
        fs::write(p, format!("content-{counter}")).unwrap();
    };
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("e{i:04}");
        let t = models.join(&name);
        fs::create_dir(&t).unwrap();
        if rng.chance(30) {
            write(&t.join("same.bin"));
        }
        let l = up.join(&name);
        match rng.below(6) {
            0 => {}
            1 => symlink(models.join("e0000"), &l).unwrap(),
            2 => symlink("/nonexistent/foreign", &l).unwrap(),
            3 | 4 => {
                fs::create_dir(&l).unwrap();
                for j in 0..1 + rng.below(3) {
                    write(&l.join(if j == 0 {
                        "same.bin".to_string()
                    } else {
                        format!("f{j}.bin")
                    }));
                }
                if rng.chance(30) {
                    fs::create_dir(l.join("sub")).unwrap();
                    write(&l.join("sub/deep.bin"));
                }
            }
            _ => write(&l),
        }
        names.push(name);
    }
    let policy = if rng.chance(50) { "adopt" } else { "quarantine" };
    fs::write(
        root.join("linkfarm.yaml"),
        format!(
            "version: 1\nfarms:\n  - name: c\n    target_dir: models\n    link_dir: up\n    entries: [{}]\n    \
             on_conflict: {policy}\nsettings:\n  adopt_after: 0s\n  state_file: state.json\n",
            names.join(", ")
        ),
    )
    .unwrap();
}

fn apply(cfg: &Path) -> std::process::Output {
    Command::new(bin())
        .arg("-c")
        .arg(cfg)
        .arg("apply")
        .output()
        .unwrap()
}

#[test]
fn kill_9_during_passes_loses_nothing() {
    let iterations = size("LINKFARM_CRASHES", 40, 1000);
    let entries = size("LINKFARM_CRASH_ENTRIES", 60, 150);
    let seed0 = size("LINKFARM_CRASH_SEED", 1, 1);
    let mut killed_mid_pass = 0;
    let mut counter = 0;
    let mut files = 0;
    // How long a whole pass takes here, to kill uniformly inside it.
    let calib = {
        let d = tempfile::tempdir().unwrap();
        build(d.path(), entries, &mut Rng::new(0), &mut counter);
        let t = Instant::now();
        assert!(apply(&d.path().join("linkfarm.yaml")).status.success());
        t.elapsed().max(Duration::from_millis(2))
    };
    for i in 0..iterations {
        let seed = seed0 + i;
        let mut rng = Rng::new(seed);
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        build(root, entries, &mut rng, &mut counter);
        let cfg = root.join("linkfarm.yaml");
        let before = inventory(root);
        files += before.len();
        let daemon = rng.chance(50);
        let mut cmd = Command::new(bin());
        cmd.arg("-c").arg(&cfg).arg(if daemon { "run" } else { "apply" });
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let at = Duration::from_micros(rng.below(calib.as_micros() as u64 * 3 / 2));
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            killed_mid_pass += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let replay = format!(
            "replay: LINKFARM_CRASHES=1 LINKFARM_CRASH_SEED={seed} LINKFARM_CRASH_ENTRIES={entries} \
             cargo test -p linkfarm --test campaigns kill_9"
        );
        let r = apply(&cfg);
        assert!(
            r.status.success(),
            "restart failed ({replay}): {}",
            String::from_utf8_lossy(&r.stdout)
        );
        assert_eq!(states(&cfg), ["converged"], "{replay}");
        // The daemon's own state file (and a temp file of it, when the kill hit its write) is not
        // user data; that start-up removes the temp file is tested on its own below.
        for e in fs::read_dir(root).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("state.json") {
                fs::remove_file(e.path()).unwrap();
            }
        }
        let after = inventory(root);
        assert!(
            after == before,
            "files lost or changed ({replay}): {}",
            inventory_diff(&before, &after)
        );
        assert!(
            temp_leftovers(root).is_empty(),
            "{:?} ({replay})",
            temp_leftovers(root)
        );
    }
    println!(
        "crash campaign: {iterations} kill -9 ({killed_mid_pass} mid-pass) of apply/run over {entries}-entry \
         trees (pass ~{calib:?}); {files} files checked; 0 lost, 0 leftovers"
    );
}

#[test]
fn start_up_removes_state_file_temps_of_a_killed_daemon() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    build(root, 3, &mut Rng::new(7), &mut 0);
    fs::write(root.join("state.json.tmp.4242"), "").unwrap();
    fs::write(root.join("state.json.tmp.notapid"), "keep").unwrap();
    let mut daemon = Command::new(bin())
        .arg("-c")
        .arg(root.join("linkfarm.yaml"))
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("state file written", Duration::from_secs(10), || {
        root.join("state.json").exists()
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(!root.join("state.json.tmp.4242").exists());
    assert!(
        root.join("state.json.tmp.notapid").exists(),
        "only the exact pattern is removed"
    );
}

/// Hostile tree: a link_dir with a huge number of foreign entries (files, FIFOs, folders) around
/// a few links. The pass stays correct and leaves every foreign entry alone.
#[test]
fn huge_link_dir_is_handled() {
    let n = size("LINKFARM_HUGE", 20_000, 1_000_000);
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    fs::create_dir_all(root.join("models/a")).unwrap();
    fs::create_dir_all(root.join("models/b")).unwrap();
    let up = root.join("up");
    fs::create_dir_all(&up).unwrap();
    for i in 0..n {
        let p = up.join(format!("x{i:07}"));
        match i % 100 {
            0 => fs::create_dir(&p).unwrap(),
            1 => nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap(),
            _ => drop(fs::File::create(&p).unwrap()),
        }
    }
    symlink(root.join("models/b"), up.join("a")).unwrap();
    fs::write(
        root.join("linkfarm.yaml"),
        "version: 1\nfarms:\n  - name: h\n    target_dir: models\n    link_dir: up\n    entries: [a, b]\n",
    )
    .unwrap();
    let t = Instant::now();
    assert!(apply(&root.join("linkfarm.yaml")).status.success());
    let first = t.elapsed();
    let t = Instant::now();
    assert_eq!(states(&root.join("linkfarm.yaml")), ["converged"]);
    let check = t.elapsed();
    assert_eq!(fs::read_link(up.join("a")).unwrap(), root.join("models/a"));
    assert_eq!(fs::read_dir(&up).unwrap().count() as u64, n + 2);
    println!(
        "hostile tree: {n} foreign entries in link_dir; apply {first:?}, check {check:?}, all left alone"
    );
}
