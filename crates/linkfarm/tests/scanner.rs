//! The admin's scanner (SPEC §10 check 5), with small shell scanners standing in for clamdscan:
//! exit 0 clean, 1 refused with its first line, anything else (or a hang) decides nothing.

use std::fs;
use std::io::{Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::time::Duration;

use linkfarm::scanner::{retry_after, scan, Scan, SCAN_TIMEOUT};

fn sh(script: &str, file_arg: &str) -> Vec<String> {
    ["sh", "-c", script, "sh", file_arg].map(String::from).to_vec()
}

fn file(content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, OwnedFd) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("model.safetensors");
    fs::write(&p, content).unwrap();
    let fd = OwnedFd::from(fs::File::open(&p).unwrap());
    (d, p, fd)
}

#[test]
fn exit_0_is_clean_and_the_path_replaces_braces() {
    let (_d, p, fd) = file(b"hello");
    assert_eq!(
        scan(&sh("test -f \"$1\"", "{}"), &p, &fd, SCAN_TIMEOUT),
        Scan::Clean
    );
    let arg = sh(
        "case \"$1\" in --file=/*model.safetensors) exit 0;; esac; exit 2",
        "--file={}",
    );
    assert_eq!(scan(&arg, &p, &fd, SCAN_TIMEOUT), Scan::Clean);
}

#[test]
fn exit_1_refuses_with_the_first_line() {
    let (_d, p, fd) = file(b"hello");
    let got = scan(
        &sh(
            "echo; echo \"$1: Eicar-Signature FOUND\"; echo second; exit 1",
            "{}",
        ),
        &p,
        &fd,
        SCAN_TIMEOUT,
    );
    assert_eq!(
        got,
        Scan::Refused(format!("{}: Eicar-Signature FOUND", p.display()))
    );
    let got = scan(&sh("echo on stderr >&2; exit 1", "{}"), &p, &fd, SCAN_TIMEOUT);
    assert_eq!(got, Scan::Refused("on stderr".into()));
}

#[test]
fn a_dash_hands_the_file_on_stdin_from_its_start() {
    let (_d, p, fd) = file(b"hello world");
    // The worker read through a descriptor sharing this offset.
    fs::File::from(fd.try_clone().unwrap())
        .seek(SeekFrom::End(0))
        .unwrap();
    let got = scan(
        &sh(
            "read -r w; [ \"$w\" = 'hello world' ] && { echo found it; exit 1; }; exit 0",
            "-",
        ),
        &p,
        &fd,
        SCAN_TIMEOUT,
    );
    assert_eq!(got, Scan::Refused("found it".into()));
}

#[test]
fn other_exits_a_missing_program_and_a_hang_decide_nothing() {
    let (_d, p, fd) = file(b"x");
    match scan(
        &sh("echo 'could not connect to clamd' >&2; exit 2", "{}"),
        &p,
        &fd,
        SCAN_TIMEOUT,
    ) {
        Scan::Failed(m) => assert!(m.contains("exit 2") && m.contains("could not connect"), "{m}"),
        other => panic!("{other:?}"),
    }
    let missing = vec!["/nonexistent/clamdscan".to_string(), "{}".into()];
    assert!(matches!(scan(&missing, &p, &fd, SCAN_TIMEOUT), Scan::Failed(_)));
    match scan(&sh("exec sleep 600", "{}"), &p, &fd, Duration::from_millis(300)) {
        Scan::Failed(m) => assert!(m.contains("ran past"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn retries_wait_10s_doubling_to_10min() {
    let secs: Vec<u64> = (1..=9).map(|n| retry_after(n).as_secs()).collect();
    assert_eq!(secs, [10, 20, 40, 80, 160, 320, 600, 600, 600]);
    assert_eq!(retry_after(u32::MAX).as_secs(), 600);
}
