//! `linkfarm`: parses the command line, runs the command, exits with the code of SPEC §7.

use clap::Parser;
use linkfarm::cli::{Cli, Command, RunArgs};
use linkfarm::{daemon, doctor, load, logging, oneshot, verify, ExitCode};
use linkfarm_fs::Mode;

fn main() -> std::process::ExitCode {
    // The inbox's unprivileged check worker (SPEC §10): before anything else, and not a CLI
    // command a person runs.
    if let Some(code) = linkfarm::worker::main_if_worker() {
        return std::process::ExitCode::from(code);
    }
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
        Command::Run(args) => run(&cli.config, &args),
        Command::Status(o) => {
            let state_file = match load::load(&cli.config) {
                Ok(c) => c.settings.state_file,
                Err(e) => {
                    eprintln!("{e}\n(reading the default state file instead)");
                    linkfarm_core::Settings::default().state_file
                }
            };
            daemon::state::status(&state_file, o.json)
        }
        Command::Doctor(d) => doctor::run(&cli.config, &d.smb_conf, d.json),
        Command::Verify(v) => verify::run(&cli.config, &v),
        Command::Web(w) => return std::process::ExitCode::from(web(&cli.config, w)),
    };
    std::process::ExitCode::from(code as u8)
}

fn web(config: &std::path::Path, w: linkfarm::cli::WebArgs) -> u8 {
    use linkfarm::cli::{WebCommand, WebUserCommand};
    match w.command {
        None => {
            logging::init(linkfarm::cli::LogFormat::Text);
            linkfarm_web::cli::run(config, w.state_dir)
        }
        Some(WebCommand::User(WebUserCommand::Add { name, replace, .. })) => {
            linkfarm_web::cli::user_add(config, &name, replace)
        }
        Some(WebCommand::User(WebUserCommand::Remove { name })) => {
            linkfarm_web::cli::user_remove(config, &name)
        }
        Some(WebCommand::User(WebUserCommand::List)) => linkfarm_web::cli::user_list(config),
    }
}

fn config_error(e: &linkfarm_core::ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::Config
}

fn run(config: &std::path::Path, args: &RunArgs) -> ExitCode {
    // First of all: SIGHUP's default action would kill a daemon that is still starting (a reload
    // requested a moment too early). The config is read after this, so an early SIGHUP asks for
    // nothing that start-up does not do anyway.
    let early_hup = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, early_hup) {
        eprintln!("linkfarm: cannot handle SIGHUP: {e}");
    }
    logging::init(args.log_format);
    let config = match load::load_for_start(config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("invalid config, not starting: {e}");
            return ExitCode::Config;
        }
    };
    // Held until the process ends: one daemon per state file (SPEC §5).
    let _lock = match linkfarm::lock::acquire(&config.settings.state_file) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("not starting: {e}");
            return ExitCode::NotConverged;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::NotConverged;
        }
    };
    match rt.block_on(daemon::run(config, std::future::pending())) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            tracing::error!("fatal: {e:#}");
            ExitCode::NotConverged
        }
    }
}
