//! The crate's integration tests without Python: the pickle allowlist table
//! (`pickle_cases.txt`), torch zips and GGUF files built here byte by byte, and the dispatch of
//! [`linkfarm_formats::check`]. `corpus.rs` checks the files real writers make.

use std::io::Cursor;

use linkfarm_formats::{check, pickle, FileType, Limits, Reason, Refusal};

mod common;
use common::{gguf_file, stored_zip, torch_pickle};

/// Assembles one line of the table's notation.
fn assemble(line: &str, out: &mut Vec<u8>) {
    let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
    let strings: Vec<String> = {
        let mut v = Vec::new();
        let mut it = rest.split('\'');
        it.next();
        while let Some(s) = it.next() {
            v.push(s.replace("\\n", "\n"));
            it.next();
        }
        v
    };
    let num = || -> u64 {
        rest.trim()
            .parse()
            .unwrap_or_else(|_| panic!("number in {line:?}"))
    };
    let s0 = || strings[0].clone();
    match name {
        "PROTO" => out.extend([0x80, num() as u8]),
        "FRAME" => {
            out.push(0x95);
            out.extend(num().to_le_bytes());
        }
        "GLOBAL" | "INST" => {
            out.push(if name == "GLOBAL" { b'c' } else { b'i' });
            out.extend(format!("{}\n{}\n", strings[0], strings[1]).bytes());
        }
        "SHORT_BINUNICODE" => {
            out.extend([0x8c, s0().len() as u8]);
            out.extend(s0().bytes());
        }
        "BINSTRING" => {
            out.push(b'T');
            out.extend((s0().len() as u32).to_le_bytes());
            out.extend(s0().bytes());
        }
        "SHORT_BINBYTES" => {
            out.extend([b'C', s0().len() as u8]);
            out.extend(s0().bytes());
        }
        "UNICODE" => out.extend(format!("V{}\n", s0()).bytes()),
        // Kept as written: the table spells escapes as the pickle would carry them.
        "STRING" => out.extend(format!("S'{}'\n", rest.trim().trim_matches('\'')).bytes()),
        "BININT1" => out.extend([b'K', num() as u8]),
        "BINPUT" => out.extend([b'q', num() as u8]),
        "BINGET" => out.extend([b'h', num() as u8]),
        "PUT" => out.extend(format!("p{}\n", num()).bytes()),
        "GET" => out.extend(format!("g{}\n", num()).bytes()),
        "EXT1" => out.extend([0x82, num() as u8]),
        "RAW" => {
            for h in rest.split_whitespace() {
                for i in (0..h.len()).step_by(2) {
                    out.push(u8::from_str_radix(&h[i..i + 2], 16).unwrap());
                }
            }
        }
        _ => out.push(match name {
            "MARK" => b'(',
            "STOP" => b'.',
            "POP" => b'0',
            "NONE" => b'N',
            "NEWFALSE" => 0x89,
            "EMPTY_TUPLE" => b')',
            "EMPTY_DICT" => b'}',
            "REDUCE" => b'R',
            "BUILD" => b'b',
            "SETITEM" => b's',
            "DICT" => b'd',
            "TUPLE" => b't',
            "TUPLE1" => 0x85,
            "TUPLE2" => 0x86,
            "OBJ" => b'o',
            "STACK_GLOBAL" => 0x93,
            "BINPERSID" => b'Q',
            "MEMOIZE" => 0x94,
            "NEXT_BUFFER" => 0x97,
            "READONLY_BUFFER" => 0x98,
            other => panic!("the table uses an opcode the runner does not know: {other}"),
        }),
    }
}

#[test]
fn pickle_cases_table() {
    let text = include_str!("pickle_cases.txt");
    let mut failures = Vec::new();
    let mut cases = 0;
    for block in text.split("\n## ").skip(1) {
        let title = block.lines().next().unwrap();
        let line_no = text[..text.find(title).unwrap()].lines().count();
        let mut bytes = Vec::new();
        let mut expect = None;
        let mut in_ops = false;
        for l in block.lines().skip(1) {
            let l = l.trim();
            if l == "ops:" {
                in_ops = true;
            } else if let Some(e) = l.strip_prefix("expect:") {
                expect = Some(e.trim().to_owned());
                in_ops = false;
            } else if in_ops && !l.is_empty() {
                assemble(l, &mut bytes);
            }
        }
        let expect = expect.unwrap_or_else(|| panic!("line {line_no}: no expect"));
        cases += 1;
        let got = pickle::scan(&mut &bytes[..], 1);
        let (want, words) = expect.split_once(' ').unwrap_or((&expect, ""));
        let ok = match (want, &got) {
            ("ok", Ok(r)) => words.is_empty() || r.globals.join(",") == words,
            ("unsafe", Err(r)) => r.reason == Reason::Unsafe && r.message.contains(words),
            ("corrupt", Err(r)) => r.reason == Reason::Corrupt && r.message.contains(words),
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "line {line_no} \"{title}\": expected {expect}, got {got:?}"
            ));
        }
    }
    assert!(cases >= 20, "only {cases} cases read");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn check_bytes(bytes: &[u8], ft: FileType) -> Result<linkfarm_formats::Verdict, Refusal> {
    check(&mut Cursor::new(bytes), ft, &Limits::default())
}

#[test]
fn a_torch_zip_as_torch_save_writes_it_passes() {
    let zip = stored_zip(&[
        ("archive/data.pkl", &torch_pickle("collections", "OrderedDict")),
        ("archive/byteorder", b"little"),
        ("archive/data/0", &[0u8; 16]),
        ("archive/version", b"3\n"),
        ("archive/.data/serialization_id", b"1234"),
    ]);
    let v = check_bytes(&zip, FileType::Pickle).unwrap();
    let linkfarm_formats::Details::Pickle(r) = v.details else {
        panic!()
    };
    assert_eq!(
        r.layout,
        pickle::Layout::TorchZip {
            archive: "archive".into(),
            entries: 5
        }
    );
}

#[test]
fn a_torch_zip_with_an_unsafe_data_pkl_is_unsafe() {
    let zip = stored_zip(&[
        ("archive/data.pkl", &torch_pickle("posix", "system")),
        ("archive/version", b"3\n"),
    ]);
    let r = check_bytes(&zip, FileType::Pickle).unwrap_err();
    assert_eq!(r.reason, Reason::Unsafe, "{r}");
    assert!(r.message.contains("posix.system"), "{r}");
}

#[test]
fn zip_layout_defects_are_corrupt() {
    let good = torch_pickle("collections", "OrderedDict");
    // (the words the refusal must contain, the zip)
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "two data.pkl",
            stored_zip(&[("a/data.pkl", &good), ("a/data.pkl", &good)]),
        ),
        ("has no a/data.pkl", stored_zip(&[("a/version", b"3")])),
        (
            "a/evil.py that torch.save does not write",
            stored_zip(&[("a/data.pkl", &good), ("a/evil.py", b"x")]),
        ),
        (
            "outside the folder",
            stored_zip(&[("a/data.pkl", &good), ("b/version", b"3")]),
        ),
        ("no end-of-directory record", {
            let z = stored_zip(&[("a/data.pkl", &good)]);
            z[..z.len() - 10].to_vec()
        }),
        ("compressed (method 8)", {
            let mut z = stored_zip(&[("a/data.pkl", &good)]);
            // Method 8 (deflate) in the central directory entry.
            let cd = z.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
            z[cd + 10] = 8;
            z
        }),
        ("names another file", {
            let mut z = stored_zip(&[("a/data.pkl", &good)]);
            z[30] = b'b';
            z
        }),
    ];
    for (what, zip) in cases {
        let r = check_bytes(&zip, FileType::Pickle).unwrap_err();
        assert_eq!(r.reason, Reason::Corrupt, "{what}: {r}");
        assert!(r.message.contains(what), "{what}: {r}");
    }
}

#[test]
fn a_pickle_in_front_of_a_zip_is_scanned_as_the_pickle_torch_would_run() {
    // A polyglot: torch.load sees a legacy pickle at offset 0; a scanner that looks for the
    // zip's end record would scan only the harmless data.pkl.
    let mut f = torch_pickle("posix", "system");
    f.extend(stored_zip(&[(
        "a/data.pkl",
        &torch_pickle("collections", "OrderedDict"),
    )]));
    let r = check_bytes(&f, FileType::Pickle).unwrap_err();
    assert_eq!(r.reason, Reason::Unsafe, "{r}");
}

#[test]
fn gguf_files_are_checked_against_their_length() {
    let good = gguf_file(3, 32, 1024);
    let v = check_bytes(&good, FileType::Gguf).unwrap();
    assert_eq!(v.format, FileType::Gguf);
    // Cut inside the tensor data.
    let r = check_bytes(&good[..good.len() - 1], FileType::Gguf).unwrap_err();
    assert_eq!(r.reason, Reason::Corrupt);
    assert!(r.message.contains("truncated"), "{r}");
    // Version 4 does not exist; a bad magic is not GGUF.
    let mut v4 = good.clone();
    v4[4] = 4;
    assert_eq!(
        check_bytes(&v4, FileType::Gguf).unwrap_err().reason,
        Reason::Corrupt
    );
    let mut magic = good.clone();
    magic[0] = b'X';
    assert_eq!(
        check_bytes(&magic, FileType::Gguf).unwrap_err().reason,
        Reason::Corrupt
    );
    // Every prefix is refused, none panics.
    for n in 0..good.len() {
        assert!(check_bytes(&good[..n], FileType::Gguf).is_err(), "prefix {n}");
    }
    // Version 1's 32-bit lengths, and another alignment; an alignment that is not a power of
    // two is refused.
    for (version, align) in [(1, 32), (2, 64), (3, 8)] {
        let v = check_bytes(&gguf_file(version, align, 100), FileType::Gguf);
        let Ok(linkfarm_formats::Verdict {
            details: linkfarm_formats::Details::Gguf(h),
            ..
        }) = v
        else {
            panic!("v{version}: {v:?}");
        };
        assert_eq!((h.version, h.alignment), (version, align as u64));
        assert_eq!(h.architecture.as_deref(), Some("llama"));
    }
    let r = check_bytes(&gguf_file(3, 24, 100), FileType::Gguf).unwrap_err();
    assert!(r.message.contains("power of two"), "{r}");
}

#[test]
fn an_empty_model_is_corrupt_and_dispatch_follows_the_extension() {
    for name in ["a.safetensors", "a.gguf", "a.ckpt", "a.PNG"] {
        let ft = FileType::from_name(name).unwrap();
        assert_eq!(
            check_bytes(b"", ft).unwrap_err().reason,
            Reason::Corrupt,
            "{name}"
        );
    }
    assert_eq!(FileType::from_name(".DS_Store"), None);
    assert_eq!(FileType::from_name("preview.gif"), None);
    assert_eq!(FileType::from_name("model.BIN"), Some(FileType::Pickle));
}
