//! inotify watches, non-recursive, on each farm's `target_dir` and `link_dir` and on the config
//! file's directory, read by the loop itself; and on every ancestor of a `link_dir`, for moves and
//! deletions only ([`Watch::Guard`]): they guard the `link_dir` fd held between repairs (SPEC §4
//! as amended). A watched directory that disappears (or is replaced: inotify watches inodes, so a
//! renamed directory would otherwise keep reporting under its old name) is replaced by a watch on
//! its nearest existing ancestor until it comes back.
//!
//! The inotify fd is read on the loop's own thread (a tokio `AsyncFd`), with a mask of exactly
//! the events that can matter. (notify, which wraps the same crate, reads
//! on a thread of its own and always asks for `IN_OPEN`: every repair then cost two thread
//! wake-ups and 13 context switches instead of 2, and every directory listing by a client or by
//! our own passes woke the daemon. `bench/costs` and `bench/latency` measure both.)
//!
//! Events are only hints; this module never interprets them beyond "what happened at which path".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use inotify::{EventMask, EventOwned, Inotify, WatchDescriptor, WatchMask};
use tokio::io::unix::AsyncFd;
use tracing::{error, info, warn};

/// The events linkfarm asks for. Not `IN_OPEN`/`IN_ACCESS`/`IN_CLOSE_NOWRITE` (reading a
/// directory changes nothing) and not `IN_MODIFY` (a file being written at a link name is seen
/// when it is created and re-checked when it settles; a config file being written is read at
/// `IN_CLOSE_WRITE`). `IN_DONT_FOLLOW`/`IN_ONLYDIR`: a path swapped for a symlink is not watched
/// through it.
fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
}

/// The events that can matter on an ancestor of a `link_dir` (SPEC §4 as amended: the held
/// `link_dir` fd is guarded by watches on every ancestor): a component name moved or deleted,
/// or the directory itself. Not creations (a component can only be created after it was moved
/// or deleted, and then `link_dir` is missing and its nearest ancestor gets the full mask) and
/// not writes: an ancestor such as /tmp may be busy, and its other names cost nothing then.
fn guard_mask() -> WatchMask {
    WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
        // Added to the full mask, not in its place, when one directory is watched both ways
        // (two paths naming one inode).
        | WatchMask::MASK_ADD
}

/// How a wanted directory is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Watch {
    /// Every event that can matter (the `mask()` of this module).
    Full,
    /// Only moves and deletions of its names and itself: the ancestors of a `link_dir`.
    Guard,
}

/// A directory to watch: its (device, inode) and how.
type Target = ((u64, u64), Watch);

/// The inotify fd's raw events, read on the loop's thread.
pub struct Stream {
    fd: AsyncFd<Inotify>,
    buf: Vec<u8>,
}

/// The read buffer: room for at least 2,000 events with names, whatever the kernel has queued.
const BUF: usize = 64 * 1024;

/// The room one event can take (header and the longest name, padded): a read that left less
/// than this free in the buffer may have left events in the queue.
const EVENT_MAX: usize = 16 + 256;

/// The bytes an event with a name of `name_len` bytes takes in a read: the 16-byte header and
/// the name, NUL-terminated and padded to a multiple of 16 (the kernel's
/// `round_event_name_len`); no name, no padding.
fn event_size(name_len: usize) -> usize {
    16 + if name_len == 0 {
        0
    } else {
        (name_len + 1).next_multiple_of(16)
    }
}

impl Stream {
    /// Waits until events can be read, then reads what the kernel has queued, up to `max`
    /// events. It reads again only while a read filled the buffer: the kernel hands over every
    /// queued event that fits, so a read with room to spare emptied the queue. The `read` that
    /// would find the queue empty (`EAGAIN`) is left for the next call, after the caller has
    /// acted on these events: the repair of a deleted link does not wait behind it.
    /// Cancel-safe: the only await comes before any read.
    pub async fn next_batch(&mut self, max: usize) -> io::Result<Vec<EventOwned>> {
        let Stream { fd, buf } = self;
        loop {
            let mut guard = fd.readable_mut().await?;
            let mut batch = Vec::new();
            loop {
                match guard.try_io(|fd| {
                    let events = fd.get_mut().read_events(buf)?;
                    let mut used = 0;
                    for ev in events {
                        used += event_size(ev.name.map_or(0, |n| n.len()));
                        batch.push(ev.to_owned());
                    }
                    Ok(used)
                }) {
                    Ok(Ok(used)) if used + EVENT_MAX > BUF && batch.len() < max => continue,
                    Ok(Ok(_)) => return Ok(batch),
                    Ok(Err(e)) if batch.is_empty() => return Err(e),
                    Ok(Err(_)) => return Ok(batch),
                    // Readiness was stale (EAGAIN): tokio has cleared it; wait again.
                    Err(_would_block) if batch.is_empty() => break,
                    Err(_would_block) => return Ok(batch),
                }
            }
        }
    }
}

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An entry was created.
    Created,
    /// An entry was deleted.
    Removed,
    /// An entry was renamed away or onto this name.
    Renamed,
    /// Metadata (owner, mode, times) changed.
    Changed,
    /// A file was closed after writing.
    Written,
    /// The watched directory itself was deleted or moved.
    SelfGone,
}

/// A translated event.
#[derive(Debug)]
pub enum Msg {
    /// Something happened at this path.
    Change(PathBuf, Kind),
    /// The kernel dropped events (queue overflow): everything must be looked at.
    Rescan,
    /// A watch ended (its directory was deleted, or it was removed): the watches need a look.
    Ended,
}

/// The set of watches and what each one currently points at.
pub struct Watches {
    handle: inotify::Watches,
    /// Path actually watched → (device, inode) and how when the watch was added, and its
    /// descriptor.
    current: BTreeMap<PathBuf, (Target, WatchDescriptor)>,
    /// Descriptor → the watched paths it serves (two paths can name one directory).
    paths: HashMap<WatchDescriptor, Vec<PathBuf>>,
    /// Paths that could not be watched, with the error (logged once).
    failed: BTreeMap<PathBuf, String>,
}

/// Why a watch or the inotify instance could not be made, said so that an admin can fix it.
pub fn explain(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => "the inotify watch limit is reached: raise it with \
             `sysctl fs.inotify.max_user_watches=524288` (persist it in /etc/sysctl.d/); \
             polling meanwhile"
            .into(),
        Some(libc::EMFILE) => {
            "too many inotify instances: raise `fs.inotify.max_user_instances` (sysctl); polling meanwhile"
                .into()
        }
        _ => format!("{e}; polling meanwhile"),
    }
}

impl Watches {
    /// Makes the inotify instance; its events come from the returned [`Stream`] (registered
    /// with the current tokio runtime).
    pub fn new() -> io::Result<(Self, Stream)> {
        let inotify = Inotify::init()?;
        let handle = inotify.watches();
        // `AsyncFd::new` is deprecated in favour of the `unsafe` `register` (tokio#8587: the
        // fd must stay open and the same while registered), and this crate forbids unsafe code.
        // It holds here: the `Inotify` moved into the `AsyncFd` owns its fd and never changes
        // it. The `inotify` crate's own tokio stream registers its fd in just this way.
        #[allow(deprecated)]
        let fd = AsyncFd::new(inotify)?;
        let stream = Stream {
            fd,
            buf: vec![0u8; BUF],
        };
        let w = Watches {
            handle,
            current: BTreeMap::new(),
            paths: HashMap::new(),
            failed: BTreeMap::new(),
        };
        Ok((w, stream))
    }

    /// Translates one raw event into what it says about which paths.
    pub fn translate(&mut self, ev: &inotify::EventOwned) -> Vec<Msg> {
        if ev.mask.contains(EventMask::Q_OVERFLOW) {
            return vec![Msg::Rescan];
        }
        if ev.mask.contains(EventMask::IGNORED) {
            // The kernel ended the watch (its directory is gone, or we removed it).
            if let Some(paths) = self.paths.remove(&ev.wd) {
                for p in paths {
                    if self.current.get(&p).is_some_and(|(_, wd)| *wd == ev.wd) {
                        self.current.remove(&p);
                    }
                }
            }
            return vec![Msg::Ended];
        }
        let kind = if ev.mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
            Kind::SelfGone
        } else if ev.mask.contains(EventMask::CREATE) {
            Kind::Created
        } else if ev.mask.contains(EventMask::DELETE) {
            Kind::Removed
        } else if ev.mask.intersects(EventMask::MOVED_FROM | EventMask::MOVED_TO) {
            Kind::Renamed
        } else if ev.mask.contains(EventMask::CLOSE_WRITE) {
            Kind::Written
        } else {
            Kind::Changed
        };
        let Some(bases) = self.paths.get(&ev.wd) else {
            return Vec::new();
        };
        bases
            .iter()
            .map(|b| {
                let path = match &ev.name {
                    Some(n) => b.join(n),
                    None => b.clone(),
                };
                Msg::Change(path, kind)
            })
            .collect()
    }

    /// Makes the watches match `wanted`: each wanted directory itself when it is there (a real
    /// directory, not a symlink), else its nearest existing ancestor. Returns the wanted paths
    /// that are not watched directly (their farm should be polled) and the paths that were
    /// newly watched (whatever changed under them before the watch existed was not seen).
    /// A directory watched directly as a guard and as the fallback of a missing one gets the
    /// full mask.
    pub fn ensure(&mut self, wanted: &BTreeMap<PathBuf, Watch>) -> (BTreeSet<PathBuf>, Vec<PathBuf>) {
        let mut added = Vec::new();
        // A directory can vanish between its stat and inotify_add_watch; then the targets are
        // computed again, so its ancestor gets the watch instead.
        super::rounds::repeat(|| self.ensure_once(wanted, &mut added));
        let unwatched: BTreeSet<PathBuf> = wanted
            .keys()
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
    fn ensure_once(&mut self, wanted: &BTreeMap<PathBuf, Watch>, added: &mut Vec<PathBuf>) -> bool {
        let mut target: BTreeMap<PathBuf, Target> = BTreeMap::new();
        for (p, how) in wanted {
            let mut at = p.as_path();
            loop {
                if let Ok(m) = std::fs::symlink_metadata(at) {
                    if m.is_dir() {
                        // A stand-in for a missing directory watches for everything.
                        let how = if at == p { *how } else { Watch::Full };
                        let id = (m.dev(), m.ino());
                        let e = target.entry(at.to_owned()).or_insert((id, how));
                        e.1 = e.1.min(how);
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
            .filter(|(p, (id, _))| target.get(*p) != Some(id))
            .map(|(p, _)| p.clone())
            .collect();
        for p in stale {
            tracing::debug!("unwatch {}", p.display());
            self.unwatch(&p);
        }
        let mut vanished = false;
        for (p, id) in &target {
            if self.current.contains_key(p) {
                continue;
            }
            let m = match id.1 {
                Watch::Full => mask(),
                Watch::Guard => guard_mask(),
            };
            match self.handle.add(p, m) {
                Ok(wd) => {
                    tracing::debug!("watch {}", p.display());
                    added.push(p.clone());
                    if self.failed.remove(p).is_some() {
                        info!("watching {} again", p.display());
                    }
                    let paths = self.paths.entry(wd.clone()).or_default();
                    if !paths.contains(p) {
                        paths.push(p.clone());
                    }
                    self.current.insert(p.clone(), (*id, wd));
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
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

    /// Stops watching `path` (the kernel watch ends once no other path shares it).
    fn unwatch(&mut self, path: &Path) {
        let Some((_, wd)) = self.current.remove(path) else {
            return;
        };
        if let Some(paths) = self.paths.get_mut(&wd) {
            paths.retain(|p| p != path);
            if paths.is_empty() {
                self.paths.remove(&wd);
                // It may already be gone with its directory; that is fine.
                let _ = self.handle.remove(wd);
            }
        }
    }

    /// Forgets the watch on `path` so the next [`Watches::ensure`] adds it again: a watched
    /// directory that was renamed or removed, whose watch now follows the inode elsewhere or is
    /// about to end.
    pub fn invalidate(&mut self, path: &Path) {
        self.unwatch(path);
    }

    /// Whether `path` is one of the directories watched directly.
    pub fn is_watched(&self, path: &Path) -> bool {
        self.current.contains_key(path)
    }

    /// Whether a directory could not be watched for a reason other than its absence (the
    /// watch limit, for one): worth trying again soon.
    pub fn failing(&self) -> bool {
        !self.failed.is_empty()
    }

    /// Number of directories watched.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether no watch is held.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}

/// Logs a watcher error once per distinct message.
pub fn log_error(last: &mut Option<String>, msg: String) {
    if last.as_deref() != Some(msg.as_str()) {
        warn!("watcher: {msg}");
        *last = Some(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read back from the kernel: what one read of an event with a name of each length takes.
    #[test]
    fn event_size_is_what_the_kernel_hands_over() {
        let dir = tempfile::tempdir().unwrap();
        let inotify = Inotify::init().unwrap();
        inotify.watches().add(dir.path(), WatchMask::CREATE).unwrap();
        let mut buf = vec![0u8; BUF];
        for len in [1, 14, 15, 16, 31, 255] {
            std::fs::write(dir.path().join("x".repeat(len)), "").unwrap();
            let n = nix::unistd::read(&inotify, &mut buf).unwrap();
            assert_eq!(n, event_size(len), "a name of {len} bytes");
        }
        assert!(event_size(255) <= EVENT_MAX);
    }
}
