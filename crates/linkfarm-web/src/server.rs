//! The service: shared state, the routes, the accept loop (with header and idle timeouts
//! against slowloris, TLS when configured) and the task that removes expired uploads.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use linkfarm_core::web::Web;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::auth::Sessions;
use crate::inbox::InboxSpec;
use crate::store::Store;
use crate::users::Users;

/// A request's headers must arrive within this (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// A request body that sends nothing for this long is cut off; the bytes before stay.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the service serves, swapped whole on SIGHUP.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `web:` section.
    pub web: Web,
    /// The inboxes served (already filtered by `web.inboxes`).
    pub inboxes: Vec<InboxSpec>,
    /// The daemon's upload log (SPEC §10), read for the decisions.
    pub upload_log: PathBuf,
}

impl Config {
    /// The largest `max_size` served (`Tus-Max-Size`).
    pub fn max_size(&self) -> u64 {
        self.inboxes.iter().map(|i| i.max_size).max().unwrap_or(0)
    }
}

/// Shared state of the service.
pub struct App {
    config: RwLock<Arc<Config>>,
    /// The users file.
    pub users: Arc<Users>,
    /// Page sessions.
    pub sessions: Sessions,
    /// Uploads.
    pub store: Store,
    /// Whether the page is served over TLS (the cookie then gets `Secure`).
    pub tls: bool,
    /// Held while an upload is created (see `tus::create`).
    pub creating: tokio::sync::Mutex<()>,
}

impl App {
    /// A service for `config` keeping its upload state in `state_dir`.
    pub fn new(config: Config, state_dir: &std::path::Path) -> std::io::Result<Arc<App>> {
        Ok(Arc::new(App {
            users: Arc::new(Users::new(config.web.users_file.clone())),
            tls: config.web.tls.is_some(),
            config: RwLock::new(Arc::new(config)),
            sessions: Sessions::open(state_dir),
            store: Store::open(state_dir)?,
            creating: tokio::sync::Mutex::new(()),
        }))
    }

    /// The current config.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Swaps in a new config (SIGHUP). The listen address and the users file path stay those of
    /// start-up.
    pub fn reload(&self, config: Config) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    let max_chunk = app.config().web.max_chunk;
    Router::new()
        .route("/", get(crate::page::index))
        .route("/assets/{name}", get(crate::page::asset))
        .route("/login", post(crate::page::login))
        .route("/logout", post(crate::page::logout))
        .route("/api/session", get(crate::page::session))
        .route("/api/uploads/{id}", get(crate::api::upload_status))
        .route("/files/", post(crate::tus::create).options(crate::tus::options))
        .route("/files", post(crate::tus::create).options(crate::tus::options))
        .route(
            "/files/{id}",
            axum::routing::head(crate::tus::head)
                .patch(crate::tus::patch)
                .delete(crate::tus::terminate)
                .options(crate::tus::options),
        )
        .layer(RequestBodyLimitLayer::new(
            usize::try_from(max_chunk).unwrap_or(usize::MAX),
        ))
        .layer(RequestBodyTimeoutLayer::new(BODY_IDLE_TIMEOUT))
        .with_state(app)
}

/// Serves until `shutdown` resolves: each connection gets HTTP/1.1 with a header timeout, and
/// TLS first when `tls` is given.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let router = router(app.clone());
    let expiry = tokio::spawn(crate::tus::expire_loop(app.clone()));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let r = match tls {
                Some(acc) => match tokio::time::timeout(HEADER_TIMEOUT, acc.accept(stream)).await {
                    Ok(Ok(s)) => http.serve_connection(TokioIo::new(s), svc).await,
                    _ => return,
                },
                None => http.serve_connection(TokioIo::new(stream), svc).await,
            };
            if let Err(e) = r {
                tracing::debug!("connection: {e}");
            }
        });
    }
    expiry.abort();
}

/// A rustls acceptor for the PEM files of `web.tls`.
pub fn tls_acceptor(tls: &linkfarm_core::web::Tls) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pemfile::Item;
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let certs = rustls_pemfile::certs(&mut read(&tls.cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", tls.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", tls.cert.display()));
    }
    let key = rustls_pemfile::read_all(&mut read(&tls.key)?.as_slice())
        .filter_map(Result::ok)
        .find_map(|i| match i {
            Item::Pkcs8Key(k) => Some(k.into()),
            Item::Pkcs1Key(k) => Some(k.into()),
            Item::Sec1Key(k) => Some(k.into()),
            _ => None,
        })
        .ok_or_else(|| format!("{}: no PEM private key in it", tls.key.display()))?;
    let cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("{}: {e}", tls.cert.display()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
