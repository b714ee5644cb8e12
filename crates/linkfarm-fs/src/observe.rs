//! Observation: reads a farm's directories into a [`linkfarm_core::Observed`] with as few
//! syscalls as the facts allow (one `getdents` stream per directory, one `readlinkat` per link;
//! `fstatat` only where a time or owner is needed). Read-only by construction.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{open, readlinkat, AtFlags};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};

use linkfarm_core::{
    desired_links_among, desired_pairs, Child, Farm, LinkDirObs, Node, Observed, OnConflict, TargetKind,
    TargetObs,
};

use crate::parent_of;
use crate::prims::{is_dir, is_symlink, lstat_at, open_dir_at, open_dir_path, DIR_FLAGS, MAX_DEPTH};

/// The `getdents` type of what `st` describes.
fn file_type(st: &FileStat) -> Option<Type> {
    let k = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    Some(if k == SFlag::S_IFLNK {
        Type::Symlink
    } else if k == SFlag::S_IFDIR {
        Type::Directory
    } else if k == SFlag::S_IFREG {
        Type::File
    } else if k == SFlag::S_IFIFO {
        Type::Fifo
    } else if k == SFlag::S_IFSOCK {
        Type::Socket
    } else if k == SFlag::S_IFCHR {
        Type::CharacterDevice
    } else {
        Type::BlockDevice
    })
}

fn newest(st: &FileStat) -> SystemTime {
    let t = |s: i64, ns: i64| {
        if s < 0 {
            UNIX_EPOCH
        } else {
            UNIX_EPOCH + Duration::new(s as u64, ns.clamp(0, 999_999_999) as u32)
        }
    };
    t(st.st_mtime, st.st_mtime_nsec).max(t(st.st_ctime, st.st_ctime_nsec))
}

/// Why `link_dir` is refused, or its open fd.
pub(crate) enum LinkDirOpen {
    Open { parent: OwnedFd, dir: OwnedFd },
    Problem(LinkDirObs),
}

/// Opens `link_dir` safely: its parent by path, checked against the real path recorded at the
/// first open (`anchor`), then `link_dir` itself with `O_NOFOLLOW`.
pub(crate) fn open_link_dir(farm: &Farm, anchor: &mut Option<PathBuf>) -> LinkDirOpen {
    let parent_path = parent_of(&farm.link_dir);
    let parent = match open_dir_path(parent_path) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return LinkDirOpen::Problem(LinkDirObs::Missing { parent_exists: false }),
        Err(e) => {
            return LinkDirOpen::Problem(LinkDirObs::Unreadable(format!(
                "{}: {}",
                parent_path.display(),
                e.desc()
            )))
        }
    };
    // Where the parent really is. If /proc is not mounted there is nothing to compare; the
    // O_NOFOLLOW on link_dir itself still holds.
    if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", parent.as_raw_fd())) {
        match anchor {
            None => *anchor = Some(real),
            Some(a) if *a != real => {
                return LinkDirOpen::Problem(LinkDirObs::Symlink(format!(
                    "a component of the path of link_dir {} changed to a symlink since start-up: \
                     it resolved to {}, now to {} (reload linkfarm if the change is intended)",
                    farm.link_dir.display(),
                    a.display(),
                    real.display()
                )))
            }
            Some(_) => {}
        }
    }
    let name = farm.link_dir.file_name().unwrap_or_default();
    match open_dir_at(parent.as_fd(), name) {
        Ok(dir) => LinkDirOpen::Open { parent, dir },
        Err(Errno::ENOENT) => LinkDirOpen::Problem(LinkDirObs::Missing { parent_exists: true }),
        Err(Errno::ELOOP) => LinkDirOpen::Problem(symlink_refusal(farm)),
        Err(Errno::ENOTDIR) => match lstat_at(parent.as_fd(), name) {
            Ok(st) if is_symlink(&st) => LinkDirOpen::Problem(symlink_refusal(farm)),
            _ => LinkDirOpen::Problem(LinkDirObs::NotDir),
        },
        Err(e) => LinkDirOpen::Problem(LinkDirObs::Unreadable(e.desc().into())),
    }
}

fn symlink_refusal(farm: &Farm) -> LinkDirObs {
    LinkDirObs::Symlink(format!(
        "{} is a symlink; linkfarm never works through a symlinked link_dir (security)",
        farm.link_dir.display()
    ))
}

/// One directory entry: its name and the type `getdents` reported.
pub(crate) fn list(dir: BorrowedFd<'_>) -> nix::Result<Vec<(OsString, Option<Type>)>> {
    // Dir takes ownership of the fd it reads: give it a duplicate (no path lookup). The offset
    // is shared, which is harmless: the iterator rewinds when finished, and the original fd is
    // only used for *at calls.
    let fd = dir
        .try_clone_to_owned()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    let mut d = Dir::from_fd(fd)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push((OsStr::from_bytes(name).to_owned(), e.file_type()));
    }
    Ok(out)
}

/// Observes one farm.
pub fn observe(farm: &Farm) -> Observed {
    observe_farm(farm, &mut None)
}

pub(crate) fn observe_farm(farm: &Farm, anchor: &mut Option<PathBuf>) -> Observed {
    let (target, target_fd) = observe_target(farm);
    let desired = desired_pairs(farm, &target);
    let link_dir = match (&target, open_link_dir(farm, anchor)) {
        // A degraded farm changes nothing, so there is nothing to read on the link side either.
        (TargetObs::Present(_), LinkDirOpen::Open { dir, .. }) => {
            let walk: BTreeMap<&OsStr, &OsStr> = if farm.on_conflict == OnConflict::Keep {
                BTreeMap::new()
            } else {
                desired.iter().copied().collect()
            };
            let names: BTreeSet<&OsStr> = desired.iter().map(|d| d.0).collect();
            observe_links(
                farm,
                dir.as_fd(),
                &names,
                &walk,
                target_fd.as_ref().map(|f| f.as_fd()),
            )
        }
        (TargetObs::Present(_), LinkDirOpen::Problem(p)) => p,
        _ => LinkDirObs::Present(BTreeMap::new()),
    };
    Observed { target, link_dir }
}

/// Observes only `names` of `link_dir` for a spot pass; `target` (the target side of an earlier
/// full observation) says which of them are desired. The names are looked up one by one
/// (`fstatat`, `readlinkat`), so the cost does not grow with the farm.
pub(crate) fn observe_names(
    farm: &Farm,
    anchor: &mut Option<PathBuf>,
    target: &TargetObs,
    names: &BTreeSet<OsString>,
    held: Option<BorrowedFd<'_>>,
) -> LinkDirObs {
    let desired = desired_links_among(farm, target, names);
    // Only reads happen through this fd, so a plain O_NOFOLLOW open of the path is enough here
    // (or the held fd, which the writes use too): the applier opens link_dir again with the full
    // anchor check before it writes anything, unless it holds the fd, and refuses (which sends
    // the daemon to a full pass) if the path changed.
    let reopened = match held {
        Some(fd) => fd
            .try_clone_to_owned()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0))),
        None => open(&farm.link_dir, DIR_FLAGS, Mode::empty()),
    };
    let opened = match reopened {
        Ok(dir) => Ok(dir),
        Err(_) => match open_link_dir(farm, anchor) {
            LinkDirOpen::Open { dir, .. } => Ok(dir),
            LinkDirOpen::Problem(p) => Err(p),
        },
    };
    let link_dir = match opened {
        Ok(dir) => {
            let walk: BTreeMap<&OsStr, &OsStr> = if farm.on_conflict == OnConflict::Keep {
                BTreeMap::new()
            } else {
                desired
                    .iter()
                    .map(|d| (d.link.as_os_str(), d.target.as_os_str()))
                    .collect()
            };
            let wanted: BTreeSet<&OsStr> = desired.iter().map(|d| d.link.as_os_str()).collect();
            // The target folder is only needed to walk a real folder at a link name.
            let mut target_fd: Option<OwnedFd> = None;
            let mut map = BTreeMap::new();
            for name in names {
                let ty = match lstat_at(dir.as_fd(), name) {
                    Ok(st) => file_type(&st),
                    Err(_) => continue,
                };
                if ty == Some(Type::Directory) && walk.contains_key(name.as_os_str()) && target_fd.is_none() {
                    target_fd = open_dir_path(&farm.target_dir).ok();
                }
                let fd = target_fd.as_ref().map(|f| f.as_fd());
                if let Some(node) = observe_entry(farm, dir.as_fd(), name, ty, &wanted, &walk, fd) {
                    map.insert(name.clone(), node);
                }
            }
            LinkDirObs::Present(map)
        }
        Err(p) => p,
    };
    link_dir
}

fn observe_target(farm: &Farm) -> (TargetObs, Option<OwnedFd>) {
    let fd = match open_dir_path(&farm.target_dir) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return (TargetObs::Missing, None),
        Err(Errno::ENOTDIR) => return (TargetObs::NotDir, None),
        Err(e) => return (TargetObs::Unreadable(e.desc().into()), None),
    };
    let entries = match list(fd.as_fd()) {
        Ok(e) => e,
        Err(e) => return (TargetObs::Unreadable(e.desc().into()), None),
    };
    let wanted_links: Option<BTreeSet<&str>> = farm
        .explicit()
        .map(|l| l.iter().map(|e| e.target.as_str()).collect());
    // Collected, then sorted once: getdents order is a hash order on ext4, and one B-tree
    // insert per name cost a fifth of a no-op pass's instructions at 10,000 links.
    let mut map = Vec::with_capacity(entries.len());
    for (name, ty) in entries {
        let kind = match ty {
            Some(Type::Directory) => TargetKind::Dir,
            Some(Type::Symlink) => {
                // A symlinked target only counts for an explicit entry, so only then is it followed.
                let wanted = wanted_links
                    .as_ref()
                    .is_some_and(|w| name.to_str().is_some_and(|n| w.contains(n)));
                if wanted && fstatat(fd.as_fd(), name.as_os_str(), AtFlags::empty()).is_ok_and(|s| is_dir(&s))
                {
                    TargetKind::LinkToDir
                } else {
                    TargetKind::Other
                }
            }
            Some(_) => TargetKind::Other,
            None => match lstat_at(fd.as_fd(), &name) {
                Ok(st) if is_dir(&st) => TargetKind::Dir,
                Ok(_) => TargetKind::Other,
                Err(_) => continue,
            },
        };
        map.push((name, kind));
    }
    (TargetObs::Present(sorted_map(map)), Some(fd))
}

/// A map from names that a directory listing returned (each once): sorted in place, then built in
/// one go.
fn sorted_map<V>(mut v: Vec<(OsString, V)>) -> BTreeMap<OsString, V> {
    v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    // Already sorted, so from_iter's own (stable) sort is a single linear check.
    v.into_iter().collect()
}

fn observe_links(
    farm: &Farm,
    dir: BorrowedFd<'_>,
    desired: &BTreeSet<&OsStr>,
    walk: &BTreeMap<&OsStr, &OsStr>,
    target_fd: Option<BorrowedFd<'_>>,
) -> LinkDirObs {
    let entries = match list(dir) {
        Ok(e) => e,
        Err(e) => return LinkDirObs::Unreadable(e.desc().into()),
    };
    let mut map = Vec::with_capacity(entries.len());
    for (name, ty) in entries {
        if let Some(node) = observe_entry(farm, dir, &name, ty, desired, walk, target_fd) {
            map.push((name, node));
        }
    }
    LinkDirObs::Present(sorted_map(map))
}

fn observe_entry(
    farm: &Farm,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    ty: Option<Type>,
    desired: &BTreeSet<&OsStr>,
    walk: &BTreeMap<&OsStr, &OsStr>,
    target_fd: Option<BorrowedFd<'_>>,
) -> Option<Node> {
    if in_flight_elsewhere(name) {
        return None;
    }
    if ty == Some(Type::Symlink) {
        match readlinkat(dir, name) {
            Ok(text) => {
                let owner = match farm.owner {
                    Some(_) => lstat_at(dir, name).ok().map(|s| (s.st_uid, s.st_gid)),
                    None => None,
                };
                return Some(Node::Symlink {
                    text: PathBuf::from(text),
                    owner,
                });
            }
            Err(Errno::ENOENT) => return None,
            // Replaced by something else since getdents: look at what it is now.
            Err(_) => {}
        }
    }
    let interesting = desired.contains(name);
    if !interesting && ty.is_some() && ty != Some(Type::Symlink) {
        // Undesired non-links are left alone, so their details do not matter.
        return Some(match ty {
            Some(Type::Directory) => Node::Dir {
                newest: UNIX_EPOCH,
                children: None,
            },
            Some(Type::File) => Node::File { newest: UNIX_EPOCH },
            _ => Node::Other { newest: UNIX_EPOCH },
        });
    }
    let st = lstat_at(dir, name).ok()?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    Some(if kind == SFlag::S_IFLNK {
        let text = readlinkat(dir, name).ok()?;
        Node::Symlink {
            text: PathBuf::from(text),
            owner: farm.owner.map(|_| (st.st_uid, st.st_gid)),
        }
    } else if kind == SFlag::S_IFDIR {
        let children = walk
            .get(name)
            .map(|target| observe_children(dir, name, target, target_fd));
        Node::Dir {
            newest: newest(&st),
            children,
        }
    } else if kind == SFlag::S_IFREG {
        Node::File { newest: newest(&st) }
    } else {
        Node::Other { newest: newest(&st) }
    })
}

/// Whether `name` is a temp name of another linkfarm process that is running: a `doctor`'s
/// SPEC §14 probe beside the daemon, or a second daemon's swap in flight. It is not a leftover,
/// and removing it would break that process's step (a probe that lost its links three times in
/// a row reported a full ext4 as having no renameat2 flags). Left out of the observation; once
/// that process has ended, the next pass sees a leftover and removes it.
fn in_flight_elsewhere(name: &OsStr) -> bool {
    match linkfarm_core::plan::temp_pid(name) {
        Some(pid) if pid != std::process::id() => {
            std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.starts_with(b"linkfarm"))
        }
        _ => false,
    }
}

/// The entries of a real folder at a link path, each with the newest time of its whole subtree.
fn observe_children(
    link_dir: BorrowedFd<'_>,
    name: &OsStr,
    target: &OsStr,
    target_fd: Option<BorrowedFd<'_>>,
) -> Vec<Child> {
    let Ok(fd) = open_dir_at(link_dir, name) else {
        return vec![Child {
            name: OsString::new(),
            newest: UNIX_EPOCH,
            exists_in_target: false,
            error: Some("cannot open the folder".into()),
        }];
    };
    let target_sub = target_fd.and_then(|t| open_dir_at(t, target).ok());
    let entries = match list(fd.as_fd()) {
        Ok(e) => e,
        Err(e) => {
            return vec![Child {
                name: OsString::new(),
                newest: UNIX_EPOCH,
                exists_in_target: false,
                error: Some(e.desc().into()),
            }]
        }
    };
    entries
        .into_iter()
        .map(|(child, _)| {
            let (newest, error) = match subtree_newest(fd.as_fd(), &child, 0) {
                Ok(t) => (t, None),
                Err(e) => (UNIX_EPOCH, Some(e)),
            };
            let exists_in_target = target_sub
                .as_ref()
                .is_some_and(|t| lstat_at(t.as_fd(), &child).is_ok());
            Child {
                name: child,
                newest,
                exists_in_target,
                error,
            }
        })
        .collect()
}

/// Newest mtime/ctime of `name` and everything below it, never following a symlink.
fn subtree_newest(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> Result<SystemTime, String> {
    let st = lstat_at(dir, name).map_err(|e| e.desc().to_string())?;
    let mut t = newest(&st);
    if is_dir(&st) {
        if depth >= MAX_DEPTH {
            return Err(format!("more than {MAX_DEPTH} levels deep"));
        }
        let fd = open_dir_at(dir, name).map_err(|e| e.desc().to_string())?;
        for (child, _) in list(fd.as_fd()).map_err(|e| e.desc().to_string())? {
            t = t.max(subtree_newest(fd.as_fd(), &child, depth + 1)?);
        }
    }
    Ok(t)
}
