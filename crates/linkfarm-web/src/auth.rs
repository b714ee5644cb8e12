//! Who is asking: HTTP Basic against the users file (tus clients), the session cookie of the
//! page (with its CSRF token on every state-changing request), or a trusted reverse-proxy
//! header, but only when the config names one.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, Method, StatusCode};
use base64::Engine;

/// The session cookie's name.
pub const COOKIE: &str = "linkfarm_session";
const SESSION_LIFETIME_SECS: u64 = 12 * 3600;

/// A logged-in page.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// The user.
    pub user: String,
    /// The token the page must send as `X-CSRF-Token`.
    pub csrf: String,
    expires: u64,
}

/// The page sessions, kept in the state directory (`sessions.json`, mode 0600, keyed by the
/// SHA-256 of the cookie token, never the token itself) so that a restarted service does not
/// sign out a page in the middle of a 20 GB upload.
pub struct Sessions {
    file: std::path::PathBuf,
    map: Mutex<HashMap<String, Session>>,
}

fn key(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Sessions {
    /// The sessions saved in `state_dir` (none when the file is missing or unreadable).
    pub fn open(state_dir: &std::path::Path) -> Sessions {
        let file = state_dir.join("sessions.json");
        let map = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Sessions {
            file,
            map: Mutex::new(map),
        }
    }

    fn save(&self, m: &HashMap<String, Session>) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.file.with_extension("json.tmp");
        let r = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&serde_json::to_vec(m).expect("sessions serialize"))?;
                f.sync_data()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = r {
            tracing::warn!(
                "{}: sessions not saved, a restart will sign pages out: {e}",
                self.file.display()
            );
        }
    }

    /// A new session for `user`: `(cookie token, session)`.
    pub fn create(&self, user: &str) -> (String, Session) {
        let token = crate::store::new_id() + &crate::store::new_id();
        let now = crate::store::now();
        let s = Session {
            user: user.to_owned(),
            csrf: crate::store::new_id(),
            expires: now + SESSION_LIFETIME_SECS,
        };
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, v| v.expires > now);
        m.insert(key(&token), s.clone());
        self.save(&m);
        (token, s)
    }

    /// The live session of `token`.
    pub fn get(&self, token: &str) -> Option<Session> {
        let m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&key(token))
            .filter(|s| s.expires > crate::store::now())
            .cloned()
    }

    /// Ends a session.
    pub fn remove(&self, token: &str) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.remove(&key(token)).is_some() {
            self.save(&m);
        }
    }
}

/// The session token in the request's cookies.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Why a request is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or wrong ones: 401.
    Unauthenticated,
    /// A cookie session without its CSRF token on a state-changing request: 403.
    Csrf,
}

impl Denied {
    /// The status code.
    pub fn status(self) -> StatusCode {
        match self {
            Denied::Unauthenticated => StatusCode::UNAUTHORIZED,
            Denied::Csrf => StatusCode::FORBIDDEN,
        }
    }
}

/// The user of a request.
pub async fn user_of(
    app: &crate::server::App,
    method: &Method,
    headers: &HeaderMap,
) -> Result<String, Denied> {
    let cfg = app.config();
    if let Some(h) = &cfg.web.trusted_user_header {
        if let Some(v) = headers.get(h.as_str()).and_then(|v| v.to_str().ok()) {
            if crate::users::valid_name(v) {
                return Ok(v.to_owned());
            }
            return Err(Denied::Unauthenticated);
        }
    }
    if let Some(auth) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (user, pw) = basic(auth).ok_or(Denied::Unauthenticated)?;
        return if app.users.check(&user, &pw).await {
            Ok(user)
        } else {
            Err(Denied::Unauthenticated)
        };
    }
    if let Some(token) = cookie_token(headers) {
        let s = app.sessions.get(&token).ok_or(Denied::Unauthenticated)?;
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
            if sent != Some(s.csrf.as_str()) {
                return Err(Denied::Csrf);
            }
        }
        return Ok(s.user);
    }
    Err(Denied::Unauthenticated)
}

fn basic(header: &str) -> Option<(String, String)> {
    let b64 = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}
