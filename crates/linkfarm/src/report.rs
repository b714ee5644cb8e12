//! Rendering passes for people (short lines: what, where, why) and for scripts (JSON whose shape
//! is documented in the README and kept stable).

use std::fmt::Write as _;
use std::path::Path;

use linkfarm_core::time::rfc3339;
use linkfarm_core::{Action, Finding, Op, Plan};
use linkfarm_fs::{ActionResult, Outcome};
use serde_json::{json, Value};

fn lossy(p: &std::ffi::OsStr) -> String {
    p.to_string_lossy().into_owned()
}

/// The link text an action writes, if it writes one.
pub fn action_text(a: &Action) -> Option<&Path> {
    match &a.op {
        Op::Create { text }
        | Op::Replace { text, .. }
        | Op::ClearDir { text }
        | Op::Quarantine { text, .. } => Some(text),
        _ => None,
    }
}

/// The outcome's stable name and message.
pub fn outcome(o: &Outcome) -> (&'static str, Option<String>) {
    match o {
        Outcome::Done(_) => ("done", None),
        Outcome::Raced(why) => ("raced", Some(why.clone())),
        Outcome::Failed(e) => ("failed", Some(e.to_string())),
        Outcome::Rescued { to, why } => ("rescued", Some(format!("{why}: {}", to.display()))),
    }
}

fn finding_json(f: &Finding) -> Value {
    let (kind, link) = match f {
        Finding::Degraded(_) => ("degraded", None),
        Finding::LinkDir(_) => ("link_dir", None),
        Finding::MissingTarget { link, .. } => ("missing_target", Some(lossy(link))),
        Finding::Conflict { link, .. } => ("conflict", Some(lossy(link))),
        Finding::Pending { link, .. } => ("pending", Some(lossy(link))),
    };
    json!({ "kind": kind, "link": link, "message": f.to_string() })
}

fn action_json(a: &Action, o: Option<&Outcome>) -> Value {
    let mut v = json!({
        "action": a.op.name(),
        "link": lossy(&a.link),
        "reason": a.reason.as_str(),
        "text": action_text(a).map(|t| t.to_string_lossy().into_owned()),
        "message": a.to_string(),
        "result": "planned",
        "error": null,
    });
    if let Some(o) = o {
        let (r, msg) = outcome(o);
        v["result"] = r.into();
        v["error"] = msg.into();
    }
    v
}

/// One farm as JSON: the final plan's state, and every action (what was done, or with
/// `dry_run` what would be).
pub fn farm_json(name: &str, results: &[ActionResult], last: &Plan, dry_run: bool) -> Value {
    let actions: Vec<Value> = if dry_run {
        last.actions.iter().map(|a| action_json(a, None)).collect()
    } else {
        results
            .iter()
            .map(|r| action_json(&r.action, Some(&r.outcome)))
            .collect()
    };
    json!({
        "name": name,
        "state": last.state.as_str(),
        "links_total": last.links_total,
        "links_ok": last.links_ok,
        "recheck_at": last.recheck_at.map(rfc3339),
        "actions": actions,
        "findings": last.findings.iter().map(finding_json).collect::<Vec<_>>(),
    })
}

fn headline(plan: &Plan) -> String {
    format!(
        "farm {}: {} ({}/{} links ok)",
        plan.farm,
        plan.state.as_str(),
        plan.links_ok,
        plan.links_total
    )
}

/// A plan for people: the headline, then what would be done and what is found.
pub fn plan_text(plan: &Plan) -> String {
    let mut s = headline(plan);
    s.push('\n');
    for a in &plan.actions {
        let _ = writeln!(s, "  would {a}");
    }
    for f in &plan.findings {
        let _ = writeln!(s, "  ! {f}");
    }
    s
}

/// What `apply` did to a farm, for people: the headline of the farm as it is now, each
/// action's result once, and what is left to see.
pub fn applied_text(results: &[ActionResult], last: &Plan) -> String {
    let mut s = String::new();
    for r in results {
        match &r.outcome {
            Outcome::Done(Some(old)) if matches!(r.action.op, Op::Replace { .. }) => {
                let _ = writeln!(s, "  {} (old link -> {})", r.action, old.display());
            }
            Outcome::Done(Some(dest)) if r.action.op.moves_data() => {
                let _ = writeln!(s, "  {} [now at {}]", r.action, dest.display());
            }
            Outcome::Done(_) => {
                let _ = writeln!(s, "  {}", r.action);
            }
            Outcome::Raced(why) => {
                let _ = writeln!(s, "  skipped {}: {why}", r.action);
            }
            Outcome::Failed(e) => {
                let _ = writeln!(s, "  FAILED {}: {e}", r.action);
            }
            Outcome::Rescued { to, why } => {
                let _ = writeln!(s, "  {why}: {}", to.display());
            }
        }
    }
    for f in &last.findings {
        let _ = writeln!(s, "  ! {f}");
    }
    format!("{}\n{s}", headline(last))
}
