//! Measures how fast a running `linkfarm run` repairs a deleted link, and what it costs at idle.
//!
//! ```sh
//! cargo build --release && cargo run --release --example repair_latency -- 100 60
//! ```
//!
//! It builds a farm of N links in a temp dir, starts `target/release/linkfarm run` on it, then
//! deletes each link once (one link deleted again and again within a minute would be reported as
//! flapping and backed off, by design) and waits for the link's re-creation with
//! inotify, timing with CLOCK_MONOTONIC from just before `unlink` to the `IN_CREATE` event: no
//! polling, no sleeps. Then it leaves the daemon idle and reads its CPU time, context switches and
//! RSS from /proc. Arguments: number of deletions (default 100), idle seconds (default 60).

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

fn proc_stat(pid: u32) -> (u64, u64) {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    (f[11].parse().unwrap(), f[12].parse().unwrap())
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let idle: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let bin = std::env::var("LINKFARM_BIN").unwrap_or_else(|_| "target/release/linkfarm".into());

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let names: Vec<String> = (0..n).map(|i| format!("model-type-{i:04}")).collect();
    fs::create_dir_all(root.join("share/up")).unwrap();
    for t in &names {
        fs::create_dir_all(root.join("models").join(t)).unwrap();
    }
    fs::write(
        root.join("linkfarm.yaml"),
        format!(
            "version: 1\nfarms:\n  - name: m\n    target_dir: models\n    link_dir: share/up\n    entries: [{}]\n\
             settings:\n  state_file: state.json\n",
            names.join(", ")
        ),
    )
    .unwrap();
    let mut child = Command::new(&bin)
        .args(["run", "-c"])
        .arg(root.join("linkfarm.yaml"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (cargo build --release first)"));
    let link = |n: &str| -> PathBuf { root.join("share/up").join(n) };
    let start = Instant::now();
    while !names.iter().all(|n| link(n).is_symlink()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "daemon did not converge"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));

    let ino = Inotify::init(InitFlags::IN_CLOEXEC).unwrap();
    ino.add_watch(
        &root.join("share/up"),
        AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO,
    )
    .unwrap();
    let mut lat = Vec::with_capacity(n);
    for name in &names {
        let name = name.as_str();
        let t0 = Instant::now();
        fs::remove_file(link(name)).unwrap();
        'wait: loop {
            for ev in ino.read_events().unwrap() {
                if ev.name.as_deref().is_some_and(|x| x == name) {
                    break 'wait;
                }
            }
        }
        lat.push(t0.elapsed());
        assert!(link(name).is_symlink());
    }
    lat.sort();
    let pct = |p: f64| {
        lat[((lat.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(lat.len() - 1)]
    };
    println!("repair latency over {n} deletions (unlink -> IN_CREATE of the new link):");
    println!(
        "  p50 {:?}  p90 {:?}  p99 {:?}  max {:?}  min {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat[lat.len() - 1],
        lat[0]
    );

    let pid = child.id();
    std::thread::sleep(Duration::from_millis(500));
    let (u0, s0) = proc_stat(pid);
    let v0 = proc_status(pid, "voluntary_ctxt_switches:");
    let nv0 = proc_status(pid, "nonvoluntary_ctxt_switches:");
    std::thread::sleep(Duration::from_secs(idle));
    let (u1, s1) = proc_stat(pid);
    let v1 = proc_status(pid, "voluntary_ctxt_switches:");
    let nv1 = proc_status(pid, "nonvoluntary_ctxt_switches:");
    println!("idle for {idle}s after convergence:");
    println!(
        "  CPU ticks (1/100 s) user {} system {}; context switches voluntary {} involuntary {}",
        u1 - u0,
        s1 - s0,
        v1 - v0,
        nv1 - nv0
    );
    println!(
        "  RSS {} KiB, peak RSS {} KiB",
        proc_status(pid, "VmRSS:"),
        proc_status(pid, "VmHWM:")
    );
    let _ = child.kill();
    let _ = child.wait();
}
