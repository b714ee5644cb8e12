//! The inbox's filesystem side (SPEC §10): keeps `dir/<folder>` present, walks candidates, takes a
//! file out of the clients' reach into a root-only private directory, and accepts, refuses or puts
//! it back. The decisions are `linkfarm_core::inbox::decide`'s; this module only carries them out.
//!
//! Everything inside the inbox, the target folders and the refused folder goes through directory
//! fds opened `O_DIRECTORY|O_NOFOLLOW` and `*at` calls that never follow a symlink, and a
//! client's file only ever moves through the one primitive `move_noreplace` of `prims.rs` (so
//! nothing is overwritten, on any filesystem of SPEC §14). It must never open a client's file in a directory the client can
//! write (a swap to a FIFO or device between `lstat` and `open` would block or act on it): a file
//! is opened only after it was moved into the private directory, `O_NONBLOCK|O_NOFOLLOW`, and then
//! checked to be the regular file that was seen. It never maps a file and never reads one (the
//! worker reads through the fd), never changes a refused file's owner or mode, and never deletes a
//! file: only emptied client subfolders (`rmdir`, which fails on anything non-empty).

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use linkfarm_core::inbox::decide::{unique_name, why_name, Candidate, FileType, Stamp};
use linkfarm_core::inbox::{Inbox, InboxFolder};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, geteuid, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::error::FsError;
use crate::prims::{is_dir, lstat_at, open_dir_at, open_dir_path, probe, Caps, MoveError, Prims, MAX_DEPTH};

/// A file the walk found, as `lstat` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The folder it is in.
    pub folder: InboxFolder,
    /// Its path relative to `dir/<folder>`, its name last.
    pub rel: PathBuf,
    /// What `lstat` said.
    pub candidate: Candidate,
    /// Device and inode: the file taken must be this one.
    pub id: (u64, u64),
    /// Owner as uploaded.
    pub uid: u32,
}

/// An emptied client subfolder (its path relative to `dir/<folder>`) and its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyDir {
    /// The folder it is in.
    pub folder: InboxFolder,
    /// Its path relative to `dir/<folder>` (never empty: `dir/<folder>` itself is never removed).
    pub rel: PathBuf,
    /// Last modification.
    pub mtime: SystemTime,
    /// Last status change.
    pub ctime: SystemTime,
}

/// What one walk of a folder found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Entries below the folder that are not directories, regular files included (the decisions
    /// leave the other types where they are).
    pub seen: Vec<Seen>,
    /// Empty client subfolders.
    pub empty_dirs: Vec<EmptyDir>,
    /// Every subfolder walked (relative to `dir/<folder>`), for the daemon's watches.
    pub dirs: Vec<PathBuf>,
    /// What could not be read (a folder replaced by a symlink is here, never followed).
    pub errors: Vec<FsError>,
}

/// A file moved into the private directory and opened there.
#[derive(Debug)]
pub struct Taken {
    /// The folder it came from.
    pub folder: InboxFolder,
    /// Its path relative to `dir/<folder>`.
    pub rel: PathBuf,
    /// The open file (read-only): the checks read through it, owner and mode are set through it.
    pub fd: OwnedFd,
    /// Its stamp once in the private directory.
    pub stamp: Stamp,
    /// A process had it open for writing when it was taken.
    pub writer: bool,
    /// Owner as uploaded.
    pub uid: u32,
    /// Group as uploaded.
    pub gid: u32,
    /// Its absolute path in the private directory (for the admin's scanner).
    pub private_path: PathBuf,
}

/// Why a file was not taken; nothing was harmed.
#[derive(Debug)]
pub enum NotTaken {
    /// It is gone or changed since the walk (renamed away, replaced): look again.
    Raced(String),
    /// A name of that path is in the private directory already (another daemon checks it).
    Busy,
    /// An error.
    Failed(FsError),
}

/// Why a file could not be moved to its decided place; it is still in the private directory
/// (the caller puts it back or decides again).
#[derive(Debug)]
pub enum NotMoved {
    /// The name appeared in the destination meanwhile: decide again.
    Exists,
    /// An error.
    Failed(FsError),
}

/// One inbox's directories, held open.
#[derive(Debug)]
pub struct InboxFs {
    inbox: Inbox,
    dir: OwnedFd,
    private: OwnedFd,
    prims: Prims,
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs())
    }
}

#[allow(clippy::unnecessary_cast)]
fn file_type(st: &FileStat) -> FileType {
    match SFlag::from_bits_truncate(st.st_mode as _) & SFlag::S_IFMT {
        SFlag::S_IFREG => FileType::Regular,
        SFlag::S_IFDIR => FileType::Dir,
        SFlag::S_IFLNK => FileType::Symlink,
        SFlag::S_IFIFO => FileType::Fifo,
        SFlag::S_IFSOCK => FileType::Socket,
        SFlag::S_IFCHR => FileType::CharDevice,
        _ => FileType::BlockDevice,
    }
}

#[allow(clippy::unnecessary_cast)]
fn stamp(st: &FileStat) -> Stamp {
    Stamp {
        size: st.st_size as u64,
        mtime: time(st.st_mtime as i64, st.st_mtime_nsec as i64),
        ctime: time(st.st_ctime as i64, st.st_ctime_nsec as i64),
    }
}

/// The stamp of the open file `fd` as the filesystem itself has it now, past the kernel's
/// attribute cache (`statx` with `AT_STATX_FORCE_SYNC`; a local filesystem answers as `fstat`
/// does). On FUSE and NFS an `fstat` right after linkfarm's own move can answer from the cache
/// and a later one from the server: the file then looked "changed while it was checked", went
/// back, and was taken again at once, forever.
fn fresh_stamp(fd: BorrowedFd<'_>) -> Option<Stamp> {
    use rustix::fs::{statx, AtFlags, StatxFlags};
    let flags = AtFlags::EMPTY_PATH | AtFlags::STATX_FORCE_SYNC;
    let want = StatxFlags::SIZE | StatxFlags::MTIME | StatxFlags::CTIME;
    let s = statx(fd, "", flags, want).ok()?;
    let t = |ts: rustix::fs::StatxTimestamp| time(ts.tv_sec, i64::from(ts.tv_nsec));
    Some(Stamp {
        size: s.stx_size,
        mtime: t(s.stx_mtime),
        ctime: t(s.stx_ctime),
    })
}

/// The link count of `name` in `dir` as the filesystem itself has it now, past the kernel's
/// attribute cache (`statx` with `AT_STATX_FORCE_SYNC`). FUSE (bindfs: 1 s) and NFS (`actimeo`)
/// go on showing a cached count: 2, for a second after the `link()`+`unlink()` fallback of
/// SPEC §14 took a file still being written and put it back, and the upload was refused as
/// `not_plain`. Asked only when the cached count is not 1 (a request to the server on NFS).
fn fresh_nlink(dir: BorrowedFd<'_>, name: &OsStr) -> Option<u64> {
    use rustix::fs::{statx, AtFlags, StatxFlags};
    let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_FORCE_SYNC;
    statx(dir, name, flags, StatxFlags::NLINK)
        .ok()
        .map(|s| u64::from(s.stx_nlink))
}

#[allow(clippy::unnecessary_cast)]
fn id(st: &FileStat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// Whether a process has the file open for writing: a read lease (`F_SETLEASE`, `F_RDLCK`) cannot
/// be taken then (EAGAIN). The lease is released at once. `None` where the filesystem has no
/// leases (NFS, some FUSE), or the caller may not take one (not root and not the owner): then
/// only `settle` tells a finished upload.
#[allow(unsafe_code)]
pub fn has_writer(fd: BorrowedFd<'_>) -> Option<bool> {
    use nix::libc;
    // nix and rustix have no F_SETLEASE. SAFETY: fcntl(F_SETLEASE) takes an int argument and
    // touches no memory; `fd` is a valid open descriptor borrowed for the duration of the calls.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
    if r == -1 {
        return match Errno::last() {
            Errno::EAGAIN => Some(true),
            _ => None,
        };
    }
    // SAFETY: as above.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    Some(false)
}

/// The name components of a relative path (the walk made it, so every one is a plain name).
fn names(rel: &Path) -> Vec<&OsStr> {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

impl InboxFs {
    /// Opens the inbox: `dir` (created with owner and `dir_mode` when missing and its parent
    /// exists; refused when it is a symlink), and the private directory inside it (created `0700`;
    /// refused unless it is a directory of this user that nobody else may enter, since a client
    /// could have made one to watch files being checked). Probes the filesystem (SPEC §14) there.
    pub fn open(inbox: &Inbox) -> Result<InboxFs, FsError> {
        let err = |op, p: &Path, e| FsError::new(op, p.to_owned(), e);
        let parent_path = inbox.dir.parent().unwrap_or(Path::new("/"));
        let base = inbox.dir.file_name().unwrap_or_default();
        let parent = open_dir_path(parent_path).map_err(|e| err("open", parent_path, e))?;
        let mut prims = Prims {
            caps: Caps::FULL,
            writes: 0,
        };
        let dir = match open_dir_at(parent.as_fd(), base) {
            Err(Errno::ENOENT) => {
                let mode = Mode::from_bits_truncate(inbox.dir_mode);
                match prims.w(|| mkdirat(parent.as_fd(), base, mode)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(err("mkdir", &inbox.dir, e)),
                }
                let fd = open_dir_at(parent.as_fd(), base).map_err(|e| err("open", &inbox.dir, e))?;
                set_owner_mode(&mut prims, fd.as_fd(), inbox, inbox.dir_mode)
                    .map_err(|e| err("chown", &inbox.dir, e))?;
                fd
            }
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                return Err(err("open", &inbox.dir, e)
                    .with("the inbox's dir is not a real directory (a symlink?); it is never followed"))
            }
            Err(e) => return Err(err("open", &inbox.dir, e)),
            Ok(fd) => fd,
        };
        let pname = OsStr::new(linkfarm_core::inbox::PRIVATE_DIR);
        let ppath = inbox.private_dir();
        match prims.w(|| mkdirat(dir.as_fd(), pname, Mode::from_bits_truncate(0o700))) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(err("mkdir", &ppath, e)),
        }
        let private = open_dir_at(dir.as_fd(), pname).map_err(|e| err("open", &ppath, e))?;
        let st = fstat(private.as_fd()).map_err(|e| err("stat", &ppath, e))?;
        if st.st_uid != geteuid().as_raw() || st.st_mode & 0o077 != 0 {
            return Err(err("open", &ppath, Errno::EPERM).with(format!(
                "the private directory belongs to uid {} with mode {:04o}; linkfarm needs it as its own \
                 with mode 0700 (a client may have made it): move it away and restart linkfarm",
                st.st_uid,
                st.st_mode & 0o7777
            )));
        }
        let (caps, writes) = probe(private.as_fd()).map_err(|e| err("probe", &ppath, e))?;
        prims.caps = caps;
        prims.writes += writes;
        Ok(InboxFs {
            inbox: inbox.clone(),
            dir,
            private,
            prims,
        })
    }

    /// What the filesystem can do (SPEC §14).
    pub fn caps(&self) -> Caps {
        self.prims.caps
    }

    /// Write syscalls made so far.
    pub fn writes(&self) -> u64 {
        self.prims.writes
    }

    fn path(&self, folder: &str, rel: &Path) -> PathBuf {
        self.inbox.dir.join(folder).join(rel)
    }

    /// Keeps `dir/<folder>` present as a real directory: created with owner and `dir_mode` when
    /// missing. Anything else at that name is never followed or moved: the error reports it.
    pub fn ensure_folder(&mut self, folder: &InboxFolder) -> Result<(), FsError> {
        let name = OsStr::new(&folder.folder);
        let path = self.inbox.dir.join(name);
        match lstat_at(self.dir.as_fd(), name) {
            Ok(st) if is_dir(&st) => Ok(()),
            Ok(st) => Err(FsError::new("lstat", path, Errno::EEXIST).with(format!(
                "a {} is where the inbox folder belongs; linkfarm never follows or moves it: remove it",
                file_type(&st).as_str()
            ))),
            Err(Errno::ENOENT) => {
                let mode = Mode::from_bits_truncate(self.inbox.dir_mode);
                match self.prims.w(|| mkdirat(self.dir.as_fd(), name, mode)) {
                    Ok(()) => {}
                    // A client made it meanwhile: theirs, and fine.
                    Err(Errno::EEXIST) => return Ok(()),
                    Err(e) => return Err(FsError::new("mkdir", path, e)),
                }
                let fd =
                    open_dir_at(self.dir.as_fd(), name).map_err(|e| FsError::new("open", path.clone(), e))?;
                set_owner_mode(&mut self.prims, fd.as_fd(), &self.inbox, self.inbox.dir_mode)
                    .map_err(|e| FsError::new("chown", path, e))
            }
            Err(e) => Err(FsError::new("lstat", path, e)),
        }
    }

    /// Walks `dir/<folder>` without following anything: names linkfarm ignores (its own, and
    /// `exclude`) are skipped at every depth; a subfolder is opened `O_NOFOLLOW`, so one replaced
    /// by a symlink mid-walk is reported and not entered.
    pub fn walk(&self, folder: &InboxFolder) -> Walk {
        let mut out = Walk::default();
        let top = match open_dir_at(self.dir.as_fd(), OsStr::new(&folder.folder)) {
            Ok(fd) => fd,
            Err(e) => {
                out.errors
                    .push(FsError::new("open", self.path(&folder.folder, Path::new("")), e));
                return out;
            }
        };
        self.walk_dir(folder, top, PathBuf::new(), 0, &mut out);
        out
    }

    fn walk_dir(&self, folder: &InboxFolder, fd: OwnedFd, rel: PathBuf, depth: usize, out: &mut Walk) {
        let entries = match crate::observe::list(fd.as_fd()) {
            Ok(e) => e,
            Err(e) => {
                out.errors
                    .push(FsError::new("readdir", self.path(&folder.folder, &rel), e));
                return;
            }
        };
        if entries.is_empty() && depth > 0 {
            if let Ok(st) = fstat(fd.as_fd()) {
                let s = stamp(&st);
                out.empty_dirs.push(EmptyDir {
                    folder: folder.clone(),
                    rel: rel.clone(),
                    mtime: s.mtime,
                    ctime: s.ctime,
                });
            }
        }
        for (name, _) in entries {
            if self.inbox.ignores(&name) {
                continue;
            }
            let child = rel.join(&name);
            let st = match lstat_at(fd.as_fd(), &name) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => {
                    out.errors
                        .push(FsError::new("lstat", self.path(&folder.folder, &child), e));
                    continue;
                }
            };
            let t = file_type(&st);
            if t == FileType::Dir {
                if depth + 1 >= MAX_DEPTH {
                    out.errors.push(
                        FsError::new("open", self.path(&folder.folder, &child), Errno::ELOOP)
                            .with("too deep"),
                    );
                    continue;
                }
                match open_dir_at(fd.as_fd(), &name) {
                    Ok(sub) => {
                        out.dirs.push(child.clone());
                        self.walk_dir(folder, sub, child, depth + 1, out)
                    }
                    Err(Errno::ENOENT) => {}
                    Err(e) => out.errors.push(
                        FsError::new("open", self.path(&folder.folder, &child), e).with("not followed"),
                    ),
                }
                continue;
            }
            let s = stamp(&st);
            #[allow(clippy::unnecessary_cast)]
            let nlink = match st.st_nlink as u64 {
                1 => 1,
                n if t == FileType::Regular => fresh_nlink(fd.as_fd(), &name).unwrap_or(n),
                n => n,
            };
            out.seen.push(Seen {
                folder: folder.clone(),
                rel: child,
                candidate: Candidate {
                    file_type: t,
                    nlink,
                    mode: (st.st_mode & 0o7777) as u32,
                    size: s.size,
                    mtime: s.mtime,
                    ctime: s.ctime,
                    // Only a file in the private directory is opened; see `take`.
                    writer: false,
                },
                id: id(&st),
                uid: st.st_uid,
            });
        }
    }

    /// Opens the directory `rel`'s parent inside `root`, component by component without following
    /// anything; with `create`, missing components are made with `mode` (and the inbox's owner
    /// when `owned`).
    fn open_parent(
        &mut self,
        root: BorrowedFd<'_>,
        rel: &Path,
        create: Option<(u32, bool)>,
    ) -> nix::Result<OwnedFd> {
        let mut cur = root.try_clone_to_owned().map_err(|_| Errno::EBADF)?;
        let comps = names(rel);
        for c in &comps[..comps.len().saturating_sub(1)] {
            cur = self.open_or_make(cur.as_fd(), c, create)?;
        }
        Ok(cur)
    }

    fn open_or_make(
        &mut self,
        at: BorrowedFd<'_>,
        name: &OsStr,
        create: Option<(u32, bool)>,
    ) -> nix::Result<OwnedFd> {
        match (open_dir_at(at, name), create) {
            (Err(Errno::ENOENT), Some((mode, owned))) => {
                match self.prims.w(|| mkdirat(at, name, Mode::from_bits_truncate(mode))) {
                    Ok(()) => {
                        let fd = open_dir_at(at, name)?;
                        if owned {
                            set_owner_mode(&mut self.prims, fd.as_fd(), &self.inbox, mode)?;
                        } else {
                            self.prims
                                .w(|| fchmod(fd.as_fd(), Mode::from_bits_truncate(mode)))?;
                        }
                        Ok(fd)
                    }
                    Err(Errno::EEXIST) => open_dir_at(at, name),
                    Err(e) => Err(e),
                }
            }
            (r, _) => r,
        }
    }

    /// Moves a seen file into the private directory (same relative path under
    /// `.linkfarm-private/<folder>/`, so a crash leaves its way home on disk), opens it there and
    /// checks it is the regular file the walk saw. A different object (swapped meanwhile) goes
    /// straight back.
    pub fn take(&mut self, seen: &Seen) -> Result<Taken, NotTaken> {
        let fpath = self.path(&seen.folder.folder, &seen.rel);
        let name = seen.rel.file_name().unwrap_or_default().to_owned();
        let failed = |op, e| NotTaken::Failed(FsError::new(op, fpath.clone(), e));
        let top = match open_dir_at(self.dir.as_fd(), OsStr::new(&seen.folder.folder)) {
            Ok(fd) => fd,
            Err(e) => return Err(NotTaken::Raced(format!("its folder cannot be opened ({e})"))),
        };
        let src = match self.open_parent(top.as_fd(), &seen.rel, None) {
            Ok(fd) => fd,
            Err(e) => return Err(NotTaken::Raced(format!("its folder changed ({e})"))),
        };
        let private = self
            .private
            .try_clone()
            .map_err(|e| failed("dup", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        let ptop = self
            .open_or_make(
                private.as_fd(),
                OsStr::new(&seen.folder.folder),
                Some((0o700, false)),
            )
            .map_err(|e| failed("mkdir", e))?;
        let dst = self
            .open_parent(ptop.as_fd(), &seen.rel, Some((0o700, false)))
            .map_err(|e| failed("mkdir", e))?;
        match self.prims.move_noreplace(src.as_fd(), &name, dst.as_fd(), &name) {
            Ok(()) => {}
            Err(MoveError::Exists) => return Err(NotTaken::Busy),
            Err(MoveError::Gone) => return Err(NotTaken::Raced("it is gone".into())),
            Err(MoveError::Changed) => return Err(NotTaken::Raced("it changed during the move".into())),
            Err(MoveError::Unsupported(why)) => {
                return Err(NotTaken::Failed(
                    FsError::new("move", fpath, Errno::EOPNOTSUPP).with(why),
                ))
            }
            Err(MoveError::Io(e)) => return Err(failed("move", e)),
        }
        let private_path = self.inbox.private_dir().join(&seen.folder.folder).join(&seen.rel);
        let flags =
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let opened = openat(dst.as_fd(), name.as_os_str(), flags, Mode::empty())
            .and_then(|fd| fstat(fd.as_fd()).map(|st| (fd, st)));
        let (fd, st) = match opened {
            Ok((fd, st)) if file_type(&st) == FileType::Regular && id(&st) == seen.id => (fd, st),
            other => {
                // Not what the walk saw (or not openable): back where it was, untouched.
                let why = match other {
                    Ok(_) => "it was replaced by another object before the move".to_owned(),
                    Err(e) => format!("it could not be opened ({e})"),
                };
                let back = self.put_back_parts(&seen.folder, &seen.rel, dst.as_fd(), &name);
                return Err(match back {
                    Ok(_) => NotTaken::Raced(why),
                    Err(e) => NotTaken::Failed(e.with(format!(
                        "{why}; it stays in the private directory and returns at the next start"
                    ))),
                });
            }
        };
        let writer = has_writer(fd.as_fd()).unwrap_or(false);
        Ok(Taken {
            folder: seen.folder.clone(),
            rel: seen.rel.clone(),
            stamp: fresh_stamp(fd.as_fd()).unwrap_or_else(|| stamp(&st)),
            writer,
            uid: st.st_uid,
            gid: st.st_gid,
            fd,
            private_path,
        })
    }

    /// Whether a process has the seen file open for writing, tested in place (a read lease), so
    /// that a file a slow writer holds is never moved. `None` when it is no longer the regular
    /// file that was seen (the next walk sees what it is), or the test cannot be made.
    pub fn writer_in_place(&self, seen: &Seen) -> Option<bool> {
        let top = open_dir_at(self.dir.as_fd(), OsStr::new(&seen.folder.folder)).ok()?;
        let mut cur = top;
        let comps = names(&seen.rel);
        let (name, parents) = comps.split_last()?;
        for c in parents {
            cur = open_dir_at(cur.as_fd(), c).ok()?;
        }
        let flags =
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let fd = openat(cur.as_fd(), *name, flags, Mode::empty()).ok()?;
        let st = fstat(fd.as_fd()).ok()?;
        if file_type(&st) != FileType::Regular || id(&st) != seen.id {
            return None;
        }
        has_writer(fd.as_fd())
    }

    /// The taken file's stamp now, and whether a writer has it open: for
    /// `linkfarm_core::inbox::decide::unchanged` after the checks.
    pub fn restat(&self, taken: &Taken) -> Result<(Stamp, bool), FsError> {
        let now = match fresh_stamp(taken.fd.as_fd()) {
            Some(s) => s,
            None => {
                let st = fstat(taken.fd.as_fd())
                    .map_err(|e| FsError::new("fstat", taken.private_path.clone(), e))?;
                stamp(&st)
            }
        };
        Ok((now, has_writer(taken.fd.as_fd()).unwrap_or(false)))
    }

    fn private_parent(&mut self, folder: &InboxFolder, rel: &Path) -> Result<OwnedFd, FsError> {
        let p = self.inbox.private_dir().join(&folder.folder).join(rel);
        let private = self
            .private
            .try_clone()
            .map_err(|e| FsError::new("dup", p.clone(), Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        let top = open_dir_at(private.as_fd(), OsStr::new(&folder.folder))
            .map_err(|e| FsError::new("open", p.clone(), e))?;
        self.open_parent(top.as_fd(), rel, None)
            .map_err(|e| FsError::new("open", p, e))
    }

    /// Returns a taken file to the inbox where it was (its folders made again if a client removed
    /// them; a name taken meanwhile makes it `name (2).ext`). Its path in the inbox is returned.
    pub fn put_back(&mut self, taken: Taken) -> Result<PathBuf, FsError> {
        let from = self.private_parent(&taken.folder, &taken.rel)?;
        let name = taken.rel.file_name().unwrap_or_default().to_owned();
        drop(taken.fd);
        self.put_back_parts(&taken.folder, &taken.rel, from.as_fd(), &name)
    }

    fn put_back_parts(
        &mut self,
        folder: &InboxFolder,
        rel: &Path,
        from: BorrowedFd<'_>,
        name: &OsStr,
    ) -> Result<PathBuf, FsError> {
        let path = self.path(&folder.folder, rel);
        let err = |op, e| FsError::new(op, path.clone(), e);
        let dir = self
            .dir
            .try_clone()
            .map_err(|e| err("dup", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        let top = self
            .open_or_make(
                dir.as_fd(),
                OsStr::new(&folder.folder),
                Some((self.inbox.dir_mode, true)),
            )
            .map_err(|e| err("open", e))?;
        // A client's subfolder replaced by a symlink or a file: the file goes to the folder's top.
        let (to, rel_used) = match self.open_parent(top.as_fd(), rel, Some((self.inbox.dir_mode, true))) {
            Ok(fd) => (fd, rel.to_owned()),
            Err(_) => (top, PathBuf::from(name)),
        };
        for _ in 0..8 {
            let taken = |n: &OsStr| lstat_at(to.as_fd(), n).is_ok();
            let to_name = unique_name(name, 0, &taken);
            match self.prims.move_noreplace(from, name, to.as_fd(), &to_name) {
                Ok(()) => return Ok(self.path(&folder.folder, &rel_used.with_file_name(&to_name))),
                Err(MoveError::Exists) => continue,
                Err(MoveError::Io(e)) => return Err(err("move", e)),
                Err(MoveError::Gone) => return Err(err("move", Errno::ENOENT)),
                Err(MoveError::Changed) => return Err(err("move", Errno::EAGAIN)),
                Err(MoveError::Unsupported(w)) => return Err(err("move", Errno::EOPNOTSUPP).with(w)),
            }
        }
        Err(err("move", Errno::EEXIST).with("every free name was taken meanwhile"))
    }

    /// Accepts a taken file: moves it without replacing into `target_dir/<target>/<rel parent>/
    /// <name>` (folders made with owner and `dir_mode`; the model folder itself must exist), then
    /// sets owner and `file_mode` through the fd. The accepted path is returned.
    pub fn accept(&mut self, taken: &Taken, name: &OsStr) -> Result<PathBuf, NotMoved> {
        let target = self.inbox.target_dir.join(&taken.folder.target);
        let dest = target
            .join(taken.rel.parent().unwrap_or(Path::new("")))
            .join(name);
        let fail = |op, e| NotMoved::Failed(FsError::new(op, dest.clone(), e));
        let root = open_dir_path(&self.inbox.target_dir).map_err(|e| fail("open", e))?;
        let tfd = open_dir_at(root.as_fd(), OsStr::new(&taken.folder.target)).map_err(|e| fail("open", e))?;
        let to = self
            .open_parent(tfd.as_fd(), &taken.rel, Some((self.inbox.dir_mode, true)))
            .map_err(|e| fail("mkdir", e))?;
        let from = self
            .private_parent(&taken.folder, &taken.rel)
            .map_err(NotMoved::Failed)?;
        let src = taken.rel.file_name().unwrap_or_default();
        self.move_out(from.as_fd(), src, to.as_fd(), name, &dest)?;
        let mode = self.inbox.file_mode & 0o666;
        set_owner_mode(&mut self.prims, taken.fd.as_fd(), &self.inbox, mode).map_err(|e| fail("chown", e))?;
        Ok(dest)
    }

    fn move_out(
        &mut self,
        from: BorrowedFd<'_>,
        src: &OsStr,
        to: BorrowedFd<'_>,
        name: &OsStr,
        dest: &Path,
    ) -> Result<(), NotMoved> {
        match self.prims.move_noreplace(from, src, to, name) {
            Ok(()) => Ok(()),
            Err(MoveError::Exists) => Err(NotMoved::Exists),
            Err(MoveError::Io(e)) => Err(NotMoved::Failed(FsError::new("move", dest.to_owned(), e))),
            Err(MoveError::Gone) => Err(NotMoved::Failed(FsError::new(
                "move",
                dest.to_owned(),
                Errno::ENOENT,
            ))),
            Err(MoveError::Changed) => Err(NotMoved::Failed(FsError::new(
                "move",
                dest.to_owned(),
                Errno::EAGAIN,
            ))),
            Err(MoveError::Unsupported(w)) => Err(NotMoved::Failed(
                FsError::new("move", dest.to_owned(), Errno::EOPNOTSUPP).with(w),
            )),
        }
    }

    /// Refuses a taken file: moves it without replacing into `refused_dir/<folder>/<rel parent>/
    /// <name>` and writes `<name>.why.txt` beside it (new file only, owned by the uploader so the
    /// client can delete both). The file keeps its owner and mode. The refused path is returned.
    pub fn refuse(&mut self, taken: &Taken, name: &OsStr, why: &str) -> Result<PathBuf, NotMoved> {
        let rdir = self.inbox.refused_dir.clone();
        let dest = rdir
            .join(&taken.folder.folder)
            .join(taken.rel.parent().unwrap_or(Path::new("")))
            .join(name);
        let fail = |op, e| NotMoved::Failed(FsError::new(op, dest.clone(), e));
        let rparent = rdir.parent().unwrap_or(Path::new("/"));
        let pfd = open_dir_path(rparent).map_err(|e| fail("open", e))?;
        let rfd = self
            .open_or_make(
                pfd.as_fd(),
                rdir.file_name().unwrap_or_default(),
                Some((self.inbox.dir_mode, true)),
            )
            .map_err(|e| fail("mkdir", e))?;
        let ffd = self
            .open_or_make(
                rfd.as_fd(),
                OsStr::new(&taken.folder.folder),
                Some((self.inbox.dir_mode, true)),
            )
            .map_err(|e| fail("mkdir", e))?;
        let to = self
            .open_parent(ffd.as_fd(), &taken.rel, Some((self.inbox.dir_mode, true)))
            .map_err(|e| fail("mkdir", e))?;
        let from = self
            .private_parent(&taken.folder, &taken.rel)
            .map_err(NotMoved::Failed)?;
        let src = taken.rel.file_name().unwrap_or_default();
        self.move_out(from.as_fd(), src, to.as_fd(), name, &dest)?;
        // The refusal stands even if its explanation cannot be written; the caller logs it.
        let wname = why_name(name);
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let wpath = dest.with_file_name(&wname);
        let wfd = self
            .prims
            .w(|| {
                openat(
                    to.as_fd(),
                    wname.as_os_str(),
                    flags,
                    Mode::from_bits_truncate(0o644),
                )
            })
            .map_err(|e| NotMoved::Failed(FsError::new("create", wpath.clone(), e)))?;
        let _ = self.prims.w(|| {
            fchown(
                wfd.as_fd(),
                Some(Uid::from_raw(taken.uid)),
                Some(Gid::from_raw(taken.gid)),
            )
        });
        let mut f = std::fs::File::from(wfd);
        f.write_all(why.as_bytes()).map_err(|e| {
            NotMoved::Failed(FsError::new(
                "write",
                wpath,
                Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            ))
        })?;
        Ok(dest)
    }

    /// Returns every file left in the private directory (a crash mid-check) to the inbox where it
    /// came from, and removes the emptied private folders. The paths it returned files to.
    pub fn recover(&mut self) -> (Vec<PathBuf>, Vec<FsError>) {
        let mut back = Vec::new();
        let mut errors = Vec::new();
        let private = match self.private.try_clone() {
            Ok(p) => p,
            Err(_) => return (back, errors),
        };
        let folders = crate::observe::list(private.as_fd()).unwrap_or_default();
        for (fname, _) in folders {
            let Some(folder_name) = fname.to_str().map(str::to_owned) else {
                continue;
            };
            if fname
                .as_bytes()
                .starts_with(linkfarm_core::TEMP_PREFIX.as_bytes())
            {
                continue;
            }
            let folder = InboxFolder {
                folder: folder_name.clone(),
                target: folder_name,
            };
            if let Ok(fd) = open_dir_at(private.as_fd(), &fname) {
                self.recover_dir(&folder, fd, PathBuf::new(), 0, &mut back, &mut errors);
            }
            let _ = self
                .prims
                .w(|| unlinkat(private.as_fd(), fname.as_os_str(), UnlinkatFlags::RemoveDir));
        }
        (back, errors)
    }

    fn recover_dir(
        &mut self,
        folder: &InboxFolder,
        fd: OwnedFd,
        rel: PathBuf,
        depth: usize,
        back: &mut Vec<PathBuf>,
        errors: &mut Vec<FsError>,
    ) {
        for (name, _) in crate::observe::list(fd.as_fd()).unwrap_or_default() {
            let child = rel.join(&name);
            match lstat_at(fd.as_fd(), &name) {
                Ok(st) if is_dir(&st) && depth < MAX_DEPTH => {
                    if let Ok(sub) = open_dir_at(fd.as_fd(), &name) {
                        self.recover_dir(folder, sub, child, depth + 1, back, errors);
                    }
                    let _ = self
                        .prims
                        .w(|| unlinkat(fd.as_fd(), name.as_os_str(), UnlinkatFlags::RemoveDir));
                }
                Ok(_) => match self.put_back_parts(folder, &child, fd.as_fd(), &name) {
                    Ok(p) => back.push(p),
                    Err(e) => errors.push(e),
                },
                Err(_) => {}
            }
        }
    }

    /// Removes an emptied client subfolder (`rmdir`: fails, harmlessly, if a client put something
    /// in it meanwhile). The caller decided it is settled. `dir/<folder>` itself is never removed.
    pub fn remove_empty(&mut self, empty: &EmptyDir) -> Result<bool, FsError> {
        let path = self.path(&empty.folder.folder, &empty.rel);
        if names(&empty.rel).is_empty() {
            return Ok(false);
        }
        let top = open_dir_at(self.dir.as_fd(), OsStr::new(&empty.folder.folder))
            .map_err(|e| FsError::new("open", path.clone(), e))?;
        let parent = self
            .open_parent(top.as_fd(), &empty.rel, None)
            .map_err(|e| FsError::new("open", path.clone(), e))?;
        let name = empty.rel.file_name().unwrap_or_default();
        match self
            .prims
            .w(|| unlinkat(parent.as_fd(), name, UnlinkatFlags::RemoveDir))
        {
            Ok(()) => Ok(true),
            Err(Errno::ENOTEMPTY | Errno::EEXIST | Errno::ENOENT | Errno::ENOTDIR) => Ok(false),
            Err(e) => Err(FsError::new("rmdir", path, e)),
        }
    }

    /// Whether `name` exists where a file of `folder`/`rel` would go: beside it in the target
    /// folder (`refused` false) or in the refused folder (`refused` true). A folder on the way that
    /// does not exist yet holds nothing. For `decide`; the move itself never replaces anyway.
    pub fn exists_at(&self, refused: bool, folder: &InboxFolder, rel: &Path, name: &OsStr) -> bool {
        let root = if refused {
            open_dir_path(&self.inbox.refused_dir)
                .and_then(|r| open_dir_at(r.as_fd(), OsStr::new(&folder.folder)))
        } else {
            open_dir_path(&self.inbox.target_dir)
                .and_then(|r| open_dir_at(r.as_fd(), OsStr::new(&folder.target)))
        };
        let Ok(mut cur) = root else { return false };
        let comps = names(rel);
        for c in &comps[..comps.len().saturating_sub(1)] {
            match open_dir_at(cur.as_fd(), c) {
                Ok(fd) => cur = fd,
                Err(Errno::ENOENT) => return false,
                // Something that is not a folder is in the way: the move fails and is retried.
                Err(_) => return true,
            }
        }
        !matches!(lstat_at(cur.as_fd(), name), Err(Errno::ENOENT))
    }

    /// The inbox this was opened for.
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// Names of the real subdirectories of `target_dir` (for `folders: "*"`).
    /// The real folders directly in the inbox's `dir` (linkfarm's own and `exclude`d names left
    /// out), read through the held fd.
    pub fn dir_folders(&self) -> Vec<OsString> {
        crate::observe::list(self.dir.as_fd())
            .unwrap_or_default()
            .into_iter()
            .filter(|(n, _)| !self.inbox.ignores(n))
            .filter(|(n, _)| {
                lstat_at(self.dir.as_fd(), n)
                    .map(|st| is_dir(&st))
                    .unwrap_or(false)
            })
            .map(|(n, _)| n)
            .collect()
    }

    pub fn target_subdirs(&self) -> Result<Vec<OsString>, FsError> {
        let root = open_dir_path(&self.inbox.target_dir)
            .map_err(|e| FsError::new("open", self.inbox.target_dir.clone(), e))?;
        let list = crate::observe::list(root.as_fd())
            .map_err(|e| FsError::new("readdir", self.inbox.target_dir.clone(), e))?;
        Ok(list
            .into_iter()
            .filter(|(n, _)| lstat_at(root.as_fd(), n).map(|st| is_dir(&st)).unwrap_or(false))
            .map(|(n, _)| n)
            .collect())
    }
}

/// The extended attribute the web upload service (SPEC §13) sets on a file it writes into an
/// inbox: the name of the signed-in user.
pub const WEB_USER_XATTR: &str = "user.linkfarm.web_user";

/// The web user a taken file was uploaded by, when the web service marked it (read through the
/// fd; at most 256 bytes, lossy UTF-8).
pub fn web_user(taken: &Taken) -> Option<String> {
    let mut buf = [0u8; 256];
    let n = rustix::fs::fgetxattr(taken.fd.as_fd(), WEB_USER_XATTR, &mut buf[..]).ok()?;
    let v = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
    (!v.is_empty()).then_some(v)
}

/// Sets the inbox's owner (when configured) and `mode` on an open fd. As non-root (a demo), a
/// chown to another user is EPERM and skipped: the file keeps its owner, as without `owner`.
fn set_owner_mode(prims: &mut Prims, fd: BorrowedFd<'_>, inbox: &Inbox, mode: u32) -> nix::Result<()> {
    if let Some(o) = inbox.owner {
        match prims.w(|| fchown(fd, o.uid.map(Uid::from_raw), o.gid.map(Gid::from_raw))) {
            Ok(()) => {}
            Err(Errno::EPERM) if !geteuid().is_root() => {}
            Err(e) => return Err(e),
        }
    }
    // After the chown, which clears setuid/setgid: the mode is set last.
    prims.w(|| fchmod(fd, Mode::from_bits_truncate(mode)))
}
