//! Applying actions with the safety rules of SPEC §4 and the fallbacks of §14. Each function
//! here is one action, built from the primitives of [`crate::prims`]; each checks what it is about
//! to touch through a dirfd and treats any surprise as a race: the object that appeared is left
//! (or put back) intact and the next pass decides.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{readlinkat, renameat2, RenameFlags};
use nix::sys::stat::{fchmod, mkdirat, Mode};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};

use linkfarm_core::{Action, Farm, LinkDirObs, Op};

use crate::observe::{open_link_dir, LinkDirOpen};
use crate::prims::{
    device, is_private, is_symlink, lstat_at, open_dir_at, open_dir_path, probe, Caps, MoveError, Prims,
    Removed,
};
use crate::{parent_of, temp_name, CapsState, FsError, Outcome};

type R = Result<Option<PathBuf>, Step>;

/// Why an action stopped.
enum Step {
    Raced(String),
    Failed(FsError),
    Rescued { to: PathBuf, why: String },
}

/// A directory fd shared by the actions of one pass (no `dup` per action), and for link_dir
/// possibly held across passes (SPEC §4 as amended).
pub(crate) type Fd = Arc<OwnedFd>;

pub(crate) struct Applier<'a> {
    farm: &'a Farm,
    anchor: &'a mut Option<PathBuf>,
    caps: &'a mut CapsState,
    /// link_dir's fd held across passes, when the owner of the FarmFs asked for it.
    held: Option<&'a mut Option<Fd>>,
    /// Whether `caps` was checked against link_dir's device in this pass.
    caps_checked: bool,
    /// The time of the pass: names a rescued object in the quarantine.
    now: SystemTime,
    link_parent: Option<OwnedFd>,
    link_dir: Option<Fd>,
    link_dir_problem: Option<String>,
    target: Option<Fd>,
    quarantine: Option<Fd>,
    /// Real folders at link paths, opened once per pass.
    conflict_dirs: HashMap<OsString, Fd>,
    target_subdirs: HashMap<OsString, Fd>,
    pub(crate) p: Prims,
}

impl<'a> Applier<'a> {
    pub(crate) fn new(
        farm: &'a Farm,
        anchor: &'a mut Option<PathBuf>,
        caps: &'a mut CapsState,
        held: Option<&'a mut Option<Fd>>,
        now: SystemTime,
    ) -> Self {
        let mut ap = Applier {
            farm,
            anchor,
            caps,
            held,
            caps_checked: false,
            now,
            link_parent: None,
            link_dir: None,
            link_dir_problem: None,
            target: None,
            quarantine: None,
            conflict_dirs: HashMap::new(),
            target_subdirs: HashMap::new(),
            p: Prims {
                caps: Caps::FULL,
                writes: 0,
            },
        };
        match ap.held.as_deref() {
            // No path is resolved through a held fd, so no symlink swap can redirect it; the
            // holder invalidates it on any change of link_dir's path (SPEC §4).
            Some(Some(fd)) => ap.link_dir = Some(fd.clone()),
            _ => ap.reopen_link_dir(),
        }
        ap
    }

    /// Opens link_dir by path, with the anchor check of SPEC §4 (and holds it, if asked to).
    fn reopen_link_dir(&mut self) {
        match open_link_dir(self.farm, self.anchor) {
            LinkDirOpen::Open { parent, dir } => {
                self.link_parent = Some(parent);
                let dir = Arc::new(dir);
                if let Some(held) = self.held.as_deref_mut() {
                    *held = Some(dir.clone());
                }
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
            // A wrong owner is repaired like a wrong target (issue 11): never a chown by name.
            Op::Chown { text, .. } => self.replace(&a.link, text).map(|_| None),
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

    fn ld(&self) -> Result<Fd, Step> {
        match (&self.link_dir, &self.link_dir_problem) {
            (Some(fd), _) => Ok(fd.clone()),
            (None, Some(p)) => Err(Step::Failed(
                FsError::new("open", self.farm.link_dir.clone(), Errno::ELOOP).with(p.clone()),
            )),
            (None, None) => Err(Step::Raced("link_dir disappeared".into())),
        }
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
        self.p.w(|| mkdirat(dir, name, m)).map_err(|e| match e {
            Errno::EEXIST => Step::Raced(format!("{} appeared meanwhile", path.display())),
            e => self.fail("mkdir", path.clone(), e),
        })?;
        let fd = open_dir_at(dir, name).map_err(|e| self.fail("open", path.clone(), e))?;
        self.p
            .w(|| fchmod(fd.as_fd(), m))
            .map_err(|e| self.fail("chmod", path.clone(), e))?;
        let (u, g) = self.owner();
        if u.is_some() || g.is_some() {
            self.p
                .w(|| fchown(fd.as_fd(), u, g))
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

    fn target_fd(&mut self) -> Result<Fd, Step> {
        if self.target.is_none() {
            let fd = open_dir_path(&self.farm.target_dir)
                .map_err(|e| self.fail("open", self.farm.target_dir.clone(), e))?;
            self.target = Some(Arc::new(fd));
        }
        Ok(self.target.clone().expect("just opened"))
    }

    fn mkdir_target(&mut self, target: &OsStr) -> R {
        let path = self.farm.target_dir.join(target);
        let t = self.target_fd()?;
        self.make_dir(t.as_fd(), target, path, self.farm.dir_mode)?;
        Ok(None)
    }

    fn create(&mut self, link: &OsStr, text: &Path) -> R {
        let ld = self.ld()?;
        let owner = self.owner();
        self.p
            .make_link(ld.as_fd(), link, text, owner)
            .map_err(|e| match e {
                // The path is only spelled out for a message: not built for every link of a cold start.
                Errno::EEXIST => Step::Raced(format!(
                    "something appeared at {}",
                    self.link_path(link).display()
                )),
                e => self.fail("symlink", self.link_path(link), e),
            })?;
        Ok(None)
    }

    /// The SPEC §14 capabilities of link_dir's filesystem: probed once per farm on linkfarm's temp
    /// names, and again when link_dir's device changes (a remount).
    fn caps(&mut self) -> Result<Caps, Step> {
        if let Some(c) = self.caps.pinned {
            self.p.caps = c;
            return Ok(c);
        }
        if self.caps_checked {
            return Ok(self.p.caps);
        }
        let ld = self.ld()?;
        let dev = device(ld.as_fd()).map_err(|e| self.fail("stat", self.farm.link_dir.clone(), e))?;
        let caps = match self.caps.known {
            Some((d, c)) if d == dev => c,
            _ => {
                let (c, writes) = probe(ld.as_fd()).map_err(|e| match e {
                    // link_dir was removed (or renamed away and replaced) under the probe: the
                    // next pass opens it again and probes there, so this is a race, not a failure.
                    Errno::ENOENT => Step::Raced("link_dir vanished during the capability probe".into()),
                    e => Step::Failed(
                        FsError::new("probe", self.farm.link_dir.clone(), e)
                            .with("the SPEC §14 capability probe on linkfarm's temp names failed"),
                    ),
                })?;
                self.p.writes += writes;
                self.caps.known = Some((dev, c));
                self.caps.probes += 1;
                c
            }
        };
        self.p.caps = caps;
        self.caps_checked = true;
        Ok(caps)
    }

    /// A failure to free linkfarm's temp name.
    fn temp_taken(&self, tmp: &OsStr) -> Step {
        Step::Failed(
            FsError::new("prepare", self.link_path(tmp), Errno::EEXIST)
                .with("the temp name is taken by something that is not a symlink; move it away"),
        )
    }

    /// A move's error as a step: only an unsupported move or an I/O error is a failure.
    fn moved(&self, r: Result<(), MoveError>, op: &'static str, show: &Path) -> Result<(), Step> {
        r.map_err(|e| match e {
            MoveError::Exists => Step::Raced(format!(
                "{} already exists in the destination; left in place",
                show.display()
            )),
            MoveError::Gone => Step::Raced(format!("{} is gone", show.display())),
            MoveError::Changed => Step::Raced(format!(
                "{} changed while it was moved; everything is kept, the next pass looks again",
                show.display()
            )),
            MoveError::Unsupported(why) => {
                Step::Failed(FsError::new(op, show.to_owned(), Errno::EOPNOTSUPP).with(why))
            }
            MoveError::Io(e) => self.fail(op, show.to_owned(), e),
        })
    }

    /// Replaces the link at `link` with one to `text` (SPEC §4): a new link under the temp name,
    /// exchanged in, then a check of what came out. Without `RENAME_EXCHANGE`, the §14 fallback.
    fn replace(&mut self, link: &OsStr, text: &Path) -> R {
        let caps = self.caps()?;
        let ld = self.ld()?;
        let ld = ld.as_fd();
        let tmp = temp_name(link);
        if !caps.exchange {
            return self.replace_by_move_aside(ld, link, &tmp, text);
        }
        let path = self.link_path(link);
        if self
            .p
            .remove_if_symlink(ld, &tmp)
            .map_err(|e| self.fail("unlink", self.link_path(&tmp), e))?
            == Removed::NotSymlink
        {
            return Err(self.temp_taken(&tmp));
        }
        let owner = self.owner();
        self.p.make_link(ld, &tmp, text, owner).map_err(|e| match e {
            Errno::EEXIST => Step::Raced(format!("{} was taken meanwhile", self.link_path(&tmp).display())),
            e => self.fail("symlink", self.link_path(&tmp), e),
        })?;
        match self
            .p
            .w(|| renameat2(ld, tmp.as_os_str(), ld, link, RenameFlags::RENAME_EXCHANGE))
        {
            Ok(()) => {}
            Err(Errno::ENOENT) => {
                // The old link vanished meanwhile: ours becomes a plain create, without replacing.
                return match self.p.move_noreplace(ld, &tmp, ld, link) {
                    Ok(()) => Ok(None),
                    Err(e) => {
                        let _ = self.p.remove_if_symlink(ld, &tmp);
                        Err(Step::Raced(format!(
                            "{} changed meanwhile ({e:?})",
                            path.display()
                        )))
                    }
                };
            }
            Err(e) => {
                let _ = self.p.remove_if_symlink(ld, &tmp);
                return Err(self.fail("exchange", path, e));
            }
        }
        // Check what came out: only a symlink may be unlinked.
        let old = readlinkat(ld, tmp.as_os_str()).ok().map(PathBuf::from);
        match self.p.remove_if_symlink(ld, &tmp) {
            Ok(Removed::Yes | Removed::Absent) => Ok(old),
            Ok(Removed::NotSymlink) => self.put_back_exchanged(ld, link, &tmp),
            Err(e) => Err(self.fail("unlink", self.link_path(&tmp), e)),
        }
    }

    /// A file or folder appeared at the link path between observation and exchange, and is now
    /// under the temp name: put it back where the client left it, and drop our link.
    fn put_back_exchanged(&mut self, ld: BorrowedFd<'_>, link: &OsStr, tmp: &OsStr) -> R {
        let path = self.link_path(link);
        let safe_at = format!("the object is safe at {}", self.link_path(tmp).display());
        match self
            .p
            .w(|| renameat2(ld, tmp, ld, link, RenameFlags::RENAME_EXCHANGE))
        {
            Ok(()) => {}
            // Our new link was removed meanwhile: move the object back without replacing.
            Err(Errno::ENOENT) => {
                if self.p.move_noreplace(ld, tmp, ld, link).is_err() {
                    return self.rescue(ld, link, tmp);
                }
            }
            Err(e) => return Err(Step::Failed(FsError::new("exchange back", path, e).with(safe_at))),
        }
        match self.p.remove_if_symlink(ld, tmp) {
            // While the first object was aside, the client also replaced the link we had swapped
            // in. The first is back at the link path; this one must not stay under a hidden name.
            Ok(Removed::NotSymlink) => self.rescue(ld, link, tmp),
            _ => Err(Step::Raced(format!(
                "a file or folder appeared at {} and was left in place",
                path.display()
            ))),
        }
    }

    /// Moves a client's object out of the temp name `tmp` into the quarantine.
    fn rescue(&mut self, ld: BorrowedFd<'_>, link: &OsStr, tmp: &OsStr) -> R {
        let path = self.link_path(link);
        let show = self.link_path(tmp);
        let dest = linkfarm_core::time::quarantine_name(self.now, link);
        let used = self
            .move_to_quarantine(ld, tmp, &dest, show.clone())
            .map_err(|_| {
                Step::Failed(
                    FsError::new("quarantine", path.clone(), Errno::EEXIST)
                        .with(format!("the object is safe at {}", show.display())),
                )
            })?;
        Err(Step::Rescued {
            to: self.farm.quarantine_dir.join(used),
            why: format!(
                "two objects raced at {}; the one that could not go back was moved to the quarantine",
                path.display()
            ),
        })
    }

    /// SPEC §14, a filesystem without `RENAME_EXCHANGE`: the old link is moved aside to the temp
    /// name and checked to be a symlink, then the new one is made with `symlinkat` on the final
    /// name, which fails if something appeared there meanwhile (the newcomer is left for the next
    /// pass, and the link aside, a symlink, is removed).
    fn replace_by_move_aside(&mut self, ld: BorrowedFd<'_>, link: &OsStr, tmp: &OsStr, text: &Path) -> R {
        let path = self.link_path(link);
        match self.p.move_aside(ld, link, tmp) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return self.create(link, text),
            Err(Errno::EEXIST) => return Err(self.temp_taken(tmp)),
            Err(e) => return Err(self.fail("move aside", path, e)),
        }
        let old = readlinkat(ld, tmp).ok().map(PathBuf::from);
        if !lstat_at(ld, tmp).is_ok_and(|st| is_symlink(&st)) {
            // A client's object was at the link path: put it back without replacing.
            return match self.p.move_noreplace(ld, tmp, ld, link) {
                Ok(()) => Err(Step::Raced(format!(
                    "a file or folder appeared at {} and was left in place",
                    path.display()
                ))),
                Err(MoveError::Gone) => Err(Step::Raced(format!("{} changed meanwhile", path.display()))),
                Err(_) => self.rescue(ld, link, tmp),
            };
        }
        let owner = self.owner();
        let made = self.p.make_link(ld, link, text, owner);
        // The link aside is a symlink (checked above): removed whatever happened next.
        let _ = self.p.remove_if_symlink(ld, tmp);
        match made {
            Ok(()) => Ok(old),
            Err(Errno::EEXIST) => Err(Step::Raced(format!(
                "something appeared at {} while the old link was aside; left in place",
                path.display()
            ))),
            Err(e) => Err(self.fail("symlink", path, e)),
        }
    }

    fn remove(&mut self, link: &OsStr) -> R {
        let ld = self.ld()?;
        let ld = ld.as_fd();
        let path = self.link_path(link);
        if linkfarm_core::plan::is_temp(link) {
            // A leftover temp link: it is already aside.
            return match self.p.remove_if_symlink(ld, link) {
                Ok(Removed::Yes) => Ok(None),
                Ok(Removed::NotSymlink) => {
                    Err(Step::Raced(format!("{} is no longer a symlink", path.display())))
                }
                Ok(Removed::Absent) => Err(Step::Raced(format!("{} is gone", path.display()))),
                Err(e) => Err(self.fail("unlink", path, e)),
            };
        }
        self.caps()?;
        let tmp = temp_name(link);
        match self.p.move_aside(ld, link, &tmp) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Err(Step::Raced(format!("{} is already gone", path.display()))),
            Err(Errno::EEXIST) => return Err(self.temp_taken(&tmp)),
            Err(e) => return Err(self.fail("rename", path, e)),
        }
        match self.p.remove_if_symlink(ld, &tmp) {
            Ok(Removed::Yes | Removed::Absent) => Ok(None),
            Ok(Removed::NotSymlink) => {
                // Not a symlink any more: put it back untouched.
                match self.p.move_noreplace(ld, &tmp, ld, link) {
                    Ok(()) => Err(Step::Raced(format!(
                        "{} is no longer a symlink; left in place",
                        path.display()
                    ))),
                    Err(_) => self.rescue(ld, link, &tmp),
                }
            }
            Err(e) => Err(self.fail("unlink", self.link_path(&tmp), e)),
        }
    }

    fn conflict_dir(&mut self, link: &OsStr) -> Result<Fd, Step> {
        if let Some(fd) = self.conflict_dirs.get(link) {
            return Ok(fd.clone());
        }
        let ld = self.ld()?;
        let fd = open_dir_at(ld.as_fd(), link).map_err(|e| match e {
            Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP => Step::Raced(format!(
                "{} is no longer a folder",
                self.link_path(link).display()
            )),
            e => self.fail("open", self.link_path(link), e),
        })?;
        let fd = Arc::new(fd);
        self.conflict_dirs.insert(link.to_owned(), fd.clone());
        Ok(fd)
    }

    fn target_subdir(&mut self, target: &OsStr) -> Result<Fd, Step> {
        if let Some(fd) = self.target_subdirs.get(target) {
            return Ok(fd.clone());
        }
        let path = self.farm.target_dir.join(target);
        let t = self.target_fd()?;
        let fd = open_dir_at(t.as_fd(), target).map_err(|e| match e {
            Errno::ENOENT => Step::Raced(format!("{} vanished meanwhile", path.display())),
            e => Step::Failed(
                FsError::new("open", path, e)
                    .with("adoption moves only into a real folder, never through a symlink"),
            ),
        })?;
        let fd = Arc::new(fd);
        self.target_subdirs.insert(target.to_owned(), fd.clone());
        Ok(fd)
    }

    fn adopt(&mut self, link: &OsStr, child: &OsStr, target: &OsStr) -> R {
        self.caps()?;
        let from = self.conflict_dir(link)?;
        let to = self.target_subdir(target)?;
        let show = self.link_path(link).join(child);
        let r = self.p.move_noreplace(from.as_fd(), child, to.as_fd(), child);
        self.moved(r, "move", &show)?;
        Ok(None)
    }

    /// Opens (creating as needed, mode 0700) the quarantine directory. Its existing ancestors are
    /// the admin's path; the components linkfarm creates, and the last one, are opened O_NOFOLLOW.
    fn quarantine_fd(&mut self) -> Result<Fd, Step> {
        if let Some(fd) = &self.quarantine {
            return Ok(fd.clone());
        }
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
                    match self.p.w(|| mkdirat(fd.as_fd(), name.as_os_str(), m)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(self.fail("mkdir", path.clone(), e)),
                    }
                    open_dir_at(fd.as_fd(), name).map_err(|e| self.fail("open", path.clone(), e))?
                }
                Err(e) => return Err(self.fail("open", path.clone(), e)),
            };
        }
        let fd = Arc::new(fd);
        self.quarantine = Some(fd.clone());
        Ok(fd)
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
        self.caps()?;
        let q = self.quarantine_fd()?;
        for i in 0..1000 {
            let mut d = dest.to_owned();
            if i > 0 {
                d.push(format!(".{i}"));
            }
            let moved = if is_private(q.as_fd()) {
                self.p.move_into_private(from, name, q.as_fd(), &d)
            } else {
                self.p.move_noreplace(from, name, q.as_fd(), &d)
            };
            match moved {
                Ok(()) => return Ok(d),
                Err(MoveError::Exists) => continue,
                Err(MoveError::Gone) => return Err(Step::Raced(format!("{} is gone", show.display()))),
                Err(MoveError::Io(e)) => {
                    return Err(Step::Failed(
                        FsError::new("quarantine", show, e)
                            .with(format!("into {}", self.farm.quarantine_dir.display())),
                    ))
                }
                Err(e) => {
                    self.moved(Err(e), "quarantine", &show)?;
                }
            }
        }
        Err(self.fail("quarantine", show, Errno::EEXIST))
    }

    /// The target folder of the link named `link`.
    fn target_of(&self, link: &OsStr) -> OsString {
        match self.farm.explicit() {
            Some(list) => list
                .iter()
                .find(|e| OsStr::new(e.link.as_str()) == link)
                .map(|e| OsString::from(&e.target))
                .unwrap_or_else(|| link.to_owned()),
            None => link.to_owned(),
        }
    }

    fn quarantine_child(&mut self, link: &OsStr, child: &OsStr, dest: &OsStr) -> R {
        self.caps()?;
        let from = self.conflict_dir(link)?;
        // The name exists in the target. If it is the very same file, a link()+unlink() move
        // (SPEC §14) was interrupted between its two steps (linkfarm was killed): finish it
        // instead of putting a second name of the file in the quarantine.
        let target = self.target_of(link);
        if let Ok(to) = self.target_subdir(&target) {
            if self
                .p
                .finish_interrupted_move(from.as_fd(), child, to.as_fd(), child)
                == Ok(true)
            {
                return Ok(None);
            }
        }
        let q = self.quarantine_fd()?;
        let qpath = self.farm.quarantine_dir.join(dest);
        let m = Mode::from_bits_truncate(0o700);
        match self.p.w(|| mkdirat(q.as_fd(), dest, m)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(self.fail("mkdir", qpath, e)),
        }
        let sub = open_dir_at(q.as_fd(), dest).map_err(|e| self.fail("open", qpath.clone(), e))?;
        let show = self.link_path(link).join(child);
        let moved = if is_private(q.as_fd()) {
            self.p.move_into_private(from.as_fd(), child, sub.as_fd(), child)
        } else {
            self.p.move_noreplace(from.as_fd(), child, sub.as_fd(), child)
        };
        match moved {
            Ok(()) => {}
            Err(MoveError::Gone) => return Err(Step::Raced(format!("{} is gone", show.display()))),
            Err(MoveError::Io(e)) => {
                return Err(Step::Failed(
                    FsError::new("quarantine", show.clone(), e).with(format!("into {}", qpath.display())),
                ))
            }
            Err(e) => self.moved(Err(e), "quarantine", &show)?,
        }
        Ok(Some(qpath.join(child)))
    }

    fn clear_dir(&mut self, link: &OsStr, text: &Path) -> R {
        let ld = self.ld()?;
        let path = self.link_path(link);
        // rmdir removes only an empty directory: whatever a client put there meanwhile stays.
        match self.p.w(|| unlinkat(ld.as_fd(), link, UnlinkatFlags::RemoveDir)) {
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
        let ld = self.ld()?;
        let used = self.move_to_quarantine(ld.as_fd(), link, dest, self.link_path(link))?;
        self.conflict_dirs.remove(link);
        self.create(link, text)?;
        Ok(Some(self.farm.quarantine_dir.join(used)))
    }
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}
