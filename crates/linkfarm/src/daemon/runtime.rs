//! A farm's runtime: what the daemon remembers about a farm between passes, and the decisions
//! made from it — which links are held back (a failure's backoff, a flapping link's hold), the
//! farm's state, and when to look again (settling entries, holds ending, polling). Every function
//! takes `now` and returns what to do; nothing here reads the clock or the disk, so the table in
//! `tests/runtime_cases.txt` specifies it with plain timelines.
//!
//! It never runs a pass: a spot pass that cannot stand in for a full one says
//! [`Spot::Escalate`] and the router queues the full pass (kube-runtime's `requeue`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::time::{Duration, Instant};

use linkfarm_core::FarmState;

/// A link repaired in this many passes within [`FLAP_WINDOW`] is flapping.
pub const FLAP_REPAIRS: usize = 5;
/// The window in which repairs are counted.
pub const FLAP_WINDOW: Duration = Duration::from_secs(60);
/// The first hold of a flapping link; it doubles with each flap, up to [`FLAP_HOLD_MAX`].
pub const FLAP_HOLD_FIRST: Duration = Duration::from_secs(5);
/// The longest hold of a flapping link.
pub const FLAP_HOLD_MAX: Duration = Duration::from_secs(600);
/// The first hold after a failed action; it doubles with each failure, up to [`FAIL_HOLD_MAX`].
pub const FAIL_HOLD_FIRST: Duration = Duration::from_secs(1);
/// The longest hold after failures.
pub const FAIL_HOLD_MAX: Duration = Duration::from_secs(300);
/// mtimes are compared with the wall clock; waking a little after the settle time avoids waking
/// just before it.
pub const SETTLE_SLACK: Duration = Duration::from_millis(20);

/// A farm's state, as the state file and `STATUS=` name it (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Every desired link is right.
    Converged,
    /// Not yet converged (the initial state, pending entries, missing targets).
    #[default]
    Drift,
    /// The target side cannot be used (SPEC §2): existing links are kept.
    Degraded,
    /// Something at a link name is left as it is.
    Conflict,
    /// Another program keeps undoing a link: it is held back.
    Flapping,
    /// `link_dir` refused, or an action failed.
    Error,
}

impl State {
    /// The name in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Converged => "converged",
            State::Drift => "drift",
            State::Degraded => "degraded",
            State::Conflict => "conflict",
            State::Flapping => "flapping",
            State::Error => "error",
        }
    }

    /// Every state, in the order `STATUS=` lists the farms that are not converged.
    pub const NOT_CONVERGED: [State; 5] = [
        State::Degraded,
        State::Flapping,
        State::Conflict,
        State::Error,
        State::Drift,
    ];
}

/// What a full pass ended with, as far as the runtime cares.
#[derive(Debug, Clone)]
pub struct PassEnd {
    /// The state of the pass's last plan.
    pub plan: FarmState,
    /// The links of the last plan's actions (held ones among them).
    pub planned: Vec<OsString>,
    /// The last failure of the pass, if an action failed.
    pub error: Option<String>,
    /// How long until the earliest unsettled entry settles (the plan's `recheck_at`).
    pub settles_in: Option<Duration>,
}

/// What a spot pass ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpotEnd {
    /// The names needed nothing.
    Nothing,
    /// Everything it planned was done and the names are right now.
    Clean,
    /// A failure, a finding, or something left to do.
    Unfinished,
}

/// What to do after a spot pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spot {
    /// The spot pass stands for a full one.
    Done,
    /// Only a full pass can decide: the router queues one.
    Escalate,
}

/// A link repaired often enough to be flapping: what the log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flap {
    /// Repairs within the window.
    pub repairs: usize,
    /// How long it is held back.
    pub hold: Duration,
    /// Whether it just started flapping (logged once, not at every doubling).
    pub started: bool,
}

#[derive(Debug, Default)]
struct LinkRt {
    /// When it was repaired, once per pass: adopting a folder of ten files is one repair of the
    /// link, not eleven.
    repairs: std::collections::VecDeque<Instant>,
    /// The pass its last repair was counted in.
    counted: u64,
    failures: u32,
    flaps: u32,
    hold_until: Option<Instant>,
    flapping: bool,
}

impl LinkRt {
    /// Forgets the repairs older than the window.
    fn forget_old(&mut self, now: Instant) {
        while self
            .repairs
            .front()
            .is_some_and(|t| now.duration_since(*t) > FLAP_WINDOW)
        {
            self.repairs.pop_front();
        }
    }
}

/// A farm's memory between passes. See the module doc.
#[derive(Debug, Default)]
pub struct Runtime {
    links: HashMap<OsString, LinkRt>,
    state: State,
    last_error: Option<String>,
    /// Passes run (a pass that repaired a link counts it once).
    passes: u64,
    /// Polled by the settings (`watcher: poll`, or a network filesystem with `auto`).
    poll_setting: bool,
    /// Polled because its directories cannot be watched directly.
    blind: bool,
    poll_interval: Duration,
    next_poll: Option<Instant>,
    /// When an unsettled entry settles or a held link may be retried.
    recheck: Option<Instant>,
}

impl Runtime {
    /// A farm not looked at yet (`drift`), polled every `poll_interval` when `poll`.
    pub fn new(poll: bool, poll_interval: Duration) -> Self {
        Runtime {
            poll_setting: poll,
            poll_interval,
            ..Runtime::default()
        }
    }

    /// Goes on where `previous` (the same farm before a reload) left off: its pass count and
    /// its last error (the state file's counters run on across reloads).
    pub fn carry_over(&mut self, previous: &Runtime) {
        self.passes = previous.passes;
        self.last_error.clone_from(&previous.last_error);
    }

    /// Whether the settings ask for polling (`watcher: poll`, or `auto` on a network
    /// filesystem), as the state file's `polling` says.
    pub fn poll_setting(&self) -> bool {
        self.poll_setting
    }

    /// The farm's state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The last failure, while it is not resolved.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Passes run.
    pub fn passes(&self) -> u64 {
        self.passes
    }

    /// Whether the farm is polled (by the settings or because it is not watched).
    pub fn polled(&self) -> bool {
        self.poll_setting || self.blind
    }

    /// Links flapping now, sorted.
    pub fn flapping(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = self
            .links
            .iter()
            .filter(|(_, l)| l.flapping)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// The earliest time this farm wants a full pass without an event.
    pub fn due(&self) -> Option<Instant> {
        [self.recheck, self.next_poll].into_iter().flatten().min()
    }

    /// Whether the farm's directories are watched; an unwatched farm is polled until they are.
    pub fn set_blind(&mut self, blind: bool, now: Instant) {
        self.blind = blind;
        if self.polled() {
            self.next_poll.get_or_insert(now + self.poll_interval);
        } else {
            self.next_poll = None;
        }
    }

    /// Whether `link` is held back (failing or flapping) at `now`.
    pub fn held(&self, link: &OsString, now: Instant) -> bool {
        self.links
            .get(link)
            .and_then(|l| l.hold_until)
            .is_some_and(|t| t > now)
    }

    /// A pass begins: a link's repairs are counted once per pass.
    pub fn begin_pass(&mut self) {
        self.passes += 1;
    }

    /// Whether events about names may be handled by a spot pass: only a converged farm's (any
    /// other state is decided by full passes alone).
    pub fn may_spot(&self) -> bool {
        self.state == State::Converged
    }

    /// `link` was repaired (in the current pass). Returns the flap when this repair makes it
    /// flapping (or flapping again, with a doubled hold).
    pub fn repaired(&mut self, link: &OsString, now: Instant) -> Option<Flap> {
        let pass = self.passes;
        let l = self.links.entry(link.clone()).or_default();
        l.failures = 0;
        if l.counted == pass && !l.repairs.is_empty() {
            return None; // this link's repair in this pass is counted already
        }
        l.counted = pass;
        l.forget_old(now);
        l.repairs.push_back(now);
        if l.repairs.len() < FLAP_REPAIRS {
            return None;
        }
        l.flaps += 1;
        let hold = FLAP_HOLD_FIRST
            .saturating_mul(1 << (l.flaps - 1).min(16))
            .min(FLAP_HOLD_MAX);
        l.hold_until = Some(now + hold);
        let started = !l.flapping;
        l.flapping = true;
        Some(Flap {
            repairs: l.repairs.len(),
            hold,
            started,
        })
    }

    /// An action on `link` failed: returns how long it is held back.
    pub fn failed(&mut self, link: &OsString, now: Instant) -> Duration {
        let l = self.links.entry(link.clone()).or_default();
        l.failures += 1;
        let hold = FAIL_HOLD_FIRST
            .saturating_mul(1 << (l.failures - 1).min(16))
            .min(FAIL_HOLD_MAX);
        l.hold_until = Some(now + hold);
        hold
    }

    /// Forgets repairs older than the window and holds that ended. Returns the links that stopped
    /// flapping (quiet for a whole window).
    pub fn expire(&mut self, now: Instant) -> Vec<OsString> {
        let mut calm = Vec::new();
        self.links.retain(|name, l| {
            l.forget_old(now);
            if l.hold_until.is_some_and(|t| t <= now) {
                l.hold_until = None;
            }
            if l.flapping && l.repairs.is_empty() {
                l.flapping = false;
                l.flaps = 0;
                calm.push(name.clone());
            }
            l.flapping || l.failures > 0 || !l.repairs.is_empty() || l.hold_until.is_some()
        });
        calm
    }

    /// A full pass ended: decides the farm's state and when to look again. Returns the state.
    pub fn full_end(&mut self, end: PassEnd, now: Instant) -> State {
        let _ = self.expire(now);
        // A failure stays reported while the failed link is held back and still planned.
        if end.error.is_some() || end.planned.iter().all(|l| !self.held(l, now)) {
            self.last_error = end.error;
        }
        let flapping = self.links.values().any(|l| l.flapping);
        self.state = match end.plan {
            FarmState::Error => State::Error,
            _ if flapping => State::Flapping,
            FarmState::Degraded => State::Degraded,
            _ if self.last_error.is_some() => State::Error,
            FarmState::Converged => State::Converged,
            FarmState::Drift => State::Drift,
            FarmState::Conflict => State::Conflict,
        };
        let settle = end.settles_in.map(|wait| now + wait + SETTLE_SLACK);
        let hold = self.links.values().filter_map(|l| l.hold_until).min();
        self.recheck = [settle, hold].into_iter().flatten().min();
        if self.polled() {
            self.next_poll = Some(now + self.poll_interval);
        }
        self.state
    }

    /// A spot pass ended: whether it stands for a full pass.
    pub fn spot_end(&mut self, end: SpotEnd, now: Instant) -> Spot {
        let _ = self.expire(now);
        let quiet = self.links.values().all(|l| !l.flapping && l.hold_until.is_none());
        match end {
            SpotEnd::Nothing => Spot::Done,
            SpotEnd::Clean if quiet => Spot::Done,
            SpotEnd::Clean | SpotEnd::Unfinished => Spot::Escalate,
        }
    }
}
