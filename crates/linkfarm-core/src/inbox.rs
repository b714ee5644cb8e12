//! Inboxes (SPEC §10): folders that clients drop models into, which linkfarm moves into the real
//! model folders once a file is complete and has passed the checks, or into a refused folder with
//! a reason. This module holds the validated inbox as the config describes it;
//! [`decide`] holds the pure decisions about one file.
//!
//! Like the rest of this crate it never touches the disk or reads the clock.

use std::path::PathBuf;
use std::time::Duration;

use crate::names::NameFilter;
use crate::spec::Owner;

pub mod decide;

/// Prefix of names that linkfarm owns inside an inbox (the private directory, temp names): never
/// a candidate, whatever `exclude` says.
pub const RESERVED_PREFIX: &str = ".linkfarm-";

/// Name of the root-only directory inside `dir` where a file is moved while it is checked.
pub const PRIVATE_DIR: &str = ".linkfarm-private";

/// One validated inbox.
#[derive(Debug, Clone)]
pub struct Inbox {
    /// Unique among farms and inboxes.
    pub name: String,
    /// Clients drop files into `dir/<folder>/...`.
    pub dir: PathBuf,
    /// Where the real model folders live.
    pub target_dir: PathBuf,
    /// Which folders the inbox offers.
    pub folders: Folders,
    /// Names (files and folders) never touched.
    pub exclude: NameFilter,
    /// `exclude` as written, for display.
    pub exclude_patterns: Vec<String>,
    /// Model formats accepted.
    pub accept: Vec<ModelFormat>,
    /// Extensions of companions accepted (lowercase, without the dot).
    pub companions: Vec<String>,
    /// Largest companion accepted, in bytes.
    pub companion_max_size: u64,
    /// Largest model accepted, in bytes.
    pub max_size: u64,
    /// How long a file must be untouched (mtime and ctime) before it is taken.
    pub settle: Duration,
    /// What happens when the name exists in the target.
    pub on_exists: OnExists,
    /// What a kind that does not belong in the folder does.
    pub check_kind: CheckKind,
    /// The admin's scanner argv (`{}` is the private path, `-` the fd on stdin); empty: none.
    pub scanner: Vec<String>,
    /// Owner of accepted files, created folders and `dir/<folder>`; `None`: files keep the
    /// uploader's owner.
    pub owner: Option<Owner>,
    /// Mode of accepted files (never with exec, setuid, setgid or sticky bits).
    pub file_mode: u32,
    /// Mode of created folders.
    pub dir_mode: u32,
    /// Where refused files go (absolute; default `dir/_refused`).
    pub refused_dir: PathBuf,
}

/// The folders of an inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folders {
    /// One folder per real subdirectory of `target_dir` not matched by `exclude`.
    All,
    /// An explicit list.
    List(Vec<InboxFolder>),
}

/// `dir/<folder>` feeds `target_dir/<target>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxFolder {
    /// The folder name clients see in `dir`.
    pub folder: String,
    /// The model folder inside `target_dir`.
    pub target: String,
}

/// A model format an inbox may accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelFormat {
    /// `.safetensors`
    Safetensors,
    /// `.gguf`
    Gguf,
    /// `.ckpt .pt .pth .bin` that pass the pickle scan.
    Pickle,
}

impl ModelFormat {
    /// The name as written in `accept:` and in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors",
            Self::Gguf => "gguf",
            Self::Pickle => "pickle",
        }
    }

    /// The format a config word names.
    pub fn from_word(w: &str) -> Option<Self> {
        Some(match w {
            "safetensors" => Self::Safetensors,
            "gguf" => Self::Gguf,
            "pickle" => Self::Pickle,
            _ => return None,
        })
    }

    /// The model format a file's extension announces (case-insensitive).
    pub fn from_extension(ext: &str) -> Option<Self> {
        Some(match ext.to_ascii_lowercase().as_str() {
            "safetensors" => Self::Safetensors,
            "gguf" => Self::Gguf,
            "ckpt" | "pt" | "pth" | "bin" => Self::Pickle,
            _ => return None,
        })
    }
}

/// Companion extensions linkfarm can check (by magic or by parsing), as `companions:` spells them.
pub const COMPANION_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "json", "yaml", "yml", "txt", "md"];

/// `on_exists`: a name that exists in the target is never overwritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExists {
    /// Refuse the upload (`exists`).
    Refuse,
    /// Accept it as `name (2).ext`, `name (3).ext`, ...
    Rename,
}

/// `check_kind`: a model whose kind does not belong in its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// Accept it, with a WARN.
    Warn,
    /// Refuse it (`kind`).
    Refuse,
    /// Do not look.
    Off,
}

impl Inbox {
    /// The folders of an explicit list, or `None` for `folders: "*"`.
    pub fn explicit(&self) -> Option<&[InboxFolder]> {
        match &self.folders {
            Folders::List(l) => Some(l),
            Folders::All => None,
        }
    }

    /// The root-only directory where files wait while they are checked.
    pub fn private_dir(&self) -> PathBuf {
        self.dir.join(PRIVATE_DIR)
    }

    /// Whether a name inside the inbox is never touched: linkfarm's own names, and `exclude`.
    pub fn ignores(&self, name: &std::ffi::OsStr) -> bool {
        use std::os::unix::ffi::OsStrExt;
        name.as_bytes().starts_with(RESERVED_PREFIX.as_bytes()) || self.exclude.is_match(name)
    }

    /// The name in `dir` that holds the refused folder, when it lies inside the inbox: never an
    /// inbox folder.
    pub fn refused_top(&self) -> Option<std::ffi::OsString> {
        self.refused_dir
            .strip_prefix(&self.dir)
            .ok()
            .and_then(|r| r.components().next())
            .map(|c| c.as_os_str().to_owned())
    }
}
