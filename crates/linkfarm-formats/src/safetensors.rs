//! safetensors: the header checked under the format's own rules, through the official
//! `safetensors` crate's header types ([`TensorInfo`] with its `Dtype`, and
//! [`safetensors::tensor::Metadata::new`], which validates shapes against byte lengths and offsets
//! contiguous from 0), plus the one rule
//! that needs the file's length: exactly `8 + header + data` bytes. That rule is what catches a
//! truncated upload (ComfyUI's "MetadataIncompleteBuffer").
//!
//! Only the 8-byte length and the header are read, never the tensor data; the header is read only
//! after its claimed length was checked against the file's real length.

use std::io::{Read, Seek};

use std::collections::{HashMap, HashSet};

use ::safetensors::tensor::{Metadata, TensorInfo};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};

use crate::{io_refusal, util, Refusal};

/// The largest header accepted: the `safetensors` crate's own limit (100 MB).
pub const MAX_HEADER: u64 = 100_000_000;
/// At most this many `__metadata__` entries are kept in a [`Header`] (all are counted).
pub const KEPT_METADATA: usize = 32;
/// Metadata values are cut to this many characters in a [`Header`].
pub const KEPT_VALUE_CHARS: usize = 200;

/// One tensor of a checked file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    /// Its name, e.g. `model.diffusion_model.input_blocks.0.0.weight`.
    pub name: String,
    /// Its dtype as the file spells it (`F16`, `BF16`, `F8_E4M3`, ...).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// What a valid safetensors header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's length in bytes (the 8-byte prefix's value).
    pub header_len: u64,
    /// The data section's length in bytes.
    pub data_len: u64,
    /// The tensors in data order.
    pub tensors: Vec<Tensor>,
    /// How many `__metadata__` entries the file has.
    pub metadata_entries: usize,
    /// The first [`KEPT_METADATA`] of them by key, values cut to [`KEPT_VALUE_CHARS`].
    pub metadata: Vec<(String, String)>,
}

/// The header as the JSON has it, in the `safetensors` crate's types: `__metadata__` and one
/// [`TensorInfo`] per name. Read with a map visitor instead of the crate's `#[serde(flatten)]`
/// helper, which first buffers the whole header as generic values: for a 2,000-tensor checkpoint
/// that was most of the check's time. A name given twice is refused (serde's map would keep the
/// last silently).
struct RawHeader {
    metadata: Option<HashMap<String, String>>,
    tensors: Vec<(String, TensorInfo)>,
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let mut out = RawHeader {
                    metadata: None,
                    tensors: Vec::new(),
                };
                let mut seen = HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(A::Error::custom(format!("the name {key:?} appears twice")));
                    }
                    if key == "__metadata__" {
                        out.metadata = Some(map.next_value()?);
                    } else {
                        let info: TensorInfo = map.next_value()?;
                        out.tensors.push((key, info));
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// Checks a safetensors file of `size` bytes whose start `input` is positioned at.
pub fn check<R: Read + Seek>(input: &mut R, size: u64) -> Result<Header, Refusal> {
    if size < 8 {
        return Err(Refusal::corrupt(format!(
            "the file has {size} bytes, fewer than the 8 of a safetensors length prefix: it is \
             truncated or not a safetensors file. Upload it again."
        )));
    }
    let header_len = util::u64_le(input).map_err(|e| io_refusal(e, "the header length"))?;
    if header_len > MAX_HEADER {
        return Err(Refusal::corrupt(format!(
            "the header claims {header_len} bytes, more than the format's limit of {MAX_HEADER}: \
             this is not a valid safetensors file. Re-export the model with a current safetensors \
             library."
        )));
    }
    if header_len > size - 8 {
        return Err(Refusal::corrupt(format!(
            "the header claims {header_len} bytes but the file has only {} after the length prefix: \
             the file is truncated. Upload it again completely.",
            size - 8
        )));
    }
    let bytes = util::read_exact_vec(input, header_len).map_err(|e| io_refusal(e, "the header"))?;
    let not_valid = |e: &dyn std::fmt::Display| {
        Refusal::corrupt(format!(
            "the header is not a valid safetensors header ({e}). The file is damaged or not \
             safetensors; re-export or upload it again."
        ))
    };
    let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|e| not_valid(&e))?;
    drop(bytes);
    let mut entries = raw.tensors;
    entries.sort_by_key(|(_, info)| info.data_offsets);
    // Metadata::new is the crate's own validation (offsets contiguous from 0, shape x dtype ==
    // byte length), the same that its deserializer runs.
    let metadata = Metadata::new(raw.metadata, entries).map_err(|e| not_valid(&e))?;
    let data_len = metadata.data_len() as u64;
    let expected = 8 + header_len + data_len;
    if expected != size {
        let what = if size < expected {
            format!(
                "the file is truncated: the header describes {expected} bytes but the file has \
                 {size} ({} missing). Upload it again completely.",
                expected - size
            )
        } else {
            format!(
                "the file has {} bytes after the tensors that the header does not describe \
                 ({size} bytes instead of {expected}). Re-export it with a safetensors library.",
                size - expected
            )
        };
        return Err(Refusal::corrupt(what));
    }
    let mut tensors: Vec<Tensor> = metadata
        .offset_keys()
        .into_iter()
        .filter_map(|name| {
            let info = metadata.info(&name)?;
            Some(Tensor {
                dtype: info.dtype.to_string(),
                shape: info.shape.clone(),
                name,
            })
        })
        .collect();
    tensors.shrink_to_fit();
    let (metadata_entries, kept) = match metadata.metadata() {
        None => (0, Vec::new()),
        Some(map) => {
            let mut pairs: Vec<(&String, &String)> = map.iter().collect();
            pairs.sort();
            let kept = pairs
                .into_iter()
                .take(KEPT_METADATA)
                .map(|(k, v)| (k.clone(), v.chars().take(KEPT_VALUE_CHARS).collect()))
                .collect();
            (map.len(), kept)
        }
    };
    Ok(Header {
        header_len,
        data_len,
        tensors,
        metadata_entries,
        metadata: kept,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Reason;
    use std::io::Cursor;

    /// A safetensors file with the given header JSON and `data` bytes of data.
    pub(crate) fn file(header: &str, data: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.resize(v.len() + data, 0);
        v
    }

    fn run(bytes: &[u8]) -> Result<Header, Refusal> {
        check(&mut Cursor::new(bytes), bytes.len() as u64)
    }

    const TWO: &str = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2,2],"data_offsets":[16,24]},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;

    #[test]
    fn a_valid_file_lists_tensors_in_data_order_and_its_metadata() {
        let h = run(&file(TWO, 24)).unwrap();
        assert_eq!(h.data_len, 24);
        let names: Vec<_> = h.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(h.tensors[1].dtype, "F16");
        assert_eq!(h.metadata, [("format".to_owned(), "pt".to_owned())]);
    }

    #[test]
    fn truncated_by_one_byte_is_corrupt() {
        let mut f = file(TWO, 24);
        f.pop();
        let r = run(&f).unwrap_err();
        assert_eq!(r.reason, Reason::Corrupt);
        assert!(r.message.contains("truncated"), "{r}");
    }

    #[test]
    fn trailing_bytes_are_corrupt() {
        let r = run(&file(TWO, 25)).unwrap_err();
        assert_eq!(r.reason, Reason::Corrupt);
    }

    #[test]
    fn header_longer_than_the_file_is_corrupt_before_reading_it() {
        let mut f = 1000u64.to_le_bytes().to_vec();
        f.extend_from_slice(b"{}");
        let r = run(&f).unwrap_err();
        assert!(r.message.contains("truncated"), "{r}");
    }

    #[test]
    fn claimed_header_of_2_pow_63_is_refused_without_allocating() {
        let mut f = (1u64 << 63).to_le_bytes().to_vec();
        f.extend_from_slice(b"{}");
        let r = run(&f).unwrap_err();
        assert!(r.message.contains("limit"), "{r}");
    }

    #[test]
    fn overlapping_offsets_unknown_dtypes_and_wrong_sizes_are_corrupt() {
        // Each header describes 12 bytes of data where its data is valid at all, so the length
        // rule is not what refuses it.
        for h in [
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            r#"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#,
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
            r#"not json"#,
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#,
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            r#"["a"]"#,
            r#"{"__metadata__":{"a":1},"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}"#,
        ] {
            let r = run(&file(h, 12)).unwrap_err();
            assert_eq!(r.reason, Reason::Corrupt, "{h}");
        }
    }

    #[test]
    fn short_files_are_corrupt() {
        for n in 0..8 {
            assert_eq!(run(&vec![0; n]).unwrap_err().reason, Reason::Corrupt);
        }
    }
}
