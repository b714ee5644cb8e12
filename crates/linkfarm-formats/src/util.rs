//! Bounded reading helpers shared by the parsers.

use std::io::{self, Read};

/// Reads exactly `n` bytes into a new vector, growing it only as bytes arrive, so a claimed
/// length that the file does not back costs no memory.
pub(crate) fn read_exact_vec<R: Read>(input: &mut R, n: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n.min(64 * 1024) as usize);
    let got = input.take(n).read_to_end(&mut out)?;
    if (got as u64) < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(out)
}

/// Reads and throws away exactly `n` bytes through a small stack buffer.
pub(crate) fn skip<R: Read>(input: &mut R, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut input.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

pub(crate) fn u64_le<R: Read>(r: &mut R) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}
