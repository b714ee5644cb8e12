//! The `inboxes:` section of the config (SPEC §10): raw types that remember where each value was
//! written, and their validation into [`Inbox`]es next to the farms, with the same kind of
//! line:column errors and hints as the farms get.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::{check_name, dir_path, duration, parse_owner, scalar_text, Diags, IdLookup, Scalar};
use crate::inbox::{CheckKind, Folders, Inbox, InboxFolder, ModelFormat, OnExists, COMPANION_EXTENSIONS};
use crate::names::NameFilter;
use crate::paths::{absolutize, is_within};
use crate::spec::Farm;

/// `exclude` when the inbox does not say: dot files, and the temp names of the usual copiers
/// (browsers' `.part`, editors' `.tmp`, Office's `~$` lock files).
pub const DEFAULT_EXCLUDE: &[&str] = &[".*", "*.part", "*.tmp", "~$*"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInbox {
    name: Spanned<String>,
    dir: Spanned<String>,
    target_dir: Spanned<String>,
    folders: Option<Spanned<RawFolders>>,
    exclude: Option<Spanned<Vec<Spanned<String>>>>,
    accept: Option<Spanned<Vec<Spanned<String>>>>,
    companions: Option<Spanned<Vec<Spanned<String>>>>,
    companion_max_size: Option<Spanned<Scalar>>,
    max_size: Option<Spanned<Scalar>>,
    settle: Option<Spanned<Scalar>>,
    on_exists: Option<OnExists>,
    check_kind: Option<CheckKind>,
    scanner: Option<Spanned<Vec<Spanned<String>>>>,
    owner: Option<Spanned<Scalar>>,
    file_mode: Option<Spanned<Scalar>>,
    dir_mode: Option<Spanned<Scalar>>,
    refused_dir: Option<Spanned<String>>,
}

/// `folders:` is the string `"*"` or a list; written by hand so that list items keep their
/// locations (as `entries:` of a farm).
pub(super) enum RawFolders {
    All(String),
    List(Vec<Spanned<RawFolder>>),
}

impl<'de> Deserialize<'de> for RawFolders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFolders;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of folders, or the string \"*\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawFolders, E> {
                Ok(RawFolders::All(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawFolders, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(RawFolders::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One list item: `name` or `{ folder: a, target: b }`.
pub(super) struct RawFolder {
    folder: String,
    target: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFolderMap {
    folder: String,
    target: String,
}

impl<'de> Deserialize<'de> for RawFolder {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFolder;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a folder name, or { folder: NAME, target: NAME }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawFolder, E> {
                Ok(RawFolder {
                    folder: v.to_owned(),
                    target: v.to_owned(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawFolder, A::Error> {
                let m = RawFolderMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawFolder {
                    folder: m.folder,
                    target: m.target,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a size: plain bytes (a number or digits), or digits with `KiB`, `MiB`, `GiB`, `TiB`
/// (powers of 1024; a space before the unit is allowed).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("`{text}` is not a size"));
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("`{text}`: number too large"))?;
    let shift = match t[digits..].trim_start() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        u @ ("K" | "KB" | "k" | "kB" | "M" | "MB" | "G" | "GB" | "T" | "TB") => {
            return Err(format!("`{text}`: `{u}` is ambiguous"))
        }
        other => return Err(format!("`{text}`: unknown unit `{other}`")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

fn size(v: &Spanned<Scalar>, key: &str, d: &mut Diags) -> Option<u64> {
    let r = match &v.value {
        Scalar::Str(s) => parse_size(s),
        Scalar::Int(i) if *i >= 0 && *i <= u64::MAX as i128 => Ok(*i as u64),
        other => Err(format!("{} is not a size", scalar_text(other))),
    };
    match r {
        Ok(0) => {
            d.at(
                v.referenced,
                format!("`{key}` is 0: nothing could be accepted"),
                "write e.g. 20MiB or 100GiB",
            );
            None
        }
        Ok(x) => Some(x),
        Err(e) => {
            d.at(
                v.referenced,
                format!("`{key}`: {e}"),
                "write bytes, or a number with KiB, MiB, GiB or TiB (powers of 1024), e.g. 100GiB",
            );
            None
        }
    }
}

fn mode(m: &Spanned<Scalar>, key: &str, d: &mut Diags) -> Option<u32> {
    let hint = "write the mode as a quoted octal string, like \"0644\"";
    match &m.value {
        Scalar::Str(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            match u32::from_str_radix(digits, 8) {
                Ok(v) if v <= 0o7777 && !digits.is_empty() => Some(v),
                _ => {
                    d.at(
                        m.referenced,
                        format!("`{key}: \"{s}\"` is not an octal mode"),
                        hint,
                    );
                    None
                }
            }
        }
        other => {
            d.at(
                m.referenced,
                format!("`{key}: {}` is ambiguous as a YAML number", scalar_text(other)),
                hint,
            );
            None
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphanumeric() || (i > 0 && matches!(b, b'.' | b'_' | b'-')))
}

fn validate_inbox(raw: RawInbox, base: &Path, ids: &dyn IdLookup, d: &mut Diags) -> Option<Inbox> {
    let before = d.0.len();
    let name = raw.name.value.clone();
    if !valid_name(&name) {
        d.at(
            raw.name.referenced,
            format!("inbox name `{}` is not allowed", name.escape_debug()),
            "use letters, digits, `.`, `_` and `-`, starting with a letter or digit",
        );
    }
    let dir = dir_path(&raw.dir, "dir", base, d);
    let target_dir = dir_path(&raw.target_dir, "target_dir", base, d);
    if let (Some(i), Some(t)) = (&dir, &target_dir) {
        if is_within(i, t) || is_within(t, i) {
            d.at(
                raw.dir.referenced,
                format!(
                    "dir {} and target_dir {} are inside one another",
                    i.display(),
                    t.display()
                ),
                "keep the inbox and the real model folders in separate directories (on one filesystem)",
            );
        }
    }

    let patterns: Vec<Spanned<String>> = match raw.exclude {
        Some(list) => list.value,
        None => DEFAULT_EXCLUDE
            .iter()
            .map(|p| Spanned::new((*p).to_owned(), Location::UNKNOWN, Location::UNKNOWN))
            .collect(),
    };
    for p in &patterns {
        if let Err((_, e)) = NameFilter::new([p.value.as_str()]) {
            d.at(
                p.referenced,
                format!("bad exclude pattern `{}`: {}", p.value, e.kind()),
                "write a shell glob such as `.*` or `*.part`",
            );
        }
    }
    // Every pattern compiled above; a bad one was reported with its location.
    let exclude = NameFilter::new(patterns.iter().map(|p| p.value.as_str())).unwrap_or_default();

    let folders = match raw.folders {
        None => Some(Folders::All),
        Some(f) => match f.value {
            RawFolders::All(s) if s == "*" => Some(Folders::All),
            RawFolders::All(s) => {
                d.at(
                    f.referenced,
                    format!("`folders: \"{s}\"` is not understood"),
                    "write a list of folder names, or the string \"*\" for every folder of target_dir",
                );
                None
            }
            RawFolders::List(list) => {
                if list.is_empty() {
                    d.at(
                        f.referenced,
                        "`folders` is empty",
                        "list at least one folder, or use \"*\"",
                    );
                }
                let mut seen: BTreeMap<String, Location> = BTreeMap::new();
                let mut out = Vec::new();
                for e in list {
                    let ok_folder = check_name(&e.value.folder, e.referenced, "folder name", d);
                    let ok_target = check_name(&e.value.target, e.referenced, "target name", d);
                    if ok_folder {
                        if let Some(first) = seen.insert(e.value.folder.clone(), e.referenced) {
                            d.at(
                                e.referenced,
                                format!(
                                    "folder `{}` is listed twice (first at line {})",
                                    e.value.folder,
                                    first.line()
                                ),
                                "every folder name may appear only once per inbox",
                            );
                        }
                    }
                    if ok_folder && ok_target {
                        out.push(InboxFolder {
                            folder: e.value.folder,
                            target: e.value.target,
                        });
                    }
                }
                Some(Folders::List(out))
            }
        },
    };

    let accept = match raw.accept {
        None => vec![ModelFormat::Safetensors, ModelFormat::Gguf],
        Some(list) => {
            if list.value.is_empty() {
                d.at(
                    list.referenced,
                    "`accept` is empty: the inbox would refuse every model",
                    "list the formats to accept: safetensors, gguf, pickle",
                );
            }
            let mut out = Vec::new();
            for w in &list.value {
                match ModelFormat::from_word(&w.value) {
                    Some(f) if !out.contains(&f) => out.push(f),
                    Some(_) => {}
                    None => d.at(
                        w.referenced,
                        format!("unknown format `{}` in `accept`", w.value.escape_debug()),
                        "`accept` takes safetensors, gguf and pickle",
                    ),
                }
            }
            out.sort();
            out
        }
    };

    let mut companions = Vec::new();
    for c in raw.companions.iter().flat_map(|l| &l.value) {
        let ext = c.value.trim_start_matches('.').to_ascii_lowercase();
        if COMPANION_EXTENSIONS.contains(&ext.as_str()) {
            if !companions.contains(&ext) {
                companions.push(ext);
            }
        } else {
            d.at(
                c.referenced,
                format!(
                    "`{}` is not a companion type linkfarm can check",
                    c.value.escape_debug()
                ),
                format!("`companions` takes {}", COMPANION_EXTENSIONS.join(", ")),
            );
        }
    }

    let companion_max_size = match &raw.companion_max_size {
        None => Some(20 << 20),
        Some(v) => size(v, "companion_max_size", d),
    };
    let max_size = match &raw.max_size {
        None => Some(100 << 30),
        Some(v) => size(v, "max_size", d),
    };
    let settle = match &raw.settle {
        None => Some(std::time::Duration::from_secs(10)),
        Some(v) => duration(v, "settle", d),
    };

    let scanner: Vec<String> = raw
        .scanner
        .as_ref()
        .map(|l| l.value.iter().map(|a| a.value.clone()).collect())
        .unwrap_or_default();
    if let Some(l) = &raw.scanner {
        if let Some(first) = l.value.first() {
            if first.value.is_empty() || first.value.contains('\0') {
                d.at(
                    first.referenced,
                    "the scanner's program is empty",
                    "write the program first, e.g. clamdscan",
                );
            }
            if !scanner.iter().any(|a| a.contains("{}") || a == "-") {
                d.at(
                    l.referenced,
                    "the scanner is never given the file",
                    "add \"{}\" (the file's path) or \"-\" (the file on stdin) to its arguments",
                );
            }
            if let Some(nul) = l.value.iter().find(|a| a.value.contains('\0')) {
                d.at(
                    nul.referenced,
                    "a scanner argument contains NUL",
                    "remove the NUL",
                );
            }
        }
    }

    let owner = raw.owner.as_ref().and_then(|o| parse_owner(o, ids, d));
    let file_mode = match &raw.file_mode {
        None => Some(0o644),
        Some(m) => {
            match mode(m, "file_mode", d) {
                Some(v) if v & 0o7111 != 0 => {
                    d.at(
                    m.referenced,
                    format!("`file_mode: \"{v:04o}\"` gives accepted files exec, setuid, setgid or sticky bits"),
                    "accepted models are data: use e.g. \"0644\" or \"0640\"",
                );
                    None
                }
                v => v,
            }
        }
    };
    let dir_mode = match &raw.dir_mode {
        None => Some(0o755),
        Some(m) => mode(m, "dir_mode", d),
    };

    let refused_dir = match (&raw.refused_dir, &dir) {
        (Some(r), Some(i)) if !r.value.is_empty() && !r.value.contains('\0') => {
            Some(absolutize(i, Path::new(&r.value)))
        }
        (Some(r), _) => {
            d.at(
                r.referenced,
                "`refused_dir` is empty or contains NUL",
                "write a folder name such as _refused",
            );
            None
        }
        (None, Some(i)) => Some(i.join("_refused")),
        (None, None) => None,
    };
    if let (Some(r), Some(i), Some(t)) = (&refused_dir, &dir, &target_dir) {
        let loc = raw
            .refused_dir
            .as_ref()
            .map(|r| r.referenced)
            .unwrap_or(raw.name.referenced);
        let first_below_dir = r.strip_prefix(i).ok().and_then(|rest| rest.components().next());
        let in_listed_folder = match (&folders, first_below_dir) {
            (Some(Folders::List(l)), Some(c)) => {
                l.iter().any(|f| std::ffi::OsStr::new(&f.folder) == c.as_os_str())
            }
            _ => false,
        };
        if r == i || is_within(r, t) || is_within(t, r) || is_within(i, r) || in_listed_folder {
            d.at(
                loc,
                format!(
                    "refused_dir {} overlaps the inbox's dir, one of its folders, or target_dir",
                    r.display()
                ),
                "use a folder of its own inside dir, e.g. _refused (the default)",
            );
        }
    }

    if d.0.len() != before {
        return None;
    }
    Some(Inbox {
        name,
        dir: dir?,
        target_dir: target_dir?,
        folders: folders?,
        exclude,
        exclude_patterns: patterns.into_iter().map(|p| p.value).collect(),
        accept,
        companions,
        companion_max_size: companion_max_size?,
        max_size: max_size?,
        settle: settle?,
        on_exists: raw.on_exists.unwrap_or(OnExists::Refuse),
        check_kind: raw.check_kind.unwrap_or(CheckKind::Warn),
        scanner,
        owner,
        file_mode: file_mode?,
        dir_mode: dir_mode?,
        refused_dir: refused_dir?,
    })
}

/// Validates the `inboxes:` list against itself and the farms: names unique among farms and
/// inboxes, no inbox directory inside another inbox's or a farm's directories.
pub(super) fn validate_inboxes(
    raw: Vec<Spanned<RawInbox>>,
    base: &Path,
    ids: &dyn IdLookup,
    farms: &[(Location, Farm)],
    d: &mut Diags,
) -> Vec<Inbox> {
    let mut out: Vec<(Location, Inbox)> = Vec::new();
    for ri in raw {
        let loc = ri.referenced;
        let Some(inbox) = validate_inbox(ri.value, base, ids, d) else {
            continue;
        };
        if let Some((_, f)) = farms.iter().find(|(_, f)| f.name == inbox.name) {
            d.at(
                loc,
                format!("inbox `{}` is named like farm `{}`", inbox.name, f.name),
                "give every farm and inbox a unique name",
            );
        } else if let Some((first, _)) = out.iter().find(|(_, o)| o.name == inbox.name) {
            d.at(
                loc,
                format!(
                    "duplicate inbox name `{}` (first at line {})",
                    inbox.name,
                    first.line()
                ),
                "give every farm and inbox a unique name",
            );
        }
        let overlap = |p: &Path| is_within(&inbox.dir, p) || is_within(p, &inbox.dir);
        let clash: Option<(String, PathBuf)> = farms
            .iter()
            .flat_map(|(_, f)| {
                [
                    (format!("link_dir of farm `{}`", f.name), f.link_dir.clone()),
                    (format!("target_dir of farm `{}`", f.name), f.target_dir.clone()),
                ]
            })
            .chain(out.iter().flat_map(|(_, o)| {
                [
                    (format!("dir of inbox `{}`", o.name), o.dir.clone()),
                    (format!("target_dir of inbox `{}`", o.name), o.target_dir.clone()),
                ]
            }))
            .find(|(_, p)| overlap(p));
        if let Some((what, p)) = clash {
            d.at(
                loc,
                format!(
                    "inbox `{}`: dir {} overlaps the {what} ({})",
                    inbox.name,
                    inbox.dir.display(),
                    p.display()
                ),
                "give each inbox a directory of its own, apart from links and model folders",
            );
        }
        out.push((loc, inbox));
    }
    out.into_iter().map(|(_, i)| i).collect()
}
