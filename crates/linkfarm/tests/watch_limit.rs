//! Fault: the inotify watch limit is exhausted (ENOSPC from `fs.inotify.max_user_watches`). The
//! daemon must say which sysctl to raise, keep the farm repaired by polling, and take its watches
//! back once the limit allows. The limit is system-wide, so this is its own test binary (cargo
//! runs test binaries one at a time) with a single test; it needs root and restores the limit.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: &str = "/proc/sys/fs/inotify/max_user_watches";

struct Restore(String);
impl Drop for Restore {
    fn drop(&mut self) {
        let _ = fs::write(LIMIT, &self.0);
    }
}

#[track_caller]
fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    linkfarm_testsupport::wait_for_within(what, Duration::from_secs(20), cond);
}

#[test]
fn exhausted_watch_limit_is_explained_polled_and_recovered() {
    if !nix::unistd::geteuid().is_root() || fs::write(LIMIT, fs::read_to_string(LIMIT).unwrap()).is_err() {
        eprintln!("skipped: needs root and a writable {LIMIT}");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    fs::create_dir_all(root.join("models/a")).unwrap();
    fs::create_dir_all(root.join("up")).unwrap();
    fs::write(
        root.join("linkfarm.yaml"),
        "version: 1\nfarms:\n  - name: w\n    target_dir: models\n    link_dir: up\n    entries: [a]\n\
         settings:\n  poll_interval: 200ms\n  state_file: state.json\n",
    )
    .unwrap();
    let doctor_before = Command::new(env!("CARGO_BIN_EXE_linkfarm"))
        .arg("-c")
        .arg(root.join("linkfarm.yaml"))
        .args(["doctor", "--smb-conf", "/nonexistent"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&doctor_before.stdout).contains("OK    inotify: max_user_watches"));

    let saved = Restore(fs::read_to_string(LIMIT).unwrap());
    fs::write(LIMIT, "1").unwrap();
    let log = root.join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_linkfarm"))
        .arg("-c")
        .arg(root.join("linkfarm.yaml"))
        .arg("run")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let text = || fs::read_to_string(&log).unwrap_or_default();
    wait_for("the sysctl to raise is named", || {
        text().contains("fs.inotify.max_user_watches")
    });
    let doctor = Command::new(env!("CARGO_BIN_EXE_linkfarm"))
        .arg("-c")
        .arg(root.join("linkfarm.yaml"))
        .args(["doctor", "--smb-conf", "/nonexistent"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&doctor.stdout);
    assert!(out.contains("FAIL  inotify: max_user_watches is 1"), "{out}");
    assert_eq!(doctor.status.code(), Some(1));
    // Without watches the farm is polled: a deletion is still repaired.
    wait_for("first link", || root.join("up/a").is_symlink());
    fs::remove_file(root.join("up/a")).unwrap();
    wait_for("repaired by polling", || root.join("up/a").is_symlink());
    // Polled at the poll interval, not in a busy loop: three passes take two intervals at least
    // (a farm polled because it was unwatched once kept its poll time in the past).
    let passes = || -> u64 {
        fs::read(root.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["farms"][0]["passes"].as_u64())
            .unwrap_or(0)
    };
    let (p0, t0) = (passes(), std::time::Instant::now());
    wait_for("three polls", || passes() >= p0 + 3);
    assert!(
        t0.elapsed() >= Duration::from_millis(350),
        "3 passes in {:?}: polling must wait poll_interval (200ms) between passes",
        t0.elapsed()
    );
    drop(saved);
    wait_for("watches taken back", || {
        text().contains("watching") && text().contains("again")
    });
    fs::remove_file(root.join("up/a")).unwrap();
    wait_for("repaired", || root.join("up/a").is_symlink());
    assert!(child.try_wait().unwrap().is_none(), "the daemon kept running");
    let _ = child.kill();
    let _ = child.wait();
    println!("fault: watch limit exhausted → sysctl named, polled, watches recovered");
}
