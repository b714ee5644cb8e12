//! The one retry mechanism for acting on a plan, used by `apply` and by the daemon's passes:
//! apply the actions not held back, plan again to see what came of them, and go on while a race
//! with another writer or a change calls for it, at most [`ROUNDS`] times. A failed action is
//! not retried within the rounds (it would only fail again, and be reported again): the daemon
//! retries it later with backoff, `apply` reports it once.
//!
//! It decides nothing about a farm's state; its caller does, from the last plan.

use std::collections::HashSet;
use std::ffi::OsString;

use linkfarm_core::{Action, FarmState, Plan};
use linkfarm_fs::{ActionResult, FarmFs, Outcome};

/// Plan/apply rounds at most: a race with a writer ends in another round, not in a loop.
pub const ROUNDS: usize = 4;

/// Runs `step` again while it says the disk moved under it, [`ROUNDS`] times at most: the
/// same bound for every "look again" in the daemon (watches that vanished while being added,
/// looks queued by a new watch), so a writer racing us forever costs bounded work per wake-up
/// and is met again at the next event or timer.
pub fn repeat(mut step: impl FnMut() -> bool) {
    for _ in 0..ROUNDS {
        if !step() {
            break;
        }
    }
}

/// What the caller says about links and hears about results, between the rounds.
pub trait Hooks {
    /// Whether the action on `link` is held back (not applied in these rounds).
    fn held(&self, link: &OsString) -> bool;
    /// One action's result, as it comes (the daemon logs and counts it here).
    fn result(&mut self, r: &ActionResult);
    /// Whether the farm is read again after a round in which every action succeeded. The
    /// daemon does (behaviour before the rounds were one mechanism: the look after the actions
    /// also catches what a concurrent writer did meanwhile); `apply` trusts the syscalls.
    fn reread_after_success(&self) -> bool {
        true
    }
}

/// No holds, nothing to hear: `apply`'s rounds.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn held(&self, _: &OsString) -> bool {
        false
    }
    fn result(&mut self, _: &ActionResult) {}
    fn reread_after_success(&self) -> bool {
        false
    }
}

/// What the rounds came to.
#[derive(Debug)]
pub struct Applied {
    /// The last plan: the farm as it is after the rounds.
    pub plan: Plan,
    /// Every action's result, in order; a failed action appears once.
    pub results: Vec<ActionResult>,
    /// The message of the last failure.
    pub error: Option<String>,
}

/// Applies `plan` in rounds (see the module doc); `replan` reads the disk again. Returns `None`
/// when `replan` cannot plan (a spot pass's names need a full pass after all).
pub fn apply(
    fs: &mut FarmFs,
    mut plan: Plan,
    hooks: &mut impl Hooks,
    mut replan: impl FnMut(&mut FarmFs) -> Option<Plan>,
) -> Option<Applied> {
    let mut results = Vec::new();
    let mut failed: HashSet<OsString> = HashSet::new();
    let mut error = None;
    for _ in 0..ROUNDS {
        let allowed: Vec<Action> = plan
            .actions
            .iter()
            .filter(|a| !hooks.held(&a.link) && !failed.contains(&a.link))
            .cloned()
            .collect();
        if allowed.is_empty() {
            break;
        }
        let whole = allowed.len() == plan.actions.len();
        let (round, _writes) = fs.apply(&allowed);
        let mut raced = false;
        let mut all_done = true;
        for r in &round {
            hooks.result(r);
            match &r.outcome {
                Outcome::Done(_) => {}
                Outcome::Raced(_) | Outcome::Rescued { .. } => {
                    raced = true;
                    all_done = false;
                }
                Outcome::Failed(e) => {
                    all_done = false;
                    failed.insert(r.action.link.clone());
                    error = Some(format!("{}: {e}", r.action));
                }
            }
        }
        let any_done = round.iter().any(|r| matches!(r.outcome, Outcome::Done(_)));
        // Every action of a plan that found nothing it could not act on succeeded: the farm is
        // converged, known without reading it again. Each action was checked by its own
        // syscall's result, and the planner only plans actions that converge. (At 10,000 links
        // that second read was a third of `apply`.)
        if !hooks.reread_after_success()
            && whole
            && all_done
            && plan.findings.is_empty()
            && plan.recheck_at.is_none()
        {
            results.extend(round);
            plan = Plan {
                state: FarmState::Converged,
                actions: Vec::new(),
                links_ok: plan.links_total,
                ..plan
            };
            break;
        }
        results.extend(round);
        plan = replan(fs)?;
        if !raced && !any_done {
            break;
        }
    }
    Some(Applied { plan, results, error })
}
