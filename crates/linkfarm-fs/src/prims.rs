//! The dirfd-safe primitives every write is built from, and the capability probe of SPEC §14.
//!
//! Everything here works on a directory fd and a single name: nothing is ever resolved through a
//! symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), and no primitive may delete or overwrite
//! anything but a symlink, an empty directory, or a second name of a file it has just linked.
//! There is one primitive per safety step, so the argument for each is made here once:
//!
//! - [`Prims::remove_if_symlink`]: the only way linkfarm unlinks a name (prune, dangling, temp
//!   names, probe names).
//! - [`Prims::move_noreplace`]: the only way user data moves (adopt, quarantine, put back).
//! - [`Prims::move_aside`]: moves a name to a temp name.
//! - [`Prims::make_link`]: `symlinkat`, then the owner set through an fd of the very link made.
//!
//! # The check-then-act window on a temp name
//!
//! Two steps check a name and then act on it by name: "remove only if still a symlink" (`lstat`,
//! then `unlinkat`) and, where the filesystem has no `RENAME_NOREPLACE`, "move aside" (check the
//! temp name is free, then a plain `rename` onto it). Between the check and the act, a client
//! could put its own object at that name, and the act would unlink it or rename over it. linkfarm
//! accepts this window only on its temp names (`.linkfarm-tmp.<link>.<pid>`): a name in a prefix
//! that the config refuses for entries, that no client program makes, that carries linkfarm's pid,
//! and that exists for microseconds. A client that writes there anyway has written into
//! linkfarm's reserved name at the instant linkfarm owns it; even then a `rename` over a
//! non-empty folder fails, so at most a file or an empty folder made there in that instant is
//! lost. On a link name, where clients do write, linkfarm never checks-then-acts by name: it
//! exchanges (`RENAME_EXCHANGE`) or moves without replacing (`RENAME_NOREPLACE`, or `link()`,
//! whose EEXIST is atomic) and then checks what it holds.
//!
//! The one window that remains on a client's name is the §14 fallback for moving a file without
//! `RENAME_NOREPLACE`: after `link(old, new)`, the old name is checked to still be the same
//! inode and then unlinked. A client that renames another object over the old name in between
//! loses it. [`Caps::window`] says so, and `doctor` prints it for every farm that uses it.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, openat, readlinkat, renameat, renameat2, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// How deep a folder is walked (observed, or moved file by file) before linkfarm gives up on it
/// and leaves it in place.
pub(crate) const MAX_DEPTH: usize = 256;

pub(crate) const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NOFOLLOW);

/// Opens `name` inside `dir` as a directory, never through a symlink.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(dir, name, DIR_FLAGS, Mode::empty())
}

/// Opens an admin-configured directory path (its components may be symlinks the admin made).
pub(crate) fn open_dir_path(path: &Path) -> nix::Result<OwnedFd> {
    open(path, DIR_FLAGS.difference(OFlag::O_NOFOLLOW), Mode::empty())
}

/// `lstat` of `name` in `dir`.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<FileStat> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

pub(crate) fn is_symlink(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// The device of an open directory.
pub(crate) fn device(dir: BorrowedFd<'_>) -> nix::Result<u64> {
    #[allow(clippy::unnecessary_cast)]
    fstat(dir).map(|st| st.st_dev as u64)
}

/// What a farm's filesystem can do (SPEC §14), found by a probe on linkfarm's own temp names
/// ([`FarmFs::probe`](crate::FarmFs::probe)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// `renameat2(RENAME_EXCHANGE)` works.
    pub exchange: bool,
    /// `renameat2(RENAME_NOREPLACE)` works (and refuses an existing name).
    pub noreplace: bool,
    /// `link()` works.
    pub link: bool,
}

impl Caps {
    /// A filesystem with every flag (ext4, xfs, btrfs, tmpfs).
    pub const FULL: Caps = Caps {
        exchange: true,
        noreplace: true,
        link: true,
    };

    /// Which fallbacks of SPEC §14 this filesystem needs, in one line.
    pub fn fallback(&self) -> String {
        if self.exchange && self.noreplace {
            return "none (renameat2 RENAME_EXCHANGE and RENAME_NOREPLACE work)".into();
        }
        let mut parts = Vec::new();
        if !self.exchange {
            parts.push("links are replaced by move-aside + symlinkat (no RENAME_EXCHANGE)");
        }
        if !self.noreplace {
            parts.push(if self.link {
                "files move by link()+unlink() and folders are adopted file by file (no RENAME_NOREPLACE)"
            } else {
                "nothing of a client's can be moved: neither RENAME_NOREPLACE nor link() works, so \
                 client folders and files stay where they are and are reported as conflicts"
            });
        }
        parts.join("; ")
    }

    /// What a client could still lose to a race on this filesystem, in one line.
    pub fn window(&self) -> &'static str {
        match (self.noreplace, self.link) {
            (true, _) => "none on client names",
            (false, true) => {
                "a file that a client renames over an adopted or quarantined file's old name in \
                 the microseconds between linkfarm's same-inode check and its unlink() is lost"
            }
            (false, false) => "none (nothing of a client's is moved)",
        }
    }
}

impl fmt::Display for Caps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yn = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "RENAME_EXCHANGE {}, RENAME_NOREPLACE {}, link() {}",
            yn(self.exchange),
            yn(self.noreplace),
            yn(self.link)
        )
    }
}

/// Why a move did not happen. Nothing was harmed in any case.
#[derive(Debug)]
pub(crate) enum MoveError {
    /// The destination name is taken.
    Exists,
    /// The source is gone.
    Gone,
    /// The source changed under the move (a client replaced it); what moved is at the
    /// destination, the newcomer at the source.
    Changed,
    /// The filesystem cannot move it without risking a replace (SPEC §14).
    Unsupported(&'static str),
    /// Another error.
    Io(Errno),
}

/// Whether [`Prims::remove_if_symlink`] removed the name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Removed {
    /// It was a symlink and is gone.
    Yes,
    /// Nothing was there.
    Absent,
    /// Something other than a symlink is there; it was left alone.
    NotSymlink,
}

/// The primitives, with the farm's capabilities and a count of the write syscalls made.
#[derive(Debug)]
pub(crate) struct Prims {
    pub(crate) caps: Caps,
    pub(crate) writes: u64,
}

impl Prims {
    /// A write syscall: counted, so a converged pass can be proven to make none.
    pub(crate) fn w<T>(&mut self, r: impl FnOnce() -> nix::Result<T>) -> nix::Result<T> {
        self.writes += 1;
        r()
    }

    /// Removes `name` from `dir` only if it is a symlink. The `lstat` and the `unlinkat` are two
    /// steps: callers use this on names that are already aside (temp names, see the module doc),
    /// except where a link name is removed after being moved aside to one.
    pub(crate) fn remove_if_symlink(&mut self, dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<Removed> {
        match lstat_at(dir, name) {
            Err(Errno::ENOENT) => Ok(Removed::Absent),
            Err(e) => Err(e),
            Ok(st) if !is_symlink(&st) => Ok(Removed::NotSymlink),
            Ok(_) => match self.w(|| unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)) {
                Ok(()) => Ok(Removed::Yes),
                Err(Errno::ENOENT) => Ok(Removed::Absent),
                Err(e) => Err(e),
            },
        }
    }

    /// Moves `name` to the temp name `tmp` in the same directory: with `RENAME_NOREPLACE` where
    /// the filesystem has it, else a plain `rename` onto `tmp` just checked free (the temp-name
    /// window of the module doc). `Err(EEXIST)` when `tmp` is taken by something not a symlink.
    pub(crate) fn move_aside(&mut self, dir: BorrowedFd<'_>, name: &OsStr, tmp: &OsStr) -> nix::Result<()> {
        if self.remove_if_symlink(dir, tmp)? == Removed::NotSymlink {
            return Err(Errno::EEXIST);
        }
        if self.caps.noreplace {
            self.w(|| renameat2(dir, name, dir, tmp, RenameFlags::RENAME_NOREPLACE))
        } else {
            self.w(|| renameat(dir, name, dir, tmp))
        }
    }

    /// Moves `name` from `from` to `to_name` in `to` without ever replacing anything there:
    /// `RENAME_NOREPLACE`, or (SPEC §14) `link()` then `unlink()` of the old name for anything
    /// but a folder, and a folder file by file (`mkdir`, then each entry the same way, then
    /// `rmdir` of the emptied source, which fails if a client added something meanwhile).
    pub(crate) fn move_noreplace(
        &mut self,
        from: BorrowedFd<'_>,
        name: &OsStr,
        to: BorrowedFd<'_>,
        to_name: &OsStr,
    ) -> Result<(), MoveError> {
        if self.caps.noreplace {
            return self
                .w(|| renameat2(from, name, to, to_name, RenameFlags::RENAME_NOREPLACE))
                .map_err(move_error);
        }
        if !self.caps.link {
            return Err(MoveError::Unsupported(
                "this filesystem has neither renameat2(RENAME_NOREPLACE) nor link(), so linkfarm cannot \
                 move it without risking a replace; it stays where it is: move it by hand",
            ));
        }
        self.move_tree(from, name, to, to_name, 0)
    }

    fn move_tree(
        &mut self,
        from: BorrowedFd<'_>,
        name: &OsStr,
        to: BorrowedFd<'_>,
        to_name: &OsStr,
        depth: usize,
    ) -> Result<(), MoveError> {
        let st = lstat_at(from, name).map_err(move_error)?;
        if !is_dir(&st) {
            return self.link_unlink(from, name, &st, to, to_name);
        }
        if depth >= MAX_DEPTH {
            return Err(MoveError::Unsupported(
                "the folder is too deep to move file by file",
            ));
        }
        let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
        self.w(|| mkdirat(to, to_name, mode)).map_err(move_error)?;
        let dst = open_dir_at(to, to_name).map_err(MoveError::Io)?;
        self.w(|| fchmod(dst.as_fd(), mode)).map_err(MoveError::Io)?;
        let (u, g) = (Some(Uid::from_raw(st.st_uid)), Some(Gid::from_raw(st.st_gid)));
        // Keeping the client's ownership needs root; as another user the folder is ours.
        match self.w(|| fchown(dst.as_fd(), u, g)) {
            Ok(()) | Err(Errno::EPERM) => {}
            Err(e) => return Err(MoveError::Io(e)),
        }
        let src = open_dir_at(from, name).map_err(|e| match e {
            Errno::ENOTDIR | Errno::ELOOP => MoveError::Changed,
            e => move_error(e),
        })?;
        for (child, _) in crate::observe::list(src.as_fd()).map_err(MoveError::Io)? {
            self.move_tree(src.as_fd(), &child, dst.as_fd(), &child, depth + 1)?;
        }
        // rmdir removes only an empty folder: whatever a client added meanwhile stays.
        self.w(|| unlinkat(from, name, UnlinkatFlags::RemoveDir))
            .map_err(|e| match e {
                Errno::ENOTEMPTY | Errno::EEXIST | Errno::ENOTDIR => MoveError::Changed,
                e => move_error(e),
            })
    }

    /// `link()` (EEXIST is atomic), then the old name is unlinked if it is still the inode that
    /// was linked: the one window on a client's name (module doc).
    fn link_unlink(
        &mut self,
        from: BorrowedFd<'_>,
        name: &OsStr,
        st: &FileStat,
        to: BorrowedFd<'_>,
        to_name: &OsStr,
    ) -> Result<(), MoveError> {
        self.w(|| linkat(from, name, to, to_name, AtFlags::empty()))
            .map_err(move_error)?;
        let linked = lstat_at(to, to_name).map_err(MoveError::Io)?;
        if (linked.st_dev, linked.st_ino) != (st.st_dev, st.st_ino) {
            // A client swapped the source between our lstat and link(): what we linked is theirs
            // too and stays at both names; nothing is lost, the next pass decides.
            return Err(MoveError::Changed);
        }
        match lstat_at(from, name) {
            Ok(now) if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) => self
                .w(|| unlinkat(from, name, UnlinkatFlags::NoRemoveDir))
                .map_err(MoveError::Io),
            Ok(_) => Err(MoveError::Changed),
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(MoveError::Io(e)),
        }
    }

    /// `symlinkat(text, dir, name)`, then the owner set through an `O_PATH|O_NOFOLLOW` fd of the
    /// link just made, after checking that fd is a symlink with `text`: a client who swaps the
    /// name meanwhile keeps its object's owner (no chown by name). `Err(EEXIST)` when the name is
    /// taken.
    pub(crate) fn make_link(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        text: &Path,
        owner: (Option<Uid>, Option<Gid>),
    ) -> nix::Result<()> {
        self.w(|| symlinkat(text, dir, name))?;
        if owner.0.is_none() && owner.1.is_none() {
            return Ok(());
        }
        let fd = openat(
            dir,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let ours = fstat(fd.as_fd()).is_ok_and(|st| is_symlink(&st))
            && readlinkat(fd.as_fd(), "").is_ok_and(|t| Path::new(&t) == text);
        if !ours {
            return Err(Errno::EEXIST);
        }
        self.w(|| fchownat(fd.as_fd(), "", owner.0, owner.1, AtFlags::AT_EMPTY_PATH))
    }
}

fn move_error(e: Errno) -> MoveError {
    match e {
        Errno::EEXIST | Errno::ENOTEMPTY => MoveError::Exists,
        Errno::ENOENT => MoveError::Gone,
        e => MoveError::Io(e),
    }
}

/// The probe's temp names: in linkfarm's reserved prefix, so a leftover from a crash is removed
/// by the next pass like any temp link (they are all symlinks).
fn probe_names() -> [OsString; 3] {
    let pid = std::process::id();
    ["a", "b", "c"].map(|s| OsString::from(format!("{}probe-{s}.{pid}", linkfarm_core::TEMP_PREFIX)))
}

/// Finds what the filesystem of `dir` can do, using only linkfarm's temp names in it (symlinks
/// it creates and removes). Returns the capabilities and the write syscalls it made.
///
/// Another linkfarm process (a `doctor` beside the daemon, a second daemon) removes leftover temp
/// links, and can remove a probe's link mid-probe. That can only make a flag look missing, never
/// present (each "yes" needs the probe's own links where it left them), so a probe that finds
/// something missing is repeated and the answers are joined.
pub(crate) fn probe(dir: BorrowedFd<'_>) -> nix::Result<(Caps, u64)> {
    let (mut caps, mut writes) = probe_once(dir)?;
    for _ in 0..2 {
        if caps == Caps::FULL {
            break;
        }
        let (c, w) = probe_once(dir)?;
        writes += w;
        caps = Caps {
            exchange: caps.exchange || c.exchange,
            noreplace: caps.noreplace || c.noreplace,
            link: caps.link || c.link,
        };
    }
    Ok((caps, writes))
}

fn probe_once(dir: BorrowedFd<'_>) -> nix::Result<(Caps, u64)> {
    let mut p = Prims {
        caps: Caps::FULL,
        writes: 0,
    };
    let [a, b, c] = probe_names();
    let clean = |p: &mut Prims| -> nix::Result<()> {
        for n in [&a, &b, &c] {
            if p.remove_if_symlink(dir, n)? == Removed::NotSymlink {
                return Err(Errno::EEXIST);
            }
        }
        Ok(())
    };
    clean(&mut p)?;
    p.w(|| symlinkat("a", dir, a.as_os_str()))?;
    p.w(|| symlinkat("b", dir, b.as_os_str()))?;
    let text = |n: &OsString| readlinkat(dir, n.as_os_str()).ok();
    let exchange = p
        .w(|| {
            renameat2(
                dir,
                a.as_os_str(),
                dir,
                b.as_os_str(),
                RenameFlags::RENAME_EXCHANGE,
            )
        })
        .is_ok()
        && text(&a).is_some_and(|t| t == "b")
        && text(&b).is_some_and(|t| t == "a");
    // NOREPLACE must refuse a taken name (a filesystem that ignored the flag would replace) and
    // move onto a free one.
    let refused = p.w(|| {
        renameat2(
            dir,
            a.as_os_str(),
            dir,
            b.as_os_str(),
            RenameFlags::RENAME_NOREPLACE,
        )
    }) == Err(Errno::EEXIST);
    let noreplace = refused
        && lstat_at(dir, &a).is_ok()
        && p.w(|| {
            renameat2(
                dir,
                a.as_os_str(),
                dir,
                c.as_os_str(),
                RenameFlags::RENAME_NOREPLACE,
            )
        })
        .is_ok();
    let (from, to) = if noreplace { (&c, &a) } else { (&b, &c) };
    let link = p
        .w(|| linkat(dir, from.as_os_str(), dir, to.as_os_str(), AtFlags::empty()))
        .is_ok();
    clean(&mut p)?;
    Ok((
        Caps {
            exchange,
            noreplace,
            link,
        },
        p.writes,
    ))
}
