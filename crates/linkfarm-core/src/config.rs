//! Turns the YAML text of a config file into a validated [`Config`], in two stages: serde-saphyr
//! reads the text into raw types that remember where each value was written, then `validate`
//! checks every rule of SPEC §1 and builds the [`Config`] with absolute paths and numeric owners.
//!
//! Every error names the file, line and column and says what to do. This module never reads the
//! file itself (the caller passes the text) and never looks at the filesystem: user and group
//! names are resolved through the [`IdLookup`] the caller provides.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use globset::Glob;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::names::NameFilter;
use crate::paths::{absolutize, is_safe_name, is_within};
use crate::spec::{Config, Entries, Entry, Farm, LinkStyle, OnConflict, Owner, Settings, Watcher};
use crate::time::parse_duration;
use crate::TEMP_PREFIX;

mod inbox;
pub use inbox::{parse_size, DEFAULT_EXCLUDE};

/// Resolves user and group names to ids (the binary implements it with the system databases).
pub trait IdLookup {
    /// The uid of user `name`, if it exists.
    fn user(&self, name: &str) -> Option<u32>;
    /// The gid of group `name`, if it exists.
    fn group(&self, name: &str) -> Option<u32>;
}

/// One problem in a config file, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line, 0 when unknown.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

/// A config file that cannot be used, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    /// An error about the file as a whole (cannot be read, unsafe permissions, ...).
    pub fn whole_file(file: &Path, message: impl Into<String>, hint: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            diagnostics: vec![Diagnostic {
                line: 0,
                column: 0,
                message: message.into(),
                hint: hint.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if d.line > 0 {
                write!(
                    f,
                    "{}:{}:{}: {}",
                    self.file.display(),
                    d.line,
                    d.column,
                    d.message
                )?;
            } else {
                write!(f, "{}: {}", self.file.display(), d.message)?;
            }
            if !d.hint.is_empty() {
                write!(f, "\n  hint: {}", d.hint)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A scalar as written: durations, modes and owners accept several YAML types, and we want to tell
/// the user precisely when the type is the problem (`dir_mode: 0755` is a decimal number in YAML 1.2).
#[derive(Debug, Clone)]
enum Scalar {
    Str(String),
    Int(i128),
    Other(String),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Other(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Other(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: Option<Spanned<Scalar>>,
    farms: Option<Spanned<Vec<Spanned<RawFarm>>>>,
    inboxes: Option<Spanned<Vec<Spanned<inbox::RawInbox>>>>,
    #[serde(default)]
    settings: Option<RawSettings>,
    /// `linkfarm web`'s section: its keys are checked here, its values by [`crate::web::parse_web`].
    #[serde(default)]
    #[allow(dead_code)]
    web: Option<crate::web::RawWeb>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFarm {
    name: Spanned<String>,
    target_dir: Spanned<String>,
    link_dir: Spanned<String>,
    entries: Spanned<RawEntries>,
    exclude: Option<Spanned<Vec<Spanned<String>>>>,
    link_style: Option<LinkStyle>,
    create_targets: Option<bool>,
    owner: Option<Spanned<Scalar>>,
    dir_mode: Option<Spanned<Scalar>>,
    prune: Option<bool>,
    on_conflict: Option<OnConflict>,
    quarantine_dir: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    resync_interval: Option<Spanned<Scalar>>,
    adopt_after: Option<Spanned<Scalar>>,
    watcher: Option<Watcher>,
    poll_interval: Option<Spanned<Scalar>>,
    state_file: Option<Spanned<String>>,
    metrics_file: Option<Spanned<String>>,
    upload_log: Option<Spanned<String>>,
}

/// `entries:` is either the string `"*"` or a list; written by hand so that the list items keep
/// their locations (serde's untagged enums buffer the input and lose them).
enum RawEntries {
    All(String),
    List(Vec<Spanned<RawEntry>>),
}

impl<'de> Deserialize<'de> for RawEntries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEntries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of entries, or the string \"*\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawEntries, E> {
                Ok(RawEntries::All(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawEntries, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(RawEntries::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One list item: `name` or `{ link: a, target: b }`.
struct RawEntry {
    link: String,
    target: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntryMap {
    link: String,
    target: String,
}

impl<'de> Deserialize<'de> for RawEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a folder name, or { link: NAME, target: NAME }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawEntry, E> {
                Ok(RawEntry {
                    link: v.to_owned(),
                    target: v.to_owned(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawEntry, A::Error> {
                let m = RawEntryMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawEntry {
                    link: m.link,
                    target: m.target,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Collects diagnostics; validation goes on after an error so one run shows every problem.
struct Diags(Vec<Diagnostic>);

impl Diags {
    fn at(&mut self, loc: Location, message: impl Into<String>, hint: impl Into<String>) {
        self.0.push(Diagnostic {
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
            hint: hint.into(),
        });
    }
}

/// Parses and validates the config `text` read from `file` (absolute), resolving relative paths
/// against the file's directory and owner names through `ids`.
pub fn parse_config(text: &str, file: &Path, ids: &dyn IdLookup) -> Result<Config, ConfigError> {
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| yaml_error(file, &e))?;
    validate(raw, file, ids)
}

fn yaml_error(file: &Path, e: &serde_saphyr::Error) -> ConfigError {
    let plain = e.without_snippet();
    let (line, column) = plain
        .location()
        .filter(|l| *l != Location::UNKNOWN)
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let opts = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
    let mut message = plain.render_with_options(opts);
    // The rendered text repeats the position we already print in front.
    for tail in [" at line ", ", set DuplicateKeyPolicy"] {
        if let Some(i) = message.find(tail) {
            message.truncate(i);
        }
    }
    let hint = if message.contains("unknown field") {
        "remove or correct the key; the keys are listed in the README's config reference"
    } else if message.contains("duplicate") {
        "each key may appear only once in a mapping; delete one of them"
    } else if message.contains("missing field") {
        "add the required key"
    } else if message.contains("unknown variant") {
        "use one of the listed values"
    } else {
        "fix the YAML at this position"
    };
    ConfigError {
        file: file.to_owned(),
        diagnostics: vec![Diagnostic {
            line,
            column,
            message,
            hint: hint.into(),
        }],
    }
}

fn validate(raw: RawConfig, file: &Path, ids: &dyn IdLookup) -> Result<Config, ConfigError> {
    let base = file.parent().unwrap_or(Path::new("/"));
    let mut d = Diags(Vec::new());

    match &raw.version {
        None => d.0.push(Diagnostic {
            line: 1,
            column: 1,
            message: "missing `version`".into(),
            hint: "add `version: 1` at the top of the file".into(),
        }),
        Some(v) => match &v.value {
            Scalar::Int(1) => {}
            Scalar::Str(s) if s == "1" => {}
            other => d.at(
                v.referenced,
                format!("unknown version {}", scalar_text(other)),
                "this linkfarm understands `version: 1`",
            ),
        },
    }

    let settings = validate_settings(raw.settings.unwrap_or_default(), base, &mut d);

    let mut farms = Vec::new();
    let mut names: HashMap<String, Location> = HashMap::new();
    // A config may hold only inboxes; then `farms` may be missing or empty.
    let has_inboxes = raw.inboxes.as_ref().is_some_and(|l| !l.value.is_empty());
    match raw.farms {
        None if has_inboxes => {}
        None => d.0.push(Diagnostic {
            line: 1,
            column: 1,
            message: "missing `farms`".into(),
            hint: "add a `farms:` list with at least one farm (see examples/cw.yaml), or an `inboxes:` list"
                .into(),
        }),
        Some(list) if list.value.is_empty() && has_inboxes => {}
        Some(list) if list.value.is_empty() => d.at(
            list.referenced,
            "`farms` is empty",
            "add at least one farm (see examples/cw.yaml)",
        ),
        Some(list) => {
            for rf in list.value {
                let loc = rf.referenced;
                if let Some(farm) = validate_farm(rf.value, base, ids, &mut d) {
                    if let Some(first) = names.insert(farm.name.clone(), loc) {
                        d.at(
                            loc,
                            format!(
                                "duplicate farm name `{}` (first at line {})",
                                farm.name,
                                first.line()
                            ),
                            "give every farm a unique name",
                        );
                    }
                    farms.push((loc, farm));
                }
            }
        }
    }
    check_overlaps(&farms, &mut d);
    share_link_dirs(&mut farms);
    if let Some(list) = &raw.inboxes {
        if list.value.is_empty() {
            d.at(
                list.referenced,
                "`inboxes` is empty",
                "add an inbox (see examples/cw-inbox.yaml), or remove the key",
            );
        }
    }
    let raw_inboxes = raw.inboxes.map(|l| l.value).unwrap_or_default();
    let inboxes = inbox::validate_inboxes(raw_inboxes, base, ids, &farms, &mut d);

    if d.0.is_empty() {
        Ok(Config {
            path: file.to_owned(),
            farms: farms.into_iter().map(|(_, f)| f).collect(),
            inboxes,
            settings,
        })
    } else {
        d.0.sort_by_key(|x| (x.line, x.column));
        Err(ConfigError {
            file: file.to_owned(),
            diagnostics: d.0,
        })
    }
}

fn scalar_text(s: &Scalar) -> String {
    match s {
        Scalar::Str(s) => format!("\"{s}\""),
        Scalar::Int(i) => i.to_string(),
        Scalar::Other(o) => o.clone(),
    }
}

fn duration(v: &Spanned<Scalar>, key: &str, d: &mut Diags) -> Option<std::time::Duration> {
    let r = match &v.value {
        Scalar::Str(s) => parse_duration(s),
        Scalar::Int(0) => Ok(std::time::Duration::ZERO),
        other => Err(format!("{} needs a unit", scalar_text(other))),
    };
    match r {
        Ok(x) => Some(x),
        Err(e) => {
            d.at(
                v.referenced,
                format!("`{key}`: {e}"),
                "write a duration like 10s, 10m, 1h or 0",
            );
            None
        }
    }
}

fn validate_settings(raw: RawSettings, base: &Path, d: &mut Diags) -> Settings {
    let mut s = Settings::default();
    if let Some(v) = &raw.resync_interval {
        if let Some(x) = duration(v, "resync_interval", d) {
            s.resync_interval = (!x.is_zero()).then_some(x);
        }
    }
    if let Some(v) = &raw.adopt_after {
        if let Some(x) = duration(v, "adopt_after", d) {
            s.adopt_after = x;
        }
    }
    if let Some(v) = &raw.poll_interval {
        if let Some(x) = duration(v, "poll_interval", d) {
            if x.is_zero() {
                d.at(
                    v.referenced,
                    "`poll_interval` must be greater than 0",
                    "write e.g. 30s",
                );
            } else {
                s.poll_interval = x;
            }
        }
    }
    if let Some(w) = raw.watcher {
        s.watcher = w;
    }
    if let Some(p) = &raw.state_file {
        if p.value.is_empty() {
            d.at(
                p.referenced,
                "`state_file` is empty",
                "write a path such as /run/linkfarm/state.json",
            );
        } else {
            s.state_file = absolutize(base, Path::new(&p.value));
        }
    }
    if let Some(p) = &raw.metrics_file {
        // node exporter's textfile collector reads only `*.prom`: any other name would be
        // written faithfully and never scraped, with nothing to say why.
        if !p.value.ends_with(".prom") {
            d.at(
                p.referenced,
                format!("`metrics_file` `{}` does not end in .prom", p.value.escape_debug()),
                "node exporter reads only *.prom files: write e.g. /var/lib/prometheus/node-exporter/linkfarm.prom",
            );
        } else {
            s.metrics_file = Some(absolutize(base, Path::new(&p.value)));
        }
    }
    if let Some(p) = &raw.upload_log {
        if p.value.is_empty() || p.value.contains('\0') {
            d.at(
                p.referenced,
                "`upload_log` is empty or contains NUL",
                "write a path such as /var/lib/linkfarm/uploads.jsonl",
            );
        } else {
            s.upload_log = absolutize(base, Path::new(&p.value));
        }
    }
    s
}

fn check_name(v: &str, loc: Location, what: &str, d: &mut Diags) -> bool {
    if !is_safe_name(std::ffi::OsStr::new(v)) {
        d.at(
            loc,
            format!("{what} `{}` is not a single folder name", v.escape_debug()),
            "a name must not be empty, `.` or `..`, and must not contain `/` or NUL",
        );
        false
    } else if v.starts_with(TEMP_PREFIX) {
        d.at(
            loc,
            format!("{what} `{v}` uses linkfarm's reserved prefix `{TEMP_PREFIX}`"),
            "choose another name",
        );
        false
    } else {
        true
    }
}

fn dir_path(v: &Spanned<String>, key: &str, base: &Path, d: &mut Diags) -> Option<PathBuf> {
    if v.value.is_empty() {
        d.at(
            v.referenced,
            format!("`{key}` is empty"),
            "write the directory's path",
        );
        return None;
    }
    if v.value.contains('\0') {
        d.at(
            v.referenced,
            format!("`{key}` contains NUL"),
            "write the directory's path",
        );
        return None;
    }
    let p = absolutize(base, Path::new(&v.value));
    if p.parent().is_none() {
        d.at(
            v.referenced,
            format!("`{key}` must not be `/`"),
            "write the directory's path",
        );
        return None;
    }
    Some(p)
}

fn validate_farm(raw: RawFarm, base: &Path, ids: &dyn IdLookup, d: &mut Diags) -> Option<Farm> {
    let before = d.0.len();
    let name = raw.name.value.clone();
    let valid_name = name
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_alphanumeric() || (i > 0 && matches!(b, b'.' | b'_' | b'-')));
    if name.is_empty() || !valid_name {
        d.at(
            raw.name.referenced,
            format!("farm name `{}` is not allowed", name.escape_debug()),
            "use letters, digits, `.`, `_` and `-`, starting with a letter or digit",
        );
    }
    let target_dir = dir_path(&raw.target_dir, "target_dir", base, d);
    let link_dir = dir_path(&raw.link_dir, "link_dir", base, d);
    if let (Some(t), Some(l)) = (&target_dir, &link_dir) {
        if is_within(l, t) || is_within(t, l) {
            d.at(
                raw.link_dir.referenced,
                format!(
                    "link_dir {} and target_dir {} are inside one another",
                    l.display(),
                    t.display()
                ),
                "keep the links and the real folders in separate directories",
            );
        }
    }

    let entries = match raw.entries.value {
        RawEntries::All(s) if s == "*" => {
            let pats: Vec<Spanned<String>> = match raw.exclude {
                Some(list) => list.value,
                None => vec![Spanned::new(".*".into(), Location::UNKNOWN, Location::UNKNOWN)],
            };
            for p in &pats {
                if let Err(e) = Glob::new(&p.value) {
                    d.at(
                        p.referenced,
                        format!("bad exclude pattern `{}`: {}", p.value, e.kind()),
                        "write a shell glob such as `.*` or `tmp-*`",
                    );
                }
            }
            // Every pattern compiled above; a bad one was reported with its location.
            let exclude = NameFilter::new(pats.iter().map(|p| p.value.as_str())).unwrap_or_default();
            Some(Entries::All {
                exclude,
                patterns: pats.into_iter().map(|p| p.value).collect(),
            })
        }
        RawEntries::All(s) => {
            d.at(
                raw.entries.referenced,
                format!("`entries: \"{s}\"` is not understood"),
                "write a list of folder names, or the string \"*\" for every folder of target_dir",
            );
            None
        }
        RawEntries::List(list) => {
            if let Some(ex) = &raw.exclude {
                d.at(
                    ex.referenced,
                    "`exclude` only applies to `entries: \"*\"`",
                    "remove `exclude`, or use `entries: \"*\"`",
                );
            }
            if list.is_empty() {
                d.at(
                    raw.entries.referenced,
                    "`entries` is empty",
                    "list at least one folder, or use \"*\"",
                );
            }
            let mut seen: BTreeMap<String, Location> = BTreeMap::new();
            let mut out = Vec::new();
            for e in list {
                let ok_link = check_name(&e.value.link, e.referenced, "link name", d);
                let ok_target = check_name(&e.value.target, e.referenced, "target name", d);
                if ok_link {
                    if let Some(first) = seen.insert(e.value.link.clone(), e.referenced) {
                        d.at(
                            e.referenced,
                            format!(
                                "link `{}` is listed twice (first at line {})",
                                e.value.link,
                                first.line()
                            ),
                            "every link name may appear only once per farm",
                        );
                    }
                }
                if ok_link && ok_target {
                    out.push(Entry {
                        link: e.value.link,
                        target: e.value.target,
                    });
                }
            }
            Some(Entries::List(out))
        }
    };

    let owner = raw.owner.as_ref().and_then(|o| parse_owner(o, ids, d));
    let dir_mode = match &raw.dir_mode {
        None => Some(0o755),
        Some(m) => parse_mode(m, d),
    };
    let quarantine_dir = match (&raw.quarantine_dir, &link_dir) {
        (Some(q), _) => dir_path(q, "quarantine_dir", base, d),
        (None, Some(l)) => Some(
            l.parent()
                .unwrap_or(Path::new("/"))
                .join(".linkfarm-quarantine")
                .join(&name),
        ),
        (None, None) => None,
    };
    if let (Some(q), Some(l), Some(t)) = (&quarantine_dir, &link_dir, &target_dir) {
        if is_within(q, l) || is_within(q, t) || is_within(l, q) || is_within(t, q) {
            let loc = raw
                .quarantine_dir
                .as_ref()
                .map(|q| q.referenced)
                .unwrap_or(raw.name.referenced);
            d.at(
                loc,
                format!("quarantine_dir {} overlaps link_dir or target_dir", q.display()),
                "put the quarantine beside link_dir, e.g. ../.linkfarm-quarantine",
            );
        }
    }

    if d.0.len() != before {
        return None;
    }
    Some(Farm {
        name,
        target_dir: target_dir?,
        link_dir: link_dir?,
        entries: entries?,
        link_style: raw.link_style.unwrap_or(LinkStyle::Absolute),
        create_targets: raw.create_targets.unwrap_or(false),
        owner,
        dir_mode: dir_mode?,
        prune: raw.prune.unwrap_or(true),
        on_conflict: raw.on_conflict.unwrap_or(OnConflict::Adopt),
        quarantine_dir: quarantine_dir?,
        neighbours: BTreeSet::new(),
    })
}

fn parse_mode(m: &Spanned<Scalar>, d: &mut Diags) -> Option<u32> {
    let hint = "write the mode as a quoted octal string, like \"0755\"";
    match &m.value {
        Scalar::Str(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            match u32::from_str_radix(digits, 8) {
                Ok(v) if v <= 0o7777 && !digits.is_empty() => Some(v),
                _ => {
                    d.at(
                        m.referenced,
                        format!("`dir_mode: \"{s}\"` is not an octal mode"),
                        hint,
                    );
                    None
                }
            }
        }
        other => {
            d.at(
                m.referenced,
                format!("`dir_mode: {}` is ambiguous as a YAML number", scalar_text(other)),
                hint,
            );
            None
        }
    }
}

fn parse_owner(o: &Spanned<Scalar>, ids: &dyn IdLookup, d: &mut Diags) -> Option<Owner> {
    let text = match &o.value {
        Scalar::Str(s) => s.clone(),
        Scalar::Int(i) if *i >= 0 && *i < u32::MAX as i128 => i.to_string(),
        other => {
            d.at(
                o.referenced,
                format!("owner {} is not valid", scalar_text(other)),
                "write \"user:group\"",
            );
            return None;
        }
    };
    let (u, g) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text.as_str(), None),
    };
    let mut ok = true;
    let mut resolve = |part: &str, kind: &str, f: &dyn Fn(&str) -> Option<u32>| -> Option<u32> {
        if part.is_empty() {
            return None;
        }
        if let Ok(n) = part.parse::<u32>() {
            if n != u32::MAX {
                return Some(n);
            }
        }
        match f(part) {
            Some(id) => Some(id),
            None => {
                ok = false;
                d.at(
                    o.referenced,
                    format!("{kind} `{part}` does not exist on this system"),
                    format!("create the {kind}, or write a numeric id"),
                );
                None
            }
        }
    };
    let uid = resolve(u, "user", &|n| ids.user(n));
    let gid = g.and_then(|g| resolve(g, "group", &|n| ids.group(n)));
    if !ok {
        return None;
    }
    if uid.is_none() && gid.is_none() {
        d.at(
            o.referenced,
            format!("owner `{text}` names nobody"),
            "write \"user:group\", \"user\" or \":group\"",
        );
        return None;
    }
    Some(Owner { uid, gid })
}

/// Two farms must never manage the same path: same link, or one farm's link_dir inside a link
/// that another farm manages.
fn check_overlaps(farms: &[(Location, Farm)], d: &mut Diags) {
    for (i, (loc_a, a)) in farms.iter().enumerate() {
        for (_, b) in &farms[..i] {
            let msg = if a.link_dir == b.link_dir {
                match (&a.entries, &b.entries) {
                    (Entries::List(la), Entries::List(lb)) => {
                        la.iter().find(|e| lb.iter().any(|f| f.link == e.link)).map(|e| {
                            format!(
                                "farms `{}` and `{}` both manage link {}",
                                b.name,
                                a.name,
                                a.link_dir.join(&e.link).display()
                            )
                        })
                    }
                    _ => Some(format!(
                        "farms `{}` and `{}` share link_dir {} and one of them uses entries \"*\"",
                        b.name,
                        a.name,
                        a.link_dir.display()
                    )),
                }
            } else {
                manages_below(b, &a.link_dir)
                    .or_else(|| manages_below(a, &b.link_dir))
                    .map(|m| format!("farms `{}` and `{}` overlap: {m}", b.name, a.name))
            };
            if let Some(msg) = msg {
                d.at(*loc_a, msg, "give each farm its own link paths");
            }
        }
    }
}

/// Farms may share a `link_dir` with explicit, distinct link names (`check_overlaps` refuses
/// the rest). Each one learns the names its neighbours manage there, so that its prune leaves them
/// alone: a link of farm `two` resolves into farm `one`'s `target_dir` when they share it, and
/// would otherwise look like one of `one`'s links that is no longer desired.
fn share_link_dirs(farms: &mut [(Location, Farm)]) {
    let names: Vec<(PathBuf, Vec<String>)> = farms
        .iter()
        .map(|(_, f)| {
            let links = f.explicit().unwrap_or(&[]).iter().map(|e| e.link.clone());
            (f.link_dir.clone(), links.collect())
        })
        .collect();
    for (i, (_, farm)) in farms.iter_mut().enumerate() {
        for (j, (dir, links)) in names.iter().enumerate() {
            if i != j && *dir == farm.link_dir {
                farm.neighbours.extend(links.iter().cloned());
            }
        }
    }
}

fn manages_below(farm: &Farm, path: &Path) -> Option<String> {
    let rest = path.strip_prefix(&farm.link_dir).ok()?;
    let first = rest.components().next()?.as_os_str();
    let managed = match &farm.entries {
        Entries::All { .. } => true,
        Entries::List(l) => l.iter().any(|e| std::ffi::OsStr::new(&e.link) == first),
    };
    managed.then(|| format!("{} lies inside a link of farm `{}`", path.display(), farm.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoIds;
    impl IdLookup for NoIds {
        fn user(&self, n: &str) -> Option<u32> {
            (n == "alice").then_some(1000)
        }
        fn group(&self, n: &str) -> Option<u32> {
            (n == "staff").then_some(50)
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_config(text, Path::new("/etc/linkfarm/linkfarm.yaml"), &NoIds)
    }

    #[test]
    fn minimal_config_with_defaults() {
        let c = parse("version: 1\nfarms:\n  - name: m\n    target_dir: ../models\n    link_dir: up\n    entries: [vae]\n").unwrap();
        let f = &c.farms[0];
        assert_eq!(f.target_dir, PathBuf::from("/etc/models"));
        assert_eq!(f.link_dir, PathBuf::from("/etc/linkfarm/up"));
        assert_eq!(
            f.quarantine_dir,
            PathBuf::from("/etc/linkfarm/.linkfarm-quarantine/m")
        );
        assert_eq!(f.dir_mode, 0o755);
        assert!(f.prune);
        assert_eq!(c.settings, Settings::default());
    }

    #[test]
    fn owner_forms() {
        let base = "version: 1\nfarms:\n  - name: m\n    target_dir: /t\n    link_dir: /l\n    entries: [a]\n    owner: ";
        let o = |s: &str| parse(&format!("{base}{s}\n")).map(|c| c.farms[0].owner);
        assert_eq!(
            o("\"alice:staff\"").unwrap(),
            Some(Owner {
                uid: Some(1000),
                gid: Some(50)
            })
        );
        assert_eq!(
            o("\"1000:1000\"").unwrap(),
            Some(Owner {
                uid: Some(1000),
                gid: Some(1000)
            })
        );
        assert_eq!(
            o("\":staff\"").unwrap(),
            Some(Owner {
                uid: None,
                gid: Some(50)
            })
        );
        assert_eq!(
            o("1000").unwrap(),
            Some(Owner {
                uid: Some(1000),
                gid: None
            })
        );
    }
}
