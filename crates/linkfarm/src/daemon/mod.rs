//! `linkfarm run`: many sources, one loop. The inotify watches, signals and timers (settling
//! entries, backoff, resync, polling, watchdog) feed one loop; the [`router`] turns what they say
//! into one [`Look`] per reconciler (a full pass, or a spot pass over names), and the loop runs
//! each look on its [`Reconciler`]. Events are hints: a pass always re-reads the disk, so a lost
//! or coalesced event costs nothing but latency, and an overflow is answered by a full pass.
//!
//! Who decides what: the router alone chooses the kind of pass; each farm's [`runtime`] alone
//! decides holds, flapping, the farm's state and when to look again; [`rounds`] is the one retry
//! of a plan's actions. This file carries out what they return and touches the watches.
//!
//! Passes run on the loop itself (blocking syscalls on a current-thread runtime): a signal is
//! handled between passes, so SIGTERM finishes the pass in progress, and a hung pass stops the
//! watchdog pings so systemd restarts the daemon.

pub mod farm;
pub mod inbox;
pub mod rounds;
pub mod router;
pub mod runtime;
pub mod state;
pub mod watch;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use libc::{SIGHUP, SIGINT, SIGTERM};
use linkfarm_core::{Config, Watcher as WatcherSetting};
use sd_notify::NotifyState;
use tokio::time::sleep_until;
use tracing::{debug, error, info, warn};

use crate::load;
use crate::metrics::{self, Metrics};
use farm::FarmRt;
use inbox::InboxRt;
use router::{Id, Interest, Look, Role, Router};
use runtime::State;
use watch::{Msg, Watches};

/// Events read in one go before the passes run: a flood cannot starve the passes (the kernel's
/// own queue holds the rest, and reports an overflow if it fills).
const MAX_BATCH: usize = 4096;

/// How long a config file that is absent at a reload is waited for before the reload is reported
/// failed: an editor that replaces the file (renames it away, then writes a new one) leaves no
/// file for a moment, longer through FUSE or NFS. Tried again every [`CONFIG_RETRY`] meanwhile.
const CONFIG_GRACE: Duration = Duration::from_secs(2);
const CONFIG_RETRY: Duration = Duration::from_millis(100);

/// What the loop drives: farms, and the inboxes of SPEC §10. A reconciler names the
/// directories it depends on (the router routes their events, the loop watches them), carries
/// out a look, and says when it wants one without an event.
pub trait Reconciler {
    /// The directories it depends on, and how their events route.
    fn interests(&self) -> Vec<Interest>;
    /// Carries out `look`. A [`Look::Full`] must never escalate.
    fn reconcile(&mut self, look: &Look) -> Reconciled;
    /// The earliest time it wants a full look without an event.
    fn due(&self) -> Option<Instant>;
    /// How its directories are watched now (after every change of the watches).
    fn watched(&mut self, w: Watched, now: Instant);
}

/// How a reconciler's directories are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    /// Some of its directories cannot be watched directly: it is polled until they can.
    pub blind: bool,
    /// Every directory it depends on, its guards included, is watched directly.
    pub guarded: bool,
}

/// What a look came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Something ran that the state file should show.
    pub publish: bool,
    /// The look could not stand for a full one: the router queues a full look.
    pub escalate: bool,
}

impl Reconciled {
    /// Nothing to publish; a full look is needed.
    pub const ESCALATE: Reconciled = Reconciled {
        publish: false,
        escalate: true,
    };
}

/// Everything the loop owns.
struct Daemon {
    config_path: PathBuf,
    config: Config,
    farms: Vec<FarmRt>,
    /// The inboxes, after the farms in [`Id`] order.
    inboxes: Vec<InboxRt>,
    /// Where the inboxes' looks go (the inbox thread), when it runs.
    hints: Option<crate::inbox::Hints>,
    router: Router,
    watches: Option<Watches>,
    started: SystemTime,
    next_resync: Option<Instant>,
    watchdog: Option<(Duration, Instant)>,
    status_line: String,
    reload_error: Option<String>,
    watcher_error: Option<String>,
    /// Something changed that needs the watches to be re-checked.
    rewatch: bool,
    /// When to try again the watches that failed (the watch limit reached, say), and the wait
    /// after that: 1 s, doubling up to `poll_interval`, while they fail.
    retry_watches: Option<(Instant, Duration)>,
    /// A pass ran since the state file was last written.
    unpublished: bool,
    metrics: Metrics,
    /// When `metrics` holds back a change (see `Metrics::update`).
    metrics_due: Option<Instant>,
    /// The inboxes' numbers as their thread last sent them.
    inbox_samples: Vec<metrics::InboxSample>,
    /// The config file was absent at a reload: since when, and when to try again.
    config_absent: Option<(Instant, Instant)>,
}

/// Runs the daemon until `shutdown` completes or SIGTERM/SIGINT arrives. `config` is already
/// validated (start-up exits 78 before this on an invalid one).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut signals = signal_hook_tokio::Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    let (watches, mut stream) = match Watches::new() {
        Ok((w, s)) => (Some(w), Some(s)),
        Err(e) => {
            error!("cannot start the inotify watcher: {}", watch::explain(&e));
            (None, None)
        }
    };
    let mut d = Daemon {
        metrics: Metrics::new(config.settings.metrics_file.clone()),
        metrics_due: None,
        inbox_samples: crate::inbox::zero_samples(&config),
        config_absent: None,
        config_path: config.path.clone(),
        farms: Vec::new(),
        inboxes: Vec::new(),
        hints: None,
        router: Router::default(),
        config,
        watches,
        started: SystemTime::now(),
        next_resync: None,
        watchdog: sd_notify::watchdog_enabled().map(|t| (t / 2, Instant::now())),
        status_line: String::new(),
        reload_error: None,
        watcher_error: None,
        rewatch: true,
        retry_watches: None,
        unpublished: true,
    };
    // The inboxes' passes run on a thread of their own (a check never delays a repair); the
    // loop drives them like the farms.
    let inboxes = start_inboxes(&d.config);
    d.hints = inboxes.as_ref().map(crate::inbox::Service::hints);
    // Their numbers reach the metrics file through this loop, its one writer.
    let mut samples = inboxes.as_ref().map(crate::inbox::Service::samples);
    let mut plans = inboxes.as_ref().map(crate::inbox::Service::plans);
    d.install(Vec::new());
    state::remove_leftovers(&d.config.settings.state_file);
    // Watches first, then the first full pass: a change during that pass is not missed.
    d.ensure_watches();
    d.converge();
    let line = d.publish();
    notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
    info!(
        "started: {line}; {} inotify watches",
        d.watches.as_ref().map_or(0, Watches::len)
    );
    if let Some(s) = &mut samples {
        d.inbox_samples = s.borrow_and_update().clone();
    }

    tokio::pin!(shutdown);
    loop {
        let deadline = d.next_deadline();
        let timer = async move {
            match deadline {
                Some(t) => sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let mut reload = false;
        let mut samples_closed = false;
        let mut plans_closed = false;
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            sig = signals.next() => match sig {
                Some(SIGHUP) => reload = true,
                Some(_) | None => break,
            },
            batch = next_batch(stream.as_mut()) => {
                let batch = batch.unwrap_or_else(|e| {
                    watch::log_error(&mut d.watcher_error, format!("reading events: {e}"));
                    Vec::new()
                });
                for ev in batch {
                    let msgs = match &mut d.watches {
                        Some(w) => w.translate(&ev),
                        None => Vec::new(),
                    };
                    for m in msgs {
                        match m {
                            Msg::Rescan => {
                                warn!("the inotify queue overflowed; running a full pass of every farm");
                                d.full_all();
                            }
                            Msg::Ended => d.rewatch = true,
                            Msg::Change(path, kind) => reload |= d.event(&path, kind),
                        }
                    }
                }
            }
            s = next_samples(samples.as_mut()) => match s {
                Some(s) => d.inbox_samples = s,
                None => samples_closed = true,
            },
            p = next_plans(plans.as_mut()) => match p {
                Some(p) => d.inbox_plans(&p),
                None => plans_closed = true,
            },
            () = timer => {}
        }
        if samples_closed {
            // The inbox thread has ended; its last numbers stay in the file.
            samples = None;
        }
        if plans_closed {
            plans = None;
        }
        d.ping_watchdog();
        reload |= d.config_absent.is_some_and(|(_, t)| t <= Instant::now());
        if reload {
            d.reload();
            if let Some(i) = &inboxes {
                i.reload(&d.config);
            }
        }
        d.timers(Instant::now());
        d.converge();
        let line = d.publish();
        if reload {
            notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
        }
    }
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    info!("stopping");
    if let Some(i) = inboxes {
        i.stop();
    }
    if let Some(s) = &mut samples {
        d.inbox_samples = s.borrow_and_update().clone();
    }
    d.unpublished = true;
    d.publish();
    d.update_metrics(true);
    Ok(())
}

/// The next events (up to [`MAX_BATCH`]), so that a burst is handled by one round of passes.
/// Never completes without a watcher. Cancel-safe.
async fn next_batch(stream: Option<&mut watch::Stream>) -> std::io::Result<Vec<inotify::EventOwned>> {
    match stream {
        Some(s) => s.next_batch(MAX_BATCH).await,
        None => std::future::pending().await,
    }
}

/// The inboxes' plans when their thread sends new ones; `None` once it has ended. Never
/// completes without inboxes. Cancel-safe.
async fn next_plans(plans: Option<&mut crate::inbox::Plans>) -> Option<Vec<crate::inbox::InboxPlan>> {
    match plans {
        Some(p) => match p.changed().await {
            Ok(()) => Some(p.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// The inboxes' numbers when their thread sends new ones; `None` once it has ended. Never
/// completes without inboxes. Cancel-safe.
async fn next_samples(samples: Option<&mut crate::inbox::Samples>) -> Option<Vec<metrics::InboxSample>> {
    match samples {
        Some(s) => match s.changed().await {
            Ok(()) => Some(s.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

fn start_inboxes(config: &Config) -> Option<crate::inbox::Service> {
    let spawn = crate::worker::Spawn::this_binary()
        .map_err(|e| error!("inboxes not started: cannot find the worker binary: {e}"))
        .ok()?;
    crate::inbox::Service::start(config, spawn)
        .map_err(|e| error!("inboxes not started: {e}"))
        .ok()
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!("sd_notify: {e}");
    }
}

impl Daemon {
    /// (Re)creates the per-farm runtimes from the config, carrying counters over by farm name,
    /// and the inboxes' reconcilers, and the router for them; every reconciler gets a full look.
    fn install(&mut self, previous: Vec<FarmRt>) {
        let settings = &self.config.settings;
        self.farms = self
            .config
            .farms
            .iter()
            .map(|f| {
                let prev = previous.iter().find(|p| p.farm().name == f.name);
                let poll = match settings.watcher {
                    WatcherSetting::Poll => true,
                    WatcherSetting::Inotify => false,
                    WatcherSetting::Auto => {
                        let net = [&f.target_dir, &f.link_dir].into_iter().find_map(|p| linkfarm_fs::network_fs(p));
                        if let Some(kind) = net {
                            info!(farm = %f.name, "{kind} filesystem: inotify misses remote changes, polling every {}s", settings.poll_interval.as_secs_f32());
                        }
                        net.is_some()
                    }
                };
                FarmRt::new(f.clone(), settings.adopt_after, poll, settings.poll_interval, prev)
            })
            .collect();
        self.inboxes = match &self.hints {
            Some(h) => self
                .config
                .inboxes
                .iter()
                .map(|i| InboxRt::new(i, h.clone(), settings.poll_interval))
                .collect(),
            None => Vec::new(),
        };
        self.router = Router::new(&self.config_path, &self.interests());
        self.full_all();
    }

    /// Every reconciler's interests, in [`Id`] order.
    fn interests(&self) -> Vec<Vec<Interest>> {
        self.reconcilers().map(Reconciler::interests).collect()
    }

    /// Takes the inbox thread's plans; an inbox whose folders changed changes the router's
    /// interests and the watches.
    fn inbox_plans(&mut self, plans: &[crate::inbox::InboxPlan]) {
        let mut changed = false;
        for p in plans {
            if let Some(i) = self.inboxes.iter_mut().find(|i| i.name() == p.name) {
                changed |= i.plan(p);
            }
        }
        if changed {
            let interests = self.interests();
            self.router.reinterest(&interests);
            self.rewatch = true;
        }
    }

    /// How many reconcilers the loop drives.
    fn count(&self) -> usize {
        self.farms.len() + self.inboxes.len()
    }

    /// Reconciler `id`: the farms in config order, then the inboxes.
    fn reconciler(&mut self, id: Id) -> &mut dyn Reconciler {
        let farms = self.farms.len();
        if id < farms {
            &mut self.farms[id]
        } else {
            &mut self.inboxes[id - farms]
        }
    }

    /// Every reconciler, in [`Id`] order.
    fn reconcilers(&self) -> impl Iterator<Item = &dyn Reconciler> {
        self.farms
            .iter()
            .map(|f| f as &dyn Reconciler)
            .chain(self.inboxes.iter().map(|i| i as &dyn Reconciler))
    }

    /// A full look for every reconciler (start-up, reload, resync, overflow); it also re-checks
    /// the watches and restarts the resync timer.
    fn full_all(&mut self) {
        self.router.full_all(self.count());
        self.next_resync = self.config.settings.resync_interval.map(|i| Instant::now() + i);
        self.rewatch = true;
    }

    /// Routes one event; returns whether the config file is to be re-read. An event at a
    /// watched directory or one of its ancestors also sends the watches for a look: a watch
    /// follows its inode, so after a rename of the directory or of an ancestor it would report
    /// another directory's events under the wanted path, and one on a directory renamed or
    /// removed ends or moves with it.
    fn event(&mut self, p: &Path, kind: watch::Kind) -> bool {
        use watch::Kind;
        let routed = self.router.event(p, kind);
        if routed.reload && kind != Kind::Written {
            // The config was renamed or removed: it is being replaced (an editor's save), and
            // by the time this event is read the new file may exist, still empty (on a FUSE
            // mount in CI). A reload that fails within the grace is tried again; the new file's
            // close reloads at once.
            let now = Instant::now();
            self.config_absent.get_or_insert((now, now + CONFIG_RETRY));
        }
        if routed.watched_path && kind != Kind::Written {
            self.rewatch = true;
            if let Some(w) = &mut self.watches {
                if matches!(kind, Kind::Renamed | Kind::Removed | Kind::SelfGone) && w.is_watched(p) {
                    w.invalidate(p);
                }
            }
        }
        routed.reload
    }

    /// The timers that came due: a reconciler's own (settling, holds, polling) and the resync.
    /// A timer-driven pass also re-checks the watches, so a farm that lost its watches to a race
    /// gets them back without waiting for an event.
    fn timers(&mut self, now: Instant) {
        if self.retry_watches.is_some_and(|(t, _)| t <= now) {
            self.rewatch = true;
        }
        if self.next_resync.is_some_and(|t| t <= now) {
            debug!("resync");
            self.full_all();
        }
        for id in 0..self.count() {
            if self.reconciler(id).due().is_some_and(|t| t <= now) {
                self.router.full(id);
                self.rewatch = true;
            }
        }
    }

    /// Runs the queued looks, then the watches, then the looks for what is under a watch that
    /// was just added (a directory made or found by a pass): what happened there before the
    /// watch existed produced no event, so only a look at the disk can see it.
    fn converge(&mut self) {
        rounds::repeat(|| {
            self.run_looks();
            self.ensure_watches()
        });
    }

    /// Runs every queued look; an escalation is queued and run in the same turn. A full look
    /// never escalates, so this ends after two looks per reconciler at most.
    fn run_looks(&mut self) {
        while !self.router.is_empty() {
            for (id, look) in self.router.take() {
                let began = Instant::now();
                let r = self.reconciler(id).reconcile(&look);
                self.metrics.passes.observe(began.elapsed());
                self.unpublished |= r.publish;
                if r.escalate && look != Look::Full {
                    self.router.full(id);
                }
            }
        }
    }

    /// Re-checks the watches when something asked for it; returns whether a look was queued
    /// because a watch was added.
    fn ensure_watches(&mut self) -> bool {
        if !std::mem::take(&mut self.rewatch) {
            return false;
        }
        let wanted = self.router.wanted().clone();
        let (unwatched, added) = match &mut self.watches {
            Some(w) => w.ensure(&wanted),
            None => (wanted.into_keys().collect(), Vec::new()),
        };
        for a in &added {
            self.router.watch_added(a);
        }
        // Failed watches are tried again soon (a watch limit is often raised, or freed, within
        // seconds), then less often; meanwhile their reconcilers are polled.
        let now = Instant::now();
        self.retry_watches = match (
            self.watches.as_ref().is_some_and(Watches::failing),
            self.retry_watches,
        ) {
            (false, _) => None,
            (true, None) => Some((now + Duration::from_secs(1), Duration::from_secs(2))),
            (true, Some((_, wait))) => {
                let wait = wait.min(self.config.settings.poll_interval);
                Some((now + wait, wait * 2))
            }
        };
        // A reconciler whose directories cannot be watched directly is found by its ancestor's
        // events when they come back; if no watch at all is possible, it is polled. One whose
        // guards are not all watched must not rely on them.
        let no_watcher = self.watches.is_none();
        for id in 0..self.count() {
            let r = self.reconciler(id);
            let interests = r.interests();
            let blind = no_watcher
                || interests.iter().any(|i| {
                    unwatched.contains(&i.dir)
                        && match i.role {
                            Role::Names => std::fs::symlink_metadata(&i.dir).is_ok_and(|m| m.is_dir()),
                            Role::Full | Role::Files => i.dir.is_dir(),
                            Role::Guard => false,
                        }
                });
            let guarded = !no_watcher && interests.iter().all(|i| !unwatched.contains(&i.dir));
            r.watched(Watched { blind, guarded }, now);
        }
        !self.router.is_empty()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.reconcilers()
            .filter_map(Reconciler::due)
            .chain(self.next_resync)
            .chain(self.retry_watches.map(|(t, _)| t))
            .chain(self.metrics_due)
            .chain(self.config_absent.map(|(_, t)| t))
            .chain(self.watchdog.map(|(_, t)| t))
            .min()
    }

    fn ping_watchdog(&mut self) {
        if let Some((every, next)) = &mut self.watchdog {
            let now = Instant::now();
            if *next <= now {
                notify(&[NotifyState::Watchdog]);
                *next = now + *every;
            }
        }
    }

    /// Updates `STATUS=` when it changed, and the state file after a pass (only then: a wake-up
    /// without a pass must not write, or the write's own event in a watched directory would wake
    /// the loop again). Returns the status line. This is where a pass's results are published.
    fn publish(&mut self) -> String {
        let line = status_line(&self.farms, self.reload_error.is_some());
        if line != self.status_line {
            notify(&[NotifyState::Status(&line)]);
            self.status_line = line.clone();
        }
        self.update_metrics(false);
        if !std::mem::take(&mut self.unpublished) {
            return line;
        }
        let v = state::state_json(
            self.started,
            &self.config_path,
            &self.farms,
            self.reload_error.as_deref(),
            &self.metrics.passes,
        );
        if let Err(e) = state::write(&self.config.settings.state_file, &v) {
            debug!(
                "cannot write the state file {}: {e}",
                self.config.settings.state_file.display()
            );
        }
        line
    }

    /// Offers the numbers to the metrics file, which writes them if they changed (`last`: now,
    /// whatever the once-a-second limit, as the daemon stops).
    fn update_metrics(&mut self, last: bool) {
        let process = metrics::Process {
            started: self.started,
            resync_interval: self.config.settings.resync_interval,
        };
        let farms: Vec<_> = self.farms.iter().map(FarmRt::sample).collect();
        let now = Instant::now();
        let now = if last { now + metrics::MIN_INTERVAL } else { now };
        self.metrics_due = self.metrics.update(&process, &farms, &self.inbox_samples, now);
    }

    fn reload(&mut self) {
        let monotonic = NotifyState::monotonic_usec_now();
        let mut states = vec![NotifyState::Reloading];
        states.extend(monotonic.ok());
        notify(&states);
        match load::load_for_start(&self.config_path) {
            Ok(new) => {
                self.config_absent = None;
                info!("reloaded {}", self.config_path.display());
                self.reload_error = None;
                self.config = new;
                self.metrics.set_path(self.config.settings.metrics_file.clone());
                let previous = std::mem::take(&mut self.farms);
                self.install(previous);
            }
            Err(e) if self.config_briefly_absent() => {
                debug!("reload: {e}; the config is being replaced, trying again shortly");
            }
            Err(e) => {
                self.config_absent = None;
                error!("reload failed, the previous config stays in force: {e}");
                self.reload_error = Some(e.to_string());
                self.unpublished = true;
                // As before: a reload request looks at every farm, whatever came of it.
                self.full_all();
            }
        }
    }
}

impl Daemon {
    /// Whether the config file is absent now, or was absent or renamed away a moment ago (a new
    /// file is being written in its place: a read can find it created and still empty, as on a
    /// FUSE mount in CI), for less than [`CONFIG_GRACE`] in all; if so, a reload is due again in
    /// [`CONFIG_RETRY`]. The new file's own close event also reloads at once. A new file that is
    /// still invalid when the grace ends is reported then.
    fn config_briefly_absent(&mut self) -> bool {
        let absent = std::fs::symlink_metadata(&self.config_path)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        let replacing = self.config_absent.is_some();
        let now = Instant::now();
        let since = self.config_absent.map_or(now, |(s, _)| s);
        if !(absent || replacing) || now.duration_since(since) >= CONFIG_GRACE {
            return false;
        }
        self.config_absent = Some((since, now + CONFIG_RETRY));
        true
    }
}

/// `2 farms, 16/16 links ok; last repair ...` — what `systemctl status` shows.
fn status_line(farms: &[FarmRt], reload_failed: bool) -> String {
    let total: usize = farms.iter().map(|f| f.status().links_total).sum();
    let ok: usize = farms.iter().map(|f| f.status().links_ok).sum();
    let mut s = format!(
        "{} farm{}, {ok}/{total} links ok",
        farms.len(),
        if farms.len() == 1 { "" } else { "s" }
    );
    for state in State::NOT_CONVERGED {
        let names: Vec<&str> = farms
            .iter()
            .filter(|f| f.state() == state)
            .map(|f| f.farm().name.as_str())
            .collect();
        if !names.is_empty() {
            s.push_str(&format!("; {}: {}", state.as_str(), names.join(", ")));
        }
    }
    if let Some((t, what)) = farms
        .iter()
        .filter_map(|f| f.status().last_repair.as_ref())
        .max_by_key(|(t, _)| *t)
    {
        s.push_str(&format!(
            "; last repair {} {what}",
            linkfarm_core::time::rfc3339(*t)
        ));
    }
    if reload_failed {
        s.push_str("; last reload FAILED (see the log)");
    }
    s
}
