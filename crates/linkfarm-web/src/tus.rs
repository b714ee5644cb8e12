//! tus 1.0.0: core, creation, termination, checksum (sha1, sha256) and expiration, writing into
//! the inbox folders (SPEC §13).
//!
//! Every refusal the inbox would make is made here first, before a byte is stored: at creation
//! from the metadata and `Upload-Length`, and on the first bytes from the format's header. A
//! chunk is acknowledged only once it is on disk (fsync) and the new offset is recorded. The part
//! file is renamed to its final name only when the last byte is on disk, never replacing
//! anything; from there the daemon decides. Nothing here ever writes outside `dir/<folder>/`.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::StreamExt;
use linkfarm_formats::FileType;
use sha1::Digest;

use crate::inbox::{NameVerdict, OnExists};
use crate::part::PartWriter;
use crate::server::App;
use crate::store::{new_id, now, Phase, Upload};

const TUS_VERSION: &str = "1.0.0";

/// A tus answer: a status, headers, and a plain-words body for people reading curl's output.
fn reply(status: StatusCode, headers: &[(&str, String)], text: &str) -> Response {
    let mut r = (status, text.to_owned()).into_response();
    let h = r.headers_mut();
    h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::try_from(*k),
            HeaderValue::try_from(v.as_str()),
        ) {
            h.insert(k, v);
        }
    }
    r
}

fn err(status: StatusCode, text: &str) -> Response {
    reply(status, &[], &format!("{text}\n"))
}

fn expires_header(at: u64) -> (&'static str, String) {
    (
        "upload-expires",
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(at)),
    )
}

async fn authenticate(app: &App, method: &Method, headers: &HeaderMap) -> Result<String, Response> {
    crate::auth::user_of(app, method, headers).await.map_err(|d| {
        let mut r = err(
            d.status(),
            if d == crate::auth::Denied::Csrf {
                "missing or wrong X-CSRF-Token"
            } else {
                "log in: HTTP Basic with a user of `linkfarm web user add`"
            },
        );
        if d == crate::auth::Denied::Unauthenticated && crate::auth::cookie_token(headers).is_none() {
            r.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Basic realm=\"linkfarm\", charset=\"UTF-8\""),
            );
        }
        r
    })
}

fn check_version(headers: &HeaderMap) -> Result<(), Response> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(reply(
            StatusCode::PRECONDITION_FAILED,
            &[("tus-version", TUS_VERSION.into())],
            "this server speaks tus 1.0.0 (Tus-Resumable: 1.0.0)\n",
        )),
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Free bytes for an unprivileged writer on the filesystem of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    Some(s.blocks_available().saturating_mul(s.fragment_size()))
}

/// `OPTIONS /files/`: what this server speaks.
pub async fn options(State(app): State<Arc<App>>) -> Response {
    reply(
        StatusCode::NO_CONTENT,
        &[
            ("tus-version", TUS_VERSION.into()),
            ("tus-extension", "creation,termination,checksum,expiration".into()),
            ("tus-max-size", app.config().max_size().to_string()),
            ("tus-checksum-algorithm", "sha1,sha256".into()),
        ],
        "",
    )
}

/// `POST /files/`: creation, with every early refusal that needs no bytes.
pub async fn create(State(app): State<Arc<App>>, method: Method, headers: HeaderMap) -> Response {
    let user = match authenticate(&app, &method, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    if let Err(r) = check_version(&headers) {
        return r;
    }
    let cfg = app.config();
    let Some(length) = header_u64(&headers, "upload-length") else {
        return err(
            StatusCode::BAD_REQUEST,
            "Upload-Length is required (Upload-Defer-Length is not supported)",
        );
    };
    let meta = headers
        .get("upload-metadata")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(meta) = crate::meta::parse(meta) else {
        return err(StatusCode::BAD_REQUEST, "Upload-Metadata is not `key base64,...`");
    };
    let mut filename = None;
    let mut folder = None;
    let mut inbox = None;
    for (k, v) in meta {
        match k.as_str() {
            "filename" => filename = Some(v),
            "folder" => folder = Some(v),
            "inbox" => inbox = Some(v),
            // Uppy and tus-js-client add their own keys (filetype, name, ...); they mean nothing here.
            _ => {}
        }
    }
    let Some(filename) = filename else {
        return err(StatusCode::BAD_REQUEST, "Upload-Metadata needs `filename`");
    };
    if let Some(why) = crate::meta::bad_filename(&filename) {
        return err(StatusCode::BAD_REQUEST, why);
    }
    let Some(folder) = folder else {
        return err(
            StatusCode::BAD_REQUEST,
            "Upload-Metadata needs `folder` (the model type, e.g. loras)",
        );
    };
    let spec = match inbox {
        Some(name) => match cfg.inboxes.iter().find(|i| i.name == name) {
            Some(i) => i,
            None => {
                return err(
                    StatusCode::FORBIDDEN,
                    &format!("inbox `{name}` is not served here"),
                )
            }
        },
        None if cfg.inboxes.len() == 1 => &cfg.inboxes[0],
        None => {
            return err(
                StatusCode::BAD_REQUEST,
                "Upload-Metadata needs `inbox`: this server serves several",
            )
        }
    };
    let Some(target) = spec.target_of(&folder) else {
        return err(
            StatusCode::FORBIDDEN,
            &format!("folder `{folder}` is not a folder of inbox `{}`", spec.name),
        );
    };
    let limit = match spec.judge_name(&filename) {
        NameVerdict::Ok(_, limit) => limit,
        NameVerdict::NotAccepted => {
            let accepted = spec
                .accept
                .iter()
                .chain(&spec.companions)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            return err(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("this inbox does not accept `{filename}`: it takes {accepted}"),
            );
        }
    };
    if length > limit {
        return err(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("{length} bytes is over this inbox's limit of {limit} bytes"),
        );
    }
    let folder_dir = spec.dir.join(&folder);
    if spec.on_exists == OnExists::Refuse
        && std::fs::symlink_metadata(spec.target_dir.join(&target).join(&filename)).is_ok()
    {
        return err(
            StatusCode::CONFLICT,
            &format!("a model named `{filename}` exists in {folder}; rename your file"),
        );
    }
    if std::fs::symlink_metadata(folder_dir.join(&filename)).is_ok() {
        return err(
            StatusCode::CONFLICT,
            &format!("`{filename}` is waiting in the inbox already"),
        );
    }
    // Counting the unfinished uploads and adding this one is one step: two creations at once
    // must not both pass the per-user limit or both take the same name.
    let _creating = app.creating.lock().await;
    let mine_active = app
        .store
        .all()
        .iter()
        .map(|e| e.get())
        .filter(|u| u.phase == Phase::Uploading)
        .fold((0u32, false), |(n, clash), u| {
            let same = u.inbox == spec.name && u.folder == folder && u.filename == filename;
            (n + u32::from(u.user == user), clash || same)
        });
    if mine_active.1 {
        return err(
            StatusCode::CONFLICT,
            &format!("`{filename}` is being uploaded already"),
        );
    }
    if mine_active.0 >= cfg.web.max_uploads_per_user {
        return err(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "you have {} unfinished uploads, the most allowed; finish or cancel one",
                mine_active.0
            ),
        );
    }
    match free_bytes(&spec.dir) {
        Some(free) if free < length.saturating_add(cfg.web.reserve) => {
            return err(
                StatusCode::INSUFFICIENT_STORAGE,
                "the inbox's disk is too full for this upload; ask the admin to free space",
            );
        }
        None => {
            return err(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("inbox `{}` is not reachable; is its dir mounted?", spec.name),
            )
        }
        Some(_) => {}
    }
    let u = Upload {
        id: new_id(),
        user,
        inbox: spec.name.clone(),
        folder,
        filename,
        final_name: None,
        folder_dir,
        length,
        offset: 0,
        phase: Phase::Uploading,
        reason: None,
        why: None,
        header_checked: false,
        expires: now() + cfg.web.expire_after.as_secs(),
        ended: None,
    };
    let part = u.part_path();
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part);
    if let Err(e) = created {
        tracing::error!("cannot create {}: {e}", part.display());
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            "the inbox folder is missing; is linkfarm running?"
        } else {
            "the service cannot write into the inbox folder; see its log"
        };
        return err(StatusCode::SERVICE_UNAVAILABLE, hint);
    }
    if let Err(e) = app.store.save(&u) {
        let _ = std::fs::remove_file(&part);
        tracing::error!("cannot record upload {}: {e}", u.id);
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot record the upload; see the service's log",
        );
    }
    tracing::info!(user = %u.user, inbox = %u.inbox, folder = %u.folder, file = %u.filename, length, id = %u.id, "upload created");
    let r = reply(
        StatusCode::CREATED,
        &[
            ("location", format!("/files/{}", u.id)),
            expires_header(u.expires),
        ],
        "",
    );
    app.store.insert(u);
    r
}

/// The upload `id` of `user`, or 404 (also for another user's: its existence is not told).
fn owned(app: &App, id: &str, user: &str) -> Result<crate::store::Handle, Response> {
    match app.store.get(id) {
        Some(h) if h.get().user == user => Ok(h),
        _ => Err(err(StatusCode::NOT_FOUND, "no such upload")),
    }
}

/// The signed-in user and their upload `id`, for a request that changes it (PATCH, DELETE):
/// 401 without a user, 412 without `Tus-Resumable: 1.0.0`, 404 for an upload not theirs.
async fn request_for(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    id: &str,
) -> Result<(String, crate::store::Handle), Response> {
    let user = authenticate(app, method, headers).await?;
    check_version(headers)?;
    let h = owned(app, id, &user)?;
    Ok((user, h))
}

/// `HEAD /files/<id>`: the server's offset.
pub async fn head(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let user = match authenticate(&app, &method, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let h = match owned(&app, &id, &user) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let u = h.get();
    let mut hs = vec![
        ("upload-offset", u.offset.to_string()),
        ("upload-length", u.length.to_string()),
    ];
    match u.phase {
        Phase::Uploading => hs.push(expires_header(u.expires)),
        Phase::Done => {}
        Phase::Refused | Phase::Expired => {
            return err(StatusCode::NOT_FOUND, "this upload was refused or expired")
        }
    }
    reply(StatusCode::OK, &hs, "")
}

/// `DELETE /files/<id>`: termination of an unfinished upload; its part file is removed.
pub async fn terminate(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let (_, h) = match request_for(&app, &method, &headers, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(_busy) = h.busy.try_lock() else {
        return err(StatusCode::CONFLICT, "a chunk of this upload is being written");
    };
    let u = h.get();
    if u.phase != Phase::Uploading {
        return err(StatusCode::NOT_FOUND, "this upload is not in progress");
    }
    let _ = std::fs::remove_file(u.part_path());
    app.store.forget(&id);
    tracing::info!(user = %u.user, id = %u.id, "upload terminated");
    reply(StatusCode::NO_CONTENT, &[], "")
}

enum Checksum {
    Sha1(sha1::Sha1, Vec<u8>),
    Sha256(sha2::Sha256, Vec<u8>),
}

impl Checksum {
    fn parse(v: &str) -> Option<Checksum> {
        let (alg, b64) = v.trim().split_once(' ')?;
        let want = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        match alg {
            "sha1" => Some(Checksum::Sha1(sha1::Sha1::new(), want)),
            "sha256" => Some(Checksum::Sha256(sha2::Sha256::new(), want)),
            _ => None,
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Checksum::Sha1(h, _) => h.update(b),
            Checksum::Sha256(h, _) => h.update(b),
        }
    }
    fn matches(self) -> bool {
        match self {
            Checksum::Sha1(h, w) => h.finalize().as_slice() == w.as_slice(),
            Checksum::Sha256(h, w) => h.finalize().as_slice() == w.as_slice(),
        }
    }
}

/// How many first bytes decide whether a file is its declared format, and the check.
fn header_need(t: FileType) -> u64 {
    match t {
        FileType::Safetensors => 9,
        FileType::Gguf => 8,
        FileType::Pickle => 4,
        FileType::Companion(_) => 0,
    }
}

/// Whether `prefix` (the first bytes, all of them when the file is shorter than needed) can begin
/// a file of type `t` that is `length` bytes long; `Err` says what is wrong in plain words.
pub fn check_header(t: FileType, prefix: &[u8], length: u64) -> Result<(), String> {
    match t {
        FileType::Safetensors => {
            let Some(len) = prefix.get(..8) else {
                return Err("too short for a safetensors file".into());
            };
            let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
            if !(2..=linkfarm_formats::safetensors::MAX_HEADER).contains(&n) || n.saturating_add(8) > length {
                return Err(format!(
                    "not a safetensors file: its header length {n} does not fit"
                ));
            }
            if prefix.get(8) != Some(&b'{') {
                return Err("not a safetensors file: the header is not JSON".into());
            }
            Ok(())
        }
        FileType::Gguf => {
            if prefix.len() < 8 || &prefix[..4] != b"GGUF" {
                return Err("not a GGUF file: it does not start with `GGUF`".into());
            }
            let v = u32::from_le_bytes(prefix[4..8].try_into().expect("4 bytes"));
            if !(1..=3).contains(&v) {
                return Err(format!("not a GGUF file this inbox knows: version {v}"));
            }
            Ok(())
        }
        FileType::Pickle => {
            let zip = prefix.starts_with(b"PK\x03\x04");
            let pickle = prefix.len() >= 2 && prefix[0] == 0x80 && (2..=5).contains(&prefix[1]);
            if zip || pickle {
                Ok(())
            } else {
                Err("neither a torch zip nor a pickle".into())
            }
        }
        FileType::Companion(_) => Ok(()),
    }
}

/// `PATCH /files/<id>`: one chunk, streamed to the part file, fsync'ed, then acknowledged.
pub async fn patch(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Body,
) -> Response {
    let (user, h) = match request_for(&app, &method, &headers, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(busy) = h.busy.clone().try_lock_owned() else {
        return err(StatusCode::CONFLICT, "another request is writing this upload");
    };
    let cfg = app.config();
    let mut u = h.get();
    // Expired but not yet swept (the sweep runs every 15 s): as good as gone.
    if u.phase == Phase::Uploading && u.expires <= now() {
        return err(StatusCode::NOT_FOUND, "this upload expired");
    }
    if u.phase != Phase::Uploading {
        if u.phase == Phase::Done && header_u64(&headers, "upload-offset") == Some(u.length) {
            return reply(
                StatusCode::NO_CONTENT,
                &[("upload-offset", u.length.to_string())],
                "",
            );
        }
        return err(
            StatusCode::NOT_FOUND,
            "this upload is not in progress (refused, expired or finished)",
        );
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/offset+octet-stream") {
        return err(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a PATCH needs Content-Type: application/offset+octet-stream",
        );
    }
    let Some(offset) = header_u64(&headers, "upload-offset") else {
        return err(StatusCode::BAD_REQUEST, "Upload-Offset is required");
    };
    if offset != u.offset {
        return reply(
            StatusCode::CONFLICT,
            &[("upload-offset", u.offset.to_string())],
            &format!(
                "the server has {} bytes; send from there (HEAD tells)\n",
                u.offset
            ),
        );
    }
    let declared = header_u64(&headers, "content-length");
    if declared.is_some_and(|n| n > cfg.web.max_chunk) {
        return err(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a chunk may be at most {} bytes", cfg.web.max_chunk),
        );
    }
    if declared.is_some_and(|n| offset + n > u.length) {
        return err(
            StatusCode::PAYLOAD_TOO_LARGE,
            "this chunk goes past Upload-Length",
        );
    }
    let mut checksum = match headers
        .get("upload-checksum")
        .map(|v| v.to_str().ok().and_then(Checksum::parse))
    {
        None => None,
        Some(Some(c)) => Some(c),
        Some(None) => {
            return err(
                StatusCode::BAD_REQUEST,
                "Upload-Checksum must be `sha1 <base64>` or `sha256 <base64>`",
            )
        }
    };
    let coming = declared.unwrap_or(u.length - offset).min(u.length - offset);
    match free_bytes(&u.folder_dir) {
        Some(free) if free < coming.saturating_add(cfg.web.reserve) => {
            return reply(
                StatusCode::INSUFFICIENT_STORAGE,
                &[("upload-offset", u.offset.to_string())],
                "the inbox's disk is too full; the upload stays resumable once space is freed\n",
            );
        }
        _ => {}
    }
    let part = u.part_path();
    let mut w = match PartWriter::open(part.clone(), offset, Arc::new(busy)).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("upload {id}: cannot open {}: {e}", part.display());
            return err(
                StatusCode::SERVICE_UNAVAILABLE,
                "the part file cannot be opened; see the service's log",
            );
        }
    };
    let mut stream = body.into_data_stream();
    let mut failure: Option<Response> = None;
    while let Some(frame) = stream.next().await {
        let data = match frame {
            Ok(d) => d,
            Err(e) => {
                // A dropped connection or an idle body: keep what arrived (tus resumes there).
                tracing::info!("upload {id}: body ended early after {} bytes: {e}", w.written());
                let limit = e.to_string().contains("length limit");
                failure = Some(if limit {
                    err(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("a chunk may be at most {} bytes", cfg.web.max_chunk),
                    )
                } else {
                    err(StatusCode::BAD_REQUEST, "the request body ended early")
                });
                break;
            }
        };
        if offset + w.written() + data.len() as u64 > u.length {
            failure = Some(err(
                StatusCode::PAYLOAD_TOO_LARGE,
                "this chunk goes past Upload-Length",
            ));
            break;
        }
        if let Some(c) = checksum.as_mut() {
            c.update(&data);
        }
        if let Err(e) = w.push(data).await {
            return write_failed(&id, w, offset, &e).await;
        }
    }
    // A checksum covers the whole chunk: a partial or mismatching one is dropped whole.
    if let Some(c) = checksum {
        if failure.is_some() || !c.matches() {
            w.discard().await;
            if let Some(f) = failure {
                return f;
            }
            return reply(
                StatusCode::from_u16(460).expect("460"),
                &[("upload-offset", offset.to_string())],
                "checksum mismatch: the chunk was dropped, send it again\n",
            );
        }
    }
    let written = w.written();
    let w2 = match w.finish().await {
        Ok(()) => None,
        Err((w, e)) => Some((w, e)),
    };
    if let Some((w, e)) = w2 {
        return write_failed(&id, w, offset, &e).await;
    }
    u.offset = offset + written;
    u.expires = now() + cfg.web.expire_after.as_secs();
    if !u.header_checked {
        if let Some(t) = FileType::from_name(&u.filename) {
            let need = header_need(t);
            if u.offset >= need || u.offset == u.length {
                u.header_checked = true;
                let mut prefix = vec![0; usize::try_from(need.min(u.offset)).unwrap_or(0)];
                let read = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&part)
                    .and_then(|mut f| f.read_exact(&mut prefix));
                let verdict = read
                    .map_err(|e| e.to_string())
                    .and_then(|()| check_header(t, &prefix, u.length));
                if let Err(why) = verdict {
                    return refuse(&app, &h, u, "corrupt", &format!("`{}` is not a {} file: {why}. Check that the download finished and that the extension is right.", u_name(&h), t.name()), StatusCode::UNSUPPORTED_MEDIA_TYPE);
                }
            }
        }
    }
    if u.offset == u.length {
        match finish(&u, &user) {
            Ok(name) => {
                u.final_name = Some(name);
                u.phase = Phase::Done;
                u.ended = Some(now());
                tracing::info!(user = %u.user, inbox = %u.inbox, folder = %u.folder, file = %u.filename, id = %u.id, "upload complete, handed to the inbox");
            }
            Err(e) => {
                tracing::error!("upload {id}: cannot move the finished file into place: {e}");
                return err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the upload is complete but could not be handed to the inbox; see the service's log",
                );
            }
        }
    }
    if let Err(e) = app.store.save(&u) {
        tracing::error!("upload {id}: cannot record the offset: {e}");
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot record the offset; see the service's log",
        );
    }
    let offset_now = u.offset;
    let exp = u.expires;
    h.set(u);
    if let Some(f) = failure {
        return f;
    }
    reply(
        StatusCode::NO_CONTENT,
        &[("upload-offset", offset_now.to_string()), expires_header(exp)],
        "",
    )
}

/// A write or fsync that failed: the chunk's bytes are dropped (507 for a full disk, the upload
/// stays resumable at `offset`).
async fn write_failed(id: &str, w: PartWriter, offset: u64, e: &std::io::Error) -> Response {
    w.discard().await;
    if e.raw_os_error() == Some(libc_enospc()) {
        return reply(
            StatusCode::INSUFFICIENT_STORAGE,
            &[("upload-offset", offset.to_string())],
            "the inbox's disk is full; the upload stays resumable once space is freed\n",
        );
    }
    tracing::error!("upload {id}: write: {e}");
    err(
        StatusCode::INTERNAL_SERVER_ERROR,
        "cannot write the part file; see the service's log",
    )
}

fn u_name(h: &crate::store::Handle) -> String {
    h.get().filename
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

/// Ends an upload early: its part file goes (it was never a user's file), its record stays so
/// the page can say why, and later requests get 404.
fn refuse(
    app: &App,
    h: &crate::store::Handle,
    mut u: Upload,
    reason: &str,
    why: &str,
    status: StatusCode,
) -> Response {
    let _ = std::fs::remove_file(u.part_path());
    u.phase = Phase::Refused;
    u.reason = Some(reason.into());
    u.why = Some(why.into());
    u.ended = Some(now());
    if let Err(e) = app.store.save(&u) {
        tracing::error!("upload {}: cannot record the refusal: {e}", u.id);
    }
    tracing::warn!(user = %u.user, inbox = %u.inbox, folder = %u.folder, file = %u.filename, id = %u.id, reason, "upload refused early: {why}");
    h.set(u);
    err(status, why)
}

/// Marks the file with its uploader and renames it to its final name, never over anything: a
/// name taken meanwhile in the inbox folder gets ` (2)`, ` (3)`, ... as the daemon would do.
fn finish(u: &Upload, user: &str) -> std::io::Result<String> {
    let part = u.part_path();
    if let Err(e) = xattr::set(&part, "user.linkfarm.web_user", user.as_bytes()) {
        tracing::warn!(
            "{}: cannot set user.linkfarm.web_user ({e}); the upload log will not name the web user",
            part.display()
        );
    }
    let dir = std::fs::File::open(&u.folder_dir)?;
    let (stem, ext) = match u.filename.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_owned(), format!(".{e}")),
        _ => (u.filename.clone(), String::new()),
    };
    for n in 1..1000u32 {
        let name = if n == 1 {
            u.filename.clone()
        } else {
            format!("{stem} ({n}){ext}")
        };
        match nix::fcntl::renameat2(
            &dir,
            part.file_name().expect("a part name"),
            &dir,
            name.as_str(),
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                dir.sync_all()?;
                return Ok(name);
            }
            Err(nix::errno::Errno::EEXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::other("a thousand names taken"))
}

/// Removes expired uploads' part files (checked every 15 s, so within a minute of expiry) and
/// forgets records two days after they ended.
pub async fn expire_loop(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tick.tick().await;
        expire_now(&app);
    }
}

/// One round of [`expire_loop`].
pub fn expire_now(app: &App) {
    let t = now();
    for h in app.store.all() {
        let Ok(_busy) = h.busy.try_lock() else { continue };
        let mut u = h.get();
        if u.phase == Phase::Uploading && u.expires <= t {
            let _ = std::fs::remove_file(u.part_path());
            u.phase = Phase::Expired;
            u.ended = Some(t);
            tracing::info!(user = %u.user, id = %u.id, file = %u.filename, "upload expired, part file removed");
            if let Err(e) = app.store.save(&u) {
                tracing::error!("upload {}: {e}", u.id);
            }
            h.set(u);
        } else if u.ended.is_some_and(|e| e + 2 * 86400 <= t) {
            app.store.forget(&u.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_each_format() {
        let mut st = 20u64.to_le_bytes().to_vec();
        st.push(b'{');
        assert!(check_header(FileType::Safetensors, &st, 100).is_ok());
        assert!(
            check_header(FileType::Safetensors, &st, 20).is_err(),
            "header longer than the file"
        );
        assert!(check_header(FileType::Safetensors, b"PK\x03\x04abcdefg", 100).is_err());
        assert!(check_header(FileType::Gguf, b"GGUF\x03\0\0\0", 100).is_ok());
        assert!(check_header(FileType::Gguf, b"GGUF\x09\0\0\0", 100).is_err());
        assert!(check_header(FileType::Pickle, b"PK\x03\x04", 100).is_ok());
        assert!(check_header(FileType::Pickle, b"\x80\x02}q", 100).is_ok());
        assert!(check_header(FileType::Pickle, b"<htm", 100).is_err());
    }
}
