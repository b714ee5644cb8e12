//! Applying actions with the safety rules of SPEC §4. Each function here is one action; each
//! checks what it is about to touch through a dirfd and treats any surprise as a race: the object
//! that appeared is left (or put back) intact and the next pass decides.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{readlinkat, renameat2, AtFlags, RenameFlags};
use nix::sys::stat::{fchmod, mkdirat, Mode};
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use linkfarm_core::{Action, Farm, LinkDirObs, Op};

use crate::observe::{is_symlink, lstat_at, open_dir_at, open_dir_path, open_link_dir, LinkDirOpen};
use crate::{parent_of, temp_name, FsError, Outcome};

type R = Result<Option<PathBuf>, Step>;

/// Why an action stopped.
enum Step {
    Raced(String),
    Failed(FsError),
    Rescued { to: PathBuf, why: String },
}

pub(crate) struct Applier<'a> {
    farm: &'a Farm,
    anchor: &'a mut Option<PathBuf>,
    link_parent: Option<OwnedFd>,
    link_dir: Option<OwnedFd>,
    link_dir_problem: Option<String>,
    target: Option<OwnedFd>,
    quarantine: Option<OwnedFd>,
    /// Real folders at link paths, opened once per pass.
    conflict_dirs: HashMap<OsString, OwnedFd>,
    target_subdirs: HashMap<OsString, OwnedFd>,
    pub(crate) writes: u64,
}

impl<'a> Applier<'a> {
    pub(crate) fn new(farm: &'a Farm, anchor: &'a mut Option<PathBuf>) -> Self {
        let mut ap = Applier {
            farm,
            anchor,
            link_parent: None,
            link_dir: None,
            link_dir_problem: None,
            target: None,
            quarantine: None,
            conflict_dirs: HashMap::new(),
            target_subdirs: HashMap::new(),
            writes: 0,
        };
        ap.reopen_link_dir();
        ap
    }

    fn reopen_link_dir(&mut self) {
        match open_link_dir(self.farm, self.anchor) {
            LinkDirOpen::Open { parent, dir } => {
                self.link_parent = Some(parent);
                self.link_dir = Some(dir);
            }
            LinkDirOpen::Problem(p) => {
                if let LinkDirObs::Missing { .. } = p {
                } else {
                    self.link_dir_problem = Some(match p {
                        LinkDirObs::Symlink(why) => why,
                        other => format!("{other:?}"),
                    });
                }
            }
        }
    }

    pub(crate) fn apply(&mut self, a: &Action) -> Outcome {
        let r = match &a.op {
            Op::MkdirLinkDir => self.mkdir_link_dir(),
            Op::MkdirTarget { target } => self.mkdir_target(target),
            Op::Create { text } => self.create(&a.link, text),
            Op::Replace { text, .. } => self.replace(&a.link, text),
            Op::Remove { .. } => self.remove(&a.link),
            Op::Chown { uid, gid } => self.chown(&a.link, *uid, *gid),
            Op::Adopt { child, target } => self.adopt(&a.link, child, target),
            Op::QuarantineChild { child, dest } => self.quarantine_child(&a.link, child, dest),
            Op::ClearDir { text } => self.clear_dir(&a.link, text),
            Op::Quarantine { dest, text } => self.quarantine(&a.link, dest, text),
        };
        match r {
            Ok(x) => Outcome::Done(x),
            Err(Step::Raced(s)) => Outcome::Raced(s),
            Err(Step::Failed(e)) => Outcome::Failed(e),
            Err(Step::Rescued { to, why }) => Outcome::Rescued { to, why },
        }
    }

    fn link_path(&self, name: &OsStr) -> PathBuf {
        self.farm.link_dir.join(name)
    }

    fn fail(&self, op: &'static str, path: PathBuf, e: Errno) -> Step {
        match e {
            // Something observed a moment ago is gone (a directory renamed away mid-pass): the
            // next observation sees the new state, so this is a race, not a failure to back off.
            Errno::ENOENT => Step::Raced(format!("{op} {}: vanished meanwhile", path.display())),
            e => Step::Failed(FsError::new(op, path, e)),
        }
    }

    fn ld(&self) -> Result<BorrowedFd<'_>, Step> {
        match (&self.link_dir, &self.link_dir_problem) {
            (Some(fd), _) => Ok(fd.as_fd()),
            (None, Some(p)) => Err(Step::Failed(
                FsError::new("open", self.farm.link_dir.clone(), Errno::ELOOP).with(p.clone()),
            )),
            (None, None) => Err(Step::Raced("link_dir disappeared".into())),
        }
    }

    /// An owned copy of the link_dir fd (the applier keeps its own across the action).
    fn ld_owned(&self, link: &OsStr) -> Result<OwnedFd, Step> {
        let path = self.link_path(link);
        dup(self.ld()?, path)
    }

    /// A write syscall: counted, so a converged pass can be proven to make none.
    fn w<T>(&mut self, r: impl FnOnce() -> nix::Result<T>) -> nix::Result<T> {
        self.writes += 1;
        r()
    }

    fn owner(&self) -> (Option<Uid>, Option<Gid>) {
        match self.farm.owner {
            Some(o) => (o.uid.map(Uid::from_raw), o.gid.map(Gid::from_raw)),
            None => (None, None),
        }
    }

    /// Creates directory `name` in `dir` with exactly `dir_mode` (umask aside) and the owner.
    fn make_dir(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: PathBuf,
        mode: u32,
    ) -> Result<OwnedFd, Step> {
        let m = Mode::from_bits_truncate(mode);
        self.w(|| mkdirat(dir, name, m)).map_err(|e| match e {
            Errno::EEXIST => Step::Raced(format!("{} appeared meanwhile", path.display())),
            e => self.fail("mkdir", path.clone(), e),
        })?;
        let fd = open_dir_at(dir, name).map_err(|e| self.fail("open", path.clone(), e))?;
        self.w(|| fchmod(fd.as_fd(), m))
            .map_err(|e| self.fail("chmod", path.clone(), e))?;
        let (u, g) = self.owner();
        if u.is_some() || g.is_some() {
            self.w(|| fchown(fd.as_fd(), u, g))
                .map_err(|e| self.fail("chown", path.clone(), e))?;
        }
        Ok(fd)
    }

    fn mkdir_link_dir(&mut self) -> R {
        let parent = match &self.link_parent {
            Some(p) => p
                .try_clone()
                .map_err(|e| self.fail("dup", self.farm.link_dir.clone(), errno(e)))?,
            None => match open_dir_path(parent_of(&self.farm.link_dir)) {
                Ok(fd) => fd,
                Err(e) => return Err(self.fail("open", parent_of(&self.farm.link_dir).to_owned(), e)),
            },
        };
        let name = self.farm.link_dir.file_name().unwrap_or_default().to_owned();
        self.make_dir(
            parent.as_fd(),
            &name,
            self.farm.link_dir.clone(),
            self.farm.dir_mode,
        )?;
        self.reopen_link_dir();
        self.ld()?;
        Ok(None)
    }

    fn target_fd(&mut self) -> Result<BorrowedFd<'_>, Step> {
        if self.target.is_none() {
            let fd = open_dir_path(&self.farm.target_dir)
                .map_err(|e| self.fail("open", self.farm.target_dir.clone(), e))?;
            self.target = Some(fd);
        }
        Ok(self.target.as_ref().map(|f| f.as_fd()).expect("just opened"))
    }

    fn mkdir_target(&mut self, target: &OsStr) -> R {
        let path = self.farm.target_dir.join(target);
        let t = dup(self.target_fd()?, path.clone())?;
        self.make_dir(t.as_fd(), target, path, self.farm.dir_mode)?;
        Ok(None)
    }

    fn chown_link(&mut self, dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<(), Step> {
        let (u, g) = self.owner();
        if u.is_none() && g.is_none() {
            return Ok(());
        }
        self.w(|| fchownat(dir, name, u, g, AtFlags::AT_SYMLINK_NOFOLLOW))
            .map_err(|e| self.fail("chown", path.to_owned(), e))
    }

    fn create(&mut self, link: &OsStr, text: &Path) -> R {
        // The path is only spelled out for a message: not built for every link of a cold start.
        let made = symlinkat(text, self.ld()?, link);
        self.writes += 1;
        made.map_err(|e| match e {
            Errno::EEXIST => Step::Raced(format!(
                "something appeared at {}",
                self.link_path(link).display()
            )),
            e => self.fail("symlink", self.link_path(link), e),
        })?;
        if self.farm.owner.is_some() {
            let ld = self.ld_owned(link)?;
            self.chown_link(ld.as_fd(), link, &self.link_path(link))?;
        }
        Ok(None)
    }

    /// Frees the temp name: only a symlink may be removed from there.
    fn free_temp(&mut self, ld: BorrowedFd<'_>, tmp: &OsStr) -> Result<(), Step> {
        match lstat_at(ld, tmp) {
            Err(Errno::ENOENT) => Ok(()),
            Ok(st) if is_symlink(&st) => self
                .w(|| unlinkat(ld, tmp, UnlinkatFlags::NoRemoveDir))
                .map_err(|e| self.fail("unlink", self.link_path(tmp), e)),
            Ok(_) => Err(Step::Failed(
                FsError::new("prepare", self.link_path(tmp), Errno::EEXIST)
                    .with("the temp name is taken by something that is not a symlink; move it away"),
            )),
            Err(e) => Err(self.fail("stat", self.link_path(tmp), e)),
        }
    }

    fn replace(&mut self, link: &OsStr, text: &Path) -> R {
        let ld = self.ld_owned(link)?;
        let ld = ld.as_fd();
        let path = self.link_path(link);
        let tmp = temp_name(link);
        self.free_temp(ld, &tmp)?;
        self.w(|| symlinkat(text, ld, tmp.as_os_str()))
            .map_err(|e| self.fail("symlink", self.link_path(&tmp), e))?;
        self.chown_link(ld, &tmp, &self.link_path(&tmp))?;
        match self.w(|| renameat2(ld, tmp.as_os_str(), ld, link, RenameFlags::RENAME_EXCHANGE)) {
            Ok(()) => {}
            Err(Errno::ENOENT) => {
                // The old link vanished meanwhile: ours becomes a plain create, without replacing.
                return match self
                    .w(|| renameat2(ld, tmp.as_os_str(), ld, link, RenameFlags::RENAME_NOREPLACE))
                {
                    Ok(()) => Ok(None),
                    Err(e) => {
                        let _ = self.w(|| unlinkat(ld, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir));
                        Err(Step::Raced(format!(
                            "{} changed meanwhile ({})",
                            path.display(),
                            e.desc()
                        )))
                    }
                };
            }
            Err(e) => {
                let _ = self.w(|| unlinkat(ld, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir));
                return Err(self.fail("exchange", path, e));
            }
        }
        // Check what came out: only a symlink may be unlinked.
        match lstat_at(ld, &tmp) {
            Ok(st) if is_symlink(&st) => {
                let old = readlinkat(ld, tmp.as_os_str()).ok().map(PathBuf::from);
                self.w(|| unlinkat(ld, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir))
                    .map_err(|e| self.fail("unlink", self.link_path(&tmp), e))?;
                Ok(old)
            }
            other => {
                // A file or folder appeared at the link path between observation and exchange:
                // put it back where the client left it, and drop our link.
                let kind = if other.is_ok() { "file or folder" } else { "object" };
                let safe_at = format!("the object is safe at {}", self.link_path(&tmp).display());
                match self.w(|| renameat2(ld, tmp.as_os_str(), ld, link, RenameFlags::RENAME_EXCHANGE)) {
                    Ok(()) => {}
                    // Our new link was removed meanwhile: move the object back without replacing.
                    Err(Errno::ENOENT) => self
                        .w(|| renameat2(ld, tmp.as_os_str(), ld, link, RenameFlags::RENAME_NOREPLACE))
                        .map_err(|e| {
                            Step::Failed(FsError::new("put back", path.clone(), e).with(safe_at.clone()))
                        })?,
                    Err(e) => {
                        return Err(Step::Failed(
                            FsError::new("exchange back", path.clone(), e).with(safe_at),
                        ))
                    }
                }
                match lstat_at(ld, &tmp) {
                    Ok(st) if is_symlink(&st) => {
                        let _ = self.w(|| unlinkat(ld, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir));
                    }
                    Ok(_) => {
                        // A second object came out: while the first was aside, the client also
                        // replaced the link we had swapped in. The first is back at the link
                        // path; this one must not stay under a hidden temp name.
                        let mut dest = std::ffi::OsString::from(linkfarm_core::time::utc_stamp(
                            std::time::SystemTime::now(),
                        ));
                        dest.push("-");
                        dest.push(link);
                        let show = self.link_path(&tmp);
                        let used = self
                            .move_to_quarantine(ld, &tmp, &dest, show.clone())
                            .map_err(|_| {
                                Step::Failed(
                                    FsError::new("quarantine", path.clone(), Errno::EEXIST)
                                        .with(format!("the object is safe at {}", show.display())),
                                )
                            })?;
                        return Err(Step::Rescued {
                            to: self.farm.quarantine_dir.join(used),
                            why: format!(
                                "two objects raced this replace at {}; the second was moved to the quarantine",
                                path.display()
                            ),
                        });
                    }
                    Err(_) => {}
                }
                Err(Step::Raced(format!(
                    "a {kind} appeared at {} and was left in place",
                    path.display()
                )))
            }
        }
    }

    fn remove(&mut self, link: &OsStr) -> R {
        let ld = self.ld_owned(link)?;
        let ld = ld.as_fd();
        let path = self.link_path(link);
        if crate::temp_name(link) == link || linkfarm_core::plan::is_temp(link) {
            // A leftover temp link: it is already aside. Check it is still a symlink.
            return match lstat_at(ld, link) {
                Ok(st) if is_symlink(&st) => {
                    self.w(|| unlinkat(ld, link, UnlinkatFlags::NoRemoveDir))
                        .map_err(|e| self.fail("unlink", path, e))?;
                    Ok(None)
                }
                Ok(_) => Err(Step::Raced(format!("{} is no longer a symlink", path.display()))),
                Err(_) => Err(Step::Raced(format!("{} is gone", path.display()))),
            };
        }
        let tmp = temp_name(link);
        self.free_temp(ld, &tmp)?;
        self.w(|| renameat2(ld, link, ld, tmp.as_os_str(), RenameFlags::RENAME_NOREPLACE))
            .map_err(|e| match e {
                Errno::ENOENT => Step::Raced(format!("{} is already gone", path.display())),
                e => self.fail("rename", path.clone(), e),
            })?;
        match lstat_at(ld, &tmp) {
            Ok(st) if is_symlink(&st) => {
                self.w(|| unlinkat(ld, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir))
                    .map_err(|e| self.fail("unlink", self.link_path(&tmp), e))?;
                Ok(None)
            }
            _ => {
                // Not a symlink any more: put it back untouched.
                self.w(|| renameat2(ld, tmp.as_os_str(), ld, link, RenameFlags::RENAME_NOREPLACE))
                    .map_err(|e| {
                        Step::Failed(FsError::new("rename back", path.clone(), e)).with_detail(format!(
                            "the object is safe at {}",
                            self.link_path(&tmp).display()
                        ))
                    })?;
                Err(Step::Raced(format!(
                    "{} is no longer a symlink; left in place",
                    path.display()
                )))
            }
        }
    }

    fn chown(&mut self, link: &OsStr, uid: Option<u32>, gid: Option<u32>) -> R {
        let ld = self.ld_owned(link)?;
        let path = self.link_path(link);
        match lstat_at(ld.as_fd(), link) {
            Ok(st) if is_symlink(&st) => {}
            _ => return Err(Step::Raced(format!("{} is no longer a symlink", path.display()))),
        }
        let (u, g) = (uid.map(Uid::from_raw), gid.map(Gid::from_raw));
        self.w(|| fchownat(ld.as_fd(), link, u, g, AtFlags::AT_SYMLINK_NOFOLLOW))
            .map_err(|e| self.fail("chown", path, e))?;
        Ok(None)
    }

    fn conflict_dir(&mut self, link: &OsStr) -> Result<BorrowedFd<'_>, Step> {
        if !self.conflict_dirs.contains_key(link) {
            let ld = self.ld()?;
            let fd = open_dir_at(ld, link).map_err(|e| match e {
                Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP => Step::Raced(format!(
                    "{} is no longer a folder",
                    self.link_path(link).display()
                )),
                e => self.fail("open", self.link_path(link), e),
            })?;
            self.conflict_dirs.insert(link.to_owned(), fd);
        }
        Ok(self.conflict_dirs[link].as_fd())
    }

    fn target_subdir(&mut self, target: &OsStr) -> Result<BorrowedFd<'_>, Step> {
        if !self.target_subdirs.contains_key(target) {
            let path = self.farm.target_dir.join(target);
            let t = self.target_fd()?;
            let fd = open_dir_at(t, target).map_err(|e| match e {
                Errno::ENOENT => Step::Raced(format!("{} vanished meanwhile", path.display())),
                e => Step::Failed(
                    FsError::new("open", path, e)
                        .with("adoption moves only into a real folder, never through a symlink"),
                ),
            })?;
            self.target_subdirs.insert(target.to_owned(), fd);
        }
        Ok(self.target_subdirs[target].as_fd())
    }

    fn move_noreplace(
        &mut self,
        from: BorrowedFd<'_>,
        name: &OsStr,
        to: BorrowedFd<'_>,
        to_name: &OsStr,
        show: PathBuf,
    ) -> R {
        self.w(|| renameat2(from, name, to, to_name, RenameFlags::RENAME_NOREPLACE))
            .map_err(|e| match e {
                Errno::EEXIST | Errno::ENOTEMPTY => Step::Raced(format!(
                    "{} already exists in the destination; left in place",
                    show.display()
                )),
                Errno::ENOENT => Step::Raced(format!("{} is gone", show.display())),
                e => self.fail("move", show.clone(), e),
            })?;
        Ok(None)
    }

    fn adopt(&mut self, link: &OsStr, child: &OsStr, target: &OsStr) -> R {
        let from = {
            let at = self.link_path(link);
            dup(self.conflict_dir(link)?, at)?
        };
        let to = {
            let at = self.link_path(link);
            dup(self.target_subdir(target)?, at)?
        };
        let show = self.link_path(link).join(child);
        self.move_noreplace(from.as_fd(), child, to.as_fd(), child, show)
    }

    /// Opens (creating as needed, mode 0700) the quarantine directory. Its existing ancestors are
    /// the admin's path; the components linkfarm creates, and the last one, are opened O_NOFOLLOW.
    fn quarantine_fd(&mut self) -> Result<BorrowedFd<'_>, Step> {
        if self.quarantine.is_none() {
            let q = self.farm.quarantine_dir.clone();
            let mut existing = q.as_path();
            let mut missing = Vec::new();
            let mut fd = loop {
                match open_dir_path(parent_of(existing)) {
                    Ok(fd) => break fd,
                    Err(Errno::ENOENT) if existing.parent().is_some() => {
                        missing.push(existing.file_name().unwrap_or_default().to_owned());
                        existing = parent_of(existing);
                    }
                    Err(e) => return Err(self.fail("open", parent_of(existing).to_owned(), e)),
                }
            };
            missing.push(existing.file_name().unwrap_or_default().to_owned());
            let mut path = parent_of(existing).to_owned();
            for name in missing.iter().rev() {
                path.push(name);
                fd = match open_dir_at(fd.as_fd(), name) {
                    Ok(next) => next,
                    Err(Errno::ENOENT) => {
                        let m = Mode::from_bits_truncate(0o700);
                        match self.w(|| mkdirat(fd.as_fd(), name.as_os_str(), m)) {
                            Ok(()) | Err(Errno::EEXIST) => {}
                            Err(e) => return Err(self.fail("mkdir", path.clone(), e)),
                        }
                        open_dir_at(fd.as_fd(), name).map_err(|e| self.fail("open", path.clone(), e))?
                    }
                    Err(e) => return Err(self.fail("open", path.clone(), e)),
                };
            }
            self.quarantine = Some(fd);
        }
        Ok(self.quarantine.as_ref().map(|f| f.as_fd()).expect("just opened"))
    }

    /// Moves `name` from `from` into the quarantine under `dest` (or `dest.1`, `dest.2`, ... when
    /// taken), never replacing anything. Returns the name used.
    fn move_to_quarantine(
        &mut self,
        from: BorrowedFd<'_>,
        name: &OsStr,
        dest: &OsStr,
        show: PathBuf,
    ) -> Result<OsString, Step> {
        let q = dup(self.quarantine_fd()?, show.clone())?;
        for i in 0..1000 {
            let mut d = dest.to_owned();
            if i > 0 {
                d.push(format!(".{i}"));
            }
            match self.w(|| {
                renameat2(
                    from,
                    name,
                    q.as_fd(),
                    d.as_os_str(),
                    RenameFlags::RENAME_NOREPLACE,
                )
            }) {
                Ok(()) => return Ok(d),
                Err(Errno::EEXIST) => continue,
                Err(Errno::ENOENT) => return Err(Step::Raced(format!("{} is gone", show.display()))),
                Err(e) => {
                    return Err(Step::Failed(
                        FsError::new("quarantine", show, e)
                            .with(format!("into {}", self.farm.quarantine_dir.display())),
                    ))
                }
            }
        }
        Err(self.fail("quarantine", show, Errno::EEXIST))
    }

    fn quarantine_child(&mut self, link: &OsStr, child: &OsStr, dest: &OsStr) -> R {
        let from = {
            let at = self.link_path(link);
            dup(self.conflict_dir(link)?, at)?
        };
        let q = {
            let at = self.link_path(link);
            dup(self.quarantine_fd()?, at)?
        };
        let qpath = self.farm.quarantine_dir.join(dest);
        let m = Mode::from_bits_truncate(0o700);
        match self.w(|| mkdirat(q.as_fd(), dest, m)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(self.fail("mkdir", qpath, e)),
        }
        let sub = open_dir_at(q.as_fd(), dest).map_err(|e| self.fail("open", qpath.clone(), e))?;
        let show = self.link_path(link).join(child);
        self.w(|| {
            renameat2(
                from.as_fd(),
                child,
                sub.as_fd(),
                child,
                RenameFlags::RENAME_NOREPLACE,
            )
        })
        .map_err(|e| match e {
            Errno::ENOENT => Step::Raced(format!("{} is gone", show.display())),
            e => Step::Failed(
                FsError::new("quarantine", show.clone(), e).with(format!("into {}", qpath.display())),
            ),
        })?;
        Ok(Some(qpath.join(child)))
    }

    fn clear_dir(&mut self, link: &OsStr, text: &Path) -> R {
        let ld = self.ld_owned(link)?;
        let path = self.link_path(link);
        // rmdir removes only an empty directory: whatever a client put there meanwhile stays.
        match self.w(|| unlinkat(ld.as_fd(), link, UnlinkatFlags::RemoveDir)) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::ENOTEMPTY | Errno::EEXIST) => {
                return Err(Step::Raced(format!("{} is not empty any more", path.display())))
            }
            Err(Errno::ENOTDIR) => {
                return Err(Step::Raced(format!("{} is no longer a folder", path.display())))
            }
            Err(e) => return Err(self.fail("rmdir", path, e)),
        }
        self.conflict_dirs.remove(link);
        self.create(link, text)
    }

    fn quarantine(&mut self, link: &OsStr, dest: &OsStr, text: &Path) -> R {
        let ld = self.ld_owned(link)?;
        let used = self.move_to_quarantine(ld.as_fd(), link, dest, self.link_path(link))?;
        self.conflict_dirs.remove(link);
        self.create(link, text)?;
        Ok(Some(self.farm.quarantine_dir.join(used)))
    }
}

impl Step {
    fn with_detail(self, d: String) -> Step {
        match self {
            Step::Failed(e) => Step::Failed(e.with(d)),
            other => other,
        }
    }
}

/// An owned copy of a borrowed directory fd.
fn dup(fd: BorrowedFd<'_>, path: PathBuf) -> Result<OwnedFd, Step> {
    fd.try_clone_to_owned()
        .map_err(|e| Step::Failed(FsError::new("dup", path, errno(e))))
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}
