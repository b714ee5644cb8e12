//! Faults: a read-only remount, a target on another filesystem (EXDEV), an inode-full filesystem
//! during adoption, the config deleted while running, a socket at a link path. In each the daemon
//! keeps running, reports the farm's state, recovers when the fault goes away, and loses nothing.
//! Mounting needs root (CI runs as root); elsewhere these tests say so and pass.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::*;

const DEADLINE: Duration = Duration::from_secs(20);

fn root_or_skip() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root to mount (CI runs as root)");
    }
    root
}

/// A tmpfs mounted at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, opts: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs at {}", dir.display());
        Tmpfs(dir.to_owned())
    }
    fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct Daemon {
    child: Child,
    root: PathBuf,
}

impl Daemon {
    fn start(root: &Path) -> Daemon {
        let child = Command::new(bin())
            .arg("-c")
            .arg(root.join("linkfarm.yaml"))
            .arg("run")
            .stdout(Stdio::null())
            .stderr(fs::File::create(root.join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            root: root.to_owned(),
        };
        wait_for("daemon up", DEADLINE, || {
            d.state()["farms"][0]["state"].is_string()
        });
        d
    }
    fn state(&self) -> Value {
        fs::read(self.root.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }
    fn farm_state(&self) -> String {
        self.state()["farms"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
    fn log(&self) -> String {
        fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default()
    }
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("daemon log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(root: &Path, link_dir: &str, extra: &str) {
    fs::write(
        root.join("linkfarm.yaml"),
        format!(
            "version: 1\nfarms:\n  - name: f\n    target_dir: models\n    link_dir: {link_dir}\n    entries: [a, b]\n{extra}\
             settings:\n  adopt_after: 0s\n  state_file: state.json\n"
        ),
    )
    .unwrap();
}

#[test]
fn read_only_remount_is_reported_and_heals() {
    if !root_or_skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    fs::create_dir_all(root.join("models/a")).unwrap();
    fs::create_dir_all(root.join("models/b")).unwrap();
    let fsys = Tmpfs::mount(&root.join("share"), "size=1m");
    fs::create_dir(root.join("share/up")).unwrap();
    config(root, "share/up", "");
    let mut daemon = Daemon::start(root);
    wait_for("converged", DEADLINE, || daemon.farm_state() == "converged");
    kill(daemon.pid(), Signal::SIGSTOP).unwrap();
    fs::remove_file(root.join("share/up/a")).unwrap();
    fsys.remount("ro");
    kill(daemon.pid(), Signal::SIGCONT).unwrap();
    wait_for("error reported", DEADLINE, || daemon.farm_state() == "error");
    assert!(daemon.log().contains("Read-only file system"), "{}", daemon.log());
    assert!(daemon.alive());
    fsys.remount("rw");
    wait_for("healed after remount rw", DEADLINE, || {
        root.join("share/up/a").is_symlink()
    });
    wait_for("converged again", DEADLINE, || daemon.farm_state() == "converged");
    println!("fault: read-only remount → error reported, healed after rw");
}

#[test]
fn adoption_across_filesystems_refuses_and_keeps_the_data() {
    if !root_or_skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let _models = Tmpfs::mount(&root.join("models"), "size=4m");
    fs::create_dir_all(root.join("models/a")).unwrap();
    fs::create_dir_all(root.join("models/b")).unwrap();
    fs::create_dir_all(root.join("up/a")).unwrap();
    fs::write(root.join("up/a/upload.bin"), "client data").unwrap();
    config(root, "up", "");
    let before = inventory_except(root, &["state.json", "linkfarm.yaml", "daemon.log"]);
    let mut daemon = Daemon::start(root);
    wait_for("EXDEV reported", DEADLINE, || {
        daemon.log().contains("Cross-device link")
    });
    assert!(
        daemon.log().contains("same filesystem"),
        "the error says what to do"
    );
    assert!(daemon.alive());
    assert_eq!(
        fs::read_to_string(root.join("up/a/upload.bin")).unwrap(),
        "client data"
    );
    assert!(root.join("up/b").is_symlink(), "the other link is still managed");
    assert_eq!(
        inventory_except(root, &["state.json", "linkfarm.yaml", "daemon.log"]),
        before
    );
    println!("fault: EXDEV adoption refused, data kept in place");
}

#[test]
fn inode_full_filesystem_during_adoption_keeps_the_data_and_recovers() {
    if !root_or_skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let _fsys = Tmpfs::mount(&root.join("vol"), "size=4m,nr_inodes=64");
    fs::create_dir_all(root.join("vol/models/a")).unwrap();
    fs::create_dir_all(root.join("vol/models/b")).unwrap();
    fs::create_dir_all(root.join("vol/up/a")).unwrap();
    // A clash: the client's file has a name that exists in the target, so it must go to the
    // quarantine, which needs new directories: there are no inodes left for them.
    fs::write(root.join("vol/models/a/model.bin"), "original").unwrap();
    fs::write(root.join("vol/up/a/model.bin"), "client copy").unwrap();
    let mut filler = Vec::new();
    for i in 0.. {
        let p = root.join(format!("vol/fill{i}"));
        if fs::write(&p, "").is_err() {
            break;
        }
        filler.push(p);
    }
    fs::write(
        root.join("linkfarm.yaml"),
        "version: 1\nfarms:\n  - name: f\n    target_dir: vol/models\n    link_dir: vol/up\n    entries: [a, b]\n\
         settings:\n  adopt_after: 0s\n  state_file: state.json\n",
    )
    .unwrap();
    let mut daemon = Daemon::start(root);
    wait_for("ENOSPC reported", DEADLINE, || {
        daemon.log().contains("No space left on device")
    });
    assert!(daemon.alive());
    assert_eq!(
        fs::read_to_string(root.join("vol/up/a/model.bin")).unwrap(),
        "client copy"
    );
    assert_eq!(
        fs::read_to_string(root.join("vol/models/a/model.bin")).unwrap(),
        "original"
    );
    for p in filler.iter().take(10) {
        fs::remove_file(p).unwrap();
    }
    wait_for("recovered once inodes are free", DEADLINE, || {
        root.join("vol/up/a").is_symlink()
    });
    let q = root.join("vol/.linkfarm-quarantine/f");
    let copies: Vec<String> = fs::read_dir(&q)
        .unwrap()
        .flatten()
        .map(|e| fs::read_to_string(e.path().join("model.bin")).unwrap())
        .collect();
    assert_eq!(copies, ["client copy"]);
    println!("fault: inode-full filesystem during adoption → reported, recovered, nothing lost");
}

#[test]
fn config_deleted_while_running_keeps_the_old_one() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    fs::create_dir_all(root.join("models/a")).unwrap();
    fs::create_dir_all(root.join("models/b")).unwrap();
    fs::create_dir_all(root.join("up")).unwrap();
    config(root, "up", "");
    let mut daemon = Daemon::start(root);
    let saved = fs::read(root.join("linkfarm.yaml")).unwrap();
    fs::remove_file(root.join("linkfarm.yaml")).unwrap();
    wait_for("the failed reload is logged", DEADLINE, || {
        daemon.log().contains("cannot read the config")
    });
    fs::remove_file(root.join("up/a")).unwrap();
    wait_for("the old config still repairs", DEADLINE, || {
        root.join("up/a").is_symlink()
    });
    assert!(daemon.alive());
    fs::write(root.join(".new"), saved).unwrap();
    fs::rename(root.join(".new"), root.join("linkfarm.yaml")).unwrap();
    wait_for("reloaded when it is back", DEADLINE, || {
        daemon.log().contains("reloaded")
    });
    println!("fault: config deleted → old config kept, reloaded when restored");
}

#[test]
fn socket_at_a_link_path_is_quarantined() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    fs::create_dir_all(root.join("models/a")).unwrap();
    fs::create_dir_all(root.join("models/b")).unwrap();
    fs::create_dir_all(root.join("up")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(root.join("up/a")).unwrap();
    symlink("/etc", root.join("up/b")).unwrap();
    config(root, "up", "");
    let daemon = Daemon::start(root);
    wait_for("socket quarantined, links made", DEADLINE, || {
        fs::read_link(root.join("up/a")).is_ok()
            && fs::read_link(root.join("up/b")).ok() == Some(root.join("models/b"))
    });
    drop(daemon);
}
