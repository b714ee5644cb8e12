//! `linkfarm run`: many sources, one loop. The notify watcher, signals, and timers (settling
//! entries, backoff, resync, polling, watchdog) feed one loop that marks farms dirty and runs one
//! pass per dirty farm. Events are hints: a pass always re-reads the disk, so a lost or coalesced
//! event costs nothing but latency, and an overflow is answered by a full pass.
//!
//! Passes run on the loop itself (blocking syscalls on a current-thread runtime): a signal is
//! handled between passes, so SIGTERM finishes the pass in progress, and a hung pass stops the
//! watchdog pings so systemd restarts the daemon.

pub mod farm;
pub mod state;
pub mod watch;

use std::collections::BTreeSet;
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
use farm::{FarmRt, FarmStatus};
use watch::{Msg, Watches};

/// Events read in one go before the passes run: a flood cannot starve the passes (the kernel's
/// own queue holds the rest, and reports an overflow if it fills).
const MAX_BATCH: usize = 4096;

/// Everything the loop owns.
struct Daemon {
    config_path: PathBuf,
    config: Config,
    farms: Vec<FarmRt>,
    watches: Option<Watches>,
    started: SystemTime,
    next_resync: Option<Instant>,
    watchdog: Option<(Duration, Instant)>,
    status_line: String,
    reload_error: Option<String>,
    watcher_error: Option<String>,
    /// Something changed that needs the watches to be re-checked.
    rewatch: bool,
    /// A pass ran since the state file was last written.
    unpublished: bool,
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
        config_path: config.path.clone(),
        farms: Vec::new(),
        config,
        watches,
        started: SystemTime::now(),
        next_resync: None,
        watchdog: sd_notify::watchdog_enabled().map(|t| (t / 2, Instant::now())),
        status_line: String::new(),
        reload_error: None,
        watcher_error: None,
        rewatch: true,
        unpublished: true,
    };
    d.install_farms(Vec::new());
    state::remove_leftovers(&d.config.settings.state_file);
    // Watches first, then the first full pass: a change during that pass is not missed.
    d.ensure_watches();
    d.converge(true);
    let line = d.publish();
    notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
    info!(
        "started: {line}; {} inotify watches",
        d.watches.as_ref().map_or(0, Watches::len)
    );
    // The inboxes (SPEC §10) run on a thread of their own: a check never delays a repair.
    let inboxes = start_inboxes(&d.config);

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
        let mut full = false;
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
                                full = true;
                            }
                            Msg::Ended => d.rewatch = true,
                            Msg::Change(path, kind) => reload |= d.mark(&path, kind),
                        }
                    }
                }
            }
            () = timer => {}
        }
        d.ping_watchdog();
        if reload {
            d.reload();
            if let Some(i) = &inboxes {
                i.reload(&d.config);
            }
            full = true;
        }
        if d.next_resync.is_some_and(|t| t <= Instant::now()) {
            debug!("resync");
            full = true;
        }
        d.converge(full);
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
    d.unpublished = true;
    d.publish();
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
    /// (Re)creates the per-farm runtimes from the config, carrying counters over by farm name.
    fn install_farms(&mut self, previous: Vec<FarmRt>) {
        let settings = &self.config.settings;
        self.farms = self
            .config
            .farms
            .iter()
            .map(|f| {
                let prev: Option<&FarmStatus> = previous.iter().find(|p| p.farm().name == f.name).map(|p| &p.status);
                let mut rt = FarmRt::new(f.clone(), prev);
                rt.poll = match settings.watcher {
                    WatcherSetting::Poll => true,
                    WatcherSetting::Inotify => false,
                    WatcherSetting::Auto => {
                        let net = [&f.target_dir, &f.link_dir].into_iter().find_map(|p| network_fs(p));
                        if let Some(kind) = net {
                            info!(farm = %f.name, "{kind} filesystem: inotify misses remote changes, polling every {}s", settings.poll_interval.as_secs_f32());
                        }
                        net.is_some()
                    }
                };
                rt
            })
            .collect();
        self.next_resync = settings.resync_interval.map(|i| Instant::now() + i);
        self.rewatch = true;
    }

    /// Marks the farms that an event concerns; returns whether the config file is to be re-read.
    fn mark(&mut self, p: &Path, kind: watch::Kind) -> bool {
        use watch::Kind;
        let reload = p == self.config_path && watch::config_settled(kind);
        if kind == Kind::Written {
            // Only the config cares; for a farm the create event already counted.
            return reload;
        }
        for f in &mut self.farms {
            let farm = f.fs.farm();
            let near = |dir: &Path| p == dir || p.parent() == Some(dir) || dir.starts_with(p);
            if near(&farm.target_dir) {
                // Which links are desired may have changed: only a full pass knows.
                f.dirty = true;
            } else if p.parent() == Some(farm.link_dir.as_path()) {
                if let Some(name) = p.file_name() {
                    f.names.insert(name.to_owned());
                    if matches!(kind, Kind::Removed | Kind::Renamed) {
                        f.gone.insert(name.to_owned());
                    }
                }
            } else if near(&farm.link_dir) {
                f.dirty = true;
            }
        }
        // A watched directory renamed or removed: its watch follows the inode elsewhere or ends.
        if let Some(w) = &mut self.watches {
            let moved = matches!(kind, Kind::Renamed | Kind::Removed | Kind::SelfGone);
            if moved && w.is_watched(p) {
                w.invalidate(p);
                self.rewatch = true;
            }
        }
        // A path that is (an ancestor of) a directory we watch only through an ancestor, or a
        // watched directory itself (deleted, renamed): the watches must be looked at again.
        if let Some(w) = &self.watches {
            if self
                .wanted_paths()
                .any(|d| d.starts_with(p) && (!w.is_watched(d) || d == p))
            {
                self.rewatch = true;
            }
        }
        reload
    }

    /// The directories to watch: each farm's two, and the config file's.
    fn wanted_paths(&self) -> impl Iterator<Item = &Path> {
        self.farms
            .iter()
            .flat_map(|f| [f.farm().target_dir.as_path(), f.farm().link_dir.as_path()])
            .chain(self.config_path.parent())
    }

    fn wanted(&self) -> BTreeSet<PathBuf> {
        self.wanted_paths().map(Path::to_owned).collect()
    }

    /// Passes, then watches, then passes again for the farms under a watch that was just added
    /// (a directory made or found by the pass): what happened there before the watch existed
    /// produced no event, so only a look at the disk can see it.
    fn converge(&mut self, full: bool) -> bool {
        let mut changed = self.run_passes(full);
        for _ in 0..3 {
            if !self.ensure_watches() {
                break;
            }
            changed |= self.run_passes(false);
        }
        changed
    }

    /// Re-checks the watches when something asked for it; returns whether a farm must be looked
    /// at again because a watch was added under it.
    fn ensure_watches(&mut self) -> bool {
        if !std::mem::take(&mut self.rewatch) {
            return false;
        }
        let wanted = self.wanted();
        let (unwatched, added) = match &mut self.watches {
            Some(w) => w.ensure(&wanted),
            None => (wanted, Vec::new()),
        };
        let mut again = false;
        for f in &mut self.farms {
            let farm = f.fs.farm();
            if added
                .iter()
                .any(|a| farm.link_dir.starts_with(a) || farm.target_dir.starts_with(a))
            {
                f.dirty = true;
                again = true;
            }
        }
        // A farm whose directories cannot be watched directly is found by its ancestor's events
        // when they come back; if no watch at all is possible, it is polled.
        let poll_interval = self.config.settings.poll_interval;
        for f in &mut self.farms {
            let blind = self.watches.is_none()
                || (unwatched.contains(&f.farm().link_dir)
                    && std::fs::symlink_metadata(&f.farm().link_dir).is_ok_and(|m| m.is_dir()))
                || (unwatched.contains(&f.farm().target_dir) && f.farm().target_dir.is_dir());
            if blind && f.next_poll.is_none() {
                f.next_poll = Some(Instant::now() + poll_interval);
            }
            if !blind && !f.poll {
                f.next_poll = None;
            }
        }
        again
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.farms
            .iter()
            .filter_map(FarmRt::due)
            .chain(self.next_resync)
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

    /// Runs a full pass for every dirty or due farm (every farm when `full`), and a spot pass
    /// for a farm that events only reported names in `link_dir` of. Returns whether a farm's
    /// status changed.
    fn run_passes(&mut self, full: bool) -> bool {
        let now = Instant::now();
        let s = &self.config.settings;
        if full {
            self.next_resync = s.resync_interval.map(|i| now + i);
        }
        let mut changed = false;
        for f in &mut self.farms {
            let due = f.due().is_some_and(|t| t <= now);
            if full || f.dirty || due {
                changed |= f.pass(s.adopt_after, s.poll_interval);
                self.unpublished = true;
            } else if !f.names.is_empty() {
                if f.recreate_gone(s.adopt_after) {
                    changed = true;
                    self.unpublished = true;
                }
                if let Some(c) = f.spot_pass(s.adopt_after, s.poll_interval) {
                    changed |= c;
                    self.unpublished = true;
                }
            }
            // A timer-driven pass (polling, backoff, settling) also re-checks the watches, so a
            // farm that lost its watches to a race gets them back without waiting for an event.
            self.rewatch |= due || full;
        }
        changed
    }

    /// Updates `STATUS=` when it changed, and the state file after a pass (only then: a wake-up
    /// without a pass must not write, or the write's own event in a watched directory would wake
    /// the loop again). Returns the status line.
    fn publish(&mut self) -> String {
        let line = status_line(&self.farms, self.reload_error.is_some());
        if line != self.status_line {
            notify(&[NotifyState::Status(&line)]);
            self.status_line = line.clone();
        }
        if !std::mem::take(&mut self.unpublished) {
            return line;
        }
        let v = state::state_json(
            self.started,
            &self.config_path,
            &self.farms,
            self.reload_error.as_deref(),
        );
        if let Err(e) = state::write(&self.config.settings.state_file, &v) {
            debug!(
                "cannot write the state file {}: {e}",
                self.config.settings.state_file.display()
            );
        }
        line
    }

    fn reload(&mut self) {
        let monotonic = NotifyState::monotonic_usec_now();
        let mut states = vec![NotifyState::Reloading];
        states.extend(monotonic.ok());
        notify(&states);
        match load::load_for_start(&self.config_path) {
            Ok(new) => {
                info!("reloaded {}", self.config_path.display());
                self.reload_error = None;
                self.config = new;
                let previous = std::mem::take(&mut self.farms);
                self.install_farms(previous);
            }
            Err(e) => {
                error!("reload failed, the previous config stays in force: {e}");
                self.reload_error = Some(e.to_string());
                self.unpublished = true;
            }
        }
    }
}

/// `2 farms, 16/16 links ok; last repair ...` — what `systemctl status` shows.
fn status_line(farms: &[FarmRt], reload_failed: bool) -> String {
    let total: usize = farms.iter().map(|f| f.status.links_total).sum();
    let ok: usize = farms.iter().map(|f| f.status.links_ok).sum();
    let mut s = format!(
        "{} farm{}, {ok}/{total} links ok",
        farms.len(),
        if farms.len() == 1 { "" } else { "s" }
    );
    for state in ["degraded", "flapping", "conflict", "error", "drift"] {
        let names: Vec<&str> = farms
            .iter()
            .filter(|f| f.status.state == state)
            .map(|f| f.farm().name.as_str())
            .collect();
        if !names.is_empty() {
            s.push_str(&format!("; {state}: {}", names.join(", ")));
        }
    }
    if let Some((t, what)) = farms
        .iter()
        .filter_map(|f| f.status.last_repair.as_ref())
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

/// The kind of network or FUSE filesystem `path` (or its nearest existing ancestor) is on.
pub fn network_fs(path: &Path) -> Option<&'static str> {
    use nix::sys::statfs::{statfs, FUSE_SUPER_MAGIC, NFS_SUPER_MAGIC, SMB_SUPER_MAGIC};
    const CIFS: i64 = 0xFF53_4D42;
    const SMB2: i64 = 0xFE53_4D42;
    let existing = path.ancestors().find(|p| p.exists())?;
    let t = statfs(existing).ok()?.filesystem_type();
    #[allow(clippy::unnecessary_cast)]
    let raw = t.0 as i64;
    if t == NFS_SUPER_MAGIC {
        Some("NFS")
    } else if t == SMB_SUPER_MAGIC || raw == CIFS || raw == SMB2 {
        Some("CIFS/SMB")
    } else if t == FUSE_SUPER_MAGIC {
        Some("FUSE")
    } else {
        None
    }
}
