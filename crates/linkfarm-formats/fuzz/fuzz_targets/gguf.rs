//! Fuzzes the gguf check through the crate's entry point: it must answer (a verdict or a
//! refusal), never panic, never hang, never allocate by a claimed length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkfarm_formats::{check, FileType, Limits};

fuzz_target!(|data: &[u8]| {
    let _ = check(
        &mut std::io::Cursor::new(data),
        FileType::Gguf,
        &Limits::default(),
    );
});
