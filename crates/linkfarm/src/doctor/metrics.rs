//! The doctor's check of `settings.metrics_file` (SPEC §12): the daemon never creates node
//! exporter's textfile directory, so a missing one is said here; and with `resync_interval: 0`
//! the file's age says nothing about the daemon, so the shipped stale alert stays silent.
//! Read-only, like the rest of the doctor.

use std::path::Path;
use std::time::{Duration, SystemTime};

use linkfarm_core::Settings;

use super::{check, Check, Status};

/// What the doctor says about the metrics file at `now`; nothing when it is off.
pub(super) fn metrics_checks(settings: &Settings, now: SystemTime) -> Vec<Check> {
    let Some(file) = &settings.metrics_file else {
        return Vec::new();
    };
    let subject = "metrics";
    let dir = file.parent().unwrap_or(Path::new("/"));
    let mut out = Vec::new();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => out.push(check(
            Status::Ok,
            subject,
            format!("{} is written for node exporter", file.display()),
            "",
        )),
        Ok(_) => {
            out.push(check(
                Status::Fail,
                subject,
                format!("{} is not a directory: no metrics are written", dir.display()),
                "point settings.metrics_file into node exporter's --collector.textfile.directory",
            ));
            return out;
        }
        Err(e) => {
            out.push(check(
                Status::Fail,
                subject,
                format!("cannot use {} ({e}): no metrics are written", dir.display()),
                "install prometheus-node-exporter (it makes /var/lib/prometheus/node-exporter), or point \
                 settings.metrics_file into the directory of its --collector.textfile.directory flag; \
                 linkfarm does not create it",
            ));
            return out;
        }
    }
    match settings.resync_interval {
        None => out.push(check(
            Status::Warn,
            subject,
            "resync_interval is 0: the file is rewritten only when something changes, so the \
             LinkfarmMetricsStale alert stays silent even when the daemon is stopped",
            "set resync_interval (e.g. 10m) to have the stale alert, or watch the linkfarm unit another way",
        )),
        Some(every) => {
            let age = std::fs::metadata(file)
                .and_then(|m| m.modified())
                .ok()
                .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO));
            if let Some(age) = age.filter(|a| *a > every * 3) {
                out.push(check(
                    Status::Warn,
                    subject,
                    format!(
                        "{} was last written {}s ago, over 3 x resync_interval: the LinkfarmMetricsStale alert fires",
                        file.display(),
                        age.as_secs()
                    ),
                    "check that the daemon runs: systemctl status linkfarm; linkfarm status",
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(file: &Path, resync: Option<u64>) -> Settings {
        Settings {
            metrics_file: Some(file.to_owned()),
            resync_interval: resync.map(Duration::from_secs),
            ..Settings::default()
        }
    }

    fn statuses(c: &[Check]) -> Vec<(Status, &str)> {
        c.iter().map(|c| (c.status, c.message.as_str())).collect()
    }

    #[test]
    fn off_says_nothing() {
        assert!(metrics_checks(&Settings::default(), SystemTime::now()).is_empty());
    }

    #[test]
    fn a_missing_directory_fails_and_is_not_created() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("node-exporter");
        let c = metrics_checks(
            &settings(&dir.join("linkfarm.prom"), Some(600)),
            SystemTime::now(),
        );
        assert_eq!(c.len(), 1, "{:?}", statuses(&c));
        assert_eq!(c[0].status, Status::Fail);
        assert!(
            c[0].remedy.contains("prometheus-node-exporter"),
            "{}",
            c[0].remedy
        );
        assert!(!dir.exists());
    }

    #[test]
    fn resync_off_is_a_warning_about_the_stale_alert() {
        let t = tempfile::tempdir().unwrap();
        let c = metrics_checks(
            &settings(&t.path().join("linkfarm.prom"), None),
            SystemTime::now(),
        );
        assert_eq!(c[0].status, Status::Ok);
        assert_eq!(c[1].status, Status::Warn);
        assert!(c[1].message.contains("LinkfarmMetricsStale"), "{}", c[1].message);
    }

    #[test]
    fn a_stale_file_is_a_warning_and_a_fresh_one_is_not() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("linkfarm.prom");
        std::fs::write(&file, "").unwrap();
        let s = settings(&file, Some(600));
        let fresh = metrics_checks(&s, SystemTime::now() + Duration::from_secs(1700));
        assert_eq!(statuses(&fresh).len(), 1, "{:?}", statuses(&fresh));
        let stale = metrics_checks(&s, SystemTime::now() + Duration::from_secs(1900));
        assert_eq!(stale[1].status, Status::Warn, "{:?}", statuses(&stale));
        assert!(stale[1].message.contains("3 x resync_interval"));
    }
}
