//! The `inboxes:` section (SPEC §10): defaults, every key, and one test per rule, each asserting
//! the line and column in the message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use linkfarm_core::config::parse_size;
use linkfarm_core::inbox::{CheckKind, Folders, InboxFolder, ModelFormat, OnExists};
use linkfarm_core::{parse_config, Config, ConfigError, Owner};

use linkfarm_testsupport::Ids;

const FILE: &str = "/etc/linkfarm/linkfarm.yaml";

fn ok(text: &str) -> Config {
    parse_config(text, Path::new(FILE), &Ids).unwrap_or_else(|e| panic!("refused:\n{text}\n{e}"))
}

#[track_caller]
fn assert_err(text: &str, line: u64, col: u64, needle: &str) {
    let e: ConfigError = match parse_config(text, Path::new(FILE), &Ids) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    };
    let shown = e.to_string();
    assert!(
        e.diagnostics
            .iter()
            .any(|d| d.line == line && d.column == col && d.message.contains(needle)),
        "wanted {line}:{col} `{needle}`, got:\n{shown}"
    );
    assert!(shown.contains("hint: "), "every error says what to do: {shown}");
}

/// A config with one inbox (lines 1-5) and `extra` keys from line 6 on.
fn inbox(extra: &str) -> String {
    format!("version: 1\ninboxes:\n  - name: in\n    dir: /srv/inbox\n    target_dir: /srv/models\n{extra}")
}

#[test]
fn an_inbox_alone_with_every_default() {
    let c = ok(&inbox(""));
    assert!(c.farms.is_empty());
    let i = &c.inboxes[0];
    assert_eq!(i.name, "in");
    assert_eq!(i.dir, PathBuf::from("/srv/inbox"));
    assert_eq!(i.target_dir, PathBuf::from("/srv/models"));
    assert_eq!(i.folders, Folders::All);
    assert_eq!(i.exclude_patterns, [".*", "*.part", "*.tmp", "~$*"]);
    assert_eq!(i.accept, [ModelFormat::Safetensors, ModelFormat::Gguf]);
    assert!(i.companions.is_empty());
    assert_eq!(i.companion_max_size, 20 << 20);
    assert_eq!(i.max_size, 100 << 30);
    assert_eq!(i.settle, Duration::from_secs(10));
    assert_eq!(i.on_exists, OnExists::Refuse);
    assert_eq!(i.check_kind, CheckKind::Warn);
    assert!(i.scanner.is_empty());
    assert_eq!(i.owner, None);
    assert_eq!(i.file_mode, 0o644);
    assert_eq!(i.dir_mode, 0o755);
    assert_eq!(i.refused_dir, PathBuf::from("/srv/inbox/_refused"));
    assert_eq!(i.private_dir(), PathBuf::from("/srv/inbox/.linkfarm-private"));
    assert_eq!(
        c.settings.upload_log,
        PathBuf::from("/var/lib/linkfarm/uploads.jsonl")
    );
}

#[test]
fn every_key_as_written() {
    let c = ok(&(inbox(
        "    folders: [loras, {folder: Stable-diffusion, target: checkpoints}]
    exclude: [\"*.crdownload\"]
    accept: [pickle, safetensors]
    companions: [png, .JPG, json]
    companion_max_size: 1 MiB
    max_size: 2TiB
    settle: 1m30s
    on_exists: rename
    check_kind: refuse
    scanner: [clamdscan, --fdpass, --no-summary, \"{}\"]
    owner: \"alice:staff\"
    file_mode: \"0640\"
    dir_mode: \"0750\"
    refused_dir: ../refused
",
    ) + "settings:\n  upload_log: logs/up.jsonl\n"));
    let i = &c.inboxes[0];
    assert_eq!(
        i.folders,
        Folders::List(vec![
            InboxFolder {
                folder: "loras".into(),
                target: "loras".into()
            },
            InboxFolder {
                folder: "Stable-diffusion".into(),
                target: "checkpoints".into()
            },
        ])
    );
    assert!(i.exclude.is_match("a.crdownload") && !i.exclude.is_match(".hidden"));
    assert_eq!(i.accept, [ModelFormat::Safetensors, ModelFormat::Pickle]);
    assert_eq!(i.companions, ["png", "jpg", "json"]);
    assert_eq!(i.companion_max_size, 1 << 20);
    assert_eq!(i.max_size, 2 << 40);
    assert_eq!(i.settle, Duration::from_secs(90));
    assert_eq!(i.on_exists, OnExists::Rename);
    assert_eq!(i.check_kind, CheckKind::Refuse);
    assert_eq!(i.scanner, ["clamdscan", "--fdpass", "--no-summary", "{}"]);
    assert_eq!(
        i.owner,
        Some(Owner {
            uid: Some(1000),
            gid: Some(100)
        })
    );
    assert_eq!((i.file_mode, i.dir_mode), (0o640, 0o750));
    assert_eq!(i.refused_dir, PathBuf::from("/srv/refused"), "relative to dir");
    assert_eq!(
        c.settings.upload_log,
        PathBuf::from("/etc/linkfarm/logs/up.jsonl")
    );
}

#[test]
fn farms_and_inboxes_side_by_side_on_one_target() {
    let c = ok("version: 1
farms:
  - name: direct
    target_dir: /srv/models
    link_dir: /srv/upload
    entries: \"*\"
inboxes:
  - name: guarded
    dir: /srv/inbox
    target_dir: /srv/models
");
    assert_eq!((c.farms.len(), c.inboxes.len()), (1, 1));
}

#[test]
fn sizes() {
    assert_eq!(parse_size("0"), Ok(0));
    assert_eq!(parse_size("123"), Ok(123));
    assert_eq!(parse_size("4KiB"), Ok(4096));
    assert_eq!(parse_size("20 MiB"), Ok(20 << 20));
    assert_eq!(parse_size("100GiB"), Ok(100 << 30));
    assert_eq!(parse_size("1TiB"), Ok(1 << 40));
    assert!(parse_size("10GB").unwrap_err().contains("ambiguous"));
    assert!(parse_size("1.5GiB").is_err());
    assert!(parse_size("GiB").is_err());
    assert!(parse_size("20000000TiB").unwrap_err().contains("too large"));
    assert_eq!(ok(&inbox("    max_size: 1048576\n")).inboxes[0].max_size, 1 << 20);
}

#[test]
fn bad_values_are_located() {
    assert_err(&inbox("    max_size: 10GB\n"), 6, 15, "ambiguous");
    assert_err(&inbox("    max_size: 0\n"), 6, 15, "is 0");
    assert_err(&inbox("    companion_max_size: lots\n"), 6, 25, "not a size");
    assert_err(&inbox("    settle: 10\n"), 6, 13, "needs a unit");
    assert_err(&inbox("    on_exists: overwrite\n"), 6, 16, "unknown variant");
    assert_err(&inbox("    check_kind: maybe\n"), 6, 17, "unknown variant");
    assert_err(&inbox("    colour: red\n"), 6, 5, "unknown field `colour`");
    assert_err(&inbox("    file_mode: 0644\n"), 6, 16, "ambiguous");
    assert_err(&inbox("    dir_mode: \"9\"\n"), 6, 15, "not an octal mode");
    assert_err(&inbox("    owner: \"bob\"\n"), 6, 12, "user `bob` does not exist");
    assert_err(&inbox("    folders: \"all\"\n"), 6, 14, "not understood");
    assert_err(&inbox("    folders: []\n"), 6, 14, "empty");
    assert_err(
        &inbox("    folders: [a, ../b]\n"),
        6,
        18,
        "not a single folder name",
    );
    assert_err(&inbox("    folders: [a, a]\n"), 6, 18, "listed twice");
    assert_err(&inbox("    exclude: [\"a[\"]\n"), 6, 15, "bad exclude pattern");
    assert_err(
        &(inbox("") + "settings:\n  upload_log: \"\"\n"),
        7,
        15,
        "`upload_log` is empty",
    );
}

#[test]
fn an_unknown_accept_format_is_an_error() {
    assert_err(
        &inbox("    accept: [safetensors, onnx]\n"),
        6,
        27,
        "unknown format `onnx`",
    );
    assert_err(&inbox("    accept: []\n"), 6, 13, "`accept` is empty");
}

#[test]
fn a_companion_that_cannot_be_checked_is_an_error() {
    assert_err(
        &inbox("    companions: [png, exe]\n"),
        6,
        23,
        "`exe` is not a companion type",
    );
    assert_err(
        &inbox("    companions: [safetensors]\n"),
        6,
        18,
        "not a companion type",
    );
}

#[test]
fn file_mode_never_gives_exec_setuid_or_setgid() {
    for m in ["0755", "4644", "2644", "0645", "1644"] {
        assert_err(
            &inbox(&format!("    file_mode: \"{m}\"\n")),
            6,
            16,
            "exec, setuid, setgid",
        );
    }
}

#[test]
fn the_scanner_must_be_given_the_file() {
    assert_err(
        &inbox("    scanner: [clamdscan, --fdpass]\n"),
        6,
        14,
        "never given the file",
    );
    assert_err(&inbox("    scanner: [\"\", \"{}\"]\n"), 6, 15, "program is empty");
    ok(&inbox("    scanner: [clamdscan, \"-\"]\n"));
    ok(&inbox("    scanner: [scan, \"--file={}\"]\n"));
    ok(&inbox("    scanner: []\n"));
}

#[test]
fn dir_inside_target_dir_or_the_reverse() {
    let t = "version: 1\ninboxes:\n  - name: in\n    dir: /srv/models/inbox\n    target_dir: /srv/models\n";
    assert_err(t, 4, 10, "inside one another");
    let t = "version: 1\ninboxes:\n  - name: in\n    dir: /srv\n    target_dir: /srv/models\n";
    assert_err(t, 4, 10, "inside one another");
}

#[test]
fn an_inbox_named_like_a_farm_or_another_inbox() {
    let farm = "version: 1\nfarms:\n  - name: in\n    target_dir: /t\n    link_dir: /l\n    entries: [a]\n";
    assert_err(
        &format!("{farm}inboxes:\n  - name: in\n    dir: /srv/inbox\n    target_dir: /srv/models\n"),
        8,
        5,
        "named like farm `in`",
    );
    let two = inbox("  - name: in\n    dir: /srv/inbox2\n    target_dir: /srv/models\n");
    assert_err(&two, 6, 5, "duplicate inbox name `in` (first at line 3)");
}

#[test]
fn inbox_dirs_do_not_overlap_other_directories() {
    let two = inbox("  - name: in2\n    dir: /srv/inbox/sub\n    target_dir: /srv/other\n");
    assert_err(&two, 6, 5, "overlaps the dir of inbox `in`");
    let farm =
        "version: 1\nfarms:\n  - name: f\n    target_dir: /t\n    link_dir: /srv/up\n    entries: [a]\n";
    assert_err(
        &format!("{farm}inboxes:\n  - name: in\n    dir: /srv/up\n    target_dir: /srv/models\n"),
        8,
        5,
        "overlaps the link_dir of farm `f`",
    );
}

#[test]
fn refused_dir_stays_out_of_folders_and_models() {
    assert_err(&inbox("    refused_dir: ../models/refused\n"), 6, 18, "overlaps");
    assert_err(&inbox("    refused_dir: .\n"), 6, 18, "overlaps");
    assert_err(
        &inbox("    folders: [loras]\n    refused_dir: loras/no\n"),
        7,
        18,
        "overlaps",
    );
    ok(&inbox("    folders: [loras]\n    refused_dir: /srv/refused\n"));
}

#[test]
fn a_config_needs_farms_or_inboxes() {
    assert_err("version: 1\n", 1, 1, "missing `farms`");
    assert_err(
        "version: 1\nfarms: []\ninboxes: []\n",
        3,
        10,
        "`inboxes` is empty",
    );
    ok(&("version: 1\nfarms: []\n".to_owned() + &inbox("")[11..]));
}

#[test]
fn reserved_names_are_ignored_whatever_exclude_says() {
    let c = ok(&inbox("    exclude: []\n"));
    let i = &c.inboxes[0];
    assert!(i.ignores(".linkfarm-private".as_ref()));
    assert!(i.ignores(".linkfarm-tmp.x".as_ref()));
    assert!(
        !i.ignores(".hidden".as_ref()),
        "exclude: [] lets dot files through"
    );
    assert!(ok(&inbox("")).inboxes[0].ignores("a.safetensors.part".as_ref()));
}
