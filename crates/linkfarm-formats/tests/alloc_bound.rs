//! No claimed length makes the parsers allocate: every file below claims 2^63 (or the type's
//! maximum) somewhere, and each check runs under a global allocator that refuses any allocation
//! taking the process more than [`BOUND`] above where it was. An allocation past the bound aborts
//! the test binary, so a regression cannot pass quietly. One test in its own binary, because the
//! allocator is shared by every thread of the process.

use std::alloc::System;
use std::io::Cursor;

use cap::Cap;
use linkfarm_formats::{check, companion::CompanionType, FileType, Limits, Reason};

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// The most a check may allocate (SPEC §10 allows 8 MiB of RSS above idle while validating).
const BOUND: usize = 8 * 1024 * 1024;

mod common;
use common::stored_zip;

fn cases() -> Vec<(&'static str, FileType, Vec<u8>)> {
    let big = 1u64 << 63;
    let mut out = Vec::new();
    let mut st = big.to_le_bytes().to_vec();
    st.extend(b"{}");
    out.push(("safetensors header 2^63", FileType::Safetensors, st));
    let mut st = 99_999_999u64.to_le_bytes().to_vec();
    st.extend(b"{}");
    out.push((
        "safetensors header 99 MB in a short file",
        FileType::Safetensors,
        st,
    ));

    let gguf = |counts: [u64; 2], tail: &[u8]| {
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend(counts[0].to_le_bytes());
        f.extend(counts[1].to_le_bytes());
        f.extend(tail);
        f.resize(f.len() + 64, 0);
        f
    };
    out.push(("gguf 2^63 tensors", FileType::Gguf, gguf([big, 0], &[])));
    out.push(("gguf 2^63 kv", FileType::Gguf, gguf([0, big], &[])));
    out.push((
        "gguf key of 2^63 bytes",
        FileType::Gguf,
        gguf([0, 1], &big.to_le_bytes()),
    ));
    let mut arr = 1u64.to_le_bytes().to_vec();
    arr.push(b'k');
    arr.extend(9u32.to_le_bytes());
    arr.extend(8u32.to_le_bytes());
    arr.extend(big.to_le_bytes());
    out.push(("gguf array of 2^63 strings", FileType::Gguf, gguf([0, 1], &arr)));

    for (what, op, len) in [
        ("pickle BINUNICODE8 2^63", 0x8du8, &big.to_le_bytes()[..]),
        ("pickle BINBYTES8 2^63", 0x8e, &big.to_le_bytes()[..]),
        ("pickle BYTEARRAY8 2^63", 0x96, &big.to_le_bytes()[..]),
        ("pickle FRAME 2^63", 0x95, &big.to_le_bytes()[..]),
        ("pickle LONG4 2^31-1", 0x8b, &i32::MAX.to_le_bytes()[..]),
        ("pickle BINSTRING 2^31-1", b'T', &i32::MAX.to_le_bytes()[..]),
        ("pickle BINUNICODE 2^32-1", b'X', &u32::MAX.to_le_bytes()[..]),
    ] {
        let mut p = vec![0x80, 4, op];
        p.extend(len);
        p.push(b'.');
        out.push((what, FileType::Pickle, p));
    }
    // A pickle whose single argument line never ends.
    let mut p = b"\x80\x02c".to_vec();
    p.resize(200_000, b'a');
    out.push(("pickle line without end", FileType::Pickle, p));

    // Zips whose directory claims what the file does not have.
    let good = stored_zip(&[("a/data.pkl", b"\x80\x02N.")]);
    let eocd = good.len() - 22;
    let mut z = good.clone();
    z[eocd + 8..eocd + 12].copy_from_slice(&[0xfe, 0xff, 0xfe, 0xff]);
    out.push(("zip with 65534 entries claimed", FileType::Pickle, z));
    let mut z = good.clone();
    z[eocd + 12..eocd + 16].copy_from_slice(&[0xfe, 0xff, 0xff, 0xff]);
    out.push(("zip with a 4 GiB directory claimed", FileType::Pickle, z));
    let mut z = good.clone();
    // Central directory entry: csize and usize of data.pkl 0xfffffffe.
    let cd = z.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
    z[cd + 20..cd + 28].copy_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff]);
    out.push(("zip with a 4 GiB data.pkl claimed", FileType::Pickle, z));

    out
}

#[test]
fn claimed_lengths_never_allocate() {
    let cases = cases();
    let limits = Limits {
        companion_max_size: u64::MAX,
    };
    for (what, ft, bytes) in &cases {
        ALLOC.set_limit(ALLOC.allocated() + BOUND).unwrap();
        let r = check(&mut Cursor::new(bytes), *ft, &limits);
        ALLOC.set_limit(usize::MAX).unwrap();
        let r = r.expect_err(what);
        assert_ne!(r.reason, Reason::Io, "{what}: {r}");
    }
    // A companion is read up to its real length, never its claimed one.
    ALLOC.set_limit(ALLOC.allocated() + BOUND).unwrap();
    let r = linkfarm_formats::companion::check(&mut &b"{}"[..], 1 << 62, CompanionType::Json, u64::MAX);
    ALLOC.set_limit(usize::MAX).unwrap();
    assert_eq!(r.unwrap_err().reason, Reason::Corrupt);
}
