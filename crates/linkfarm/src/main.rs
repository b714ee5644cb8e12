//! `linkfarm`: parses the command line, runs the command, exits with the code of SPEC §7.

use clap::Parser;
use linkfarm::cli::{Cli, Command};
use linkfarm::{load, oneshot, ExitCode};
use linkfarm_fs::Mode;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate => match load::load(&cli.config) {
            Ok(c) => oneshot::validate(&c),
            Err(e) => config_error(&e),
        },
        Command::Check(o) => match load::load_for_start(&cli.config) {
            Ok(c) => oneshot::reconcile(&c, Mode::DryRun, o.json, true),
            Err(e) => config_error(&e),
        },
        Command::Apply(a) => match load::load_for_start(&cli.config) {
            Ok(c) => {
                let mode = if a.dry_run { Mode::DryRun } else { Mode::Apply };
                oneshot::reconcile(&c, mode, a.json, false)
            }
            Err(e) => config_error(&e),
        },
        Command::Run(_) | Command::Status(_) => {
            eprintln!("linkfarm: this command is not available in this build yet");
            ExitCode::Error
        }
    };
    std::process::ExitCode::from(code as u8)
}

fn config_error(e: &linkfarm_core::ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::Config
}
