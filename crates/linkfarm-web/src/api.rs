//! `GET /api/uploads/<id>`: where an upload stands, and once the daemon decided, its decision as
//! written in the upload log (SPEC §10's JSON lines), with the `.why.txt` text of a refusal.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::server::App;
use crate::store::{Phase, Upload};

/// The answer (SPEC §13's keys).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Status {
    /// The tus id.
    pub id: String,
    /// The file name asked for.
    pub filename: String,
    /// The inbox.
    pub inbox: String,
    /// The folder.
    pub folder: String,
    /// `uploading`, `pending`, `accepted`, `refused` or `expired`.
    pub state: &'static str,
    /// Bytes stored.
    pub offset: u64,
    /// `Upload-Length`.
    pub length: u64,
    /// The reason word of the decision (`valid`, `corrupt`, `exists`, ...).
    pub reason: Option<String>,
    /// A refusal's explanation (the `.why.txt` text).
    pub why: Option<String>,
    /// The SHA-256 the daemon computed.
    pub sha256: Option<String>,
}

/// A decision of the daemon, as logged.
#[derive(Debug, serde::Deserialize)]
struct Record {
    time: Option<String>,
    inbox: String,
    folder: String,
    file: String,
    action: String,
    reason: Option<String>,
    sha256: Option<String>,
    target: Option<String>,
}

/// Seconds since the epoch of an RFC 3339 UTC time (`2026-12-01T15:30:00Z`, fractions and a
/// `+00:00` offset allowed); `None` for anything else.
fn rfc3339_secs(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let rest = &t[19..];
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match rest {
        "Z" | "+00:00" => 0,
        r if r.len() == 6 => {
            let sign = if r.starts_with('-') { -1 } else { 1 };
            sign * (r[1..3].parse::<i64>().ok()? * 3600 + r[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    u64::try_from(days * 86400 + hh * 3600 + mm * 60 + ss - offset).ok()
}

/// The daemon's last decision about `u`'s file made after it was handed over.
fn decision(log: &Path, u: &Upload) -> Option<Record> {
    let name = u.final_name.as_deref().unwrap_or(&u.filename);
    let since = u.ended.unwrap_or(0).saturating_sub(5);
    let f = match std::fs::File::open(log) {
        Ok(f) => f,
        Err(e) => {
            unreadable_log(log, &e);
            return None;
        }
    };
    let mut found = None;
    for line in BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        let Ok(r) = serde_json::from_str::<Record>(&line) else {
            continue;
        };
        if r.inbox == u.inbox && r.folder == u.folder && r.file == name {
            let recent = r
                .time
                .as_deref()
                .and_then(rfc3339_secs)
                .is_none_or(|t| t >= since);
            if recent {
                found = Some(r);
            }
        }
    }
    found
}

/// Says once (per run) why the page shows uploads as pending for good: the daemon's upload log
/// cannot be read. A log not made yet (no decision so far) is no news.
fn unreadable_log(log: &Path, e: &std::io::Error) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if e.kind() != std::io::ErrorKind::NotFound && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "cannot read the daemon's upload log {}: {e}; the page cannot show decisions. \
             hint: the daemon gives it the group linkfarm-web (mode 0640): run this service as a \
             user in that group",
            log.display()
        );
    }
}

fn why_text(target: &str) -> Option<String> {
    let f = std::fs::File::open(format!("{target}.why.txt")).ok()?;
    let mut s = String::new();
    f.take(64 * 1024).read_to_string(&mut s).ok()?;
    Some(s)
}

/// Where `u` stands, with the daemon's decision once there is one.
pub fn status_of(u: &Upload, log: &Path) -> Status {
    let mut s = Status {
        id: u.id.clone(),
        filename: u.filename.clone(),
        inbox: u.inbox.clone(),
        folder: u.folder.clone(),
        state: "uploading",
        offset: u.offset,
        length: u.length,
        reason: u.reason.clone(),
        why: u.why.clone(),
        sha256: None,
    };
    match u.phase {
        Phase::Uploading => {}
        Phase::Expired => s.state = "expired",
        Phase::Refused => s.state = "refused",
        Phase::Done => match decision(log, u) {
            None => s.state = "pending",
            Some(r) => {
                s.state = if r.action == "accept" {
                    "accepted"
                } else {
                    "refused"
                };
                s.reason = r.reason;
                s.sha256 = r.sha256;
                if r.action != "accept" {
                    s.why = r.target.as_deref().and_then(why_text);
                }
            }
        },
    }
    s
}

/// The handler.
pub async fn upload_status(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let user = match crate::auth::user_of(&app, &method, &headers).await {
        Ok(u) => u,
        Err(d) => return (d.status(), "log in first\n").into_response(),
    };
    let Some(h) = app.store.get(&id).filter(|h| h.get().user == user) else {
        return (StatusCode::NOT_FOUND, "no such upload\n").into_response();
    };
    let u = h.get();
    let log = app.config().upload_log.clone();
    let s = tokio::task::spawn_blocking(move || status_of(&u, &log)).await;
    match s {
        Ok(s) => Json(s).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339_secs;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_secs("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_secs("2026-12-01T15:30:00.123Z"), Some(1_796_139_000));
        assert_eq!(rfc3339_secs("2026-12-01T16:30:00+01:00"), Some(1_796_139_000));
        assert_eq!(rfc3339_secs("yesterday"), None);
    }
}
