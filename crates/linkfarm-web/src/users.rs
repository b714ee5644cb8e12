//! The users file: one `name:$argon2id$...` PHC string per line, written by
//! `linkfarm web user add|remove` and read by the service, which re-reads it when it changes.
//!
//! The file is replaced atomically (temp file, fsync, rename), mode 0640, keeping the group of
//! the file it replaces so that the service's group can still read it.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

/// A problem with the users file, naming it.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Cannot read or write the file.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        err: std::io::Error,
    },
    /// A line that is not `name:$argon2id$...`.
    #[error("{path}:{line}: not `name:$argon2id$...`; remove the line or re-add the user with `linkfarm web user add NAME --replace`")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// The user name cannot be stored.
    #[error("user name `{0}` is not allowed: use letters, digits, `.`, `_`, `-` and `@`, at most 64")]
    BadName(String),
    /// `add` without `--replace` for a name that exists.
    #[error("user `{0}` exists; add --replace to set a new password")]
    Exists(String),
    /// `remove` of a name that does not exist.
    #[error("no user `{0}`")]
    Missing(String),
    /// An empty password.
    #[error("the password is empty")]
    EmptyPassword,
}

/// Whether `name` can be a user name (it is written into logs, xattrs and a `:`-separated file).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// Reads the users file into `name -> PHC string`.
pub fn read(path: &Path) -> Result<BTreeMap<String, String>, UsersError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(err) => {
            return Err(UsersError::Io {
                path: path.to_owned(),
                err,
            })
        }
    };
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, phc) = line.split_once(':').ok_or(UsersError::Syntax {
            path: path.to_owned(),
            line: i + 1,
        })?;
        if !valid_name(name) || PasswordHash::new(phc).is_err() {
            return Err(UsersError::Syntax {
                path: path.to_owned(),
                line: i + 1,
            });
        }
        out.insert(name.to_owned(), phc.to_owned());
    }
    Ok(out)
}

/// Writes `users` to `path` atomically, mode 0640, keeping the replaced file's group.
pub fn write(path: &Path, users: &BTreeMap<String, String>) -> Result<(), UsersError> {
    let io = |err| UsersError::Io {
        path: path.to_owned(),
        err,
    };
    let group = std::fs::metadata(path).ok().map(|m| m.gid());
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut text = String::from("# linkfarm web users: managed by `linkfarm web user add|remove`\n");
    for (name, phc) in users {
        text.push_str(&format!("{name}:{phc}\n"));
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&tmp)
        .map_err(io)?;
    let done = (|| {
        f.write_all(text.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
        if let Some(g) = group {
            nix::unistd::fchown(&f, None, Some(nix::unistd::Gid::from_raw(g)))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done.map_err(io)
}

/// An argon2id PHC string for `password`, with a fresh salt.
pub fn hash(password: &str) -> Result<String, UsersError> {
    if password.is_empty() {
        return Err(UsersError::EmptyPassword);
    }
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters and a generated salt")
        .to_string())
}

/// `user add`: sets `name`'s password (`replace` to change an existing one).
pub fn add(path: &Path, name: &str, password: &str, replace: bool) -> Result<(), UsersError> {
    if !valid_name(name) {
        return Err(UsersError::BadName(name.into()));
    }
    let mut users = read(path)?;
    if users.contains_key(name) && !replace {
        return Err(UsersError::Exists(name.into()));
    }
    users.insert(name.into(), hash(password)?);
    write(path, &users)
}

/// `user remove`.
pub fn remove(path: &Path, name: &str) -> Result<(), UsersError> {
    let mut users = read(path)?;
    if users.remove(name).is_none() {
        return Err(UsersError::Missing(name.into()));
    }
    write(path, &users)
}

/// The service's view of the users file: re-read whenever its inode, size or mtime changes, and
/// a cache of verified passwords so that a tus client sending Basic auth on every chunk does
/// not pay argon2 each time.
pub struct Users {
    path: PathBuf,
    inner: Mutex<Cached>,
    /// Argon2 takes 19 MiB per verification: 20 clients logging in at once measured a 390 MB
    /// peak. Two at a time bound it (and slow down password guessing).
    verifying: tokio::sync::Semaphore,
}

#[derive(Default)]
struct Cached {
    stamp: Option<(u64, u64, SystemTime)>,
    users: BTreeMap<String, String>,
    verified: BTreeMap<String, [u8; 32]>,
}

impl Users {
    /// Reads nothing yet; the first check reads the file.
    pub fn new(path: PathBuf) -> Self {
        Users {
            path,
            inner: Mutex::new(Cached::default()),
            verifying: tokio::sync::Semaphore::new(2),
        }
    }

    fn refresh(&self, c: &mut Cached) {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.ino(), m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        if stamp != c.stamp || stamp.is_none() {
            match read(&self.path) {
                Ok(u) => c.users = u,
                Err(e) => {
                    tracing::error!("users file not re-read, keeping the previous users: {e}");
                    return;
                }
            }
            c.stamp = stamp;
            c.verified.clear();
        }
    }

    /// Whether `password` is `name`'s (argon2 runs on the blocking pool).
    pub async fn check(self: &std::sync::Arc<Self>, name: &str, password: &str) -> bool {
        let phc = {
            let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            self.refresh(&mut c);
            let Some(phc) = c.users.get(name).cloned() else {
                return false;
            };
            let key = fingerprint(&phc, password);
            if c.verified.get(name) == Some(&key) {
                return true;
            }
            phc
        };
        let Ok(_slot) = self.verifying.acquire().await else {
            return false;
        };
        let pw = password.to_owned();
        let phc2 = phc.clone();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc2)
                .is_ok_and(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
        })
        .await
        .unwrap_or(false);
        if ok {
            let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            c.verified.insert(name.to_owned(), fingerprint(&phc, password));
        }
        ok
    }
}

fn fingerprint(phc: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(phc.as_bytes());
    h.update([0]);
    h.update(password.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_replace_remove_and_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users");
        add(&p, "alice", "pw1", false).unwrap();
        assert!(matches!(
            add(&p, "alice", "pw2", false),
            Err(UsersError::Exists(_))
        ));
        add(&p, "alice", "pw2", true).unwrap();
        add(&p, "bob", "x", false).unwrap();
        let u = read(&p).unwrap();
        assert!(u["alice"].starts_with("$argon2id$"));
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640);
        remove(&p, "alice").unwrap();
        assert!(matches!(remove(&p, "alice"), Err(UsersError::Missing(_))));
        assert_eq!(read(&p).unwrap().keys().collect::<Vec<_>>(), vec!["bob"]);
        assert!(matches!(add(&p, "a:b", "x", false), Err(UsersError::BadName(_))));
    }

    #[test]
    fn a_bad_line_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users");
        std::fs::write(&p, "# c\nalice:plaintext\n").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains(":2:"), "{e}");
    }
}
