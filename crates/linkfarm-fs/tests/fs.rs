//! The filesystem layer against real directories and real syscalls: every row of SPEC §2 on disk,
//! and a hostile test for each safety rule of SPEC §3–§4. Races are made deterministic with the
//! hook that runs between planning and applying.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use common::*;
use linkfarm_core::{FarmState, Op};
use linkfarm_fs::{FarmFs, Mode, Outcome};

#[test]
fn empty_link_dir_converges_and_a_second_pass_makes_no_writes() {
    let t = Tree::new(&["checkpoints", "loras", "vae"]);
    let mut f = farm_fs(t.farm("[checkpoints, loras, vae]", ""));
    let r = apply(&mut f, SETTLED);
    assert_eq!(r.results.len(), 3);
    assert!(r.writes >= 3);
    for n in ["checkpoints", "loras", "vae"] {
        assert_eq!(link_text(&t.l(n)).unwrap(), t.t(n));
    }
    let again = apply(&mut f, SETTLED);
    assert!(again.results.is_empty());
    assert_eq!(again.writes, 0, "a converged pass makes no write syscall");
    assert_eq!(again.plan.state, FarmState::Converged);
}

#[test]
fn deleted_wrong_and_foreign_links_are_repaired() {
    let t = Tree::new(&["a", "b", "c"]);
    let mut f = farm_fs(t.farm("[a, b, c]", ""));
    t.link("b", t.t("a"));
    t.link("c", "/etc");
    let r = apply(&mut f, SETTLED);
    let ops: Vec<_> = r.results.iter().map(|x| x.action.op.name()).collect();
    assert_eq!(ops, ["create", "replace", "replace"]);
    // The replace reports the text of the link that came out.
    assert!(matches!(&r.results[2].outcome, Outcome::Done(Some(p)) if p == Path::new("/etc")));
    assert_eq!(link_text(&t.l("b")).unwrap(), t.t("b"));
    assert_eq!(link_text(&t.l("c")).unwrap(), t.t("c"));
    assert_converged(&mut f);
}

#[test]
fn relative_links_resolve_to_the_target() {
    let t = Tree::new(&["vae"]);
    let mut f = farm_fs(t.farm("[vae]", "    link_style: relative\n"));
    apply(&mut f, SETTLED);
    assert_eq!(link_text(&t.l("vae")).unwrap(), Path::new("../models/vae"));
    assert!(t.l("vae").join(".").is_dir());
}

#[test]
fn star_entries_follow_the_target_dir_and_prune() {
    let t = Tree::new(&["a", "b", ".hidden"]);
    let mut f = farm_fs(t.farm("\"*\"", ""));
    apply(&mut f, SETTLED);
    assert!(t.l("a").is_symlink() && t.l("b").is_symlink() && !t.l(".hidden").exists());
    fs::rename(t.t("b"), t.t("b2")).unwrap();
    apply(&mut f, SETTLED);
    assert!(!t.l("b").is_symlink(), "the link of the renamed target is pruned");
    assert_eq!(link_text(&t.l("b2")).unwrap(), t.t("b2"));
    assert_converged(&mut f);
}

#[test]
fn unusual_names_are_handled_as_bytes() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let t = Tree::new(&[]);
    let long = "x".repeat(255);
    let names: Vec<&OsStr> = vec![
        OsStr::new("new\nline"),
        OsStr::from_bytes(b"latin1-\xe9"),
        OsStr::new(&long),
        OsStr::new(" spaced "),
    ];
    for n in &names {
        fs::create_dir(t.root().join("models").join(n)).unwrap();
    }
    let mut f = farm_fs(t.farm("\"*\"", ""));
    apply(&mut f, SETTLED);
    for n in &names {
        let p = t.root().join("up").join(n);
        assert_eq!(fs::read_link(&p).unwrap(), t.root().join("models").join(n));
    }
    // A 255-byte name still gets a valid temp name when it must be replaced.
    let p = t.root().join("up").join(&long);
    fs::remove_file(&p).unwrap();
    symlink("/elsewhere", &p).unwrap();
    apply(&mut f, SETTLED);
    assert_eq!(fs::read_link(&p).unwrap(), t.root().join("models").join(&long));
    assert_converged(&mut f);
}

#[test]
fn pruning_removes_managed_links_only() {
    let t = Tree::new(&["a", "b"]);
    let mut f = farm_fs(t.farm("[a]", ""));
    t.link("old", t.t("b"));
    t.link("mine", "/usr");
    t.write(&t.l("notes.txt"), "keep me");
    fs::create_dir(t.l("folder")).unwrap();
    apply(&mut f, SETTLED);
    assert!(!t.l("old").exists() && !t.l("old").is_symlink());
    assert_eq!(link_text(&t.l("mine")).unwrap(), Path::new("/usr"));
    assert_eq!(fs::read_to_string(t.l("notes.txt")).unwrap(), "keep me");
    assert!(t.l("folder").is_dir());
}

#[test]
fn dangling_link_is_removed_when_its_target_goes() {
    let t = Tree::new(&["a", "b"]);
    let mut f = farm_fs(t.farm("[a, b]", ""));
    apply(&mut f, SETTLED);
    fs::remove_dir(t.t("b")).unwrap();
    let r = apply(&mut f, SETTLED);
    assert_eq!(r.results[0].action.op.name(), "remove");
    assert!(!t.l("b").is_symlink());
    let c = check(&mut f, SETTLED);
    assert_eq!(c.plan.state, FarmState::Drift, "a missing target is reported");
    assert!(c.plan.actions.is_empty());
}

#[test]
fn create_targets_makes_the_folder_with_the_exact_mode() {
    let t = Tree::new(&[]);
    let mut f = farm_fs(t.farm("[clip]", "    create_targets: true\n    dir_mode: \"0750\"\n"));
    apply(&mut f, SETTLED);
    let mode = fs::metadata(t.t("clip")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750);
    assert!(t.l("clip").is_symlink());
}

#[test]
fn missing_link_dir_is_created_when_its_parent_exists() {
    let t = Tree::new(&["a"]);
    fs::remove_dir(t.root().join("up")).unwrap();
    let mut f = farm_fs(t.farm("[a]", "    dir_mode: \"0711\"\n"));
    apply(&mut f, SETTLED);
    let mode = fs::metadata(t.root().join("up")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o711);
    assert!(t.l("a").is_symlink());
}

#[test]
fn degraded_farm_changes_nothing_in_link_dir() {
    let t = Tree::new(&["a", "b"]);
    let mut f = farm_fs(t.farm("[a, b]", ""));
    apply(&mut f, SETTLED);
    fs::rename(t.root().join("models"), t.root().join("models.away")).unwrap();
    fs::remove_file(t.l("a")).unwrap();
    let r = apply(&mut f, SETTLED);
    assert_eq!(r.plan.state, FarmState::Degraded);
    assert_eq!(r.writes, 0);
    assert!(
        t.l("b").is_symlink(),
        "the dangling link stays while the volume is away"
    );
    assert!(!t.l("a").is_symlink(), "and nothing is created");
    fs::rename(t.root().join("models.away"), t.root().join("models")).unwrap();
    apply(&mut f, SETTLED);
    assert_converged(&mut f);
}

#[test]
fn leftover_temp_links_are_removed_but_other_temp_names_are_not() {
    let t = Tree::new(&["a"]);
    let mut f = farm_fs(t.farm("[a]", ""));
    t.link(".linkfarm-tmp.a.99999", t.t("a"));
    t.write(&t.l(".linkfarm-tmp.b.1"), "a user file with an unlucky name");
    apply(&mut f, SETTLED);
    assert!(!t.l(".linkfarm-tmp.a.99999").is_symlink());
    assert!(t.l(".linkfarm-tmp.b.1").is_file());
}

// ---- SPEC §3: conflicts and the no-data-loss rule -------------------------------------------

#[test]
fn client_made_folder_is_adopted_and_the_link_restored() {
    let t = Tree::new(&["loras"]);
    let mut f = farm_fs(t.farm("[loras]", ""));
    t.write(&t.l("loras/style.safetensors"), "weights");
    t.write(&t.l("loras/sub/more.safetensors"), "more weights");
    let c = check(&mut f, SETTLED);
    let ops: Vec<_> = c.plan.actions.iter().map(|a| a.to_string()).collect();
    assert_eq!(ops.len(), 3, "{ops:?}");
    apply(&mut f, SETTLED);
    assert_eq!(
        fs::read_to_string(t.t("loras/style.safetensors")).unwrap(),
        "weights"
    );
    assert_eq!(
        fs::read_to_string(t.t("loras/sub/more.safetensors")).unwrap(),
        "more weights"
    );
    assert_eq!(link_text(&t.l("loras")).unwrap(), t.t("loras"));
    assert_converged(&mut f);
}

#[test]
fn unsettled_upload_is_not_moved() {
    let t = Tree::new(&["loras"]);
    let mut f = farm_fs(t.farm("[loras]", ""));
    t.write(&t.l("loras/uploading.part"), "half");
    let r = apply(&mut f, LONG);
    assert!(r.results.is_empty());
    assert!(
        r.plan.recheck_at.is_some(),
        "an unsettled entry schedules its own look"
    );
    assert!(t.l("loras/uploading.part").is_file());
}

#[test]
fn adoption_clash_goes_to_quarantine_and_overwrites_nothing() {
    let t = Tree::new(&["vae"]);
    let mut f = farm_fs(t.farm("[vae]", ""));
    t.write(&t.t("vae/model.pt"), "original");
    t.write(&t.l("vae/model.pt"), "client copy");
    let before = inventory(t.root());
    apply(&mut f, SETTLED);
    assert_eq!(fs::read_to_string(t.t("vae/model.pt")).unwrap(), "original");
    let q = t.root().join(".linkfarm-quarantine/m");
    let moved: Vec<_> = fs::read_dir(&q).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(
        fs::read_to_string(moved[0].join("model.pt")).unwrap(),
        "client copy"
    );
    assert_eq!(inventory(t.root()), before);
    assert_converged(&mut f);
}

#[test]
fn adopted_symlink_to_an_outside_file_is_moved_as_a_link() {
    let t = Tree::new(&["loras"]);
    let outside = test_dir();
    let secret = outside.path().join("shadow");
    fs::write(&secret, "outside").unwrap();
    let mut f = farm_fs(t.farm("[loras]", ""));
    fs::create_dir(t.l("loras")).unwrap();
    symlink(&secret, t.l("loras/evil")).unwrap();
    apply(&mut f, SETTLED);
    let moved = t.t("loras/evil");
    assert!(moved.is_symlink(), "moved as a link");
    assert_eq!(fs::read_link(&moved).unwrap(), secret);
    assert_eq!(fs::read_to_string(&secret).unwrap(), "outside");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
}

#[test]
fn quarantine_policy_moves_the_whole_folder() {
    let t = Tree::new(&["vae"]);
    let mut f = farm_fs(t.farm("[vae]", "    on_conflict: quarantine\n"));
    t.write(&t.l("vae/a.bin"), "A");
    let before = inventory(t.root());
    apply(&mut f, SETTLED);
    assert!(t.l("vae").is_symlink());
    assert_eq!(inventory(t.root()), before);
    assert!(!t.t("vae/a.bin").exists(), "quarantine does not adopt");
}

#[test]
fn keep_policy_moves_nothing_and_reports_a_conflict() {
    let t = Tree::new(&["vae"]);
    let mut f = farm_fs(t.farm("[vae]", "    on_conflict: keep\n"));
    t.write(&t.l("vae/a.bin"), "A");
    let r = apply(&mut f, SETTLED);
    assert_eq!(r.plan.state, FarmState::Conflict);
    assert_eq!(r.writes, 0);
    assert_eq!(fs::read_to_string(t.l("vae/a.bin")).unwrap(), "A");
}

#[test]
fn regular_file_at_a_link_path_is_quarantined() {
    let t = Tree::new(&["vae"]);
    let mut f = farm_fs(t.farm("[vae]", ""));
    t.write(&t.l("vae"), "not a folder");
    let before = inventory(t.root());
    apply(&mut f, SETTLED);
    assert!(t.l("vae").is_symlink());
    assert_eq!(inventory(t.root()), before);
}

#[test]
fn fifo_at_a_link_path_is_quarantined_without_opening_it() {
    let t = Tree::new(&["vae"]);
    let mut f = farm_fs(t.farm("[vae]", ""));
    nix::unistd::mkfifo(&t.l("vae"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    apply(&mut f, SETTLED);
    assert!(t.l("vae").is_symlink());
}

// ---- SPEC §4: hostile trees and races ----------------------------------------------------------

#[test]
fn symlinked_link_dir_is_refused_and_nothing_is_written_through_it() {
    let t = Tree::new(&["a"]);
    let etc_like = test_dir();
    fs::write(etc_like.path().join("passwd"), "root:x:0:0").unwrap();
    fs::remove_dir(t.root().join("up")).unwrap();
    symlink(etc_like.path(), t.root().join("up")).unwrap();
    let mut f = farm_fs(t.farm("[a, passwd]", "    create_targets: true\n"));
    let r = apply(&mut f, SETTLED);
    assert_eq!(r.plan.state, FarmState::Error);
    assert_eq!(r.writes, 0);
    assert_eq!(fs::read_dir(etc_like.path()).unwrap().count(), 1);
    assert_eq!(
        fs::read_to_string(etc_like.path().join("passwd")).unwrap(),
        "root:x:0:0"
    );
}

#[test]
fn link_dir_swapped_for_a_symlink_between_observe_and_apply_is_refused() {
    let t = Tree::new(&["a", "b"]);
    let etc_like = test_dir();
    let mut f = farm_fs(t.farm("[a, b]", ""));
    let up = t.root().join("up");
    let r = f.pass_with_hook(SETTLED, now(), Mode::Apply, |_| {
        fs::rename(&up, t.root().join("up.real")).unwrap();
        symlink(etc_like.path(), &up).unwrap();
    });
    assert!(
        r.results.iter().all(|x| matches!(x.outcome, Outcome::Failed(_))),
        "{r:#?}"
    );
    assert_eq!(
        fs::read_dir(etc_like.path()).unwrap().count(),
        0,
        "nothing written through the swap"
    );
}

/// A farm with `link_dir` at `share/user/up`, converged; then someone replaces `share/user` by a
/// symlink to a directory they control (returned, with an empty `up` in it).
fn converged_then_component_swapped(t: &Tree, entries: &str) -> (FarmFs, tempfile::TempDir) {
    let deep = t.root().join("share/user");
    fs::create_dir_all(&deep).unwrap();
    let text = format!(
        "version: 1\nfarms:\n  - name: m\n    target_dir: models\n    link_dir: share/user/up\n    entries: {entries}\n"
    );
    let farm = linkfarm_core::parse_config(&text, &t.root().join("c.yaml"), &NoIds)
        .unwrap()
        .farms
        .remove(0);
    let mut f = farm_fs(farm);
    apply(&mut f, SETTLED);
    let evil = test_dir();
    fs::create_dir(evil.path().join("up")).unwrap();
    fs::rename(&deep, t.root().join("share/user.moved")).unwrap();
    symlink(evil.path(), &deep).unwrap();
    (f, evil)
}

#[test]
fn a_path_component_turning_into_a_symlink_after_start_up_is_refused() {
    let t = Tree::new(&["a"]);
    let (mut f, evil) = converged_then_component_swapped(&t, "[a]");
    let r = apply(&mut f, SETTLED);
    assert_eq!(r.plan.state, FarmState::Error, "{:#?}", r.plan);
    assert_eq!(fs::read_dir(evil.path().join("up")).unwrap().count(), 0);
}

/// The spot pass reads link_dir through a plain path open (reads only); the writes that follow
/// must still refuse a path whose component turned into a symlink, for a name planned from the
/// disk (`plan_names`) as for one planned as deleted (`plan_absent`).
#[test]
fn spot_pass_through_a_path_component_turned_symlink_writes_nothing() {
    let t = Tree::new(&["a", "b"]);
    let (mut f, evil) = converged_then_component_swapped(&t, "[a, b]");
    let names: std::collections::BTreeSet<std::ffi::OsString> = ["a".into(), "b".into()].into();
    let seen = f
        .plan_names(&names, SETTLED, now())
        .expect("a full plan came first");
    assert_eq!(
        seen.actions.len(),
        2,
        "through the symlink both links look missing: {seen:#?}"
    );
    let absent = f.plan_absent(&names, SETTLED, now()).unwrap();
    for plan in [seen, absent] {
        let (results, writes) = f.apply(&plan.actions);
        assert!(
            results.iter().all(|r| matches!(r.outcome, Outcome::Failed(_))),
            "{results:#?}"
        );
        assert_eq!(writes, 0);
    }
    assert_eq!(fs::read_dir(evil.path().join("up")).unwrap().count(), 0);
}

#[test]
fn wrong_link_that_becomes_an_uploaded_file_before_the_replace_survives() {
    let t = Tree::new(&["a", "b"]);
    let mut f = farm_fs(t.farm("[a, b]", ""));
    t.link("b", t.t("a"));
    let target = t.l("b");
    let r = f.pass_with_hook(SETTLED, now(), Mode::Apply, |plan| {
        assert!(matches!(plan.actions[1].op, Op::Replace { .. }));
        fs::remove_file(&target).unwrap();
        fs::write(&target, "fresh upload").unwrap();
    });
    assert!(matches!(r.results[1].outcome, Outcome::Raced(_)), "{r:#?}");
    assert_eq!(fs::read_to_string(t.l("b")).unwrap(), "fresh upload");
    let leftovers: Vec<_> = fs::read_dir(t.root().join("up"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".linkfarm-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The next pass handles the file as the conflict it now is, and loses nothing.
    let before = inventory(t.root());
    apply(&mut f, SETTLED);
    assert_eq!(inventory(t.root()), before);
    assert_converged(&mut f);
}

#[test]
fn stale_link_that_becomes_a_folder_before_the_prune_survives() {
    let t = Tree::new(&["a", "b"]);
    let mut f = farm_fs(t.farm("[a]", ""));
    t.link("old", t.t("b"));
    let p = t.l("old");
    let r = f.pass_with_hook(SETTLED, now(), Mode::Apply, |plan| {
        assert!(plan.actions.iter().any(|a| a.op.name() == "remove"));
        fs::remove_file(&p).unwrap();
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inside.bin"), "data").unwrap();
    });
    assert!(
        r.results.iter().any(|x| matches!(x.outcome, Outcome::Raced(_))),
        "{r:#?}"
    );
    assert_eq!(fs::read_to_string(t.l("old/inside.bin")).unwrap(), "data");
    apply(&mut f, SETTLED);
    assert_eq!(
        fs::read_to_string(t.l("old/inside.bin")).unwrap(),
        "data",
        "undesired folders are left alone"
    );
}

#[test]
fn dangling_link_that_becomes_a_file_before_removal_survives() {
    let t = Tree::new(&["a"]);
    let mut f = farm_fs(t.farm("[a, b]", ""));
    t.link("b", t.t("b"));
    let p = t.l("b");
    f.pass_with_hook(SETTLED, now(), Mode::Apply, |_| {
        fs::remove_file(&p).unwrap();
        fs::write(&p, "upload").unwrap();
    });
    assert_eq!(fs::read_to_string(&p).unwrap(), "upload");
}

#[test]
fn file_added_to_an_adopted_folder_during_the_pass_is_kept() {
    let t = Tree::new(&["loras"]);
    let mut f = farm_fs(t.farm("[loras]", ""));
    t.write(&t.l("loras/first"), "1");
    let late = t.l("loras/late");
    let r = f.pass_with_hook(SETTLED, now(), Mode::Apply, |_| {
        fs::write(&late, "2").unwrap();
    });
    assert!(
        matches!(r.results.last().unwrap().outcome, Outcome::Raced(_)),
        "{r:#?}"
    );
    assert_eq!(
        fs::read_to_string(&late).unwrap(),
        "2",
        "rmdir of a non-empty folder fails safely"
    );
    assert_eq!(fs::read_to_string(t.t("loras/first")).unwrap(), "1");
    apply(&mut f, SETTLED);
    assert_eq!(fs::read_to_string(t.t("loras/late")).unwrap(), "2");
    assert_converged(&mut f);
}

#[test]
fn adopted_subfolder_swapped_for_a_symlink_is_moved_as_a_link_only() {
    let t = Tree::new(&["loras"]);
    let outside = test_dir();
    fs::write(outside.path().join("precious"), "outside data").unwrap();
    let mut f = farm_fs(t.farm("[loras]", ""));
    t.write(&t.l("loras/sub/file"), "inside");
    let sub = t.l("loras/sub");
    let stash = t.root().join("stash");
    f.pass_with_hook(SETTLED, now(), Mode::Apply, |_| {
        fs::rename(&sub, &stash).unwrap();
        symlink(outside.path(), &sub).unwrap();
    });
    assert!(
        t.t("loras/sub").is_symlink(),
        "the swapped-in link moved, not what it points to"
    );
    assert_eq!(
        fs::read_to_string(outside.path().join("precious")).unwrap(),
        "outside data"
    );
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
    assert_eq!(fs::read_to_string(stash.join("file")).unwrap(), "inside");
}

#[test]
fn folder_appearing_where_a_link_is_created_is_not_touched() {
    let t = Tree::new(&["a"]);
    let mut f = farm_fs(t.farm("[a]", ""));
    let p = t.l("a");
    let r = f.pass_with_hook(SETTLED, now(), Mode::Apply, |_| {
        fs::create_dir(&p).unwrap();
        fs::write(p.join("x"), "client").unwrap();
    });
    assert!(matches!(r.results[0].outcome, Outcome::Raced(_)));
    assert_eq!(fs::read_to_string(p.join("x")).unwrap(), "client");
}

#[test]
fn deep_adopted_folder_is_left_in_place_and_reported() {
    let t = Tree::new(&["loras"]);
    let mut f = farm_fs(t.farm("[loras]", ""));
    let mut p = t.l("loras");
    for _ in 0..300 {
        p.push("d");
    }
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("bottom"), "deep").unwrap();
    let r = apply(&mut f, SETTLED);
    assert_eq!(r.plan.state, FarmState::Conflict, "{:?}", r.plan.findings);
    assert_eq!(fs::read_to_string(p.join("bottom")).unwrap(), "deep");
}

// ---- SPEC §14: filesystems without renameat2 flags (issue 11). Each test pins the capabilities
// of NFS (no flags), CIFS (only RENAME_NOREPLACE) or a bare filesystem (no link() either), so the
// fallbacks run on any disk; tests/e2e/fuse.sh runs the whole file again on a real FUSE mount.

fn pinned(t: &Tree, entries: &str, yaml: &str, caps: linkfarm_fs::Caps) -> FarmFs {
    let mut f = FarmFs::new(t.farm(entries, yaml));
    pin(&mut f, caps);
    f
}

/// Pins `caps`, less what the filesystem under the test lacks (on a FUSE mount, CIFS's
/// RENAME_NOREPLACE may not be there).
fn pin(f: &mut FarmFs, caps: linkfarm_fs::Caps) {
    let real = f.probe().unwrap();
    f.set_caps(linkfarm_fs::Caps {
        exchange: caps.exchange && real.exchange,
        noreplace: caps.noreplace && real.noreplace,
        link: caps.link && real.link,
    });
}

fn temp_names(dir: &Path) -> Vec<std::ffi::OsString> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".linkfarm-tmp"))
        .collect()
}

#[test]
fn probe_finds_every_flag_on_a_local_disk_and_leaves_no_temp_name() {
    let t = Tree::new(&["a"]);
    let mut f = FarmFs::new(t.farm("[a]", ""));
    assert_eq!(f.caps(), None, "nothing is probed before it is needed");
    let caps = f.probe().unwrap();
    if std::env::var_os("LINKFARM_TEST_DIR").is_none() {
        assert_eq!(caps, linkfarm_fs::Caps::FULL);
    }
    assert_eq!(f.caps(), Some(caps));
    assert!(temp_names(&t.root().join("up")).is_empty());
}

#[test]
fn a_converged_pass_does_not_probe() {
    let t = Tree::new(&["a"]);
    let mut f = FarmFs::new(t.farm("[a]", ""));
    apply(&mut f, SETTLED);
    assert_eq!(f.caps(), None, "a create needs no renameat2 flag");
    let r = apply(&mut f, SETTLED);
    assert_eq!(r.writes, 0);
}

#[test]
fn without_exchange_a_link_hijacked_to_etc_is_replaced() {
    for caps in [NFS, CIFS] {
        let t = Tree::new(&["vae", "b"]);
        let mut f = pinned(&t, "[vae, b]", "", caps);
        t.link("vae", "/etc");
        t.link("b", t.t("vae"));
        let r = apply(&mut f, SETTLED);
        assert!(
            matches!(&r.results[0].outcome, Outcome::Done(Some(p)) if p == Path::new("/etc")),
            "{r:#?}"
        );
        assert_eq!(link_text(&t.l("vae")).unwrap(), t.t("vae"));
        assert_eq!(link_text(&t.l("b")).unwrap(), t.t("b"));
        assert!(temp_names(&t.root().join("up")).is_empty());
        assert_converged(&mut f);
    }
}

#[test]
fn without_exchange_a_file_raced_in_before_the_replace_survives() {
    for caps in [NFS, CIFS] {
        let t = Tree::new(&["a", "b"]);
        let mut f = pinned(&t, "[a, b]", "", caps);
        t.link("b", "/etc");
        let p = t.l("b");
        let r = f.pass_with_hook(SETTLED, now(), Mode::Apply, |_| {
            fs::remove_file(&p).unwrap();
            fs::write(&p, "fresh upload").unwrap();
        });
        assert!(matches!(r.results[1].outcome, Outcome::Raced(_)), "{r:#?}");
        assert_eq!(fs::read_to_string(&p).unwrap(), "fresh upload");
        assert!(temp_names(&t.root().join("up")).is_empty());
        let before = inventory(t.root());
        apply(&mut f, SETTLED);
        assert_eq!(inventory(t.root()), before, "nothing is lost");
        assert_converged(&mut f);
    }
}

#[test]
fn without_exchange_a_folder_raced_in_before_the_prune_survives() {
    let t = Tree::new(&["a", "b"]);
    let mut f = pinned(&t, "[a]", "", NFS);
    t.link("old", t.t("b"));
    let p = t.l("old");
    f.pass_with_hook(SETTLED, now(), Mode::Apply, |_| {
        fs::remove_file(&p).unwrap();
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inside.bin"), "data").unwrap();
    });
    assert_eq!(fs::read_to_string(t.l("old/inside.bin")).unwrap(), "data");
    assert!(temp_names(&t.root().join("up")).is_empty());
}

#[test]
fn without_noreplace_a_client_folder_is_adopted_file_by_file() {
    let t = Tree::new(&["loras"]);
    let mut f = pinned(&t, "[loras]", "", NFS);
    t.write(&t.l("loras/a.safetensors"), "A");
    t.write(&t.l("loras/sub/deeper/b.bin"), "B");
    symlink("/etc/passwd", t.l("loras/sub/ln")).unwrap();
    fs::set_permissions(t.l("loras/sub"), fs::Permissions::from_mode(0o750)).unwrap();
    let before = inventory(t.root());
    apply(&mut f, SETTLED);
    assert_eq!(link_text(&t.l("loras")).unwrap(), t.t("loras"));
    assert_eq!(fs::read_to_string(t.t("loras/a.safetensors")).unwrap(), "A");
    assert_eq!(fs::read_to_string(t.t("loras/sub/deeper/b.bin")).unwrap(), "B");
    assert_eq!(link_text(&t.t("loras/sub/ln")).unwrap(), Path::new("/etc/passwd"));
    let mode = fs::symlink_metadata(t.t("loras/sub"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750, "the folder keeps its mode");
    assert_eq!(inventory(t.root()), before);
    assert_converged(&mut f);
}

#[test]
fn without_noreplace_a_file_raced_into_the_adopted_folder_survives() {
    let t = Tree::new(&["loras"]);
    let mut f = pinned(&t, "[loras]", "", NFS);
    t.write(&t.l("loras/first"), "1");
    t.write(&t.l("loras/sub/x"), "x");
    let late = t.l("loras/late");
    let late_sub = t.l("loras/sub/late");
    let r = f.pass_with_hook(SETTLED, now(), Mode::Apply, |_| {
        fs::write(&late, "2").unwrap();
        fs::write(&late_sub, "3").unwrap();
    });
    assert!(
        r.results.iter().any(|x| matches!(x.outcome, Outcome::Raced(_))),
        "{r:#?}"
    );
    let before = inventory(t.root());
    assert_eq!(before.values().sum::<usize>(), 4);
    apply(&mut f, SETTLED);
    apply(&mut f, SETTLED);
    assert_eq!(inventory(t.root()), before, "nothing is lost");
    assert_converged(&mut f);
}

#[test]
fn without_noreplace_an_adoption_clash_goes_to_the_quarantine_and_overwrites_nothing() {
    let t = Tree::new(&["loras"]);
    let mut f = pinned(&t, "[loras]", "", NFS);
    t.write(&t.t("loras/same"), "in target");
    t.write(&t.l("loras/same"), "client copy");
    t.write(&t.l("loras/dir/f"), "client dir");
    t.write(&t.t("loras/dir/f"), "target dir");
    let before = inventory(t.root());
    apply(&mut f, SETTLED);
    assert_eq!(fs::read_to_string(t.t("loras/same")).unwrap(), "in target");
    assert_eq!(inventory(t.root()), before);
    assert_converged(&mut f);
}

#[test]
fn without_noreplace_a_quarantined_folder_moves_whole() {
    let t = Tree::new(&["vae"]);
    use std::os::unix::fs::MetadataExt;
    let mut f = pinned(&t, "[vae]", "    on_conflict: quarantine\n", NFS);
    t.write(&t.l("vae/a/b"), "client");
    let ino = |p: &Path| fs::symlink_metadata(p).unwrap().ino();
    let (dir, file) = (ino(&t.l("vae")), ino(&t.l("vae/a/b")));
    let before = inventory(t.root());
    let r = apply(&mut f, SETTLED);
    assert_eq!(link_text(&t.l("vae")).unwrap(), t.t("vae"));
    assert_eq!(inventory(t.root()), before);
    // Into the quarantine (linkfarm's own 0700 folder) the move is one rename even without
    // RENAME_NOREPLACE: the folder is the same inode, not a copy made file by file, so a crash
    // cannot leave its files under two names.
    let Outcome::Done(Some(q)) = &r.results[0].outcome else {
        panic!("{r:#?}")
    };
    assert_eq!(ino(q), dir);
    assert_eq!(ino(&q.join("a/b")), file);
    assert_converged(&mut f);
}

#[test]
fn without_noreplace_or_link_a_client_folder_stays_and_is_reported() {
    let t = Tree::new(&["loras", "vae"]);
    let mut f = pinned(&t, "[loras, vae]", "", BARE);
    t.write(&t.l("loras/a"), "A");
    t.link("vae", "/etc");
    let r = f.pass(SETTLED, now(), Mode::Apply);
    assert!(
        r.results
            .iter()
            .any(|x| matches!(&x.outcome, Outcome::Failed(e) if e.to_string().contains("neither"))),
        "{r:#?}"
    );
    assert_eq!(fs::read_to_string(t.l("loras/a")).unwrap(), "A");
    assert_eq!(
        link_text(&t.l("vae")).unwrap(),
        t.t("vae"),
        "links are still repaired"
    );
    assert_ne!(check(&mut f, SETTLED).plan.state, FarmState::Converged);
}

// ---- The chown window (issue 11 §3): a wrong owner is repaired by swapping in a new link.

fn owned_farm(t: &Tree, caps: Option<linkfarm_fs::Caps>) -> FarmFs {
    let mut f = FarmFs::new(t.farm("[a]", "    owner: \"1234:1234\"\n"));
    if let Some(c) = caps {
        pin(&mut f, c);
    }
    f
}

fn owner_of(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn a_link_with_the_wrong_owner_is_replaced_by_one_with_the_right_owner() {
    for caps in [None, Some(NFS), Some(CIFS)] {
        let t = Tree::new(&["a"]);
        let mut f = owned_farm(&t, caps);
        t.link("a", t.t("a"));
        let r = apply(&mut f, SETTLED);
        assert_eq!(r.results[0].action.op.name(), "chown");
        assert_eq!(owner_of(&t.l("a")), (1234, 1234));
        assert_eq!(link_text(&t.l("a")).unwrap(), t.t("a"));
        assert!(temp_names(&t.root().join("up")).is_empty());
        assert_converged(&mut f);
    }
}

#[test]
fn a_client_object_swapped_in_before_the_owner_repair_keeps_its_owner() {
    use std::os::unix::fs::{chown, lchown};
    for caps in [None, Some(NFS), Some(CIFS)] {
        // The client's objects: a file, a folder, and its own symlink (hard-linked in, so its
        // other name shows whether that inode was chowned).
        for kind in ["file", "dir", "symlink"] {
            let t = Tree::new(&["a"]);
            let mut f = owned_farm(&t, caps);
            t.link("a", t.t("a"));
            let p = t.l("a");
            let keep = t.root().join("client-own");
            let r = f.pass_with_hook(SETTLED, now(), Mode::Apply, |plan| {
                assert!(matches!(plan.actions[0].op, Op::Chown { .. }));
                fs::remove_file(&p).unwrap();
                match kind {
                    "file" => {
                        fs::write(&p, "client").unwrap();
                        chown(&p, Some(4321), Some(4321)).unwrap();
                    }
                    "dir" => {
                        fs::create_dir(&p).unwrap();
                        chown(&p, Some(4321), Some(4321)).unwrap();
                    }
                    _ => {
                        symlink(t.t("a"), &keep).unwrap();
                        lchown(&keep, Some(4321), Some(4321)).unwrap();
                        fs::hard_link(&keep, &p).unwrap();
                    }
                }
            });
            let obj = if kind == "symlink" { &keep } else { &p };
            assert_eq!(owner_of(obj), (4321, 4321), "{kind} with {caps:?}: {r:#?}");
            if kind == "file" {
                assert_eq!(fs::read_to_string(&p).unwrap(), "client");
            }
            assert!(temp_names(&t.root().join("up")).is_empty());
        }
    }
}

// ---- SPEC §4 as amended: link_dir's fd held across passes.

#[test]
fn held_link_dir_is_never_redirected_and_after_invalidate_a_symlinked_component_is_refused() {
    let t = Tree::new(&["a", "b"]);
    let deep = t.root().join("share/user");
    fs::create_dir_all(&deep).unwrap();
    let text = "version: 1\nfarms:\n  - name: m\n    target_dir: models\n    link_dir: share/user/up\n    entries: [a, b]\n";
    let farm = linkfarm_core::parse_config(text, &t.root().join("c.yaml"), &NoIds)
        .unwrap()
        .farms
        .remove(0);
    let mut f = farm_fs(farm);
    f.set_hold_link_dir(true);
    apply(&mut f, SETTLED);
    // A repair is due, and then a component of link_dir's path becomes a symlink.
    fs::remove_file(deep.join("up/a")).unwrap();
    let evil = test_dir();
    fs::create_dir(evil.path().join("up")).unwrap();
    let moved = t.root().join("share/user.moved");
    fs::rename(&deep, &moved).unwrap();
    symlink(evil.path(), &deep).unwrap();
    // A spot pass reads the name through the path (now into the attacker's empty `up`) and plans
    // a create. Not yet invalidated, the held fd still names the real directory: the write
    // lands there, never through the new path.
    let names: std::collections::BTreeSet<std::ffi::OsString> = ["a".into()].into();
    let plan = f.plan_names(&names, SETTLED, now()).unwrap();
    assert_eq!(plan.actions.len(), 1, "{plan:#?}");
    f.apply(&plan.actions);
    assert_eq!(fs::read_dir(evil.path().join("up")).unwrap().count(), 0);
    assert_eq!(
        link_text(&moved.join("up/a")).unwrap(),
        t.t("a"),
        "written through the held fd"
    );
    // The watch on share/ reports the swap: after invalidate, the path is checked again.
    fs::remove_file(moved.join("up/a")).unwrap();
    f.invalidate_link_dir();
    let plan = f.plan_names(&names, SETTLED, now()).unwrap();
    let (results, writes) = f.apply(&plan.actions);
    assert!(
        !results.is_empty() && results.iter().all(|x| matches!(x.outcome, Outcome::Failed(_))),
        "{results:#?}"
    );
    assert_eq!(writes, 0);
    assert_eq!(
        fs::read_dir(evil.path().join("up")).unwrap().count(),
        0,
        "nothing through the new path"
    );
    assert!(!moved.join("up/a").exists());
}

/// SPEC §14: the probe is made once per farm and again when link_dir's device changes (here a
/// tmpfs mounted over the folder holding link_dir, as a volume remounted). Needs root (CI is).
#[test]
fn the_probe_is_cached_and_redone_after_a_remount() {
    let t = Tree::new(&["a", "b"]);
    let holder = t.root().join("vol");
    fs::create_dir(&holder).unwrap();
    let text =
        "version: 1\nfarms:\n  - name: m\n    target_dir: models\n    link_dir: vol/up\n    entries: [a]\n";
    let farm = linkfarm_core::parse_config(text, &t.root().join("c.yaml"), &NoIds)
        .unwrap()
        .farms
        .remove(0);
    let mut f = FarmFs::new(farm);
    let hijack_and_repair = |f: &mut FarmFs| {
        let l = holder.join("up/a");
        let _ = fs::remove_file(&l);
        symlink("/etc", &l).unwrap();
        let r = apply(f, SETTLED);
        assert_eq!(r.results.len(), 1, "{r:#?}");
        assert_eq!(link_text(&l).unwrap(), t.t("a"));
        r.writes
    };
    fs::create_dir(holder.join("up")).unwrap();
    let first = hijack_and_repair(&mut f);
    let cached = hijack_and_repair(&mut f);
    assert!(
        first > cached,
        "the first replace probes, the second does not ({first} vs {cached})"
    );
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&holder)
        .status()
        .unwrap();
    assert!(st.success(), "mount needs root");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&holder);
    fs::create_dir(holder.join("up")).unwrap();
    let after = hijack_and_repair(&mut f);
    let again = hijack_and_repair(&mut f);
    // (Under LINKFARM_TEST_DIR on FUSE the tmpfs has more flags than the first filesystem, so
    // only the probe's extra writes are compared.)
    assert!(after > again, "a new device is probed again ({after} vs {again})");
}

/// A link()+unlink() move (SPEC §14) killed between its two steps leaves one file under two
/// names, the client's and the target's: the next pass finishes the move instead of putting a
/// second name of it in the quarantine (the crash campaign on FUSE found the duplicate).
#[test]
fn a_move_interrupted_between_link_and_unlink_is_finished() {
    for caps in [NFS, CIFS] {
        let t = Tree::new(&["loras"]);
        let mut f = pinned(&t, "[loras]", "", caps);
        t.write(&t.l("loras/a.bin"), "model");
        fs::hard_link(t.l("loras/a.bin"), t.t("loras/a.bin")).unwrap();
        apply(&mut f, SETTLED);
        assert_eq!(fs::read_to_string(t.t("loras/a.bin")).unwrap(), "model");
        assert_eq!(link_text(&t.l("loras")).unwrap(), t.t("loras"));
        let copies = inventory(t.root()).get(b"model".as_slice()).copied();
        assert_eq!(copies, Some(1), "one name left, not a second in the quarantine");
        assert_converged(&mut f);
    }
}

/// The same inside a folder adopted file by file: the files already linked into the target lose
/// their second name; the rest of the folder goes to the quarantine as any clash.
#[test]
fn a_folder_adoption_interrupted_between_link_and_unlink_leaves_no_second_name() {
    let t = Tree::new(&["loras"]);
    let mut f = pinned(&t, "[loras]", "", NFS);
    t.write(&t.l("loras/sub/moved.bin"), "moved");
    t.write(&t.l("loras/sub/left.bin"), "left");
    fs::create_dir(t.t("loras/sub")).unwrap();
    fs::hard_link(t.l("loras/sub/moved.bin"), t.t("loras/sub/moved.bin")).unwrap();
    apply(&mut f, SETTLED);
    let inv = inventory(t.root());
    assert_eq!(inv.get(b"moved".as_slice()).copied(), Some(1), "{inv:?}");
    assert_eq!(inv.get(b"left".as_slice()).copied(), Some(1));
    assert_eq!(fs::read_to_string(t.t("loras/sub/moved.bin")).unwrap(), "moved");
    assert_converged(&mut f);
}

#[test]
fn link_dir_removed_under_the_capability_probe_is_a_race_not_a_failure() {
    let t = Tree::new(&["a", "b"]);
    let mut f = farm_fs(t.farm("[a, b]", ""));
    f.set_hold_link_dir(true);
    apply(&mut f, SETTLED);
    assert_eq!(f.caps(), None, "creates need no probe");
    // A replace needs the capabilities; link_dir goes away between the plan and the probe, which
    // runs through the held fd of the removed directory (every write there is ENOENT).
    let up = t.root().join("up");
    fs::remove_file(up.join("b")).unwrap();
    t.link("b", t.t("a"));
    let r = f.pass_with_hook(SETTLED, now(), Mode::Apply, |_| {
        fs::remove_file(up.join("a")).unwrap();
        fs::remove_file(up.join("b")).unwrap();
        fs::remove_dir(&up).unwrap();
    });
    assert!(!r.results.is_empty(), "{r:#?}");
    assert!(
        r.results.iter().all(|x| matches!(x.outcome, Outcome::Raced(_))),
        "{:#?}",
        r.results
    );
    // Back, it is probed and converged.
    fs::create_dir(&up).unwrap();
    f.invalidate_link_dir();
    assert!(f.probe_if_stale().unwrap().is_some());
    assert_eq!(f.probe_if_stale().unwrap(), None, "cached for this device");
    apply(&mut f, SETTLED);
    assert_converged(&mut f);
}

#[test]
fn probe_if_stale_skips_a_missing_link_dir_and_probes_once_per_device() {
    let t = Tree::new(&["a"]);
    let mut f = farm_fs(t.farm("[a]", ""));
    fs::remove_dir(t.root().join("up")).unwrap();
    assert_eq!(
        f.probe_if_stale().unwrap(),
        None,
        "no link_dir, no probe, no error"
    );
    apply(&mut f, SETTLED);
    let caps = f.probe_if_stale().unwrap().expect("probed once link_dir exists");
    assert_eq!(f.caps(), Some(caps));
    assert_eq!(f.probe_if_stale().unwrap(), None);
    assert!(temp_names(&t.root().join("up")).is_empty());
    let again = apply(&mut f, SETTLED);
    assert_eq!(again.writes, 0);
}
