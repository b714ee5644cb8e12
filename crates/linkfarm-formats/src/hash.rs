//! Streamed SHA-256 in bounded memory: one fixed buffer, whatever the file's size.
//!
//! The `sha2` crate picks the CPU's SHA extensions (SHA-NI on x86-64, SHA2 on aarch64) at run time
//! through `cpufeatures`; since sha2 0.11 there is no separate `asm` feature to enable, and the
//! SHA-NI path is what makes it as fast as `openssl dgst -sha256` (bench/formats measures both).

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// Bytes read per call: large enough that syscalls cost nothing next to hashing, small enough to
/// stay in L2.
pub const BUF_SIZE: usize = 256 * 1024;

/// A SHA-256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        use std::fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// The first 10 hex digits: the short form model sites (e.g. Civitai's "AutoV2") show.
    pub fn short(&self) -> String {
        self.hex()[..10].to_owned()
    }
}

/// Hashes everything `input` yields until EOF, and returns the digest and the byte count.
pub fn sha256<R: Read>(input: &mut R) -> io::Result<(Sha256Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((Sha256Digest(hasher.finalize().into()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_and_short_form() {
        let (d, n) = sha256(&mut &b""[..]).unwrap();
        assert_eq!(n, 0);
        assert_eq!(
            d.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // Longer than one buffer, so the loop runs more than once.
        let data = vec![b'a'; BUF_SIZE * 2 + 7];
        let (d, n) = sha256(&mut &data[..]).unwrap();
        assert_eq!(n, data.len() as u64);
        let (whole, _) = (Sha256Digest(Sha256::digest(&data).into()), 0);
        assert_eq!(d, whole);
        assert_eq!(d.short(), &d.hex()[..10]);
        assert_eq!(d.short().len(), 10);
    }
}
