//! Shared by the campaigns: a seeded PRNG, campaign sizes, inventories, and invariant checks.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `LINKFARM_CAMPAIGN=full` runs the full-size campaigns; anything else the short CI versions.
pub fn full() -> bool {
    std::env::var("LINKFARM_CAMPAIGN").is_ok_and(|v| v == "full")
}

/// A number from the environment, or the short/full default.
pub fn size(var: &str, short: u64, full_size: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full() { full_size } else { short })
}

/// xorshift64*: small, seeded, reproducible; enough to pick operations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Every regular file under `root` (not following symlinks): content → count.
pub fn inventory(root: &Path) -> BTreeMap<Vec<u8>, usize> {
    inventory_except(root, &[])
}

/// Like [`inventory`], skipping files directly in `root` whose name starts with one of `skip`
/// (the config and the daemon's state file are not user data).
pub fn inventory_except(root: &Path, skip: &[&str]) -> BTreeMap<Vec<u8>, usize> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if d == root
                && skip
                    .iter()
                    .any(|s| e.file_name().to_string_lossy().starts_with(s))
            {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                if let Ok(c) = fs::read(e.path()) {
                    *out.entry(c).or_insert(0) += 1;
                }
            }
        }
    }
    out
}

/// Paths under `root` whose name starts with `.linkfarm-tmp.`.
pub fn temp_leftovers(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".linkfarm-tmp.") {
                out.push(e.path());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out
}

/// A directory tree as path → kind and content or link text.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            let v = if ft.is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                format!(
                    "file {}",
                    String::from_utf8_lossy(&fs::read(&p).unwrap_or_default())
                )
            };
            out.insert(p, v);
        }
    }
    out
}

#[track_caller]
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_linkfarm")
}

/// Each farm's state according to `linkfarm check --json`.
pub fn states(config: &Path) -> Vec<String> {
    let o = std::process::Command::new(bin())
        .arg("-c")
        .arg(config)
        .args(["check", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["farms"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["state"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
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
