//! `linkfarm web` and `linkfarm web user add|remove|list`, called by the `linkfarm` binary.
//! Exit codes: 0 clean stop, 78 invalid config or started as root, 1 fatal error.

use std::io::Read;
use std::path::{Path, PathBuf};

use linkfarm_core::IdLookup;
use nix::unistd::{Group, User};

use crate::server::{App, Config};

/// Exit code of an invalid config or of a start as root (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

struct SystemIds;

impl IdLookup for SystemIds {
    fn user(&self, name: &str) -> Option<u32> {
        User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
    }
    fn group(&self, name: &str) -> Option<u32> {
        Group::from_name(name).ok().flatten().map(|g| g.gid.as_raw())
    }
}

/// Reads and validates the whole config file, then the parts the service serves.
pub fn load(path: &Path) -> Result<Config, String> {
    let file =
        linkfarm_core::paths::normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_owned()));
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("{}: cannot read the config: {e}", file.display()))?;
    let config = linkfarm_core::parse_config(&text, &file, &SystemIds).map_err(|e| e.to_string())?;
    let web = linkfarm_core::web::parse_web(&text, &file).map_err(|e| e.to_string())?;
    let (mut inboxes, upload_log) = crate::inbox::from_config(&config);
    if let Some(names) = &web.inboxes {
        for n in names {
            if !inboxes.iter().any(|i| &i.name == n) {
                return Err(format!(
                    "{}: web.inboxes names `{n}`, which is not an inbox of this file",
                    file.display()
                ));
            }
        }
        inboxes.retain(|i| names.contains(&i.name));
    }
    if inboxes.is_empty() {
        return Err(format!(
            "{}: no inbox to serve; `linkfarm web` only feeds inboxes (add an `inboxes:` section)",
            file.display()
        ));
    }
    Ok(Config {
        web,
        inboxes,
        upload_log,
    })
}

/// `linkfarm web`: serves until SIGTERM or SIGINT; SIGHUP reloads the config.
pub fn run(config_path: &Path, state_dir: Option<PathBuf>) -> u8 {
    if nix::unistd::geteuid().is_root() {
        eprintln!(
            "linkfarm web: refusing to run as root.\n  hint: run it as the inbox owner, as systemd/linkfarm-web.service does \
             (User=); for a test: setpriv --reuid=USER --regid=GROUP --init-groups linkfarm web"
        );
        return EXIT_CONFIG;
    }
    let config = match load(config_path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("invalid config, not starting: {e}");
            return EXIT_CONFIG;
        }
    };
    let Some(state_dir) = state_dir.or_else(|| {
        std::env::var_os("STATE_DIRECTORY")
            .and_then(|v| v.to_str().and_then(|s| s.split(':').next()).map(PathBuf::from))
    }) else {
        tracing::error!(
            "no state directory: run under systemd (StateDirectory=linkfarm-web) or pass --state-dir DIR"
        );
        return EXIT_CONFIG;
    };
    let tls = match &config.web.tls {
        None => None,
        Some(t) => match crate::server::tls_acceptor(t) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!("invalid TLS files, not starting: {e}");
                return EXIT_CONFIG;
            }
        },
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // File writes and fsyncs run on the blocking pool: a thread per chunk being written,
        // bounded well under the unit's TasksMax.
        .max_blocking_threads(64)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let listen = config.web.listen;
        let app = match App::new(config, &state_dir) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("state directory {}: {e}", state_dir.display());
                return 1;
            }
        };
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot listen on {listen}: {e}");
                return 1;
            }
        };
        let served: Vec<String> = app.config().inboxes.iter().map(|i| i.name.clone()).collect();
        tracing::info!(
            "listening on {}://{listen}, inboxes {}",
            if app.tls { "https" } else { "http" },
            served.join(", ")
        );
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&format!("listening on {listen}")),
        ]);
        let reloader = tokio::spawn(reload_on_hup(app.clone(), config_path.to_owned()));
        crate::server::serve(app, listener, tls, stop_signal()).await;
        reloader.abort();
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        0
    })
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

async fn reload_on_hup(app: std::sync::Arc<App>, path: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match load(&path) {
            Ok(c) => {
                app.reload(c);
                tracing::info!("config reloaded");
            }
            Err(e) => tracing::error!("config not reloaded, the old one stays: {e}"),
        }
    }
}

/// `linkfarm web user add NAME --password-stdin [--replace]`.
pub fn user_add(config_path: &Path, name: &str, replace: bool) -> u8 {
    let Some(file) = users_file(config_path) else {
        return EXIT_CONFIG;
    };
    let mut pw = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut pw) {
        eprintln!("linkfarm web user add: cannot read the password from stdin: {e}");
        return 1;
    }
    let pw = pw.strip_suffix('\n').unwrap_or(&pw);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    match crate::users::add(&file, name, pw, replace) {
        Ok(()) => {
            eprintln!(
                "user `{name}` {} in {}",
                if replace { "set" } else { "added" },
                file.display()
            );
            0
        }
        Err(e) => {
            eprintln!("linkfarm web user add: {e}");
            1
        }
    }
}

/// `linkfarm web user remove NAME`.
pub fn user_remove(config_path: &Path, name: &str) -> u8 {
    let Some(file) = users_file(config_path) else {
        return EXIT_CONFIG;
    };
    match crate::users::remove(&file, name) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("linkfarm web user remove: {e}");
            1
        }
    }
}

/// `linkfarm web user list`: one name a line.
pub fn user_list(config_path: &Path) -> u8 {
    let Some(file) = users_file(config_path) else {
        return EXIT_CONFIG;
    };
    match crate::users::read(&file) {
        Ok(u) => {
            for name in u.keys() {
                println!("{name}");
            }
            0
        }
        Err(e) => {
            eprintln!("linkfarm web user list: {e}");
            1
        }
    }
}

/// `web.users_file` of the config, or the default when the config does not exist yet.
fn users_file(config_path: &Path) -> Option<PathBuf> {
    let file = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_owned());
    match std::fs::read_to_string(&file) {
        Err(_) => Some(linkfarm_core::web::Web::default().users_file),
        Ok(text) => match linkfarm_core::web::parse_web(&text, &file) {
            Ok(w) => Some(w.users_file),
            Err(e) => {
                eprintln!("{e}");
                None
            }
        },
    }
}
