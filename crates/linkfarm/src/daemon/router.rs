//! The router: the one place that decides what each reconciler looks at next. inotify events,
//! timers, signals, an overflow, a new watch and a reconciler's own escalation all become one
//! instruction per reconciler, a [`Look`]: the names an event reported in a directory whose names
//! the reconciler can check one by one, or a full pass. `Full` absorbs `Names`, so a burst of
//! events ends in one pass per reconciler.
//!
//! In one sentence: a reconciler gets a full pass unless everything since its last look was an
//! event on names in one of its name directories (a farm's `link_dir`), and then it gets those
//! names — which it may escalate.
//!
//! Routing an event is a few hash lookups (its parent directory, and the path itself among the
//! watched directories and their ancestors), whatever the number of reconcilers. A directory can
//! serve several reconcilers (two farms sharing one `link_dir`): its events go to each of them.
//! The router never reads the disk and never runs a pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::watch::{Kind, Watch};

/// A reconciler's index in the loop's list.
pub type Id = usize;

/// What a reconciler is to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Only these names in its name directory.
    Names(Names),
    /// Everything.
    Full,
}

/// Names that events reported in a name directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Every name reported (created, deleted, renamed, changed).
    pub all: BTreeSet<OsString>,
    /// Those reported deleted or renamed away: a farm may re-create them without reading them.
    pub gone: BTreeSet<OsString>,
}

/// How the events in a directory route for a reconciler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A name created, deleted or changed in it is looked at alone (a farm's `link_dir`).
    Names,
    /// Any change in it calls for a full pass (a farm's `target_dir`: which links are desired
    /// may have changed).
    Full,
    /// Only a move or deletion of the next component of the path matters, and calls for a full
    /// pass (an ancestor of a `link_dir` whose fd is held, SPEC §4 as amended). Watched for
    /// just that; events on its other names route nowhere.
    Guard,
    /// Like `Full`, and a file closed after writing counts too (an inbox's folders, SPEC §10:
    /// an upload that has just been finished is what it waits for).
    Files,
}

/// A directory a reconciler depends on: watched, and routed by its [`Role`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interest {
    /// The directory (absolute, normalized).
    pub dir: PathBuf,
    /// How events on its children route.
    pub role: Role,
}

/// What an event means besides the looks it queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Routed {
    /// The config file is complete and must be read again.
    pub reload: bool,
    /// The path is a watched directory or one of its ancestors: the watches need a look.
    pub watched_path: bool,
}

/// Who an event in or at one directory concerns.
#[derive(Debug, Default)]
struct Routes {
    /// Who looks at the names of its children one by one.
    names: Vec<Id>,
    /// Who needs a full pass when a child changes.
    full: Vec<Id>,
    /// Who needs a full pass when a child changes or a file in it was written.
    files: Vec<Id>,
    /// For a wanted directory or any ancestor of one: the reconcilers with a directory at or
    /// under it (a change of it may have moved that directory).
    under: Vec<Id>,
    /// It is a wanted directory or an ancestor of one.
    watched_path: bool,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Router {
    config: PathBuf,
    /// Directory → who its events concern: one lookup for the event's parent, one for the path
    /// itself (a repair's latency is mostly cold caches, and each map is more of them).
    dirs: HashMap<PathBuf, Routes>,
    /// Every wanted directory, the config file's among them, and how to watch it.
    wanted: BTreeMap<PathBuf, Watch>,
    queue: BTreeMap<Id, Look>,
}

impl Router {
    /// A router for reconcilers with these interests (indexed by [`Id`]) and the config file.
    pub fn new(config: &Path, interests: &[Vec<Interest>]) -> Self {
        let mut r = Router {
            config: config.to_owned(),
            ..Router::default()
        };
        let config_dir = config.parent().map(Path::to_owned);
        let add_under = |dir: &Path, id: Option<Id>, dirs: &mut HashMap<PathBuf, Routes>| {
            for a in dir.ancestors() {
                let r = dirs.entry(a.to_owned()).or_default();
                r.watched_path = true;
                if let Some(id) = id.filter(|id| !r.under.contains(id)) {
                    r.under.push(id);
                }
            }
        };
        let want = |wanted: &mut BTreeMap<PathBuf, Watch>, dir: &Path, how: Watch| {
            let w = wanted.entry(dir.to_owned()).or_insert(how);
            *w = (*w).min(how);
        };
        for (id, list) in interests.iter().enumerate() {
            for i in list {
                let routes = r.dirs.entry(i.dir.clone()).or_default();
                let ids = match i.role {
                    Role::Names => &mut routes.names,
                    Role::Full => &mut routes.full,
                    Role::Files => &mut routes.files,
                    Role::Guard => {
                        // Its own ancestors are the guarded directory's too: `under` has them.
                        want(&mut r.wanted, &i.dir, Watch::Guard);
                        continue;
                    }
                };
                if !ids.contains(&id) {
                    ids.push(id);
                }
                add_under(&i.dir, Some(id), &mut r.dirs);
                want(&mut r.wanted, &i.dir, Watch::Full);
            }
        }
        if let Some(d) = config_dir {
            add_under(&d, None, &mut r.dirs);
            want(&mut r.wanted, &d, Watch::Full);
        }
        r
    }

    /// The same router for changed interests (a reconciler whose directories change as it
    /// works: an inbox's client subfolders); the looks queued stay queued.
    pub fn reinterest(&mut self, interests: &[Vec<Interest>]) {
        let queue = std::mem::take(&mut self.queue);
        *self = Router::new(&self.config, interests);
        self.queue = queue;
    }

    /// The directories to watch, and how.
    pub fn wanted(&self) -> &BTreeMap<PathBuf, Watch> {
        &self.wanted
    }

    /// Routes an event at `path`.
    pub fn event(&mut self, path: &Path, kind: Kind) -> Routed {
        let Router { dirs, queue, .. } = self;
        let at = dirs.get(path);
        let routed = Routed {
            reload: path == self.config && config_settled(kind),
            watched_path: at.is_some_and(|r| r.watched_path),
        };
        let Some(parent) = path.parent().and_then(|p| dirs.get(p)) else {
            if kind != Kind::Written {
                full_for(queue, at.map_or(&[], |r| &r.under));
            }
            return routed;
        };
        if kind == Kind::Written {
            // Only the config and `Files` care; for the others the create event already counted.
            full_for(queue, &parent.files);
            return routed;
        }
        // The path is a watched directory or an ancestor: whoever depends on it looks at all.
        full_for(queue, at.map_or(&[], |r| &r.under));
        full_for(queue, &parent.full);
        full_for(queue, &parent.files);
        if let (false, Some(name)) = (parent.names.is_empty(), path.file_name()) {
            let gone = matches!(kind, Kind::Removed | Kind::Renamed);
            for &id in &parent.names {
                let look = queue.entry(id).or_insert_with(|| Look::Names(Names::default()));
                if let Look::Names(n) = look {
                    n.all.insert(name.to_owned());
                    if gone {
                        n.gone.insert(name.to_owned());
                    }
                }
            }
        }
        routed
    }

    /// A full pass for `id` (a timer, an escalation).
    pub fn full(&mut self, id: Id) {
        self.queue.insert(id, Look::Full);
    }

    /// A full pass for every reconciler (start-up, reload, resync, overflow).
    pub fn full_all(&mut self, count: usize) {
        for id in 0..count {
            self.full(id);
        }
    }

    /// A watch was just added at `path`: what happened under it before produced no event, so
    /// whoever has a directory at or under it looks at all.
    pub fn watch_added(&mut self, path: &Path) {
        if let Some(r) = self.dirs.get(path) {
            full_for(&mut self.queue, &r.under);
        }
    }

    /// Whether anything is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The looks queued, in reconciler order; the queue is empty after.
    pub fn take(&mut self) -> BTreeMap<Id, Look> {
        std::mem::take(&mut self.queue)
    }
}

/// A full pass for each of `ids`.
fn full_for(queue: &mut BTreeMap<Id, Look>, ids: &[Id]) {
    for &id in ids {
        queue.insert(id, Look::Full);
    }
}

/// Whether an event on the config file means it is complete and should be read: closed after
/// writing, renamed onto its name (an editor's atomic save) or removed. A write in progress is
/// not: reading it then would log a bogus error.
fn config_settled(kind: Kind) -> bool {
    matches!(kind, Kind::Written | Kind::Renamed | Kind::Removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn farm(t: &str, l: &str) -> Vec<Interest> {
        vec![
            Interest {
                dir: t.into(),
                role: Role::Full,
            },
            Interest {
                dir: l.into(),
                role: Role::Names,
            },
        ]
    }

    fn names(all: &[&str], gone: &[&str]) -> Look {
        Look::Names(Names {
            all: all.iter().map(OsString::from).collect(),
            gone: gone.iter().map(OsString::from).collect(),
        })
    }

    #[test]
    fn a_file_written_in_an_inbox_folder_is_a_full_look_and_interests_can_change() {
        let inbox = |dirs: &[&str]| -> Vec<Interest> {
            dirs.iter()
                .map(|d| Interest {
                    dir: d.into(),
                    role: Role::Files,
                })
                .collect()
        };
        let mut r = Router::new(
            Path::new("/etc/lf/c.yaml"),
            &[farm("/t", "/l"), inbox(&["/i/loras"])],
        );
        // A file written in a farm's link_dir is nothing new (its creation counted already);
        // in an inbox folder it is the upload finished.
        r.event(Path::new("/l/a"), Kind::Written);
        assert!(r.is_empty());
        r.event(Path::new("/i/loras/x.safetensors"), Kind::Written);
        assert_eq!(r.take(), BTreeMap::from([(1, Look::Full)]));
        r.event(Path::new("/i/loras/x.safetensors"), Kind::Renamed);
        assert_eq!(r.take(), BTreeMap::from([(1, Look::Full)]));
        // A client subfolder appears: the inbox's interests grow, a queued look survives.
        r.event(Path::new("/i/loras/styles"), Kind::Created);
        r.reinterest(&[farm("/t", "/l"), inbox(&["/i/loras", "/i/loras/styles"])]);
        assert!(r.wanted().contains_key(Path::new("/i/loras/styles")));
        assert_eq!(r.take(), BTreeMap::from([(1, Look::Full)]));
        r.event(Path::new("/i/loras/styles/y.safetensors"), Kind::Written);
        assert_eq!(r.take(), BTreeMap::from([(1, Look::Full)]));
    }

    #[test]
    fn a_name_in_link_dir_is_a_spot_look_and_full_absorbs_names() {
        let mut r = Router::new(
            Path::new("/etc/lf/c.yaml"),
            &[farm("/t", "/l"), farm("/t2", "/l2")],
        );
        assert_eq!(r.event(Path::new("/l/a"), Kind::Removed), Routed::default());
        r.event(Path::new("/l/b"), Kind::Created);
        assert_eq!(r.take(), BTreeMap::from([(0, names(&["a", "b"], &["a"]))]));
        r.event(Path::new("/l/a"), Kind::Removed);
        r.event(Path::new("/t/x"), Kind::Created);
        r.event(Path::new("/l/b"), Kind::Created);
        assert_eq!(r.take(), BTreeMap::from([(0, Look::Full)]));
    }

    #[test]
    fn a_shared_link_dir_routes_to_every_farm_that_has_it() {
        let mut r = Router::new(
            Path::new("/c.yaml"),
            &[farm("/t", "/l"), farm("/t", "/l"), farm("/u", "/m")],
        );
        r.event(Path::new("/l/a"), Kind::Removed);
        let look = names(&["a"], &["a"]);
        assert_eq!(r.take(), BTreeMap::from([(0, look.clone()), (1, look)]));
        r.event(Path::new("/t/new"), Kind::Created);
        assert_eq!(r.take(), BTreeMap::from([(0, Look::Full), (1, Look::Full)]));
    }

    #[test]
    fn a_watched_directory_or_its_ancestor_is_a_full_look_and_a_watch_matter() {
        let mut r = Router::new(Path::new("/c.yaml"), &[farm("/srv/t", "/srv/m/l")]);
        let routed = r.event(Path::new("/srv/m"), Kind::Renamed);
        assert!(routed.watched_path);
        assert_eq!(r.take(), BTreeMap::from([(0, Look::Full)]));
        assert!(r.event(Path::new("/srv"), Kind::Changed).watched_path);
        r.take();
        // Unrelated paths route nowhere.
        assert!(!r.event(Path::new("/srv/m/other/x"), Kind::Created).watched_path);
        assert!(!r.event(Path::new("/srv/x"), Kind::Created).watched_path);
        assert!(r.is_empty());
    }

    #[test]
    fn the_config_is_reloaded_only_once_it_is_complete_and_written_routes_no_pass() {
        let mut r = Router::new(Path::new("/e/c.yaml"), &[farm("/t", "/l")]);
        assert!(!r.event(Path::new("/e/c.yaml"), Kind::Created).reload);
        assert!(r.event(Path::new("/e/c.yaml"), Kind::Written).reload);
        assert!(r.event(Path::new("/e/c.yaml"), Kind::Renamed).reload);
        r.event(Path::new("/l/a"), Kind::Written);
        assert!(r.is_empty());
    }
}
