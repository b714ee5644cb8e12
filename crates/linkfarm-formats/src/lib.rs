//! Checks of model files and their companions, for SPEC §10's inboxes and §11's `verify`.
//!
//! Everything here parses bytes that strangers wrote, so it is written for hostile input: it is
//! pure over [`Read`] + [`Seek`] and opens nothing itself, never maps a file into memory, never
//! reads a model whole, never executes a pickle, and never allocates in proportion to a length the
//! file *claims*: every allocation is capped by a constant or by bytes actually read.
//!
//! The one entry point is [`check`]: it answers a [`Verdict`] (what the file is) or a [`Refusal`]
//! (why it is not acceptable, in plain words for a `.why.txt`). [`hash`] streams SHA-256.

#![deny(missing_docs)]

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

pub mod companion;
pub mod gguf;
pub mod hash;
pub mod kind;
pub mod pickle;
pub mod safetensors;
pub mod torchzip;
mod util;

pub use kind::{Confidence, Kind, KindGuess};

/// A file type recognised by its extension: what the content must then agree with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// `.safetensors`
    Safetensors,
    /// `.gguf`
    Gguf,
    /// `.ckpt .pt .pth .bin`: a torch.save zip or a bare pickle.
    Pickle,
    /// A small file beside a model.
    Companion(companion::CompanionType),
}

impl FileType {
    /// The type a file name's extension announces (case-insensitive), or `None` for anything that
    /// is neither a model format nor a known companion.
    pub fn from_name(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "safetensors" => Self::Safetensors,
            "gguf" => Self::Gguf,
            "ckpt" | "pt" | "pth" | "bin" => Self::Pickle,
            other => Self::Companion(companion::CompanionType::from_extension(other)?),
        })
    }

    /// The short name used in records (`LINKFARM_FORMAT`, the upload log): `safetensors`, `gguf`,
    /// `pickle`, or the companion's (`png`, `json`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors",
            Self::Gguf => "gguf",
            Self::Pickle => "pickle",
            Self::Companion(c) => c.name(),
        }
    }

    /// Whether this is a model format (not a companion).
    pub fn is_model(self) -> bool {
        !matches!(self, Self::Companion(_))
    }
}

/// Limits the caller passes (from the inbox config).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest companion that is parsed (`companion_max_size`); a larger one is refused.
    pub companion_max_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            companion_max_size: 20 * 1024 * 1024,
        }
    }
}

/// What a file that passed its format's checks is.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The format the content was checked as.
    pub format: FileType,
    /// The file's length in bytes.
    pub size: u64,
    /// What the tensor names say the model is (safetensors only; `None` otherwise).
    pub kind: Option<KindGuess>,
    /// Format details.
    pub details: Details,
}

/// Format details of a [`Verdict`].
#[derive(Debug, Clone, PartialEq)]
pub enum Details {
    /// See [`safetensors::Header`].
    Safetensors(safetensors::Header),
    /// See [`gguf::Header`].
    Gguf(gguf::Header),
    /// See [`pickle::Report`].
    Pickle(pickle::Report),
    /// A companion parsed or sniffed as its extension says.
    Companion,
}

/// Why a file is refused (SPEC §10's reasons), or could not be judged at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The content does not match its format: truncated, bad header, malformed zip, a fake image.
    Corrupt,
    /// A pickle global or opcode off the allowlist, or one that cannot be resolved statically.
    Unsafe,
    /// The extension is not a format this crate checks.
    Format,
    /// Reading failed (not a short read: an I/O error). Nothing is decided; try again later.
    Io,
}

impl Reason {
    /// The reason as records spell it (`corrupt`, `unsafe`, `format`, `io`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Corrupt => "corrupt",
            Self::Unsafe => "unsafe",
            Self::Format => "format",
            Self::Io => "io",
        }
    }
}

/// A refusal: the reason, and plain words saying what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The class of defect.
    pub reason: Reason,
    /// For a person: what was wrong and what to do (one or two sentences, no trailing newline).
    pub message: String,
}

impl Refusal {
    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        Self {
            reason: Reason::Corrupt,
            message: message.into(),
        }
    }
    pub(crate) fn unsafe_(message: impl Into<String>) -> Self {
        Self {
            reason: Reason::Unsafe,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

impl std::error::Error for Refusal {}

/// An I/O error while checking: a short read means the file is cut short (corrupt); anything
/// else decides nothing.
pub(crate) fn io_refusal(e: io::Error, what: &str) -> Refusal {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Refusal::corrupt(format!(
            "the file ends inside {what}: it is truncated (an upload that did not finish?). \
             Upload it again completely."
        ))
    } else {
        Refusal {
            reason: Reason::Io,
            message: format!("reading failed ({e}); nothing was decided, try again"),
        }
    }
}

/// Checks `input` as `format`: reads only what the format's checks need, from the start.
///
/// The length is taken with `seek(End)`; the reader's position afterwards is unspecified.
pub fn check<R: Read + Seek>(input: &mut R, format: FileType, limits: &Limits) -> Result<Verdict, Refusal> {
    let size = input
        .seek(SeekFrom::End(0))
        .map_err(|e| io_refusal(e, "its length"))?;
    input
        .seek(SeekFrom::Start(0))
        .map_err(|e| io_refusal(e, "its start"))?;
    if size == 0 {
        return Err(Refusal::corrupt(
            "the file is empty (0 bytes): the upload did not carry any data. Upload it again.",
        ));
    }
    let (kind, details) = match format {
        FileType::Safetensors => {
            let header = safetensors::check(input, size)?;
            let kind = kind::classify(header.tensors.iter().map(|t| t.name.as_str()));
            (Some(kind), Details::Safetensors(header))
        }
        FileType::Gguf => (None, Details::Gguf(gguf::check(input, size)?)),
        FileType::Pickle => (None, Details::Pickle(pickle::check_file(input, size)?)),
        FileType::Companion(c) => {
            companion::check(input, size, c, limits.companion_max_size)?;
            (None, Details::Companion)
        }
    };
    Ok(Verdict {
        format,
        size,
        kind,
        details,
    })
}
