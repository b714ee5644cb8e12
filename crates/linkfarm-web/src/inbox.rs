//! What `linkfarm web` needs to know of an inbox (SPEC §10), behind one small type.
//!
//! [`InboxSpec`] holds only the fields the web service decides with: where the folders are,
//! which formats and sizes the inbox accepts, and what happens to a name that exists. It is
//! taken from the validated config (core's `Inbox`) by [`from_config`]; with `folders: "*"` the
//! folders are listed as the daemon lists them (`exclude`, the reserved names and the refused
//! folder left out), so the page never offers a folder the daemon does not serve.

use std::path::PathBuf;

pub use linkfarm_core::inbox::OnExists;
use linkfarm_core::inbox::RESERVED_PREFIX;
use linkfarm_core::names::NameFilter;
use linkfarm_core::Config;
use linkfarm_formats::FileType;

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
    /// With `folders: "*"`: subdirectories of `target_dir` that are not folders of the inbox.
    pub exclude: NameFilter,
    /// Where refused files go; a subdirectory of `target_dir` named as its top folder is not
    /// offered (the daemon leaves it out too).
    pub refused_dir: PathBuf,
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
                    .map(|e| e.file_name())
                    .filter(|n| !self.ignores(n))
                    .filter_map(|n| n.into_string().ok())
                    .map(|n| (n.clone(), n))
                    .collect();
                out.sort();
                out
            }
        }
    }

    /// Whether a subdirectory of `target_dir` is left out of `folders: "*"`, by the rule of the
    /// daemon's `linkfarm_core::inbox::decide::folders`.
    fn ignores(&self, name: &std::ffi::OsStr) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let refused = self
            .refused_dir
            .strip_prefix(&self.dir)
            .ok()
            .and_then(|r| r.components().next())
            .map(|c| c.as_os_str());
        name.as_bytes().starts_with(RESERVED_PREFIX.as_bytes())
            || self.exclude.is_match(name)
            || Some(name) == refused
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

/// The inboxes and the upload log path of a validated config, as the web service sees them.
pub fn from_config(config: &Config) -> (Vec<InboxSpec>, PathBuf) {
    let inboxes = config
        .inboxes
        .iter()
        .map(|i| InboxSpec {
            name: i.name.clone(),
            dir: i.dir.clone(),
            target_dir: i.target_dir.clone(),
            folders: match i.explicit() {
                None => Folders::All,
                Some(l) => Folders::List(l.iter().map(|f| (f.folder.clone(), f.target.clone())).collect()),
            },
            exclude: i.exclude.clone(),
            refused_dir: i.refused_dir.clone(),
            accept: i.accept.iter().map(|f| f.as_str().to_owned()).collect(),
            companions: i.companions.clone(),
            max_size: i.max_size,
            companion_max_size: i.companion_max_size,
            on_exists: i.on_exists,
        })
        .collect();
    (inboxes, config.settings.upload_log.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoIds;
    impl linkfarm_core::IdLookup for NoIds {
        fn user(&self, _: &str) -> Option<u32> {
            None
        }
        fn group(&self, _: &str) -> Option<u32> {
            None
        }
    }

    fn spec(yaml_inbox: &str, subdirs: &[&str]) -> (InboxSpec, PathBuf, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        for d in subdirs {
            std::fs::create_dir_all(tmp.path().join("models").join(d)).unwrap();
        }
        let file = tmp.path().join("linkfarm.yaml");
        let text = format!(
            "version: 1\ninboxes:\n  - name: up\n    dir: inbox\n    target_dir: models\n{yaml_inbox}\
             settings:\n  upload_log: logs/uploads.jsonl\n"
        );
        let config = linkfarm_core::parse_config(&text, &file, &NoIds).unwrap();
        let (mut specs, log) = from_config(&config);
        (specs.remove(0), log, tmp)
    }

    #[test]
    fn all_folders_leave_out_what_the_daemon_leaves_out() {
        let (s, log, tmp) = spec(
            "    exclude: [\"old-*\"]\n",
            &["loras", "old-sd15", ".hidden", "_refused", ".linkfarm-x", "vae"],
        );
        assert_eq!(log, tmp.path().join("logs/uploads.jsonl"));
        assert_eq!(s.folders, Folders::All);
        let names: Vec<String> = s.folder_list().into_iter().map(|(f, _)| f).collect();
        // `.hidden` is offered: this inbox's exclude replaces the default `.*`, as in the daemon.
        assert_eq!(names, [".hidden", "loras", "vae"]);
        assert_eq!(s.target_of("old-sd15"), None);
    }

    #[test]
    fn the_default_exclude_and_the_other_keys_carry_over() {
        let (s, _, _tmp) = spec(
            "    folders: [loras, { folder: Lora, target: loras }]\n    accept: [gguf]\n    \
             companions: [png]\n    max_size: 2MiB\n    on_exists: rename\n",
            &["loras"],
        );
        assert_eq!(
            s.folder_list(),
            [("loras".into(), "loras".into()), ("Lora".into(), "loras".into())]
        );
        assert_eq!(s.accept, ["gguf"]);
        assert_eq!(s.companions, ["png"]);
        assert_eq!(s.max_size, 2 << 20);
        assert_eq!(s.on_exists, OnExists::Rename);
        assert!(s.exclude.is_match(".x"));
    }
}
