//! The state file (SPEC §5): the daemon replaces it atomically after each pass; `linkfarm status`
//! reads it. A file whose pid is not a running linkfarm means "not running".

use std::io::Write as _;
use std::path::Path;
use std::time::SystemTime;

use linkfarm_core::time::rfc3339;
use serde_json::{json, Value};

use super::farm::FarmRt;
use crate::metrics::{repairs_json, Histogram};
use crate::ExitCode;

/// The state as JSON, with the numbers of the metrics file (SPEC §12) for scripts without
/// Prometheus.
pub fn state_json(
    started: SystemTime,
    config: &Path,
    farms: &[FarmRt],
    reload_error: Option<&str>,
    passes: &Histogram,
) -> Value {
    let farms: Vec<Value> = farms
        .iter()
        .map(|f| {
            let (s, rt) = (f.status(), f.runtime());
            json!({
                "name": f.farm().name,
                "state": f.state().as_str(),
                "links_total": s.links_total,
                "links_ok": s.links_ok,
                "passes": rt.passes(),
                "repairs": s.repairs,
                "repairs_by": repairs_json(&s.repairs_by),
                "failures": s.failures,
                "last_pass": s.last_pass.map(rfc3339),
                "last_repair": s.last_repair.as_ref().map(|(t, _)| rfc3339(*t)),
                "last_repair_action": s.last_repair.as_ref().map(|(_, a)| a.clone()),
                "last_error": rt.last_error(),
                "findings": s.findings,
                "flapping": s.flapping,
                "polling": rt.poll_setting(),
                "filesystem": f.caps().map(|c| json!({
                    "exchange": c.exchange,
                    "noreplace": c.noreplace,
                    "link": c.link,
                    "fallback": c.fallback(),
                    "window": c.window(),
                })),
            })
        })
        .collect();
    json!({
        "pid": std::process::id(),
        "started": rfc3339(started),
        "updated": rfc3339(SystemTime::now()),
        "config": config.to_string_lossy(),
        "reload_error": reload_error,
        "pass_duration_seconds": passes.to_json(),
        "farms": farms,
    })
}

/// Replaces `path` atomically with `value` (temp file in the same directory, then rename).
pub fn write(path: &Path, value: &Value) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    // The directory is made only when it is missing (the first write, or someone removed it):
    // this runs after every pass that changed something.
    let mut f = match std::fs::File::create(&tmp) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            std::fs::File::create(&tmp)?
        }
        r => r?,
    };
    let mut text = serde_json::to_string_pretty(value).expect("plain JSON");
    text.push('\n');
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Removes temp files of the state file left by a daemon killed while writing it
/// (`<state_file>.tmp.<pid>`); only regular files of that exact pattern are touched.
pub fn remove_leftovers(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!("{}.tmp.", name.to_string_lossy());
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        let pid_part = n.strip_prefix(&prefix);
        if pid_part.is_some_and(|p| p.parse::<u32>().is_ok()) && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether `pid` is a live linkfarm process.
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "linkfarm")
}

/// `linkfarm status`.
pub fn status(state_file: &Path, json_out: bool) -> ExitCode {
    let parsed: Option<Value> = std::fs::read(state_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(v) = parsed else {
        if json_out {
            println!(
                "{}",
                json!({ "running": false, "state_file": state_file.to_string_lossy() })
            );
        } else {
            println!(
                "linkfarm is not running (no state file at {})",
                state_file.display()
            );
        }
        return ExitCode::Error;
    };
    let pid = v["pid"].as_u64().unwrap_or(0);
    let running = pid != 0 && alive(pid);
    let all_converged = v["farms"]
        .as_array()
        .is_some_and(|f| f.iter().all(|x| x["state"] == "converged"));
    let inboxes = crate::inbox::read_status(state_file).unwrap_or_default();
    let inbox_conflict = inboxes.iter().any(|i| i["conflict"] == true);
    if json_out {
        let mut out = v.clone();
        out["running"] = running.into();
        out["inboxes"] = inboxes.clone().into();
        println!("{}", serde_json::to_string_pretty(&out).expect("plain JSON"));
    } else if !running {
        println!(
            "linkfarm is not running (pid {pid} in {} is gone; last update {})",
            state_file.display(),
            v["updated"].as_str().unwrap_or("?")
        );
    } else {
        println!(
            "linkfarm is running (pid {pid}, since {}, config {})",
            v["started"].as_str().unwrap_or("?"),
            v["config"].as_str().unwrap_or("?")
        );
        if let Some(e) = v["reload_error"].as_str() {
            println!("  last reload failed, the previous config is in force:\n  {e}");
        }
        for f in v["farms"].as_array().into_iter().flatten() {
            println!(
                "farm {}: {} ({}/{} links ok, {} repairs, last {})",
                f["name"].as_str().unwrap_or("?"),
                f["state"].as_str().unwrap_or("?"),
                f["links_ok"],
                f["links_total"],
                f["repairs"],
                f["last_repair"].as_str().unwrap_or("never")
            );
            for x in f["findings"].as_array().into_iter().flatten() {
                println!("  ! {}", x.as_str().unwrap_or_default());
            }
            let fs = &f["filesystem"];
            if fs["exchange"] == false || fs["noreplace"] == false {
                println!(
                    "  filesystem fallback: {}; window: {}",
                    fs["fallback"].as_str().unwrap_or("?"),
                    fs["window"].as_str().unwrap_or("?")
                );
            }
            if let Some(e) = f["last_error"].as_str() {
                println!("  error: {e}");
            }
        }
        for i in &inboxes {
            print!("{}", crate::inbox::text(i["name"].as_str().unwrap_or("?"), i));
        }
    }
    // Pending uploads do not count; an inbox in conflict does (SPEC §10).
    match (running, all_converged && !inbox_conflict) {
        (false, _) => ExitCode::Error,
        (true, true) => ExitCode::Ok,
        (true, false) => ExitCode::NotConverged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_makes_a_missing_directory_and_replaces_the_file_whole() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("run/linkfarm/state.json");
        write(&path, &serde_json::json!({"pid": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\n  \"pid\": 1\n}\n");
        // Removed while the daemon runs (a tmpfs cleaner, an admin): the next write makes it again.
        std::fs::remove_dir_all(t.path().join("run")).unwrap();
        write(&path, &serde_json::json!({"pid": 2})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\n  \"pid\": 2\n}\n");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("state.json")],
            "no temp file left"
        );
    }
}
