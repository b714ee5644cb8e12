//! What the filesystem layer saw of one farm, as plain data for the planner. Producing it is the
//! job of `linkfarm-fs`; tests build it by hand. It records only facts (names, kinds, link texts,
//! times), never decisions.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::SystemTime;

/// One observation of a farm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The target side.
    pub target: TargetObs,
    /// The link side.
    pub link_dir: LinkDirObs,
}

/// What `target_dir` looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetObs {
    /// A readable directory with these entries that can serve as targets.
    Present(BTreeMap<OsString, TargetKind>),
    /// Does not exist (volume unmounted, renamed away).
    Missing,
    /// Exists but is not a directory.
    NotDir,
    /// Exists but cannot be read (the error text).
    Unreadable(String),
}

/// The kind of an entry of `target_dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A real directory.
    Dir,
    /// A symlink that resolves to a directory (a target only for explicit entries).
    LinkToDir,
    /// Anything else (a file, a dangling link): not a usable target.
    Other,
}

/// What `link_dir` looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkDirObs {
    /// A readable directory and its entries.
    Present(BTreeMap<OsString, Node>),
    /// Does not exist; whether its parent does.
    Missing {
        /// The parent exists, so `link_dir` can be created.
        parent_exists: bool,
    },
    /// `link_dir` (or a component of its path, since start-up) is a symlink: refused (SPEC §4).
    Symlink(String),
    /// Exists but is not a directory.
    NotDir,
    /// Cannot be opened or read (the error text).
    Unreadable(String),
}

/// One entry of `link_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A symlink with its text; owner ids when the farm has an `owner`.
    Symlink {
        /// The link text as stored.
        text: PathBuf,
        /// Owner `(uid, gid)`, when observed.
        owner: Option<(u32, u32)>,
    },
    /// A real directory.
    Dir {
        /// Newest of the directory's own mtime and ctime.
        newest: SystemTime,
        /// Its entries, only walked for directories at desired link names.
        children: Option<Vec<Child>>,
    },
    /// A regular file.
    File {
        /// Newest of mtime and ctime.
        newest: SystemTime,
    },
    /// A FIFO, socket, device.
    Other {
        /// Newest of mtime and ctime.
        newest: SystemTime,
    },
}

/// One entry inside a real directory at a link path (a candidate for adoption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// Its name.
    pub name: OsString,
    /// Newest mtime/ctime of it and of everything below it (walked without following symlinks).
    pub newest: SystemTime,
    /// Whether an entry of that name already exists in the target folder.
    pub exists_in_target: bool,
    /// Why it could not be walked completely, if it could not.
    pub error: Option<String>,
}

impl Node {
    /// Short kind name for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Symlink { .. } => "symlink",
            Node::Dir { .. } => "directory",
            Node::File { .. } => "file",
            Node::Other { .. } => "special file",
        }
    }
}
