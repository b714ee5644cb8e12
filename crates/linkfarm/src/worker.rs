//! Privilege separation for the inbox's content checks (SPEC §10, checks 3, 4 and 6).
//!
//! The daemon is root and the bytes belong to strangers, so the root process never parses them:
//! each check runs in a fresh process of this same binary (`linkfarm __worker`, dispatched before
//! the CLI is parsed) that drops to an unprivileged user (`nobody`), sets `PR_SET_NO_NEW_PRIVS`,
//! limits its address space, CPU time, open files and file size, and only then reads. It is
//! handed exactly one descriptor: the file, opened read-only, as its stdin (no path, nothing else
//! open), and answers one JSON line on stdout.
//!
//! Why stdin and not a socketpair with `SCM_RIGHTS`: with one process per check the fd can be
//! given at spawn, and receiving one over a socket needs `unsafe` (`OwnedFd::from_raw_fd`; nix
//! hands out a `RawFd`), which this crate forbids. One process per check also makes the CPU
//! limit a per-file limit (`RLIMIT_CPU` counts a process's whole life) and leaves nothing of one
//! client's file in memory when the next is checked.
//!
//! A worker that crashes, panics, runs out of memory or time decides nothing: [`check`] returns
//! a [`WorkerFailure`], and the caller leaves the file waiting and tries again with backoff.
//! [`check`] blocks; the daemon runs it on a blocking thread, so the loop that repairs links never
//! waits for a hash.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Seek};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use linkfarm_core::inbox::decide::{Reason, Refusal, WorkerVerdict};
use linkfarm_formats::{check as check_format, hash, FileType, Limits};
use serde::{Deserialize, Serialize};

/// The hidden first argument that makes this binary a worker.
pub const WORKER_ARG: &str = "__worker";

/// The worker's answer on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Passed {
        format: String,
        kind: Option<String>,
        kind_mismatch: bool,
        sha256: String,
        uid: u32,
    },
    Refused {
        format: String,
        reason: String,
        message: String,
    },
    /// Reading failed (an I/O error, not a short read): nothing decided.
    Undecided { message: String },
}

/// What a check asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The extension's format (`safetensors`, `gguf`, `pickle`, or a companion's extension).
    pub format: String,
    /// The model folder (`target`) the file is for, for the kind check.
    pub folder: String,
    /// `companion_max_size`.
    pub companion_max_size: u64,
}

/// How to start a worker, and its limits.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// The program (this binary).
    pub program: PathBuf,
    /// Arguments before the request's (normally just [`WORKER_ARG`]).
    pub args: Vec<OsString>,
    /// The user to drop to when started as root.
    pub user: String,
    /// `RLIMIT_AS`, bytes.
    pub memory: u64,
    /// The time any file may take, before the time its size adds (see [`time_limit`]).
    pub base_time: Duration,
}

impl Spawn {
    /// This very binary as the worker, as `nobody`, with 1 GiB of address space: a safetensors
    /// header may be 100 MB of JSON, and the checks need a few times that at most.
    pub fn this_binary() -> std::io::Result<Spawn> {
        Ok(Spawn {
            program: std::env::current_exe()?,
            args: vec![WORKER_ARG.into()],
            user: "nobody".into(),
            memory: 1 << 30,
            base_time: Duration::from_secs(60),
        })
    }
}

/// Why a worker decided nothing. The file waits; the caller retries with backoff.
#[derive(Debug)]
pub enum WorkerFailure {
    /// It could not be started.
    Spawn(std::io::Error),
    /// It ran past its time and was killed.
    Timeout(Duration),
    /// It died without an answer (a crash, a panic, out of memory, killed).
    Died(ExitStatus),
    /// Its answer was not understood.
    BadAnswer(String),
    /// It could not read the file (an I/O error): nothing decided.
    Undecided(String),
}

impl std::fmt::Display for WorkerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "the check worker could not be started: {e}"),
            Self::Timeout(t) => write!(f, "the check worker ran past {}s and was killed", t.as_secs()),
            Self::Died(s) => write!(f, "the check worker died without an answer ({s})"),
            Self::BadAnswer(a) => write!(f, "the check worker's answer was not understood: {a}"),
            Self::Undecided(m) => write!(f, "the check worker could not read the file: {m}"),
        }
    }
}

/// The wall-clock time and CPU time a file of `size` bytes may take: `base` (a minute by default),
/// plus a second per 16 MiB (hashing runs at 1-2 GB/s; the margin is for a slow disk and debug
/// builds).
pub fn time_limit(base: Duration, size: u64) -> Duration {
    base + Duration::from_secs(size / (16 << 20))
}

/// A worker's answer, and the uid it ran as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The verdict.
    pub verdict: WorkerVerdict,
    /// The uid the worker checked the file as (not root, when the daemon is root), for the log.
    pub uid: Option<u32>,
}

/// Checks the file open at `file` in a fresh unprivileged worker. Blocks until the answer, the
/// worker's death, or [`time_limit`] (the worker is then killed).
pub fn check(spawn: &Spawn, file: &OwnedFd, size: u64, req: &Request) -> Result<Checked, WorkerFailure> {
    let fd = file.try_clone().map_err(WorkerFailure::Spawn)?;
    let limit = time_limit(spawn.base_time, size);
    let mut child = Command::new(&spawn.program)
        .args(&spawn.args)
        .arg(&req.format)
        .arg(&req.folder)
        .arg(req.companion_max_size.to_string())
        .arg(&spawn.user)
        .arg(spawn.memory.to_string())
        .arg(limit.as_secs().to_string())
        .stdin(Stdio::from(fd))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env_clear()
        .spawn()
        .map_err(WorkerFailure::Spawn)?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, wait_done) = mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        if wait_done.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            return true;
        }
        false
    });
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        // One line at most 64 KiB: a worker cannot make the daemon allocate.
        let _ = BufReader::new(out.take(64 << 10)).read_line(&mut line);
    }
    let status = child.wait().map_err(WorkerFailure::Spawn)?;
    let _ = done.send(());
    if killer.join().unwrap_or(false) {
        return Err(WorkerFailure::Timeout(limit));
    }
    if line.is_empty() || !status.success() {
        return Err(WorkerFailure::Died(status));
    }
    match serde_json::from_str::<Answer>(&line) {
        Ok(Answer::Passed {
            format,
            kind,
            kind_mismatch,
            sha256,
            uid,
        }) => Ok(Checked {
            verdict: WorkerVerdict::Passed {
                format,
                kind,
                kind_mismatch,
                sha256,
            },
            uid: Some(uid),
        }),
        Ok(Answer::Refused {
            format,
            reason,
            message,
        }) => {
            let reason = match reason.as_str() {
                "corrupt" => Reason::Corrupt,
                "unsafe" => Reason::Unsafe,
                "format" => Reason::Format,
                other => return Err(WorkerFailure::BadAnswer(format!("unknown reason {other}"))),
            };
            Ok(Checked {
                verdict: WorkerVerdict::Refused {
                    format,
                    refusal: Refusal { reason, message },
                },
                uid: None,
            })
        }
        Ok(Answer::Undecided { message }) => Err(WorkerFailure::Undecided(message)),
        Err(e) => Err(WorkerFailure::BadAnswer(format!("{e}: {}", line.trim_end()))),
    }
}

/// Runs as a worker if the first argument says so: returns the process's exit code then, `None`
/// for any other command line. Called first thing in `main`.
pub fn main_if_worker() -> Option<u8> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some(WORKER_ARG) {
        return None;
    }
    Some(match worker_main(&args[1..]) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("linkfarm worker: {e}");
            2
        }
    })
}

fn worker_main(args: &[String]) -> Result<(), String> {
    let [format, folder, companion_max, user, memory, cpu] = args else {
        return Err("usage: linkfarm __worker FORMAT FOLDER COMPANION_MAX USER MEMORY CPU_SECONDS".into());
    };
    let num = |s: &str| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
    confine(user, num(memory)?, num(cpu)?)?;
    let uid = nix::unistd::getuid().as_raw();
    let file_type = FileType::from_name(&format!("x.{format}")).ok_or(format!("unknown format {format}"))?;
    let mut file = std::fs::File::from(
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("stdin: {e}"))?,
    );
    let limits = Limits {
        companion_max_size: num(companion_max)?,
    };
    let answer = match check_format(&mut file, file_type, &limits) {
        Err(r) if r.reason == linkfarm_formats::Reason::Io => Answer::Undecided { message: r.message },
        Err(r) => Answer::Refused {
            format: file_type.name().into(),
            reason: r.reason.as_str().into(),
            message: r.message,
        },
        Ok(v) => {
            file.rewind().map_err(|e| format!("seek: {e}"))?;
            match hash::sha256(&mut file) {
                Err(e) => Answer::Undecided {
                    message: e.to_string(),
                },
                Ok((digest, _)) => Answer::Passed {
                    format: file_type.name().into(),
                    kind: v
                        .kind
                        .filter(|k| k.kind != linkfarm_formats::Kind::Unknown)
                        .map(|k| k.kind.as_str().to_owned()),
                    kind_mismatch: v.kind.is_some_and(|k| k.mismatches(folder)),
                    sha256: digest.hex(),
                    uid,
                },
            }
        }
    };
    let line = serde_json::to_string(&answer).map_err(|e| e.to_string())?;
    println!("{line}");
    Ok(())
}

/// Drops to `user` (when root), forbids regaining privileges, and sets the limits. Fails, and
/// the worker checks nothing, if any step fails.
fn confine(user: &str, memory: u64, cpu_seconds: u64) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource};
    use nix::unistd::{geteuid, setgid, setgroups, setuid, User};
    if geteuid().is_root() {
        let u = User::from_name(user)
            .map_err(|e| format!("user {user}: {e}"))?
            .ok_or(format!(
                "user {user} does not exist; the worker will not run as root"
            ))?;
        if u.uid.is_root() {
            return Err(format!("user {user} is root; the worker must run unprivileged"));
        }
        setgroups(&[u.gid]).map_err(|e| format!("setgroups: {e}"))?;
        setgid(u.gid).map_err(|e| format!("setgid: {e}"))?;
        // setuid away from root clears every capability (no SECBIT_KEEP_CAPS is set).
        setuid(u.uid).map_err(|e| format!("setuid: {e}"))?;
        if setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
            return Err("root could be regained after the drop".into());
        }
    } else {
        eprintln!(
            "linkfarm worker: not root, so no privilege drop: checks run as uid {} (limits still apply)",
            geteuid()
        );
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
    // The lowest priority: a hash competes for the CPU with the loop that repairs links, and
    // must lose (measured by bench/inbox on 2 cores: without it, repairs slowed tenfold).
    rustix::process::setpriority_process(None, 19).map_err(|e| format!("setpriority: {e}"))?;
    let set = |r: Resource, v: u64, what: &str| setrlimit(r, v, v).map_err(|e| format!("{what}: {e}"));
    set(Resource::RLIMIT_AS, memory, "RLIMIT_AS")?;
    set(Resource::RLIMIT_CPU, cpu_seconds, "RLIMIT_CPU")?;
    // The same limit in wall-clock time, which the worker keeps itself (SIGALRM ends it): under
    // the shipped systemd unit the daemon has no CAP_KILL, so it cannot kill a process that
    // now belongs to nobody. The daemon's own kill stays as the backstop where it can.
    nix::unistd::alarm::set(u32::try_from(cpu_seconds).unwrap_or(u32::MAX).max(1));
    // It writes nothing but its answer to a pipe, and opens nothing.
    set(Resource::RLIMIT_FSIZE, 0, "RLIMIT_FSIZE")?;
    set(Resource::RLIMIT_NOFILE, 8, "RLIMIT_NOFILE")?;
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for key in ["CapEff:", "CapPrm:"] {
            let v = status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
            if v.is_some_and(|v| !v.trim_start_matches('0').is_empty()) && geteuid().as_raw() != 0 {
                return Err(format!("{key} {} after the drop", v.unwrap_or_default()));
            }
        }
    }
    Ok(())
}
