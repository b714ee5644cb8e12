//! Companions: small files beside a model (a preview image, its settings as JSON/YAML, a note).
//! Images are recognised by their magic bytes; JSON, YAML and text must parse. Nothing larger than
//! the caller's `companion_max_size` is read.

use std::io::Read;

use crate::{io_refusal, util, Refusal};

/// The companion types, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompanionType {
    /// `.png`
    Png,
    /// `.jpg`, `.jpeg`
    Jpeg,
    /// `.webp`
    Webp,
    /// `.json`
    Json,
    /// `.yaml`, `.yml`
    Yaml,
    /// `.txt`, `.md`
    Text,
}

impl CompanionType {
    /// The companion type of a lowercase extension.
    pub fn from_extension(ext: &str) -> Option<Self> {
        Some(match ext {
            "png" => Self::Png,
            "jpg" | "jpeg" => Self::Jpeg,
            "webp" => Self::Webp,
            "json" => Self::Json,
            "yaml" | "yml" => Self::Yaml,
            "txt" | "md" => Self::Text,
            _ => return None,
        })
    }

    /// The name used in config (`companions: [png, jpg, ...]`) and records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
            Self::Json => "json",
            Self::Yaml => "yaml",
            Self::Text => "txt",
        }
    }
}

/// Checks a companion of `size` bytes positioned at its start.
pub fn check<R: Read>(input: &mut R, size: u64, kind: CompanionType, max_size: u64) -> Result<(), Refusal> {
    if size > max_size {
        return Err(Refusal::corrupt(format!(
            "a {} companion of {size} bytes is larger than the limit of {max_size} bytes; \
             make it smaller or ask the admin to raise companion_max_size",
            kind.name()
        )));
    }
    let magic: &[&[u8]] = match kind {
        CompanionType::Png => &[b"\x89PNG\r\n\x1a\n"],
        CompanionType::Jpeg => &[b"\xff\xd8\xff"],
        CompanionType::Webp => &[b"RIFF"],
        _ => &[],
    };
    if !magic.is_empty() {
        let want = if kind == CompanionType::Webp {
            12
        } else {
            magic[0].len() as u64
        };
        let head = util::read_exact_vec(input, want.min(size)).map_err(|e| io_refusal(e, "it"))?;
        let ok =
            head.starts_with(magic[0]) && (kind != CompanionType::Webp || head.get(8..12) == Some(b"WEBP"));
        return if ok {
            Ok(())
        } else {
            Err(Refusal::corrupt(format!(
                "this is not a {} image (its first bytes are not the {} signature); \
                 save it again as a real {0} file",
                kind.name(),
                kind.name().to_uppercase()
            )))
        };
    }
    let bytes = util::read_exact_vec(input, size).map_err(|e| io_refusal(e, "it"))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Refusal::corrupt(format!(
            "this {} file is not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
            kind.name(),
            e.valid_up_to()
        ))
    })?;
    match kind {
        CompanionType::Json => {
            serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| {
                Refusal::corrupt(format!(
                    "this JSON file does not parse ({e}); fix it or upload it as .txt"
                ))
            })?;
        }
        CompanionType::Yaml => {
            // serde-saphyr's default budget stops alias bombs (250,000 nodes); its error
            // quotes the source over several lines: the first says what and where.
            serde_saphyr::from_str::<serde::de::IgnoredAny>(text).map_err(|e| {
                let e = e.to_string();
                let first = e.lines().next().unwrap_or_default();
                Refusal::corrupt(format!(
                    "this YAML file does not parse ({first}); fix it or upload it as .txt"
                ))
            })?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reason;

    fn run(bytes: &[u8], kind: CompanionType) -> Result<(), Refusal> {
        check(&mut &bytes[..], bytes.len() as u64, kind, 1024)
    }

    #[test]
    fn real_signatures_pass_and_fakes_are_corrupt() {
        use CompanionType::*;
        assert!(run(b"\x89PNG\r\n\x1a\n....", Png).is_ok());
        assert!(run(b"\xff\xd8\xff\xe0JFIF", Jpeg).is_ok());
        assert!(run(b"RIFF\x10\0\0\0WEBPVP8 ", Webp).is_ok());
        for (bytes, kind) in [
            (&b"GIF89a......"[..], Png),
            (b"\x89PNG", Png),
            (b"RIFF\x10\0\0\0WAVEfmt ", Webp),
            (b"<html>", Jpeg),
        ] {
            assert_eq!(run(bytes, kind).unwrap_err().reason, Reason::Corrupt);
        }
    }

    #[test]
    fn json_yaml_and_text_must_parse() {
        use CompanionType::*;
        assert!(run(br#"{"a": [1, 2]}"#, Json).is_ok());
        assert!(run(b"a: [1, 2]\nb: x\n", Yaml).is_ok());
        assert!(run("gr\u{fc}n".as_bytes(), Text).is_ok());
        assert!(run(br#"{"a": "#, Json).is_err());
        assert!(run(b"a: [1, 2\n", Yaml).is_err());
        assert!(run(b"\xff\xfe", Text).is_err());
    }

    #[test]
    fn a_yaml_alias_bomb_is_refused_quickly() {
        // Nine levels of nine aliases: 9^9 (387 million) nodes if expanded.
        let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            y.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let t = std::time::Instant::now();
        let r = check(&mut y.as_bytes(), y.len() as u64, CompanionType::Yaml, 1 << 20);
        let r = r.expect_err("the bomb parsed");
        assert!(!r.message.contains('\n'), "{r}");
        assert!(t.elapsed().as_secs() < 5, "took {:?}", t.elapsed());
    }

    #[test]
    fn larger_than_the_limit_is_refused_unread() {
        let r = check(&mut &b""[..], 1 << 40, CompanionType::Json, 1024).unwrap_err();
        assert!(r.message.contains("companion_max_size"), "{r}");
    }
}
