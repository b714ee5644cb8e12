//! The command line, as clap definitions only: the man page and the shell completions are
//! generated from these types, so they cannot drift from what the binary accepts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const LONG_ABOUT: &str = "Keeps directories of symlinks converged to a desired state written in YAML, \
and repairs them within milliseconds as they break.

linkfarm creates, replaces and removes the links of each farm, adopts the files of a real folder \
that a client made where a link belongs, and never deletes or overwrites user data: it removes \
only symlinks and empty folders, and moves data only with renameat2(RENAME_NOREPLACE) within one \
filesystem. `linkfarm run` is the daemon (for systemd, Type=notify); `check` and `apply` make one \
pass; `validate` checks the config; `status` reads the running daemon's state.";

const AFTER_LONG_HELP: &str = "FILES:
  /etc/linkfarm/linkfarm.yaml    the desired state (see /usr/share/doc/linkfarm/README.md)
  /run/linkfarm/state.json       the daemon's state (settings.state_file)

ENVIRONMENT:
  LINKFARM_CONFIG    the config file, instead of /etc/linkfarm/linkfarm.yaml
  LINKFARM_LOG       log filter, e.g. debug (default info)

SIGNALS (run):
  SIGHUP             reload the config; an invalid one is logged and the old one stays
  SIGTERM, SIGINT    finish the pass in progress and exit 0

EXIT STATUS:
  run       0 clean stop, 78 invalid config, 1 fatal error
  check     0 converged, 1 drift, 2 error, 78 invalid config
  apply     0 ok, 1 some actions failed, 78 invalid config
  validate  0 valid, 78 invalid
  status    0 all converged, 1 not, 2 daemon not running
  doctor    0 no failure, 1 a failure
  verify    0 no file failed, 1 a file is corrupt or unsafe, 78 invalid config (no PATH given)";

/// Default config path.
pub const DEFAULT_CONFIG: &str = "/etc/linkfarm/linkfarm.yaml";

/// Keeps directories of symlinks converged to a desired state and repairs them as they break.
#[derive(Debug, Parser)]
#[command(
    name = "linkfarm",
    version,
    about,
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// The desired-state file.
    #[arg(short, long, global = true, env = "LINKFARM_CONFIG", default_value = DEFAULT_CONFIG, value_name = "FILE")]
    pub config: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: reconcile, watch, repair (exit 0 on stop, 78 on an invalid config).
    Run(RunArgs),
    /// Show what `apply` would do; change nothing (exit 0 converged, 1 drift, 2 error).
    Check(OutputArgs),
    /// Run one reconcile pass and print what it did (exit 0 ok, 1 some actions failed).
    Apply(ApplyArgs),
    /// Check the config file only, like `nginx -t` (exit 0 valid, 78 invalid).
    Validate,
    /// Read the running daemon's state file (exit 0 converged, 1 not, 2 not running).
    Status(OutputArgs),
    /// Diagnose the setup: config, farms, permissions, inotify, disk, Samba (exit 0, or 1 on a failure).
    Doctor(DoctorArgs),
    /// Check model files in place: truncated, corrupt, unsafe pickles, wrong folder (exit 0, or 1 on a FAIL).
    Verify(VerifyArgs),
}

/// Options of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Files or directories to check (default: every farm's target_dir).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print the SHA-256 of every checked file, and its 10-hex short form.
    #[arg(long)]
    pub hash: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The Samba config to check the shares of (read through `testparm` when installed).
    #[arg(long, value_name = "FILE", default_value = "/etc/samba/smb.conf")]
    pub smb_conf: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--json`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print JSON (stable; see the README) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Plan only, like `check`, but exit as `apply` would.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON (stable; see the README) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Log format on stderr when not under journald.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}
