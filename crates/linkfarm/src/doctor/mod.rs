//! `linkfarm doctor` (SPEC §8): the admin guide's verification and troubleshooting steps as one
//! command. Every check prints OK, WARN or FAIL with one line of remedy. The doctor observes and
//! plans, it never applies; its one write is the SPEC §14 capability probe, made only on
//! linkfarm's own temp names in `link_dir` and removed again.

mod inbox;
mod metrics;
pub mod smb;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use linkfarm_core::{Config, FarmState, Watcher};
use linkfarm_fs::{FarmFs, Mode};
use serde_json::json;

use crate::{load, ExitCode};

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but should be changed.
    Warn,
    /// Broken.
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One finding.
#[derive(Debug, Clone)]
pub struct Check {
    /// Verdict.
    pub status: Status,
    /// What was checked, e.g. `farm models-upload` or `samba [ki_Daten]`.
    pub subject: String,
    /// What was found.
    pub message: String,
    /// One line of what to do (empty for OK).
    pub remedy: String,
}

fn check(
    status: Status,
    subject: impl Into<String>,
    message: impl Into<String>,
    remedy: impl Into<String>,
) -> Check {
    Check {
        status,
        subject: subject.into(),
        message: message.into(),
        remedy: remedy.into(),
    }
}

/// Runs every check.
pub fn diagnose(config_path: &Path, smb_conf: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let config = match load::load_for_start(config_path) {
        Ok(c) => {
            out.push(check(
                Status::Ok,
                "config",
                format!(
                    "{} is valid ({} farm{})",
                    c.path.display(),
                    c.farms.len(),
                    if c.farms.len() == 1 { "" } else { "s" }
                ),
                "",
            ));
            c
        }
        Err(e) => {
            let first = e.to_string();
            out.push(check(
                Status::Fail,
                "config",
                first.lines().next().unwrap_or_default().to_string(),
                e.diagnostics.first().map(|d| d.hint.clone()).unwrap_or_default(),
            ));
            return out;
        }
    };
    for farm in &config.farms {
        farm_checks(&config, farm, &mut out);
    }
    inbox::inbox_checks(&config, &mut out);
    inotify_checks(&config, &mut out);
    samba_checks(&config, smb_conf, &mut out);
    out.extend(metrics::metrics_checks(&config.settings, SystemTime::now()));
    out
}

fn farm_checks(config: &Config, farm: &linkfarm_core::Farm, out: &mut Vec<Check>) {
    let subject = format!("farm {}", farm.name);
    let mut fs = FarmFs::new(farm.clone());
    let r = fs.pass(config.settings.adopt_after, SystemTime::now(), Mode::DryRun);
    let plan = &r.plan;
    let (status, remedy) = match plan.state {
        FarmState::Converged => (Status::Ok, String::new()),
        FarmState::Drift => (
            Status::Warn,
            "run `linkfarm apply`, or start the daemon: `systemctl enable --now linkfarm`".into(),
        ),
        FarmState::Conflict => (
            Status::Warn,
            "move the conflicting object away, or set on_conflict: adopt".into(),
        ),
        FarmState::Degraded => (
            Status::Fail,
            format!("mount or restore {}", farm.target_dir.display()),
        ),
        FarmState::Error => (
            Status::Fail,
            "see the message; `linkfarm check` shows details".into(),
        ),
    };
    let mut msg = format!(
        "{} ({}/{} links ok)",
        plan.state.as_str(),
        plan.links_ok,
        plan.links_total
    );
    for a in plan.actions.iter().take(3) {
        msg.push_str(&format!("; would {a}"));
    }
    for f in plan.findings.iter().take(3) {
        msg.push_str(&format!("; {f}"));
    }
    out.push(check(status, &subject, msg, remedy));

    // link_dir must be a real directory.
    if std::fs::symlink_metadata(&farm.link_dir).is_ok_and(|m| m.file_type().is_symlink()) {
        out.push(check(
            Status::Fail,
            &subject,
            format!("link_dir {} is a symlink", farm.link_dir.display()),
            "linkfarm refuses symlinked link_dirs: point link_dir at the real directory",
        ));
    }

    // The "permission denied when uploading" case of the admin guide.
    if let Some(owner) = farm.owner {
        let mut bad = Vec::new();
        // The planner's desired set: for "*" that is the real subfolders not excluded, the same
        // folders the daemon links.
        let observed = linkfarm_fs::observe(farm);
        let targets: Vec<PathBuf> = linkfarm_core::desired_pairs(farm, &observed.target)
            .into_iter()
            .map(|(_, t)| farm.target_dir.join(t))
            .collect();
        for t in targets {
            if let Ok(m) = std::fs::metadata(&t) {
                if !writable_by(&m, owner.uid, owner.gid) {
                    bad.push(t);
                }
            }
        }
        if bad.is_empty() {
            out.push(check(
                Status::Ok,
                &subject,
                "target folders are writable by the configured owner",
                "",
            ));
        } else {
            let (u, g) = (id(owner.uid), id(owner.gid));
            out.push(check(
                Status::Fail,
                &subject,
                format!(
                    "uploads as {u}:{g} get \"permission denied\": {} not writable by them",
                    bad.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                format!(
                    "chown -R {u}:{g} {0} && chmod -R u+rwX {0}",
                    farm.target_dir.display()
                ),
            ));
        }
    }

    // Free space and filesystem type of the target filesystem.
    if let Ok(st) = nix::sys::statvfs::statvfs(&farm.target_dir) {
        let total = st.blocks() as f64 * st.fragment_size() as f64;
        let free = st.blocks_available() as f64 * st.fragment_size() as f64;
        if total > 0.0 {
            let pct = free / total * 100.0;
            let msg = format!(
                "{:.1} GiB free of {:.1} GiB ({pct:.0} %) on {}",
                free / 1073741824.0,
                total / 1073741824.0,
                farm.target_dir.display()
            );
            if pct < 10.0 {
                out.push(check(
                    Status::Warn,
                    &subject,
                    msg,
                    "free space: uploads will fail when it is full",
                ));
            } else {
                out.push(check(Status::Ok, &subject, msg, ""));
            }
        }
    }
    caps_check(&mut fs, &subject, out);
    match linkfarm_fs::network_fs(&farm.target_dir).or_else(|| linkfarm_fs::network_fs(&farm.link_dir)) {
        Some(kind) if config.settings.watcher == Watcher::Inotify => out.push(check(
            Status::Warn,
            &subject,
            format!("on {kind}: inotify misses changes made by other machines"),
            "set `watcher: auto` (polls network filesystems at poll_interval)",
        )),
        Some(kind) => out.push(check(
            Status::Ok,
            &subject,
            format!(
                "on {kind}: polled every {}s",
                config.settings.poll_interval.as_secs()
            ),
            "",
        )),
        None => {}
    }
}

/// SPEC §14: what the filesystem of `link_dir` can do, which fallback the farm uses, and what
/// window remains.
fn caps_check(fs: &mut FarmFs, subject: &str, out: &mut Vec<Check>) {
    if !fs.farm().link_dir.is_dir() {
        return;
    }
    match fs.probe() {
        Ok(caps) => {
            let msg = format!(
                "filesystem of link_dir: {caps}; fallback: {}; window: {}",
                caps.fallback(),
                caps.window()
            );
            if caps.noreplace {
                out.push(check(Status::Ok, subject, msg, ""));
            } else if caps.link {
                out.push(check(
                    Status::Warn,
                    subject,
                    msg,
                    "the window is inherent without RENAME_NOREPLACE; to close it, put link_dir and \
                     target_dir on a filesystem that has it (local, or CIFS)",
                ));
            } else {
                out.push(check(
                    Status::Warn,
                    subject,
                    msg,
                    "client-made folders and files are never adopted here: move them by hand, or put \
                     link_dir and target_dir on a local filesystem",
                ));
            }
        }
        Err(e) => out.push(check(
            Status::Warn,
            subject,
            format!("cannot probe the filesystem of link_dir (SPEC §14): {e}"),
            "run the doctor as the user the daemon runs as (root)",
        )),
    }
}

fn id(x: Option<u32>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

/// Mode-bit check (ACLs aside): can `uid`/`gid` write into a directory with metadata `m`?
fn writable_by(m: &std::fs::Metadata, uid: Option<u32>, gid: Option<u32>) -> bool {
    let mode = m.mode();
    if uid == Some(0) {
        return true;
    }
    if uid.is_some_and(|u| u == m.uid()) {
        return mode & 0o300 == 0o300;
    }
    if gid.is_some_and(|g| g == m.gid()) {
        return mode & 0o030 == 0o030;
    }
    mode & 0o003 == 0o003
}

fn read_num(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn inotify_checks(config: &Config, out: &mut Vec<Check>) {
    // target_dir + link_dir per farm, plus the config's directory.
    let needed = config.farms.len() as u64 * 2 + 1;
    match read_num("/proc/sys/fs/inotify/max_user_watches") {
        Some(max) if max < needed => out.push(check(
            Status::Fail,
            "inotify",
            format!("max_user_watches is {max}; linkfarm needs {needed}"),
            format!("sysctl fs.inotify.max_user_watches={}; persist it in /etc/sysctl.d/", needed.max(65536)),
        )),
        Some(max) if max < needed + 1024 => out.push(check(
            Status::Warn,
            "inotify",
            format!("max_user_watches is {max}; linkfarm needs {needed}, leaving little for other programs of root"),
            "sysctl fs.inotify.max_user_watches=65536; persist it in /etc/sysctl.d/",
        )),
        Some(max) => out.push(check(
            Status::Ok,
            "inotify",
            format!("max_user_watches {max} (linkfarm needs {needed})"),
            "",
        )),
        None => {}
    }
    match read_num("/proc/sys/fs/inotify/max_user_instances") {
        Some(max) if max < 8 => out.push(check(
            Status::Warn,
            "inotify",
            format!("max_user_instances is {max}: root's other inotify users may leave none for linkfarm"),
            "sysctl fs.inotify.max_user_instances=128; persist it in /etc/sysctl.d/",
        )),
        Some(max) => out.push(check(
            Status::Ok,
            "inotify",
            format!("max_user_instances {max} (linkfarm needs 1)"),
            "",
        )),
        None => {}
    }
}

fn samba_checks(config: &Config, smb_conf: &Path, out: &mut Vec<Check>) {
    if !smb_conf.exists() {
        out.push(check(
            Status::Ok,
            "samba",
            format!("{} does not exist: Samba checks skipped", smb_conf.display()),
            "",
        ));
        return;
    }
    let conf = match smb::read(smb_conf) {
        Ok(c) => c,
        Err(e) => {
            out.push(check(
                Status::Fail,
                "samba",
                e,
                "fix smb.conf until `testparm -s` accepts it",
            ));
            return;
        }
    };
    inbox::inbox_share_checks(config, &conf, out);
    let shares = conf.shares();
    for farm in &config.farms {
        let serving: Vec<&(String, PathBuf)> = shares
            .iter()
            .filter(|(_, p)| farm.link_dir.starts_with(p) || real(&farm.link_dir).starts_with(real(p)))
            .collect();
        if serving.is_empty() {
            out.push(check(
                Status::Ok,
                format!("farm {}", farm.name),
                format!(
                    "no share of {} serves {}",
                    smb_conf.display(),
                    farm.link_dir.display()
                ),
                "",
            ));
        }
        for (name, path) in serving {
            share_checks(&conf, name, path, farm, out);
        }
    }
}

fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

fn share_checks(
    conf: &smb::SmbConf,
    share: &str,
    path: &Path,
    farm: &linkfarm_core::Farm,
    out: &mut Vec<Check>,
) {
    let subject = format!("samba [{share}]");
    let via = match conf.source {
        smb::Source::Testparm => "testparm",
        smb::Source::Parsed => "smb.conf",
    };
    out.push(check(
        Status::Ok,
        &subject,
        format!(
            "serves link_dir {} of farm {} (path = {}; read with {via})",
            farm.link_dir.display(),
            farm.name,
            path.display()
        ),
        "",
    ));
    if conf.writable(share) {
        out.push(check(Status::Ok, &subject, "read only = no", ""));
    } else {
        out.push(check(
            Status::Fail,
            &subject,
            "read only = yes: clients cannot upload",
            format!("set `read only = no` in [{share}]"),
        ));
    }
    if conf.flag(share, "follow symlinks") {
        out.push(check(Status::Ok, &subject, "follow symlinks = yes", ""));
    } else {
        out.push(check(
            Status::Fail,
            &subject,
            "follow symlinks = no: the type folders appear as broken files to clients",
            format!("set `follow symlinks = yes` in [{share}]"),
        ));
    }
    let outside = !(farm.target_dir.starts_with(path) || real(&farm.target_dir).starts_with(real(path)));
    let wide = conf.flag(share, "wide links");
    let unix_ext = conf.unix_extensions();
    let insecure = conf.global_flag("allow insecure wide links");
    match (outside, wide) {
        (false, false) => out.push(check(
            Status::Ok,
            &subject,
            "wide links = no: every target lies inside the share, so links work and clients stay inside it",
            "",
        )),
        (false, true) => out.push(check(
            Status::Warn,
            &subject,
            format!(
                "wide links = yes is not needed: every target lies inside {}; it lets a client follow any \
                 symlink it can make to anywhere on the server{}",
                path.display(),
                if unix_ext { "" } else { ", and unix extensions = no only serves to allow it" }
            ),
            format!("set `wide links = no` in [{share}] (and drop `unix extensions = no` from [global] if only wide links needed it)"),
        )),
        (true, false) => out.push(check(
            Status::Fail,
            &subject,
            format!(
                "target_dir {} lies outside the share path {}: with wide links = no clients get \"access denied\" in the type folders",
                farm.target_dir.display(),
                path.display()
            ),
            "move the targets inside the share (best), or set `wide links = yes` with `unix extensions = no` in [global] \
             (disables SMB1 POSIX extensions)",
        )),
        (true, true) if unix_ext && !insecure => out.push(check(
            Status::Fail,
            &subject,
            "wide links = yes is ignored while unix extensions = yes: links that leave the share are refused",
            "set `unix extensions = no` in [global] (disables SMB1 POSIX extensions), or `allow insecure wide links = yes` \
             (lets SMB1 clients with POSIX extensions create links to anywhere and follow them)",
        )),
        (true, true) => out.push(check(
            Status::Warn,
            &subject,
            "wide links = yes (needed: a target lies outside the share); clients can follow any symlink on the share to anywhere on the server",
            "keep the share writable only by trusted users, or move the targets inside the share and set `wide links = no`",
        )),
    }
    let vfs = conf.value(share, "vfs objects");
    if vfs
        .split(|c: char| c.is_whitespace() || c == ',')
        .any(|m| m == "recycle")
    {
        out.push(check(
            Status::Ok,
            &subject,
            format!("vfs objects = {vfs}: deleted files are recoverable"),
            "",
        ));
    } else {
        out.push(check(
            Status::Warn,
            &subject,
            "no recycle VFS: a client's \"delete folder\" on a type folder deletes the model files inside the real folder",
            format!("add `vfs objects = recycle` with `recycle:repository = .recycle/%U` and `recycle:keeptree = yes` to [{share}] (Debian: samba-vfs-modules)"),
        ));
    }
}

/// `linkfarm doctor`.
pub fn run(config_path: &Path, smb_conf: &Path, json_out: bool) -> ExitCode {
    let checks = diagnose(config_path, smb_conf);
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    if json_out {
        let v = json!({
            "checks": checks.iter().map(|c| json!({
                "status": c.status.as_str().to_lowercase(),
                "subject": c.subject,
                "message": c.message,
                "remedy": if c.remedy.is_empty() { None } else { Some(&c.remedy) },
            })).collect::<Vec<_>>(),
            "ok": checks.iter().filter(|c| c.status == Status::Ok).count(),
            "warn": checks.iter().filter(|c| c.status == Status::Warn).count(),
            "fail": checks.iter().filter(|c| c.status == Status::Fail).count(),
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("plain JSON"));
    } else {
        for c in &checks {
            println!("{:<4}  {}: {}", c.status.as_str(), c.subject, c.message);
            if !c.remedy.is_empty() {
                println!("      -> {}", c.remedy);
            }
        }
        let n = |s| checks.iter().filter(|c| c.status == s).count();
        println!(
            "{} OK, {} WARN, {} FAIL",
            n(Status::Ok),
            n(Status::Warn),
            n(Status::Fail)
        );
    }
    if failed {
        ExitCode::NotConverged
    } else {
        ExitCode::Ok
    }
}
