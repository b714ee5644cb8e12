//! The upload page: plain HTML, CSS and JS compiled into the binary (no build step), the login
//! form that sets the session cookie, and the session endpoint the page reads its CSRF token and
//! folders from.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::{Deserialize, Serialize};

use crate::auth::COOKIE;
use crate::server::App;

const APP_HTML: &str = include_str!("../assets/app.html");
const LOGIN_HTML: &str = include_str!("../assets/login.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const ICON_SVG: &str = include_str!("../assets/icon.svg");

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

fn login_page(status: StatusCode, error: &str) -> Response {
    let e = if error.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" role=\"alert\">{error}</p>")
    };
    html(status, LOGIN_HTML.replace("<!--ERROR-->", &e))
}

/// `GET /`: the page for a logged-in user, else the login form.
pub async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match crate::auth::user_of(&app, &Method::GET, &headers).await {
        Ok(_) => html(StatusCode::OK, APP_HTML.to_owned()),
        Err(_) => login_page(StatusCode::OK, ""),
    }
}

/// `GET /assets/<name>`.
pub async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    let (body, ty) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        "icon.svg" => (ICON_SVG, "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
}

/// `POST /login`: checks the password, sets the session cookie, redirects to the page.
pub async fn login(State(app): State<Arc<App>>, Form(f): Form<LoginForm>) -> Response {
    if !crate::users::valid_name(&f.user) || !app.users.check(&f.user, &f.password).await {
        tracing::warn!(user = %f.user.escape_debug(), "failed web login");
        return login_page(StatusCode::UNAUTHORIZED, "Wrong user name or password.");
    }
    let (token, _) = app.sessions.create(&f.user);
    let secure = if app.tls { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200{secure}");
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /logout` (needs the CSRF token like every state-changing request).
pub async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(d) = crate::auth::user_of(&app, &Method::POST, &headers).await {
        return (d.status(), "log in first\n").into_response();
    }
    if let Some(t) = crate::auth::cookie_token(&headers) {
        app.sessions.remove(&t);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("linkfarm_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

#[derive(Serialize)]
struct SessionInfo {
    user: String,
    csrf: String,
    max_chunk: u64,
    inboxes: Vec<InboxInfo>,
}

#[derive(Serialize)]
struct InboxInfo {
    name: String,
    folders: Vec<String>,
    accept: Vec<String>,
    max_size: u64,
}

/// `GET /api/session`: who is logged in, the CSRF token, and what can be uploaded where.
pub async fn session(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(s) = crate::auth::cookie_token(&headers).and_then(|t| app.sessions.get(&t)) else {
        return (StatusCode::UNAUTHORIZED, "log in first\n").into_response();
    };
    let cfg = app.config();
    let inboxes = cfg
        .inboxes
        .iter()
        .map(|i| InboxInfo {
            name: i.name.clone(),
            folders: i.folder_list().into_iter().map(|(f, _)| f).collect(),
            accept: i.accept.iter().chain(&i.companions).cloned().collect(),
            max_size: i.max_size,
        })
        .collect();
    Json(SessionInfo {
        user: s.user,
        csrf: s.csrf,
        max_chunk: cfg.web.max_chunk,
        inboxes,
    })
    .into_response()
}
