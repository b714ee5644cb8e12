//! The validated desired state: what the rest of linkfarm works with once `config` has checked the
//! YAML. Every path here is absolute and lexically normal, every name is a single safe component,
//! owners are numeric ids. Nothing downstream re-validates.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::names::NameFilter;

/// A whole validated configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (absolute).
    pub path: PathBuf,
    /// The farms, in file order.
    pub farms: Vec<Farm>,
    /// The inboxes (SPEC §10), in file order.
    pub inboxes: Vec<crate::inbox::Inbox>,
    /// Daemon-wide settings.
    pub settings: Settings,
}

/// One symlink farm: a `link_dir` kept full of links into `target_dir`.
#[derive(Debug, Clone)]
pub struct Farm {
    /// Unique name, used in logs, the state file and the default quarantine path.
    pub name: String,
    /// Where the real folders live.
    pub target_dir: PathBuf,
    /// Where the symlinks are kept.
    pub link_dir: PathBuf,
    /// Which links are desired.
    pub entries: Entries,
    /// Absolute or relative link text.
    pub link_style: LinkStyle,
    /// Whether a missing target of an explicit entry is created.
    pub create_targets: bool,
    /// Owner for links and created directories.
    pub owner: Option<Owner>,
    /// Mode of created directories.
    pub dir_mode: u32,
    /// Whether managed links that are no longer desired are removed.
    pub prune: bool,
    /// What happens to a real directory at a link path.
    pub on_conflict: OnConflict,
    /// Where conflicting objects are moved.
    pub quarantine_dir: PathBuf,
    /// Link names in this `link_dir` that other farms sharing it manage. Prune never removes them,
    /// even when their text resolves into this farm's `target_dir` (both farms may share one):
    /// otherwise two farms on one `link_dir` would remove each other's links forever.
    pub neighbours: BTreeSet<String>,
}

/// The desired entries of a farm.
#[derive(Debug, Clone)]
pub enum Entries {
    /// An explicit list.
    List(Vec<Entry>),
    /// One link per real subdirectory of `target_dir`, minus the excluded names.
    All {
        /// Compiled `exclude` patterns.
        exclude: NameFilter,
        /// The patterns as written, for display.
        patterns: Vec<String>,
    },
}

/// One explicit entry: `link_dir/<link>` → `target_dir/<target>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Name of the link inside `link_dir`.
    pub link: String,
    /// Name of the target inside `target_dir`.
    pub target: String,
}

/// How the link text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkStyle {
    /// The absolute target path.
    Absolute,
    /// The target path relative to `link_dir`.
    Relative,
}

/// The policy for a real directory found where a link belongs (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Move settled entries into the target, then make the link.
    Adopt,
    /// Move the whole settled object to the quarantine, then make the link.
    Quarantine,
    /// Touch nothing; report the conflict.
    Keep,
}

/// Numeric owner; `None` leaves that id unchanged (like `chown user:` / `chown :group`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: Option<u32>,
    /// Group id.
    pub gid: Option<u32>,
}

/// Which change detector the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Watcher {
    /// inotify, or polling on network and FUSE filesystems.
    Auto,
    /// Always inotify.
    Inotify,
    /// Always polling.
    Poll,
}

/// Daemon-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Full reconcile as a safety net; `None` disables it.
    pub resync_interval: Option<Duration>,
    /// How long an entry must be untouched before it is moved.
    pub adopt_after: Duration,
    /// Change detector.
    pub watcher: Watcher,
    /// Interval of polling passes.
    pub poll_interval: Duration,
    /// Where the daemon writes its state.
    pub state_file: PathBuf,
    /// Where the daemon writes Prometheus metrics for node exporter's textfile collector
    /// (SPEC §12); `None` (the default) writes none.
    pub metrics_file: Option<PathBuf>,
    /// Where every inbox decision is appended as one JSON line.
    pub upload_log: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync_interval: Some(Duration::from_secs(600)),
            adopt_after: Duration::from_secs(10),
            watcher: Watcher::Auto,
            poll_interval: Duration::from_secs(30),
            state_file: PathBuf::from("/run/linkfarm/state.json"),
            metrics_file: None,
            upload_log: PathBuf::from("/var/lib/linkfarm/uploads.jsonl"),
        }
    }
}

impl Farm {
    /// The explicit entries, or `None` for `entries: "*"`.
    pub fn explicit(&self) -> Option<&[Entry]> {
        match &self.entries {
            Entries::List(list) => Some(list),
            Entries::All { .. } => None,
        }
    }
}
