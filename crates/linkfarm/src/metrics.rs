//! Prometheus metrics for node exporter's textfile collector (SPEC §12): renders the daemon's
//! numbers in the text exposition format and replaces `settings.metrics_file` atomically.
//!
//! The daemon hands in plain data (a [`FarmSample`] per farm, each pass's duration) and the time;
//! this module decides whether and when to write: only when a number changed, at most once per
//! [`MIN_INTERVAL`], and a change held back by that limit is written later, never dropped. It
//! never asks to be woken for nothing: [`Metrics::update`] returns the instant at which the loop
//! must call it again, and `None` when nothing is held back, so an idle daemon stays at zero
//! wake-ups. Every pass moves `linkfarm_last_pass_timestamp_seconds` and the pass histogram, so
//! every pass (and every full pass of the resync timer) rewrites the file, which keeps its mtime
//! fresh for the stale alert.
//!
//! It must never create the file's directory: that directory is node exporter's
//! `--collector.textfile.directory`, and a missing one means node exporter is not set up (or
//! reads elsewhere). That is logged once and reported by `doctor`.
//!
//! Inboxes (SPEC §10) are the second kind of sample: an [`InboxSample`] per inbox (files per
//! `(result, reason)` with result = the record's action `accept`/`refuse`, pending, accepted
//! bytes), rendered as `linkfarm_inbox_files_total{inbox,result,reason}`,
//! `linkfarm_inbox_pending{inbox}` and `linkfarm_inbox_accepted_bytes_total{inbox}`, every pair
//! of [`INBOX_FILES`] at 0 from start-up. The inbox thread only hands its samples over (a
//! `tokio::sync::watch` channel, sent to only when a number changed); this module, on the
//! daemon's loop, stays the one writer of the file. The alert rules
//! (`packaging/prometheus/linkfarm.rules.yml`) use these series.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tracing::{debug, info, warn};

/// The shortest time between two writes of the file.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Every state a farm can be in (SPEC §5); `linkfarm_farm_state` carries all of them.
pub const STATES: [&str; 6] = ["converged", "drift", "conflict", "degraded", "flapping", "error"];

/// Every `(action, reason)` pair the daemon logs (SPEC §6): the planner's actions with their
/// reasons, and the quarantine of something that raced in during a replace. Each is exported from
/// start-up at 0, so that `increase()` sees the first repair; a pair outside this list (a new
/// action) is still counted and exported from its first occurrence.
pub const REPAIRS: [(&str, &str); 12] = [
    ("create", "missing"),
    ("create", "adopted"),
    ("replace", "wrong_target"),
    ("replace", "foreign_link"),
    ("remove", "dangling"),
    ("remove", "pruned"),
    ("remove", "leftover"),
    ("chown", "owner"),
    ("mkdir", "absent"),
    ("adopt", "conflict"),
    ("quarantine", "conflict"),
    ("quarantine", "race"),
];

/// Every `(result, reason)` an inbox decision can have (SPEC §10): `accept` is always `valid`
/// (a rename under `on_exists: rename` included), `refuse` has one reason per check. Each is
/// exported from start-up at 0 for every inbox; a pair outside this list is still counted.
pub const INBOX_FILES: [(&str, &str); 9] = [
    ("accept", "valid"),
    ("refuse", "not_plain"),
    ("refuse", "too_large"),
    ("refuse", "format"),
    ("refuse", "corrupt"),
    ("refuse", "unsafe"),
    ("refuse", "kind"),
    ("refuse", "scanner"),
    ("refuse", "exists"),
];

/// Upper bounds of the pass duration buckets, in seconds: a spot pass takes tens of
/// microseconds, a full pass of a large farm on a slow disk seconds.
pub const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// Repairs of one farm, counted per `(action, reason)`.
pub type RepairCounts = BTreeMap<(&'static str, &'static str), u64>;

/// What the metrics say about one farm: plain data copied out of the daemon's runtime.
#[derive(Debug, Clone, Copy)]
pub struct FarmSample<'a> {
    /// The farm's name (free text as far as this module is concerned: it is escaped).
    pub name: &'a str,
    /// One of [`STATES`].
    pub state: &'a str,
    /// Desired links.
    pub links: usize,
    /// Desired links that are right.
    pub links_ok: usize,
    /// Changes made, per `(action, reason)`.
    pub repairs: &'a RepairCounts,
    /// Actions that failed.
    pub failures: u64,
    /// Wall time of the last pass.
    pub last_pass: Option<SystemTime>,
}

/// Decisions of one inbox, counted per `(result, reason)`.
pub type InboxCounts = BTreeMap<(&'static str, &'static str), u64>;

/// What the metrics say about one inbox: owned, as it crosses from the inbox thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxSample {
    /// The inbox's name (escaped when rendered).
    pub name: String,
    /// Files decided, per `(result, reason)`.
    pub files: InboxCounts,
    /// Files waiting.
    pub pending: u64,
    /// Bytes of the files accepted.
    pub accepted_bytes: u64,
}

impl InboxSample {
    /// Every counter of the sample, the fixed pairs of [`INBOX_FILES`] at 0 included, in order.
    pub fn all_files(&self) -> Vec<((&'static str, &'static str), u64)> {
        let fixed = INBOX_FILES
            .iter()
            .filter(|p| !self.files.contains_key(p))
            .map(|p| (*p, 0));
        let mut all: Vec<_> = self.files.iter().map(|(k, v)| (*k, *v)).chain(fixed).collect();
        all.sort();
        all
    }
}

/// A cumulative histogram of pass durations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations `<=` each of [`BUCKETS`] (cumulative, as exported).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Counts one pass.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (n, le) in self.buckets.iter_mut().zip(BUCKETS) {
            if s <= le {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += s;
    }

    /// The same numbers for `status --json`.
    pub fn to_json(&self) -> Value {
        let buckets: serde_json::Map<String, Value> = BUCKETS
            .iter()
            .zip(self.buckets)
            .map(|(le, n)| (le.to_string(), n.into()))
            .chain([("+Inf".to_string(), self.count.into())])
            .collect();
        json!({ "count": self.count, "sum": self.sum, "buckets": buckets })
    }
}

/// Every repair counter of a farm for `status --json`: `{action: {reason: n}}`, the fixed pairs
/// at 0 included, as in the metrics.
pub fn repairs_json(repairs: &RepairCounts) -> Value {
    let mut out = serde_json::Map::new();
    for ((action, reason), n) in all_repairs(repairs) {
        let per = out.entry(action).or_insert_with(|| json!({}));
        per[reason] = n.into();
    }
    Value::Object(out)
}

fn all_repairs(repairs: &RepairCounts) -> impl Iterator<Item = ((&'static str, &'static str), u64)> + '_ {
    let fixed = REPAIRS
        .iter()
        .filter(|p| !repairs.contains_key(p))
        .map(|p| (*p, 0));
    let mut all: Vec<_> = repairs.iter().map(|(k, v)| (*k, *v)).chain(fixed).collect();
    all.sort();
    all.into_iter()
}

/// The process-wide numbers, which outlive a reload.
#[derive(Debug, Clone)]
pub struct Process {
    /// The daemon's start.
    pub started: SystemTime,
    /// `settings.resync_interval` (`None`: off).
    pub resync_interval: Option<Duration>,
}

/// The metrics file and the decision of when to write it.
#[derive(Debug)]
pub struct Metrics {
    path: Option<PathBuf>,
    /// Durations of every pass since start-up.
    pub passes: Histogram,
    /// The text last written (`None`: not yet, or the last write failed).
    written: Option<String>,
    last_write: Option<Instant>,
    /// A failure to write has been logged (logged once until a write succeeds again).
    failing: bool,
}

impl Metrics {
    /// Metrics written to `path` (`settings.metrics_file`), or kept only for `status --json`.
    /// Removes temp files a killed daemon left next to `path`.
    pub fn new(path: Option<PathBuf>) -> Self {
        if let Some(p) = &path {
            remove_leftovers(p);
        }
        Metrics {
            path,
            passes: Histogram::default(),
            written: None,
            last_write: None,
            failing: false,
        }
    }

    /// After a reload: a new path is written at the next update.
    pub fn set_path(&mut self, path: Option<PathBuf>) {
        if path != self.path {
            if let Some(p) = &path {
                remove_leftovers(p);
            }
            self.path = path;
            self.written = None;
            self.failing = false;
        }
    }

    /// Offers the current numbers at `now`: writes them when they differ from the file and the
    /// last write is [`MIN_INTERVAL`] ago. Returns when to call again because a change is held
    /// back, or `None` when nothing is pending (also after a failed write: the next pass tries
    /// again, so a missing directory costs no wake-ups).
    pub fn update(
        &mut self,
        process: &Process,
        farms: &[FarmSample<'_>],
        inboxes: &[InboxSample],
        now: Instant,
    ) -> Option<Instant> {
        let path = self.path.clone()?;
        let text = render(process, farms, inboxes, &self.passes);
        if self.written.as_ref() == Some(&text) {
            return None;
        }
        if let Some(next) = self.last_write.map(|t| t + MIN_INTERVAL).filter(|t| *t > now) {
            // While writes fail, nothing is held back: the next pass tries again.
            return (!self.failing).then_some(next);
        }
        self.last_write = Some(now);
        match write(&path, &text) {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    info!("writing the metrics file {} again", path.display());
                }
                self.written = Some(text);
            }
            Err(e) => {
                self.written = None;
                if !std::mem::replace(&mut self.failing, true) {
                    let hint = if e.kind() == std::io::ErrorKind::NotFound {
                        "; its directory must exist: it is node exporter's --collector.textfile.directory \
                         (install prometheus-node-exporter, or fix settings.metrics_file; see `linkfarm doctor`)"
                    } else if e.raw_os_error() == Some(libc::EROFS) {
                        "; under systemd the unit's sandbox allows it only in ReadWritePaths= \
                         (systemctl edit linkfarm), and a directory made after the start only after \
                         systemctl restart linkfarm"
                    } else {
                        ""
                    };
                    warn!("cannot write the metrics file {}: {e}{hint}", path.display());
                } else {
                    debug!("cannot write the metrics file {}: {e}", path.display());
                }
            }
        }
        None
    }
}

/// Escapes a label value for the text format: backslash, double quote and newline.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn seconds(t: SystemTime) -> f64 {
    // Before 1970 only on a broken clock; 0 is then as wrong as anything else.
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One family with a sample per farm (`name{farm="..."} value`); a farm whose `value` is `None`
/// has no sample.
fn per_farm(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    farms: &[FarmSample<'_>],
    value: impl Fn(&FarmSample<'_>) -> Option<String>,
) {
    family(out, name, kind, help);
    for f in farms {
        if let Some(v) = value(f) {
            let _ = writeln!(out, "{name}{{farm=\"{}\"}} {v}", escape(f.name));
        }
    }
}

/// The whole file in the text exposition format.
pub fn render(
    process: &Process,
    farms: &[FarmSample<'_>],
    inboxes: &[InboxSample],
    passes: &Histogram,
) -> String {
    let mut o = String::new();
    family(
        &mut o,
        "linkfarm_build_info",
        "gauge",
        "The running linkfarm's version; always 1.",
    );
    let _ = writeln!(
        o,
        "linkfarm_build_info{{version=\"{}\"}} 1",
        escape(env!("CARGO_PKG_VERSION"))
    );
    family(
        &mut o,
        "linkfarm_start_time_seconds",
        "gauge",
        "When the daemon started, in seconds since the epoch.",
    );
    let _ = writeln!(o, "linkfarm_start_time_seconds {}", seconds(process.started));
    if let Some(i) = process.resync_interval {
        family(
            &mut o,
            "linkfarm_resync_interval_seconds",
            "gauge",
            "settings.resync_interval: the file is rewritten at least this often (absent when resync is off).",
        );
        let _ = writeln!(o, "linkfarm_resync_interval_seconds {}", i.as_secs_f64());
    }

    family(
        &mut o,
        "linkfarm_farm_state",
        "gauge",
        "1 for the farm's current state, 0 for the others.",
    );
    for f in farms {
        for s in STATES {
            let v = u8::from(f.state == s);
            let _ = writeln!(
                o,
                "linkfarm_farm_state{{farm=\"{}\",state=\"{s}\"}} {v}",
                escape(f.name)
            );
        }
    }
    per_farm(
        &mut o,
        "linkfarm_farm_links",
        "gauge",
        "Desired links of the farm.",
        farms,
        |f| Some(f.links.to_string()),
    );
    per_farm(
        &mut o,
        "linkfarm_farm_links_ok",
        "gauge",
        "Desired links of the farm that are right.",
        farms,
        |f| Some(f.links_ok.to_string()),
    );
    family(
        &mut o,
        "linkfarm_repairs_total",
        "counter",
        "Changes made, by action and reason (the journal's LINKFARM_ACTION and LINKFARM_REASON).",
    );
    for f in farms {
        for ((action, reason), n) in all_repairs(f.repairs) {
            let _ = writeln!(
                o,
                "linkfarm_repairs_total{{farm=\"{}\",action=\"{}\",reason=\"{}\"}} {n}",
                escape(f.name),
                escape(action),
                escape(reason)
            );
        }
    }
    per_farm(
        &mut o,
        "linkfarm_failures_total",
        "counter",
        "Actions that failed (each is retried with backoff).",
        farms,
        |f| Some(f.failures.to_string()),
    );
    per_farm(
        &mut o,
        "linkfarm_last_pass_timestamp_seconds",
        "gauge",
        "When the farm's last pass ended, in seconds since the epoch.",
        farms,
        |f| f.last_pass.map(|t| seconds(t).to_string()),
    );

    family(
        &mut o,
        "linkfarm_pass_duration_seconds",
        "histogram",
        "How long passes (full and spot) took.",
    );
    for (le, n) in BUCKETS.iter().zip(passes.buckets) {
        let _ = writeln!(o, "linkfarm_pass_duration_seconds_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "linkfarm_pass_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        passes.count
    );
    let _ = writeln!(o, "linkfarm_pass_duration_seconds_sum {}", passes.sum);
    let _ = writeln!(o, "linkfarm_pass_duration_seconds_count {}", passes.count);
    if !inboxes.is_empty() {
        render_inboxes(&mut o, inboxes);
    }
    o
}

fn render_inboxes(o: &mut String, inboxes: &[InboxSample]) {
    family(
        o,
        "linkfarm_inbox_files_total",
        "counter",
        "Files decided by the inbox, by result and reason (the journal's LINKFARM_ACTION and LINKFARM_REASON).",
    );
    for i in inboxes {
        for ((result, reason), n) in i.all_files() {
            let _ = writeln!(
                o,
                "linkfarm_inbox_files_total{{inbox=\"{}\",result=\"{}\",reason=\"{}\"}} {n}",
                escape(&i.name),
                escape(result),
                escape(reason)
            );
        }
    }
    family(
        o,
        "linkfarm_inbox_pending",
        "gauge",
        "Files waiting in the inbox (being written, settling, or retried after a failed check).",
    );
    for i in inboxes {
        let _ = writeln!(
            o,
            "linkfarm_inbox_pending{{inbox=\"{}\"}} {}",
            escape(&i.name),
            i.pending
        );
    }
    family(
        o,
        "linkfarm_inbox_accepted_bytes_total",
        "counter",
        "Bytes of the files the inbox accepted.",
    );
    for i in inboxes {
        let _ = writeln!(
            o,
            "linkfarm_inbox_accepted_bytes_total{{inbox=\"{}\"}} {}",
            escape(&i.name),
            i.accepted_bytes
        );
    }
}

/// The temp file's name: hidden and not ending in `.prom`, so node exporter never reads it.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Replaces `path` with `text`: a temp file in the same directory, mode 0644 whatever the umask
/// (node exporter runs as its own user), then a rename. No fsync: after a crash the daemon
/// rewrites the file at start-up, and a file lost to a power cut is an empty file to node
/// exporter, not a parse error. The directory is never created (see the module doc).
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Removes temp files of `path` left by a daemon killed while writing it (`.<name>.<pid>.tmp`);
/// only regular files of that exact pattern are touched.
fn remove_leftovers(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        let pid = n.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".tmp"));
        if pid.is_some_and(|p| p.parse::<u32>().is_ok()) && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process() -> Process {
        Process {
            started: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_600_000_250),
            resync_interval: Some(Duration::from_secs(600)),
        }
    }

    fn sample<'a>(name: &'a str, state: &'a str, repairs: &'a RepairCounts) -> FarmSample<'a> {
        FarmSample {
            name,
            state,
            links: 3,
            links_ok: 2,
            repairs,
            failures: 1,
            last_pass: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_600_001)),
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("two\nlines"), r"two\nlines");
        assert_eq!(
            escape(r"\n"),
            r"\\n",
            "a literal backslash-n stays two characters"
        );
        let r = RepairCounts::new();
        let text = render(
            &process(),
            &[sample("we\"ird\\farm\nname", "drift", &r)],
            &[],
            &Histogram::default(),
        );
        assert!(
            text.contains(r#"linkfarm_farm_links{farm="we\"ird\\farm\nname"} 3"#),
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("name")).count(),
            0,
            "no raw newline in a label"
        );
    }

    #[test]
    fn every_state_and_every_repair_pair_is_exported_from_the_start() {
        let r = RepairCounts::new();
        let text = render(
            &process(),
            &[sample("m", "degraded", &r)],
            &[],
            &Histogram::default(),
        );
        for s in STATES {
            let v = if s == "degraded" { 1 } else { 0 };
            assert!(
                text.contains(&format!("linkfarm_farm_state{{farm=\"m\",state=\"{s}\"}} {v}\n")),
                "{s}: {text}"
            );
        }
        for (a, why) in REPAIRS {
            let line = format!("linkfarm_repairs_total{{farm=\"m\",action=\"{a}\",reason=\"{why}\"}} 0\n");
            assert!(text.contains(&line), "{line}");
        }
        assert!(text.contains("linkfarm_failures_total{farm=\"m\"} 1\n"));
        assert!(
            text.contains("linkfarm_start_time_seconds 1764600000.25\n"),
            "{text}"
        );
        assert!(text.contains("linkfarm_resync_interval_seconds 600\n"));
        assert!(text.contains("linkfarm_pass_duration_seconds_count 0\n"));
    }

    #[test]
    fn a_pair_outside_the_fixed_set_is_still_counted() {
        let mut r = RepairCounts::new();
        r.insert(("create", "missing"), 2);
        r.insert(("relabel", "selinux"), 1);
        let text = render(
            &process(),
            &[sample("m", "converged", &r)],
            &[],
            &Histogram::default(),
        );
        assert!(text.contains("action=\"create\",reason=\"missing\"} 2\n"));
        assert!(text.contains("action=\"relabel\",reason=\"selinux\"} 1\n"));
        let j = repairs_json(&r);
        assert_eq!(j["create"]["missing"], 2);
        assert_eq!(j["remove"]["pruned"], 0);
        assert_eq!(j["relabel"]["selinux"], 1);
    }

    #[test]
    fn the_histogram_is_cumulative() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let text = render(&process(), &[], &[], &h);
        assert!(text.contains("_bucket{le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("linkfarm_pass_duration_seconds_count 3\n"));
        assert_eq!(h.to_json()["buckets"]["+Inf"], 3);
    }

    fn ino(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    }

    #[test]
    fn writes_changes_only_at_most_once_a_second_and_never_drops_one() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("linkfarm.prom");
        let mut m = Metrics::new(Some(path.clone()));
        let mut r = RepairCounts::new();
        let t0 = Instant::now();

        assert_eq!(m.update(&process(), &[sample("m", "drift", &r)], &[], t0), None);
        let first = ino(&path);
        // Same numbers: not written again, no wake-up asked for.
        assert_eq!(
            m.update(
                &process(),
                &[sample("m", "drift", &r)],
                &[],
                t0 + Duration::from_secs(5)
            ),
            None
        );
        assert_eq!(ino(&path), first);

        // A change 5 s later is written at once...
        r.insert(("create", "missing"), 1);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            m.update(&process(), &[sample("m", "converged", &r)], &[], t1),
            None
        );
        let second = ino(&path);
        assert_ne!(second, first);
        // ...the next one within the second is held back until then...
        r.insert(("create", "missing"), 2);
        let held = m.update(
            &process(),
            &[sample("m", "converged", &r)],
            &[],
            t1 + Duration::from_millis(300),
        );
        assert_eq!(held, Some(t1 + MIN_INTERVAL));
        assert_eq!(ino(&path), second);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("reason=\"missing\"} 1\n"));
        // ...and written when the loop calls back, with the numbers of that moment.
        r.insert(("create", "missing"), 3);
        assert_eq!(
            m.update(
                &process(),
                &[sample("m", "converged", &r)],
                &[],
                t1 + MIN_INTERVAL
            ),
            None
        );
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("reason=\"missing\"} 3\n"));

        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("linkfarm.prom")],
            "no temp file left"
        );
    }

    #[test]
    fn a_missing_directory_is_not_created_and_costs_no_wake_up() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("node-exporter");
        let path = dir.join("linkfarm.prom");
        let mut m = Metrics::new(Some(path.clone()));
        let r = RepairCounts::new();
        let t0 = Instant::now();
        assert_eq!(m.update(&process(), &[sample("m", "drift", &r)], &[], t0), None);
        assert_eq!(
            m.update(
                &process(),
                &[sample("m", "converged", &r)],
                &[],
                t0 + Duration::from_millis(10)
            ),
            None
        );
        assert_eq!(
            m.update(
                &process(),
                &[sample("m", "converged", &r)],
                &[],
                t0 + MIN_INTERVAL
            ),
            None
        );
        assert!(!dir.exists(), "the directory is node exporter's to make");
        // Once it exists, the next pass writes the file.
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(
            m.update(
                &process(),
                &[sample("m", "converged", &r)],
                &[],
                t0 + MIN_INTERVAL * 3
            ),
            None
        );
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("state=\"converged\"} 1\n"));
    }

    #[test]
    fn temp_files_never_end_in_prom_and_leftovers_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("linkfarm.prom");
        let tmp = temp_path(&path);
        assert!(!tmp.to_string_lossy().ends_with(".prom"), "{}", tmp.display());
        assert_eq!(tmp.parent(), path.parent());
        std::fs::write(t.path().join(".linkfarm.prom.4242.tmp"), "x").unwrap();
        std::fs::write(t.path().join(".linkfarm.prom.mine.tmp"), "x").unwrap();
        std::fs::write(t.path().join("other.prom"), "x").unwrap();
        Metrics::new(Some(path));
        let mut names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec![".linkfarm.prom.mine.tmp", "other.prom"]);
    }

    fn inbox(name: &str) -> InboxSample {
        InboxSample {
            name: name.into(),
            ..InboxSample::default()
        }
    }

    #[test]
    fn every_inbox_counter_is_exported_from_the_start_and_names_are_escaped() {
        let text = render(
            &process(),
            &[],
            &[inbox("lo\"ras"), inbox("vae")],
            &Histogram::default(),
        );
        for name in [r#"lo\"ras"#, "vae"] {
            for (result, reason) in INBOX_FILES {
                let line = format!(
                    "linkfarm_inbox_files_total{{inbox=\"{name}\",result=\"{result}\",reason=\"{reason}\"}} 0\n"
                );
                assert!(text.contains(&line), "{line} missing in\n{text}");
            }
            assert!(text.contains(&format!("linkfarm_inbox_pending{{inbox=\"{name}\"}} 0\n")));
            assert!(text.contains(&format!(
                "linkfarm_inbox_accepted_bytes_total{{inbox=\"{name}\"}} 0\n"
            )));
        }
        assert!(text.contains("# TYPE linkfarm_inbox_files_total counter\n"));
        assert!(text.contains("# TYPE linkfarm_inbox_pending gauge\n"));
        assert!(text.contains("# TYPE linkfarm_inbox_accepted_bytes_total counter\n"));
        // Each family once, whatever the number of inboxes.
        assert_eq!(text.matches("# TYPE linkfarm_inbox_files_total").count(), 1);
    }

    #[test]
    fn without_inboxes_no_inbox_family_is_written() {
        let text = render(&process(), &[], &[], &Histogram::default());
        assert!(!text.contains("linkfarm_inbox_"), "{text}");
    }

    #[test]
    fn inbox_numbers_are_rendered_and_a_change_of_them_alone_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linkfarm.prom");
        let mut m = Metrics::new(Some(path.clone()));
        let r = RepairCounts::new();
        let farms = [sample("m", "converged", &r)];
        let mut i = inbox("up");
        let t0 = Instant::now();
        assert_eq!(m.update(&process(), &farms, std::slice::from_ref(&i), t0), None);
        let first = ino(&path);
        i.files.insert(("accept", "valid"), 2);
        i.files.insert(("refuse", "format"), 1);
        i.files.insert(("refuse", "new_reason"), 1);
        i.pending = 3;
        i.accepted_bytes = 1234;
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(m.update(&process(), &farms, std::slice::from_ref(&i), t1), None);
        assert_ne!(
            ino(&path),
            first,
            "a change of an inbox's numbers alone is written"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        for line in [
            r#"linkfarm_inbox_files_total{inbox="up",result="accept",reason="valid"} 2"#,
            r#"linkfarm_inbox_files_total{inbox="up",result="refuse",reason="format"} 1"#,
            r#"linkfarm_inbox_files_total{inbox="up",result="refuse",reason="new_reason"} 1"#,
            r#"linkfarm_inbox_files_total{inbox="up",result="refuse",reason="exists"} 0"#,
            r#"linkfarm_inbox_pending{inbox="up"} 3"#,
            r#"linkfarm_inbox_accepted_bytes_total{inbox="up"} 1234"#,
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} missing in\n{text}");
        }
        // The same numbers again: nothing written, no wake-up.
        let second = ino(&path);
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(m.update(&process(), &farms, std::slice::from_ref(&i), t2), None);
        assert_eq!(ino(&path), second);
    }
}
