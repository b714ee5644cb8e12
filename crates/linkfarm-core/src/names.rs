//! Name filters: the `exclude` globs of a farm (and of an inbox), matched against single names.
//!
//! A no-op pass of a farm with `entries: "*"` matches every name of `target_dir` against
//! `exclude`, whose default is `.*`. Through `GlobSet` that is a `Candidate` built per name (an
//! allocation and a search for the extension) and a regex: 13 % of the instructions of a no-op
//! `check` over 10,000 links. The patterns people write are nearly always a literal, `lit*` or
//! `*lit`; those are answered here by comparing bytes, and only the rest go to the `GlobSet`. The
//! answer is the same as `GlobSet::is_match` for every name (a property test checks it).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};

/// A set of glob patterns over single names, with fast paths for the common shapes.
#[derive(Debug, Clone, Default)]
pub struct NameFilter {
    exact: Vec<Vec<u8>>,
    prefixes: Vec<Vec<u8>>,
    suffixes: Vec<Vec<u8>>,
    globs: Option<GlobSet>,
}

/// Bytes with a meaning in a glob (`globset`'s syntax); a pattern without them is a literal.
fn is_literal(b: &[u8]) -> bool {
    !b.iter()
        .any(|c| matches!(c, b'*' | b'?' | b'[' | b']' | b'{' | b'}' | b'\\'))
}

impl NameFilter {
    /// Compiles `patterns`; the error names the first pattern that is not a valid glob.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, (String, globset::Error)> {
        let mut f = NameFilter::default();
        let mut slow = GlobSetBuilder::new();
        let mut any_slow = false;
        for p in patterns {
            let glob = Glob::new(p).map_err(|e| (p.to_owned(), e))?;
            let b = p.as_bytes();
            if is_literal(b) {
                f.exact.push(b.to_vec());
            } else if b.len() > 1 && b.ends_with(b"*") && is_literal(&b[..b.len() - 1]) {
                f.prefixes.push(b[..b.len() - 1].to_vec());
            } else if b.len() > 1 && b.starts_with(b"*") && is_literal(&b[1..]) {
                f.suffixes.push(b[1..].to_vec());
            } else {
                slow.add(glob);
                any_slow = true;
            }
        }
        if any_slow {
            f.globs = Some(slow.build().map_err(|e| (String::new(), e))?);
        }
        Ok(f)
    }

    /// Whether no pattern is set.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty() && self.suffixes.is_empty() && self.globs.is_none()
    }

    /// Whether `name` matches one of the patterns.
    pub fn is_match(&self, name: impl AsRef<OsStr>) -> bool {
        let name = name.as_ref();
        let b = name.as_bytes();
        self.exact.iter().any(|e| e == b)
            || self.prefixes.iter().any(|p| b.starts_with(p))
            || self.suffixes.iter().any(|s| b.ends_with(s))
            || self.globs.as_ref().is_some_and(|g| g.is_match(Path::new(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PATTERNS: &[&str] = &[
        ".*", "*.part", "*.tmp", "~$*", "tmp-*", "exact", "*", "a*b", "?x", "[ab]*", "{c,d}*", "*.", "**",
    ];

    fn glob(pats: &[&str]) -> GlobSet {
        let mut b = GlobSetBuilder::new();
        for p in pats {
            b.add(Glob::new(p).unwrap());
        }
        b.build().unwrap()
    }

    #[test]
    fn the_shapes_take_their_fast_path() {
        let f = NameFilter::new([".*", "*.part", "~$*", "lost+found", "a?c"]).unwrap();
        assert_eq!(f.prefixes, [b".".to_vec(), b"~$".to_vec()]);
        assert_eq!(f.suffixes, [b".part".to_vec()]);
        assert_eq!(f.exact, [b"lost+found".to_vec()]);
        assert!(f.globs.is_some(), "a?c needs the glob engine");
        assert!(NameFilter::new([]).unwrap().is_empty());
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let (p, _) = NameFilter::new(["ok", "a[b"]).unwrap_err();
        assert_eq!(p, "a[b");
    }

    proptest! {
        /// The fast paths answer exactly as GlobSet does.
        #[test]
        fn same_answer_as_globset(
            pick in proptest::collection::vec(0..PATTERNS.len(), 0..4),
            name in "[.~$a-e*?xtmp-]{0,8}(\\.part|\\.tmp)?",
        ) {
            let pats: Vec<&str> = pick.iter().map(|i| PATTERNS[*i]).collect();
            let f = NameFilter::new(pats.iter().copied()).unwrap();
            prop_assert_eq!(f.is_match(&name), glob(&pats).is_match(Path::new(&name)), "{:?} {:?}", pats, name);
        }
    }
}
