//! Runs `runtime_cases.txt`: timelines of events and pass outcomes fed to a farm's runtime, with
//! the decisions it must make. A failing case names its line in the file.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use linkfarm::daemon::runtime::{PassEnd, Runtime, Spot, SpotEnd, State};
use linkfarm_core::FarmState;

const CASES: &str = include_str!("runtime_cases.txt");

fn secs(tok: &str, line: usize) -> Duration {
    let s: f64 = tok
        .parse()
        .unwrap_or_else(|_| panic!("runtime_cases.txt:{line}: `{tok}` is not a number of seconds"));
    Duration::from_secs_f64(s)
}

/// Seconds as the cases write them: "9", "10.02".
fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}", ms / 1000)
    } else {
        format!("{}", ms as f64 / 1000.0)
    }
}

fn planner_state(tok: &str, line: usize) -> FarmState {
    match tok {
        "converged" => FarmState::Converged,
        "drift" => FarmState::Drift,
        "conflict" => FarmState::Conflict,
        "degraded" => FarmState::Degraded,
        "error" => FarmState::Error,
        _ => panic!("runtime_cases.txt:{line}: unknown planner state `{tok}`"),
    }
}

struct Timeline {
    rt: Runtime,
    t0: Instant,
}

impl Timeline {
    fn new(setup: &str, line: usize) -> Self {
        let mut poll = None;
        for kv in setup.split_whitespace() {
            match kv.split_once('=') {
                Some(("poll", v)) => poll = Some(secs(v, line)),
                _ => panic!("runtime_cases.txt:{line}: unknown setup `{kv}`"),
            }
        }
        Timeline {
            rt: Runtime::new(poll.is_some(), poll.unwrap_or(Duration::from_secs(30))),
            t0: Instant::now(),
        }
    }

    fn due(&self) -> String {
        self.rt.due().map_or_else(|| "none".into(), |t| show(t - self.t0))
    }

    /// Feeds one line's event at `now`; returns the decision it led to.
    fn step(&mut self, now: Instant, words: &[&str], line: usize) -> String {
        let link = |i: usize| {
            OsString::from(
                *words
                    .get(i)
                    .unwrap_or_else(|| panic!("runtime_cases.txt:{line}: a link name is missing")),
            )
        };
        match words[0] {
            "repair" => {
                self.rt.begin_pass();
                let mut last = "ok".to_string();
                for name in &words[1..] {
                    last = match self.rt.repaired(&OsString::from(name), now) {
                        None => "ok".into(),
                        Some(f) => format!(
                            "{} {} hold {}",
                            if f.started { "flapping" } else { "again" },
                            f.repairs,
                            show(f.hold)
                        ),
                    };
                }
                last
            }
            "fail" => {
                self.rt.begin_pass();
                format!("hold {}", show(self.rt.failed(&link(1), now)))
            }
            "full" => {
                let mut end = PassEnd {
                    plan: planner_state(words.get(1).copied().unwrap_or(""), line),
                    planned: Vec::new(),
                    error: None,
                    settles_in: None,
                };
                let mut i = 2;
                while i < words.len() {
                    match words[i] {
                        "error" => end.error = Some("an action failed".into()),
                        "settle" => {
                            i += 1;
                            end.settles_in = Some(secs(words[i], line));
                        }
                        "planned" => {
                            i += 1;
                            end.planned = words[i].split(',').map(OsString::from).collect();
                        }
                        w => panic!("runtime_cases.txt:{line}: unknown word `{w}` in a full pass"),
                    }
                    i += 1;
                }
                self.rt.begin_pass();
                let state = self.rt.full_end(end, now);
                assert_eq!(state, self.rt.state());
                format!("{} due {}", state.as_str(), self.due())
            }
            "spot" => {
                let end = match words.get(1).copied() {
                    Some("nothing") => SpotEnd::Nothing,
                    Some("clean") => SpotEnd::Clean,
                    Some("unfinished") => SpotEnd::Unfinished,
                    w => panic!("runtime_cases.txt:{line}: unknown spot end {w:?}"),
                };
                match self.rt.spot_end(end, now) {
                    Spot::Done => "done".into(),
                    Spot::Escalate => "escalate".into(),
                }
            }
            "may-spot" => yes(self.rt.may_spot()),
            "held" => yes(self.rt.held(&link(1), now)),
            "calm" => {
                let calm = self.rt.expire(now);
                if calm.is_empty() {
                    "none".into()
                } else {
                    calm.iter()
                        .map(|c| c.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            }
            "blind" => {
                self.rt.set_blind(words.get(1) == Some(&"yes"), now);
                String::new()
            }
            "due" => self.due(),
            w => panic!("runtime_cases.txt:{line}: unknown event `{w}`"),
        }
    }
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

#[test]
fn runtime_cases() {
    let mut cases = 0;
    let mut timeline: Option<Timeline> = None;
    let mut title = String::new();
    let mut failures = Vec::new();
    for (i, raw) in CASES.lines().enumerate() {
        let line = i + 1;
        let text = raw.trim();
        if let Some(t) = text.strip_prefix("## ") {
            title = t.to_string();
            timeline = Some(Timeline::new("", line));
            cases += 1;
            continue;
        }
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let tl = timeline
            .as_mut()
            .unwrap_or_else(|| panic!("runtime_cases.txt:{line}: a line before the first ## title"));
        if let Some(setup) = text.strip_prefix("setup:") {
            *tl = Timeline::new(setup, line);
            continue;
        }
        let (event, expect) = match text.split_once("=>") {
            Some((e, x)) => (e.trim(), Some(x.trim())),
            None => (text, None),
        };
        let words: Vec<&str> = event.split_whitespace().collect();
        let at = tl.t0 + secs(words[0], line);
        let got = tl.step(at, &words[1..], line);
        if let Some(want) = expect {
            if got != want {
                failures.push(format!(
                    "runtime_cases.txt:{line} ({title}): {event}\n  expected: {want}\n  got:      {got}"
                ));
            }
        }
    }
    assert!(cases >= 20, "only {cases} cases read");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_states_keep_the_state_files_strings() {
    let names: Vec<&str> = [
        State::Converged,
        State::Drift,
        State::Degraded,
        State::Conflict,
        State::Flapping,
        State::Error,
    ]
    .iter()
    .map(|s| s.as_str())
    .collect();
    assert_eq!(
        names,
        ["converged", "drift", "degraded", "conflict", "flapping", "error"]
    );
}
