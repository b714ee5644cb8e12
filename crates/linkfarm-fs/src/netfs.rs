//! Which network or FUSE filesystem a path is on: they deliver no inotify events for changes made
//! by other clients (so the daemon polls there), and they often lack `renameat2` flags (SPEC §14).

use std::path::Path;

/// The kind of network or FUSE filesystem `path` (or its nearest existing ancestor) is on:
/// `"NFS"`, `"CIFS/SMB"` or `"FUSE"`; `None` for a local filesystem.
pub fn network_fs(path: &Path) -> Option<&'static str> {
    use nix::sys::statfs::{statfs, FUSE_SUPER_MAGIC, NFS_SUPER_MAGIC, SMB_SUPER_MAGIC};
    const CIFS: i64 = 0xFF53_4D42;
    const SMB2: i64 = 0xFE53_4D42;
    let existing = path.ancestors().find(|p| p.exists())?;
    let t = statfs(existing).ok()?.filesystem_type();
    #[allow(clippy::unnecessary_cast)]
    let raw = t.0 as i64;
    if t == NFS_SUPER_MAGIC {
        Some("NFS")
    } else if t == SMB_SUPER_MAGIC || raw == CIFS || raw == SMB2 {
        Some("CIFS/SMB")
    } else if t == FUSE_SUPER_MAGIC {
        Some("FUSE")
    } else {
        None
    }
}
