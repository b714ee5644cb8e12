//! tus `Upload-Metadata` and the rules for what a client may name (SPEC §13): a filename is one
//! path component, so no request can name a path outside the inbox folders.

use base64::Engine;
use unicode_normalization::is_nfc;

/// The metadata pairs of an `Upload-Metadata` header, values decoded; `None` when malformed.
pub fn parse(header: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in header.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match pair.split_once(' ') {
            Some((k, v)) => (k, v.trim()),
            None => (pair, ""),
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
        out.push((k.to_owned(), String::from_utf8(bytes).ok()?));
    }
    Some(out)
}

/// Why a filename is refused, or `None` when it is one acceptable path component.
pub fn bad_filename(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("the filename is empty")
    } else if name.len() > 255 {
        Some("the filename is longer than 255 bytes")
    } else if name.contains('/') || name == ".." {
        Some("the filename must be a single name, without `/`")
    } else if name.starts_with('.') {
        Some("the filename must not start with a dot")
    } else if name.chars().any(char::is_control) {
        Some("the filename contains a control character")
    } else if !is_nfc(name) {
        Some("the filename is not in Unicode NFC")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs() {
        let m = parse("filename YS5zYWZldGVuc29ycw==,folder bG9yYXM=,empty").unwrap();
        assert_eq!(m[0], ("filename".into(), "a.safetensors".into()));
        assert_eq!(m[1], ("folder".into(), "loras".into()));
        assert_eq!(m[2], ("empty".into(), String::new()));
        assert!(parse("filename !!!").is_none());
    }

    #[test]
    fn hostile_names() {
        for n in [
            "../x.safetensors",
            "/etc/passwd",
            "a\0b",
            "a/b",
            ".hidden",
            "..",
            "",
            "a\nb",
        ] {
            assert!(bad_filename(n).is_some(), "{n:?}");
        }
        assert!(bad_filename(&"a".repeat(300)).is_some());
        assert!(
            bad_filename("e\u{301}.safetensors").is_some(),
            "decomposed é is not NFC"
        );
        assert_eq!(bad_filename("é model (v2).safetensors"), None);
    }
}
