//! The error of one filesystem operation: which operation, on which path, the errno, and for the
//! errnos an admin can fix, what to do.

use std::fmt;
use std::path::PathBuf;

use nix::errno::Errno;

/// A failed filesystem operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    /// The operation, e.g. `rename`.
    pub op: &'static str,
    /// The path it was about (for display; the call itself went through a dirfd).
    pub path: PathBuf,
    /// The error number.
    pub errno: Errno,
    /// Extra context.
    pub detail: Option<String>,
}

impl FsError {
    pub(crate) fn new(op: &'static str, path: PathBuf, errno: Errno) -> Self {
        FsError {
            op,
            path,
            errno,
            detail: None,
        }
    }

    pub(crate) fn with(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// What an admin can do about it, when there is something.
    pub fn hint(&self) -> Option<&'static str> {
        match self.errno {
            Errno::EROFS => Some(
                "read-only file system; under systemd, linkfarm.service's sandbox (ProtectSystem=strict) \
                 allows writes only to its ReadWritePaths=: add this tree with `systemctl edit linkfarm` \
                 ([Service] ReadWritePaths=/the/tree in /etc/systemd/system/linkfarm.service.d/override.conf), \
                 then `systemctl restart linkfarm`",
            ),
            Errno::EXDEV => Some(
                "linkfarm moves user data only within one filesystem; put quarantine_dir and the \
                 targets on the same filesystem as link_dir, or move the data by hand",
            ),
            Errno::ENOSPC | Errno::EDQUOT => Some("the filesystem is full; free space and linkfarm retries"),
            Errno::EACCES | Errno::EPERM => {
                Some("permission denied; run linkfarm as root, or as the owner of these directories")
            }
            _ => None,
        }
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.errno.desc())?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        if let Some(h) = self.hint() {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FsError {}
