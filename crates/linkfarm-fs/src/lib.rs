//! The filesystem layer: observes a farm and applies a plan, with the safety rules of SPEC §4.
//!
//! This is the only code in linkfarm that writes to the disk (the binary only reads: stats and
//! config files). Inside `link_dir`, the quarantine and
//! an adopted folder, every call goes through a directory fd opened `O_DIRECTORY|O_NOFOLLOW` and the
//! `*at` syscalls with `AT_SYMLINK_NOFOLLOW`, so no path inside them is ever resolved through a
//! symlink. It must never delete or overwrite anything but a symlink or an empty directory: user
//! data is only moved without replacing (`renameat2(RENAME_NOREPLACE)`, or on a filesystem without it
//! the SPEC §14 fallbacks), and every replacement is checked. The primitives, and the argument for
//! each, are in one module (`prims.rs`). A race (a client writing at the same moment) ends in "look again", never in
//! an error that stops the caller.

mod error;
pub mod inbox;
mod netfs;
mod observe;
mod ops;
mod prims;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use linkfarm_core::{plan, plan_names, Action, Farm, LinkDirObs, Plan, TargetObs};

pub use error::FsError;
pub use netfs::network_fs;
pub use observe::observe;
pub use prims::Caps;

/// What happened to one action.
#[derive(Debug)]
pub enum Outcome {
    /// Done. For a replace, the text of the link that came out.
    Done(Option<PathBuf>),
    /// The disk changed between observation and action; nothing was harmed and the next pass
    /// will see the new state.
    Raced(String),
    /// The action failed; nothing was harmed.
    Failed(FsError),
    /// A race left an object of a client's where it must not stay (under a temp name); it was
    /// moved, without replacing anything, to `to`.
    Rescued {
        /// Where the object is now.
        to: PathBuf,
        /// What happened.
        why: String,
    },
}

/// One applied action and its outcome.
#[derive(Debug)]
pub struct ActionResult {
    /// The action.
    pub action: Action,
    /// What happened.
    pub outcome: Outcome,
}

/// The result of one pass over one farm.
#[derive(Debug)]
pub struct PassReport {
    /// The plan made from the observation.
    pub plan: Plan,
    /// Outcomes, in plan order (empty for a dry run).
    pub results: Vec<ActionResult>,
    /// Number of write syscalls made (0 on a converged farm).
    pub writes: u64,
}

impl PassReport {
    /// Whether any action failed.
    pub fn failed(&self) -> bool {
        self.results
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Failed(_)))
    }

    /// Whether something changed on disk.
    pub fn changed(&self) -> bool {
        self.results
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Done(_) | Outcome::Rescued { .. }))
    }
}

/// Whether to act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Observe and plan only.
    DryRun,
    /// Observe, plan and apply.
    Apply,
}

/// A farm and what linkfarm remembers about it between passes: the real path of `link_dir`'s
/// parent when it was first opened, so that a component of that path turning into a symlink later
/// is refused (SPEC §4). One per farm, reused for every pass of a long-running daemon.
#[derive(Debug)]
pub struct FarmFs {
    farm: Farm,
    anchor: Option<PathBuf>,
    /// The target side as the last full observation saw it, for spot passes.
    targets: Option<TargetObs>,
    caps: CapsState,
    /// Whether link_dir's fd is held across passes ([`FarmFs::set_hold_link_dir`]).
    hold_link_dir: bool,
    held_link_dir: Option<ops::Fd>,
}

/// What linkfarm knows of a farm's filesystem (SPEC §14).
#[derive(Debug, Default, Clone)]
pub(crate) struct CapsState {
    /// Set by [`FarmFs::set_caps`]: used instead of probing.
    pub(crate) pinned: Option<Caps>,
    /// The last probe's result and the device of link_dir it was made on.
    pub(crate) known: Option<(u64, Caps)>,
    /// How many probes ran: a caller that reports probes sees a new one by this count.
    pub(crate) probes: u64,
}

impl FarmFs {
    /// Wraps a validated farm.
    pub fn new(farm: Farm) -> Self {
        FarmFs {
            farm,
            anchor: None,
            targets: None,
            caps: CapsState::default(),
            hold_link_dir: false,
            held_link_dir: None,
        }
    }

    /// Holds link_dir's fd across passes instead of re-opening (and re-checking) its path before
    /// each write (SPEC §4 as amended). Writes through a held fd cannot be redirected by a symlink
    /// swap, since no path is resolved; but then the caller must guard the path: watch link_dir
    /// and each ancestor, and call [`FarmFs::invalidate_link_dir`] on any move, deletion or
    /// creation of a component name. Off by default. A held fd keeps link_dir's filesystem busy:
    /// `umount` of that volume fails with EBUSY while it is held (a lazy `umount -l` leaves the fd
    /// on the detached tree), so the holder should also drop it when it stops using the farm.
    pub fn set_hold_link_dir(&mut self, hold: bool) {
        self.hold_link_dir = hold;
        if !hold {
            self.held_link_dir = None;
        }
    }

    /// Drops the held link_dir fd: the next write re-opens link_dir by path and re-checks it (a
    /// component turned symlink is refused). Cheap; call it for every event on link_dir's path.
    pub fn invalidate_link_dir(&mut self) {
        self.held_link_dir = None;
    }

    /// What the filesystem of `link_dir` can do (SPEC §14), as last probed; `None` before the
    /// first probe. A pass probes when it first needs a capability, and again after link_dir's
    /// device changed (a remount); [`FarmFs::probe`] probes now.
    pub fn caps(&self) -> Option<Caps> {
        self.caps.pinned.or(self.caps.known.map(|k| k.1))
    }

    /// Probes the filesystem of `link_dir` now (SPEC §14), with symlinks under linkfarm's temp
    /// names that it removes again, and caches the result for the passes that follow.
    pub fn probe(&mut self) -> Result<Caps, FsError> {
        if let Some(c) = self.caps.pinned {
            return Ok(c);
        }
        let (dir, path) = match observe::open_link_dir(&self.farm, &mut self.anchor) {
            observe::LinkDirOpen::Open { dir, .. } => (dir, self.farm.link_dir.clone()),
            observe::LinkDirOpen::Problem(p) => {
                return Err(
                    FsError::new("open", self.farm.link_dir.clone(), nix::errno::Errno::ENOENT)
                        .with(format!("cannot probe link_dir: {p:?}")),
                )
            }
        };
        let dev = prims::device(std::os::fd::AsFd::as_fd(&dir))
            .map_err(|e| FsError::new("stat", path.clone(), e))?;
        let (caps, _) =
            prims::probe(std::os::fd::AsFd::as_fd(&dir)).map_err(|e| FsError::new("probe", path, e))?;
        self.caps.known = Some((dev, caps));
        self.caps.probes += 1;
        Ok(caps)
    }

    /// Probes the filesystem of `link_dir` unless the last probe was made on the device link_dir
    /// is on now: at a daemon's start-up, and after every full pass so that a remount is probed
    /// again (SPEC §14). Returns the capabilities when it probed, `Ok(None)` when the cached ones
    /// still hold (one `fstat`, no write), when they are pinned, or when link_dir is missing or
    /// refused (the pass reports that; the next call probes once link_dir is back).
    pub fn probe_if_stale(&mut self) -> Result<Option<Caps>, FsError> {
        if self.caps.pinned.is_some() {
            return Ok(None);
        }
        let dir = match &self.held_link_dir {
            Some(fd) => fd.clone(),
            None => match observe::open_link_dir(&self.farm, &mut self.anchor) {
                observe::LinkDirOpen::Open { dir, .. } => std::sync::Arc::new(dir),
                observe::LinkDirOpen::Problem(_) => return Ok(None),
            },
        };
        let path = self.farm.link_dir.clone();
        let dir = std::os::fd::AsFd::as_fd(&*dir);
        let dev = prims::device(dir).map_err(|e| FsError::new("stat", path.clone(), e))?;
        if self.caps.known.is_some_and(|(d, _)| d == dev) {
            return Ok(None);
        }
        match prims::probe(dir) {
            Ok((caps, _)) => {
                self.caps.known = Some((dev, caps));
                self.caps.probes += 1;
                Ok(Some(caps))
            }
            // link_dir was removed under the probe: not a failure, the next call probes again.
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(FsError::new("probe", path, e)
                .with("the SPEC §14 capability probe on linkfarm's temp names failed")),
        }
    }

    /// How many probes have run on this farm (by [`FarmFs::probe`], [`FarmFs::probe_if_stale`],
    /// or a pass that found link_dir on a new device): a caller that reports each probe's result
    /// compares this count with the one it saw last.
    pub fn probes(&self) -> u64 {
        self.caps.probes
    }

    /// Takes over the probe result of `previous` (the same farm before a config reload) when
    /// link_dir is the same path, so that a reload does not probe again; a device change is still
    /// noticed, as the result carries the device it was made on.
    pub fn inherit_caps(&mut self, previous: &FarmFs) {
        if previous.farm.link_dir == self.farm.link_dir {
            self.caps = previous.caps.clone();
        }
    }

    /// Uses `caps` instead of probing: for tests of the SPEC §14 fallbacks on a filesystem that
    /// has every flag, or for a filesystem whose answers to the probe cannot be trusted.
    pub fn set_caps(&mut self, caps: Caps) {
        self.caps.pinned = Some(caps);
    }

    /// The farm.
    pub fn farm(&self) -> &Farm {
        &self.farm
    }

    /// One pass: observe, plan at `now`, apply (unless a dry run).
    pub fn pass(&mut self, adopt_after: Duration, now: SystemTime, mode: Mode) -> PassReport {
        self.pass_with_hook(adopt_after, now, mode, |_| {})
    }

    /// Like [`FarmFs::pass`], with `hook` called between planning and applying: tests use it to
    /// change the disk at the worst possible moment.
    pub fn pass_with_hook(
        &mut self,
        adopt_after: Duration,
        now: SystemTime,
        mode: Mode,
        hook: impl FnOnce(&Plan),
    ) -> PassReport {
        let plan = self.plan(adopt_after, now);
        hook(&plan);
        if mode == Mode::DryRun || plan.actions.is_empty() {
            return PassReport {
                plan,
                results: Vec::new(),
                writes: 0,
            };
        }
        let (results, writes) = self.apply_at(&plan.actions, now);
        PassReport {
            plan,
            results,
            writes,
        }
    }

    /// Observes the farm and plans at `now`. Read-only.
    pub fn plan(&mut self, adopt_after: Duration, now: SystemTime) -> Plan {
        let obs = observe::observe_farm(&self.farm, &mut self.anchor);
        let p = plan(&self.farm, &obs, now, adopt_after);
        self.targets = match obs.target {
            t @ TargetObs::Present(_) => Some(t),
            _ => None,
        };
        p
    }

    /// Plans a spot pass over `names` of `link_dir` only (the names an event reported), reading
    /// just those names from disk and taking the target side from the last full observation.
    /// `None` when there is no usable full observation: a full pass is needed. When `target_dir`
    /// may have changed since that observation, the caller must plan a full pass first (the
    /// daemon does, for any event on `target_dir`).
    pub fn plan_names(
        &mut self,
        names: &BTreeSet<OsString>,
        adopt_after: Duration,
        now: SystemTime,
    ) -> Option<Plan> {
        let target = self.targets.as_ref()?;
        let held = self
            .held_link_dir
            .as_ref()
            .filter(|_| self.hold_link_dir)
            .map(|fd| std::os::fd::AsFd::as_fd(fd.as_ref()));
        let link_dir = observe::observe_names(&self.farm, &mut self.anchor, target, names, held);
        // link_dir itself missing or refused is a full pass's business.
        matches!(link_dir, LinkDirObs::Present(_))
            .then(|| self.plan_with_targets(link_dir, names, adopt_after, now))
    }

    /// Plans for `names` as if they were absent from `link_dir`, without reading them: what a
    /// spot pass would do once an event has said they were deleted. Acting on it is safe only
    /// because a link is created with `symlinkat` on the final name, which fails (a race, not
    /// harm) if anything is there after all. `None` without a full observation to lean on.
    pub fn plan_absent(
        &mut self,
        names: &BTreeSet<OsString>,
        adopt_after: Duration,
        now: SystemTime,
    ) -> Option<Plan> {
        self.targets.as_ref()?;
        let empty = LinkDirObs::Present(Default::default());
        Some(self.plan_with_targets(empty, names, adopt_after, now))
    }

    /// Plans `names` with `link_dir` as given and the target side of the last full observation
    /// (which the caller has checked is there).
    fn plan_with_targets(
        &mut self,
        link_dir: LinkDirObs,
        names: &BTreeSet<OsString>,
        adopt_after: Duration,
        now: SystemTime,
    ) -> Plan {
        let target = self.targets.take().expect("checked by the caller");
        let obs = linkfarm_core::Observed { target, link_dir };
        let p = plan_names(&self.farm, &obs, names, now, adopt_after);
        self.targets = Some(obs.target);
        p
    }

    /// Applies `actions` (from [`FarmFs::plan`], possibly filtered) in order; returns each outcome
    /// and the number of write syscalls made.
    pub fn apply(&mut self, actions: &[Action]) -> (Vec<ActionResult>, u64) {
        self.apply_at(actions, SystemTime::now())
    }

    /// Like [`FarmFs::apply`], at `now`: the time that names an object rescued to the quarantine.
    pub fn apply_at(&mut self, actions: &[Action], now: SystemTime) -> (Vec<ActionResult>, u64) {
        if actions.is_empty() {
            return (Vec::new(), 0);
        }
        let held = self.hold_link_dir.then_some(&mut self.held_link_dir);
        let mut ap = ops::Applier::new(&self.farm, &mut self.anchor, &mut self.caps, held, now);
        // The steps for one link build on each other (adopt every entry, then replace the emptied
        // folder): after a failed step the later ones for that link are not attempted.
        let mut failed: std::collections::HashSet<&std::ffi::OsStr> = Default::default();
        let mut results = Vec::with_capacity(actions.len());
        for a in actions {
            if failed.contains(a.link.as_os_str()) {
                continue;
            }
            let outcome = ap.apply(a);
            if matches!(outcome, Outcome::Failed(_)) {
                failed.insert(a.link.as_os_str());
            }
            results.push(ActionResult {
                action: a.clone(),
                outcome,
            });
        }
        (results, ap.p.writes)
    }
}

/// The temp name of a link while it is swapped or removed: `.linkfarm-tmp.<link>.<pid>`, with the
/// link part shortened when the whole would exceed NAME_MAX.
pub fn temp_name(link: &std::ffi::OsStr) -> std::ffi::OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let suffix = format!(".{}", std::process::id());
    let room = 255 - linkfarm_core::TEMP_PREFIX.len() - suffix.len();
    let b = link.as_bytes();
    let mut out = linkfarm_core::TEMP_PREFIX.as_bytes().to_vec();
    out.extend_from_slice(&b[..b.len().min(room)]);
    out.extend_from_slice(suffix.as_bytes());
    std::ffi::OsString::from_vec(out)
}

/// The parent of a farm directory (a validated farm path always has one).
pub(crate) fn parent_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("/"))
}
