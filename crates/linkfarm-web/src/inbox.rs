//! What `linkfarm web` needs to know of an inbox (SPEC §10), behind one small type.
//!
//! [`InboxSpec`] holds only the fields the web service decides with: where the folders are,
//! which formats and sizes the inbox accepts, and what happens to a name that exists. It is
//! read from the config text by [`from_config_text`] until the daemon's validated inbox type
//! exists on main; switching to that type means rewriting only [`from_config_text`].

use std::path::{Path, PathBuf};

use linkfarm_core::web::parse_size;
use linkfarm_formats::FileType;
use serde::Deserialize;

/// `on_exists` of an inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExists {
    /// A name that exists in the target is refused.
    Refuse,
    /// The daemon picks `name (2).ext`.
    Rename,
}

/// Which folders an inbox has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folders {
    /// One per real subdirectory of `target_dir` (looked up when asked).
    All,
    /// `(folder as clients see it, target subdirectory)`.
    List(Vec<(String, String)>),
}

/// One inbox, as far as the web service is concerned.
#[derive(Debug, Clone)]
pub struct InboxSpec {
    /// Unique name.
    pub name: String,
    /// Clients' uploads go into `dir/<folder>/`.
    pub dir: PathBuf,
    /// Accepted files end in `target_dir/<target>/`.
    pub target_dir: PathBuf,
    /// The folders.
    pub folders: Folders,
    /// Model formats accepted: `safetensors`, `gguf`, `pickle`.
    pub accept: Vec<String>,
    /// Companion extensions accepted beside models (`png`, `json`, ...).
    pub companions: Vec<String>,
    /// Largest model file.
    pub max_size: u64,
    /// Largest companion file.
    pub companion_max_size: u64,
    /// What the daemon does with a name that exists in the target.
    pub on_exists: OnExists,
}

/// Why a file name would be refused by the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameVerdict {
    /// Accepted, with the format its extension announces and the size limit for it.
    Ok(FileType, u64),
    /// An extension the inbox does not accept.
    NotAccepted,
}

impl InboxSpec {
    /// The folders as `(folder, target)`, in name order for `*`.
    pub fn folder_list(&self) -> Vec<(String, String)> {
        match &self.folders {
            Folders::List(l) => l.clone(),
            Folders::All => {
                let mut out: Vec<(String, String)> = std::fs::read_dir(&self.target_dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.'))
                    .map(|n| (n.clone(), n))
                    .collect();
                out.sort();
                out
            }
        }
    }

    /// The target subdirectory of `folder`, if the inbox has that folder.
    pub fn target_of(&self, folder: &str) -> Option<String> {
        self.folder_list()
            .into_iter()
            .find(|(f, _)| f == folder)
            .map(|(_, t)| t)
    }

    /// Whether the inbox would take a file of this name, judged by its extension.
    pub fn judge_name(&self, filename: &str) -> NameVerdict {
        match FileType::from_name(filename) {
            Some(t) if t.is_model() && self.accept.iter().any(|a| a == t.name()) => {
                NameVerdict::Ok(t, self.max_size)
            }
            Some(t @ FileType::Companion(_)) => {
                let ext = filename.rsplit_once('.').map(|x| x.1.to_ascii_lowercase());
                if ext.is_some_and(|e| self.companions.iter().any(|c| c.eq_ignore_ascii_case(&e))) {
                    NameVerdict::Ok(t, self.companion_max_size)
                } else {
                    NameVerdict::NotAccepted
                }
            }
            _ => NameVerdict::NotAccepted,
        }
    }
}

#[derive(Deserialize)]
struct Lenient {
    #[serde(default)]
    inboxes: Vec<LenientInbox>,
    #[serde(default)]
    settings: Option<LenientSettings>,
}

#[derive(Deserialize)]
struct LenientSettings {
    upload_log: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LenientFolders {
    All(String),
    List(Vec<LenientFolder>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LenientFolder {
    Same(String),
    Map { folder: String, target: String },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LenientSize {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
struct LenientInbox {
    name: String,
    dir: String,
    target_dir: String,
    folders: Option<LenientFolders>,
    accept: Option<Vec<String>>,
    companions: Option<Vec<String>>,
    max_size: Option<LenientSize>,
    companion_max_size: Option<LenientSize>,
    on_exists: Option<String>,
}

/// Default of `settings.upload_log` (SPEC §10).
pub const DEFAULT_UPLOAD_LOG: &str = "/var/lib/linkfarm/uploads.jsonl";

/// The inboxes and the upload log path of a config file's text (`file` absolute), with SPEC
/// §10's defaults. The whole file has been validated by the core before this is called.
pub fn from_config_text(text: &str, file: &Path) -> Result<(Vec<InboxSpec>, PathBuf), String> {
    let raw: Lenient = serde_saphyr::from_str(text).map_err(|e| format!("{}: {e}", file.display()))?;
    let base = file.parent().unwrap_or(Path::new("/"));
    let abs = |p: &str| linkfarm_core::paths::absolutize(base, Path::new(p));
    let size = |s: Option<LenientSize>, default: u64, key: &str, inbox: &str| match s {
        None => Ok(default),
        Some(LenientSize::Bytes(n)) => Ok(n),
        Some(LenientSize::Text(t)) => {
            parse_size(&t).map_err(|e| format!("{}: inbox `{inbox}`: `{key}`: {e}", file.display()))
        }
    };
    let mut out = Vec::new();
    for r in raw.inboxes {
        let folders = match r.folders {
            None => Folders::All,
            Some(LenientFolders::All(s)) if s == "*" => Folders::All,
            Some(LenientFolders::All(s)) => {
                return Err(format!(
                    "{}: inbox `{}`: folders: `{s}` is neither \"*\" nor a list",
                    file.display(),
                    r.name
                ))
            }
            Some(LenientFolders::List(l)) => Folders::List(
                l.into_iter()
                    .map(|f| match f {
                        LenientFolder::Same(n) => (n.clone(), n),
                        LenientFolder::Map { folder, target } => (folder, target),
                    })
                    .collect(),
            ),
        };
        let on_exists = match r.on_exists.as_deref() {
            None | Some("refuse") => OnExists::Refuse,
            Some("rename") => OnExists::Rename,
            Some(o) => {
                return Err(format!(
                    "{}: inbox `{}`: on_exists: `{o}`",
                    file.display(),
                    r.name
                ))
            }
        };
        out.push(InboxSpec {
            max_size: size(r.max_size, 100 << 30, "max_size", &r.name)?,
            companion_max_size: size(r.companion_max_size, 20 << 20, "companion_max_size", &r.name)?,
            dir: abs(&r.dir),
            target_dir: abs(&r.target_dir),
            folders,
            accept: r
                .accept
                .unwrap_or_else(|| vec!["safetensors".into(), "gguf".into()]),
            companions: r.companions.unwrap_or_default(),
            on_exists,
            name: r.name,
        });
    }
    let log = raw
        .settings
        .and_then(|s| s.upload_log)
        .map(|p| abs(&p))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_UPLOAD_LOG));
    Ok((out, log))
}
