//! One test per validation rule of SPEC §1, each asserting the line and column in the message.

use std::path::Path;

use linkfarm_core::{parse_config, ConfigError};

use linkfarm_testsupport::Ids;

const FILE: &str = "/etc/linkfarm/linkfarm.yaml";

fn err(text: &str) -> ConfigError {
    match parse_config(text, Path::new(FILE), &Ids) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts that the error has a diagnostic at `line:col` whose message contains `needle`.
#[track_caller]
fn assert_err(text: &str, line: u64, col: u64, needle: &str) {
    let e = err(text);
    let shown = e.to_string();
    assert!(
        e.diagnostics
            .iter()
            .any(|d| d.line == line && d.column == col && d.message.contains(needle)),
        "wanted {line}:{col} `{needle}`, got:\n{shown}"
    );
    assert!(shown.contains(&format!("{FILE}:{line}:{col}: ")), "{shown}");
    assert!(shown.contains("hint: "), "every error says what to do: {shown}");
}

fn farm(extra: &str) -> String {
    format!(
        "version: 1\nfarms:\n  - name: m\n    target_dir: /t\n    link_dir: /l\n    entries: [a, b]\n{extra}"
    )
}

#[test]
fn valid_farm_is_accepted() {
    parse_config(&farm(""), Path::new(FILE), &Ids).unwrap();
}

#[test]
fn unknown_key() {
    assert_err(&farm("    colour: red\n"), 7, 5, "unknown field `colour`");
    assert_err("version: 1\nfarm: []\n", 2, 1, "unknown field `farm`");
    assert_err(
        &(farm("") + "settings:\n  adopt_afterr: 10s\n"),
        8,
        3,
        "unknown field `adopt_afterr`",
    );
}

#[test]
fn duplicate_key() {
    assert_err(&farm("    prune: true\n    prune: false\n"), 8, 5, "duplicate");
}

#[test]
fn missing_version() {
    assert_err("farms: []\n", 1, 1, "missing `version`");
}

#[test]
fn unknown_version() {
    assert_err(
        &farm("").replace("version: 1", "version: 2"),
        1,
        10,
        "unknown version 2",
    );
}

#[test]
fn duplicate_farm_names() {
    let t = farm("") + "  - name: m\n    target_dir: /t2\n    link_dir: /l2\n    entries: [a]\n";
    assert_err(&t, 7, 5, "duplicate farm name `m` (first at line 3)");
}

#[test]
fn bad_farm_name() {
    assert_err(&farm("").replace("name: m", "name: -x"), 3, 11, "farm name `-x`");
    assert_err(&farm("").replace("name: m", "name: a/b"), 3, 11, "farm name");
}

#[test]
fn bad_entry_names() {
    for bad in ["\"\"", "\".\"", "\"..\"", "a/b", "\"a\\0b\""] {
        let t = format!("version: 1\nfarms:\n  - name: m\n    target_dir: /t\n    link_dir: /l\n    entries:\n      - {bad}\n");
        assert_err(&t, 7, 9, "is not a single folder name");
    }
    let t = "version: 1\nfarms:\n  - name: m\n    target_dir: /t\n    link_dir: /l\n    entries:\n      - { link: ok, target: ../etc }\n";
    assert_err(t, 7, 9, "target name `../etc`");
}

#[test]
fn duplicate_link_names() {
    let t = "version: 1\nfarms:\n  - name: m\n    target_dir: /t\n    link_dir: /l\n    entries:\n      - a\n      - { link: a, target: b }\n";
    assert_err(t, 8, 9, "link `a` is listed twice (first at line 7)");
}

#[test]
fn two_farms_share_a_link_path() {
    let t = farm("") + "  - name: n\n    target_dir: /t2\n    link_dir: /l\n    entries: [b]\n";
    assert_err(&t, 7, 5, "both manage link /l/b");
    let star = farm("") + "  - name: n\n    target_dir: /t2\n    link_dir: /l\n    entries: \"*\"\n";
    assert_err(&star, 7, 5, "share link_dir /l");
    let nested = farm("") + "  - name: n\n    target_dir: /t2\n    link_dir: /l/a/sub\n    entries: [x]\n";
    let shared = farm("") + "  - name: n\n    target_dir: /t\n    link_dir: /l\n    entries: [c, d]\n";
    let c = parse_config(&shared, Path::new(FILE), &Ids).expect("distinct names on one link_dir");
    let names = |i: usize| c.farms[i].neighbours.iter().cloned().collect::<Vec<_>>();
    assert_eq!(names(0), ["c", "d"], "farm m leaves n's links alone");
    assert_eq!(names(1), ["a", "b"], "and n leaves m's");
    assert_err(&nested, 7, 5, "lies inside a link of farm `m`");
}

#[test]
fn link_dir_and_target_dir_nested() {
    assert_err(
        &farm("").replace("link_dir: /l", "link_dir: /t/up"),
        5,
        15,
        "inside one another",
    );
    assert_err(
        &farm("").replace("target_dir: /t", "target_dir: /l/models"),
        5,
        15,
        "inside one another",
    );
}

#[test]
fn unparsable_durations() {
    assert_err(
        &(farm("") + "settings:\n  adopt_after: 10\n"),
        8,
        16,
        "needs a unit",
    );
    assert_err(
        &(farm("") + "settings:\n  resync_interval: soon\n"),
        8,
        20,
        "not a duration",
    );
    assert_err(
        &(farm("") + "settings:\n  poll_interval: 5y\n"),
        8,
        18,
        "unknown unit",
    );
}

#[test]
fn unparsable_modes() {
    assert_err(&farm("    dir_mode: 0755\n"), 7, 15, "ambiguous");
    assert_err(&farm("    dir_mode: \"0799\"\n"), 7, 15, "not an octal mode");
}

#[test]
fn unknown_owner() {
    assert_err(
        &farm("    owner: \"bob:staff\"\n"),
        7,
        12,
        "user `bob` does not exist",
    );
    assert_err(
        &farm("    owner: \"alice:wheel\"\n"),
        7,
        12,
        "group `wheel` does not exist",
    );
}

#[test]
fn unknown_enum_value() {
    assert_err(
        &farm("    on_conflict: explode\n"),
        7,
        18,
        "unknown variant `explode`",
    );
    assert_err(&farm("    link_style: sideways\n"), 7, 17, "unknown variant");
}

#[test]
fn entries_string_must_be_star() {
    assert_err(
        &farm("").replace("entries: [a, b]", "entries: all"),
        6,
        14,
        "not understood",
    );
}

#[test]
fn exclude_needs_star() {
    assert_err(&farm("    exclude: [\".*\"]\n"), 7, 14, "only applies");
}

#[test]
fn bad_exclude_glob() {
    let t = farm("").replace("entries: [a, b]", "entries: \"*\"\n    exclude: [\"a[\"]");
    assert_err(&t, 7, 15, "bad exclude pattern");
}

#[test]
fn syntax_error_has_location() {
    assert_err("version: 1\nfarms: [\n", 2, 8, "unclosed");
}

#[test]
fn all_problems_are_reported_at_once() {
    let e = err(&farm("    owner: \"bob\"\n    dir_mode: \"9\"\n"));
    assert_eq!(e.diagnostics.len(), 2, "{e}");
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let t = "version: 1\nfarms:\n  - name: m\n    target_dir: ../models\n    link_dir: ./up\n    entries: [a]\nsettings:\n  state_file: run/state.json\n";
    let c = parse_config(t, Path::new("/srv/conf/lf.yaml"), &Ids).unwrap();
    assert_eq!(c.farms[0].target_dir, Path::new("/srv/models"));
    assert_eq!(c.farms[0].link_dir, Path::new("/srv/conf/up"));
    assert_eq!(c.settings.state_file, Path::new("/srv/conf/run/state.json"));
}

#[test]
fn metrics_file_is_off_by_default_and_relative_to_the_file() {
    let c = parse_config(&farm(""), Path::new(FILE), &Ids).unwrap();
    assert_eq!(c.settings.metrics_file, None);
    let t = farm("") + "settings:\n  metrics_file: prom/linkfarm.prom\n";
    let c = parse_config(&t, Path::new("/srv/conf/lf.yaml"), &Ids).unwrap();
    assert_eq!(
        c.settings.metrics_file.as_deref(),
        Some(Path::new("/srv/conf/prom/linkfarm.prom"))
    );
}

#[test]
fn metrics_file_not_ending_in_prom() {
    // node exporter would never read it, and say nothing.
    let t = farm("") + "settings:\n  metrics_file: /var/lib/prometheus/node-exporter/linkfarm.txt\n";
    assert_err(&t, 8, 17, "does not end in .prom");
    assert_err(
        &(farm("") + "settings:\n  metrics_file: \"\"\n"),
        8,
        17,
        "does not end in .prom",
    );
}
