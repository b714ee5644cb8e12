//! `linkfarm verify` (SPEC §11): the format, pickle and kind checks of an inbox, read-only, over
//! files already in place. It finds the half-copied checkpoints and unsafe pickles that direct
//! uploads put in front of the services.
//!
//! It walks without following symlinks and opens only regular files (`O_NOFOLLOW|O_NONBLOCK`,
//! then `fstat` again), so a link to `/etc/shadow` or a FIFO among the models is never read. It
//! never writes, moves or changes anything.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use linkfarm_core::Config;
use linkfarm_formats::{check, hash, FileType, KindGuess, Limits, Reason};
use serde_json::json;

use crate::cli::VerifyArgs;
use crate::ExitCode;

/// What became of one file.
enum Status {
    Ok,
    Warn(String),
    Fail(String),
}

struct Checked {
    path: PathBuf,
    format: FileType,
    kind: Option<KindGuess>,
    status: Status,
    reason: Option<&'static str>,
    sha256: Option<hash::Sha256Digest>,
}

/// The directories verified when no PATH is given: every farm's and inbox's `target_dir`.
pub fn default_roots(config: &Config) -> Vec<PathBuf> {
    let farms = config.farms.iter().map(|f| f.target_dir.clone());
    let inboxes = config.inboxes.iter().map(|i| i.target_dir.clone());
    let mut roots: Vec<PathBuf> = farms.chain(inboxes).collect();
    roots.sort();
    roots.dedup();
    roots
}

/// Runs `verify` and returns its exit code: 0 when nothing failed, 1 otherwise.
pub fn run(config: &Path, args: &VerifyArgs) -> ExitCode {
    let roots = if args.paths.is_empty() {
        match crate::load::load(config) {
            Ok(c) => default_roots(&c),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::Config;
            }
        }
    } else {
        args.paths.clone()
    };
    let mut files = Vec::new();
    let mut skipped = 0u64;
    let mut problems = Vec::new();
    for root in &roots {
        walk(root, &mut files, &mut skipped, &mut problems);
    }
    let limits = Limits::default();
    let mut results: Vec<Checked> = problems;
    for (path, format) in files {
        results.push(check_one(&path, format, &limits, args.hash));
    }
    let (mut ok, mut warn, mut fail) = (0u64, 0u64, 0u64);
    for r in &results {
        match r.status {
            Status::Ok => ok += 1,
            Status::Warn(_) => warn += 1,
            Status::Fail(_) => fail += 1,
        }
    }
    if args.json {
        let files: Vec<_> = results
            .iter()
            .map(|r| {
                let (status, message) = match &r.status {
                    Status::Ok => ("ok", None),
                    Status::Warn(m) => ("warn", Some(m.as_str())),
                    Status::Fail(m) => ("fail", Some(m.as_str())),
                };
                json!({
                    "path": r.path,
                    "status": status,
                    "format": r.format.name(),
                    "kind": r.kind.map(|k| k.kind.as_str()),
                    "confidence": r.kind.map(|k| format!("{:?}", k.confidence).to_lowercase()),
                    "reason": r.reason,
                    "message": message,
                    "sha256": r.sha256.map(|d| d.hex()),
                    "short": r.sha256.map(|d| d.short()),
                })
            })
            .collect();
        let out = json!({
            "files": files,
            "summary": {"checked": results.len(), "ok": ok, "warn": warn, "fail": fail, "skipped": skipped},
        });
        println!("{out:#}");
    } else {
        for r in &results {
            let p = r.path.display();
            match &r.status {
                Status::Ok => {}
                Status::Warn(m) => println!("WARN  {p}: {m}"),
                Status::Fail(m) => println!("FAIL  {p}: {m}"),
            }
            if let Some(d) = r.sha256 {
                println!("{}  {}  {p}", d.hex(), d.short());
            }
        }
        println!(
            "verify: {} checked: {ok} ok, {warn} warn, {fail} fail; {skipped} skipped (not a \
             model or companion)",
            results.len()
        );
    }
    if fail == 0 {
        ExitCode::Ok
    } else {
        ExitCode::NotConverged
    }
}

/// Collects the regular files under `root` whose extension names a format; counts the others.
/// Symlinks are never followed (`file_type` of a directory entry is the entry's own).
fn walk(root: &Path, files: &mut Vec<(PathBuf, FileType)>, skipped: &mut u64, problems: &mut Vec<Checked>) {
    let meta = match std::fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) => {
            problems.push(unreadable(root, &e));
            return;
        }
    };
    if meta.is_file() {
        match root
            .file_name()
            .and_then(|n| FileType::from_name(&n.to_string_lossy()))
        {
            Some(ft) => files.push((root.to_owned(), ft)),
            None => *skipped += 1,
        }
        return;
    }
    if !meta.is_dir() {
        *skipped += 1;
        return;
    }
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                problems.push(unreadable(&dir, &e));
                continue;
            }
        };
        let mut names: Vec<_> = entries.filter_map(Result::ok).collect();
        names.sort_by_key(|e| e.file_name());
        let mut dirs = Vec::new();
        for e in names {
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            if ft.is_dir() {
                dirs.push(path);
            } else if ft.is_file() {
                match FileType::from_name(&e.file_name().to_string_lossy()) {
                    Some(t) => files.push((path, t)),
                    None => *skipped += 1,
                }
            } else {
                // Symlinks, FIFOs, sockets, devices: never opened or followed.
                *skipped += 1;
            }
        }
        // Depth first, in name order.
        stack.extend(dirs.into_iter().rev());
    }
}

fn unreadable(path: &Path, e: &std::io::Error) -> Checked {
    Checked {
        path: path.to_owned(),
        format: FileType::Safetensors,
        kind: None,
        status: Status::Fail(format!("cannot read: {e}")),
        reason: Some("io"),
        sha256: None,
    }
}

/// The nearest ancestor folder whose name says which kinds belong in it (`loras`, `vae`, ...).
fn folder_of(path: &Path) -> Option<String> {
    path.ancestors()
        .skip(1)
        .filter_map(|a| a.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .find(|n| linkfarm_formats::Kind::expected_in(n).is_some())
}

fn check_one(path: &Path, format: FileType, limits: &Limits, want_hash: bool) -> Checked {
    let mut out = Checked {
        path: path.to_owned(),
        format,
        kind: None,
        status: Status::Ok,
        reason: None,
        sha256: None,
    };
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let mut file: File = match opened {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
        Ok(_) => {
            out.status = Status::Warn("not a regular file any more; not checked".into());
            return out;
        }
        Err(e) => {
            out.status = Status::Fail(format!("cannot open: {e}"));
            out.reason = Some("io");
            return out;
        }
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if !format.is_model() && size > limits.companion_max_size {
        out.status = Status::Warn(format!(
            "a {} companion of {size} bytes, larger than {} bytes: not parsed",
            format.name(),
            limits.companion_max_size
        ));
    } else {
        match check(&mut file, format, limits) {
            Ok(v) => {
                out.kind = v.kind;
                if let (Some(k), Some(folder)) = (v.kind, folder_of(path)) {
                    if k.mismatches(&folder) {
                        out.status = Status::Warn(format!(
                            "its tensors say {} ({} confidence), which does not belong in {folder}/",
                            k.kind.as_str(),
                            format!("{:?}", k.confidence).to_lowercase()
                        ));
                        out.reason = Some("kind");
                    }
                }
            }
            Err(r) => {
                out.reason = Some(r.reason.as_str());
                out.status = Status::Fail(match r.reason {
                    Reason::Io => format!("could not be read: {}", r.message),
                    _ => format!("{}: {}", r.reason.as_str(), r.message),
                });
            }
        }
    }
    if want_hash {
        let hashed = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| hash::sha256(&mut file));
        match hashed {
            Ok((d, _)) => out.sha256 = Some(d),
            Err(e) => {
                out.status = Status::Fail(format!("cannot hash: {e}"));
                out.reason = Some("io");
            }
        }
    }
    out
}
