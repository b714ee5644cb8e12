//! Reading Samba's effective share settings: from `testparm -s -v` when Samba is installed (its
//! own parser, with every default filled in), else from smb.conf itself, following `include =`,
//! with Samba's defaults for the few parameters the doctor judges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One section: normalised parameter name (lowercase, no spaces or underscores) → value.
pub type Section = BTreeMap<String, String>;

/// Where the settings came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `testparm -s -v FILE`.
    Testparm,
    /// Our own reading of the file (Samba is not installed).
    Parsed,
}

/// The sections of an smb.conf, `global` first.
#[derive(Debug, Clone)]
pub struct SmbConf {
    /// Section name (lowercase) → parameters.
    pub sections: BTreeMap<String, Section>,
    /// Original section names, for messages.
    pub names: BTreeMap<String, String>,
    /// How it was read.
    pub source: Source,
}

/// Parameter names compare without case, spaces or underscores, as Samba's do.
pub fn norm(key: &str) -> String {
    key.chars()
        .filter(|c| !c.is_whitespace() && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Parses INI text as Samba does (`;` and `#` comments, `\` continuation lines); `include =`
/// lines are followed through `include` (relative to nothing: Samba takes them as written).
pub fn parse(text: &str, include: &mut dyn FnMut(&str) -> Option<String>, conf: &mut SmbConf) {
    parse_in(text, include, 0, conf, &mut "global".to_string());
}

fn parse_in(
    text: &str,
    include: &mut dyn FnMut(&str) -> Option<String>,
    depth: usize,
    conf: &mut SmbConf,
    current: &mut String,
) {
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            pending.push(' ');
            continue;
        }
        let line = format!("{pending}{line}");
        pending.clear();
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            *current = name.trim().to_lowercase();
            conf.names
                .entry(current.clone())
                .or_insert_with(|| name.trim().to_string());
            conf.sections.entry(current.clone()).or_default();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (norm(k), v.trim().to_string());
        if k == "include" && depth < 16 {
            if let Some(inc) = include(&v) {
                // The included text continues the current section until it opens another.
                parse_in(&inc, include, depth + 1, conf, current);
            }
            continue;
        }
        conf.sections.entry(current.clone()).or_default().insert(k, v);
    }
}

/// Reads `file`: through `testparm` when it is installed, else by parsing it.
/// `LINKFARM_TESTPARM` names another testparm, or `none` to use the built-in parser.
pub fn read(file: &Path) -> Result<SmbConf, String> {
    let testparm = std::env::var("LINKFARM_TESTPARM").unwrap_or_else(|_| "testparm".into());
    let run = (testparm != "none").then(|| Command::new(&testparm).args(["-s", "-v"]).arg(file).output());
    if let Some(Ok(out)) = run {
        if out.status.success() {
            let mut conf = SmbConf::empty(Source::Testparm);
            let text = String::from_utf8_lossy(&out.stdout);
            parse(&text, &mut |_| None, &mut conf);
            return Ok(conf);
        }
        return Err(format!(
            "testparm rejects {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut conf = SmbConf::empty(Source::Parsed);
    let base: PathBuf = file.parent().unwrap_or(Path::new("/")).to_owned();
    parse(
        &text,
        &mut |inc| {
            let p = Path::new(inc);
            let p = if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            };
            std::fs::read_to_string(p).ok()
        },
        &mut conf,
    );
    Ok(conf)
}

impl SmbConf {
    fn empty(source: Source) -> Self {
        let mut names = BTreeMap::new();
        names.insert("global".to_string(), "global".to_string());
        let mut sections = BTreeMap::new();
        sections.insert("global".to_string(), Section::new());
        SmbConf {
            sections,
            names,
            source,
        }
    }

    /// The shares (not `global`, `homes`, `printers`) with a path.
    pub fn shares(&self) -> Vec<(String, PathBuf)> {
        self.sections
            .iter()
            .filter(|(n, _)| !matches!(n.as_str(), "global" | "homes" | "printers" | "print$"))
            .filter_map(|(n, s)| {
                let path = s.get("path")?;
                Some((
                    self.names.get(n).cloned().unwrap_or_else(|| n.clone()),
                    PathBuf::from(path),
                ))
            })
            .collect()
    }

    fn get(&self, share: &str, key: &str) -> Option<&String> {
        self.sections
            .get(&share.to_lowercase())
            .and_then(|s| s.get(&norm(key)))
    }

    fn global(&self, key: &str) -> Option<&String> {
        self.sections.get("global").and_then(|s| s.get(&norm(key)))
    }

    /// A share parameter, else its `[global]` value, else Samba's default.
    pub fn value(&self, share: &str, key: &str) -> String {
        self.get(share, key)
            .or_else(|| self.global(key))
            .cloned()
            .unwrap_or_else(|| default_of(key).to_string())
    }

    /// A boolean share parameter with Samba's synonyms and defaults.
    pub fn flag(&self, share: &str, key: &str) -> bool {
        truthy(&self.value(share, key))
    }

    /// Whether the share is writable (`read only = no`, or `writeable`/`writable`/`write ok = yes`).
    pub fn writable(&self, share: &str) -> bool {
        for syn in ["writeable", "writable", "write ok"] {
            if let Some(v) = self.get(share, syn).or_else(|| self.global(syn)) {
                return truthy(v);
            }
        }
        !self.flag(share, "read only")
    }

    /// A global-only boolean.
    pub fn global_flag(&self, key: &str) -> bool {
        truthy(
            &self
                .global(key)
                .cloned()
                .unwrap_or_else(|| default_of(key).to_string()),
        )
    }

    /// `unix extensions`, which Samba 4.16+ calls `smb1 unix extensions` (testparm prints only
    /// that name; smb.conf files use either).
    pub fn unix_extensions(&self) -> bool {
        match self
            .global("smb1 unix extensions")
            .or_else(|| self.global("unix extensions"))
        {
            Some(v) => truthy(v),
            None => true,
        }
    }
}

fn truthy(v: &str) -> bool {
    matches!(v.trim().to_lowercase().as_str(), "yes" | "true" | "1" | "on")
}

/// Samba 4.17's defaults for the parameters the doctor judges.
fn default_of(key: &str) -> &'static str {
    match norm(key).as_str() {
        "followsymlinks" => "yes",
        "widelinks" => "no",
        "unixextensions" | "smb1unixextensions" => "yes",
        "allowinsecurewidelinks" => "no",
        "readonly" => "yes",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str, includes: &[(&str, &str)]) -> SmbConf {
        let mut c = SmbConf::empty(Source::Parsed);
        let map: BTreeMap<String, String> = includes
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        parse(text, &mut |p| map.get(p).cloned(), &mut c);
        c
    }

    #[test]
    fn names_compare_without_case_spaces_or_underscores() {
        let c = conf(
            "[Share]\n  path = /srv\n  Follow_Symlinks = No\n  wideLinks=yes\n",
            &[],
        );
        assert!(!c.flag("share", "follow symlinks"));
        assert!(c.flag("Share", "wide links"));
        assert_eq!(c.shares(), vec![("Share".to_string(), PathBuf::from("/srv"))]);
    }

    #[test]
    fn defaults_and_global_fallback() {
        let c = conf("[global]\n unix extensions = no\n[s]\n path = /x\n", &[]);
        assert!(c.flag("s", "follow symlinks"), "default yes");
        assert!(!c.flag("s", "wide links"), "default no");
        assert!(!c.global_flag("unix extensions"));
        assert!(!c.writable("s"), "read only defaults to yes");
    }

    #[test]
    fn writable_synonyms() {
        assert!(conf("[s]\npath=/x\nwriteable = yes\n", &[]).writable("s"));
        assert!(conf("[s]\npath=/x\nread only = no\n", &[]).writable("s"));
        assert!(!conf("[s]\npath=/x\nwrite ok = no\n", &[]).writable("s"));
    }

    #[test]
    fn includes_and_continuations_are_followed() {
        let c = conf(
            "[global]\ninclude = /etc/samba/shares.conf\n",
            &[(
                "/etc/samba/shares.conf",
                "[ki_Daten]\npath = /vol/service/cw\nvfs objects = \\\n  recycle\n",
            )],
        );
        assert_eq!(c.value("ki_Daten", "vfs objects"), "recycle");
        assert_eq!(c.shares().len(), 1);
    }

    #[test]
    fn comments_are_ignored() {
        let c = conf("# c\n; c\n[s]\n path = /x\n ; wide links = yes\n", &[]);
        assert!(!c.flag("s", "wide links"));
    }
}
