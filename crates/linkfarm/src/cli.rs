//! The command line, as clap definitions only: the man page and the shell completions are
//! generated from these types, so they cannot drift from what the binary accepts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default config path.
pub const DEFAULT_CONFIG: &str = "/etc/linkfarm/linkfarm.yaml";

/// Keeps directories of symlinks converged to a desired state and repairs them as they break.
#[derive(Debug, Parser)]
#[command(name = "linkfarm", version, about, long_about = None, propagate_version = true)]
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
