//! Two daemons on one tree, as two hosts on shared storage would be: with the same config they
//! converge with a bounded number of operations and never report flapping; with conflicting
//! configs both report `flapping` and back off instead of fighting forever.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

fn start(cfg: &Path) -> Child {
    Command::new(bin())
        .arg("-c")
        .arg(cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn state(path: &Path) -> Value {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn write(root: &Path, name: &str, entries: &str) {
    fs::write(
        root.join(name),
        format!(
            "version: 1\nfarms:\n  - name: f\n    target_dir: models\n    link_dir: up\n    entries: {entries}\n\
             settings:\n  state_file: {name}.state\n  resync_interval: 0\n"
        ),
    )
    .unwrap();
}

#[test]
fn same_config_converges_with_bounded_operations() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let names: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    for t in &names {
        fs::create_dir_all(root.join("models").join(t)).unwrap();
    }
    fs::create_dir_all(root.join("up")).unwrap();
    write(root, "one.yaml", "\"*\"");
    write(root, "two.yaml", "\"*\"");
    let mut one = start(&root.join("one.yaml"));
    let mut two = start(&root.join("two.yaml"));
    let both_up = || {
        state(&root.join("one.yaml.state"))["farms"].is_array()
            && state(&root.join("two.yaml.state"))["farms"].is_array()
    };
    wait_for("both up", Duration::from_secs(10), both_up);
    // Each link deleted twice: well below the flapping threshold (5 repairs of one link a minute).
    let deletions = 2 * names.len();
    for i in 0..deletions {
        let l = root.join("up").join(&names[i % names.len()]);
        wait_for("link present", Duration::from_secs(10), || l.is_symlink());
        fs::remove_file(&l).unwrap();
        wait_for("repaired", Duration::from_secs(10), || l.is_symlink());
    }
    let repairs = |n: &str| state(&root.join(n))["farms"][0]["repairs"].as_u64().unwrap_or(0);
    let total = repairs("one.yaml.state") + repairs("two.yaml.state");
    let flapping = |n: &str| state(&root.join(n))["farms"][0]["state"] == "flapping";
    assert!(!flapping("one.yaml.state") && !flapping("two.yaml.state"));
    // Start-up: one create per link (whoever wins); each deletion: one create (the loser's
    // symlinkat fails with EEXIST, a race, not a repair). A little slack for both winning a
    // create once through a delete/create interleaving.
    let bound = names.len() as u64 + deletions as u64 + 4;
    assert!(
        total <= bound,
        "{total} repairs for {deletions} deletions (bound {bound})"
    );
    let _ = one.kill();
    let _ = two.kill();
    let _ = one.wait();
    let _ = two.wait();
    println!("two daemons, same config: {deletions} deletions, {total} repairs in all, no flapping");
}

#[test]
fn conflicting_configs_both_report_flapping_and_back_off() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    for t in ["a", "b"] {
        fs::create_dir_all(root.join("models").join(t)).unwrap();
    }
    fs::create_dir_all(root.join("up")).unwrap();
    // Both manage up/x, pointing it at different targets.
    write(root, "one.yaml", "[{link: x, target: a}]");
    write(root, "two.yaml", "[{link: x, target: b}]");
    let mut one = start(&root.join("one.yaml"));
    let mut two = start(&root.join("two.yaml"));
    let flapping = |n: &str| state(&root.join(n))["farms"][0]["state"] == "flapping";
    let t = Instant::now();
    wait_for("both report flapping", Duration::from_secs(30), || {
        flapping("one.yaml.state") && flapping("two.yaml.state")
    });
    let repairs = |n: &str| state(&root.join(n))["farms"][0]["repairs"].as_u64().unwrap_or(0);
    let at_flap = repairs("one.yaml.state") + repairs("two.yaml.state");
    // Backed off: over the next two seconds (inside the first 5 s hold) they barely move.
    std::thread::sleep(Duration::from_secs(2));
    let later = repairs("one.yaml.state") + repairs("two.yaml.state");
    assert!(
        later - at_flap <= 2,
        "still fighting: {at_flap} → {later} repairs"
    );
    let _ = one.kill();
    let _ = two.kill();
    let _ = one.wait();
    let _ = two.wait();
    println!(
        "two daemons, conflicting configs: both flapping after {:?} and {at_flap} repairs; {} more in the next 2 s",
        t.elapsed(),
        later - at_flap
    );
}
