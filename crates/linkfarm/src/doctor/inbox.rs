//! `doctor`'s checks of the inboxes (SPEC §10): `dir` and `target_dir` on one filesystem, the
//! worker's user, the scanner runnable, and the Samba shares: the inbox writable for clients, the
//! model folders not (the admin guide's own recommendation).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use linkfarm_core::inbox::Inbox;
use linkfarm_core::Config;

use super::{check, real, smb, Check, Status};

/// The device of `p`, or of its nearest existing ancestor (`dir` is made at start-up).
fn device(p: &Path) -> Option<(u64, PathBuf)> {
    p.ancestors()
        .find_map(|a| std::fs::metadata(a).ok().map(|m| (m.dev(), a.to_owned())))
}

/// Where `program` would run from: itself if it has a `/`, else the first match in `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    let runnable =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = PathBuf::from(program);
        return runnable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| runnable(p))
}

/// The checks of every inbox.
pub(super) fn inbox_checks(config: &Config, out: &mut Vec<Check>) {
    for inbox in &config.inboxes {
        one(inbox, out);
    }
}

fn one(inbox: &Inbox, out: &mut Vec<Check>) {
    let subject = format!("inbox {}", inbox.name);
    match (device(&inbox.dir), std::fs::metadata(&inbox.target_dir)) {
        (_, Err(e)) => out.push(check(
            Status::Fail,
            &subject,
            format!("target_dir {}: {e}", inbox.target_dir.display()),
            "create the model folders, or mount their volume",
        )),
        (Some((d, at)), Ok(t)) if d == t.dev() => out.push(check(
            Status::Ok,
            &subject,
            format!(
                "dir {} and target_dir {} are on one filesystem{}",
                inbox.dir.display(),
                inbox.target_dir.display(),
                if at == inbox.dir { String::new() } else { format!(" (dir is made in {})", at.display()) }
            ),
            "",
        )),
        (_, Ok(_)) => out.push(check(
            Status::Fail,
            &subject,
            format!(
                "dir {} and target_dir {} are on different filesystems: no upload can be accepted (EXDEV), files would wait forever",
                inbox.dir.display(),
                inbox.target_dir.display()
            ),
            "put the inbox on the filesystem of the model folders, e.g. beside the upload links",
        )),
    }
    if nix::unistd::geteuid().is_root() {
        match nix::unistd::User::from_name("nobody") {
            Ok(Some(u)) if !u.uid.is_root() => out.push(check(
                Status::Ok,
                &subject,
                format!("content checks run as nobody (uid {}) without privileges", u.uid),
                "",
            )),
            _ => out.push(check(
                Status::Fail,
                &subject,
                "there is no unprivileged user `nobody`: the check worker will not run, and no upload is accepted",
                "create the system user nobody (useradd -r -M -s /usr/sbin/nologin nobody)",
            )),
        }
    }
    if let Some(program) = inbox.scanner.first() {
        match which(program) {
            Some(p) => out.push(check(
                Status::Ok,
                &subject,
                format!("scanner {} is runnable", p.display()),
                "",
            )),
            None => out.push(check(
                Status::Fail,
                &subject,
                format!("scanner `{program}` is not runnable: every upload would wait for it"),
                if program.contains("clamdscan") {
                    "apt install clamav-daemon (and start clamav-daemon), or remove `scanner`"
                } else {
                    "install it, write its full path, or remove `scanner`"
                },
            )),
        }
    }
}

/// The Samba checks of every inbox: the share that serves `dir` must be writable, a share that
/// serves the model folders should not be.
pub(super) fn inbox_share_checks(config: &Config, conf: &smb::SmbConf, out: &mut Vec<Check>) {
    let shares = conf.shares();
    let serves =
        |share_path: &Path, p: &Path| p.starts_with(share_path) || real(p).starts_with(real(share_path));
    for inbox in &config.inboxes {
        let subject = format!("inbox {}", inbox.name);
        let mut served = false;
        for (name, path) in &shares {
            if serves(path, &inbox.dir) {
                served = true;
                if conf.writable(name) {
                    out.push(check(
                        Status::Ok,
                        format!("samba [{name}]"),
                        format!("clients can drop files into inbox {}", inbox.name),
                        "",
                    ));
                } else {
                    out.push(check(
                        Status::Fail,
                        format!("samba [{name}]"),
                        format!("serves inbox {} read-only: clients cannot upload", inbox.name),
                        format!("set `read only = no` in [{name}]"),
                    ));
                }
            }
            let exposes_models = serves(path, &inbox.target_dir) || serves(&inbox.target_dir, path);
            if exposes_models && !conf.writable(name) {
                out.push(check(
                    Status::Ok,
                    format!("samba [{name}]"),
                    format!(
                        "serves the model folders read-only: uploads go through inbox {}",
                        inbox.name
                    ),
                    "",
                ));
            } else if exposes_models {
                out.push(check(
                    Status::Warn,
                    format!("samba [{name}]"),
                    format!(
                        "clients can write the model folders {} directly, around inbox {}",
                        inbox.target_dir.display(),
                        inbox.name
                    ),
                    format!("share the models read-only (`read only = yes`, see [models] in examples/smb.conf), or keep [{name}] for trusted users"),
                ));
            }
        }
        if !served {
            out.push(check(
                Status::Ok,
                &subject,
                format!("no share serves {}", inbox.dir.display()),
                "",
            ));
        }
    }
}
