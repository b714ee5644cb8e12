//! The inboxes in the daemon and in `apply` (SPEC §10): one pass over an inbox looks at every
//! candidate, waits for the unfinished ones, and carries each finished one through take → worker
//! → scanner → re-check → accept or refuse, logging every decision to journald and to the upload
//! log. [`Service`] runs the passes on a thread of their own, so that checking and hashing never
//! delay a link repair; the daemon's loop drives them like the farms (`daemon::inbox::InboxRt`:
//! it watches the folders, routes their events, keeps the settle times) and the thread answers
//! each pass with the inbox's [`InboxPlan`].
//!
//! Decisions are `linkfarm_core::inbox::decide`'s, moves are `linkfarm_fs::inbox`'s, content is
//! judged by the unprivileged worker (`crate::worker`): this module only sequences them and
//! keeps the per-file retry times. Nothing here reads a client's bytes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use linkfarm_core::inbox::decide::{
    decide, folders, look, record, refused_name, unchanged, why_text, Decision, Facts, Look, Record, Refusal,
    ScanVerdict, WorkerVerdict,
};
use linkfarm_core::inbox::{CheckKind, Inbox};
use linkfarm_core::time::rfc3339;
use linkfarm_core::Config;
use linkfarm_fs::inbox::{InboxFs, NotMoved, NotTaken, Seen, Taken};
use serde_json::{json, Value};
use tracing::{debug, error, info, warn};

use crate::metrics::{InboxCounts, InboxSample};
use crate::scanner::{retry_after, scan, Scan, SCAN_TIMEOUT};
use crate::worker::{self, Request, Spawn};

/// How many recent decisions an inbox keeps for `status`.
const LAST: usize = 10;

/// What `status` shows of one inbox.
#[derive(Debug, Clone, Default)]
pub struct InboxStatus {
    /// Files waiting (not settled, being written, or retried after a failed check).
    pub pending: usize,
    /// Accepted since start.
    pub accepted: u64,
    /// Refused since start.
    pub refused: u64,
    /// Decisions since start per `(result, reason)`, for the metrics.
    pub files: InboxCounts,
    /// Bytes accepted since start.
    pub accepted_bytes: u64,
    /// Things left where they are (symlinks, FIFOs, a folder that is not one), and failures.
    pub findings: Vec<String>,
    /// Whether a folder of the inbox is in conflict (something not a folder at `dir/<folder>`).
    pub conflict: bool,
    /// The last decisions, newest last, as upload log lines.
    pub last: VecDeque<Value>,
}

impl InboxStatus {
    /// As JSON for the state file and `--json`.
    pub fn json(&self, name: &str) -> Value {
        json!({
            "name": name,
            "pending": self.pending,
            "accepted": self.accepted,
            "refused": self.refused,
            "conflict": self.conflict,
            "findings": self.findings,
            "last": self.last,
        })
    }
}

/// The longest wait between two tries to list a target_dir that could not be listed.
const UNLISTED_MAX: Duration = Duration::from_secs(60);

/// One inbox, opened, with its retry times.
pub struct Runner {
    fs: InboxFs,
    spawn: Spawn,
    upload_log: PathBuf,
    /// Per file (folder, relative path): failures in a row and when to try again.
    retries: HashMap<(String, PathBuf), (u32, SystemTime)>,
    /// What the last pass found.
    pub status: InboxStatus,
    /// Subfolders seen by the last pass (absolute), for the watches.
    pub dirs: Vec<PathBuf>,
    /// While target_dir cannot be listed (renamed away, a volume not mounted): the wait before
    /// the next try, 1 s doubling up to [`UNLISTED_MAX`]. Nothing on disk announces its return.
    unlisted: Option<Duration>,
}

/// What one pass says about when to look again.
#[derive(Debug, Default)]
pub struct PassOut {
    /// The earliest time a waiting file settles or a retry is due.
    pub next: Option<SystemTime>,
    /// Decisions made.
    pub decisions: usize,
}

impl PassOut {
    fn wake(&mut self, at: SystemTime) {
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }
}

impl Runner {
    /// Opens the inbox (its dir and private dir) and returns every file a crash left in the
    /// private directory to where it came from.
    pub fn open(inbox: &Inbox, upload_log: &Path, spawn: Spawn) -> Result<Runner, linkfarm_fs::FsError> {
        let mut fs = InboxFs::open(inbox)?;
        let (back, errors) = fs.recover();
        for p in back {
            info!(inbox = %inbox.name, file = %p.display(), "returned a file left in the private directory to the inbox");
        }
        for e in errors {
            error!(inbox = %inbox.name, "cannot return a file from the private directory: {e}");
        }
        Ok(Runner {
            fs,
            spawn,
            upload_log: upload_log.to_owned(),
            retries: HashMap::new(),
            status: InboxStatus::default(),
            dirs: Vec::new(),
            unlisted: None,
        })
    }

    /// The inbox.
    pub fn inbox(&self) -> &Inbox {
        self.fs.inbox()
    }

    /// One pass at `now`: every folder kept present, every candidate looked at and, once
    /// complete, decided. Blocks while workers and the scanner run.
    pub fn pass(&mut self, now: SystemTime) -> PassOut {
        let mut out = PassOut::default();
        let inbox = self.fs.inbox().clone();
        let subdirs = match inbox.explicit() {
            Some(_) => Vec::new(),
            None => match self.fs.target_subdirs() {
                Ok(s) => s,
                Err(e) => {
                    self.status.findings = vec![format!("{e}")];
                    let wait = self
                        .unlisted
                        .map_or(Duration::from_secs(1), |w| (w * 2).min(UNLISTED_MAX));
                    warn!(inbox = %inbox.name, "cannot list target_dir: {e}; trying again in {}s", wait.as_secs());
                    self.unlisted = Some(wait);
                    out.wake(now + wait);
                    return out;
                }
            },
        };
        self.unlisted = None;
        let mut findings = Vec::new();
        let mut pending = 0;
        let mut conflict = false;
        let mut dirs = Vec::new();
        for folder in folders(&inbox, &subdirs) {
            if let Err(e) = self.fs.ensure_folder(&folder) {
                conflict = true;
                findings.push(e.to_string());
                continue;
            }
            let walk = self.fs.walk(&folder);
            let base = inbox.dir.join(&folder.folder);
            dirs.push(base.clone());
            dirs.extend(walk.dirs.iter().map(|d| base.join(d)));
            findings.extend(walk.errors.iter().map(ToString::to_string));
            for seen in &walk.seen {
                self.handle(&inbox, seen, now, &mut out, &mut pending, &mut findings);
            }
            for empty in &walk.empty_dirs {
                match linkfarm_core::inbox::decide::settled_at(empty.mtime, empty.ctime, inbox.settle, now) {
                    Some(until) => out.wake(until),
                    None => match self.fs.remove_empty(empty) {
                        Ok(true) => {
                            debug!(inbox = %inbox.name, "removed the emptied folder {}", base.join(&empty.rel).display())
                        }
                        Ok(false) => {}
                        Err(e) => findings.push(e.to_string()),
                    },
                }
            }
        }
        if inbox.explicit().is_none() {
            let (found, watch) = self.orphans(&inbox, &subdirs);
            findings.extend(found);
            // Watched too: a file dropped there later is reported at once.
            dirs.extend(watch);
        }
        self.retries
            .retain(|_, (_, until)| *until > now - Duration::from_secs(3600));
        self.status.pending = pending;
        self.status.findings = findings;
        self.status.conflict = conflict;
        self.dirs = dirs;
        out
    }

    /// Folders of `dir` that are no inbox folder any more: under `folders: "*"` their model
    /// folder was renamed or removed. Nothing in them is looked at; those holding uploads are
    /// reported (a finding in `check` and `status`), never moved. Returns the findings and every
    /// such folder (to watch).
    fn orphans(&self, inbox: &Inbox, subdirs: &[std::ffi::OsString]) -> (Vec<String>, Vec<PathBuf>) {
        let refused_top = inbox.refused_top();
        let (mut out, mut watch) = (Vec::new(), Vec::new());
        for name in self.fs.dir_folders() {
            if subdirs.contains(&name) || Some(&name) == refused_top.as_ref() {
                continue;
            }
            let Some(folder) = name.to_str() else { continue };
            watch.push(inbox.dir.join(folder));
            let f = linkfarm_core::inbox::InboxFolder {
                folder: folder.to_owned(),
                target: folder.to_owned(),
            };
            let files = self.fs.walk(&f).seen.len();
            if files > 0 {
                out.push(orphan_finding(inbox, folder.as_ref(), files));
            }
        }
        (out, watch)
    }

    fn handle(
        &mut self,
        inbox: &Inbox,
        seen: &Seen,
        now: SystemTime,
        out: &mut PassOut,
        pending: &mut usize,
        findings: &mut Vec<String>,
    ) {
        let key = (seen.folder.folder.clone(), seen.rel.clone());
        let path = inbox.dir.join(&seen.folder.folder).join(&seen.rel);
        if let Some((_, until)) = self.retries.get(&key) {
            if *until > now {
                *pending += 1;
                out.wake(*until);
                return;
            }
        }
        let name = seen.rel.file_name().unwrap_or_default();
        let mut looked = look(inbox, name, &seen.candidate, now);
        if !matches!(looked, Look::Wait { .. } | Look::Leave(_)) {
            // Settled: is a writer still holding it? Tested in place, before any move.
            let mut c = seen.candidate;
            c.writer = self.fs.writer_in_place(seen).unwrap_or(false);
            if c.writer {
                looked = look(inbox, name, &c, now);
            }
        }
        match looked {
            Look::Wait { until } => {
                *pending += 1;
                out.wake(until);
            }
            Look::Leave(t) => findings.push(format!(
                "{}: a {}, left where it is (never opened, followed or moved)",
                path.display(),
                t.as_str()
            )),
            Look::Refuse(refusal) => {
                if let Some(taken) = self.take(seen, &path, now, out, pending) {
                    self.refuse(inbox, seen, taken, refusal, None, now, out);
                }
            }
            Look::Take(expected) => {
                let Some(taken) = self.take(seen, &path, now, out, pending) else {
                    return;
                };
                if taken.writer {
                    // Open for writing although untouched for settle: a slow writer. Back, later.
                    self.put_back(taken);
                    *pending += 1;
                    out.wake(now + inbox.settle.max(Duration::from_secs(1)));
                    return;
                }
                let req = Request {
                    format: expected.name().to_owned(),
                    folder: seen.folder.target.clone(),
                    companion_max_size: inbox.companion_max_size,
                };
                let checked = match worker::check(&self.spawn, &taken.fd, taken.stamp.size, &req) {
                    Ok(c) => c,
                    Err(f) => {
                        warn!(inbox = %inbox.name, file = %path.display(), "{f}; the file waits and is checked again later");
                        self.put_back(taken);
                        self.retry(key, now, out, pending);
                        return;
                    }
                };
                let scan_verdict = match &checked.verdict {
                    WorkerVerdict::Passed { kind_mismatch, .. } if needs_scan(inbox, *kind_mismatch) => {
                        match scan(&inbox.scanner, &taken.private_path, &taken.fd, SCAN_TIMEOUT) {
                            Scan::Clean => ScanVerdict::Clean,
                            Scan::Refused(line) => ScanVerdict::Refused(line),
                            Scan::Failed(why) => {
                                warn!(inbox = %inbox.name, file = %path.display(), "the scanner failed: {why}; the file waits");
                                self.put_back(taken);
                                self.retry(key, now, out, pending);
                                return;
                            }
                        }
                    }
                    _ => ScanVerdict::NotRun,
                };
                match self.fs.restat(&taken) {
                    Ok((stamp, writer)) if unchanged(&taken.stamp, &stamp, writer) => {}
                    Ok(_) => {
                        debug!(inbox = %inbox.name, file = %path.display(), "changed while it was checked; back to the inbox");
                        self.put_back(taken);
                        *pending += 1;
                        out.wake(now + inbox.settle.max(Duration::from_secs(1)));
                        return;
                    }
                    Err(e) => {
                        warn!(inbox = %inbox.name, "{e}");
                        self.put_back(taken);
                        self.retry(key, now, out, pending);
                        return;
                    }
                }
                self.retries.remove(&key);
                self.decide_and_move(inbox, seen, taken, &checked.verdict, &scan_verdict, now, out);
            }
        }
    }

    fn retry(&mut self, key: (String, PathBuf), now: SystemTime, out: &mut PassOut, pending: &mut usize) {
        let e = self.retries.entry(key).or_insert((0, now));
        e.0 += 1;
        e.1 = now + retry_after(e.0);
        out.wake(e.1);
        *pending += 1;
    }

    fn take(
        &mut self,
        seen: &Seen,
        path: &Path,
        now: SystemTime,
        out: &mut PassOut,
        pending: &mut usize,
    ) -> Option<Taken> {
        match self.fs.take(seen) {
            Ok(t) => Some(t),
            Err(NotTaken::Raced(why)) => {
                debug!("{}: {why}; looked at again", path.display());
                out.wake(now + Duration::from_secs(1));
                None
            }
            Err(NotTaken::Busy) => {
                *pending += 1;
                out.wake(now + Duration::from_secs(10));
                None
            }
            Err(NotTaken::Failed(e)) => {
                warn!("{e}");
                self.retry((seen.folder.folder.clone(), seen.rel.clone()), now, out, pending);
                None
            }
        }
    }

    fn put_back(&mut self, taken: Taken) {
        let from = taken.private_path.clone();
        if let Err(e) = self.fs.put_back(taken) {
            error!(
                "cannot return {} to the inbox: {e}; it stays in the private directory and returns at the next start",
                from.display()
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_and_move(
        &mut self,
        inbox: &Inbox,
        seen: &Seen,
        taken: Taken,
        verdict: &WorkerVerdict,
        scan_verdict: &ScanVerdict,
        now: SystemTime,
        out: &mut PassOut,
    ) {
        let name = seen.rel.file_name().unwrap_or_default().to_owned();
        // A name that appears between the decision and the move is met by the move (it never
        // replaces) and decided again.
        for _ in 0..3 {
            let fs = &self.fs;
            let d = decide(
                inbox,
                &seen.folder,
                &name,
                verdict,
                scan_verdict,
                &|n| fs.exists_at(false, &seen.folder, &seen.rel, n),
                &|n| fs.exists_at(true, &seen.folder, &seen.rel, n),
            );
            match &d {
                Decision::Accept {
                    name: to,
                    kind_warning,
                } => match self.fs.accept(&taken, to) {
                    Ok(_) => {
                        if let Some(w) = kind_warning {
                            warn!(inbox = %inbox.name, file = %seen.rel.display(), "{w}");
                        }
                        self.log(inbox, seen, &taken, &d, Some(verdict), now);
                        out.decisions += 1;
                        return;
                    }
                    Err(NotMoved::Exists) => continue,
                    Err(NotMoved::Failed(e)) if e.errno == nix::errno::Errno::ENOENT => {
                        // The model folder was renamed or removed since the look (an admin at
                        // work, a volume going away): a race the next look settles, not a fault.
                        warn!(inbox = %inbox.name, "cannot accept: {e}; the file goes back to the inbox and is looked at again");
                        break;
                    }
                    Err(NotMoved::Failed(e)) => {
                        error!(inbox = %inbox.name, "cannot accept: {e}; the file goes back to the inbox");
                        break;
                    }
                },
                Decision::Refuse { refusal, .. } => {
                    let refusal = refusal.clone();
                    self.refuse(inbox, seen, taken, refusal, Some(verdict), now, out);
                    return;
                }
            }
        }
        self.put_back(taken);
        let mut pending = 0;
        self.retry(
            (seen.folder.folder.clone(), seen.rel.clone()),
            now,
            out,
            &mut pending,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        inbox: &Inbox,
        seen: &Seen,
        taken: Taken,
        refusal: Refusal,
        verdict: Option<&WorkerVerdict>,
        now: SystemTime,
        out: &mut PassOut,
    ) {
        let name = seen.rel.file_name().unwrap_or_default();
        let why = why_text(&seen.folder, &seen.rel, &refusal);
        for _ in 0..3 {
            let fs = &self.fs;
            let to = refused_name(name, &|n| fs.exists_at(true, &seen.folder, &seen.rel, n));
            match self.fs.refuse(&taken, &to, &why) {
                Ok(_) => {
                    let d = Decision::Refuse {
                        name: to,
                        refusal: refusal.clone(),
                    };
                    self.log(inbox, seen, &taken, &d, verdict, now);
                    out.decisions += 1;
                    return;
                }
                Err(NotMoved::Exists) => continue,
                Err(NotMoved::Failed(e)) if e.op == "create" || e.op == "write" => {
                    // The file is refused; only its explanation is missing.
                    error!(inbox = %inbox.name, "the refused file's .why.txt could not be written: {e}");
                    let d = Decision::Refuse { name: to, refusal };
                    self.log(inbox, seen, &taken, &d, verdict, now);
                    out.decisions += 1;
                    return;
                }
                Err(NotMoved::Failed(e)) => {
                    error!(inbox = %inbox.name, "cannot refuse: {e}; the file goes back to the inbox");
                    break;
                }
            }
        }
        self.put_back(taken);
        let mut pending = 0;
        self.retry(
            (seen.folder.folder.clone(), seen.rel.clone()),
            now,
            out,
            &mut pending,
        );
    }

    /// One journald record (INFO accept, WARN refuse) and one upload log line per decision.
    fn log(
        &mut self,
        inbox: &Inbox,
        seen: &Seen,
        taken: &Taken,
        d: &Decision,
        verdict: Option<&WorkerVerdict>,
        now: SystemTime,
    ) {
        let facts = Facts {
            folder: &seen.folder,
            rel: &seen.rel,
            size: taken.stamp.size,
            uid: seen.uid,
            format: linkfarm_core::inbox::decide::expected(inbox, seen.rel.file_name().unwrap_or_default())
                .map(|e| e.name().to_owned()),
        };
        let r: Record = record(inbox, &facts, d, verdict);
        let web_user = linkfarm_fs::inbox::web_user(taken);
        let line = json!({
            "time": rfc3339(now),
            "inbox": r.inbox,
            "folder": r.folder,
            "file": r.file,
            "action": r.action,
            "reason": r.reason.as_str(),
            "format": r.format,
            "kind": r.kind,
            "size": r.size,
            "sha256": r.sha256,
            "uid": r.uid,
            "target": r.target.to_string_lossy(),
            "web_user": web_user,
        });
        let (format, kind, sha) = (
            r.format.as_deref().unwrap_or(""),
            r.kind.as_deref().unwrap_or(""),
            r.sha256.as_deref().unwrap_or(""),
        );
        let wu = web_user.as_deref().unwrap_or("");
        let target = r.target.display();
        *self
            .status
            .files
            .entry((r.action, r.reason.as_str()))
            .or_default() += 1;
        if r.action == "accept" {
            self.status.accepted += 1;
            self.status.accepted_bytes += r.size;
            info!(inbox = %r.inbox, folder = %r.folder, file = %r.file, action = r.action, reason = r.reason.as_str(),
                format, kind, size = r.size, sha256 = sha, uid = r.uid, target = %target, web_user = wu,
                "accepted {}/{} into {target}", r.folder, r.file);
        } else {
            self.status.refused += 1;
            let message = match d {
                Decision::Refuse { refusal, .. } => refusal.message.as_str(),
                Decision::Accept { .. } => "",
            };
            warn!(inbox = %r.inbox, folder = %r.folder, file = %r.file, action = r.action, reason = r.reason.as_str(),
                format, kind, size = r.size, sha256 = sha, uid = r.uid, target = %target, web_user = wu,
                "refused {}/{} ({}): {message}", r.folder, r.file, r.reason.as_str());
        }
        if let Err(e) = append_line(&self.upload_log, &line) {
            error!(
                "cannot append to the upload log {}: {e}",
                self.upload_log.display()
            );
        }
        self.status.last.push_back(line);
        while self.status.last.len() > LAST {
            self.status.last.pop_front();
        }
    }
}

/// Whether check 5 runs: a scanner is set and check 4 did not already refuse the file.
fn needs_scan(inbox: &Inbox, kind_mismatch: bool) -> bool {
    let kind_refused = kind_mismatch && inbox.check_kind == CheckKind::Refuse;
    !inbox.scanner.is_empty() && !kind_refused
}

/// The group that may read the upload log: `linkfarm web` shows each upload's decision from it,
/// and runs as the packages' user `linkfarm-web` (SPEC §13). None where that group does not exist.
pub const WEB_GROUP: &str = "linkfarm-web";

fn web_gid() -> Option<nix::unistd::Gid> {
    static GID: std::sync::OnceLock<Option<nix::unistd::Gid>> = std::sync::OnceLock::new();
    *GID.get_or_init(|| {
        nix::unistd::Group::from_name(WEB_GROUP)
            .ok()
            .flatten()
            .map(|g| g.gid)
    })
}

/// Appends one JSON line to the upload log (made, with its folder, when missing; mode 0640, group
/// `linkfarm-web` where that group exists, so that the web service can read its decisions).
fn append_line(path: &Path, line: &Value) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    if let Some(gid) = web_gid() {
        // Also a log made before the group existed (an upgrade). Through the open fd: the name
        // may be replaced meanwhile, the file we write to is this one.
        if f.metadata().is_ok_and(|m| m.gid() != gid.as_raw()) {
            if let Err(e) = nix::unistd::fchown(&f, None, Some(gid)) {
                debug!("cannot give {} the group {WEB_GROUP}: {e}", path.display());
            }
        }
    }
    let mut text = line.to_string();
    text.push('\n');
    // One write call per line: concurrent appenders (two daemons) never interleave a line.
    f.write_all(text.as_bytes())
}

/// Where the daemon writes its inboxes' status: beside the state file (`state.json` →
/// `state.inboxes.json`).
pub fn status_file(state_file: &Path) -> PathBuf {
    let stem = state_file
        .file_stem()
        .unwrap_or(OsStr::new("state"))
        .to_string_lossy();
    state_file.with_file_name(format!("{stem}.inboxes.json"))
}

/// The inbox pass of `apply`: opens every inbox, makes one pass, and returns each one's status
/// (or the error that kept it closed).
pub fn apply_once(config: &Config, now: SystemTime) -> Vec<(String, Result<InboxStatus, String>)> {
    let spawn = match Spawn::this_binary() {
        Ok(s) => s,
        Err(e) => {
            return config
                .inboxes
                .iter()
                .map(|i| (i.name.clone(), Err(format!("cannot find the worker: {e}"))))
                .collect()
        }
    };
    config
        .inboxes
        .iter()
        .map(|i| {
            let r = Runner::open(i, &config.settings.upload_log, spawn.clone()).map(|mut r| {
                r.pass(now);
                r.status
            });
            (i.name.clone(), r.map_err(|e| e.to_string()))
        })
        .collect()
}

/// A hint for the service thread.
enum Hint {
    /// A look at this inbox (the daemon's loop routed an event or a timer to it).
    Look(String),
    /// A new config (after a reload): every inbox is opened again and looked at.
    Config(Box<Config>),
    /// Stop after the file in progress.
    Stop,
}

/// What the loop needs to drive one inbox as a reconciler, after each of its passes: the
/// folders to watch and when to look again without an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxPlan {
    /// The inbox's name.
    pub name: String,
    /// Its folders and their subfolders, as the last pass walked them.
    pub dirs: Vec<PathBuf>,
    /// The earliest time a waiting file settles, a retry is due or target_dir is tried again.
    pub next: Option<SystemTime>,
}

/// The inboxes of the daemon: their passes run on a thread of their own (a check that waits for
/// a worker or the scanner never delays a repair), driven by the daemon's loop, which watches
/// their folders, routes the events and keeps their timers (`daemon::InboxRt`).
pub struct Service {
    tx: mpsc::Sender<Hint>,
    thread: std::thread::JoinHandle<()>,
    samples: Samples,
    plans: Plans,
}

/// The inboxes' numbers for the metrics, as the inbox thread last sent them: a new value only
/// when a number changed, so an idle inbox never wakes the daemon's loop.
pub type Samples = tokio::sync::watch::Receiver<Vec<InboxSample>>;

/// The inboxes' plans, as the inbox thread last sent them (a new value only when one changed).
pub type Plans = tokio::sync::watch::Receiver<Vec<InboxPlan>>;

/// Sends hints to the service thread; cheap to clone, one per inbox reconciler.
#[derive(Clone)]
pub struct Hints(mpsc::Sender<Hint>);

impl Hints {
    /// Asks for a pass over inbox `name`. Never blocks: the thread takes hints between passes,
    /// and hints that queue up meanwhile make one pass.
    pub fn look(&self, name: &str) {
        let _ = self.0.send(Hint::Look(name.to_owned()));
    }
}

impl Service {
    /// Starts the thread for `config`'s inboxes. It blocks until the first hint: the loop's
    /// first look at each inbox.
    pub fn start(config: &Config, spawn: Spawn) -> std::io::Result<Service> {
        let (tx, rx) = mpsc::channel();
        let (samples_tx, samples) = tokio::sync::watch::channel(zero_samples(config));
        let (plans_tx, plans) = tokio::sync::watch::channel(Vec::new());
        let config = config.clone();
        let thread = std::thread::Builder::new()
            .name("inboxes".into())
            .spawn(move || service(config, spawn, &rx, &samples_tx, &plans_tx))?;
        Ok(Service {
            tx,
            thread,
            samples,
            plans,
        })
    }

    /// The inboxes' numbers for the metrics; the value changes when a number does.
    pub fn samples(&self) -> Samples {
        self.samples.clone()
    }

    /// The inboxes' plans; the value changes when a plan does.
    pub fn plans(&self) -> Plans {
        self.plans.clone()
    }

    /// Where to send looks.
    pub fn hints(&self) -> Hints {
        Hints(self.tx.clone())
    }

    /// Hands a reloaded config over.
    pub fn reload(&self, config: &Config) {
        let _ = self.tx.send(Hint::Config(Box::new(config.clone())));
    }

    /// Stops after the file in progress, and waits.
    pub fn stop(self) {
        let _ = self.tx.send(Hint::Stop);
        let _ = self.thread.join();
    }
}

fn open_runners(config: &Config, spawn: &Spawn) -> BTreeMap<String, Runner> {
    let mut out = BTreeMap::new();
    for i in &config.inboxes {
        match Runner::open(i, &config.settings.upload_log, spawn.clone()) {
            Ok(r) => {
                out.insert(i.name.clone(), r);
            }
            Err(e) => error!(inbox = %i.name, "inbox not started: {e}"),
        }
    }
    out
}

/// Every configured inbox's numbers at 0: what the metrics show before the inbox thread's first
/// pass, so that the first file written already has every inbox counter.
pub fn zero_samples(config: &Config) -> Vec<InboxSample> {
    samples_of(config, &BTreeMap::new())
}

/// Every configured inbox's numbers (0 for one that is not open), in config order.
fn samples_of(config: &Config, runners: &BTreeMap<String, Runner>) -> Vec<InboxSample> {
    config
        .inboxes
        .iter()
        .map(|i| match runners.get(&i.name) {
            Some(r) => InboxSample {
                name: i.name.clone(),
                files: r.status.files.clone(),
                pending: r.status.pending as u64,
                accepted_bytes: r.status.accepted_bytes,
            },
            None => InboxSample {
                name: i.name.clone(),
                ..InboxSample::default()
            },
        })
        .collect()
}

/// Sends `new` when it differs from what the receiver has (only then is the loop woken).
fn send_changed<T: PartialEq>(tx: &tokio::sync::watch::Sender<T>, new: T) {
    tx.send_if_modified(|cur| {
        let changed = *cur != new;
        if changed {
            *cur = new;
        }
        changed
    });
}

/// The runners of a reloaded config; an inbox that stays keeps its counters (they are counters
/// since the daemon's start, as the farms' are).
fn reopen(config: &Config, spawn: &Spawn, old: BTreeMap<String, Runner>) -> BTreeMap<String, Runner> {
    let mut runners = open_runners(config, spawn);
    for (name, r) in &mut runners {
        if let Some(o) = old.get(name) {
            r.status.accepted = o.status.accepted;
            r.status.refused = o.status.refused;
            r.status.files = o.status.files.clone();
            r.status.accepted_bytes = o.status.accepted_bytes;
        }
    }
    runners
}

/// The service thread: waits for hints (it has no timer and no watch of its own, so an idle
/// inbox costs no wake-up), makes the passes they ask for, and reports each inbox's plan.
fn service(
    mut config: Config,
    spawn: Spawn,
    rx: &mpsc::Receiver<Hint>,
    samples: &tokio::sync::watch::Sender<Vec<InboxSample>>,
    plans: &tokio::sync::watch::Sender<Vec<InboxPlan>>,
) {
    let mut runners = open_runners(&config, &spawn);
    // What each runner's last pass said about when to look again.
    let mut next: BTreeMap<String, Option<SystemTime>> = BTreeMap::new();
    let mut wanted: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let take = |hint: Hint,
                wanted: &mut std::collections::BTreeSet<String>,
                config: &mut Config,
                runners: &mut BTreeMap<String, Runner>|
     -> bool {
        match hint {
            Hint::Stop => return false,
            Hint::Look(name) => {
                wanted.insert(name);
            }
            Hint::Config(c) => {
                *config = *c;
                *runners = reopen(config, &spawn, std::mem::take(runners));
                wanted.extend(runners.keys().cloned());
            }
        }
        true
    };
    while let Ok(hint) = rx.recv() {
        if !take(hint, &mut wanted, &mut config, &mut runners) {
            return;
        }
        // Hints that came meanwhile join this round: one pass per inbox for a burst.
        while let Ok(hint) = rx.try_recv() {
            if !take(hint, &mut wanted, &mut config, &mut runners) {
                return;
            }
        }
        let now = SystemTime::now();
        for name in std::mem::take(&mut wanted) {
            if let Some(r) = runners.get_mut(&name) {
                next.insert(name, r.pass(now).next);
            }
        }
        next.retain(|n, _| runners.contains_key(n));
        write_status(&config, &runners);
        send_changed(samples, samples_of(&config, &runners));
        let p = runners
            .iter()
            .map(|(name, r)| InboxPlan {
                name: name.clone(),
                dirs: r.dirs.clone(),
                next: next.get(name).copied().flatten(),
            })
            .collect();
        // Sent after every round, changed or not: the loop forgets an inbox's timer when it
        // asks for a look, and the same settle time found again must reach it again.
        plans.send_replace(p);
    }
}

fn write_status(config: &Config, runners: &BTreeMap<String, Runner>) {
    let v = json!({
        "pid": std::process::id(),
        "updated": rfc3339(SystemTime::now()),
        "inboxes": runners.iter().map(|(n, r)| r.status.json(n)).collect::<Vec<_>>(),
    });
    let path = status_file(&config.settings.state_file);
    if let Err(e) = crate::daemon::state::write(&path, &v) {
        debug!("cannot write {}: {e}", path.display());
    }
}

/// What `check` shows of an inbox without touching it: files below its folders (pending),
/// anything that is not a regular file (left), a folder that is not a real directory
/// (conflict). Read-only: nothing is opened but directories, and no symlink is followed.
pub fn survey(inbox: &Inbox) -> InboxStatus {
    let mut st = InboxStatus::default();
    let subdirs: Vec<std::ffi::OsString> = match std::fs::read_dir(&inbox.target_dir) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name())
            .collect(),
        Err(e) => {
            st.findings.push(format!("{}: {e}", inbox.target_dir.display()));
            return st;
        }
    };
    if inbox.explicit().is_none() {
        st.findings.extend(survey_orphans(inbox, &subdirs));
    }
    for f in folders(inbox, &subdirs) {
        let top = inbox.dir.join(&f.folder);
        match std::fs::symlink_metadata(&top) {
            Ok(m) if m.is_dir() => survey_dir(inbox, &top, 0, &mut st),
            Ok(_) => {
                st.conflict = true;
                st.findings.push(format!(
                    "{}: not a folder; never followed or moved: remove it",
                    top.display()
                ));
            }
            Err(_) => st.findings.push(format!(
                "{}: missing (made by apply or the daemon)",
                top.display()
            )),
        }
    }
    st
}

/// The finding for an orphaned folder `name` of `inbox` holding `files` uploads.
fn orphan_finding(inbox: &Inbox, name: &std::ffi::OsStr, files: usize) -> String {
    format!(
        "{}: {files} file(s) wait here, but {} is gone, so nothing in it is looked at: make the \
         model folder again, or move the files into another folder",
        inbox.dir.join(name).display(),
        inbox.target_dir.join(name).display()
    )
}

/// What [`Runner::orphans`] reports, for `check`: read-only, by path.
fn survey_orphans(inbox: &Inbox, subdirs: &[std::ffi::OsString]) -> Vec<String> {
    let refused_top = inbox.refused_top();
    let Ok(rd) = std::fs::read_dir(&inbox.dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        if inbox.ignores(&name)
            || subdirs.contains(&name)
            || Some(&name) == refused_top.as_ref()
            || !e.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let mut files = InboxStatus::default();
        survey_dir(inbox, &e.path(), 0, &mut files);
        if files.pending > 0 {
            out.push(orphan_finding(inbox, &name, files.pending));
        }
    }
    out
}

fn survey_dir(inbox: &Inbox, dir: &Path, depth: usize, st: &mut InboxStatus) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if inbox.ignores(&e.file_name()) {
            continue;
        }
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() && depth < 64 => survey_dir(inbox, &p, depth + 1, st),
            Ok(m) if m.is_file() => st.pending += 1,
            Ok(m) => {
                use std::os::unix::fs::FileTypeExt;
                let t = m.file_type();
                let what = if t.is_symlink() {
                    "symlink"
                } else if t.is_fifo() {
                    "fifo"
                } else if t.is_socket() {
                    "socket"
                } else {
                    "device"
                };
                st.findings.push(format!(
                    "{}: a {what}, left where it is (never opened, followed or moved)",
                    p.display()
                ));
            }
            Err(_) => {}
        }
    }
}

/// One inbox's lines in `check`, `apply` and `status`.
pub fn text(name: &str, v: &Value) -> String {
    let mut out = format!(
        "inbox {name}: {} pending, {} accepted, {} refused{}\n",
        v["pending"],
        v["accepted"],
        v["refused"],
        if v["conflict"] == true { " (conflict)" } else { "" }
    );
    for f in v["findings"].as_array().into_iter().flatten() {
        out += &format!("  ! {}\n", f.as_str().unwrap_or_default());
    }
    for d in v["last"].as_array().into_iter().flatten() {
        out += &format!(
            "  {} {} {}/{} ({}) -> {}\n",
            d["time"].as_str().unwrap_or("?"),
            d["action"].as_str().unwrap_or("?"),
            d["folder"].as_str().unwrap_or("?"),
            d["file"].as_str().unwrap_or("?"),
            d["reason"].as_str().unwrap_or("?"),
            d["target"].as_str().unwrap_or("?"),
        );
    }
    out
}

/// The inboxes in `check` (a survey) and `apply` (one pass each): their JSON, printed as text
/// unless `json_out`, and whether one is in conflict or could not be opened.
pub fn oneshot(config: &Config, apply: bool, json_out: bool) -> (Vec<Value>, bool) {
    let mut trouble = false;
    let results: Vec<(String, Result<InboxStatus, String>)> = if apply {
        apply_once(config, SystemTime::now())
    } else {
        config
            .inboxes
            .iter()
            .map(|i| (i.name.clone(), Ok(survey(i))))
            .collect()
    };
    let mut out = Vec::new();
    for (name, r) in results {
        let v = match r {
            Ok(st) => {
                trouble |= st.conflict;
                st.json(&name)
            }
            Err(e) => {
                trouble = true;
                json!({ "name": name, "error": e })
            }
        };
        if !json_out {
            match v["error"].as_str() {
                Some(e) => println!("inbox {name}: not opened: {e}"),
                None => print!("{}", text(&name, &v)),
            }
        }
        out.push(v);
    }
    (out, trouble)
}

/// The running daemon's inbox status (beside its state file), if it has inboxes.
pub fn read_status(state_file: &Path) -> Option<Vec<Value>> {
    let bytes = std::fs::read(status_file(state_file)).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v["inboxes"].as_array().cloned()
}
