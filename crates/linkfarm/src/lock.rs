//! One daemon per state file (SPEC §5): `linkfarm run` holds an exclusive `flock` on
//! `<state_file>.lock` for as long as it lives. A second daemon on the same state file (an admin
//! trying `linkfarm run` in a terminal while the service runs) would repair alongside the first and
//! overwrite its state file, so `status` would show only one of them; it exits at once instead,
//! naming the holder's pid.
//!
//! A lock, not a pid file: the kernel drops it when the holder dies, however it dies (SIGKILL, a
//! systemd restart after a crash), so a stale pid can never keep the service from starting. The
//! pid written into the file is only for the message. The lock file is separate from the state
//! file because the state file is replaced by rename after every pass, and a lock belongs to the
//! inode, not the name.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl StateLock {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it.
    Held {
        /// The state file the lock guards.
        state: PathBuf,
        /// The pid written by the holder, when it could be read.
        holder: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        err: std::io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held { state, holder } => write!(
                f,
                "another linkfarm daemon{} already runs on state file {}; stop it first \
                 (systemctl stop linkfarm), or give this config its own settings.state_file",
                holder.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                state.display()
            ),
            LockError::Io { path, err } => write!(f, "cannot lock {}: {err}", path.display()),
        }
    }
}

impl std::error::Error for LockError {}

/// The lock file that guards `state_file`.
pub fn lock_path(state_file: &Path) -> PathBuf {
    let mut name = state_file.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    state_file.with_file_name(name)
}

/// Takes the lock for `state_file` without waiting, creating its directory when missing (as the
/// state file's first write would), and writes this process's pid into it.
pub fn acquire(state_file: &Path) -> Result<StateLock, LockError> {
    let path = lock_path(state_file);
    let io = |err: std::io::Error| LockError::Io {
        path: path.clone(),
        err,
    };
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            // Never through a symlink: a root daemon must not be made to create or lock a file
            // somewhere else.
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(&path)
    };
    let file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            open().map_err(io)?
        }
        r => r.map_err(io)?,
    };
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(LockError::Held {
                state: state_file.to_owned(),
                holder,
            });
        }
        Err((_, e)) => return Err(io(e.into())),
    };
    // The pid is only for the message a second daemon prints; the lock is what counts.
    let pid = format!("{}\n", std::process::id());
    lock.set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| lock.write_all(pid.as_bytes()))
        .map_err(io)?;
    Ok(StateLock { _lock: lock, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_state_file_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("run/linkfarm/state.json");
        let first = acquire(&state).expect("the first daemon gets the lock");
        assert_eq!(first.path(), dir.path().join("run/linkfarm/state.json.lock"));
        // flock locks belong to the open file description: a second open in this process
        // conflicts exactly as a second process would.
        match acquire(&state) {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        acquire(&state).expect("free again once the holder is gone");
    }

    #[test]
    fn the_lock_file_is_never_opened_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("state.json.lock")).unwrap();
        let e = acquire(&dir.path().join("state.json")).unwrap_err();
        assert!(matches!(e, LockError::Io { .. }), "{e}");
        assert!(!elsewhere.exists(), "nothing was created through the link");
    }
}
