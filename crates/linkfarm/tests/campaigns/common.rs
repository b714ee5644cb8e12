//! Shared by the campaigns: a seeded PRNG, campaign sizes, inventories, and invariant checks.
#![allow(dead_code)]

pub use linkfarm_testsupport::{
    inventory, inventory_diff, inventory_except, inventory_where, wait_for_within as wait_for,
};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

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
