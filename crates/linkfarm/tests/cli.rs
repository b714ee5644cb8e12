//! The `linkfarm` binary as a user runs it: exit codes of SPEC §7, the text and JSON output, the
//! refusals at start-up, and every shipped example.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_linkfarm"));
    c.env_remove("LINKFARM_CONFIG");
    c
}

struct Demo {
    dir: tempfile::TempDir,
}

impl Demo {
    /// The admin guide's layout in a temp dir, with `extra` appended to the farm.
    fn new(extra: &str) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("storage-models/models")).unwrap();
        fs::create_dir_all(r.join("storage-user/models-upload")).unwrap();
        for t in ["checkpoints", "loras", "vae"] {
            fs::create_dir(r.join("storage-models/models").join(t)).unwrap();
        }
        let d = Demo { dir };
        d.config(extra);
        d
    }
    fn config(&self, extra: &str) {
        let text = format!(
            "version: 1\nfarms:\n  - name: models-upload\n    target_dir: storage-models/models\n    \
             link_dir: storage-user/models-upload\n    entries: [checkpoints, loras, vae]\n{extra}"
        );
        fs::write(self.cfg(), text).unwrap();
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn cfg(&self) -> PathBuf {
        self.root().join("linkfarm.yaml")
    }
    fn l(&self, n: &str) -> PathBuf {
        self.root().join("storage-user/models-upload").join(n)
    }
    fn t(&self, n: &str) -> PathBuf {
        self.root().join("storage-models/models").join(n)
    }
    fn run(&self, args: &[&str]) -> Output {
        bin().arg("-c").arg(self.cfg()).args(args).output().unwrap()
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_apply_exit_codes_follow_spec() {
    let d = Demo::new("");
    let o = d.run(&["check"]);
    assert_eq!(code(&o), 1, "drift: {}", stdout(&o));
    assert!(stdout(&o).contains("would create loras ->"), "{}", stdout(&o));
    assert!(!d.l("loras").is_symlink(), "check changes nothing");
    let o = d.run(&["apply", "--dry-run"]);
    assert_eq!(code(&o), 0);
    assert!(!d.l("loras").is_symlink(), "a dry run changes nothing");
    let o = d.run(&["apply"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("create loras ->"));
    assert_eq!(fs::read_link(d.l("loras")).unwrap(), d.t("loras"));
    let o = d.run(&["check"]);
    assert_eq!(code(&o), 0, "converged: {}", stdout(&o));
    assert!(stdout(&o).contains("converged (3/3 links ok)"));
}

#[test]
fn check_json_is_stable() {
    let d = Demo::new("");
    fs::remove_dir(d.t("vae")).unwrap();
    let o = d.run(&["check", "--json"]);
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dry_run"], true);
    let f = &v["farms"][0];
    assert_eq!(f["name"], "models-upload");
    assert_eq!(f["state"], "drift");
    assert_eq!(f["links_total"], 3);
    assert_eq!(f["actions"][0]["action"], "create");
    assert_eq!(f["actions"][0]["link"], "checkpoints");
    assert_eq!(f["actions"][0]["reason"], "missing");
    assert_eq!(f["actions"][0]["result"], "planned");
    assert_eq!(f["findings"][0]["kind"], "missing_target");
    assert_eq!(f["findings"][0]["link"], "vae");
}

#[test]
fn apply_json_reports_results() {
    let d = Demo::new("");
    let o = d.run(&["apply", "--json"]);
    assert_eq!(code(&o), 0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = &v["farms"][0];
    assert_eq!(f["state"], "converged");
    assert_eq!(f["actions"].as_array().unwrap().len(), 3);
    assert!(f["actions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["result"] == "done"));
}

#[test]
fn client_folder_in_place_of_loras_is_explained_then_adopted() {
    let d = Demo::new("settings:\n  adopt_after: 0s\n");
    assert_eq!(code(&d.run(&["apply"])), 0);
    fs::remove_file(d.l("loras")).unwrap();
    fs::create_dir(d.l("loras")).unwrap();
    fs::write(d.l("loras/style.safetensors"), "weights-1").unwrap();
    fs::write(d.l("loras/other.safetensors"), "weights-2").unwrap();
    let o = d.run(&["check"]);
    assert_eq!(code(&o), 1);
    let s = stdout(&o);
    assert!(
        s.contains("would adopt loras/style.safetensors into target loras"),
        "{s}"
    );
    assert!(s.contains("would create loras ->"), "{s}");
    let o = d.run(&["apply"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(
        fs::read_to_string(d.t("loras/style.safetensors")).unwrap(),
        "weights-1"
    );
    assert_eq!(
        fs::read_to_string(d.t("loras/other.safetensors")).unwrap(),
        "weights-2"
    );
    assert_eq!(fs::read_link(d.l("loras")).unwrap(), d.t("loras"));
}

#[test]
fn unsettled_folder_is_explained_with_the_time_it_settles() {
    let d = Demo::new("settings:\n  adopt_after: 1h\n");
    fs::create_dir(d.l("loras")).unwrap();
    fs::write(d.l("loras/new.safetensors"), "x").unwrap();
    let o = d.run(&["apply"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("waiting until"), "{}", stdout(&o));
    assert!(d.l("loras/new.safetensors").is_file());
}

#[test]
fn validate_reports_file_line_column_and_exits_78() {
    let d = Demo::new("    on_conflict: maybe\n");
    let o = d.run(&["validate"]);
    assert_eq!(code(&o), 78);
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{}:7:18: unknown variant `maybe`", d.cfg().display())),
        "{e}"
    );
    assert!(e.contains("hint:"), "{e}");
    for cmd in ["check", "apply"] {
        assert_eq!(code(&d.run(&[cmd])), 78, "{cmd} refuses an invalid config too");
    }
}

#[test]
fn missing_config_file_is_a_config_error() {
    let o = bin()
        .args(["-c", "/nonexistent/linkfarm.yaml", "validate"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 78);
    assert!(stderr(&o).contains("/nonexistent/linkfarm.yaml: cannot read the config"));
}

#[test]
fn config_path_from_environment() {
    let d = Demo::new("");
    let o = bin()
        .env("LINKFARM_CONFIG", d.cfg())
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn symlinked_link_dir_at_start_up_exits_78() {
    let d = Demo::new("");
    let real = d.root().join("storage-user/elsewhere");
    fs::rename(d.l(""), &real).unwrap();
    symlink(&real, d.root().join("storage-user/models-upload")).unwrap();
    let o = d.run(&["apply"]);
    assert_eq!(code(&o), 78);
    assert!(stderr(&o).contains("is a symlink"), "{}", stderr(&o));
    assert_eq!(fs::read_dir(&real).unwrap().count(), 0);
}

#[test]
fn config_writable_by_others_is_refused_as_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let d = Demo::new("");
    assert_eq!(code(&d.run(&["validate"])), 0);
    fs::set_permissions(d.cfg(), fs::Permissions::from_mode(0o666)).unwrap();
    let o = d.run(&["validate"]);
    assert_eq!(code(&o), 78);
    assert!(stderr(&o).contains("writable by non-root"), "{}", stderr(&o));
    fs::set_permissions(d.cfg(), fs::Permissions::from_mode(0o644)).unwrap();
    nix::unistd::chown(&d.cfg(), Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
    assert_eq!(fs::metadata(d.cfg()).unwrap().uid(), 1000);
    let o = d.run(&["apply"]);
    assert_eq!(code(&o), 78);
    assert!(stderr(&o).contains("owned by uid 1000"), "{}", stderr(&o));
    assert!(!d.l("loras").is_symlink(), "nothing applied");
}

#[test]
fn every_shipped_example_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut n = 0;
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let o = bin().arg("-c").arg(&p).arg("validate").output().unwrap();
            assert_eq!(code(&o), 0, "{}: {}", p.display(), stderr(&o));
            n += 1;
        }
    }
    assert!(n >= 4, "found {n} examples");
}

#[test]
fn demo_example_converges_in_a_copy() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo.yaml");
    let tmp = tempfile::tempdir().unwrap();
    fs::copy(&src, tmp.path().join("demo.yaml")).unwrap();
    fs::create_dir_all(tmp.path().join("demo/storage-models/models")).unwrap();
    fs::create_dir_all(tmp.path().join("demo/storage-user")).unwrap();
    let cfg = tmp.path().join("demo.yaml");
    let o = bin().arg("-c").arg(&cfg).arg("apply").output().unwrap();
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let o = bin().arg("-c").arg(&cfg).arg("check").output().unwrap();
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(tmp
        .path()
        .join("demo/storage-user/models-upload/diffusion_models")
        .is_symlink());
    assert!(
        tmp.path().join("demo/storage-user/models-inbox/loras").is_dir(),
        "the inbox's folders"
    );
}

/// Issue 11 §2: two farms on one link_dir and one target_dir pruned each other's link on every
/// `apply`, so `check` never reached 0 and `apply` reported a link the next farm had just removed.
#[test]
fn two_farms_sharing_a_link_dir_keep_each_others_links() {
    let d = Demo::new("");
    let text = "version: 1\nfarms:\n\
        \x20 - { name: one, target_dir: storage-models/models, link_dir: storage-user/models-upload, entries: [checkpoints] }\n\
        \x20 - { name: two, target_dir: storage-models/models, link_dir: storage-user/models-upload, entries: [loras] }\n";
    fs::write(d.cfg(), text).unwrap();
    assert_eq!(code(&d.run(&["validate"])), 0);
    let o = d.run(&["apply"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        !stdout(&o).contains("remove"),
        "nothing is pruned: {}",
        stdout(&o)
    );
    for (link, target) in [("checkpoints", "checkpoints"), ("loras", "loras")] {
        assert_eq!(fs::read_link(d.l(link)).unwrap(), d.t(target), "{link}");
    }
    let o = d.run(&["check"]);
    assert_eq!(code(&o), 0, "converged after one apply: {}", stdout(&o));
    let o = d.run(&["apply"]);
    assert!(
        !stdout(&o).contains("remove"),
        "a second apply is a no-op: {}",
        stdout(&o)
    );
}

/// Issue 11 §4 / SPEC §5: a second `run` on the same state file started happily, repaired beside
/// the first and overwrote its state file. It must exit non-zero at once, naming the first's pid,
/// and leave the first daemon's state file alone.
#[test]
fn a_second_daemon_on_one_state_file_exits_naming_the_first() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let d = Demo::new("settings:\n  state_file: run/state.json\n  resync_interval: 0\n");
    let state = d.root().join("run/state.json");
    let daemon = || {
        bin()
            .arg("-c")
            .arg(d.cfg())
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let stop = |c: &mut std::process::Child| {
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        c.wait().unwrap()
    };
    let mut first = daemon();
    let pid_in_state = || -> Option<u64> {
        let v: Value = serde_json::from_slice(&fs::read(&state).ok()?).ok()?;
        v["pid"].as_u64()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while pid_in_state().is_none() {
        assert!(
            Instant::now() < deadline,
            "the first daemon never wrote its state"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut second = daemon();
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            stop(&mut second);
            stop(&mut first);
            panic!("a second daemon on the same state file kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut msg = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut msg).unwrap();
    assert_eq!(exited.code(), Some(1), "{msg}");
    assert!(msg.contains(&format!("(pid {})", first.id())), "{msg}");
    assert!(msg.contains("run/state.json"), "{msg}");
    assert_eq!(
        pid_in_state(),
        Some(u64::from(first.id())),
        "the state file is the first's"
    );
    assert!(
        stop(&mut first).success(),
        "the first daemon runs on and stops cleanly"
    );
}

/// A tmpfs mounted at `path` for the life of the guard: a client folder at a link name that is
/// on another filesystem, whose files no rename can move (EXDEV). Needs root.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(path: &Path) -> Mount {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs at {}", path.display());
        Mount(path.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Issue 11 §4: `apply` printed a FAILED line once per round (twice for one failure).
#[test]
fn apply_reports_a_failed_action_once_and_exits_1() {
    let d = Demo::new("settings:\n  adopt_after: 0s\n");
    fs::create_dir(d.l("loras")).unwrap();
    let _m = Mount::tmpfs(&d.l("loras"));
    fs::write(d.l("loras/style.safetensors"), "weights").unwrap();
    let o = d.run(&["apply"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 1, "{out}");
    assert_eq!(
        out.matches("FAILED adopt loras/style.safetensors").count(),
        1,
        "{out}"
    );
    assert!(out.contains("create checkpoints ->"), "{out}");
    assert_eq!(
        fs::read_to_string(d.l("loras/style.safetensors")).unwrap(),
        "weights",
        "the upload stays where it is"
    );
    let o = d.run(&["apply", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let failed: Vec<&Value> = v["farms"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["result"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{v:#}");
}

/// Issue 11 §4: `apply` exited 0 with a farm in `error` (the parent of link_dir missing) or
/// `degraded` (target_dir missing): a script could not tell.
#[test]
fn apply_exits_2_for_a_farm_in_error_and_1_for_a_degraded_one() {
    let d = Demo::new("");
    fs::remove_dir(d.root().join("storage-user/models-upload")).unwrap();
    fs::remove_dir(d.root().join("storage-user")).unwrap();
    let o = d.run(&["apply"]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("farm models-upload: error"), "{}", stdout(&o));
    assert_eq!(code(&d.run(&["check"])), 2);

    let d = Demo::new("");
    fs::rename(d.root().join("storage-models"), d.root().join("away")).unwrap();
    let o = d.run(&["apply"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("farm models-upload: degraded"),
        "{}",
        stdout(&o)
    );
}

/// Issue 11 §2: what `apply` reports about each farm must be true when it exits, also when two
/// farms share one link_dir (whatever prune then does with the other farm's links).
#[test]
fn apply_reports_what_is_true_when_two_farms_share_a_link_dir() {
    let d = Demo::new("");
    let text = "version: 1\nfarms:\n  \
        - { name: one, target_dir: storage-models/models, link_dir: storage-user/models-upload, entries: [checkpoints] }\n  \
        - { name: two, target_dir: storage-models/models, link_dir: storage-user/models-upload, entries: [loras] }\n";
    fs::write(d.cfg(), text).unwrap();
    let o = d.run(&["apply", "--json"]);
    let applied: Value = serde_json::from_slice(&o.stdout).unwrap();
    let o = d.run(&["check", "--json"]);
    let checked: Value = serde_json::from_slice(&o.stdout).unwrap();
    for i in 0..2 {
        let (a, c) = (&applied["farms"][i], &checked["farms"][i]);
        assert_eq!(
            (&a["state"], &a["links_ok"]),
            (&c["state"], &c["links_ok"]),
            "farm {}: apply said {a:#}\nbut the disk says {c:#}",
            a["name"]
        );
    }
}

#[test]
fn a_temp_name_of_another_running_linkfarm_is_left_alone_and_removed_once_it_ended() {
    // A `doctor` probing the filesystem (SPEC §14) beside the daemon: its temp links are in
    // flight, not leftovers. Before, the daemon removed them as they appeared and the probe,
    // losing its links three times in a row on a busy machine, reported no renameat2 flags.
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let d = Demo::new("");
    let other = Demo::new("settings:\n  state_file: run/state.json\n");
    let mut p = bin()
        .arg("-c")
        .arg(other.cfg())
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let comm = format!("/proc/{}/comm", p.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&comm).is_ok_and(|c| c.starts_with("linkfarm")) {
        assert!(Instant::now() < deadline, "the other linkfarm never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let probe = d.l(&format!(".linkfarm-tmp.probe-a.{}", p.id()));
    std::os::unix::fs::symlink("a", &probe).unwrap();
    let o = d.run(&["apply"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        probe.is_symlink(),
        "a running linkfarm's temp link was removed: {}",
        stdout(&o)
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    p.wait().unwrap();
    let o = d.run(&["apply"]);
    assert!(
        !probe.is_symlink(),
        "a leftover of an ended process stays: {}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("leftover"), "{}", stdout(&o));
}
