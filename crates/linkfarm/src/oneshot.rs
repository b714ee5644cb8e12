//! The one-shot commands: `validate`, `check` and `apply`. They share the loading and the passes
//! with the daemon; only the output differs.

use std::time::SystemTime;

use linkfarm_core::{Config, FarmState};
use linkfarm_fs::{FarmFs, Mode, Outcome};
use serde_json::json;

use crate::daemon::rounds::{self, NoHooks};
use crate::report;
use crate::ExitCode;

/// `linkfarm validate`.
pub fn validate(config: &Config) -> ExitCode {
    let links: usize = config
        .farms
        .iter()
        .filter_map(|f| f.explicit().map(<[_]>::len))
        .sum();
    let inboxes = match config.inboxes.len() {
        0 => String::new(),
        1 => ", 1 inbox".into(),
        n => format!(", {n} inboxes"),
    };
    println!(
        "{}: valid ({} farm{}{inboxes}, {} explicit link{})",
        config.path.display(),
        config.farms.len(),
        if config.farms.len() == 1 { "" } else { "s" },
        links,
        if links == 1 { "" } else { "s" }
    );
    ExitCode::Ok
}

/// `linkfarm check` and `linkfarm apply`.
///
/// `check` exits 0 when every farm is converged, 2 when a farm is in `error`, else 1. `apply`
/// exits 2 when a farm ends in `error` (its `link_dir` refused or unusable), 1 when an action
/// failed or a farm ends `degraded` (its `target_dir` unavailable: nothing could be checked),
/// else 0 (pending uploads, missing targets and conflicts are reported, and are not failures of
/// `apply`).
pub fn reconcile(config: &Config, mode: Mode, json_out: bool, is_check: bool) -> ExitCode {
    let adopt_after = config.settings.adopt_after;
    let mut farms = Vec::new();
    for farm in &config.farms {
        let mut fs = FarmFs::new(farm.clone());
        let plan = fs.plan(adopt_after, SystemTime::now());
        let (results, last) = if mode == Mode::DryRun {
            (Vec::new(), plan)
        } else {
            let a = rounds::apply(&mut fs, plan, &mut NoHooks, |fs| {
                Some(fs.plan(adopt_after, SystemTime::now()))
            })
            .expect("a full plan is always made");
            (a.results, a.plan)
        };
        farms.push((fs, results, last));
    }
    // What apply reports must be true when it exits: a farm whose link_dir a later farm also
    // works in is looked at again (read-only) once every farm is done.
    if mode != Mode::DryRun {
        for (i, (fs, _, last)) in farms.iter_mut().enumerate() {
            let dir = &config.farms[i].link_dir;
            if config.farms[i + 1..].iter().any(|f| &f.link_dir == dir) {
                *last = fs.plan(adopt_after, SystemTime::now());
            }
        }
    }
    let mut farms_json = Vec::new();
    let mut worst = FarmState::Converged;
    let mut failed = false;
    for (fs, results, last) in &farms {
        worst = worst.max(last.state);
        failed |= results.iter().any(|r| matches!(r.outcome, Outcome::Failed(_)));
        if json_out {
            farms_json.push(report::farm_json(
                &fs.farm().name,
                results,
                last,
                mode == Mode::DryRun,
            ));
        } else if mode == Mode::DryRun {
            print!("{}", report::plan_text(last));
        } else {
            print!("{}", report::applied_text(results, last));
        }
    }
    // The inboxes (SPEC §10): `check` surveys them, `apply` makes one pass over each.
    let (inboxes_json, inbox_trouble) = crate::inbox::oneshot(config, mode == Mode::Apply, json_out);
    failed |= inbox_trouble && mode == Mode::Apply;
    if inbox_trouble && is_check {
        worst = worst.max(FarmState::Conflict);
    }
    if json_out {
        let out = json!({
            "config": config.path.to_string_lossy(),
            "dry_run": mode == Mode::DryRun,
            "farms": farms_json,
            "inboxes": inboxes_json,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("JSON of plain values")
        );
    }
    match worst {
        FarmState::Error => ExitCode::Error,
        _ if failed => ExitCode::NotConverged,
        FarmState::Converged => ExitCode::Ok,
        _ if is_check => ExitCode::NotConverged,
        FarmState::Degraded => ExitCode::NotConverged,
        FarmState::Drift | FarmState::Conflict => ExitCode::Ok,
    }
}
