//! One farm inside the daemon: carries out the look the router gave it (a full pass, or a spot
//! pass over names), logs every change as one record, and keeps the counters for the state file.
//! What a pass cannot know by itself (holds, flapping, the farm's state, when to look again) is
//! decided by its [`Runtime`]; this file only feeds it what happened and the time.
//!
//! It never chooses the kind of pass: a spot pass that cannot stand for a full one returns
//! `escalate`, and the router queues the full pass.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use linkfarm_core::{Action, Farm, Finding, Op};
use linkfarm_fs::{ActionResult, Caps, FarmFs, Outcome};
use tracing::{debug, error, info, warn};

use super::rounds::{self, Hooks};
use super::router::{Interest, Look, Names, Role};
use super::runtime::{PassEnd, Runtime, Spot, SpotEnd, State, FLAP_WINDOW};
use super::{Reconciled, Reconciler, Watched};

/// What the state file and `STATUS=` say about a farm besides its state.
#[derive(Debug, Clone, Default)]
pub struct FarmStatus {
    /// Desired links.
    pub links_total: usize,
    /// Desired links that are right.
    pub links_ok: usize,
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
    /// What the last plan found (missing targets, conflicts, pending entries).
    pub findings: Vec<String>,
    /// Links currently flapping.
    pub flapping: Vec<String>,
}

/// A farm as the daemon runs it.
#[derive(Debug)]
pub struct FarmRt {
    fs: FarmFs,
    /// The farm's name, for the log records (the rounds hold `fs` while they log).
    name: String,
    rt: Runtime,
    status: FarmStatus,
    adopt_after: Duration,
    logged_state: Option<String>,
    /// The probe count of `fs` whose result was last logged, and the last probe error logged:
    /// each probe's result, and each new probe error, is logged once.
    logged_probes: u64,
    logged_probe_error: Option<String>,
}

impl FarmRt {
    /// Wraps a farm, polled every `poll_interval` when `poll`; `previous` (the same farm before
    /// a reload) carries the counters over.
    pub fn new(
        farm: Farm,
        adopt_after: Duration,
        poll: bool,
        poll_interval: Duration,
        previous: Option<&FarmRt>,
    ) -> Self {
        let mut rt = Runtime::new(poll, poll_interval);
        let name = farm.name.clone();
        let mut fs = FarmFs::new(farm);
        // A reload does not probe again (a converged farm makes no writes); a remount does. The
        // probes the farm logged before the reload stay logged; a new link_dir's is a first one.
        let mut logged_probes = 0;
        if let Some(p) = previous {
            rt.carry_over(&p.rt);
            fs.inherit_caps(&p.fs);
            if p.farm().link_dir == fs.farm().link_dir {
                logged_probes = p.logged_probes;
            }
        }
        FarmRt {
            name,
            fs,
            rt,
            status: previous.map(|p| p.status.clone()).unwrap_or_default(),
            adopt_after,
            logged_state: None,
            logged_probes,
            logged_probe_error: None,
        }
    }

    /// The farm.
    pub fn farm(&self) -> &Farm {
        self.fs.farm()
    }

    /// The farm's state.
    pub fn state(&self) -> State {
        self.rt.state()
    }

    /// The counters.
    pub fn status(&self) -> &FarmStatus {
        &self.status
    }

    /// What link_dir's filesystem can do (SPEC §14); `None` before the first probe.
    pub fn caps(&self) -> Option<Caps> {
        self.fs.caps()
    }

    /// The runtime (passes, the last error, polling).
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// One full pass: plan, apply in rounds what is not held back, and let the runtime decide
    /// the state and the next look. Only a full pass decides the farm's state.
    fn full_pass(&mut self) {
        // A full look is what the router asks for after any event on link_dir's path (and
        // after timers and reloads): link_dir is opened by path and checked again.
        self.fs.invalidate_link_dir();
        self.rt.begin_pass();
        let adopt_after = self.adopt_after;
        let plan = self.fs.plan(adopt_after, SystemTime::now());
        let mut hooks = Judge::new(&mut self.rt, &mut self.status, &self.name);
        let applied = rounds::apply(&mut self.fs, plan, &mut hooks, |fs| {
            Some(fs.plan(adopt_after, SystemTime::now()))
        })
        .expect("a full plan is always made");
        let plan = applied.plan;
        debug!(farm = %self.farm().name, state = plan.state.as_str(), "pass");
        let (now, wall) = (Instant::now(), SystemTime::now());
        self.log_calm(now);
        self.rt.full_end(
            PassEnd {
                plan: plan.state,
                planned: plan.actions.iter().map(|a| a.link.clone()).collect(),
                error: applied.error,
                settles_in: plan
                    .recheck_at
                    .map(|t| t.duration_since(wall).unwrap_or(Duration::ZERO)),
            },
            now,
        );
        self.status.last_pass = Some(wall);
        self.status.links_total = plan.links_total;
        self.status.links_ok = plan.links_ok;
        self.status.findings = plan.findings.iter().map(ToString::to_string).collect();
        self.status.flapping = self.rt.flapping().iter().map(|n| lossy(n)).collect();
        self.log_state_change(&plan.findings);
        self.probe();
    }

    /// Probes link_dir's filesystem (SPEC §14) after a full pass, so that link_dir exists if the
    /// pass could make it: at start-up, and again when link_dir is on another device (a remount).
    /// Otherwise it costs one `fstat` and no write; a degraded farm waits until it is not. Each probe's result is logged once: at WARN
    /// when a fallback leaves a window in which a client could lose a file, else at INFO.
    fn probe(&mut self) {
        // A degraded farm's link_dir is not written at all (SPEC §2), not even temp names.
        if self.rt.state() == State::Degraded {
            return;
        }
        match self.fs.probe_if_stale() {
            Ok(_) => self.logged_probe_error = None,
            Err(e) => {
                let e = e.to_string();
                if self.logged_probe_error.as_deref() != Some(e.as_str()) {
                    warn!(farm = %self.name, "cannot probe the filesystem of link_dir: {e}");
                    self.logged_probe_error = Some(e);
                }
            }
        }
        let (n, Some(caps)) = (self.fs.probes(), self.fs.caps()) else {
            return;
        };
        if n == self.logged_probes {
            return;
        }
        let again = self.logged_probes > 0;
        self.logged_probes = n;
        let when = if again {
            "probed again (link_dir is on another device)"
        } else {
            "probed"
        };
        let dir = self.fs.farm().link_dir.display();
        if caps.noreplace || !caps.link {
            info!(farm = %self.name, "filesystem of {dir} {when}: {caps}; fallback: {}", caps.fallback());
        } else {
            warn!(
                farm = %self.name,
                "filesystem of {dir} {when}: {caps}; fallback: {}; window: {}",
                caps.fallback(),
                caps.window()
            );
        }
    }

    /// A spot pass over the names events reported in `link_dir`: only those names are read and
    /// repaired, so a deleted link comes back in the same time whatever the size of the farm.
    /// Names reported deleted are re-created first without reading them (below). It stands for
    /// a full pass only while the farm was converged and the names end up converged too; the
    /// runtime says when it does not, and then it escalates.
    fn spot_pass(&mut self, names: &Names) -> Reconciled {
        if !self.rt.may_spot() {
            return Reconciled::ESCALATE;
        }
        let made = self.recreate_gone(&names.gone);
        let adopt_after = self.adopt_after;
        let Some(plan) = self.fs.plan_names(&names.all, adopt_after, SystemTime::now()) else {
            return Reconciled::ESCALATE;
        };
        if plan.actions.is_empty() && plan.findings.is_empty() {
            // The usual case: the event was the echo of our own repair. Not worth a state file
            // update unless a link was just re-created.
            return Reconciled {
                publish: made,
                escalate: false,
            };
        }
        self.rt.begin_pass();
        let mut hooks = Judge::new(&mut self.rt, &mut self.status, &self.name);
        let applied = rounds::apply(&mut self.fs, plan, &mut hooks, |fs| {
            fs.plan_names(&names.all, adopt_after, SystemTime::now())
        });
        let end = match &applied {
            Some(a) if a.error.is_none() && a.plan.actions.is_empty() && a.plan.findings.is_empty() => {
                SpotEnd::Clean
            }
            _ => SpotEnd::Unfinished,
        };
        let now = Instant::now();
        self.log_calm(now);
        match self.rt.spot_end(end, now) {
            Spot::Done => {
                debug!(farm = %self.farm().name, names = names.all.len(), "spot pass");
                self.status.last_pass = Some(SystemTime::now());
                Reconciled {
                    publish: true,
                    escalate: false,
                }
            }
            Spot::Escalate => Reconciled::ESCALATE,
        }
    }

    /// Re-creates at once the desired links that events reported deleted, before the spot pass
    /// that looks at them: the planner decides on the names as if absent, and `symlinkat` on the
    /// final name checks that they are (anything there makes it a race, left to the spot pass,
    /// which also handles every failure). Never for a held link. Returns whether a link was made.
    fn recreate_gone(&mut self, gone: &BTreeSet<OsString>) -> bool {
        if gone.is_empty() {
            return false;
        }
        let Some(plan) = self.fs.plan_absent(gone, self.adopt_after, SystemTime::now()) else {
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
            .filter(|a| !self.rt.held(&a.link, now))
            .collect();
        if creates.is_empty() {
            return false;
        }
        // A pass of its own: a link's repairs are counted per pass.
        self.rt.begin_pass();
        let (results, _writes) = self.fs.apply(&creates);
        let made = results.iter().any(|r| matches!(r.outcome, Outcome::Done(_)));
        if made {
            // Whoever waits for these links (a client's smbd, a container) runs now, before our
            // log lines, the verifying look and the state file: without this the scheduler let
            // that bookkeeping run first in about one repair in twenty, ~150 µs
            // (bench/latency; sched_switch traces in bench/results.md).
            std::thread::yield_now();
        }
        let mut hooks = Judge::new(&mut self.rt, &mut self.status, &self.name);
        for r in results.iter().filter(|r| matches!(r.outcome, Outcome::Done(_))) {
            hooks.result(r);
        }
        if made {
            self.status.last_pass = Some(SystemTime::now());
        }
        made
    }

    /// Forgets old repairs and ended holds; logs the links that stopped flapping.
    fn log_calm(&mut self, now: Instant) {
        for name in self.rt.expire(now) {
            info!(farm = %self.fs.farm().name, link = %lossy(&name), "no longer flapping");
        }
    }

    /// Logs a farm's state once when it changes (degraded, conflict, error), not per event.
    fn log_state_change(&mut self, findings: &[Finding]) {
        let state = self.rt.state();
        let key = format!("{}|{}", state.as_str(), self.status.findings.join("|"));
        if self.logged_state.as_deref() == Some(key.as_str()) {
            return;
        }
        let was = self.logged_state.replace(key);
        let name = &self.fs.farm().name;
        for f in findings {
            match f {
                Finding::Degraded(_) => warn!(farm = %name, reason = %"degraded", "{f}"),
                Finding::LinkDir(why) => error!(farm = %name, reason = %link_dir_reason(why), "{f}"),
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
        if state == State::Converged && was.is_some_and(|w| !w.starts_with("converged")) {
            info!(farm = %name, "converged ({}/{} links)", self.status.links_ok, self.status.links_total);
        }
    }
}

/// The log's reason for a refused `link_dir`: `security` only when a symlink is involved (SPEC
/// §4 refuses to work through one); a missing parent, a file in its place or a read error is
/// `link_dir`. Core's finding carries only its text, whose symlink refusals all say so.
fn link_dir_reason(why: &str) -> &'static str {
    if why.contains("symlink") {
        "security"
    } else {
        "link_dir"
    }
}

impl Reconciler for FarmRt {
    fn interests(&self) -> Vec<Interest> {
        let f = self.fs.farm();
        let mut v = vec![
            Interest {
                dir: f.target_dir.clone(),
                role: Role::Full,
            },
            Interest {
                dir: f.link_dir.clone(),
                role: Role::Names,
            },
        ];
        // link_dir's fd is held between passes: every component of its path is guarded.
        v.extend(f.link_dir.ancestors().skip(1).map(|a| Interest {
            dir: a.to_owned(),
            role: Role::Guard,
        }));
        v
    }

    fn reconcile(&mut self, look: &Look) -> Reconciled {
        match look {
            Look::Full => {
                self.full_pass();
                Reconciled {
                    publish: true,
                    escalate: false,
                }
            }
            Look::Names(names) => self.spot_pass(names),
        }
    }

    fn due(&self) -> Option<Instant> {
        self.rt.due()
    }

    fn watched(&mut self, w: Watched, now: Instant) {
        self.rt.set_blind(w.blind, now);
        // The held link_dir fd is safe only while every component of its path is watched.
        self.fs.set_hold_link_dir(w.guarded);
    }
}

/// The rounds' hooks for a farm: holds come from the runtime, and each result is logged as
/// one record and counted (the one place where a farm's actions are logged).
struct Judge<'a> {
    rt: &'a mut Runtime,
    status: &'a mut FarmStatus,
    farm: &'a str,
    now: Instant,
}

impl<'a> Judge<'a> {
    fn new(rt: &'a mut Runtime, status: &'a mut FarmStatus, farm: &'a str) -> Self {
        Judge {
            rt,
            status,
            farm,
            now: Instant::now(),
        }
    }

    fn done(&mut self, a: &Action, extra: Option<&Path>) {
        let farm = self.farm;
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
        if let Some(flap) = self.rt.repaired(&a.link, Instant::now()) {
            if flap.started {
                warn!(
                    farm = %farm, link = %link, action = %"backoff", reason = %"flapping",
                    "{link} was repaired {} times within {}s: another program keeps changing it; \
                     backing off for {}s",
                    flap.repairs, FLAP_WINDOW.as_secs(), flap.hold.as_secs()
                );
            }
        }
    }
}

impl Hooks for Judge<'_> {
    fn held(&self, link: &OsString) -> bool {
        self.rt.held(link, self.now)
    }

    fn result(&mut self, r: &ActionResult) {
        let a = &r.action;
        match &r.outcome {
            Outcome::Done(extra) => self.done(a, extra.as_deref()),
            Outcome::Raced(why) => {
                debug!(farm = %self.farm, link = %lossy(&a.link), "{a}: {why}");
            }
            Outcome::Rescued { to, why } => {
                self.status.repairs += 1;
                *self.status.repairs_by.entry(("quarantine", "race")).or_default() += 1;
                warn!(
                    farm = %self.farm, link = %lossy(&a.link), action = %"quarantine",
                    reason = %"race", dest = %to.display(), "{why}: {}", to.display()
                );
            }
            Outcome::Failed(e) => {
                self.status.failures += 1;
                let hold = self.rt.failed(&a.link, Instant::now());
                error!(
                    farm = %self.farm, link = %lossy(&a.link), action = %a.op.name(),
                    reason = %a.reason.as_str(), "{a}: {e} (retry in {}s)", hold.as_secs()
                );
            }
        }
    }
}

impl FarmRt {
    /// The farm's numbers for the metrics file.
    pub fn sample(&self) -> crate::metrics::FarmSample<'_> {
        crate::metrics::FarmSample {
            name: &self.farm().name,
            state: self.state().as_str(),
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
