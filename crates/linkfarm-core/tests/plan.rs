//! Runs the planner cases in `plan_cases.txt`: each case is a farm, what the disk shows, and the
//! exact plan expected. See the head of that file for the notation.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use linkfarm_core::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

struct Case {
    title: String,
    line: usize,
    farm: Farm,
    obs: Observed,
    now: u64,
    adopt_after: u64,
    expect: Vec<String>,
    state: Option<String>,
    recheck: Option<Option<u64>>,
}

fn parse_farm(spec: &str) -> Farm {
    let mut farm = Farm {
        name: "f".into(),
        target_dir: "/T".into(),
        link_dir: "/L".into(),
        entries: Entries::List(vec![]),
        link_style: LinkStyle::Absolute,
        create_targets: false,
        owner: None,
        dir_mode: 0o755,
        prune: true,
        on_conflict: OnConflict::Adopt,
        quarantine_dir: "/Q".into(),
        neighbours: Default::default(),
    };
    let mut exclude = vec![".*".to_string()];
    let mut star = false;
    let mut list = vec![];
    for tok in spec.split_whitespace() {
        let (k, v) = tok.split_once('=').unwrap_or((tok, ""));
        match k {
            "entries" if v == "*" => star = true,
            "entries" => list.extend(v.split(',').map(|n| Entry {
                link: n.into(),
                target: n.into(),
            })),
            "map" => {
                let (l, t) = v.split_once(':').unwrap();
                list.push(Entry {
                    link: l.into(),
                    target: t.into(),
                });
            }
            "exclude" => exclude = v.split(',').map(String::from).collect(),
            "style" => {
                farm.link_style = if v == "relative" {
                    LinkStyle::Relative
                } else {
                    LinkStyle::Absolute
                }
            }
            "link_dir" => farm.link_dir = v.into(),
            "create_targets" => farm.create_targets = true,
            "prune" => farm.prune = v != "false",
            "neighbours" => farm.neighbours.extend(v.split(',').map(String::from)),
            "on_conflict" => {
                farm.on_conflict = match v {
                    "keep" => OnConflict::Keep,
                    "quarantine" => OnConflict::Quarantine,
                    _ => OnConflict::Adopt,
                }
            }
            "owner" => {
                let (u, g) = v.split_once(':').unwrap();
                farm.owner = Some(Owner {
                    uid: u.parse().ok(),
                    gid: g.parse().ok(),
                });
            }
            other => panic!("unknown farm option {other}"),
        }
    }
    farm.entries = if star {
        Entries::All {
            exclude: NameFilter::new(exclude.iter().map(String::as_str)).unwrap(),
            patterns: exclude,
        }
    } else {
        Entries::List(list)
    };
    farm
}

fn parse_target(spec: &str) -> TargetObs {
    match spec.trim() {
        "MISSING" => return TargetObs::Missing,
        "NOTDIR" => return TargetObs::NotDir,
        "UNREADABLE" => return TargetObs::Unreadable("Permission denied".into()),
        _ => {}
    }
    let mut m = BTreeMap::new();
    for tok in spec.split_whitespace() {
        let (name, kind) = if let Some(n) = tok.strip_suffix('/') {
            (n, TargetKind::Dir)
        } else if let Some(n) = tok.strip_suffix('@') {
            (n, TargetKind::LinkToDir)
        } else {
            (tok.trim_end_matches('!'), TargetKind::Other)
        };
        m.insert(OsString::from(name), kind);
    }
    TargetObs::Present(m)
}

fn time_of(tok: &str) -> SystemTime {
    at(tok
        .trim()
        .trim_start_matches('@')
        .parse()
        .unwrap_or_else(|_| panic!("bad time {tok}")))
}

fn parse_links(spec: &str) -> LinkDirObs {
    match spec.trim() {
        "MISSING" => return LinkDirObs::Missing { parent_exists: true },
        "MISSING-NOPARENT" => return LinkDirObs::Missing { parent_exists: false },
        "SYMLINK" => return LinkDirObs::Symlink("/L is a symlink".into()),
        "NOTDIR" => return LinkDirObs::NotDir,
        _ => {}
    }
    let mut m = BTreeMap::new();
    for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, node) = if let Some((name, rest)) = item.split_once(" -> ") {
            let mut parts = rest.split_whitespace();
            let text = PathBuf::from(parts.next().unwrap());
            let owner = parts.next().map(|o| {
                let (u, g) = o.trim_start_matches("owner=").split_once(':').unwrap();
                (u.parse().unwrap(), g.parse().unwrap())
            });
            (name, Node::Symlink { text, owner })
        } else if let Some((name, rest)) = item.split_once("/ ") {
            let (t, kids) = match rest.split_once('[') {
                Some((t, k)) => (t, Some(k.trim_end_matches(']'))),
                None => (rest, None),
            };
            let children = kids.map(|k| {
                k.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|c| {
                        let error = c.ends_with('!').then(|| "Permission denied".to_string());
                        let exists = c.ends_with('+');
                        let c = c.trim_end_matches(['!', '+']);
                        let (n, t) = c.split_once('@').unwrap_or((c, "0"));
                        Child {
                            name: n.into(),
                            newest: time_of(t),
                            exists_in_target: exists,
                            error,
                        }
                    })
                    .collect()
            });
            (
                name,
                Node::Dir {
                    newest: time_of(t),
                    children,
                },
            )
        } else {
            let mut p = item.split_whitespace();
            let name = p.next().unwrap();
            let kind = p.next().unwrap();
            let newest = time_of(p.next().unwrap_or("@0"));
            (
                name,
                if kind == "file" {
                    Node::File { newest }
                } else {
                    Node::Other { newest }
                },
            )
        };
        m.insert(OsString::from(name), node);
    }
    LinkDirObs::Present(m)
}

fn parse_cases(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut cur: Option<Case> = None;
    let mut in_expect = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if let Some(title) = line.strip_prefix("## ") {
            cases.extend(cur.take());
            cur = Some(Case {
                title: title.into(),
                line: i + 1,
                farm: parse_farm(""),
                obs: Observed {
                    target: TargetObs::Present(BTreeMap::new()),
                    link_dir: LinkDirObs::Present(BTreeMap::new()),
                },
                now: 1000,
                adopt_after: 10,
                expect: vec![],
                state: None,
                recheck: None,
            });
            in_expect = false;
            continue;
        }
        let Some(c) = cur.as_mut() else { continue };
        if line.trim().is_empty() {
            continue;
        }
        if in_expect && raw.starts_with("  ") {
            c.expect.push(line.trim().to_string());
            continue;
        }
        in_expect = false;
        let (k, v) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("line {}: no key", i + 1));
        let v = v.trim();
        match k {
            "farm" => c.farm = parse_farm(v),
            "target" => c.obs.target = parse_target(v),
            "links" => c.obs.link_dir = parse_links(v),
            "now" => c.now = v.parse().unwrap(),
            "adopt_after" => c.adopt_after = v.parse().unwrap(),
            "expect" => in_expect = true,
            "state" => c.state = Some(v.into()),
            "recheck" => {
                c.recheck = Some(if v == "none" {
                    None
                } else {
                    Some(v.parse().unwrap())
                })
            }
            other => panic!("line {}: unknown key {other}", i + 1),
        }
    }
    cases.extend(cur);
    cases
}

#[test]
fn plan_cases() {
    let text = include_str!("plan_cases.txt");
    let cases = parse_cases(text);
    assert!(cases.len() >= 30, "only {} cases parsed", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let p = plan(&c.farm, &c.obs, at(c.now), Duration::from_secs(c.adopt_after));
        let mut got: Vec<String> = p.actions.iter().map(|a| a.to_string()).collect();
        got.extend(p.findings.iter().map(|f| format!("! {f}")));
        let mut problems = Vec::new();
        if got != c.expect {
            problems.push(format!(
                "expected:\n    {}\n  got:\n    {}",
                c.expect.join("\n    "),
                got.join("\n    ")
            ));
        }
        if let Some(s) = &c.state {
            if s != p.state.as_str() {
                problems.push(format!("state: expected {s}, got {}", p.state.as_str()));
            }
        }
        if let Some(r) = c.recheck {
            let got_r = p
                .recheck_at
                .map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
            if got_r != r {
                problems.push(format!("recheck: expected {r:?}, got {got_r:?}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "line {}: {}\n  {}",
                c.line,
                c.title,
                problems.join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
