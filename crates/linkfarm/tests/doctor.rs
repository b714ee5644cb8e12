//! `linkfarm doctor` on real trees and smb.conf files. Every Samba scenario runs through the
//! built-in smb.conf parser and, when Samba is installed, through the real `testparm` as well;
//! both must give the same verdicts.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// The admin guide's layout under a temp `cw/`, with `owner` if given.
    fn new(owner: Option<&str>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let cw = dir.path().join("cw");
        for t in ["checkpoints", "loras", "vae"] {
            fs::create_dir_all(cw.join("storage-models/models").join(t)).unwrap();
        }
        fs::create_dir_all(cw.join("storage-user/models-upload")).unwrap();
        let owner = owner.map(|o| format!("    owner: \"{o}\"\n")).unwrap_or_default();
        fs::write(
            dir.path().join("linkfarm.yaml"),
            format!(
                "version: 1\nfarms:\n  - name: models-upload\n    target_dir: cw/storage-models/models\n    \
                 link_dir: cw/storage-user/models-upload\n    entries: [checkpoints, loras, vae]\n{owner}"
            ),
        )
        .unwrap();
        Setup { dir }
    }
    fn cw(&self) -> PathBuf {
        self.dir.path().join("cw")
    }
    /// Writes an smb.conf; `PATH` in `text` becomes the temp cw root.
    fn smb(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("smb.conf");
        fs::write(&p, text.replace("PATH", &self.cw().display().to_string())).unwrap();
        p
    }
    fn doctor(&self, smb: &Path, testparm: &str) -> (i32, Value) {
        let o = Command::new(env!("CARGO_BIN_EXE_linkfarm"))
            .arg("-c")
            .arg(self.dir.path().join("linkfarm.yaml"))
            .args(["doctor", "--json", "--smb-conf"])
            .arg(smb)
            .env("LINKFARM_TESTPARM", testparm)
            .output()
            .unwrap();
        (
            o.status.code().unwrap(),
            serde_json::from_slice(&o.stdout).unwrap(),
        )
    }
}

fn has_testparm() -> bool {
    Command::new("testparm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `f` with the built-in parser and, when available, with testparm.
fn both(mut f: impl FnMut(&str)) {
    f("none");
    if has_testparm() {
        f("testparm");
    } else {
        eprintln!("testparm not installed: checked with the built-in parser only");
    }
}

fn find<'a>(v: &'a Value, status: &str, needle: &str) -> Option<&'a Value> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["status"] == status && c["message"].as_str().unwrap().contains(needle))
}

#[track_caller]
fn expect(v: &Value, status: &str, needle: &str, via: &str) {
    assert!(
        find(v, status, needle).is_some(),
        "[{via}] no {status} containing {needle:?} in {v:#}"
    );
}

#[test]
fn the_admin_guides_smb_conf() {
    let s = Setup::new(None);
    let smb = s.smb(
        "[global]\n   unix extensions = no\n[ki_Daten]\n    path = PATH\n    follow symlinks = yes\n    wide links = yes\n",
    );
    both(|via| {
        let (code, v) = s.doctor(&smb, via);
        expect(&v, "warn", "wide links = yes is not needed", via);
        expect(&v, "fail", "read only = yes: clients cannot upload", via);
        expect(&v, "ok", "follow symlinks = yes", via);
        expect(&v, "warn", "no recycle VFS", via);
        assert_eq!(code, 1, "[{via}] a failure exits 1");
    });
}

#[test]
fn the_shipped_example_passes() {
    let s = Setup::new(None);
    let example =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/smb.conf")).unwrap();
    let smb = s.smb(&example.replace("/vol/service/cw", "PATH"));
    let applied = Command::new(env!("CARGO_BIN_EXE_linkfarm"))
        .arg("-c")
        .arg(s.dir.path().join("linkfarm.yaml"))
        .arg("apply")
        .output()
        .unwrap();
    assert!(applied.status.success());
    both(|via| {
        let (code, v) = s.doctor(&smb, via);
        assert_eq!(v["fail"], 0, "[{via}] {v:#}");
        assert_eq!(v["warn"], 0, "[{via}] {v:#}");
        expect(
            &v,
            "ok",
            "wide links = no: every target lies inside the share",
            via,
        );
        expect(&v, "ok", "deleted files are recoverable", via);
        assert_eq!(code, 0);
    });
}

#[test]
fn target_outside_the_share_needs_wide_links_and_says_what_it_costs() {
    let s = Setup::new(None);
    // The share serves only storage-user: the targets in storage-models are outside it.
    let user = "[ki]\n path = PATH/storage-user\n read only = no\n vfs objects = recycle\n";
    let smb = s.smb(user);
    both(|via| {
        let (_, v) = s.doctor(&smb, via);
        expect(&v, "fail", "lies outside the share path", via);
    });
    let smb = s.smb(&format!("{user} wide links = yes\n"));
    both(|via| {
        let (_, v) = s.doctor(&smb, via);
        expect(&v, "fail", "ignored while unix extensions = yes", via);
    });
    let smb = s.smb(&format!(
        "[global]\n unix extensions = no\n{user} wide links = yes\n"
    ));
    both(|via| {
        let (code, v) = s.doctor(&smb, via);
        expect(&v, "warn", "wide links = yes (needed", via);
        assert_eq!(code, 0, "[{via}] {v:#}");
    });
}

#[test]
fn follow_symlinks_off_fails() {
    let s = Setup::new(None);
    let smb = s.smb("[ki]\n path = PATH\n read only = no\n follow symlinks = no\n");
    both(|via| {
        let (_, v) = s.doctor(&smb, via);
        expect(&v, "fail", "follow symlinks = no", via);
    });
}

#[test]
fn shares_in_included_files_are_found() {
    let s = Setup::new(None);
    let inc = s.dir.path().join("shares.conf");
    fs::write(
        &inc,
        format!("[ki_Daten]\n path = {}\n read only = no\n", s.cw().display()),
    )
    .unwrap();
    let smb = s.smb(&format!("[global]\n include = {}\n", inc.display()));
    both(|via| {
        let (_, v) = s.doctor(&smb, via);
        expect(&v, "ok", "serves link_dir", via);
    });
}

#[test]
fn permission_denied_when_uploading_is_diagnosed() {
    let s = Setup::new(Some("4321:4321"));
    let (code, v) = s.doctor(Path::new("/nonexistent/smb.conf"), "none");
    expect(&v, "fail", "get \"permission denied\"", "none");
    let remedy = find(&v, "fail", "permission denied").unwrap()["remedy"]
        .as_str()
        .unwrap();
    assert!(remedy.starts_with("chown -R 4321:4321 "), "{remedy}");
    assert_eq!(code, 1);
    expect(&v, "ok", "Samba checks skipped", "none");
}

#[test]
fn drift_and_invalid_config_are_reported() {
    let s = Setup::new(None);
    let (code, v) = s.doctor(Path::new("/nonexistent"), "none");
    expect(&v, "warn", "drift (0/3 links ok)", "none");
    assert_eq!(code, 0, "drift is a warning");
    let cfg = s.dir.path().join("linkfarm.yaml");
    fs::write(
        &cfg,
        fs::read_to_string(&cfg)
            .unwrap()
            .replace("version: 1", "version: 2"),
    )
    .unwrap();
    let (code, v) = s.doctor(Path::new("/nonexistent"), "none");
    expect(&v, "fail", "unknown version 2", "none");
    assert_eq!(code, 1);
}

#[test]
fn inotify_limits_are_checked() {
    let s = Setup::new(None);
    let (_, v) = s.doctor(Path::new("/nonexistent"), "none");
    expect(&v, "ok", "max_user_watches", "none");
    expect(&v, "ok", "max_user_instances", "none");
}

#[test]
fn one_farm_is_one_farm_and_the_filesystem_fallback_is_named() {
    let s = Setup::new(None);
    let (_, v) = s.doctor(Path::new("/nonexistent"), "none");
    expect(&v, "ok", "is valid (1 farm)", "none");
    // On a FUSE or NFS mount (tests/e2e/fuse.sh) the fallback differs; the line is always there.
    assert!(
        ["ok", "warn"]
            .iter()
            .any(|st| find(&v, st, "fallback: ").is_some()),
        "{v:#}"
    );
    if std::env::var_os("LINKFARM_TEST_FUSE").is_none() {
        expect(
            &v,
            "ok",
            "RENAME_EXCHANGE yes, RENAME_NOREPLACE yes, link() yes; fallback: none",
            "none",
        );
    }
    let left: Vec<_> = fs::read_dir(s.cw().join("storage-user/models-upload"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "the probe leaves nothing behind: {left:?}");
}

#[test]
fn star_farm_owner_check_uses_the_planners_targets() {
    use std::os::unix::fs::{chown, symlink};
    let s = Setup::new(None);
    let models = s.cw().join("storage-models/models");
    for t in ["checkpoints", "loras", "vae"] {
        chown(models.join(t), Some(4321), Some(4321)).unwrap();
    }
    // Neither is linked by the planner: an excluded name, and a symlink to a folder.
    fs::create_dir(models.join(".cache")).unwrap();
    symlink("/etc", models.join("etc-link")).unwrap();
    fs::write(
        s.dir.path().join("linkfarm.yaml"),
        "version: 1\nfarms:\n  - name: m\n    target_dir: cw/storage-models/models\n    \
         link_dir: cw/storage-user/models-upload\n    entries: \"*\"\n    owner: \"4321:4321\"\n",
    )
    .unwrap();
    let (_, v) = s.doctor(Path::new("/nonexistent"), "none");
    expect(
        &v,
        "ok",
        "target folders are writable by the configured owner",
        "none",
    );
}

/// The checks of `v` whose subject or message names `needle`, as (status, message).
fn about(v: &Value, needle: &str) -> Vec<(String, String)> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["subject"].as_str().unwrap().contains(needle) || c["message"].as_str().unwrap().contains(needle)
        })
        .map(|c| {
            (
                c["status"].as_str().unwrap().to_owned(),
                c["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn with_inbox(s: &Setup, scanner: &str) {
    let cfg = s.dir.path().join("linkfarm.yaml");
    let mut text = fs::read_to_string(&cfg).unwrap();
    text += &format!(
        "inboxes:\n  - name: guarded\n    dir: cw/storage-user/models-inbox\n    target_dir: cw/storage-models/models\n    scanner: [{scanner}, \"{{}}\"]\n"
    );
    fs::write(cfg, text).unwrap();
}

#[test]
fn inbox_checks_name_a_missing_scanner_a_read_only_inbox_share_and_writable_models() {
    let s = Setup::new(None);
    with_inbox(&s, "/nonexistent/clamdscan");
    let smb = s.smb(
        "[inbox]\n    path = PATH/storage-user/models-inbox\n    read only = yes\n\
         [models]\n    path = PATH/storage-models/models\n    read only = no\n",
    );
    both(|testparm| {
        let (code, v) = s.doctor(&smb, testparm);
        assert_eq!(code, 1, "{v:#}");
        let inbox = about(&v, "inbox guarded");
        assert!(
            inbox
                .iter()
                .any(|(st, m)| st == "ok" && m.contains("on one filesystem")),
            "{inbox:?}"
        );
        assert!(
            inbox
                .iter()
                .any(|(st, m)| st == "fail" && m.contains("not runnable")),
            "{inbox:?}"
        );
        let shares = about(&v, "inbox guarded");
        assert!(
            about(&v, "[inbox]")
                .iter()
                .any(|(st, m)| st == "fail" && m.contains("read-only")),
            "{shares:?}"
        );
        assert!(
            about(&v, "[models]")
                .iter()
                .any(|(st, m)| st == "warn" && m.contains("directly, around inbox guarded")),
            "{v:#}"
        );
    });
}

#[test]
fn a_good_inbox_setup_passes_the_inbox_checks() {
    let s = Setup::new(None);
    with_inbox(&s, "/bin/true");
    let smb = s.smb(
        "[inbox]\n    path = PATH/storage-user/models-inbox\n    read only = no\n\
         [models]\n    path = PATH/storage-models/models\n    read only = yes\n",
    );
    both(|testparm| {
        let (_, v) = s.doctor(&smb, testparm);
        for needle in ["inbox guarded", "[inbox]", "[models]"] {
            let found = about(&v, needle);
            assert!(!found.is_empty(), "{needle}: {v:#}");
            assert!(
                found.iter().all(|(st, _)| st == "ok"),
                "{testparm} {needle}: {found:?}"
            );
        }
    });
}
