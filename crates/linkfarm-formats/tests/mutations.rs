//! Mutations of valid files, in every CI run (cargo-fuzz needs nightly; this does not): random
//! byte changes, insertions and truncations of a torch zip, a bare pickle, a GGUF file and a
//! safetensors file must each get an answer (a verdict or a corrupt/unsafe refusal), never a
//! panic and never an I/O "try again".

use std::io::Cursor;

use linkfarm_formats::{check, FileType, Limits, Reason};
use proptest::prelude::*;

mod common;
use common::{gguf_file, stored_zip, torch_pickle};

fn seeds() -> Vec<(FileType, Vec<u8>)> {
    let header = r#"{"__metadata__":{"format":"pt"},"lora_unet_a.lora_down.weight":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"lora_unet_a.alpha":{"dtype":"F32","shape":[],"data_offsets":[8,12]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend(header.as_bytes());
    st.resize(st.len() + 12, 1);
    vec![
        (
            FileType::Pickle,
            stored_zip(&[
                ("archive/data.pkl", &torch_pickle("collections", "OrderedDict")),
                ("archive/data/0", &[0; 8]),
                ("archive/version", b"3\n"),
            ]),
        ),
        (
            FileType::Pickle,
            torch_pickle("torch._utils", "_rebuild_tensor_v2"),
        ),
        (FileType::Gguf, gguf_file(3, 32, 16)),
        (FileType::Safetensors, st),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]
    #[test]
    fn mutated_files_get_an_answer(seed in 0usize..4, edits in proptest::collection::vec(edit(), 1..6)) {
        let (ft, mut bytes) = seeds().swap_remove(seed);
        for e in edits {
            let n = bytes.len().max(1);
            match e {
                Edit::Set(i, b) => { if !bytes.is_empty() { bytes[i % n] = b; } }
                Edit::Insert(i, v) => { let i = i % (bytes.len() + 1); bytes.splice(i..i, v); }
                Edit::Truncate(i) => bytes.truncate(i % n),
            }
        }
        if let Err(r) = check(&mut Cursor::new(&bytes), ft, &Limits::default()) {
            prop_assert_ne!(r.reason, Reason::Io, "{}", r);
        }
    }
}
