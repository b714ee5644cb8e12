//! Loading the config file: read it, refuse it when running as root and someone else could edit
//! it (like sshd's StrictModes), validate it with the core, and refuse a symlinked link_dir at
//! start-up. Every refusal is a [`ConfigError`] naming the file and what to do: exit 78.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use linkfarm_core::{paths::normalize, Config, ConfigError, IdLookup};
use nix::unistd::{Group, User};

/// User and group names from the system databases (NSS).
pub struct SystemIds;

impl IdLookup for SystemIds {
    fn user(&self, name: &str) -> Option<u32> {
        User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
    }
    fn group(&self, name: &str) -> Option<u32> {
        Group::from_name(name).ok().flatten().map(|g| g.gid.as_raw())
    }
}

/// The config path made absolute (relative paths inside it resolve against its directory).
pub fn absolute(path: &Path) -> PathBuf {
    normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
}

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = absolute(path);
    let cannot_read = |e: std::io::Error| {
        ConfigError::whole_file(
            &file,
            format!("cannot read the config: {e}"),
            "write one (see /usr/share/doc/linkfarm/examples), or point -c/--config or LINKFARM_CONFIG at it",
        )
    };
    // One open file for the owner check and the text: an editor that renames the file away and
    // writes a new one in between can make neither check the wrong file nor fail a second lookup.
    let mut f = std::fs::File::open(&file).map_err(cannot_read)?;
    if nix::unistd::geteuid().is_root() {
        let m = f
            .metadata()
            .map_err(|e| ConfigError::whole_file(&file, format!("cannot stat the config: {e}"), ""))?;
        check_root_only(&file, &m)?;
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut f, &mut text).map_err(cannot_read)?;
    linkfarm_core::parse_config(&text, &file, &SystemIds)
}

/// Loads the config and also refuses farms whose link_dir is a symlink (SPEC §1, start-up only:
/// later the filesystem layer refuses it per pass).
pub fn load_for_start(path: &Path) -> Result<Config, ConfigError> {
    let config = load(path)?;
    for farm in &config.farms {
        if std::fs::symlink_metadata(&farm.link_dir).is_ok_and(|m| m.file_type().is_symlink()) {
            let real = std::fs::canonicalize(&farm.link_dir)
                .map(|p| format!(" (it points to {})", p.display()))
                .unwrap_or_default();
            return Err(ConfigError::whole_file(
                &config.path,
                format!(
                    "farm `{}`: link_dir {} is a symlink{real}",
                    farm.name,
                    farm.link_dir.display()
                ),
                "linkfarm never works through a symlinked link_dir: set link_dir to the real directory",
            ));
        }
    }
    Ok(config)
}

/// As root, the file (`m`, its metadata) and its directory must be writable by root only.
fn check_root_only(file: &Path, m: &std::fs::Metadata) -> Result<(), ConfigError> {
    let hint = |p: &Path| {
        format!(
            "whoever can change it can make linkfarm write anywhere as root: \
             chown root:root {0} && chmod go-w {0}",
            p.display()
        )
    };
    if m.uid() != 0 {
        return Err(ConfigError::whole_file(
            file,
            format!("the config is owned by uid {}, not root", m.uid()),
            hint(file),
        ));
    }
    if m.mode() & 0o002 != 0 || (m.mode() & 0o020 != 0 && m.gid() != 0) {
        return Err(ConfigError::whole_file(
            file,
            "the config is writable by non-root users",
            hint(file),
        ));
    }
    if let Some(dir) = file.parent() {
        if let Ok(d) = std::fs::metadata(dir) {
            let sticky = d.mode() & 0o1000 != 0;
            let others = d.mode() & 0o002 != 0 && !sticky;
            let group = d.mode() & 0o020 != 0 && d.gid() != 0 && !sticky;
            if d.uid() != 0 || others || group {
                return Err(ConfigError::whole_file(
                    file,
                    format!(
                        "the config's directory {} is writable by non-root users",
                        dir.display()
                    ),
                    hint(dir),
                ));
            }
        }
    }
    Ok(())
}
