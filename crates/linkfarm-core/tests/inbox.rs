//! Runs the inbox decision cases in `inbox_cases.txt`: each case is an inbox, one file as the walk
//! saw it, what the worker and scanner said, and the exact decisions expected. See the head of
//! that file for the notation.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use linkfarm_core::inbox::decide::*;
use linkfarm_core::inbox::{CheckKind, Folders, Inbox, InboxFolder, ModelFormat, OnExists};
use linkfarm_core::NameFilter;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Decodes the name notation: `\n`, `\xHH`, and `c{N}` (c repeated N times).
fn name(text: &str) -> OsString {
    let b = text.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut i = 0;
    let mut last_start = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'n') {
            last_start = out.len();
            out.push(b'\n');
            i += 2;
        } else if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            last_start = out.len();
            let mut j = i;
            // A run of \xHH bytes is one character (for repetition).
            while b.get(j) == Some(&b'\\') && b.get(j + 1) == Some(&b'x') {
                out.push(u8::from_str_radix(&text[j + 2..j + 4], 16).unwrap());
                j += 4;
            }
            i = j;
        } else if b[i] == b'{' {
            let end = text[i..].find('}').unwrap() + i;
            let n: usize = text[i + 1..end].parse().unwrap();
            let unit = out[last_start..].to_vec();
            for _ in 1..n {
                out.extend_from_slice(&unit);
            }
            i = end + 1;
        } else {
            last_start = out.len();
            out.push(b[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

fn inbox(spec: &str) -> Inbox {
    let mut i = Inbox {
        name: "in".into(),
        dir: "/I".into(),
        target_dir: "/T".into(),
        folders: Folders::List(vec![InboxFolder {
            folder: "loras".into(),
            target: "loras".into(),
        }]),
        exclude: NameFilter::default(),
        exclude_patterns: vec![],
        accept: vec![ModelFormat::Safetensors, ModelFormat::Gguf],
        companions: vec![],
        companion_max_size: 100,
        max_size: 1000,
        settle: Duration::from_secs(10),
        on_exists: OnExists::Refuse,
        check_kind: CheckKind::Warn,
        scanner: vec![],
        owner: None,
        file_mode: 0o644,
        dir_mode: 0o755,
        refused_dir: "/I/_refused".into(),
    };
    for tok in spec.split_whitespace() {
        let (k, v) = tok.split_once('=').unwrap();
        match k {
            "accept" => i.accept = v.split(',').map(|w| ModelFormat::from_word(w).unwrap()).collect(),
            "companions" => i.companions = v.split(',').map(String::from).collect(),
            "max" => i.max_size = v.parse().unwrap(),
            "cmax" => i.companion_max_size = v.parse().unwrap(),
            "settle" => i.settle = Duration::from_secs(v.parse().unwrap()),
            "on_exists" => {
                i.on_exists = match v {
                    "refuse" => OnExists::Refuse,
                    "rename" => OnExists::Rename,
                    _ => panic!("on_exists {v}"),
                }
            }
            "check_kind" => {
                i.check_kind = match v {
                    "warn" => CheckKind::Warn,
                    "refuse" => CheckKind::Refuse,
                    "off" => CheckKind::Off,
                    _ => panic!("check_kind {v}"),
                }
            }
            _ => panic!("unknown inbox key {k}"),
        }
    }
    i
}

struct File {
    name: OsString,
    rel: PathBuf,
    c: Candidate,
}

fn file(spec: &str) -> File {
    let mut toks = spec.split_whitespace();
    let n = name(toks.next().unwrap());
    let mut c = Candidate {
        file_type: FileType::Regular,
        nlink: 1,
        mode: 0o644,
        size: 100,
        mtime: at(900),
        ctime: at(900),
        writer: false,
    };
    let mut rel = PathBuf::new();
    for tok in toks {
        let (k, v) = tok.split_once('=').unwrap_or((tok, ""));
        match k {
            "type" => {
                c.file_type = [
                    FileType::Regular,
                    FileType::Dir,
                    FileType::Symlink,
                    FileType::Fifo,
                    FileType::Socket,
                    FileType::CharDevice,
                    FileType::BlockDevice,
                ]
                .into_iter()
                .find(|t| t.as_str() == v)
                .unwrap_or_else(|| panic!("type {v}"))
            }
            "nlink" => c.nlink = v.parse().unwrap(),
            "mode" => c.mode = u32::from_str_radix(v, 8).unwrap(),
            "size" => c.size = v.parse().unwrap(),
            "mtime" => c.mtime = at(v.parse().unwrap()),
            "ctime" => c.ctime = at(v.parse().unwrap()),
            "writer" => c.writer = true,
            "dir" => rel = PathBuf::from(v),
            _ => panic!("unknown file key {k}"),
        }
    }
    rel.push(&n);
    File { name: n, rel, c }
}

fn look_text(l: &Look) -> String {
    match l {
        Look::Wait { until } => format!("wait until {}", secs(*until)),
        Look::Leave(t) => format!("leave {}", t.as_str()),
        Look::Refuse(r) => format!("refuse {}", r.reason.as_str()),
        Look::Take(e) => format!("take {}", e.name()),
    }
}

fn worker(spec: &str) -> WorkerVerdict {
    let mut t = spec.split_whitespace();
    match t.next().unwrap() {
        "pass" => {
            let format = t.next().unwrap().to_owned();
            let (mut kind, mut kind_mismatch, mut sha256) = (None, false, String::new());
            for tok in t {
                match tok.split_once('=') {
                    Some(("kind", k)) => kind = Some(k.to_owned()),
                    Some(("sha", h)) => sha256 = h.to_owned(),
                    None if tok == "mismatch" => kind_mismatch = true,
                    _ => panic!("worker token {tok}"),
                }
            }
            WorkerVerdict::Passed {
                format,
                kind,
                kind_mismatch,
                sha256,
            }
        }
        "refuse" => {
            let reason = match t.next().unwrap() {
                "corrupt" => Reason::Corrupt,
                "unsafe" => Reason::Unsafe,
                "format" => Reason::Format,
                r => panic!("worker reason {r}"),
            };
            WorkerVerdict::Refused {
                format: t.next().unwrap().to_owned(),
                refusal: Refusal {
                    reason,
                    message: "the worker's words".into(),
                },
            }
        }
        w => panic!("worker {w}"),
    }
}

/// Shows a name in the notation: runs of 8 or more of one character as c{N}, other bytes escaped.
fn show(n: &OsStr) -> String {
    let s = String::from_utf8_lossy(n.as_bytes());
    let chars: Vec<char> = if std::str::from_utf8(n.as_bytes()).is_ok() {
        s.chars().collect()
    } else {
        return n.as_bytes().iter().map(|b| format!("\\x{b:02x}")).collect();
    };
    let enc = |c: char| -> String {
        match c {
            '\n' => "\\n".into(),
            c if c.is_ascii() => c.to_string(),
            c => c.to_string().bytes().map(|b| format!("\\x{b:02x}")).collect(),
        }
    };
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..].iter().take_while(|c| **c == chars[i]).count();
        if run >= 8 {
            out += &format!("{}{{{run}}}", enc(chars[i]));
        } else {
            for _ in 0..run {
                out += &enc(chars[i]);
            }
        }
        i += run;
    }
    out
}

fn decision_text(d: &Decision) -> String {
    match d {
        Decision::Accept { name, kind_warning } => {
            format!(
                "accept {}{}",
                show(name),
                if kind_warning.is_some() { " warn" } else { "" }
            )
        }
        Decision::Refuse { name, refusal } => format!("refuse {} {}", refusal.reason.as_str(), show(name)),
    }
}

fn names(list: &str) -> BTreeSet<OsString> {
    list.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(name)
        .collect()
}

fn run_case(title: &str, lines: &[(usize, &str)]) -> Result<(), String> {
    let get = |key: &str| {
        lines
            .iter()
            .find_map(|(n, l)| l.strip_prefix(key).map(|v| (*n, v.trim())))
    };
    let ib = inbox(get("inbox:").map(|x| x.1).unwrap_or(""));
    let folder = InboxFolder {
        folder: "loras".into(),
        target: "loras".into(),
    };
    let f = file(get("file:").ok_or("no file:")?.1);
    let now: u64 = get("now:").map(|x| x.1.parse().unwrap()).unwrap_or(1000);
    let looked = look(&ib, &f.name, &f.c, at(now));
    if let Some((n, want)) = get("look:") {
        let got = look_text(&looked);
        if got != want {
            return Err(format!("line {n}: look: wanted `{want}`, got `{got}`"));
        }
    }
    let target = names(get("target:").map(|x| x.1).unwrap_or(""));
    let refused = names(get("refused:").map(|x| x.1).unwrap_or(""));
    let w = get("worker:").map(|x| worker(x.1));
    let scan = match get("scan:").map(|x| x.1) {
        None => ScanVerdict::NotRun,
        Some("clean") => ScanVerdict::Clean,
        Some(s) => ScanVerdict::Refused(s.strip_prefix("refused ").unwrap().to_owned()),
    };
    let decision = match (&w, &looked) {
        (Some(w), _) => Some(decide(
            &ib,
            &folder,
            &f.name,
            w,
            &scan,
            &|n| target.contains(n),
            &|n| refused.contains(n),
        )),
        (None, Look::Refuse(r)) => Some(Decision::Refuse {
            name: refused_name(&f.name, &|n| refused.contains(n)),
            refusal: r.clone(),
        }),
        _ => None,
    };
    if let Some((n, want)) = get("decide:") {
        let d = decision.as_ref().ok_or(format!("line {n}: no decision"))?;
        let want = show(&name(want));
        let got = decision_text(d);
        if got != want {
            return Err(format!("line {n}: decide: wanted `{want}`, got `{got}`"));
        }
    }
    if let Some((n, want)) = get("record:") {
        let d = decision.as_ref().ok_or(format!("line {n}: no decision"))?;
        let facts = Facts {
            folder: &folder,
            rel: &f.rel,
            size: f.c.size,
            uid: 1000,
            format: expected(&ib, &f.name).map(|e| e.name().to_owned()),
        };
        let r = record(&ib, &facts, d, w.as_ref());
        let fields = [
            ("inbox", r.inbox.clone()),
            ("folder", r.folder.clone()),
            ("file", r.file.clone()),
            ("action", r.action.to_owned()),
            ("reason", r.reason.as_str().to_owned()),
            ("format", r.format.clone().unwrap_or("null".into())),
            ("kind", r.kind.clone().unwrap_or("null".into())),
            ("size", r.size.to_string()),
            ("sha256", r.sha256.clone().unwrap_or("null".into())),
            ("uid", r.uid.to_string()),
            ("target", r.target.to_string_lossy().into_owned()),
        ];
        // Values may hold spaces ("a (2).safetensors"): a pair runs up to the next ` key=`.
        let mut rest = want;
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=').ok_or(format!("line {n}: bad record pair"))?;
            let next = fields
                .iter()
                .filter_map(|(k, _)| after.find(&format!(" {k}=")))
                .min()
                .unwrap_or(after.len());
            let value = &after[..next];
            rest = after[next..].trim_start();
            let got = &fields
                .iter()
                .find(|(k, _)| *k == key)
                .ok_or(format!("line {n}: unknown record key {key}"))?
                .1;
            if got != value {
                return Err(format!("line {n}: record {key}: wanted `{value}`, got `{got}`"));
            }
        }
    }
    if let Some((n, want)) = get("why:") {
        let refusal = match &decision {
            Some(Decision::Refuse { refusal, .. }) => refusal,
            _ => return Err(format!("line {n}: why: but no refusal")),
        };
        let text = why_text(&folder, &f.rel, refusal);
        if !text.contains(want) {
            return Err(format!("line {n}: .why.txt lacks `{want}`:\n{text}"));
        }
    }
    let _ = title;
    Ok(())
}

#[test]
fn inbox_cases() {
    let text = include_str!("inbox_cases.txt");
    let mut cases: Vec<(String, Vec<(usize, &str)>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(t) = line.strip_prefix("## ") {
            cases.push((format!("{t} (line {})", i + 1), vec![]));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            cases
                .last_mut()
                .expect("a case starts with ##")
                .1
                .push((i + 1, line));
        }
    }
    assert!(cases.len() > 40, "the table was read");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(title, lines)| run_case(title, lines).err().map(|e| format!("{title}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn folders_star_skips_excluded_reserved_and_the_refused_folder() {
    let mut ib = inbox("");
    ib.folders = Folders::All;
    ib.exclude = NameFilter::new([".*"]).unwrap();
    let subdirs: Vec<OsString> = ["loras", ".cache", "_refused", "vae", ".linkfarm-private"]
        .iter()
        .map(OsString::from)
        .chain([OsString::from_vec(b"caf\xe9".to_vec())])
        .collect();
    let got: Vec<String> = folders(&ib, &subdirs).into_iter().map(|f| f.folder).collect();
    assert_eq!(got, ["loras", "vae"]);
}

#[test]
fn unchanged_needs_the_same_stamp_and_no_writer() {
    let s = Stamp {
        size: 10,
        mtime: at(5),
        ctime: at(6),
    };
    assert!(unchanged(&s, &s, false));
    assert!(!unchanged(&s, &s, true), "a writer appeared");
    assert!(!unchanged(&s, &Stamp { size: 9, ..s }, false), "truncated");
    assert!(!unchanged(&s, &Stamp { size: 11, ..s }, false), "extended");
    assert!(
        !unchanged(&s, &Stamp { mtime: at(7), ..s }, false),
        "rewritten in place"
    );
    assert!(!unchanged(&s, &Stamp { ctime: at(7), ..s }, false), "touched");
}
