//! One farm inside the daemon: runs its passes, logs every change as one record, and remembers
//! what a single pass cannot know: when to look again, which links failed (exponential backoff),
//! which links another program keeps undoing (`flapping`), and the counters for the state file.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use linkfarm_core::{Action, Farm, FarmState, Finding, Op, Plan};
use linkfarm_fs::{FarmFs, Outcome};
use tracing::{debug, error, info, warn};

/// A link repaired this many times within [`FLAP_WINDOW`] is flapping.
pub const FLAP_REPAIRS: usize = 5;
/// The window in which repairs are counted.
pub const FLAP_WINDOW: Duration = Duration::from_secs(60);
const FLAP_HOLD_FIRST: Duration = Duration::from_secs(5);
const FLAP_HOLD_MAX: Duration = Duration::from_secs(600);
const FAIL_HOLD_FIRST: Duration = Duration::from_secs(1);
const FAIL_HOLD_MAX: Duration = Duration::from_secs(300);
/// Plan/apply rounds in one pass: a race with a writer ends in another round, not in a loop.
const ROUNDS: usize = 4;
/// mtimes are compared with the wall clock; waking a little after the settle time avoids waking
/// just before it.
const SETTLE_SLACK: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct LinkRt {
    /// When it was repaired, once per pass: adopting a folder of ten files is one repair of the
    /// link, not eleven.
    repairs: VecDeque<Instant>,
    /// The pass (`FarmStatus::passes`) its last repair was counted in.
    counted: u64,
    failures: u32,
    flaps: u32,
    hold_until: Option<Instant>,
    flapping: bool,
}

/// What the state file and `STATUS=` say about a farm.
#[derive(Debug, Clone, Default)]
pub struct FarmStatus {
    /// converged, drift, conflict, degraded, flapping or error.
    pub state: &'static str,
    /// Desired links.
    pub links_total: usize,
    /// Desired links that are right.
    pub links_ok: usize,
    /// Passes run.
    pub passes: u64,
    /// Changes made.
    pub repairs: u64,
    /// Changes made, per `(action, reason)`, for the metrics.
    pub repairs_by: crate::metrics::RepairCounts,
    /// Actions that failed.
    pub failures: u64,
    /// Wall time of the last pass.
    pub last_pass: Option<SystemTime>,
    /// Wall time and description of the last change.
    pub last_repair: Option<(SystemTime, String)>,
    /// The last error, if the last pass had one.
    pub last_error: Option<String>,
    /// What the last plan found (missing targets, conflicts, pending entries).
    pub findings: Vec<String>,
    /// Links currently flapping.
    pub flapping: Vec<String>,
}

/// A farm as the daemon runs it.
#[derive(Debug)]
pub struct FarmRt {
    pub(crate) fs: FarmFs,
    /// Polled at `poll_interval` (network filesystem or watch failure).
    pub(crate) poll: bool,
    pub(crate) next_poll: Option<Instant>,
    /// Events said something changed that needs a full pass.
    pub(crate) dirty: bool,
    /// Names in `link_dir` that events reported (created, deleted, renamed, changed): a spot
    /// pass looks at just these.
    pub(crate) names: BTreeSet<OsString>,
    /// Those of `names` that events reported deleted or renamed away.
    pub(crate) gone: BTreeSet<OsString>,
    /// When an unsettled entry settles or a held link may be retried.
    pub(crate) recheck: Option<Instant>,
    links: HashMap<OsString, LinkRt>,
    pub(crate) status: FarmStatus,
    logged_state: Option<String>,
}

impl FarmRt {
    /// Wraps a farm; `previous` carries the counters over a reload.
    pub fn new(farm: Farm, previous: Option<&FarmStatus>) -> Self {
        let mut status = previous.cloned().unwrap_or_default();
        status.state = "drift";
        FarmRt {
            fs: FarmFs::new(farm),
            poll: false,
            next_poll: None,
            dirty: true,
            names: BTreeSet::new(),
            gone: BTreeSet::new(),
            recheck: None,
            links: HashMap::new(),
            status,
            logged_state: None,
        }
    }

    /// The farm.
    pub fn farm(&self) -> &Farm {
        self.fs.farm()
    }

    /// The earliest time this farm wants a pass without an event.
    pub fn due(&self) -> Option<Instant> {
        [self.recheck, self.next_poll].into_iter().flatten().min()
    }

    /// One full pass: plan, apply what is not held back, repeat while the disk moved under us.
    /// Returns whether the farm's status changed in a way `STATUS=` should show.
    pub fn pass(&mut self, adopt_after: Duration, poll_interval: Duration) -> bool {
        self.dirty = false;
        self.names.clear();
        self.gone.clear();
        self.status.passes += 1;
        let before = (self.status.state, self.status.links_ok, self.status.repairs);
        let plan = self.fs.plan(adopt_after, SystemTime::now());
        let (plan, last_error) = self
            .apply_rounds(plan, |fs| Some(fs.plan(adopt_after, SystemTime::now())))
            .expect("a full plan is always made");
        debug!(farm = %self.farm().name, state = plan.state.as_str(), "pass");
        let now = Instant::now();
        self.expire(now);
        self.status.last_pass = Some(SystemTime::now());
        self.status.links_total = plan.links_total;
        self.status.links_ok = plan.links_ok;
        self.status.findings = plan.findings.iter().map(ToString::to_string).collect();
        self.status.flapping = self
            .links
            .iter()
            .filter(|(_, l)| l.flapping)
            .map(|(n, _)| lossy(n))
            .collect();
        self.status.flapping.sort();
        if last_error.is_some() || plan.actions.iter().all(|a| !self.held(&a.link, now)) {
            self.status.last_error = last_error;
        }
        self.status.state = if plan.state == FarmState::Error {
            "error"
        } else if !self.status.flapping.is_empty() {
            "flapping"
        } else if self.status.last_error.is_some() && plan.state != FarmState::Degraded {
            "error"
        } else {
            plan.state.as_str()
        };
        self.log_state_change(&plan.findings);

        let settle = plan.recheck_at.map(|t| {
            let wait = t.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
            now + wait + SETTLE_SLACK
        });
        let hold = self.links.values().filter_map(|l| l.hold_until).min();
        self.recheck = [settle, hold].into_iter().flatten().min();
        if self.poll {
            self.next_poll = Some(now + poll_interval);
        }
        before != (self.status.state, self.status.links_ok, self.status.repairs)
    }

    /// Re-creates at once the desired links that events reported deleted, before the spot pass
    /// that looks at them: the planner decides on the names as if absent, and `symlinkat` on the
    /// final name checks that they are (anything there makes it a race, left to the spot pass,
    /// which also handles every failure). Only on a converged farm, never for a held link.
    /// Returns whether a link was made.
    pub fn recreate_gone(&mut self, adopt_after: Duration) -> bool {
        let gone = std::mem::take(&mut self.gone);
        if gone.is_empty() || self.status.state != "converged" {
            return false;
        }
        let Some(plan) = self.fs.plan_absent(&gone, adopt_after, SystemTime::now()) else {
            return false;
        };
        // Only plain creates: anything else the planner wants first (a target folder to make)
        // or cannot do is the spot pass's business.
        if !plan.findings.is_empty() || plan.actions.iter().any(|a| !matches!(a.op, Op::Create { .. })) {
            return false;
        }
        let now = Instant::now();
        let creates: Vec<Action> = plan
            .actions
            .into_iter()
            .filter(|a| !self.held(&a.link, now))
            .collect();
        if creates.is_empty() {
            return false;
        }
        // A pass of its own: a link's repairs are counted per pass.
        self.status.passes += 1;
        let (results, _writes) = self.fs.apply(&creates);
        let made = results.iter().any(|r| matches!(r.outcome, Outcome::Done(_)));
        if made {
            // Whoever waits for these links (a client's smbd, a container) runs now, before our
            // log lines, the verifying look and the state file: without this the scheduler let
            // that bookkeeping run first in about one repair in twenty, ~150 µs
            // (bench/latency; sched_switch traces in bench/results.md).
            std::thread::yield_now();
        }
        for r in &results {
            if let Outcome::Done(extra) = &r.outcome {
                self.done(&r.action, extra.as_deref());
            }
        }
        if made {
            self.status.last_pass = Some(SystemTime::now());
        }
        made
    }

    /// A spot pass over the names events reported in `link_dir` (`FarmRt::names`): only
    /// those names are read and repaired, so a deleted link comes back in the same time whatever
    /// the size of the farm. It stands in for a full pass only while the farm was converged and
    /// the names end up converged too; anything else (a conflict, a pending folder, a failure, a
    /// flapping link, no full observation yet) is followed by a full pass, which alone decides
    /// the farm's state. Returns whether `STATUS=` should change, or `None` when the names
    /// needed nothing (the usual case: the event was the echo of our own repair), which is not
    /// worth a state file update.
    pub fn spot_pass(&mut self, adopt_after: Duration, poll_interval: Duration) -> Option<bool> {
        let names = std::mem::take(&mut self.names);
        if self.status.state != "converged" {
            return Some(self.pass(adopt_after, poll_interval));
        }
        let Some(plan) = self.fs.plan_names(&names, adopt_after, SystemTime::now()) else {
            return Some(self.pass(adopt_after, poll_interval));
        };
        if plan.actions.is_empty() && plan.findings.is_empty() {
            return None;
        }
        self.status.passes += 1;
        let repairs = self.status.repairs;
        let r = self.apply_rounds(plan, |fs| fs.plan_names(&names, adopt_after, SystemTime::now()));
        let now = Instant::now();
        self.expire(now);
        let clean = matches!(&r, Some((p, None)) if p.actions.is_empty() && p.findings.is_empty())
            && self.links.values().all(|l| !l.flapping && l.hold_until.is_none());
        if !clean {
            return Some(self.pass(adopt_after, poll_interval) || self.status.repairs != repairs);
        }
        debug!(farm = %self.farm().name, names = names.len(), "spot pass");
        self.status.last_pass = Some(SystemTime::now());
        Some(self.status.repairs != repairs)
    }

    /// Applies `plan` in rounds: the actions not held back, then `replan` to see what came of
    /// them, again while a race or a change calls for it. Returns the last plan and the last
    /// error, or `None` when `replan` could not plan. The caller has counted the pass
    /// (`status.passes`), in which each link's repair counts once.
    fn apply_rounds(
        &mut self,
        mut plan: Plan,
        mut replan: impl FnMut(&mut FarmFs) -> Option<Plan>,
    ) -> Option<(Plan, Option<String>)> {
        let mut last_error = None;
        for _ in 0..ROUNDS {
            let now = Instant::now();
            let allowed: Vec<Action> = plan
                .actions
                .iter()
                .filter(|a| !self.held(&a.link, now))
                .cloned()
                .collect();
            if allowed.is_empty() {
                break;
            }
            let (results, _writes) = self.fs.apply(&allowed);
            let mut raced = false;
            for r in &results {
                match &r.outcome {
                    Outcome::Done(extra) => self.done(&r.action, extra.as_deref()),
                    Outcome::Raced(why) => {
                        raced = true;
                        debug!(farm = %self.farm().name, link = %lossy(&r.action.link), "{}: {why}", r.action);
                    }
                    Outcome::Rescued { to, why } => {
                        raced = true;
                        self.status.repairs += 1;
                        *self.status.repairs_by.entry(("quarantine", "race")).or_default() += 1;
                        warn!(
                            farm = %self.farm().name, link = %lossy(&r.action.link), action = %"quarantine",
                            reason = %"race", dest = %to.display(), "{why}: {}", to.display()
                        );
                    }
                    Outcome::Failed(e) => {
                        let msg = format!("{}: {e}", r.action);
                        self.failed(&r.action, &msg);
                        last_error = Some(msg);
                    }
                }
            }
            plan = replan(&mut self.fs)?;
            if !raced && results.iter().all(|r| !matches!(r.outcome, Outcome::Done(_))) {
                break;
            }
        }
        Some((plan, last_error))
    }

    fn held(&self, link: &OsString, now: Instant) -> bool {
        self.links
            .get(link)
            .and_then(|l| l.hold_until)
            .is_some_and(|t| t > now)
    }

    /// Forgets repairs older than the window; a link quiet for a whole window stops flapping.
    fn expire(&mut self, now: Instant) {
        self.links.retain(|name, l| {
            while l
                .repairs
                .front()
                .is_some_and(|t| now.duration_since(*t) > FLAP_WINDOW)
            {
                l.repairs.pop_front();
            }
            if l.hold_until.is_some_and(|t| t <= now) {
                l.hold_until = None;
            }
            if l.flapping && l.repairs.is_empty() {
                l.flapping = false;
                l.flaps = 0;
                info!(link = %lossy(name), "no longer flapping");
            }
            l.flapping || l.failures > 0 || !l.repairs.is_empty() || l.hold_until.is_some()
        });
    }

    fn done(&mut self, a: &Action, extra: Option<&Path>) {
        let farm = self.fs.farm().name.clone();
        let link = lossy(&a.link);
        let (action, reason) = (a.op.name(), a.reason.as_str());
        match (&a.op, extra) {
            (Op::Replace { foreign: true, .. }, Some(old)) => warn!(
                farm = %farm, link = %link, action = %action, reason = %reason, old = %old.display(),
                "{a}: replaced a foreign link"
            ),
            (_, Some(dest)) if a.op.moves_data() => {
                info!(farm = %farm, link = %link, action = %action, reason = %reason, dest = %dest.display(), "{a}")
            }
            _ => info!(farm = %farm, link = %link, action = %action, reason = %reason, "{a}"),
        }
        self.status.repairs += 1;
        *self.status.repairs_by.entry((action, reason)).or_default() += 1;
        self.status.last_repair = Some((SystemTime::now(), a.to_string()));
        if matches!(a.op, Op::MkdirLinkDir | Op::MkdirTarget { .. }) {
            return;
        }
        let now = Instant::now();
        let pass = self.status.passes;
        let l = self.links.entry(a.link.clone()).or_default();
        l.failures = 0;
        if l.counted == pass && !l.repairs.is_empty() {
            return; // this link's repair in this pass is counted already
        }
        l.counted = pass;
        l.repairs.push_back(now);
        if l.repairs.len() >= FLAP_REPAIRS {
            l.flaps += 1;
            let hold = FLAP_HOLD_FIRST
                .saturating_mul(1 << (l.flaps - 1).min(16))
                .min(FLAP_HOLD_MAX);
            l.hold_until = Some(now + hold);
            if !l.flapping {
                warn!(
                    farm = %farm, link = %link, action = %"backoff", reason = %"flapping",
                    "{link} was repaired {} times within {}s: another program keeps changing it; \
                     backing off for {}s",
                    l.repairs.len(), FLAP_WINDOW.as_secs(), hold.as_secs()
                );
            }
            l.flapping = true;
        }
    }

    fn failed(&mut self, a: &Action, msg: &str) {
        self.status.failures += 1;
        let l = self.links.entry(a.link.clone()).or_default();
        l.failures += 1;
        let hold = FAIL_HOLD_FIRST
            .saturating_mul(1 << (l.failures - 1).min(16))
            .min(FAIL_HOLD_MAX);
        l.hold_until = Some(Instant::now() + hold);
        error!(
            farm = %self.fs.farm().name, link = %lossy(&a.link), action = %a.op.name(),
            reason = %a.reason.as_str(), "{msg} (retry in {}s)", hold.as_secs()
        );
    }

    /// Logs a farm's state once when it changes (degraded, conflict, error), not per event.
    fn log_state_change(&mut self, findings: &[Finding]) {
        let state = self.status.state;
        let key = format!("{state}|{}", self.status.findings.join("|"));
        if self.logged_state.as_deref() == Some(key.as_str()) {
            return;
        }
        let was = self.logged_state.replace(key);
        let name = &self.fs.farm().name;
        for f in findings {
            match f {
                Finding::Degraded(_) => warn!(farm = %name, reason = %"degraded", "{f}"),
                Finding::LinkDir(_) => error!(farm = %name, reason = %"security", "{f}"),
                Finding::Conflict { link, .. } => {
                    warn!(farm = %name, link = %lossy(link), reason = %"conflict", "{f}")
                }
                Finding::MissingTarget { link, .. } => {
                    warn!(farm = %name, link = %lossy(link), reason = %"missing_target", "{f}")
                }
                Finding::Pending { link, .. } => {
                    info!(farm = %name, link = %lossy(link), reason = %"pending", "{f}")
                }
            }
        }
        if state == "converged" && was.is_some_and(|w| !w.starts_with("converged")) {
            info!(farm = %name, "converged ({}/{} links)", self.status.links_ok, self.status.links_total);
        }
    }
}

impl FarmRt {
    /// The farm's numbers for the metrics file.
    pub fn sample(&self) -> crate::metrics::FarmSample<'_> {
        crate::metrics::FarmSample {
            name: &self.farm().name,
            state: self.status.state,
            links: self.status.links_total,
            links_ok: self.status.links_ok,
            repairs: &self.status.repairs_by,
            failures: self.status.failures,
            last_pass: self.status.last_pass,
        }
    }
}

fn lossy(s: &std::ffi::OsStr) -> String {
    s.to_string_lossy().into_owned()
}
