//! Fuzzes the companion checks (the first byte picks the type): they must answer, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkfarm_formats::companion::CompanionType;
use linkfarm_formats::{check, FileType, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let kind = [
        CompanionType::Png,
        CompanionType::Jpeg,
        CompanionType::Webp,
        CompanionType::Json,
        CompanionType::Yaml,
        CompanionType::Text,
    ][first as usize % 6];
    let _ = check(
        &mut std::io::Cursor::new(rest),
        FileType::Companion(kind),
        &Limits::default(),
    );
});
