//! Hostile input to the config loader: random mutations of valid configs. It must never panic,
//! and every rejection must carry a location and a hint.

use std::path::Path;

use linkfarm_core::parse_config;
use linkfarm_testsupport::Ids;
use proptest::prelude::*;

use crate::common::size;

const BASES: &[&str] = &[
    include_str!("../../../../examples/cw.yaml"),
    include_str!("../../../../examples/forge.yaml"),
    include_str!("../../../../examples/minimal.yaml"),
    include_str!("../../../../examples/demo.yaml"),
    "version: 1\nfarms:\n  - name: a\n    target_dir: /t\n    link_dir: /l\n    entries: [x, {link: y, target: z}]\n    owner: \"alice:staff\"\n    dir_mode: \"0750\"\nsettings: {adopt_after: 1m30s, watcher: poll}\n",
];

const PIECES: &[&str] = &[
    ":",
    " ",
    "\n",
    "-",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "#",
    "&a",
    "*a",
    "!!str ",
    "<<: ",
    "\t",
    "\0",
    "\u{feff}",
    "é",
    "..",
    "/",
    "*",
    "0755",
    "10s",
    "-1",
    "99999999999999999999",
    "~",
    "null",
    "yes",
    "entries",
    "version: 1",
    "farms:",
    "  - name: b",
    "    link_dir: /l",
    "---\n",
    "...\n",
    "? ",
    "|\n",
    ">\n",
];

fn mutate(base: &str, ops: &[(u8, usize, usize)]) -> String {
    let mut s: Vec<char> = base.chars().collect();
    for &(kind, a, b) in ops {
        let at = if s.is_empty() { 0 } else { a % (s.len() + 1) };
        match kind % 4 {
            0 => {
                let p: Vec<char> = PIECES[b % PIECES.len()].chars().collect();
                s.splice(at..at, p);
            }
            1 => {
                let end = (at + b % 8).min(s.len());
                s.drain(at..end);
            }
            2 => {
                // duplicate a stretch (duplicate keys, repeated farms)
                let end = (at + b % 40).min(s.len());
                let dup: Vec<char> = s[at..end].to_vec();
                s.splice(end..end, dup);
            }
            _ => {
                if let Some(c) = s.get_mut(at) {
                    *c = PIECES[b % PIECES.len()].chars().next().unwrap_or(' ');
                }
            }
        }
    }
    s.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: size("LINKFARM_FUZZ_CASES", 3000, 300_000) as u32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn config_loader_never_panics_and_every_error_has_a_location(
        base in 0..BASES.len(),
        ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..8),
    ) {
        let text = mutate(BASES[base], &ops);
        if let Err(e) = parse_config(&text, Path::new("/etc/linkfarm/linkfarm.yaml"), &Ids) {
            prop_assert!(!e.diagnostics.is_empty());
            for d in &e.diagnostics {
                prop_assert!(d.line >= 1 && d.column >= 1, "no location: {e}\n--- input:\n{text}");
                prop_assert!(!d.message.is_empty() && !d.hint.is_empty(), "{e}");
            }
            let shown = e.to_string();
            prop_assert!(shown.starts_with("/etc/linkfarm/linkfarm.yaml:"), "{shown}");
        }
    }
}
