//! inotify watches through notify: non-recursive, on each farm's `target_dir` and `link_dir` and
//! on the config file's directory. A watched directory that disappears (or is replaced: inotify
//! watches inodes, so a renamed directory would otherwise keep reporting under its old name) is
//! replaced by a watch on its nearest existing ancestor until it comes back.
//!
//! Events are only hints; this module never interprets them beyond "which paths moved".

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use notify::{Event, EventKind, INotifyWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;
use tracing::{error, info, warn};

/// A message from the watcher thread.
#[derive(Debug)]
pub enum Msg {
    /// Something changed at these paths.
    Event(Event),
    /// The kernel dropped events (queue overflow): everything must be looked at.
    Rescan,
    /// The watcher reported an error.
    Error(String),
}

/// The set of watches and what each one currently points at.
pub struct Watches {
    watcher: INotifyWatcher,
    /// Path actually watched → (device, inode) when the watch was added.
    current: BTreeMap<PathBuf, (u64, u64)>,
    /// Paths that could not be watched, with the error (logged once).
    failed: BTreeMap<PathBuf, String>,
}

/// Why a watch could not be made, said so that an admin can fix it.
pub fn explain(e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => "the inotify watch limit is reached: raise it with \
             `sysctl fs.inotify.max_user_watches=524288` (persist it in /etc/sysctl.d/); \
             polling meanwhile"
            .into(),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => {
            "too many inotify instances: raise `fs.inotify.max_user_instances` (sysctl); polling meanwhile"
                .into()
        }
        _ => format!("{e}; polling meanwhile"),
    }
}

impl Watches {
    /// Starts the watcher thread; its events go to `tx`. Access events (our own readdir opens
    /// among them) are dropped there, so they never wake the loop; only close-after-write is
    /// kept, because it says a file (the config) is completely written.
    ///
    /// `tx` is bounded: when the loop is behind (a long full pass while something writes a file
    /// in a watched directory as fast as it can), further events are dropped and a single
    /// [`Msg::Rescan`] is queued once there is room, exactly like the kernel's own queue
    /// overflow. Memory stays bounded whatever the event rate; the full pass sees everything.
    pub fn new(tx: Sender<Msg>) -> Result<Self, notify::Error> {
        let mut overflowed = false;
        let watcher = INotifyWatcher::new(
            move |res: notify::Result<Event>| {
                let msg = match res {
                    Ok(ev) if ev.need_rescan() => Msg::Rescan,
                    Ok(ev) if is_close_write(&ev.kind) => Msg::Event(ev),
                    Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => return,
                    Ok(ev) => Msg::Event(ev),
                    Err(e) => Msg::Error(explain(&e)),
                };
                if overflowed {
                    match tx.try_send(Msg::Rescan) {
                        Ok(()) => overflowed = false,
                        Err(_) => return,
                    }
                }
                if let Err(TrySendError::Full(_)) = tx.try_send(msg) {
                    overflowed = true;
                }
            },
            notify::Config::default(),
        )?;
        Ok(Watches {
            watcher,
            current: BTreeMap::new(),
            failed: BTreeMap::new(),
        })
    }

    /// Makes the watches match `wanted`: each wanted directory itself when it is there (a real
    /// directory, not a symlink), else its nearest existing ancestor. Returns the wanted paths
    /// that are not watched directly (their farm should be polled) and the paths that were
    /// newly watched (whatever changed under them before the watch existed was not seen).
    pub fn ensure(&mut self, wanted: &BTreeSet<PathBuf>) -> (BTreeSet<PathBuf>, Vec<PathBuf>) {
        let mut added = Vec::new();
        // A directory can vanish between its stat and inotify_add_watch; then the targets are
        // computed again, so its ancestor gets the watch instead.
        for _ in 0..4 {
            if !self.ensure_once(wanted, &mut added) {
                break;
            }
        }
        let unwatched: BTreeSet<PathBuf> = wanted
            .iter()
            .filter(|p| !self.current.contains_key(*p))
            .cloned()
            .collect();
        for p in &unwatched {
            if !self.failed.contains_key(p) {
                // Normal while a directory is away; its ancestor is watched for its return.
                tracing::debug!(
                    "{} is missing; watching an ancestor until it is back",
                    p.display()
                );
            }
        }
        (unwatched, added)
    }

    /// One round of [`Watches::ensure`]; returns whether a directory vanished meanwhile.
    fn ensure_once(&mut self, wanted: &BTreeSet<PathBuf>, added: &mut Vec<PathBuf>) -> bool {
        let mut target: BTreeMap<PathBuf, (u64, u64)> = BTreeMap::new();
        for p in wanted {
            let mut at = p.as_path();
            loop {
                if let Ok(m) = std::fs::symlink_metadata(at) {
                    if m.is_dir() {
                        target.insert(at.to_owned(), (m.dev(), m.ino()));
                        break;
                    }
                }
                match at.parent() {
                    Some(parent) => at = parent,
                    None => break,
                }
            }
        }
        let stale: Vec<PathBuf> = self
            .current
            .iter()
            .filter(|(p, id)| target.get(*p) != Some(id))
            .map(|(p, _)| p.clone())
            .collect();
        for p in stale {
            // The watch may already be gone with its directory; that is fine.
            let r = self.watcher.unwatch(&p);
            tracing::debug!("unwatch {}: {r:?}", p.display());
            self.current.remove(&p);
        }
        let mut vanished = false;
        for (p, id) in &target {
            if self.current.contains_key(p) {
                continue;
            }
            match self.watcher.watch(p, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!("watch {}", p.display());
                    added.push(p.clone());
                    if self.failed.remove(p).is_some() {
                        info!("watching {} again", p.display());
                    }
                    self.current.insert(p.clone(), *id);
                }
                Err(e) if is_gone(&e) => {
                    tracing::debug!("{} vanished before it could be watched", p.display());
                    vanished = true;
                }
                Err(e) => {
                    let why = explain(&e);
                    if self.failed.get(p) != Some(&why) {
                        error!(path = %p.display(), "cannot watch {}: {why}", p.display());
                    }
                    self.failed.insert(p.clone(), why);
                }
            }
        }
        self.failed.retain(|p, _| target.contains_key(p));
        vanished
    }

    /// Forgets the watch on `path` so the next [`Watches::ensure`] adds it again. notify drops a
    /// watch by itself when a watched parent reports the directory renamed or removed, even when
    /// it comes back at once (same inode): our record must not outlive it.
    pub fn invalidate(&mut self, path: &Path) {
        if self.current.remove(path).is_some() {
            let _ = self.watcher.unwatch(path);
        }
    }

    /// Whether `path` is one of the directories watched directly.
    pub fn is_watched(&self, path: &Path) -> bool {
        self.current.contains_key(path)
    }

    /// Number of inotify watches held.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether no watch is held.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}

/// Whether a watch failed because the directory is gone (notify reports it either way).
fn is_gone(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::PathNotFound => true,
        notify::ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// `IN_CLOSE_WRITE`: a writer closed the file.
pub fn is_close_write(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(notify::event::AccessKind::Close(notify::event::AccessMode::Write))
    )
}

/// Whether an event on the config file means it is complete and should be read: closed after
/// writing, renamed onto its name (an editor's atomic save) or removed. A write in progress
/// (`IN_MODIFY` on a truncated file) is not: reading it then would log a bogus error.
pub fn config_settled(kind: &EventKind) -> bool {
    use notify::event::ModifyKind;
    is_close_write(kind)
        || matches!(
            kind,
            EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_)
        )
}

/// Logs a watcher error once per distinct message.
pub fn log_error(last: &mut Option<String>, msg: String) {
    if last.as_deref() != Some(msg.as_str()) {
        warn!("watcher: {msg}");
        *last = Some(msg);
    }
}
