//! The part file of an upload: one PATCH's bytes written at its offset and made durable before
//! the 204 (SPEC §13).
//!
//! Whole 4 KiB blocks are written with `O_DIRECT` from an aligned buffer, one write on the disk
//! while the next buffer fills from the network. The bytes do not pass through the page cache:
//! a 20 GB upload neither pushes out the models the containers are reading nor meets the
//! kernel's dirty-page throttling, the copy into the page cache (half the service's CPU at
//! 4 GiB, by perf) is not made, and the fdatasync before the 204 finds only the metadata and
//! the device's cache left. Measured in `bench/web-throughput.sh`.
//!
//! A direct write must be whole blocks, so the last partial block of a PATCH goes through the
//! page cache; the next PATCH reads it back and writes that block again, whole (the kernel
//! writes back and drops the cached page before a direct write over it, so the two views never
//! disagree). Where the filesystem refuses `O_DIRECT` (tmpfs, some FUSE and network
//! filesystems) the same bytes go through the page cache in batches, each batch's writeback
//! started at once.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use tokio::task::JoinHandle;

/// Direct writes keep to this for their offset, length and buffer address: every logical block
/// size Linux devices report (512 or 4096) divides it. (Where a page is larger, a direct write
/// may cover part of a cached page; the kernel writes such a page back and drops it first.)
const BLOCK: usize = 4096;

/// Bytes of one write, direct or through the page cache. An upload holds at most two of these
/// (one filling, one on the disk) while a PATCH runs: its bounded memory.
const BATCH: usize = 1 << 20;

/// Body frames in one buffered batch at most (one `pwritev`; the kernel takes 1,024 iovecs): a
/// client sending tiny frames cannot make a batch a long list.
const BATCH_FRAMES: usize = 256;

/// Whether the service has said once that a filesystem refused a direct write it opened for.
static DIRECT_REFUSED_SAID: AtomicBool = AtomicBool::new(false);

/// `BATCH` bytes at an address that is a multiple of `BLOCK` (safe code: a larger vector and
/// the aligned window in it; the vector is never grown, so its bytes never move).
struct Aligned {
    raw: Vec<u8>,
    at: usize,
}

impl Aligned {
    fn new() -> Aligned {
        let raw = vec![0u8; BATCH + BLOCK];
        let at = (BLOCK - raw.as_ptr().addr() % BLOCK) % BLOCK;
        Aligned { raw, at }
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.at..self.at + BATCH]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.at..self.at + BATCH]
    }
}

/// Kept alive by every write of a PATCH on the blocking pool, the request's own included (the
/// upload's busy guard): a request dropped with its client releases the upload only once its
/// last write has landed.
pub(crate) type Hold = Arc<dyn std::any::Any + Send + Sync>;

/// `spawn_blocking` with the writes' [`Hold`].
fn blocking<T: Send + 'static>(hold: &Hold, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let hold = hold.clone();
    tokio::task::spawn_blocking(move || {
        let r = f();
        drop(hold);
        r
    })
}

fn joined<T>(r: Result<io::Result<T>, tokio::task::JoinError>) -> io::Result<T> {
    r.map_err(io::Error::other)?
}

/// Writes every byte of `frames` at `at` (a `pwritev` may write less than asked).
fn pwrite_frames(f: &File, frames: &[Bytes], mut at: u64) -> io::Result<()> {
    let mut iov: Vec<io::IoSlice<'_>> = frames.iter().map(|b| io::IoSlice::new(b)).collect();
    let mut left = &mut iov[..];
    while !left.is_empty() {
        let off = i64::try_from(at).map_err(io::Error::other)?;
        let n = nix::sys::uio::pwritev(f, left, off)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        at += n as u64;
        io::IoSlice::advance_slices(&mut left, n);
    }
    Ok(())
}

/// Writes whole blocks with `O_DIRECT`; a filesystem that opened the file for it but refuses
/// the write (EINVAL: an alignment it wants larger) gets the same bytes through the page cache.
fn write_blocks(direct: &File, cached: &File, bytes: &[u8], at: u64) -> io::Result<()> {
    match direct.write_all_at(bytes, at) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
            if !DIRECT_REFUSED_SAID.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the inbox's filesystem refused a direct write ({e}); writing through the page cache"
                );
            }
            cached.write_all_at(bytes, at)
        }
        r => r,
    }
}

/// The direct path's state: `buf` holds the bytes from `base` (a multiple of `BLOCK`) on,
/// `fill` of them; `disk` is the previous buffer's write, if one is still running.
struct Direct {
    fd: Arc<File>,
    buf: Option<Aligned>,
    spare: Option<Aligned>,
    base: u64,
    fill: usize,
    disk: Option<JoinHandle<io::Result<Aligned>>>,
}

enum Path {
    Direct(Direct),
    /// Frames kept as they came (no copy), written with one `pwritev` per batch at `pos`.
    Cached {
        frames: Vec<Bytes>,
        pending: usize,
        pos: u64,
    },
}

/// Writes one PATCH's bytes into the part file at its offset and makes them durable.
pub(crate) struct PartWriter {
    hold: Hold,
    file: Arc<File>,
    start: u64,
    received: u64,
    path: Path,
}

impl PartWriter {
    /// Opens the part file, cutting off bytes past `offset`: they were never acknowledged (a
    /// crash between a write and its record). Direct writes where the filesystem takes them.
    /// `hold` is kept alive until the last write of this PATCH has landed. The part file lives
    /// in a folder clients write to: a symlink in its place is refused (`O_NOFOLLOW`), never
    /// cut or written through, and the direct fd must be the same file as the first.
    pub(crate) async fn open(path: PathBuf, offset: u64, hold: Hold) -> io::Result<PartWriter> {
        Self::open_with(path, offset, hold, true).await
    }

    async fn open_with(path: PathBuf, offset: u64, hold: Hold, try_direct: bool) -> io::Result<PartWriter> {
        let (file, direct) = joined(
            blocking(&hold, move || {
                let open = |flags| {
                    std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(nix::libc::O_NOFOLLOW | flags)
                        .open(&path)
                };
                let f = open(0)?;
                let meta = f.metadata()?;
                if !meta.is_file() {
                    return Err(io::Error::other("the part file is not a regular file"));
                }
                if meta.len() != offset {
                    f.set_len(offset)?;
                }
                let same = |d: &File| {
                    d.metadata()
                        .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
                };
                let Some(fd) = try_direct
                    .then(|| open(nix::libc::O_DIRECT).ok())
                    .flatten()
                    .filter(same)
                else {
                    return Ok((f, None));
                };
                // The acknowledged bytes of the block the PATCH starts in: written again,
                // whole, with the first direct write.
                let mut buf = Aligned::new();
                let base = offset - offset % BLOCK as u64;
                let fill = (offset - base) as usize;
                f.read_exact_at(&mut buf.bytes_mut()[..fill], base)?;
                let direct = Direct {
                    fd: Arc::new(fd),
                    buf: Some(buf),
                    spare: None,
                    base,
                    fill,
                    disk: None,
                };
                Ok((f, Some(direct)))
            })
            .await,
        )?;
        let path = match direct {
            Some(d) => Path::Direct(d),
            None => Path::Cached {
                frames: Vec::new(),
                pending: 0,
                pos: offset,
            },
        };
        Ok(PartWriter {
            hold,
            file: Arc::new(file),
            start: offset,
            received: 0,
            path,
        })
    }

    /// Bytes received in this PATCH so far.
    pub(crate) fn written(&self) -> u64 {
        self.received
    }

    /// Whether whole blocks go to the disk directly.
    #[cfg(test)]
    fn is_direct(&self) -> bool {
        matches!(self.path, Path::Direct(_))
    }

    pub(crate) async fn push(&mut self, data: Bytes) -> io::Result<()> {
        self.received += data.len() as u64;
        match &mut self.path {
            Path::Direct(d) => {
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let buf = d.buf.as_mut().expect("a buffer between writes");
                    let n = rest.len().min(BATCH - d.fill);
                    buf.bytes_mut()[d.fill..d.fill + n].copy_from_slice(&rest[..n]);
                    d.fill += n;
                    rest = &rest[n..];
                    if d.fill == BATCH {
                        d.submit(&self.file, &self.hold).await?;
                    }
                }
                Ok(())
            }
            Path::Cached { frames, pending, .. } => {
                *pending += data.len();
                frames.push(data);
                if *pending >= BATCH || frames.len() >= BATCH_FRAMES {
                    self.write_cached().await?;
                }
                Ok(())
            }
        }
    }

    async fn write_cached(&mut self) -> io::Result<()> {
        let Path::Cached { frames, pending, pos } = &mut self.path else {
            return Ok(());
        };
        if frames.is_empty() {
            return Ok(());
        }
        let f = self.file.clone();
        let frames = std::mem::take(frames);
        let (at, len) = (*pos, *pending);
        *pending = 0;
        joined(
            blocking(&self.hold, move || {
                pwrite_frames(&f, &frames, at)?;
                // Start this batch's writeback now (Linux's POSIX_FADV_DONTNEED writes dirty
                // pages back without waiting, and drops only clean ones), so the disk works
                // while the next batch arrives. Advisory: an error changes nothing.
                let _ = nix::fcntl::posix_fadvise(
                    &*f,
                    at as i64,
                    len as i64,
                    nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
                );
                Ok(())
            })
            .await,
        )?;
        *pos += len as u64;
        Ok(())
    }

    /// Everything pushed is on disk; on an error, the writer comes back for [`Self::discard`].
    pub(crate) async fn finish(mut self) -> Result<(), (PartWriter, io::Error)> {
        let r = async {
            match &mut self.path {
                Path::Direct(d) => d.finish(&self.file, &self.hold).await?,
                Path::Cached { .. } => self.write_cached().await?,
            }
            let f = self.file.clone();
            joined(blocking(&self.hold, move || f.sync_data()).await)
        }
        .await;
        r.map_err(|e| (self, e))
    }

    /// Drops every byte of this PATCH (a checksum mismatch, a full disk).
    pub(crate) async fn discard(mut self) {
        if let Path::Direct(d) = &mut self.path {
            if let Some(h) = d.disk.take() {
                let _ = h.await;
            }
        }
        let f = self.file.clone();
        let start = self.start;
        let _ = blocking(&self.hold, move || {
            f.set_len(start)?;
            f.sync_data()
        })
        .await;
    }
}

impl Direct {
    /// Hands the full buffer to the disk, once the previous one is written; the next bytes go
    /// into the other buffer meanwhile.
    async fn submit(&mut self, cached: &Arc<File>, hold: &Hold) -> io::Result<()> {
        if let Some(h) = self.disk.take() {
            self.spare = Some(joined(h.await)?);
        }
        let buf = self.buf.take().expect("a buffer between writes");
        self.buf = Some(self.spare.take().unwrap_or_else(Aligned::new));
        let (fd, cached, at) = (self.fd.clone(), cached.clone(), self.base);
        self.disk = Some(blocking(hold, move || {
            write_blocks(&fd, &cached, buf.bytes(), at)?;
            Ok(buf)
        }));
        self.base += BATCH as u64;
        self.fill = 0;
        Ok(())
    }

    /// Writes what is left: the whole blocks directly, the partial last one through the cache.
    async fn finish(&mut self, cached: &Arc<File>, hold: &Hold) -> io::Result<()> {
        if let Some(h) = self.disk.take() {
            joined(h.await)?;
        }
        let buf = self.buf.take().expect("a buffer between writes");
        let (fd, cached, at, fill) = (self.fd.clone(), cached.clone(), self.base, self.fill);
        let buf = joined(
            blocking(hold, move || {
                let whole = fill - fill % BLOCK;
                if whole > 0 {
                    write_blocks(&fd, &cached, &buf.bytes()[..whole], at)?;
                }
                if fill > whole {
                    cached.write_all_at(&buf.bytes()[whole..fill], at + whole as u64)?;
                }
                Ok(buf)
            })
            .await,
        )?;
        self.buf = Some(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_land_at_their_offset_in_order_whatever_their_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        std::fs::write(&path, b"keep").unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // Empty frames, one byte, and a frame bigger than a page, as a client may send them.
        let frames: Vec<Bytes> = [&b""[..], b"a", &[b'b'; 5000], b"", b"cd"]
            .iter()
            .map(|b| Bytes::copy_from_slice(b))
            .collect();
        pwrite_frames(&f, &frames, 4).unwrap();
        let mut want = b"keepa".to_vec();
        want.extend([b'b'; 5000]);
        want.extend(b"cd");
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    fn nothing() -> Hold {
        Arc::new(())
    }

    /// Where the writer's tests run: under `LINKFARM_TEST_DIR` when set (tests/e2e/fuse.sh
    /// points it at a FUSE mount), else on a disk filesystem (direct writes) when there is
    /// one: /var/tmp, else the default temp dir.
    fn disk_dir() -> tempfile::TempDir {
        if let Some(d) = std::env::var_os("LINKFARM_TEST_DIR") {
            std::fs::create_dir_all(&d).unwrap();
            return tempfile::tempdir_in(d).unwrap();
        }
        tempfile::tempdir_in("/var/tmp").unwrap_or_else(|_| tempfile::tempdir().unwrap())
    }

    /// PATCHes of awkward sizes (none, one byte, across a block, across a batch, ending
    /// mid-block) land byte for byte, each starting where the last ended, on both paths; a
    /// discarded PATCH leaves the file as it was.
    async fn patches_land(dir: &std::path::Path, try_direct: bool) -> bool {
        let path = dir.join("part");
        std::fs::write(&path, b"").unwrap();
        let mut want: Vec<u8> = Vec::new();
        let mut seed = 7u32;
        let mut byte = move || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) as u8
        };
        let sizes: &[&[usize]] = &[
            &[1],
            &[],
            &[4095, 2],
            &[BATCH - 3, 10, 5000],
            &[2 * BATCH + 1],
            &[1, 1, 1],
            &[3 * BLOCK],
            &[70_000, 0, 9],
        ];
        let mut direct = false;
        for (i, frames) in sizes.iter().enumerate() {
            let mut w = PartWriter::open_with(path.clone(), want.len() as u64, nothing(), try_direct)
                .await
                .unwrap();
            direct |= w.is_direct();
            let mut sent = Vec::new();
            for &n in *frames {
                let b: Vec<u8> = (0..n).map(|_| byte()).collect();
                sent.extend_from_slice(&b);
                w.push(Bytes::from(b)).await.unwrap();
            }
            assert_eq!(w.written(), sent.len() as u64);
            if i == 3 {
                // A checksum mismatch: this PATCH's bytes are dropped, the rest stays.
                w.discard().await;
            } else {
                w.finish().await.map_err(|(_, e)| e).unwrap();
                want.extend_from_slice(&sent);
            }
            assert!(
                std::fs::read(&path).unwrap() == want,
                "after PATCH {i} (direct: {direct})"
            );
        }
        direct
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn patches_land_byte_for_byte_directly() {
        let dir = disk_dir();
        let direct = patches_land(dir.path(), true).await;
        // Where the filesystem takes O_DIRECT, the direct path was the one tested.
        let takes = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(dir.path().join("probe"))
            .is_ok();
        assert_eq!(direct, takes);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn patches_land_byte_for_byte_through_the_page_cache() {
        let dir = disk_dir();
        assert!(!patches_land(dir.path(), false).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_past_the_acknowledged_offset_are_cut_off() {
        let dir = disk_dir();
        let path = dir.path().join("part");
        std::fs::write(&path, b"acknowledged, then a crash left this").unwrap();
        let w = PartWriter::open(path.clone(), 12, nothing()).await.unwrap();
        w.finish().await.map_err(|(_, e)| e).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"acknowledged");
    }

    /// A client (over SMB) puts a symlink where the part file was, pointing at a file the
    /// service can write: the writer refuses it on both paths, and the file it points at is
    /// neither cut to the offset nor written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_symlink_in_place_of_the_part_file_is_refused() {
        let dir = disk_dir();
        let victim = dir.path().join("someone-else.safetensors");
        std::fs::write(&victim, b"a model that must stay as it is").unwrap();
        let part = dir.path().join(".linkfarm-web.x.part");
        std::os::unix::fs::symlink(&victim, &part).unwrap();
        for try_direct in [true, false] {
            let r = PartWriter::open_with(part.clone(), 2, nothing(), try_direct).await;
            assert!(
                r.is_err(),
                "direct: {try_direct}: a symlinked part file was opened"
            );
        }
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"a model that must stay as it is"
        );
    }

    /// A PATCH whose request is dropped (its client went away) while a write is on the disk:
    /// the upload's busy lock comes free only once that write has landed, so the next PATCH
    /// (which cuts the file back to the recorded offset) never has an old write land after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_busy_lock_outlives_a_dropped_requests_writes() {
        let dir = disk_dir();
        for round in 0..20 {
            let path = dir.path().join(format!("part{round}"));
            std::fs::write(&path, b"").unwrap();
            let busy = Arc::new(tokio::sync::Mutex::new(()));
            let guard = busy.clone().try_lock_owned().unwrap();
            let mut w = PartWriter::open(path.clone(), 0, Arc::new(guard)).await.unwrap();
            // One full buffer goes to the disk (not awaited) and one byte stays behind.
            w.push(Bytes::from(vec![7u8; BATCH + 1])).await.unwrap();
            drop(w);
            let _next = busy.lock().await;
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                BATCH as u64,
                "round {round}: the dropped request's write landed before the lock came free"
            );
        }
    }
}
