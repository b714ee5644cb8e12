//! The `linkfarm` binary as a library: the CLI definitions, config loading, the one-shot commands
//! and the daemon. `main.rs` only parses arguments and maps results to exit codes, so integration
//! tests can drive every piece in-process.

pub mod cli;
pub mod daemon;
pub mod doctor;
pub mod inbox;
pub mod load;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod oneshot;
pub mod report;
pub mod scanner;
pub mod verify;
pub mod worker;

/// The exit codes of SPEC §7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Success, converged.
    Ok = 0,
    /// Drift, failed actions, or not converged.
    NotConverged = 1,
    /// An error (check), or the daemon is not running (status).
    Error = 2,
    /// Invalid configuration (`EX_CONFIG` from sysexits.h, which systemd's
    /// `RestartPreventExitStatus=78` expects).
    Config = 78,
}
