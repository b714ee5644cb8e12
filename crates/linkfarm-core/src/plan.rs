//! The planner: desired state + observation + "now" → the actions that converge a farm, the
//! findings it cannot act on, and when to look again. Pure: no I/O, no clock.
//!
//! It implements the table of SPEC §2 and the conflict policies of SPEC §3. It must never plan a
//! deletion of anything but a symlink, an empty directory, or a leftover temp link: user data is
//! only ever moved (adopt, quarantine), and the filesystem layer moves it without replacing.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::observe::{Child, LinkDirObs, Node, Observed, TargetKind, TargetObs};
use crate::paths::{managed_target, relative};
use crate::spec::{Entries, Farm, LinkStyle, OnConflict};
use crate::TEMP_PREFIX;

/// One link the farm wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredLink {
    /// Name in `link_dir`.
    pub link: OsString,
    /// Name in `target_dir`.
    pub target: OsString,
    /// The link text to write.
    pub text: PathBuf,
}

/// The desired links of `farm`. For `entries: "*"` they come from the observed `target_dir`
/// (every real directory not excluded); for a list, from the config alone.
pub fn desired_links(farm: &Farm, target: &TargetObs) -> Vec<DesiredLink> {
    let mk = |link: OsString, target: OsString| desired_link(farm, link, target);
    match &farm.entries {
        Entries::List(list) => list
            .iter()
            .map(|e| mk(e.link.clone().into(), e.target.clone().into()))
            .collect(),
        Entries::All { .. } => desired_pairs(farm, target)
            .into_iter()
            .map(|(link, target)| mk(link.to_owned(), target.to_owned()))
            .collect(),
    }
}

/// The `(link, target)` names of [`desired_links`], borrowed, without building link texts: what
/// an observer needs to know which names matter.
pub fn desired_pairs<'a>(farm: &'a Farm, target: &'a TargetObs) -> Vec<(&'a OsStr, &'a OsStr)> {
    match &farm.entries {
        Entries::List(list) => list
            .iter()
            .map(|e| (OsStr::new(e.link.as_str()), OsStr::new(e.target.as_str())))
            .collect(),
        Entries::All { exclude, .. } => match target {
            TargetObs::Present(map) => map
                .iter()
                .filter(|(name, kind)| **kind == TargetKind::Dir && !exclude.is_match(name))
                .map(|(name, _)| (name.as_os_str(), name.as_os_str()))
                .collect(),
            _ => Vec::new(),
        },
    }
}

/// The desired links of `farm` among `names` (names of `link_dir`): the same as filtering
/// [`desired_links`], in time proportional to `names` rather than to the farm.
pub fn desired_links_among(farm: &Farm, target: &TargetObs, names: &BTreeSet<OsString>) -> Vec<DesiredLink> {
    match &farm.entries {
        Entries::List(list) => list
            .iter()
            .filter(|e| names.contains(OsStr::new(&e.link)))
            .map(|e| desired_link(farm, e.link.clone().into(), e.target.clone().into()))
            .collect(),
        Entries::All { exclude, .. } => match target {
            TargetObs::Present(map) => names
                .iter()
                .filter(|name| map.get(*name) == Some(&TargetKind::Dir) && !exclude.is_match(name))
                .map(|name| desired_link(farm, name.clone(), name.clone()))
                .collect(),
            _ => Vec::new(),
        },
    }
}

fn desired_link(farm: &Farm, link: OsString, target: OsString) -> DesiredLink {
    let abs = farm.target_dir.join(&target);
    let text = match farm.link_style {
        LinkStyle::Absolute => abs,
        LinkStyle::Relative => relative(&farm.link_dir, &abs),
    };
    DesiredLink { link, target, text }
}

/// Why an action is taken; the `LINKFARM_REASON` of its log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Nothing was at the link path.
    Missing,
    /// A managed link pointed at the wrong target.
    WrongTarget,
    /// A foreign link (pointing outside `target_dir`) sat at a desired link path.
    ForeignLink,
    /// The link's target does not exist.
    Dangling,
    /// A real directory or file sat at a link path.
    Conflict,
    /// A real directory at a link path was emptied by adoption.
    Adopted,
    /// A managed link is no longer desired.
    Pruned,
    /// A temp link left by a crash.
    Leftover,
    /// The owner differs from the configured one.
    Owner,
    /// A desired target or `link_dir` did not exist.
    Absent,
}

impl Reason {
    /// The stable name used in logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::WrongTarget => "wrong_target",
            Reason::ForeignLink => "foreign_link",
            Reason::Dangling => "dangling",
            Reason::Conflict => "conflict",
            Reason::Adopted => "adopted",
            Reason::Pruned => "pruned",
            Reason::Leftover => "leftover",
            Reason::Owner => "owner",
            Reason::Absent => "absent",
        }
    }
}

/// What to do. Every variant names its objects relative to the farm's directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create `link_dir` (its parent exists).
    MkdirLinkDir,
    /// Create `target_dir/<target>` (`create_targets`).
    MkdirTarget {
        /// The target name.
        target: OsString,
    },
    /// `symlinkat(text, link_dir, link)`.
    Create {
        /// Link text.
        text: PathBuf,
    },
    /// Swap in a new link for the existing one with `RENAME_EXCHANGE`.
    Replace {
        /// New text.
        text: PathBuf,
        /// Text seen at observation.
        old: PathBuf,
        /// Whether the old link pointed outside `target_dir` (logged at WARN).
        foreign: bool,
    },
    /// Move the link aside, check it is still a symlink, unlink it.
    Remove {
        /// Text seen at observation.
        old: PathBuf,
    },
    /// Give the link the farm's owner: a new link with `text` and the owner is swapped in like a
    /// [`Op::Replace`], so no chown ever lands on a name a client can write.
    Chown {
        /// The link's text (unchanged).
        text: PathBuf,
        /// New uid, or unchanged.
        uid: Option<u32>,
        /// New gid, or unchanged.
        gid: Option<u32>,
    },
    /// Move `link_dir/<link>/<child>` into `target_dir/<target>/<child>` (no replace).
    Adopt {
        /// Name of the entry inside the real directory.
        child: OsString,
        /// Target folder name.
        target: OsString,
    },
    /// Move `link_dir/<link>/<child>` to `quarantine_dir/<dest>/<child>` (its name exists in the target).
    QuarantineChild {
        /// Name of the entry inside the real directory.
        child: OsString,
        /// Quarantine subfolder.
        dest: OsString,
    },
    /// Remove the now empty real directory at the link path, then create the link.
    ClearDir {
        /// Link text.
        text: PathBuf,
    },
    /// Move the whole object at the link path to `quarantine_dir/<dest>`, then create the link.
    Quarantine {
        /// Name in the quarantine.
        dest: OsString,
        /// Link text.
        text: PathBuf,
    },
}

impl Op {
    /// The `LINKFARM_ACTION` name (SPEC §6).
    pub fn name(&self) -> &'static str {
        match self {
            Op::MkdirLinkDir | Op::MkdirTarget { .. } => "mkdir",
            Op::Create { .. } | Op::ClearDir { .. } => "create",
            Op::Replace { .. } => "replace",
            Op::Remove { .. } => "remove",
            Op::Chown { .. } => "chown",
            Op::Adopt { .. } => "adopt",
            Op::QuarantineChild { .. } | Op::Quarantine { .. } => "quarantine",
        }
    }

    /// Whether the op moves user data (adopt or quarantine).
    pub fn moves_data(&self) -> bool {
        matches!(
            self,
            Op::Adopt { .. } | Op::QuarantineChild { .. } | Op::Quarantine { .. }
        )
    }
}

/// One planned action on one link of a farm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// The link name (empty for `MkdirLinkDir`).
    pub link: OsString,
    /// What to do.
    pub op: Op,
    /// Why.
    pub reason: Reason,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = Path::new(&self.link).display();
        let r = self.reason.as_str();
        match &self.op {
            Op::MkdirLinkDir => write!(f, "mkdir link_dir ({r})"),
            Op::MkdirTarget { target } => write!(f, "mkdir target {} ({r})", Path::new(target).display()),
            Op::Create { text } => write!(f, "create {l} -> {} ({r})", text.display()),
            Op::Replace { text, old, .. } => {
                write!(
                    f,
                    "replace {l} -> {} (was -> {}) ({r})",
                    text.display(),
                    old.display()
                )
            }
            Op::Remove { old } => write!(f, "remove {l} (-> {}) ({r})", old.display()),
            Op::Chown { uid, gid, .. } => write!(f, "chown {l} {}:{} ({r})", id(uid), id(gid)),
            Op::Adopt { child, target } => write!(
                f,
                "adopt {l}/{} into target {} ({r})",
                Path::new(child).display(),
                Path::new(target).display()
            ),
            Op::QuarantineChild { child, dest } => write!(
                f,
                "quarantine {l}/{} to {}/ (name exists in target) ({r})",
                Path::new(child).display(),
                Path::new(dest).display()
            ),
            Op::ClearDir { text } => write!(
                f,
                "create {l} -> {} in place of emptied folder ({r})",
                text.display()
            ),
            Op::Quarantine { dest, text } => write!(
                f,
                "quarantine {l} to {}, then create {l} -> {} ({r})",
                Path::new(dest).display(),
                text.display()
            ),
        }
    }
}

fn id(x: &Option<u32>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

/// Something the planner found but does not act on now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// `target_dir` is missing, not a directory or unreadable: nothing in `link_dir` is touched.
    Degraded(String),
    /// `link_dir` cannot be used (a symlink, not a directory, unreadable, parent missing).
    LinkDir(String),
    /// A desired target does not exist (and `create_targets` is off).
    MissingTarget {
        /// Link name.
        link: OsString,
        /// Target name.
        target: OsString,
    },
    /// A real directory or file sits at a link path and the policy leaves it (or cannot move it).
    Conflict {
        /// Link name.
        link: OsString,
        /// Why it stays.
        why: String,
    },
    /// Something at a link path is not settled yet; it will be handled at `until`.
    Pending {
        /// Link name.
        link: OsString,
        /// When it will be settled.
        until: SystemTime,
        /// What is waiting.
        what: String,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Degraded(why) => write!(
                f,
                "degraded: {why}; nothing in link_dir is changed until it is back"
            ),
            Finding::LinkDir(why) => write!(f, "link_dir refused: {why}"),
            Finding::MissingTarget { link, target } => write!(
                f,
                "{}: target {} does not exist (create it, or set create_targets: true)",
                Path::new(link).display(),
                Path::new(target).display()
            ),
            Finding::Conflict { link, why } => write!(f, "{}: conflict: {why}", Path::new(link).display()),
            Finding::Pending { link, until, what } => write!(
                f,
                "{}: {what}; waiting until {} for it to settle",
                Path::new(link).display(),
                crate::time::rfc3339(*until)
            ),
        }
    }
}

/// The state of a farm after planning (SPEC §5; `flapping` is the daemon's judgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FarmState {
    /// Everything as desired.
    Converged,
    /// Actions are needed, or something is pending or missing.
    Drift,
    /// A conflict stays until someone resolves it.
    Conflict,
    /// `target_dir` is unavailable.
    Degraded,
    /// `link_dir` cannot be used.
    Error,
}

impl FarmState {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            FarmState::Converged => "converged",
            FarmState::Drift => "drift",
            FarmState::Conflict => "conflict",
            FarmState::Degraded => "degraded",
            FarmState::Error => "error",
        }
    }
}

/// The plan for one farm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Farm name.
    pub farm: String,
    /// State the observation shows.
    pub state: FarmState,
    /// Actions in the order they must be applied.
    pub actions: Vec<Action>,
    /// What is reported but not acted on.
    pub findings: Vec<Finding>,
    /// When a pass must run again for pending entries.
    pub recheck_at: Option<SystemTime>,
    /// Number of desired links.
    pub links_total: usize,
    /// Desired links that are already right.
    pub links_ok: usize,
}

struct Planner<'a> {
    farm: &'a Farm,
    now: SystemTime,
    adopt_after: Duration,
    /// Plan only for these names of `link_dir` (a spot pass), or for all.
    only: Option<&'a BTreeSet<OsString>>,
    plan: Plan,
}

/// Plans one pass over `farm` given what was observed at `now`.
pub fn plan(farm: &Farm, obs: &Observed, now: SystemTime, adopt_after: Duration) -> Plan {
    plan_inner(farm, obs, None, now, adopt_after)
}

/// Plans a spot pass: only for the `names` of `link_dir` (those an event named), with everything
/// else as [`plan`] would decide it. `obs.link_dir` needs to hold only those names; `obs.target`
/// is the whole target side, since it decides which names are desired. For every `names`, the
/// actions are exactly those of [`plan`] on the same observation that concern `names`, and
/// `links_total`/`links_ok` count only desired links among `names`.
pub fn plan_names(
    farm: &Farm,
    obs: &Observed,
    names: &BTreeSet<OsString>,
    now: SystemTime,
    adopt_after: Duration,
) -> Plan {
    plan_inner(farm, obs, Some(names), now, adopt_after)
}

fn plan_inner(
    farm: &Farm,
    obs: &Observed,
    only: Option<&BTreeSet<OsString>>,
    now: SystemTime,
    adopt_after: Duration,
) -> Plan {
    let mut p = Planner {
        farm,
        now,
        adopt_after,
        only,
        plan: Plan {
            farm: farm.name.clone(),
            state: FarmState::Converged,
            actions: Vec::new(),
            findings: Vec::new(),
            recheck_at: None,
            links_total: 0,
            links_ok: 0,
        },
    };
    p.run(obs);
    p.finish()
}

impl Planner<'_> {
    fn act(&mut self, link: &OsStr, op: Op, reason: Reason) {
        self.plan.actions.push(Action {
            link: link.to_owned(),
            op,
            reason,
        });
    }

    fn pending(&mut self, link: &OsStr, newest: SystemTime, what: String) {
        let until = newest + self.adopt_after;
        self.plan.recheck_at = Some(self.plan.recheck_at.map_or(until, |t| t.min(until)));
        self.plan.findings.push(Finding::Pending {
            link: link.to_owned(),
            until,
            what,
        });
    }

    fn settled(&self, newest: SystemTime) -> bool {
        newest + self.adopt_after <= self.now
    }

    fn run(&mut self, obs: &Observed) {
        let farm = self.farm;
        let targets = match &obs.target {
            TargetObs::Present(m) => m,
            TargetObs::Missing => {
                return self.degraded(format!("target_dir {} is missing", farm.target_dir.display()))
            }
            TargetObs::NotDir => {
                return self.degraded(format!(
                    "target_dir {} is not a directory",
                    farm.target_dir.display()
                ))
            }
            TargetObs::Unreadable(e) => {
                return self.degraded(format!(
                    "target_dir {} cannot be read: {e}",
                    farm.target_dir.display()
                ))
            }
        };
        let desired = match self.only {
            Some(only) => desired_links_among(farm, &obs.target, only),
            None => desired_links(farm, &obs.target),
        };
        self.plan.links_total = desired.len();

        let empty = Default::default();
        let restricted;
        let entries = match &obs.link_dir {
            LinkDirObs::Present(m) => match self.only {
                Some(only) => {
                    restricted = m
                        .iter()
                        .filter(|(n, _)| only.contains(*n))
                        .map(|(n, node)| (n.clone(), node.clone()))
                        .collect();
                    &restricted
                }
                None => m,
            },
            LinkDirObs::Missing { parent_exists: true } => {
                self.act(OsStr::new(""), Op::MkdirLinkDir, Reason::Absent);
                &empty
            }
            LinkDirObs::Missing { parent_exists: false } => {
                return self.link_dir_problem(format!(
                    "the parent of link_dir {} does not exist",
                    farm.link_dir.display()
                ))
            }
            LinkDirObs::Symlink(why) => return self.link_dir_problem(why.clone()),
            LinkDirObs::NotDir => {
                return self.link_dir_problem(format!("{} is not a directory", farm.link_dir.display()))
            }
            LinkDirObs::Unreadable(e) => {
                return self.link_dir_problem(format!("{} cannot be read: {e}", farm.link_dir.display()))
            }
        };

        // Leftover temp links of a crashed pass go first, so their names are free again.
        for (name, node) in entries {
            if let (true, Node::Symlink { text, .. }) = (is_temp(name), node) {
                self.act(name, Op::Remove { old: text.clone() }, Reason::Leftover);
            }
        }

        // `entries: "*"` takes its desired links from the target folders, so their kind is known
        // and their order is the name order of `entries`: both lookups below become a walk in
        // step (a no-op pass over 10,000 links spent a fifth of its instructions in B-tree
        // searches). An explicit list keeps its own order, and small lists look names up.
        let from_targets = matches!(farm.entries, Entries::All { .. });
        let sorted = desired.windows(2).all(|w| w[0].link < w[1].link);
        let mut cursor = entries.iter().peekable();
        let mut planned_targets = BTreeSet::new();
        for d in &desired {
            let node = if sorted {
                while cursor.next_if(|(name, _)| **name < d.link).is_some() {}
                cursor.next_if(|(name, _)| **name == d.link).map(|(_, node)| node)
            } else {
                entries.get(&d.link)
            };
            let kind = if from_targets {
                Some(&TargetKind::Dir)
            } else {
                targets.get(&d.target)
            };
            let usable = match kind {
                Some(TargetKind::Dir) => true,
                Some(TargetKind::LinkToDir) => farm.explicit().is_some(),
                Some(TargetKind::Other) => false,
                None if farm.create_targets && farm.explicit().is_some() => {
                    if planned_targets.insert(d.target.clone()) {
                        self.act(
                            &d.link,
                            Op::MkdirTarget {
                                target: d.target.clone(),
                            },
                            Reason::Absent,
                        );
                    }
                    true
                }
                None => false,
            };
            if !usable {
                self.plan.findings.push(Finding::MissingTarget {
                    link: d.link.clone(),
                    target: d.target.clone(),
                });
            }
            self.desired_link(d, node, usable, targets);
        }

        if farm.prune {
            let wanted: Option<BTreeSet<&OsString>> =
                (!sorted).then(|| desired.iter().map(|d| &d.link).collect());
            let mut desired_names = desired.iter().map(|d| &d.link).peekable();
            for (name, node) in entries {
                let is_desired = match &wanted {
                    Some(w) => w.contains(name),
                    None => {
                        while desired_names.next_if(|d| *d < name).is_some() {}
                        desired_names.peek() == Some(&name)
                    }
                };
                if is_desired || is_temp(name) || is_neighbours(farm, name) {
                    continue;
                }
                if let Node::Symlink { text, .. } = node {
                    if managed_target(&farm.link_dir, &farm.target_dir, text).is_some() {
                        self.act(name, Op::Remove { old: text.clone() }, Reason::Pruned);
                    }
                }
            }
        }
    }

    fn desired_link(
        &mut self,
        d: &DesiredLink,
        node: Option<&Node>,
        usable: bool,
        targets: &std::collections::BTreeMap<OsString, TargetKind>,
    ) {
        let farm = self.farm;
        let link = d.link.as_os_str();
        match node {
            None if usable => self.act(link, Op::Create { text: d.text.clone() }, Reason::Missing),
            None => {}
            Some(Node::Symlink { text, owner }) if *text == d.text => {
                if !usable {
                    self.act(link, Op::Remove { old: text.clone() }, Reason::Dangling);
                    return;
                }
                let wrong_owner = match (farm.owner, owner) {
                    (Some(want), Some((uid, gid))) => {
                        want.uid.is_some_and(|u| u != *uid) || want.gid.is_some_and(|g| g != *gid)
                    }
                    _ => false,
                };
                if wrong_owner {
                    let o = farm.owner.unwrap_or(crate::spec::Owner { uid: None, gid: None });
                    self.act(
                        link,
                        Op::Chown {
                            text: d.text.clone(),
                            uid: o.uid,
                            gid: o.gid,
                        },
                        Reason::Owner,
                    );
                } else {
                    self.plan.links_ok += 1;
                }
            }
            Some(Node::Symlink { text, .. }) => {
                let managed = managed_target(&farm.link_dir, &farm.target_dir, text);
                if usable {
                    let reason = if managed.is_some() {
                        Reason::WrongTarget
                    } else {
                        Reason::ForeignLink
                    };
                    let op = Op::Replace {
                        text: d.text.clone(),
                        old: text.clone(),
                        foreign: managed.is_none(),
                    };
                    self.act(link, op, reason);
                } else if let Some(m) = managed {
                    // A managed link whose own target is gone is dangling: remove it. One that still
                    // points at an existing target is left until the desired target appears.
                    let exists = m.target.as_ref().is_none_or(|t| {
                        matches!(targets.get(t), Some(TargetKind::Dir | TargetKind::LinkToDir))
                    });
                    if !exists {
                        self.act(link, Op::Remove { old: text.clone() }, Reason::Dangling);
                    }
                }
            }
            Some(Node::Dir { newest, children }) => {
                self.conflict_dir(d, *newest, children.as_deref(), usable)
            }
            Some(other @ (Node::File { newest } | Node::Other { newest })) => {
                let what = other.kind();
                if farm.on_conflict == OnConflict::Keep {
                    self.conflict(link, format!("a {what} is here and on_conflict is keep"));
                } else if !usable {
                    self.conflict(link, format!("a {what} is here and the target is missing"));
                } else if self.settled(*newest) {
                    let op = Op::Quarantine {
                        dest: self.quarantine_name(link),
                        text: d.text.clone(),
                    };
                    self.act(link, op, Reason::Conflict);
                } else {
                    self.pending(link, *newest, format!("a {what} is being written here"));
                }
            }
        }
    }

    fn conflict_dir(
        &mut self,
        d: &DesiredLink,
        newest: SystemTime,
        children: Option<&[Child]>,
        usable: bool,
    ) {
        let link = d.link.as_os_str();
        let policy = self.farm.on_conflict;
        if policy == OnConflict::Keep {
            return self.conflict(link, "a real folder is here and on_conflict is keep".into());
        }
        if !usable {
            return self.conflict(link, "a real folder is here and the target is missing".into());
        }
        let Some(children) = children else {
            return self.conflict(link, "a real folder is here and could not be examined".into());
        };
        if let Some(bad) = children.iter().find(|c| c.error.is_some()) {
            let why = format!(
                "cannot examine {}/{}: {}",
                Path::new(link).display(),
                Path::new(&bad.name).display(),
                bad.error.as_deref().unwrap_or_default()
            );
            return self.conflict(link, why);
        }
        if policy == OnConflict::Quarantine {
            let newest_all = children.iter().map(|c| c.newest).fold(newest, SystemTime::max);
            if self.settled(newest_all) {
                let op = Op::Quarantine {
                    dest: self.quarantine_name(link),
                    text: d.text.clone(),
                };
                self.act(link, op, Reason::Conflict);
            } else {
                self.pending(link, newest_all, "a real folder is being written".into());
            }
            return;
        }
        // Adopt: move each settled entry, then replace the emptied folder by the link.
        let mut all_moved = true;
        for c in children {
            if !self.settled(c.newest) {
                all_moved = false;
                let what = format!("{} is being written", Path::new(&c.name).display());
                self.pending(link, c.newest, what);
            } else if c.exists_in_target {
                let op = Op::QuarantineChild {
                    child: c.name.clone(),
                    dest: self.quarantine_name(link),
                };
                self.act(link, op, Reason::Conflict);
            } else {
                let op = Op::Adopt {
                    child: c.name.clone(),
                    target: d.target.clone(),
                };
                self.act(link, op, Reason::Conflict);
            }
        }
        if !all_moved {
            return;
        }
        if self.settled(newest) {
            self.act(link, Op::ClearDir { text: d.text.clone() }, Reason::Adopted);
        } else {
            self.pending(link, newest, "a new real folder is here".into());
        }
    }

    fn quarantine_name(&self, link: &OsStr) -> OsString {
        crate::time::quarantine_name(self.now, link)
    }

    fn conflict(&mut self, link: &OsStr, why: String) {
        self.plan.findings.push(Finding::Conflict {
            link: link.to_owned(),
            why,
        });
    }

    fn degraded(&mut self, why: String) {
        self.plan.findings.push(Finding::Degraded(why));
    }

    fn link_dir_problem(&mut self, why: String) {
        self.plan.actions.clear();
        self.plan.findings.push(Finding::LinkDir(why));
    }

    fn finish(mut self) -> Plan {
        let f = &self.plan.findings;
        self.plan.state = if f.iter().any(|x| matches!(x, Finding::LinkDir(_))) {
            FarmState::Error
        } else if f.iter().any(|x| matches!(x, Finding::Degraded(_))) {
            FarmState::Degraded
        } else if f.iter().any(|x| matches!(x, Finding::Conflict { .. })) {
            FarmState::Conflict
        } else if !self.plan.actions.is_empty() || !f.is_empty() {
            FarmState::Drift
        } else {
            FarmState::Converged
        };
        self.plan
    }
}

/// A link name that a farm sharing this `link_dir` manages (see `Farm::neighbours`).
fn is_neighbours(farm: &Farm, name: &OsStr) -> bool {
    name.to_str().is_some_and(|n| farm.neighbours.contains(n))
}

/// Whether `name` is one of linkfarm's temp names.
pub fn is_temp(name: &OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes().starts_with(TEMP_PREFIX.as_bytes())
}

/// The process a temp name belongs to: each ends in `.<pid>` of the process that made it (a
/// swap's `.linkfarm-tmp.<link>.<pid>`, a probe's `.linkfarm-tmp.probe-a.<pid>`).
pub fn temp_pid(name: &OsStr) -> Option<u32> {
    use std::os::unix::ffi::OsStrExt;
    if !is_temp(name) {
        return None;
    }
    let b = &name.as_bytes()[TEMP_PREFIX.len()..];
    let digits = &b[b.iter().rposition(|&c| c == b'.')? + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::temp_pid;
    use std::ffi::OsStr;

    #[test]
    fn a_temp_name_says_whose_it_is() {
        let cases = [
            (".linkfarm-tmp.loras.4242", Some(4242)),
            (".linkfarm-tmp.probe-a.17", Some(17)),
            (".linkfarm-tmp.v1.5.safetensors.99", Some(99)),
            (".linkfarm-tmp.loras", None),
            (".linkfarm-tmp.loras.", None),
            (".linkfarm-tmp.loras.12x", None),
            (".linkfarm-tmp.x.99999999999", None),
            ("loras.4242", None),
        ];
        for (name, want) in cases {
            assert_eq!(temp_pid(OsStr::new(name)), want, "{name}");
        }
    }
}
