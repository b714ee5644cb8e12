//! The zip layout `torch.save` writes, read from its central directory with bounded memory and
//! never decompressed: this crate parses the few zip records itself instead of using the `zip`
//! crate, because the checks are about the *layout* (every entry stored, one `data.pkl`, local
//! headers agreeing with the central directory, no two entries sharing bytes) and a general zip
//! reader hides exactly those details, decompresses on demand, and keeps the whole directory in
//! structures sized by the counts the file claims.
//!
//! Accepted entry names, all under one top folder `<archive>/`: `data.pkl` (exactly one),
//! `data/<digits>`, `version`, `byteorder`, `.format_version`, `.storage_alignment`,
//! `.data/version`, `.data/serialization_id`. Anything else is not what torch.save writes.

use std::io::{Read, Seek, SeekFrom};

use crate::{io_refusal, pickle::MAX_PICKLE, util, Refusal};

/// The largest central directory read (a torch zip has one entry per tensor storage: ~100 bytes
/// each, so this is ~150,000 tensors).
pub const MAX_CENTRAL_DIR: u64 = 16 * 1024 * 1024;

/// What a valid torch zip holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchZip {
    /// The top folder name.
    pub archive: String,
    /// The number of entries.
    pub entries: usize,
    /// Where `data.pkl`'s bytes start.
    pub data_pkl_offset: u64,
    /// `data.pkl`'s length.
    pub data_pkl_size: u64,
}

fn bad(what: impl std::fmt::Display) -> Refusal {
    Refusal::corrupt(format!(
        "this is not a valid torch.save zip: {what}. The file is damaged or was not written by \
         torch.save; upload it again, or re-export it as .safetensors."
    ))
}

fn le16(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]).into()
}
fn le32(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")).into()
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

struct Entry {
    name: String,
    local_offset: u64,
    size: u64,
}

/// Checks the zip of `size` bytes in `input`.
pub fn check<R: Read + Seek>(input: &mut R, size: u64) -> Result<TorchZip, Refusal> {
    let io = |e| io_refusal(e, "the zip");
    // The end record is 22 bytes plus a comment of up to 65535.
    let tail_len = size.min(22 + 65535);
    input.seek(SeekFrom::Start(size - tail_len)).map_err(io)?;
    let tail = util::read_exact_vec(input, tail_len).map_err(io)?;
    let eocd_at = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| {
            tail[i..].starts_with(b"PK\x05\x06") && le16(&tail, i + 20) as usize == tail.len() - i - 22
        })
        .ok_or_else(|| bad("it has no end-of-directory record (the zip is cut short)"))?;
    let eocd_pos = size - tail_len + eocd_at as u64;
    let e = &tail[eocd_at..];
    if le16(e, 4) != 0 || le16(e, 6) != 0 {
        return Err(bad("it spans several disks"));
    }
    let (mut count, mut cd_size, mut cd_offset) = (le16(e, 10), le32(e, 12), le32(e, 16));
    let mut cd_end_limit = eocd_pos;
    if count == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        // ZIP64: a 20-byte locator right before the end record points at the ZIP64 end record.
        if eocd_pos < 20 {
            return Err(bad("its ZIP64 locator is missing"));
        }
        input.seek(SeekFrom::Start(eocd_pos - 20)).map_err(io)?;
        let loc = util::read_exact_vec(input, 20).map_err(io)?;
        if !loc.starts_with(b"PK\x06\x07") {
            return Err(bad("its ZIP64 locator is missing"));
        }
        let z64 = le64(&loc, 8);
        if z64.checked_add(56).is_none_or(|end| end > eocd_pos - 20) {
            return Err(bad("its ZIP64 end record lies outside the file"));
        }
        input.seek(SeekFrom::Start(z64)).map_err(io)?;
        let r = util::read_exact_vec(input, 56).map_err(io)?;
        if !r.starts_with(b"PK\x06\x06") {
            return Err(bad("its ZIP64 end record is missing"));
        }
        count = le64(&r, 32);
        cd_size = le64(&r, 40);
        cd_offset = le64(&r, 48);
        cd_end_limit = z64;
    }
    if cd_offset
        .checked_add(cd_size)
        .is_none_or(|end| end > cd_end_limit)
    {
        return Err(bad(
            "its central directory lies outside the file (the zip is cut short)",
        ));
    }
    if cd_size > MAX_CENTRAL_DIR {
        return Err(bad(format!(
            "its central directory is {cd_size} bytes, more than the {MAX_CENTRAL_DIR} a torch \
             checkpoint needs"
        )));
    }
    if count.saturating_mul(46) > cd_size {
        return Err(bad(format!(
            "it claims {count} entries, more than its central directory can hold"
        )));
    }
    input.seek(SeekFrom::Start(cd_offset)).map_err(io)?;
    let cd = util::read_exact_vec(input, cd_size).map_err(io)?;

    let mut entries = Vec::new();
    let mut at = 0usize;
    for _ in 0..count {
        let h = cd
            .get(at..at + 46)
            .ok_or_else(|| bad("its central directory ends inside an entry"))?;
        if !h.starts_with(b"PK\x01\x02") {
            return Err(bad("its central directory has a damaged entry"));
        }
        let flags = le16(h, 8);
        let method = le16(h, 10);
        let (mut csize, mut usize_, mut offset) = (le32(h, 20), le32(h, 24), le32(h, 42));
        let (nlen, xlen, clen) = (le16(h, 28) as usize, le16(h, 30) as usize, le16(h, 32) as usize);
        let name_bytes = cd
            .get(at + 46..at + 46 + nlen)
            .ok_or_else(|| bad("its central directory ends inside a name"))?;
        let extra = cd
            .get(at + 46 + nlen..at + 46 + nlen + xlen)
            .ok_or_else(|| bad("its central directory ends inside an extra field"))?;
        at += 46 + nlen + xlen + clen;
        if at > cd.len() {
            return Err(bad("its central directory ends inside a comment"));
        }
        let name = String::from_utf8(name_bytes.to_vec()).map_err(|_| bad("an entry name is not UTF-8"))?;
        // ZIP64 extra field: the 64-bit values of the fields that are 0xffffffff, in order.
        let mut x = 0;
        while x + 4 <= extra.len() {
            let (id, len) = (le16(extra, x), le16(extra, x + 2) as usize);
            let body = extra
                .get(x + 4..x + 4 + len)
                .ok_or_else(|| bad(format!("entry {name} has a damaged extra field")))?;
            if id == 1 {
                let mut k = 0;
                for v in [&mut usize_, &mut csize, &mut offset] {
                    if *v == 0xffff_ffff {
                        if k + 8 > body.len() {
                            return Err(bad(format!("entry {name} has a short ZIP64 field")));
                        }
                        *v = le64(body, k);
                        k += 8;
                    }
                }
            }
            x += 4 + len;
        }
        if flags & 1 != 0 {
            return Err(bad(format!("entry {name} is encrypted")));
        }
        if method != 0 {
            return Err(bad(format!(
                "entry {name} is compressed (method {method}); torch.save stores entries \
                 uncompressed, and a compressed entry can be a zip bomb"
            )));
        }
        if csize != usize_ {
            return Err(bad(format!(
                "entry {name} claims different stored and real sizes"
            )));
        }
        entries.push(Entry {
            name,
            local_offset: offset,
            size: csize,
        });
    }

    // The layout: one top folder, known names, exactly one data.pkl.
    let archive = entries
        .first()
        .and_then(|e| e.name.split_once('/'))
        .map(|(a, _)| a.to_owned())
        .ok_or_else(|| bad("it has no entries in a top folder"))?;
    let mut data_pkl = None;
    for (i, e) in entries.iter().enumerate() {
        let rest = e
            .name
            .strip_prefix(&archive)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| bad(format!("entry {} is outside the folder {archive}/", e.name)))?;
        let known = matches!(
            rest,
            "data.pkl"
                | "version"
                | "byteorder"
                | ".format_version"
                | ".storage_alignment"
                | ".data/version"
                | ".data/serialization_id"
        ) || rest
            .strip_prefix("data/")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !known {
            return Err(bad(format!(
                "it has an entry {} that torch.save does not write",
                e.name
            )));
        }
        if rest == "data.pkl" {
            if data_pkl.is_some() {
                return Err(bad("it has two data.pkl entries"));
            }
            data_pkl = Some(i);
        }
    }
    let data_pkl = data_pkl.ok_or_else(|| bad(format!("it has no {archive}/data.pkl")))?;

    // Each local header must agree with the directory, and the entries' bytes must lie inside
    // the file, before the directory, and never overlap.
    let mut ranges = Vec::with_capacity(entries.len());
    let mut data_pkl_offset = 0;
    for (i, e) in entries.iter().enumerate() {
        let Some(lh_end) = e.local_offset.checked_add(30).filter(|&end| end <= cd_offset) else {
            return Err(bad(format!("entry {}'s header lies outside the file", e.name)));
        };
        input.seek(SeekFrom::Start(e.local_offset)).map_err(io)?;
        let lh = util::read_exact_vec(input, 30).map_err(io)?;
        if !lh.starts_with(b"PK\x03\x04") {
            return Err(bad(format!("entry {}'s local header is missing", e.name)));
        }
        if le16(&lh, 8) != 0 {
            return Err(bad(format!("entry {} is compressed in its local header", e.name)));
        }
        let (nlen, xlen) = (le16(&lh, 26), le16(&lh, 28));
        let local_name = util::read_exact_vec(input, nlen).map_err(io)?;
        if local_name != e.name.as_bytes() {
            return Err(bad(format!(
                "entry {}'s local header names another file; zip readers would disagree on \
                 what it holds",
                e.name
            )));
        }
        let start = lh_end + nlen + xlen;
        let end = start
            .checked_add(e.size)
            .filter(|&end| end <= cd_offset)
            .ok_or_else(|| bad(format!("entry {} is cut short", e.name)))?;
        if i == data_pkl {
            if e.size > MAX_PICKLE {
                return Err(bad(format!(
                    "its data.pkl is {} bytes, more than the {} MiB a state dict needs",
                    e.size,
                    MAX_PICKLE >> 20
                )));
            }
            data_pkl_offset = start;
        }
        ranges.push((e.local_offset, end, i));
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(bad(format!(
                "entries {} and {} share bytes (a zip bomb trick)",
                entries[w[0].2].name, entries[w[1].2].name
            )));
        }
    }
    Ok(TorchZip {
        archive,
        entries: entries.len(),
        data_pkl_offset,
        data_pkl_size: entries[data_pkl].size,
    })
}
