//! Helpers shared by the filesystem tests: a temp tree per test and a farm parsed from YAML.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use linkfarm_core::{parse_config, Farm, FarmState};
use linkfarm_fs::{Caps, FarmFs, Mode, Outcome, PassReport};

pub use linkfarm_testsupport::{inventory, NoIds};

pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    /// A root with `models/` (target_dir) holding `targets`, and `up/` (link_dir).
    pub fn new(targets: &[&str]) -> Tree {
        let dir = test_dir();
        fs::create_dir(dir.path().join("models")).unwrap();
        fs::create_dir(dir.path().join("up")).unwrap();
        for t in targets {
            fs::create_dir(dir.path().join("models").join(t)).unwrap();
        }
        Tree { dir }
    }
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    pub fn t(&self, name: &str) -> PathBuf {
        self.root().join("models").join(name)
    }
    pub fn l(&self, name: &str) -> PathBuf {
        self.root().join("up").join(name)
    }
    /// A farm over this tree; `farm_yaml` is extra farm keys, e.g. "    on_conflict: keep\n".
    pub fn farm(&self, entries: &str, farm_yaml: &str) -> Farm {
        let text = format!(
            "version: 1\nfarms:\n  - name: m\n    target_dir: models\n    link_dir: up\n    entries: {entries}\n{farm_yaml}"
        );
        let file = self.root().join("linkfarm.yaml");
        parse_config(&text, &file, &NoIds).unwrap().farms.remove(0)
    }
    pub fn write(&self, path: &Path, content: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    pub fn link(&self, name: &str, text: impl AsRef<Path>) {
        symlink(text, self.l(name)).unwrap();
    }
}

/// A fresh temp dir under `LINKFARM_TEST_DIR` when set (tests/e2e/fuse.sh points it at a FUSE
/// mount), else under the system's temp dir.
pub fn test_dir() -> tempfile::TempDir {
    match std::env::var_os("LINKFARM_TEST_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// The capabilities of a filesystem without `renameat2` flags (SPEC §14): Linux NFS.
pub const NFS: Caps = Caps {
    exchange: false,
    noreplace: false,
    link: true,
};
/// CIFS: only `RENAME_NOREPLACE`.
pub const CIFS: Caps = Caps {
    exchange: false,
    noreplace: true,
    link: true,
};
/// Neither flags nor `link()`.
pub const BARE: Caps = Caps {
    exchange: false,
    noreplace: false,
    link: false,
};

/// A `FarmFs` for `farm`. With `LINKFARM_TEST_CAPS=nfs|cifs|bare` it uses those capabilities
/// instead of probing, so the whole suite can run through the SPEC §14 fallbacks on any disk.
pub fn farm_fs(farm: Farm) -> FarmFs {
    let mut f = FarmFs::new(farm);
    match std::env::var("LINKFARM_TEST_CAPS").as_deref() {
        Ok("nfs") => f.set_caps(NFS),
        Ok("cifs") => f.set_caps(CIFS),
        Ok("bare") => f.set_caps(BARE),
        Ok("") | Err(_) => {}
        Ok(other) => panic!("LINKFARM_TEST_CAPS={other}: use nfs, cifs or bare"),
    }
    f
}

pub fn now() -> SystemTime {
    SystemTime::now()
}

pub const SETTLED: Duration = Duration::ZERO;
pub const LONG: Duration = Duration::from_secs(3600);

pub fn apply(fs: &mut FarmFs, adopt_after: Duration) -> PassReport {
    let r = fs.pass(adopt_after, now(), Mode::Apply);
    for res in &r.results {
        if let Outcome::Failed(e) = &res.outcome {
            panic!("{} failed: {e}", res.action);
        }
    }
    r
}

pub fn check(fs: &mut FarmFs, adopt_after: Duration) -> PassReport {
    fs.pass(adopt_after, now(), Mode::DryRun)
}

#[track_caller]
pub fn assert_converged(fs: &mut FarmFs) {
    let r = check(fs, SETTLED);
    assert_eq!(r.plan.state, FarmState::Converged, "{:#?}", r.plan);
}

pub fn link_text(p: &Path) -> Option<PathBuf> {
    fs::read_link(p).ok()
}
