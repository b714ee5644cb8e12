//! The tus server and the page's endpoints against a real server on 127.0.0.1:0, real temp dirs
//! and a plain HTTP/1.1 client written here (so that what is on the wire is exactly what the
//! test says).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use linkfarm_core::web::Web;
use linkfarm_web::inbox::{Folders, InboxSpec, OnExists};
use linkfarm_web::{App, Config};
use sha1::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    web: Web,
    log: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        for d in [
            "inbox/loras",
            "inbox/checkpoints",
            "models/loras",
            "models/checkpoints",
            "state",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let users = root.join("users");
        linkfarm_web::users::add(&users, "alice", "pw-alice", false).unwrap();
        linkfarm_web::users::add(&users, "bob", "pw-bob", false).unwrap();
        let web = Web {
            users_file: users,
            reserve: 0,
            max_uploads_per_user: 3,
            max_chunk: 1 << 20,
            ..Web::default()
        };
        Env {
            log: root.join("uploads.jsonl"),
            _tmp: tmp,
            root,
            web,
        }
    }

    fn config(&self) -> Config {
        Config {
            web: self.web.clone(),
            inboxes: vec![InboxSpec {
                name: "models-inbox".into(),
                dir: self.root.join("inbox"),
                target_dir: self.root.join("models"),
                folders: Folders::All,
                exclude: linkfarm_core::names::NameFilter::new([".*"]).unwrap(),
                refused_dir: self.root.join("inbox/_refused"),
                accept: vec!["safetensors".into(), "gguf".into()],
                companions: vec!["png".into()],
                max_size: 10 << 20,
                companion_max_size: 1 << 20,
                on_exists: OnExists::Refuse,
            }],
            upload_log: self.log.clone(),
        }
    }

    async fn start(&self) -> Server {
        let app = App::new(self.config(), &self.root.join("state")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(linkfarm_web::serve(app.clone(), listener, None, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            app,
            stop: Some(tx),
            task,
        }
    }
}

struct Server {
    addr: std::net::SocketAddr,
    app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }

    async fn req(&self, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Resp {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        Resp::parse(&out)
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn parse(raw: &[u8]) -> Resp {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Resp {
            status,
            headers,
            body: body.to_owned(),
        }
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn basic(user: &str, pw: &str) -> (&'static str, String) {
    (
        "Authorization",
        format!("Basic {}", b64(format!("{user}:{pw}").as_bytes())),
    )
}

fn tus() -> (&'static str, String) {
    ("Tus-Resumable", "1.0.0".into())
}

fn meta(filename: &str, folder: &str) -> (&'static str, String) {
    (
        "Upload-Metadata",
        format!(
            "filename {},folder {}",
            b64(filename.as_bytes()),
            b64(folder.as_bytes())
        ),
    )
}

/// A valid safetensors file of `n` data bytes (one U8 tensor).
fn safetensors(n: usize) -> Vec<u8> {
    let mut header =
        format!("{{\"w\":{{\"dtype\":\"U8\",\"shape\":[{n}],\"data_offsets\":[0,{n}]}}}}").into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend((0..n).map(|i| (i * 7 % 251) as u8));
    out
}

async fn create(s: &Server, user: (&'static str, String), name: &str, folder: &str, len: usize) -> Resp {
    s.req(
        "POST",
        "/files/",
        &[
            user,
            tus(),
            ("Upload-Length", len.to_string()),
            meta(name, folder),
        ],
        b"",
    )
    .await
}

fn id_of(r: &Resp) -> String {
    assert_eq!(r.status, 201, "{r:?}");
    r.header("location")
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

async fn patch(
    s: &Server,
    user: (&'static str, String),
    id: &str,
    offset: usize,
    data: &[u8],
    extra: &[(&'static str, String)],
) -> Resp {
    let mut h = vec![
        user,
        tus(),
        ("Upload-Offset", offset.to_string()),
        ("Content-Type", "application/offset+octet-stream".into()),
    ];
    h.extend(extra.iter().cloned());
    s.req("PATCH", &format!("/files/{id}"), &h, data).await
}

fn alice() -> (&'static str, String) {
    basic("alice", "pw-alice")
}

fn part_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".linkfarm-web."))
        .collect()
}

#[tokio::test]
async fn create_patch_in_chunks_and_the_file_appears_whole_under_its_name() {
    let env = Env::new();
    let s = env.start().await;
    let data = safetensors(300_000);
    let opt = s.req("OPTIONS", "/files/", &[], b"").await;
    assert_eq!(opt.status, 204);
    assert_eq!(opt.header("tus-version"), Some("1.0.0"));
    assert!(opt.header("tus-extension").unwrap().contains("checksum"));
    assert_eq!(opt.header("tus-max-size"), Some("10485760"));
    let r = create(&s, alice(), "a.safetensors", "loras", data.len()).await;
    assert!(r.header("upload-expires").is_some());
    let id = id_of(&r);
    let folder = env.root.join("inbox/loras");
    assert_eq!(part_files(&folder), vec![format!(".linkfarm-web.{id}.part")]);
    let mut off = 0;
    for chunk in data.chunks(100_000) {
        let r = patch(&s, alice(), &id, off, chunk, &[]).await;
        assert_eq!(r.status, 204, "{r:?}");
        off += chunk.len();
        assert_eq!(r.header("upload-offset"), Some(off.to_string().as_str()));
        if off < data.len() {
            assert!(
                !folder.join("a.safetensors").exists(),
                "the final name appears only when complete"
            );
            let head = s
                .req("HEAD", &format!("/files/{id}"), &[alice(), tus()], b"")
                .await;
            assert_eq!(head.header("upload-offset"), Some(off.to_string().as_str()));
        }
    }
    assert_eq!(std::fs::read(folder.join("a.safetensors")).unwrap(), data);
    assert!(part_files(&folder).is_empty());
    let head = s
        .req("HEAD", &format!("/files/{id}"), &[alice(), tus()], b"")
        .await;
    assert_eq!(
        (head.status, head.header("upload-offset")),
        (200, Some(data.len().to_string().as_str()))
    );
    // The uploader is on the file, where the filesystem keeps user xattrs.
    let probe = env.root.join("probe");
    std::fs::write(&probe, b"").unwrap();
    if xattr::set(&probe, "user.probe", b"1").is_ok() {
        assert_eq!(
            xattr::get(folder.join("a.safetensors"), "user.linkfarm.web_user").unwrap(),
            Some(b"alice".to_vec())
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_wrong_offset_gets_409_and_the_servers_offset() {
    let env = Env::new();
    let s = env.start().await;
    let data = safetensors(1000);
    let id = id_of(&create(&s, alice(), "a.safetensors", "loras", data.len()).await);
    assert_eq!(patch(&s, alice(), &id, 0, &data[..100], &[]).await.status, 204);
    let r = patch(&s, alice(), &id, 50, &data[50..], &[]).await;
    assert_eq!((r.status, r.header("upload-offset")), (409, Some("100")));
    s.stop().await;
}

#[tokio::test]
async fn a_checksum_mismatch_gets_460_and_drops_the_chunk() {
    let env = Env::new();
    let s = env.start().await;
    let data = safetensors(1000);
    let id = id_of(&create(&s, alice(), "a.safetensors", "loras", data.len()).await);
    let wrong = format!("sha1 {}", b64(&sha1::Sha1::digest(b"something else")));
    let r = patch(&s, alice(), &id, 0, &data, &[("Upload-Checksum", wrong)]).await;
    assert_eq!(r.status, 460, "{r:?}");
    let part = env.root.join(format!("inbox/loras/.linkfarm-web.{id}.part"));
    assert_eq!(
        std::fs::metadata(&part).unwrap().len(),
        0,
        "the mismatching bytes are gone"
    );
    let right = format!("sha256 {}", b64(&sha2::Sha256::digest(&data)));
    assert_eq!(
        patch(&s, alice(), &id, 0, &data, &[("Upload-Checksum", right)])
            .await
            .status,
        204
    );
    let bad_alg = patch(
        &s,
        alice(),
        &id,
        0,
        b"",
        &[("Upload-Checksum", "md5 AAAA".into())],
    )
    .await;
    assert_eq!(bad_alg.status, 404, "finished: no more PATCH");
    s.stop().await;
}

#[tokio::test]
async fn early_refusals_have_their_codes_and_leave_nothing() {
    let mut env = Env::new();
    env.web.max_uploads_per_user = 2;
    std::fs::write(env.root.join("models/loras/taken.safetensors"), b"x").unwrap();
    let s = env.start().await;
    let folder = env.root.join("inbox/loras");
    let long = format!("{}.safetensors", "a".repeat(290));
    for bad in [
        "../x.safetensors",
        "/etc/x.safetensors",
        "a\0b.safetensors",
        long.as_str(),
        ".hidden.safetensors",
        "a/b.safetensors",
    ] {
        let r = create(&s, alice(), bad, "loras", 100).await;
        assert_eq!(r.status, 400, "{bad:?}: {r:?}");
    }
    assert_eq!(
        create(&s, alice(), "a.safetensors", "nope", 100).await.status,
        403
    );
    let other_inbox = s
        .req(
            "POST",
            "/files/",
            &[
                alice(),
                tus(),
                ("Upload-Length", "100".into()),
                (
                    "Upload-Metadata",
                    format!(
                        "filename {},folder {},inbox {}",
                        b64(b"a.safetensors"),
                        b64(b"loras"),
                        b64(b"elsewhere")
                    ),
                ),
            ],
            b"",
        )
        .await;
    assert_eq!(other_inbox.status, 403);
    assert_eq!(
        create(&s, alice(), "taken.safetensors", "loras", 100)
            .await
            .status,
        409
    );
    assert_eq!(create(&s, alice(), "a.exe", "loras", 100).await.status, 415);
    assert_eq!(
        create(&s, alice(), "a.ckpt", "loras", 100).await.status,
        415,
        "pickle is not accepted here"
    );
    assert_eq!(
        create(&s, alice(), "a.safetensors", "loras", 11 << 20)
            .await
            .status,
        413
    );
    assert_eq!(
        create(&s, alice(), "p.png", "loras", 2 << 20).await.status,
        413,
        "companions have their own limit"
    );
    let no_version = s
        .req(
            "POST",
            "/files/",
            &[
                alice(),
                ("Upload-Length", "1".into()),
                meta("a.safetensors", "loras"),
            ],
            b"",
        )
        .await;
    assert_eq!(no_version.status, 412);
    assert!(part_files(&folder).is_empty());
    // Per-user limit, and the same name twice.
    let first = id_of(&create(&s, alice(), "one.safetensors", "loras", 100).await);
    assert_eq!(
        create(&s, basic("bob", "pw-bob"), "one.safetensors", "loras", 100)
            .await
            .status,
        409
    );
    id_of(&create(&s, alice(), "two.safetensors", "loras", 100).await);
    assert_eq!(
        create(&s, alice(), "three.safetensors", "loras", 100)
            .await
            .status,
        429
    );
    // A first chunk that is not the declared format: 415, the part file goes, then 404.
    let r = patch(&s, alice(), &first, 0, b"<html>not a model at all</html>", &[]).await;
    assert_eq!(r.status, 415, "{r:?}");
    assert!(!folder.join(format!(".linkfarm-web.{first}.part")).exists());
    assert_eq!(
        s.req("HEAD", &format!("/files/{first}"), &[alice(), tus()], b"")
            .await
            .status,
        404
    );
    assert_eq!(patch(&s, alice(), &first, 31, b"more", &[]).await.status, 404);
    // A chunk over max_chunk.
    let big = id_of(&create(&s, alice(), "big.safetensors", "loras", 2 << 20).await);
    assert_eq!(
        patch(&s, alice(), &big, 0, &vec![0u8; (1 << 20) + 1], &[])
            .await
            .status,
        413
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_cannot_pass_the_per_user_limit_together() {
    let env = Env::new();
    let s = Arc::new(env.start().await);
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                create(&s, alice(), &format!("m{i}.safetensors"), "loras", 100)
                    .await
                    .status
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    codes.sort();
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 3, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 9, "{codes:?}");
    let same: Vec<_> = (0..6)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                create(&s, basic("bob", "pw-bob"), "same.safetensors", "loras", 100)
                    .await
                    .status
            })
        })
        .collect();
    let mut created = 0;
    for t in same {
        created += usize::from(t.await.unwrap() == 201);
    }
    assert_eq!(created, 1, "one name, one upload");
    Arc::try_unwrap(s).ok().unwrap().stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let env = Env::new();
    let s = env.start().await;
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"PATCH /files/x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(
        linkfarm_web::server::HEADER_TIMEOUT + Duration::from_secs(10),
        c.read_to_end(&mut out),
    )
    .await;
    assert!(closed.is_ok(), "still open after the header timeout");
    assert!(started.elapsed() >= linkfarm_web::server::HEADER_TIMEOUT - Duration::from_secs(1));
    s.stop().await;
}

#[tokio::test]
async fn below_the_reserve_creation_gets_507() {
    let mut env = Env::new();
    env.web.reserve = u64::MAX / 4;
    let s = env.start().await;
    assert_eq!(
        create(&s, alice(), "a.safetensors", "loras", 100).await.status,
        507
    );
    assert!(part_files(&env.root.join("inbox/loras")).is_empty());
    s.stop().await;
}

#[tokio::test]
async fn after_a_restart_the_upload_resumes_at_the_recorded_offset() {
    let env = Env::new();
    let data = safetensors(50_000);
    let s = env.start().await;
    let id = id_of(&create(&s, alice(), "r.safetensors", "loras", data.len()).await);
    assert_eq!(patch(&s, alice(), &id, 0, &data[..20_000], &[]).await.status, 204);
    s.stop().await;
    // Bytes written but never acknowledged (a crash between write and record) are cut off, even
    // when they reach past the end of the upload.
    let part = env.root.join(format!("inbox/loras/.linkfarm-web.{id}.part"));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&part)
        .unwrap()
        .write_all_sync(&[0xAA; 100_000]);
    let s = env.start().await;
    let head = s
        .req("HEAD", &format!("/files/{id}"), &[alice(), tus()], b"")
        .await;
    assert_eq!(head.header("upload-offset"), Some("20000"));
    assert_eq!(
        patch(&s, alice(), &id, 20_000, &data[20_000..], &[]).await.status,
        204
    );
    assert_eq!(
        std::fs::read(env.root.join("inbox/loras/r.safetensors")).unwrap(),
        data
    );
    s.stop().await;
}

trait WriteSync {
    fn write_all_sync(&mut self, b: &[u8]);
}
impl WriteSync for std::fs::File {
    fn write_all_sync(&mut self, b: &[u8]) {
        std::io::Write::write_all(self, b).unwrap();
    }
}

#[tokio::test]
async fn an_expired_upload_loses_its_part_file_and_answers_404() {
    let mut env = Env::new();
    env.web.expire_after = Duration::from_secs(1);
    let s = env.start().await;
    let id = id_of(&create(&s, alice(), "e.safetensors", "loras", 100).await);
    let part = env.root.join(format!("inbox/loras/.linkfarm-web.{id}.part"));
    assert!(part.exists());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while part.exists() {
        assert!(std::time::Instant::now() < deadline, "not expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
        linkfarm_web::tus::expire_now(&s.app);
    }
    assert_eq!(
        s.req("HEAD", &format!("/files/{id}"), &[alice(), tus()], b"")
            .await
            .status,
        404
    );
    let st = s.req("GET", &format!("/api/uploads/{id}"), &[alice()], b"").await;
    assert!(st.body.contains("\"state\":\"expired\""), "{st:?}");
    s.stop().await;
}

#[tokio::test]
async fn auth_wrong_password_401_other_users_upload_404_termination() {
    let env = Env::new();
    let s = env.start().await;
    let r = create(&s, basic("alice", "wrong"), "a.safetensors", "loras", 100).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(
        s.req("POST", "/files/", &[tus(), ("Upload-Length", "1".into())], b"")
            .await
            .status,
        401
    );
    let id = id_of(&create(&s, alice(), "a.safetensors", "loras", 100).await);
    let bob = basic("bob", "pw-bob");
    assert_eq!(
        s.req("HEAD", &format!("/files/{id}"), &[bob.clone(), tus()], b"")
            .await
            .status,
        404
    );
    assert_eq!(
        s.req(
            "GET",
            &format!("/api/uploads/{id}"),
            std::slice::from_ref(&bob),
            b""
        )
        .await
        .status,
        404
    );
    assert_eq!(patch(&s, bob.clone(), &id, 0, b"x", &[]).await.status, 404);
    assert_eq!(
        s.req("DELETE", &format!("/files/{id}"), &[bob, tus()], b"")
            .await
            .status,
        404
    );
    assert_eq!(
        s.req("DELETE", &format!("/files/{id}"), &[alice(), tus()], b"")
            .await
            .status,
        204
    );
    assert!(part_files(&env.root.join("inbox/loras")).is_empty());
    s.stop().await;
}

#[tokio::test]
async fn the_page_session_needs_its_csrf_token() {
    let env = Env::new();
    let s = env.start().await;
    let form = [("Content-Type", "application/x-www-form-urlencoded".to_string())];
    let bad = s.req("POST", "/login", &form, b"user=alice&password=nope").await;
    assert_eq!(bad.status, 401);
    let ok = s
        .req("POST", "/login", &form, b"user=alice&password=pw-alice")
        .await;
    assert_eq!(ok.status, 303, "{ok:?}");
    let cookie = ok.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = ("Cookie", cookie.split(';').next().unwrap().to_owned());
    let sess = s
        .req("GET", "/api/session", std::slice::from_ref(&cookie), b"")
        .await;
    assert_eq!(sess.status, 200);
    let v: serde_json::Value = serde_json::from_str(&sess.body).unwrap();
    assert_eq!(v["user"], "alice");
    assert_eq!(
        v["inboxes"][0]["folders"],
        serde_json::json!(["checkpoints", "loras"])
    );
    let csrf = v["csrf"].as_str().unwrap().to_owned();
    let no_csrf = create(&s, cookie.clone(), "a.safetensors", "loras", 100).await;
    assert_eq!(no_csrf.status, 403);
    let with = s
        .req(
            "POST",
            "/files/",
            &[
                cookie.clone(),
                ("X-CSRF-Token", csrf.clone()),
                tus(),
                ("Upload-Length", "100".into()),
                meta("a.safetensors", "loras"),
            ],
            b"",
        )
        .await;
    id_of(&with);
    assert!(s
        .req("GET", "/", std::slice::from_ref(&cookie), b"")
        .await
        .body
        .contains("app.js"));
    assert!(s
        .req("GET", "/", &[], b"")
        .await
        .body
        .contains("name=\"password\""));
    // A restart does not sign the page out (a long upload resumes in the same session).
    s.stop().await;
    let s = env.start().await;
    assert_eq!(
        s.req("GET", "/api/session", std::slice::from_ref(&cookie), b"")
            .await
            .status,
        200
    );
    assert_eq!(
        s.req("POST", "/logout", std::slice::from_ref(&cookie), b"")
            .await
            .status,
        403
    );
    assert_eq!(
        s.req("POST", "/logout", &[cookie.clone(), ("X-CSRF-Token", csrf)], b"")
            .await
            .status,
        204
    );
    assert_eq!(s.req("GET", "/api/session", &[cookie], b"").await.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn the_status_says_the_daemons_decision_from_the_upload_log() {
    let env = Env::new();
    let s = env.start().await;
    let good = safetensors(100);
    let id = id_of(&create(&s, alice(), "g.safetensors", "loras", good.len()).await);
    let st = s.req("GET", &format!("/api/uploads/{id}"), &[alice()], b"").await;
    assert!(st.body.contains("\"state\":\"uploading\""), "{st:?}");
    assert_eq!(patch(&s, alice(), &id, 0, &good, &[]).await.status, 204);
    let st = s.req("GET", &format!("/api/uploads/{id}"), &[alice()], b"").await;
    assert!(st.body.contains("\"state\":\"pending\""), "{st:?}");
    let refused = env.root.join("inbox/_refused/loras/g.safetensors");
    std::fs::create_dir_all(refused.parent().unwrap()).unwrap();
    std::fs::write(
        format!("{}.why.txt", refused.display()),
        "The file is cut short.\n",
    )
    .unwrap();
    let line = |action: &str, reason: &str, target: &Path| {
        format!(
            "{{\"time\":\"2099-01-01T00:00:00Z\",\"inbox\":\"models-inbox\",\"folder\":\"loras\",\"file\":\"g.safetensors\",\"action\":\"{action}\",\"reason\":\"{reason}\",\"format\":\"safetensors\",\"kind\":null,\"size\":1,\"sha256\":\"ab12\",\"uid\":1,\"target\":\"{}\"}}\n",
            target.display()
        )
    };
    std::fs::write(&env.log, line("refuse", "corrupt", &refused)).unwrap();
    let st: serde_json::Value = serde_json::from_str(
        &s.req("GET", &format!("/api/uploads/{id}"), &[alice()], b"")
            .await
            .body,
    )
    .unwrap();
    assert_eq!(
        (st["state"].as_str(), st["reason"].as_str(), st["why"].as_str()),
        (Some("refused"), Some("corrupt"), Some("The file is cut short.\n"))
    );
    let mut log = std::fs::read_to_string(&env.log).unwrap();
    log.push_str("not json\n");
    log.push_str(&line(
        "accept",
        "valid",
        &env.root.join("models/loras/g.safetensors"),
    ));
    std::fs::write(&env.log, log).unwrap();
    let st: serde_json::Value = serde_json::from_str(
        &s.req("GET", &format!("/api/uploads/{id}"), &[alice()], b"")
            .await
            .body,
    )
    .unwrap();
    assert_eq!(
        (st["state"].as_str(), st["sha256"].as_str(), st["offset"].as_u64()),
        (Some("accepted"), Some("ab12"), Some(good.len() as u64))
    );
    s.stop().await;
}
