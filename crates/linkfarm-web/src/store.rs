//! Upload state: one JSON file per upload in the state directory, replaced atomically (temp,
//! fsync, rename) after every chunk is on disk. The bytes themselves live in the inbox folder as
//! `.linkfarm-web.<id>.part`. After a `kill -9` the recorded offset is the truth: bytes past it
//! in the part file were never acknowledged and are cut off by the next PATCH.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where an upload stands, from the web service's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Bytes are still coming.
    Uploading,
    /// Complete and renamed to its final name in the inbox: the daemon decides now.
    Done,
    /// Refused early by the web service (the part file is gone).
    Refused,
    /// Untouched for `expire_after` (the part file is gone).
    Expired,
}

/// One upload, as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upload {
    /// The tus id (32 hex digits).
    pub id: String,
    /// Who created it.
    pub user: String,
    /// The inbox's name.
    pub inbox: String,
    /// The folder as clients see it.
    pub folder: String,
    /// The name asked for.
    pub filename: String,
    /// The name it got in the inbox folder (differs from `filename` only after a clash there).
    pub final_name: Option<String>,
    /// `dir/<folder>`.
    pub folder_dir: PathBuf,
    /// `Upload-Length`.
    pub length: u64,
    /// Bytes on disk and acknowledged.
    pub offset: u64,
    /// Where it stands.
    pub phase: Phase,
    /// The reason of an early refusal (SPEC §10 reason words).
    pub reason: Option<String>,
    /// What to do about an early refusal, in plain words.
    pub why: Option<String>,
    /// Whether the first bytes were checked against the declared format.
    pub header_checked: bool,
    /// Unix seconds when it expires unless a PATCH comes.
    pub expires: u64,
    /// Unix seconds when it was finished, refused or expired.
    pub ended: Option<u64>,
}

impl Upload {
    /// The part file's name in the folder.
    pub fn part_name(&self) -> String {
        format!(".linkfarm-web.{}.part", self.id)
    }
    /// The part file's path.
    pub fn part_path(&self) -> PathBuf {
        self.folder_dir.join(self.part_name())
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh random id.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("the kernel's random numbers");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether `name` is an upload's id as [`new_id`] makes them (32 lowercase hex digits).
pub fn is_id(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One upload in memory.
pub struct Entry {
    data: Mutex<Upload>,
    /// Held for the whole of a PATCH, DELETE or expiry, so that a second request to the same
    /// upload at the same time is refused instead of interleaving. A PATCH's writes on the
    /// blocking pool hold it too (an owned guard): a request dropped with its client cannot
    /// have a write land after the next request has started.
    pub busy: Arc<tokio::sync::Mutex<()>>,
}

impl Entry {
    /// A copy of the upload's state.
    pub fn get(&self) -> Upload {
        self.data.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// Replaces the state in memory (the caller saves it first).
    pub fn set(&self, u: Upload) {
        *self.data.lock().unwrap_or_else(|p| p.into_inner()) = u;
    }
}

/// A shared handle on one upload.
pub type Handle = Arc<Entry>;

fn entry(u: Upload) -> Handle {
    Arc::new(Entry {
        data: Mutex::new(u),
        busy: Arc::new(tokio::sync::Mutex::new(())),
    })
}

/// All uploads, in memory and in the state directory.
pub struct Store {
    dir: PathBuf,
    map: Mutex<HashMap<String, Handle>>,
}

impl Store {
    /// Loads every upload recorded in `dir`. An upload whose part file vanished is expired.
    pub fn open(dir: &Path) -> std::io::Result<Store> {
        std::fs::create_dir_all(dir)?;
        let mut map = HashMap::new();
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            // `<id>.json`; the directory also holds the page's sessions.json and temp files.
            let is_record = p.extension().is_some_and(|x| x == "json")
                && p.file_stem().and_then(|s| s.to_str()).is_some_and(is_id);
            if !is_record {
                continue;
            }
            let Ok(text) = std::fs::read(&p) else { continue };
            match serde_json::from_slice::<Upload>(&text) {
                Ok(mut u) => {
                    if u.phase == Phase::Uploading && !u.part_path().exists() {
                        u.phase = Phase::Expired;
                        u.ended = Some(now());
                    }
                    map.insert(u.id.clone(), entry(u));
                }
                Err(e) => tracing::warn!("{}: not an upload record, ignored: {e}", p.display()),
            }
        }
        Ok(Store {
            dir: dir.to_owned(),
            map: Mutex::new(map),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handle>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The upload `id`.
    pub fn get(&self, id: &str) -> Option<Handle> {
        self.lock().get(id).cloned()
    }

    /// Every upload.
    pub fn all(&self) -> Vec<Handle> {
        self.lock().values().cloned().collect()
    }

    /// Adds a new upload (already saved).
    pub fn insert(&self, u: Upload) -> Handle {
        let h = entry(u.clone());
        self.lock().insert(u.id, h.clone());
        h
    }

    /// Forgets an upload and its record.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
    }

    /// Writes `u`'s record durably.
    pub fn save(&self, u: &Upload) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{}.json.tmp", u.id));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(u).expect("an upload serializes"))?;
        f.sync_data()?;
        std::fs::rename(&tmp, self.dir.join(format!("{}.json", u.id)))?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_as_new_id_makes_them_name_upload_records() {
        assert!(is_id(&new_id()));
        assert!(is_id("0123456789abcdef0123456789abcdef"));
        for not in [
            "sessions",
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "../3456789abcdef0123456789abcdef",
        ] {
            assert!(!is_id(not), "{not}");
        }
    }
}
