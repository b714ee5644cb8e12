//! `settings.metrics_file` as the running daemon writes it (SPEC §12): a real child process on
//! real directories. Every wait polls for the observable effect with a generous deadline.
//! promtool and node exporter check the same file in tests/e2e/metrics.sh.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linkfarm_testsupport::{wait_for, DEADLINE};

const LINKS: [&str; 4] = ["a", "b", "c", "d"];

/// A farm of four links and a daemon with `metrics_file: <metrics_dir>/linkfarm.prom`, resync
/// off: after start-up only events and the metrics' own deadline can make it write.
struct Setup {
    dir: tempfile::TempDir,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Setup {
    /// `make_dir`: whether the metrics directory exists from the start.
    fn start(metrics_dir: &str, make_dir: bool) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        if make_dir {
            fs::create_dir(dir.path().join(metrics_dir)).unwrap();
        }
        for l in LINKS {
            fs::create_dir_all(dir.path().join("models").join(l)).unwrap();
        }
        fs::create_dir(dir.path().join("up")).unwrap();
        fs::write(
            dir.path().join("linkfarm.yaml"),
            format!(
                "version: 1\nfarms:\n  - name: m\n    target_dir: models\n    link_dir: up\n    entries: \"*\"\n\
                 settings:\n  state_file: state.json\n  resync_interval: 0\n  metrics_file: {metrics_dir}/linkfarm.prom\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_linkfarm"))
            .args(["run", "-c"])
            .arg(dir.path().join("linkfarm.yaml"))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Setup { dir, child, log }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn prom(&self, metrics_dir: &str) -> String {
        fs::read_to_string(self.path(metrics_dir).join("linkfarm.prom")).unwrap_or_default()
    }

    fn linked(&self) -> bool {
        LINKS.iter().all(|l| self.path("up").join(l).is_symlink())
    }

    fn logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn missing_repairs(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(r#"linkfarm_repairs_total{farm="m",action="create",reason="missing"} "#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn a_change_held_back_by_the_once_a_second_limit_is_written_later() {
    let s = Setup::start("textfile", true);
    wait_for("start-up converged", || {
        s.linked() && s.path("state.json").exists()
    });
    fs::remove_file(s.path("up/a")).unwrap();
    wait_for("the first repair written", || {
        missing_repairs(&s.prom("textfile")) == Some(5)
    });
    // Repairs within the second after that write are held back; with resync off and nothing
    // else happening, only the deadline the metrics returned can bring them to the file.
    for l in ["b", "c", "d"] {
        fs::remove_file(s.path("up").join(l)).unwrap();
        wait_for("repaired", || s.path("up").join(l).is_symlink());
    }
    wait_for("every repair in the file", || {
        missing_repairs(&s.prom("textfile")) == Some(8)
    });
}

#[test]
fn a_missing_directory_is_logged_once_never_created_and_used_once_it_exists() {
    let s = Setup::start("node-exporter", false);
    wait_for("start-up converged", || {
        s.linked() && s.path("state.json").exists()
    });
    wait_for("the missing directory logged", || {
        s.logged("cannot write the metrics file") == 1
    });
    fs::remove_file(s.path("up/a")).unwrap();
    wait_for("repaired", || s.path("up/a").is_symlink());
    fs::remove_file(s.path("up/b")).unwrap();
    wait_for("repaired", || s.path("up/b").is_symlink());
    assert!(
        !s.path("node-exporter").exists(),
        "the directory is node exporter's to make"
    );
    assert_eq!(
        s.logged("cannot write the metrics file"),
        1,
        "logged once, not per pass"
    );
    // node exporter installed meanwhile: the next passes write the file.
    fs::create_dir(s.path("node-exporter")).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut n = 0;
    while missing_repairs(&s.prom("node-exporter")).is_none() {
        assert!(Instant::now() < deadline, "the file never came");
        // One repair a second at most: a failed write is retried at the next pass after it.
        let l = LINKS[n % LINKS.len()];
        n += 1;
        fs::remove_file(s.path("up").join(l)).unwrap();
        wait_for("repaired", || s.path("up").join(l).is_symlink());
        poll_up_to(Duration::from_millis(300), || {
            s.path("node-exporter/linkfarm.prom").exists()
        });
    }
    // The line comes through a pipe after the rename: wait for it.
    wait_for("the recovery logged", || {
        s.logged("writing the metrics file") == 1
    });
}

/// Polls `cond` for at most `d` (a bounded wait between attempts that may each succeed).
fn poll_up_to(d: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + d;
    while !cond() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
}
