//! An inbox (SPEC §10) as the loop's second kind of [`Reconciler`]: the loop watches its folders
//! and routes their events and its timers like a farm's; a look is handed to the inbox thread
//! ([`crate::inbox::Service`]), which makes the pass off the loop (a check waits for a worker
//! or the scanner) and answers with the inbox's plan: the folders it walked and when a file
//! settles. A look never blocks and never escalates.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use linkfarm_core::inbox::Inbox;

use super::router::{Interest, Look, Role};
use super::{Reconciled, Reconciler, Watched};
use crate::inbox::{Hints, InboxPlan};

/// One inbox, as the loop sees it.
pub struct InboxRt {
    name: String,
    target_dir: PathBuf,
    hints: Hints,
    /// Its folders and subfolders, from the thread's last pass.
    dirs: Vec<PathBuf>,
    /// When its last pass wants another, without an event.
    next: Option<Instant>,
    /// Some folders cannot be watched: looked at every `poll` until they can.
    poll: Duration,
    blind_next: Option<Instant>,
}

impl InboxRt {
    /// The reconciler for `inbox`; its passes go to the thread behind `hints`.
    pub fn new(inbox: &Inbox, hints: Hints, poll: Duration) -> InboxRt {
        InboxRt {
            name: inbox.name.clone(),
            target_dir: inbox.target_dir.clone(),
            hints,
            dirs: Vec::new(),
            next: None,
            poll,
            blind_next: None,
        }
    }

    /// The inbox's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes the thread's plan after a pass; returns whether its directories changed.
    pub fn plan(&mut self, p: &InboxPlan) -> bool {
        let now = (Instant::now(), SystemTime::now());
        self.next = p
            .next
            .map(|t| now.0 + t.duration_since(now.1).unwrap_or_default());
        let changed = self.dirs != p.dirs;
        self.dirs.clone_from(&p.dirs);
        changed
    }
}

impl Reconciler for InboxRt {
    /// Its folders (a file finished there is news: `Files`) and its target_dir (a model folder
    /// made, renamed or removed changes the folders under `folders: "*"`).
    fn interests(&self) -> Vec<Interest> {
        self.dirs
            .iter()
            .map(|d| Interest {
                dir: d.clone(),
                role: Role::Files,
            })
            .chain(std::iter::once(Interest {
                dir: self.target_dir.clone(),
                role: Role::Full,
            }))
            .collect()
    }

    fn reconcile(&mut self, _look: &Look) -> Reconciled {
        // Until the thread answers with a new plan, nothing is due (else the loop would ask
        // again and again for the same look).
        self.next = None;
        self.blind_next = None;
        self.hints.look(&self.name);
        Reconciled {
            publish: false,
            escalate: false,
        }
    }

    fn due(&self) -> Option<Instant> {
        self.next.into_iter().chain(self.blind_next).min()
    }

    fn watched(&mut self, w: Watched, now: Instant) {
        self.blind_next = w.blind.then(|| now + self.poll);
    }
}
