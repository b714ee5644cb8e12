//! The unprivileged check worker (SPEC §10 privilege separation): it answers a verdict through
//! the fd it is handed, runs as `nobody` when started by root, and a worker that is killed, panics,
//! allocates past its limit or runs past its time decides nothing while the file stays untouched.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use linkfarm::worker::{check, Request, Spawn, WorkerFailure};
use linkfarm_core::inbox::decide::{Reason, WorkerVerdict};

fn spawn() -> Spawn {
    Spawn {
        program: PathBuf::from(env!("CARGO_BIN_EXE_linkfarm")),
        args: vec!["__worker".into()],
        user: "nobody".into(),
        memory: 1 << 30,
        base_time: Duration::from_secs(60),
    }
}

use linkfarm_testsupport::safetensors;

fn open(p: &Path) -> (OwnedFd, u64) {
    let f = fs::File::open(p).unwrap();
    let len = f.metadata().unwrap().len();
    (OwnedFd::from(f), len)
}

fn req(folder: &str) -> Request {
    Request {
        format: "safetensors".into(),
        folder: folder.into(),
        companion_max_size: 1 << 20,
    }
}

#[test]
fn a_valid_file_passes_with_its_hash_and_kind() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.safetensors");
    let bytes = safetensors(&[
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
    ]);
    fs::write(&p, &bytes).unwrap();
    let (fd, len) = open(&p);
    let got = check(&spawn(), &fd, len, &req("checkpoints")).unwrap();
    let (digest, _) = linkfarm_formats::hash::sha256(&mut &bytes[..]).unwrap();
    match got.verdict {
        WorkerVerdict::Passed {
            format,
            sha256,
            kind,
            kind_mismatch,
        } => {
            assert_eq!(format, "safetensors");
            assert_eq!(sha256, digest.hex());
            assert_eq!(kind.as_deref(), Some("lora"));
            assert!(kind_mismatch, "a LoRA does not belong in checkpoints");
        }
        other => panic!("{other:?}"),
    }
    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody")
            .unwrap()
            .unwrap()
            .uid
            .as_raw();
        assert_eq!(got.uid, Some(nobody), "the worker dropped root");
    }
}

#[test]
fn a_truncated_file_is_refused_as_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.safetensors");
    let mut bytes = safetensors(&["a", "b"]);
    bytes.truncate(bytes.len() - 3);
    fs::write(&p, &bytes).unwrap();
    let (fd, len) = open(&p);
    match check(&spawn(), &fd, len, &req("loras")).unwrap().verdict {
        WorkerVerdict::Refused { refusal, .. } => assert_eq!(refusal.reason, Reason::Corrupt),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_root_only_file_is_read_through_the_fd_alone() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.safetensors");
    fs::write(&p, safetensors(&["x"])).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    let (fd, len) = open(&p);
    assert!(matches!(
        check(&spawn(), &fd, len, &req("loras")).unwrap().verdict,
        WorkerVerdict::Passed { .. }
    ));
}

/// The pid of the worker started with `folder` as its argument, once it runs.
fn worker_pid(folder: &str) -> Option<i32> {
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.contains(&&b"__worker"[..]) && args.contains(&folder.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_worker_killed_mid_check_decides_nothing_and_the_file_is_untouched() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("big.safetensors");
    // A valid header and 4 GiB of (sparse) data: hashing it takes long enough to be killed.
    let header = br#"{"w":{"dtype":"U8","shape":[4294967296],"data_offsets":[0,4294967296]}}"#;
    let mut start = (header.len() as u64).to_le_bytes().to_vec();
    start.extend_from_slice(header);
    fs::write(&p, &start).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(start.len() as u64 + (1 << 32)).unwrap();
    drop(f);
    let before = fs::metadata(&p).unwrap();
    let (fd, len) = open(&p);
    let folder = format!("kill-{}", std::process::id());
    let t = {
        let folder = folder.clone();
        std::thread::spawn(move || check(&spawn(), &fd, len, &req(&folder)))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Some(pid) = worker_pid(&folder) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the worker never started");
        std::thread::yield_now();
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    match t.join().unwrap() {
        Err(WorkerFailure::Died(s)) => assert!(!s.success()),
        other => panic!("{other:?}"),
    }
    let after = fs::metadata(&p).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (after.len(), after.mtime(), after.ino()),
        (before.len(), before.mtime(), before.ino())
    );
}

#[test]
fn a_worker_that_panics_decides_nothing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.safetensors");
    fs::write(&p, safetensors(&["x"])).unwrap();
    let (fd, len) = open(&p);
    // What a Rust panic looks like from outside: a message on stderr and exit status 101.
    let panicking = Spawn {
        program: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            "echo \"thread 'main' panicked\" >&2; exit 101".into(),
            "sh".into(),
        ],
        ..spawn()
    };
    match check(&panicking, &fd, len, &req("loras")) {
        Err(WorkerFailure::Died(s)) => assert_eq!(s.code(), Some(101)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_worker_past_its_memory_limit_decides_nothing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.safetensors");
    // A header of 96 MB (the format allows 100 MB): reading it needs more than the 64 MiB given.
    let n: usize = 96_000_000;
    let mut bytes = (n as u64).to_le_bytes().to_vec();
    bytes.push(b'{');
    bytes.resize(8 + n - 1, b' ');
    bytes.push(b'}');
    fs::write(&p, &bytes).unwrap();
    drop(bytes);
    let (fd, len) = open(&p);
    let small = Spawn {
        memory: 64 << 20,
        ..spawn()
    };
    // The formats crate asks for the buffer with try_reserve, so the worker reports "out of
    // memory" (undecided) rather than aborting; either way nothing is decided.
    match check(&small, &fd, len, &req("loras")) {
        Err(WorkerFailure::Died(s)) => assert!(!s.success()),
        Err(WorkerFailure::Undecided(m)) => assert!(m.contains("memory"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The same file with room to spare is judged (an empty header is valid; no data).
    match check(&spawn(), &fd, len, &req("loras")) {
        Ok(_) => {}
        other => panic!("with 1 GiB: {other:?}"),
    }
}

#[test]
fn a_worker_past_its_time_is_killed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.safetensors");
    fs::write(&p, safetensors(&["x"])).unwrap();
    let (fd, len) = open(&p);
    let hanging = Spawn {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "exec sleep 600".into(), "sh".into()],
        base_time: Duration::from_millis(300),
        ..spawn()
    };
    let t0 = Instant::now();
    assert!(matches!(
        check(&hanging, &fd, len, &req("loras")),
        Err(WorkerFailure::Timeout(_))
    ));
    assert!(t0.elapsed() < Duration::from_secs(30));
}
