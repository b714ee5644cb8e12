//! The pure decisions about one file in an inbox (SPEC §10), in the order the daemon meets them:
//! [`look`] at a candidate as the walk saw it (wait, leave it, refuse it at once, or take it for
//! checking); [`unchanged`] after checking, to tell whether the file moved under the checker;
//! [`decide`] once the worker (and the scanner) answered: accept under which name, or refuse with
//! which reason, where and with which `.why.txt`; and the [`Record`] of the decision.
//!
//! No I/O and no clock: what the disk showed and "now" are parameters, so every rule is a line in
//! `tests/inbox_cases.txt`. Names are bytes (`OsStr`): a client may send any name the filesystem
//! takes, invalid UTF-8 and newlines included.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{CheckKind, Inbox, InboxFolder, ModelFormat, OnExists};

/// The longest file name Linux filesystems take (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// What `.why.txt` adds to a refused file's name.
pub const WHY_SUFFIX: &str = ".why.txt";

/// The type of a directory entry, as `lstat` says (never following a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A regular file.
    Regular,
    /// A directory (walked, not a candidate).
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
}

impl FileType {
    /// The word used in findings and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Regular => "file",
            Self::Dir => "dir",
            Self::Symlink => "symlink",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
            Self::CharDevice => "chardev",
            Self::BlockDevice => "blockdev",
        }
    }
}

/// What the walk saw of one entry below `dir/<folder>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Its type.
    pub file_type: FileType,
    /// Hard links.
    pub nlink: u64,
    /// `st_mode`'s permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    /// Length in bytes.
    pub size: u64,
    /// Last modification.
    pub mtime: SystemTime,
    /// Last status change: set by the kernel, a client cannot choose it.
    pub ctime: SystemTime,
    /// A process has it open for writing (a read lease could not be taken).
    pub writer: bool,
}

/// What the format checks will treat a file as, by its extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// A model format the inbox accepts.
    Model(ModelFormat),
    /// A companion extension the inbox accepts (lowercase).
    Companion(String),
}

impl Expected {
    /// The format's name in records.
    pub fn name(&self) -> &str {
        match self {
            Self::Model(m) => m.as_str(),
            Self::Companion(c) => c,
        }
    }
}

/// The reasons of SPEC §10's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Accepted.
    Valid,
    /// More than one hard link, or a setuid/setgid bit.
    NotPlain,
    /// Over `max_size` (or `companion_max_size`).
    TooLarge,
    /// An extension the inbox does not accept.
    Format,
    /// The content does not match its format.
    Corrupt,
    /// A pickle global or opcode off the allowlist.
    Unsafe,
    /// A kind that does not belong in the folder, under `check_kind: refuse`.
    Kind,
    /// The scanner refused it.
    Scanner,
    /// The name exists in the target, under `on_exists: refuse`.
    Exists,
}

impl Reason {
    /// The reason as records spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::NotPlain => "not_plain",
            Self::TooLarge => "too_large",
            Self::Format => "format",
            Self::Corrupt => "corrupt",
            Self::Unsafe => "unsafe",
            Self::Kind => "kind",
            Self::Scanner => "scanner",
            Self::Exists => "exists",
        }
    }
}

/// A refusal: the reason and plain words for the `.why.txt` and the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The class.
    pub reason: Reason,
    /// What was wrong and what to do.
    pub message: String,
}

/// The answer of [`look`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Not complete yet (written recently, or open for writing): look again at `until` (an event
    /// may bring the look earlier).
    Wait {
        /// When to look again.
        until: SystemTime,
    },
    /// A symlink, FIFO, socket or device: never opened, followed or moved; reported.
    Leave(FileType),
    /// Refused by what the walk saw (checks 1-3 by extension), without reading a byte.
    Refuse(Refusal),
    /// Complete and plausible: move it into the private directory and check its content as this.
    Take(Expected),
}

/// The extension of `name` (the bytes after the last dot), lowercased, if it is ASCII.
fn extension(name: &OsStr) -> Option<String> {
    let b = name.as_bytes();
    let dot = b.iter().rposition(|&c| c == b'.')?;
    let ext = &b[dot + 1..];
    (dot > 0 && !ext.is_empty() && ext.is_ascii()).then(|| String::from_utf8_lossy(ext).to_ascii_lowercase())
}

/// What the inbox would check `name` as, or `None` when its extension is not accepted.
pub fn expected(inbox: &Inbox, name: &OsStr) -> Option<Expected> {
    let ext = extension(name)?;
    match ModelFormat::from_extension(&ext) {
        Some(m) if inbox.accept.contains(&m) => Some(Expected::Model(m)),
        Some(_) => None,
        None => inbox
            .companions
            .iter()
            .any(|c| *c == ext || (c == "jpg" && ext == "jpeg") || (c == "jpeg" && ext == "jpg"))
            .then_some(Expected::Companion(ext)),
    }
}

/// Whether a file with these times is settled at `now`: neither changed within `settle`.
///
/// ctime is set by the kernel on every write and on every `utimes`, so it is never older than the
/// last change. mtime is what a client says (SMB copies keep the source's); one set into the
/// future would otherwise keep a file waiting forever, so an mtime after `now` is not counted
/// (setting it moved ctime, which still counts).
pub fn settled_at(
    mtime: SystemTime,
    ctime: SystemTime,
    settle: Duration,
    now: SystemTime,
) -> Option<SystemTime> {
    let newest = if mtime <= now { mtime.max(ctime) } else { ctime };
    let ready = newest + settle;
    (ready > now).then_some(ready)
}

/// Looks at a candidate the walk found at `name` (its last component), at `now`.
pub fn look(inbox: &Inbox, name: &OsStr, c: &Candidate, now: SystemTime) -> Look {
    match c.file_type {
        FileType::Regular => {}
        other => return Look::Leave(other),
    }
    if let Some(until) = settled_at(c.mtime, c.ctime, inbox.settle, now) {
        return Look::Wait { until };
    }
    if c.writer {
        // Open for writing with no write for `settle`: a slow writer. Look again a settle later
        // (its close brings an IN_CLOSE_WRITE hint sooner).
        return Look::Wait {
            until: now + inbox.settle.max(Duration::from_secs(1)),
        };
    }
    if let Some(r) = plain_refusal(c) {
        return Look::Refuse(r);
    }
    let expect = expected(inbox, name);
    let limit = match &expect {
        Some(Expected::Companion(_)) => inbox.companion_max_size,
        _ => inbox.max_size,
    };
    if c.size > limit {
        return Look::Refuse(Refusal {
            reason: Reason::TooLarge,
            message: format!(
                "the file is {} bytes; this inbox takes at most {} bytes{}. Ask an admin to raise the limit.",
                c.size,
                limit,
                if matches!(expect, Some(Expected::Companion(_))) {
                    " for a companion file"
                } else {
                    ""
                }
            ),
        });
    }
    match expect {
        Some(e) => Look::Take(e),
        None => Look::Refuse(Refusal {
            reason: Reason::Format,
            message: format!(
                "format not accepted: this inbox takes {}. Convert the model (e.g. to .safetensors) and upload it again.",
                accepted_list(inbox)
            ),
        }),
    }
}

fn plain_refusal(c: &Candidate) -> Option<Refusal> {
    if c.nlink != 1 {
        return Some(Refusal {
            reason: Reason::NotPlain,
            message: format!(
                "the file has {} hard links: only a plain file with one link is accepted. Upload a copy of the file instead.",
                c.nlink
            ),
        });
    }
    if c.mode & 0o6000 != 0 {
        return Some(Refusal {
            reason: Reason::NotPlain,
            message:
                "the file has a setuid or setgid bit: a model is data. Upload it without special permissions."
                    .into(),
        });
    }
    None
}

fn accepted_list(inbox: &Inbox) -> String {
    let mut exts: Vec<&str> = Vec::new();
    for f in &inbox.accept {
        exts.extend(match f {
            ModelFormat::Safetensors => &[".safetensors"][..],
            ModelFormat::Gguf => &[".gguf"][..],
            ModelFormat::Pickle => &[".ckpt", ".pt", ".pth", ".bin"][..],
        });
    }
    let companions: Vec<String> = inbox.companions.iter().map(|c| format!(".{c}")).collect();
    exts.extend(companions.iter().map(String::as_str));
    exts.join(" ")
}

/// What must not change between the look before the move and the end of the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Length.
    pub size: u64,
    /// Last modification.
    pub mtime: SystemTime,
    /// Last status change, ignoring the one the move into the private directory makes: the
    /// caller takes `before` from the fd after the move.
    pub ctime: SystemTime,
}

/// Whether the file checked is the file that was taken: same size, mtime and ctime, and no
/// writer. Otherwise it goes back to the inbox and is looked at again later.
pub fn unchanged(before: &Stamp, after: &Stamp, writer: bool) -> bool {
    before == after && !writer
}

/// What the unprivileged worker said about the content (checks 3, 4's guess and 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerVerdict {
    /// The content agrees with its format.
    Passed {
        /// The format as records spell it.
        format: String,
        /// What the tensor names say (`lora`, `checkpoint`, ...), when they say something.
        kind: Option<String>,
        /// Whether that kind is sure and does not belong in the folder's target.
        kind_mismatch: bool,
        /// SHA-256 of the content, hex.
        sha256: String,
    },
    /// The content does not agree (`corrupt`, `unsafe`, `format`).
    Refused {
        /// The format the file was checked as.
        format: String,
        /// The refusal.
        refusal: Refusal,
    },
}

/// What the admin's scanner said (check 5); a scanner that failed is retried and never decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanVerdict {
    /// No scanner is configured.
    NotRun,
    /// Exit 0.
    Clean,
    /// Exit 1, with the first line of its output.
    Refused(String),
}

/// Where a file goes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Into `target_dir/<target>/<relpath>` under `name` (the client's name, or `name (N).ext`).
    Accept {
        /// The final name (last component).
        name: OsString,
        /// A kind that does not belong in the folder, to log at WARN (`check_kind: warn`).
        kind_warning: Option<String>,
    },
    /// Into `refused_dir/<folder>/<relpath>` under `name`, with `name` + `.why.txt` beside it.
    Refuse {
        /// The final name of the refused file (last component).
        name: OsString,
        /// The refusal.
        refusal: Refusal,
    },
}

/// Decides where a checked file goes. `name` is the client's file name; `taken_in_target` and
/// `taken_in_refused` say whether a name exists in the destination folder (the fs layer moves
/// with `RENAME_NOREPLACE` anyway, and asks again when it meets a name that appeared since).
pub fn decide(
    inbox: &Inbox,
    folder: &InboxFolder,
    name: &OsStr,
    worker: &WorkerVerdict,
    scan: &ScanVerdict,
    taken_in_target: &dyn Fn(&OsStr) -> bool,
    taken_in_refused: &dyn Fn(&OsStr) -> bool,
) -> Decision {
    let refuse = |refusal: Refusal| Decision::Refuse {
        name: refused_name(name, taken_in_refused),
        refusal,
    };
    let (kind, kind_mismatch) = match worker {
        WorkerVerdict::Refused { refusal, .. } => return refuse(refusal.clone()),
        WorkerVerdict::Passed {
            kind, kind_mismatch, ..
        } => (kind, *kind_mismatch),
    };
    let mut kind_warning = None;
    if kind_mismatch && inbox.check_kind != CheckKind::Off {
        let k = kind.as_deref().unwrap_or("unknown");
        let message = format!(
            "the tensors say this is a {k}, which does not belong in `{}`. Upload it into the folder for {k} models.",
            folder.folder
        );
        if inbox.check_kind == CheckKind::Refuse {
            return refuse(Refusal {
                reason: Reason::Kind,
                message,
            });
        }
        kind_warning = Some(message);
    }
    if let ScanVerdict::Refused(line) = scan {
        return refuse(Refusal {
            reason: Reason::Scanner,
            message: format!(
                "the virus scanner refused it: {line}. Do not upload this file again; tell an admin."
            ),
        });
    }
    if !taken_in_target(name) {
        return Decision::Accept {
            name: name.to_owned(),
            kind_warning,
        };
    }
    match inbox.on_exists {
        OnExists::Rename => Decision::Accept {
            name: unique_name(name, 0, taken_in_target),
            kind_warning,
        },
        OnExists::Refuse => refuse(Refusal {
            reason: Reason::Exists,
            message: "a model of that name exists: uploads never replace a model. Rename your file and upload it again.".into(),
        }),
    }
}

/// `name` if free, else `stem (2).ext`, `stem (3).ext`, ...: the first name `taken` says is
/// free, shortened (keeping the extension) so that it and `reserve` more bytes fit in NAME_MAX.
pub fn unique_name(name: &OsStr, reserve: usize, taken: &dyn Fn(&OsStr) -> bool) -> OsString {
    let b = name.as_bytes();
    let (stem, ext) = match b.iter().rposition(|&c| c == b'.') {
        Some(dot) if dot > 0 => b.split_at(dot),
        _ => (b, &b[b.len()..]),
    };
    let build = |n: u32| -> OsString {
        let suffix = if n < 2 { String::new() } else { format!(" ({n})") };
        let room = NAME_MAX.saturating_sub(reserve + suffix.len() + ext.len());
        let mut s = shorten(stem, room).to_vec();
        s.extend_from_slice(suffix.as_bytes());
        s.extend_from_slice(ext);
        OsString::from_vec(s)
    };
    (1..).map(build).find(|c| !taken(c)).expect("some number is free")
}

/// At most `room` bytes of `stem`, cut at a character boundary when the stem is UTF-8.
fn shorten(stem: &[u8], room: usize) -> &[u8] {
    if stem.len() <= room {
        return stem;
    }
    let mut cut = room;
    if std::str::from_utf8(stem).is_ok() {
        while cut > 0 && (stem[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
    }
    &stem[..cut]
}

/// The refused file's name: the client's, unless taken in the refused folder (then `name (2).ext`)
/// or too long to take `.why.txt` beside it.
pub fn refused_name(name: &OsStr, taken: &dyn Fn(&OsStr) -> bool) -> OsString {
    let why_taken = |n: &OsStr| {
        let mut w = n.to_owned();
        w.push(WHY_SUFFIX);
        taken(n) || taken(&w)
    };
    unique_name(name, WHY_SUFFIX.len(), &why_taken)
}

/// The `.why.txt` file's name beside a refused file.
pub fn why_name(refused: &OsStr) -> OsString {
    let mut w = refused.to_owned();
    w.push(WHY_SUFFIX);
    w
}

/// The text of `.why.txt`: what was wrong and what to do, for the person who uploaded the file.
pub fn why_text(folder: &InboxFolder, rel: &Path, refusal: &Refusal) -> String {
    format!(
        "linkfarm refused the upload {}/{} ({}).\n\n{}\n\nThe file is kept here untouched; delete it when you no longer need it.\n",
        folder.folder,
        rel.to_string_lossy(),
        refusal.reason.as_str(),
        refusal.message.trim_end(),
    )
}

/// One decision, as journald and the upload log record it (SPEC §10; the caller adds `time`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Record {
    /// The inbox's name.
    pub inbox: String,
    /// The folder as clients see it.
    pub folder: String,
    /// The path relative to the folder (lossy for names that are not UTF-8).
    pub file: String,
    /// `accept` or `refuse`.
    pub action: &'static str,
    /// The reason.
    pub reason: Reason,
    /// The format it was checked as (`null` before the format was known).
    pub format: Option<String>,
    /// What the tensor names say.
    pub kind: Option<String>,
    /// Length in bytes.
    pub size: u64,
    /// SHA-256, `null` when the decision came before the hash step.
    pub sha256: Option<String>,
    /// The file's owner as uploaded.
    pub uid: u32,
    /// The accepted or refused path (absolute).
    pub target: PathBuf,
}

/// The facts of one file a record needs besides the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts<'a> {
    /// The folder.
    pub folder: &'a InboxFolder,
    /// The path relative to the folder, the client's name last.
    pub rel: &'a Path,
    /// Length.
    pub size: u64,
    /// Owner as uploaded.
    pub uid: u32,
    /// What it was checked as, if it got that far.
    pub format: Option<String>,
}

/// The record of `decision` about a file; `worker` is `None` when the file was refused before
/// its content was checked.
pub fn record(
    inbox: &Inbox,
    facts: &Facts<'_>,
    decision: &Decision,
    worker: Option<&WorkerVerdict>,
) -> Record {
    let parent = facts.rel.parent().unwrap_or(Path::new(""));
    let (action, reason, base, name) = match decision {
        Decision::Accept { name, .. } => (
            "accept",
            Reason::Valid,
            inbox.target_dir.join(&facts.folder.target),
            name,
        ),
        Decision::Refuse { name, refusal } => (
            "refuse",
            refusal.reason,
            inbox.refused_dir.join(&facts.folder.folder),
            name,
        ),
    };
    let (format, kind, sha256) = match worker {
        Some(WorkerVerdict::Passed {
            format, kind, sha256, ..
        }) => {
            // The hash is step 6: a refusal at the kind or scanner step came before it.
            let hashed = matches!(reason, Reason::Valid | Reason::Exists);
            (Some(format.clone()), kind.clone(), hashed.then(|| sha256.clone()))
        }
        Some(WorkerVerdict::Refused { format, .. }) => (Some(format.clone()), None, None),
        None => (facts.format.clone(), None, None),
    };
    Record {
        inbox: inbox.name.clone(),
        folder: facts.folder.folder.clone(),
        file: facts.rel.to_string_lossy().into_owned(),
        action,
        reason,
        format,
        kind,
        size: facts.size,
        sha256,
        uid: facts.uid,
        target: base.join(parent).join(name),
    }
}

/// The folders of an inbox given the real subdirectories of `target_dir` (for `folders: "*"`):
/// minus excluded and reserved names, and minus the refused folder's name when it lies in `dir`.
/// A subdirectory whose name is not UTF-8 gets no folder: folder names appear in records and in
/// the config, which are text.
pub fn folders(inbox: &Inbox, target_subdirs: &[OsString]) -> Vec<InboxFolder> {
    if let Some(list) = inbox.explicit() {
        return list.to_vec();
    }
    let refused = inbox.refused_top();
    let mut out: Vec<InboxFolder> = target_subdirs
        .iter()
        .filter(|n| !inbox.ignores(n) && Some(*n) != refused.as_ref())
        .filter_map(|n| n.to_str())
        .map(|n| InboxFolder {
            folder: n.to_owned(),
            target: n.to_owned(),
        })
        .collect();
    out.sort_by(|a, b| a.folder.cmp(&b.folder));
    out
}
