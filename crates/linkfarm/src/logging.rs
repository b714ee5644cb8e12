//! Log output (SPEC §6): journald's native protocol when stderr is the journal stream systemd gave
//! us, otherwise readable lines on stderr (colour only on a terminal) or JSON lines. Every change
//! is one INFO record with the fields farm, link, action and reason, which journald stores as
//! `LINKFARM_FARM`, `LINKFARM_LINK`, `LINKFARM_ACTION` and `LINKFARM_REASON`.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::LogFormat;

/// Where logs went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// journald, native protocol.
    Journal,
    /// stderr.
    Stderr,
}

/// Whether stderr is the journal stream systemd connected (`JOURNAL_STREAM=dev:ino` matches
/// stderr's device and inode): only then is journald the right place, not merely reachable.
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Installs the global subscriber. The level is INFO unless `LINKFARM_LOG` (an `EnvFilter`
/// directive such as `debug` or `linkfarm=trace`) says otherwise.
pub fn init(format: LogFormat) -> Sink {
    let filter = || EnvFilter::try_from_env("LINKFARM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        let mappings = tracing_journald::PriorityMappings {
            info: tracing_journald::Priority::Informational,
            debug: tracing_journald::Priority::Debug,
            ..tracing_journald::PriorityMappings::new()
        };
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_field_prefix(Some("LINKFARM".into()))
                .with_syslog_identifier("linkfarm".into())
                .with_priority_mappings(mappings);
            tracing_subscriber::registry()
                .with(layer.with_filter(filter()))
                .init();
            return Sink::Journal;
        }
    }
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(fmt.json().flatten_event(true).with_filter(filter()))
            .init(),
        LogFormat::Text => tracing_subscriber::registry()
            .with(fmt.with_ansi(ansi).with_filter(filter()))
            .init(),
    }
    Sink::Stderr
}
