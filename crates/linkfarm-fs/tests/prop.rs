//! Property tests: from random initial trees, one `apply` converges the farm, and no regular file
//! is lost or changed anywhere under the test root (link_dir, target_dir, quarantine).

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::*;
use linkfarm_core::FarmState;
use linkfarm_fs::FarmFs;
use proptest::prelude::*;

/// What a test puts at one link path before the pass.
#[derive(Debug, Clone)]
enum At {
    Nothing,
    RightLink,
    WrongManagedLink,
    DanglingManagedLink,
    ForeignLink,
    RealDir { files: Vec<(u8, bool)> },
    File,
}

fn at() -> impl Strategy<Value = At> {
    prop_oneof![
        Just(At::Nothing),
        Just(At::RightLink),
        Just(At::WrongManagedLink),
        Just(At::DanglingManagedLink),
        Just(At::ForeignLink),
        prop::collection::vec((0u8..4, any::<bool>()), 0..4).prop_map(|files| At::RealDir { files }),
        Just(At::File),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    /// Per entry: whether the target exists, what sits at the link path, files in the target.
    entries: Vec<(bool, At, Vec<u8>)>,
    extra_managed: bool,
    extra_foreign_file: bool,
    policy: &'static str,
    relative: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((any::<bool>(), at(), prop::collection::vec(0u8..4, 0..3)), 1..6),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just("adopt"), Just("quarantine")],
        any::<bool>(),
    )
        .prop_map(
            |(entries, extra_managed, extra_foreign_file, policy, relative)| Case {
                entries,
                extra_managed,
                extra_foreign_file,
                policy,
                relative,
            },
        )
}

fn build(c: &Case) -> (Tree, FarmFs) {
    let t = Tree::new(&["other"]);
    let mut names = Vec::new();
    let mut counter = 0u32;
    let mut content = |tag: &str| {
        counter += 1;
        format!("{tag}-{counter}")
    };
    for (i, (target_exists, at, target_files)) in c.entries.iter().enumerate() {
        let n = format!("e{i}");
        if *target_exists {
            fs::create_dir(t.t(&n)).unwrap();
            for f in target_files {
                t.write(&t.t(&n).join(format!("f{f}")), &content("target"));
            }
        }
        let l = t.l(&n);
        match at {
            At::Nothing => {}
            At::RightLink => symlink(t.t(&n), &l).unwrap(),
            At::WrongManagedLink => symlink(t.t("other"), &l).unwrap(),
            At::DanglingManagedLink => symlink(t.t("gone"), &l).unwrap(),
            At::ForeignLink => symlink("/usr", &l).unwrap(),
            At::RealDir { files } => {
                fs::create_dir(&l).unwrap();
                for (f, nested) in files {
                    let p = if *nested {
                        l.join("sub").join(format!("f{f}"))
                    } else {
                        l.join(format!("f{f}"))
                    };
                    if !p.exists() {
                        t.write(&p, &content("client"));
                    }
                }
            }
            At::File => t.write(&l, &content("file")),
        }
        names.push(n);
    }
    if c.extra_managed {
        symlink(t.t("other"), t.l("stale")).unwrap();
    }
    if c.extra_foreign_file {
        t.write(&t.l("readme.txt"), "foreign");
    }
    let extra = format!(
        "    create_targets: true\n    on_conflict: {}\n    link_style: {}\n",
        c.policy,
        if c.relative { "relative" } else { "absolute" }
    );
    let farm = t.farm(&format!("[{}]", names.join(", ")), &extra);
    (t, farm_fs(farm))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn apply_converges_and_loses_nothing(c in case()) {
        let (t, mut f) = build(&c);
        let before = inventory(t.root());
        apply(&mut f, SETTLED);
        let after = check(&mut f, SETTLED);
        prop_assert_eq!(after.plan.state, FarmState::Converged, "{:#?}", after.plan);
        prop_assert_eq!(inventory(t.root()), before);
        let again = apply(&mut f, SETTLED);
        prop_assert_eq!(again.writes, 0);
        let leftovers = fs::read_dir(t.root().join("up")).unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".linkfarm-tmp"))
            .count();
        prop_assert_eq!(leftovers, 0);
    }
}

/// A spot pass must decide exactly what a full pass decides for the names it was given, in any
/// tree: it is only a faster way of planning, never a different one.
fn assert_spot_is_restricted_full(
    f: &mut FarmFs,
    names: &std::collections::BTreeSet<std::ffi::OsString>,
    adopt_after: std::time::Duration,
) -> Result<(), TestCaseError> {
    let at = now();
    let full = f.plan(adopt_after, at);
    let spot = f
        .plan_names(names, adopt_after, at)
        .expect("a full plan came first");
    let expected: Vec<_> = full
        .actions
        .iter()
        .filter(|a| names.contains(&a.link))
        .cloned()
        .collect();
    prop_assert_eq!(&spot.actions, &expected, "names {:?}", names);
    let full_only: Vec<String> = full
        .findings
        .iter()
        .filter(|x| finding_link(x).is_some_and(|l| names.contains(l)))
        .map(ToString::to_string)
        .collect();
    let spot_findings: Vec<String> = spot.findings.iter().map(ToString::to_string).collect();
    prop_assert_eq!(spot_findings, full_only);
    Ok(())
}

fn finding_link(f: &linkfarm_core::Finding) -> Option<&std::ffi::OsString> {
    use linkfarm_core::Finding::*;
    match f {
        MissingTarget { link, .. } | Conflict { link, .. } | Pending { link, .. } => Some(link),
        Degraded(_) | LinkDir(_) => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn spot_plan_is_the_full_plan_restricted(c in case(), mask in any::<u16>(), settled in any::<bool>()) {
        let (t, mut f) = build(&c);
        symlink(t.t("e0"), t.l(".linkfarm-tmp.e0.999")).unwrap();
        let mut all: Vec<String> = (0..c.entries.len()).map(|i| format!("e{i}")).collect();
        all.extend(["stale", "readme.txt", "nothing-here", ".linkfarm-tmp.e0.999", "other"].map(String::from));
        let names: std::collections::BTreeSet<std::ffi::OsString> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, n)| n.into())
            .collect();
        let adopt_after = if settled { SETTLED } else { LONG };
        assert_spot_is_restricted_full(&mut f, &names, adopt_after)?;
        // The same tree seen by a farm that links every target folder.
        let mut glob = farm_fs(t.farm("\"*\"", &format!("    on_conflict: {}\n", c.policy)));
        assert_spot_is_restricted_full(&mut glob, &names, adopt_after)?;
    }
}
