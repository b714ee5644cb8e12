//! Lexical path arithmetic: normalising configured paths, computing relative link text, and
//! deciding whether a link's text points into a target directory. Purely lexical by design: the
//! planner must judge a link by its text, never by following it.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

/// Normalises `path` lexically: drops `.`, resolves `..` against the preceding component, removes
/// duplicate and trailing slashes. A `..` above the root stays at the root, as the kernel does.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::Prefix(_) | Component::RootDir => out.push(comp.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() && !path.has_root() {
                    out.push("..");
                }
            }
            Component::Normal(c) => out.push(c),
        }
    }
    out
}

/// `path` made absolute against `base` (when relative) and normalised.
pub fn absolutize(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalize(path)
    } else {
        normalize(&base.join(path))
    }
}

/// The path from directory `from` to `to`, both absolute and normal: `../../models/vae`.
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to_c: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to_c).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to_c[common..] {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Where a link with text `text`, living in `link_dir`, points, resolved lexically.
pub fn resolve_link_text(link_dir: &Path, text: &Path) -> PathBuf {
    absolutize(link_dir, text)
}

/// When `text` (a link in `link_dir`) resolves lexically into `target_dir`, the first component
/// below it (the target name), or an empty name for `target_dir` itself. `None`: a foreign link.
pub fn managed_target(link_dir: &Path, target_dir: &Path, text: &Path) -> Option<Managed> {
    let resolved = resolve_link_text(link_dir, text);
    let rest = resolved.strip_prefix(target_dir).ok()?;
    let mut comps = rest.components();
    let first = comps.next().map(|c| c.as_os_str().to_owned());
    Some(Managed {
        target: first,
        deeper: comps.next().is_some(),
    })
}

/// What a managed link points at inside `target_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    /// The first component below `target_dir`; `None` when the link points at `target_dir` itself.
    pub target: Option<std::ffi::OsString>,
    /// Whether the link points below that component.
    pub deeper: bool,
}

/// Whether `inner` is `outer` or lies below it (both normal absolute paths).
pub fn is_within(inner: &Path, outer: &Path) -> bool {
    inner.starts_with(outer)
}

/// Whether `name` is one safe path component: not empty, `.`, `..`, no `/`, no NUL.
pub fn is_safe_name(name: &OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_cases() {
        assert_eq!(normalize(Path::new("/a/./b//c/")), PathBuf::from("/a/b/c"));
        assert_eq!(normalize(Path::new("/a/b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../a")), PathBuf::from("/a"));
        assert_eq!(
            absolutize(Path::new("/etc/lf"), Path::new("../x")),
            PathBuf::from("/etc/x")
        );
    }

    #[test]
    fn relative_cases() {
        let r = relative(Path::new("/v/cw/user/up"), Path::new("/v/cw/models/vae"));
        assert_eq!(r, PathBuf::from("../../models/vae"));
        assert_eq!(
            resolve_link_text(Path::new("/v/cw/user/up"), &r),
            PathBuf::from("/v/cw/models/vae")
        );
    }

    #[test]
    fn managed_cases() {
        let ld = Path::new("/v/up");
        let td = Path::new("/v/models");
        let m = managed_target(ld, td, Path::new("../models/vae")).unwrap();
        assert_eq!(m.target.as_deref(), Some(OsStr::new("vae")));
        assert!(managed_target(ld, td, Path::new("/etc/passwd")).is_none());
        assert!(managed_target(ld, td, Path::new("/v/models2/vae")).is_none());
        let deep = managed_target(ld, td, Path::new("/v/models/vae/x")).unwrap();
        assert!(deep.deeper);
    }

    #[test]
    fn safe_names() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(!is_safe_name(OsStr::new(bad)), "{bad:?}");
        }
        assert!(is_safe_name(OsStr::new("..a")));
    }
}
