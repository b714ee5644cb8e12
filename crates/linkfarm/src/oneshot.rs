//! The one-shot commands: `validate`, `check` and `apply`. They share the loading and the passes
//! with the daemon; only the output differs.

use std::time::SystemTime;

use linkfarm_core::{Config, FarmState, Plan};
use linkfarm_fs::{FarmFs, Mode, Outcome, PassReport};
use serde_json::json;

use crate::report;
use crate::ExitCode;

/// How many passes `apply` makes at most when actions raced with other writers.
const MAX_PASSES: usize = 3;

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

/// Runs passes over one farm until nothing raced (at most three).
pub fn converge(fs: &mut FarmFs, config: &Config, mode: Mode) -> Vec<PassReport> {
    let mut passes = Vec::new();
    loop {
        let r = fs.pass(config.settings.adopt_after, SystemTime::now(), mode);
        // Another pass helps after a race, not after a failure (it would only fail again).
        let raced = r
            .results
            .iter()
            .any(|x| matches!(x.outcome, Outcome::Raced(_) | Outcome::Rescued { .. }))
            && !r.results.iter().any(|x| matches!(x.outcome, Outcome::Failed(_)));
        let changed = r.changed();
        passes.push(r);
        if mode == Mode::DryRun || passes.len() >= MAX_PASSES || !(raced || changed) {
            break;
        }
        // After changes, the true state. When every action succeeded and the plan had nothing
        // it could not act on, it is known without reading the farm again: each action was
        // checked by its own syscall's result, and the planner only plans actions that
        // converge. (At 10,000 links that second read was a third of `apply`.) Otherwise one
        // more read-only look tells it; the loop stops there unless that look finds work.
        let last = passes.last().expect("just pushed");
        if last.plan.findings.is_empty()
            && last.results.len() == last.plan.actions.len()
            && last.results.iter().all(|x| matches!(x.outcome, Outcome::Done(_)))
        {
            let plan = Plan {
                farm: last.plan.farm.clone(),
                state: FarmState::Converged,
                actions: Vec::new(),
                findings: Vec::new(),
                recheck_at: None,
                links_total: last.plan.links_total,
                links_ok: last.plan.links_total,
            };
            passes.push(PassReport {
                plan,
                results: Vec::new(),
                writes: 0,
            });
            break;
        }
        let look = fs.pass(config.settings.adopt_after, SystemTime::now(), Mode::DryRun);
        if look.plan.actions.is_empty() {
            passes.push(look);
            break;
        }
    }
    passes
}

/// `linkfarm check` and `linkfarm apply`.
pub fn reconcile(config: &Config, mode: Mode, json_out: bool, is_check: bool) -> ExitCode {
    let mut farms_json = Vec::new();
    let mut worst = FarmState::Converged;
    let mut failed = false;
    for farm in &config.farms {
        let mut fs = FarmFs::new(farm.clone());
        let passes = converge(&mut fs, config, mode);
        let last = passes.last().expect("at least one pass");
        worst = worst.max(last.plan.state);
        failed |= passes.iter().any(PassReport::failed);
        if json_out {
            farms_json.push(report::farm_json(&farm.name, &passes));
        } else if mode == Mode::DryRun {
            print!("{}", report::plan_text(&last.plan));
        } else {
            print!("{}", report::passes_text(&passes));
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
    if is_check {
        match worst {
            FarmState::Converged => ExitCode::Ok,
            FarmState::Error => ExitCode::Error,
            _ => ExitCode::NotConverged,
        }
    } else if failed {
        ExitCode::NotConverged
    } else {
        ExitCode::Ok
    }
}
