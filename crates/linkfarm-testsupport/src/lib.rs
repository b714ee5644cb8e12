//! Helpers shared by linkfarm's tests, so each exists once: waiting for an observable effect
//! with a deadline, the inventory of user files that proves nothing was lost, a user/group
//! lookup stub for config parsing, and a temp tree of target and link folders. Dev-only: no
//! crate depends on it outside `[dev-dependencies]`, and it must never sleep to hope something
//! happened.
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use linkfarm_core::IdLookup;

/// The deadline for an effect that should take milliseconds: generous, so a loaded CI machine
/// does not fail a test that is right.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Polls `cond` every 5 ms until it holds; panics naming `what` after [`DEADLINE`].
#[track_caller]
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_for_within(what, DEADLINE, cond);
}

/// Like [`wait_for`], with a deadline of its own.
#[track_caller]
pub fn wait_for_within(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every regular file under `root` (not following symlinks): content → count. Equal
/// inventories before and after mean no user file was lost, wherever it was moved.
pub fn inventory(root: &Path) -> BTreeMap<Vec<u8>, usize> {
    inventory_except(root, &[])
}

/// Like [`inventory`], skipping files directly in `root` whose name starts with one of `skip`
/// (a config or a daemon's state file is not user data). Entries that vanish while it reads
/// (a daemon at work) are skipped.
pub fn inventory_except(root: &Path, skip: &[&str]) -> BTreeMap<Vec<u8>, usize> {
    inventory_where(root, |p| {
        p.parent() != Some(root)
            || !skip
                .iter()
                .any(|s| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(s)))
    })
}

/// Like [`inventory`], counting only the entries (files, and folders to descend into) for which
/// `keep` says yes.
pub fn inventory_where(root: &Path, keep: impl Fn(&Path) -> bool) -> BTreeMap<Vec<u8>, usize> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if !keep(&p) {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                if let Ok(content) = fs::read(&p) {
                    *out.entry(content).or_insert(0) += 1;
                }
            }
        }
    }
    out
}

/// What differs between two inventories, briefly (for assertion messages).
pub fn inventory_diff(before: &BTreeMap<Vec<u8>, usize>, after: &BTreeMap<Vec<u8>, usize>) -> String {
    let show = |b: &Vec<u8>| String::from_utf8_lossy(&b[..b.len().min(60)]).into_owned();
    let lost: Vec<String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) < Some(v))
        .map(|(k, _)| show(k))
        .take(5)
        .collect();
    let extra: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) < Some(v))
        .map(|(k, _)| show(k))
        .take(5)
        .collect();
    format!("lost {lost:?}, extra {extra:?}")
}

/// A user/group lookup for parsing configs in tests: user `alice` is 1000, group `staff` is
/// 100, every other name is unknown.
pub struct Ids;

impl IdLookup for Ids {
    fn user(&self, name: &str) -> Option<u32> {
        (name == "alice").then_some(1000)
    }
    fn group(&self, name: &str) -> Option<u32> {
        (name == "staff").then_some(100)
    }
}

/// A valid safetensors file with one F32 tensor of two values per name (data bytes 7): the
/// smallest model the inbox accepts, its kind told by the names.
pub fn safetensors(names: &[&str]) -> Vec<u8> {
    let mut header = String::from("{");
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            r#""{n}":{{"dtype":"F32","shape":[2],"data_offsets":[{},{}]}}"#,
            i * 8,
            i * 8 + 8
        ));
    }
    header.push('}');
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend(header.as_bytes());
    f.resize(f.len() + names.len() * 8, 7);
    f
}

/// A user/group lookup that knows no name (a config without `owner`, or one whose names must
/// fail to resolve).
pub struct NoIds;

impl IdLookup for NoIds {
    fn user(&self, _: &str) -> Option<u32> {
        None
    }
    fn group(&self, _: &str) -> Option<u32> {
        None
    }
}

/// A temp directory per test with `models/` (the target_dir, holding one folder per target)
/// and a link_dir at a path of the caller's choice; removed when dropped.
pub struct Tree {
    dir: tempfile::TempDir,
    link_dir: PathBuf,
}

impl Tree {
    /// `models/<target>` for each target, and an empty link_dir at `link_dir` (relative).
    pub fn new(link_dir: &str, targets: &[&str]) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("models")).unwrap();
        fs::create_dir_all(dir.path().join(link_dir)).unwrap();
        for t in targets {
            fs::create_dir(dir.path().join("models").join(t)).unwrap();
        }
        Tree {
            link_dir: dir.path().join(link_dir),
            dir,
        }
    }
    /// The temp directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    /// `models/<name>`.
    pub fn t(&self, name: &str) -> PathBuf {
        self.root().join("models").join(name)
    }
    /// `<link_dir>/<name>`.
    pub fn l(&self, name: &str) -> PathBuf {
        self.link_dir.join(name)
    }
    /// Whether `<link_dir>/<name>` is a symlink to `models/<name>`.
    pub fn linked(&self, name: &str) -> bool {
        fs::read_link(self.l(name)).ok() == Some(self.t(name))
    }
}
