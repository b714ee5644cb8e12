//! GGUF (llama.cpp's format): the magic, version 1-3, every count and string length checked
//! against the bytes the file really has before anything is read or allocated, and every tensor's
//! data inside the file at the alignment `general.alignment` sets (default 32).
//!
//! Key/value contents are skipped, not kept, except `general.alignment` and
//! `general.architecture`; tensor names are not kept either.

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

use crate::{io_refusal, Refusal};

/// The default data alignment.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// A tensor has at most this many dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

/// What a valid GGUF header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 1, 2 or 3.
    pub version: u32,
    /// Number of tensors.
    pub tensors: u64,
    /// Number of key/value pairs.
    pub kv: u64,
    /// `general.alignment`, or the default 32.
    pub alignment: u64,
    /// `general.architecture` (e.g. `llama`, `flux`), cut to 64 characters.
    pub architecture: Option<String>,
    /// Where the tensor data section starts.
    pub data_offset: u64,
}

/// `(elements per block, bytes per block)` of a ggml tensor type, or `None` for a type this
/// crate does not know (also the removed ones: 4, 5, 31-33, 36-38). Q8_1 is ggml's 36-byte block; the Python
/// `gguf` package says 40, and the smaller size is the lenient one for a bounds check.
pub fn type_size(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        40 => (64, 36),   // NVFP4
        41 => (128, 18),  // Q1_0
        _ => return None,
    })
}

fn bad(what: impl std::fmt::Display) -> Refusal {
    Refusal::corrupt(format!(
        "this is not a valid GGUF file: {what}. The file is damaged or truncated; upload it again."
    ))
}

struct R<T> {
    r: BufReader<T>,
    pos: u64,
    size: u64,
    version: u32,
}

impl<T: Read> R<T> {
    fn io(e: io::Error) -> Refusal {
        io_refusal(e, "the GGUF header")
    }
    fn left(&self) -> u64 {
        self.size - self.pos
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], Refusal> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(Self::io)?;
        self.pos += N as u64;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, Refusal> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, Refusal> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    /// A count or length: u32 in version 1, u64 after.
    fn len(&mut self) -> Result<u64, Refusal> {
        if self.version == 1 {
            self.u32().map(u64::from)
        } else {
            self.u64()
        }
    }
    fn skip(&mut self, n: u64) -> Result<(), Refusal> {
        if n > self.left() {
            return Err(bad(format!(
                "a value of {n} bytes at byte {} runs past the end of the file",
                self.pos
            )));
        }
        let mut left = n;
        while left > 0 {
            let avail = self.r.fill_buf().map_err(Self::io)?.len() as u64;
            if avail == 0 {
                return Err(Self::io(io::ErrorKind::UnexpectedEof.into()));
            }
            let k = avail.min(left);
            self.r.consume(k as usize);
            left -= k;
        }
        self.pos += n;
        Ok(())
    }
    /// A string; kept (lossily) only when it is at most `keep` bytes.
    fn string(&mut self, keep: u64) -> Result<Option<String>, Refusal> {
        let n = self.len()?;
        if n > self.left() {
            return Err(bad(format!(
                "a string of {n} bytes at byte {} runs past the end of the file",
                self.pos
            )));
        }
        if n <= keep {
            let mut v = vec![0u8; n as usize];
            self.r.read_exact(&mut v).map_err(Self::io)?;
            self.pos += n;
            Ok(Some(String::from_utf8_lossy(&v).into_owned()))
        } else {
            self.skip(n)?;
            Ok(None)
        }
    }
    /// Skips one value of type `t`; returns it as a number or string when it is small.
    fn value(&mut self, t: u32, depth: u8) -> Result<Value, Refusal> {
        Ok(match t {
            0 | 1 | 7 => Value::Num(u64::from(self.arr::<1>()?[0])),
            2 | 3 => Value::Num(u64::from(u16::from_le_bytes(self.arr()?))),
            4..=6 => Value::Num(u64::from(self.u32()?)),
            10..=12 => Value::Num(self.u64()?),
            8 => Value::Str(self.string(64)?),
            9 => {
                if depth > 0 {
                    return Err(bad("an array nested in an array"));
                }
                let et = self.u32()?;
                let n = self.len()?;
                let min = match et {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    10..=12 => 8,
                    8 => {
                        if self.version == 1 {
                            4
                        } else {
                            8
                        }
                    }
                    _ => return Err(bad(format!("an array of unknown type {et}"))),
                };
                if n.checked_mul(min).is_none_or(|b| b > self.left()) {
                    return Err(bad(format!(
                        "an array claims {n} items, more than the file can hold"
                    )));
                }
                if et == 8 {
                    for _ in 0..n {
                        self.string(0)?;
                    }
                } else {
                    self.skip(n * min)?;
                }
                Value::Other
            }
            _ => return Err(bad(format!("a value of unknown type {t}"))),
        })
    }
}

enum Value {
    Num(u64),
    Str(Option<String>),
    Other,
}

/// Checks a GGUF file of `size` bytes positioned at its start.
pub fn check<T: Read + Seek>(input: &mut T, size: u64) -> Result<Header, Refusal> {
    let mut r = R {
        r: BufReader::with_capacity(64 * 1024, (&mut *input).take(size)),
        pos: 0,
        size,
        version: 0,
    };
    if r.arr::<4>().ok() != Some(*b"GGUF") {
        return Err(bad("it does not start with the GGUF signature"));
    }
    let version = r.u32()?;
    if !(1..=3).contains(&version) {
        return Err(bad(format!("version {version} (only 1 to 3 exist)")));
    }
    r.version = version;
    let tensors = r.len()?;
    let kv = r.len()?;
    // The smallest tensor info is 8+0+4+8+4+8 bytes, the smallest key/value 8+0+4+1.
    if tensors.checked_mul(32).is_none_or(|b| b > r.left()) || kv.checked_mul(13).is_none_or(|b| b > r.left())
    {
        return Err(bad(format!(
            "it claims {tensors} tensors and {kv} key/value pairs, more than the file can hold"
        )));
    }
    let mut alignment = DEFAULT_ALIGNMENT;
    let mut architecture = None;
    for _ in 0..kv {
        let key = r.string(64)?;
        let t = r.u32()?;
        let v = r.value(t, 0)?;
        match (key.as_deref(), v) {
            (Some("general.alignment"), Value::Num(a)) => {
                if a == 0 || !a.is_power_of_two() || t != 4 {
                    return Err(bad(format!("general.alignment is {a}, not a power of two")));
                }
                alignment = a;
            }
            (Some("general.architecture"), Value::Str(s)) => architecture = s,
            _ => {}
        }
    }
    let mut infos = Vec::with_capacity(tensors.min(4096) as usize);
    for _ in 0..tensors {
        r.string(0)?;
        let dims = r.u32()?;
        if dims > MAX_DIMS {
            return Err(bad(format!(
                "a tensor with {dims} dimensions (at most {MAX_DIMS})"
            )));
        }
        let mut elements: u64 = 1;
        let mut first = 1;
        for d in 0..dims {
            let n = r.len()?;
            if d == 0 {
                first = n;
            }
            elements = elements
                .checked_mul(n)
                .ok_or_else(|| bad("a tensor whose size overflows"))?;
        }
        let t = r.u32()?;
        let offset = r.u64()?;
        let (block, bytes) = type_size(t).ok_or_else(|| {
            bad(format!(
                "a tensor of ggml type {t}, which this check does not know (a newer llama.cpp \
                 type?)"
            ))
        })?;
        if first % block != 0 {
            return Err(bad(format!(
                "a tensor whose row of {first} elements is not whole blocks of {block}"
            )));
        }
        let len = (elements / block)
            .checked_mul(bytes)
            .ok_or_else(|| bad("a tensor whose size overflows"))?;
        if offset % alignment != 0 {
            return Err(bad(format!(
                "a tensor at offset {offset}, not aligned to {alignment}"
            )));
        }
        infos.push((offset, len));
    }
    let data_offset = r.pos.div_ceil(alignment) * alignment;
    let data = size.saturating_sub(data_offset);
    for (offset, len) in infos {
        if offset.checked_add(len).is_none_or(|end| end > data) {
            return Err(bad(format!(
                "a tensor's data ({len} bytes at {offset}) lies past the end of the file: it is \
                 truncated"
            )));
        }
    }
    drop(r);
    input
        .seek(SeekFrom::Start(0))
        .map_err(|e| io_refusal(e, "the file"))?;
    Ok(Header {
        version,
        tensors,
        kv,
        alignment,
        architecture,
        data_offset,
    })
}
