//! The admin's scanner (SPEC §10 check 5): an argv run as root, no shell, with `{}` replaced by
//! the file's path in the inbox's root-only private directory, or the file on stdin for an
//! argument `-`. Exit 0 is clean, 1 refused (with the first line of its output), anything else
//! (the scanner or its daemon is down) decides nothing: the caller retries after 10 s, doubling
//! up to 10 min, and the file waits.
//!
//! It runs on the caller's thread and blocks (the daemon calls it from a blocking thread); it is
//! killed past its time limit.

use std::ffi::OsString;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What the scanner said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// Exit 0.
    Clean,
    /// Exit 1, with the first line of its stdout (else stderr).
    Refused(String),
    /// Anything else: nothing decided (what happened, for the log).
    Failed(String),
}

/// How long a scan may take before it counts as failed.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(600);

/// The wait before retrying a file whose scan (or check) failed `failures` times in a row: 10 s,
/// doubling, at most 10 min.
pub fn retry_after(failures: u32) -> Duration {
    let secs = 10u64.saturating_mul(1 << failures.saturating_sub(1).min(6));
    Duration::from_secs(secs.min(600))
}

fn first_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(500).collect())
}

/// Runs `argv` on the file at `path` (open as `file`), killing it after `timeout`.
pub fn scan(argv: &[String], path: &Path, file: &OwnedFd, timeout: Duration) -> Scan {
    let Some((program, args)) = argv.split_first() else {
        return Scan::Clean;
    };
    let mut stdin = Stdio::null();
    let mut cmd = Command::new(program);
    for a in args {
        if a == "-" {
            match file.try_clone().map(std::fs::File::from) {
                Ok(mut f) => {
                    // The fd shares its offset with the worker's reads: start from the beginning.
                    if let Err(e) = f.seek(SeekFrom::Start(0)) {
                        return Scan::Failed(format!("seek: {e}"));
                    }
                    stdin = Stdio::from(f);
                }
                Err(e) => return Scan::Failed(format!("dup: {e}")),
            }
            cmd.arg(a);
        } else {
            let mut out = Vec::new();
            let mut rest = a.as_bytes();
            while let Some(i) = rest.windows(2).position(|w| w == b"{}") {
                out.extend_from_slice(&rest[..i]);
                out.extend_from_slice(path.as_os_str().as_bytes());
                rest = &rest[i + 2..];
            }
            out.extend_from_slice(rest);
            cmd.arg(OsString::from_vec(out));
        }
    }
    let mut child = match cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Scan::Failed(format!("cannot run {program}: {e}")),
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, wait_done) = mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        if wait_done.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            return true;
        }
        false
    });
    // Both pipes are read to the end (a scanner blocked on a full pipe never exits), each capped.
    let err_reader = child.stderr.take().map(|e| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = BufReader::new(e).take(64 << 10).read_to_end(&mut v);
            v
        })
    });
    let mut out = Vec::new();
    if let Some(o) = child.stdout.take() {
        let mut r = BufReader::new(o).take(64 << 10);
        let _ = r.read_to_end(&mut out);
        let _ = std::io::copy(&mut r.into_inner(), &mut std::io::sink());
    }
    let err = err_reader.and_then(|t| t.join().ok()).unwrap_or_default();
    let status = child.wait();
    let _ = done.send(());
    if killer.join().unwrap_or(false) {
        return Scan::Failed(format!(
            "{program} ran past {}s and was killed",
            timeout.as_secs()
        ));
    }
    let line = first_line(&out).or_else(|| first_line(&err));
    match status.map(|s| s.code()) {
        Ok(Some(0)) => Scan::Clean,
        Ok(Some(1)) => Scan::Refused(line.unwrap_or_else(|| format!("{program} reported the file (exit 1)"))),
        Ok(code) => Scan::Failed(format!(
            "{program} failed ({}){}",
            code.map_or("killed by a signal".into(), |c| format!("exit {c}")),
            line.map(|l| format!(": {l}")).unwrap_or_default()
        )),
        Err(e) => Scan::Failed(format!("{program}: {e}")),
    }
}
