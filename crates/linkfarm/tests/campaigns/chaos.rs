//! Chaos: a seeded random driver breaks the trees while the daemon runs (links deleted,
//! retargeted, hijacked, replaced by folders and files; uploads; target folders added, renamed,
//! removed; link_dir and target_dir renamed away and back; config edits and SIGHUP), then waits for
//! quiet and checks the invariants: converged, the multiset of file contents under the test root
//! unchanged except for what the driver wrote, nothing outside the root touched, no temp names.
//! An inbox (SPEC §10) on the same models takes drops meanwhile: valid models, damaged ones, and
//! growing files written a chunk per operation through a descriptor held open. Each ends in
//! exactly one place, no damaged file ever reaches the models, every valid one does (unless the
//! driver moved its folder away), and a file open for writing is never moved.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::*;

struct World {
    root: PathBuf,
    outside: PathBuf,
    rng: Rng,
    counter: u64,
    policy: &'static str,
    ops: [u64; OPS],
    /// Contents of every file the driver wrote successfully.
    expected: std::collections::BTreeSet<String>,
    /// What the driver did, written out when a seed fails.
    trace: Vec<String>,
    /// Contents of the valid and the damaged files dropped into the inbox.
    valid: std::collections::BTreeSet<String>,
    damaged: std::collections::BTreeSet<String>,
    /// Growing files: path, the descriptor held open, the whole content, bytes written so far.
    growing: Vec<Growing>,
    /// A growing file found moved while it was open for writing (SPEC §10 complete).
    moved_while_open: Vec<String>,
}

const OPS: usize = 17;

struct Growing {
    path: PathBuf,
    file: fs::File,
    ino: u64,
    content: Vec<u8>,
    written: usize,
}

/// A valid safetensors file: one F32 tensor named `tag` of `n` values.
fn safetensors(tag: &str, n: usize) -> Vec<u8> {
    let header = format!(
        r#"{{"{tag}":{{"dtype":"F32","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
        n * 4
    );
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend(header.as_bytes());
    f.resize(f.len() + n * 4, b'7');
    f
}

impl World {
    fn models(&self) -> PathBuf {
        self.root.join("models")
    }
    fn up(&self) -> PathBuf {
        self.root.join("share/up")
    }
    fn content(&mut self) -> String {
        self.counter += 1;
        format!("chaos-{}", self.counter)
    }
    /// Writes a new file with fresh content; records it when the write succeeded.
    fn new_file(&mut self, path: &Path) {
        let c = self.content();
        let r = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(c.as_bytes())
            });
        self.trace
            .push(format!("  new file {} with {c}: {r:?}", path.display()));
        if r.is_ok() {
            self.expected.insert(c);
        }
    }
    fn inbox(&self) -> PathBuf {
        self.root.join("share/inbox")
    }
    fn write_config(&self) {
        let text = format!(
            "version: 1\nfarms:\n  - name: chaos\n    target_dir: models\n    link_dir: share/up\n    entries: \"*\"\n    \
             on_conflict: {}\ninboxes:\n  - name: drops\n    dir: share/inbox\n    target_dir: models\n    settle: 0s\n\
             settings:\n  adopt_after: 0s\n  resync_interval: 0\n  state_file: state.json\n  upload_log: uploads.jsonl\n",
            self.policy
        );
        let tmp = self.root.join(".linkfarm.yaml.tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(tmp, self.root.join("linkfarm.yaml")).unwrap();
    }
    /// Removes the symlink at `l`, and only a symlink. A plain "is it a link? then unlink" is a
    /// check-then-act race: linkfarm's exchange-back (SPEC §4) can put a client's file at `l` in
    /// between, and the driver would delete that file itself. So the driver does what linkfarm
    /// does: move the entry aside, check it, and put back anything that is not a symlink.
    fn take_link(&mut self, l: &Path) -> bool {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        let aside = self.root.join("share/.chaos-aside");
        if renameat2(AT_FDCWD, l, AT_FDCWD, &aside, RenameFlags::RENAME_NOREPLACE).is_err() {
            return false;
        }
        if fs::symlink_metadata(&aside).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&aside).unwrap();
            return true;
        }
        if renameat2(AT_FDCWD, &aside, AT_FDCWD, l, RenameFlags::RENAME_NOREPLACE).is_err() {
            // Something new is at `l` already: keep the object in the root, out of the way.
            self.counter += 1;
            fs::rename(
                &aside,
                self.root.join("trash").join(format!("aside-{}", self.counter)),
            )
            .unwrap();
        }
        false
    }

    fn names(&self, dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
    fn pick(&mut self, dir: &Path) -> Option<String> {
        let names: Vec<String> = self
            .names(dir)
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect();
        (!names.is_empty()).then(|| names[self.rng.below(names.len() as u64) as usize].clone())
    }

    /// One random operation. Never deletes a file; touches only the test root (and reads outside).
    /// An inbox folder to drop into: one named like a model folder (made by the daemon, or by
    /// the driver when the daemon has not made it yet).
    fn drop_dir(&mut self) -> Option<PathBuf> {
        let models = self.models();
        let t = self.pick(&models)?;
        let d = self.inbox().join(t);
        fs::create_dir_all(&d).ok()?;
        Some(d)
    }

    /// Drops a file into the inbox: valid, or damaged (truncated, or an extension not accepted).
    fn drop_file(&mut self, valid: bool) {
        let Some(dir) = self.drop_dir() else { return };
        let tag = self.content();
        let (name, bytes) = if valid {
            (
                format!("{tag}.safetensors"),
                safetensors(&tag, 1 + self.rng.below(64) as usize),
            )
        } else if self.rng.chance(70) {
            let mut b = safetensors(&tag, 2 + self.rng.below(64) as usize);
            b.truncate(b.len() - 1 - self.rng.below(4) as usize);
            (format!("{tag}.safetensors"), b)
        } else {
            (format!("{tag}.txt"), tag.clone().into_bytes())
        };
        let r = fs::write(dir.join(&name), &bytes);
        self.trace.push(format!("  drop {name} valid={valid}: {r:?}"));
        if r.is_ok() {
            let c = String::from_utf8_lossy(&bytes).into_owned();
            self.expected.insert(c.clone());
            if valid {
                self.valid.insert(c);
            } else {
                self.damaged.insert(c);
            }
        }
    }

    /// Starts a growing file: created, its header written, the descriptor kept open.
    fn start_growing(&mut self) {
        use std::io::Write;
        use std::os::unix::fs::MetadataExt;
        let Some(dir) = self.drop_dir() else { return };
        let tag = self.content();
        let content = safetensors(&tag, 4096 + self.rng.below(4096) as usize);
        let path = dir.join(format!("{tag}.safetensors"));
        let Ok(mut file) = fs::OpenOptions::new().write(true).create_new(true).open(&path) else {
            return;
        };
        let written = 100;
        file.write_all(&content[..written]).unwrap();
        let ino = file.metadata().unwrap().ino();
        self.trace.push(format!("  growing {}", path.display()));
        self.growing.push(Growing {
            path,
            file,
            ino,
            content,
            written,
        });
    }

    /// Appends a chunk to a growing file (the last chunk ends it), checking first that the file is
    /// still where the writer made it.
    fn grow(&mut self, finish: bool) {
        use std::io::Write;
        use std::os::unix::fs::MetadataExt;
        if self.growing.is_empty() {
            return;
        }
        let i = self.rng.below(self.growing.len() as u64) as usize;
        let g = &mut self.growing[i];
        if fs::symlink_metadata(&g.path).map(|m| m.ino()).ok() != Some(g.ino) {
            self.moved_while_open.push(g.path.display().to_string());
        }
        let end = if finish {
            g.content.len()
        } else {
            (g.written + 2000).min(g.content.len())
        };
        g.file.write_all(&g.content[g.written..end]).unwrap();
        g.written = end;
        if end == g.content.len() {
            let g = self.growing.swap_remove(i);
            let c = String::from_utf8_lossy(&g.content).into_owned();
            self.trace.push(format!("  finished {}", g.path.display()));
            self.expected.insert(c.clone());
            self.valid.insert(c);
        }
    }

    fn op(&mut self, daemon: Pid) {
        let kind = self.rng.below(OPS as u64) as usize;
        self.ops[kind] += 1;
        self.trace.push(format!("op {kind} (counter {})", self.counter));
        let up = self.up();
        let models = self.models();
        match kind {
            0 => {
                // delete a link
                if let Some(n) = self.pick(&up) {
                    self.take_link(&up.join(&n));
                }
            }
            1 | 2 => {
                // retarget a link to another target (managed), or hijack it (foreign)
                if let (Some(n), Some(t)) = (self.pick(&up), self.pick(&models)) {
                    let l = up.join(&n);
                    if self.take_link(&l) {
                        let text = if kind == 1 {
                            models.join(t)
                        } else {
                            self.outside.join("victim")
                        };
                        let _ = symlink(&text, &l);
                    }
                }
            }
            3 => {
                // a client deletes a link and makes a real folder with files there
                if let Some(n) = self.pick(&up) {
                    let l = up.join(&n);
                    if self.take_link(&l) && fs::create_dir(&l).is_ok() {
                        for _ in 0..1 + self.rng.below(3) {
                            let name = format!("f{}.bin", self.counter);
                            self.new_file(&l.join(name));
                        }
                    }
                }
            }
            4 => {
                // a file where a link was
                if let Some(n) = self.pick(&up) {
                    let l = up.join(&n);
                    if self.take_link(&l) {
                        self.new_file(&l);
                    }
                }
            }
            5 => {
                // an upload through a link (only through one that points into the models)
                if let Some(n) = self.pick(&up) {
                    let l = up.join(&n);
                    let into_models = fs::read_link(&l).is_ok_and(|t| t.starts_with(&models));
                    let real_dir = fs::symlink_metadata(&l).is_ok_and(|m| m.is_dir());
                    if into_models || real_dir {
                        let name = format!("u{}.safetensors", self.counter);
                        self.new_file(&l.join(name));
                    }
                }
            }
            6 => {
                // a new model type folder
                self.counter += 1;
                let t = models.join(format!("type-{}", self.counter));
                if fs::create_dir(&t).is_ok() {
                    self.new_file(&t.join("first.bin"));
                }
            }
            7 => {
                // a model folder renamed
                if let Some(t) = self.pick(&models) {
                    let c = self.counter;
                    let _ = fs::rename(models.join(&t), models.join(format!("{t}-r{c}")));
                    self.counter += 1;
                }
            }
            8 => {
                // a model folder "deleted": moved out of target_dir (its files stay in the root)
                if let Some(t) = self.pick(&models) {
                    let c = self.counter;
                    let _ = fs::rename(models.join(&t), self.root.join("trash").join(format!("{t}-{c}")));
                    self.counter += 1;
                }
            }
            9 => {
                // link_dir renamed away and back (the daemon may recreate it meanwhile)
                let away = self.root.join("share/up.away");
                if fs::rename(&up, &away).is_ok() {
                    std::thread::sleep(Duration::from_micros(self.rng.below(3000)));
                    if fs::rename(&away, &up).is_err() {
                        let c = self.counter;
                        let _ = fs::rename(&away, self.root.join("trash").join(format!("up-{c}")));
                        self.counter += 1;
                    }
                }
            }
            10 => {
                // target_dir away (a volume unmounted) and back
                let away = self.root.join("models.away");
                if fs::rename(&models, &away).is_ok() {
                    std::thread::sleep(Duration::from_micros(self.rng.below(3000)));
                    fs::rename(&away, &models).unwrap();
                }
            }
            11 => {
                self.policy = if self.policy == "adopt" {
                    "quarantine"
                } else {
                    "adopt"
                };
                self.write_config();
            }
            12 => {
                let _ = kill(daemon, Signal::SIGHUP);
            }
            13 => self.drop_file(true),
            14 => self.drop_file(false),
            15 => self.start_growing(),
            _ => self.grow(false),
        }
    }
}

/// Converged and quiet: the farm converged, no upload pending in the inbox and none in flight
/// in its private directory.
fn quiet(cfg: &Path, inbox: &Path) -> bool {
    let o = Command::new(bin())
        .arg("-c")
        .arg(cfg)
        .args(["check", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let farms = v["farms"]
        .as_array()
        .is_some_and(|a| a.iter().all(|f| f["state"] == "converged"));
    let inboxes = v["inboxes"]
        .as_array()
        .is_some_and(|a| a.iter().all(|i| i["pending"] == 0));
    let private = inventory(&inbox.join(".linkfarm-private")).is_empty();
    farms && inboxes && private
}

/// Contents of the files under `dir` (any depth), lossily as text.
fn contents_under(dir: &Path) -> std::collections::BTreeSet<String> {
    inventory(dir)
        .into_keys()
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .collect()
}

fn start(root: &Path, log: &Path) -> Child {
    Command::new(bin())
        .arg("-c")
        .arg(root.join("linkfarm.yaml"))
        .arg("run")
        .stdout(Stdio::null())
        .env("LINKFARM_LOG", "debug")
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn chaos_rounds_keep_every_invariant() {
    let seeds = size("LINKFARM_CHAOS_SEEDS", 3, 100);
    let ops_per_seed = size("LINKFARM_CHAOS_OPS", 150, 1000);
    let first = size("LINKFARM_CHAOS_SEED", 1, 1);
    let round = 25;
    let mut total_ops = [0u64; OPS];
    let mut rounds = 0;
    let mut files = 0;
    let mut errors: Vec<String> = Vec::new();
    let mut transient = 0;
    let (mut drops, mut accepted, mut refused_total, mut trashed) = (0, 0, 0, 0);
    let started = Instant::now();
    for seed in first..first + seeds {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("victim"), "outside data").unwrap();
        fs::create_dir(outside.path().join("dir")).unwrap();
        let before_outside = snapshot(outside.path());
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_owned();
        fs::create_dir_all(root.join("share/up")).unwrap();
        fs::create_dir_all(root.join("trash")).unwrap();
        let mut w = World {
            root: root.clone(),
            outside: outside.path().to_owned(),
            rng: Rng::new(seed),
            counter: 0,
            policy: "adopt",
            ops: [0; OPS],
            expected: Default::default(),
            trace: Vec::new(),
            valid: Default::default(),
            damaged: Default::default(),
            growing: Vec::new(),
            moved_while_open: Vec::new(),
        };
        for t in ["checkpoints", "loras", "vae", "clip"] {
            fs::create_dir_all(w.models().join(t)).unwrap();
            let f = w.models().join(t).join("base.bin");
            w.new_file(&f);
        }
        // A hostile link into the outside tree, present from the start.
        symlink(outside.path(), w.up().join("evil")).unwrap();
        w.write_config();
        let log = std::env::temp_dir().join(format!("chaos-daemon-{seed}-{}.log", std::process::id()));
        let mut daemon = start(&root, &log);
        let pid = Pid::from_raw(daemon.id() as i32);
        // Like systemd, which queues a reload until READY: no SIGHUP before the daemon is up
        // (between exec and main, SIGHUP's default action would end any process).
        wait_for("daemon up", Duration::from_secs(10), || {
            root.join("state.json").exists()
        });
        let replay = format!(
            "replay: LINKFARM_CHAOS_SEEDS=1 LINKFARM_CHAOS_SEED={seed} LINKFARM_CHAOS_OPS={ops_per_seed} \
             cargo test -p linkfarm --test campaigns chaos -- --nocapture"
        );
        let mut done = 0;
        let (mut accepted_now, mut refused_now, mut trashed_now) = (0, 0, 0);
        while done < ops_per_seed {
            for _ in 0..round.min(ops_per_seed - done) {
                w.op(pid);
                done += 1;
            }
            // The growing files' writers finish before the wait for quiet.
            while !w.growing.is_empty() {
                w.grow(true);
            }
            rounds += 1;
            // Wait for quiet: the daemon converges the farm by itself.
            let cfg = root.join("linkfarm.yaml");
            let t = Instant::now();
            loop {
                if quiet(&cfg, &w.inbox()) {
                    break;
                }
                assert!(daemon.try_wait().unwrap().is_none(), "the daemon died ({replay})");
                if t.elapsed() >= Duration::from_secs(30) {
                    let _ = fs::copy(&log, std::env::temp_dir().join("chaos-failed-daemon.log"));
                    let _ = fs::write(
                        std::env::temp_dir().join("chaos-failed-trace.txt"),
                        w.trace.join("\n"),
                    );
                }
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "not converged after 30 s: {:?} ({replay}; daemon log in /tmp/chaos-failed-daemon.log)",
                    {
                        let o = Command::new(bin())
                            .arg("-c")
                            .arg(&cfg)
                            .arg("check")
                            .output()
                            .unwrap();
                        String::from_utf8_lossy(&o.stdout).into_owned()
                    }
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            // Invariants: every file the driver wrote is there exactly once, and nothing else.
            // The walk is not atomic: if the daemon is still finishing a move, the walk can miss
            // a file in flight. A mismatch is looked at again once the daemon is quiet; only a
            // file missing from a quiet tree counts as lost.
            let skip = ["state.", "linkfarm.yaml", ".linkfarm.yaml", "uploads.jsonl"];
            // The reasons written beside refused uploads are the daemon's, not user data.
            let inventory_except = |root: &Path, skip: &[&str]| {
                inventory_where(root, |p| {
                    let name = p.file_name().unwrap_or_default().to_string_lossy();
                    !name.ends_with(".why.txt")
                        && (p.parent() != Some(root) || !skip.iter().any(|s| name.starts_with(s)))
                })
            };
            let mut inv = inventory_except(&root, &skip);
            let complete = |inv: &std::collections::BTreeMap<Vec<u8>, usize>| {
                inv.len() == w.expected.len() && inv.values().all(|v| *v == 1)
            };
            if !complete(&inv) {
                transient += 1;
                std::thread::sleep(Duration::from_millis(300));
                inv = inventory_except(&root, &skip);
            }
            let present: std::collections::BTreeSet<String> = inv
                .iter()
                .map(|(k, v)| {
                    assert_eq!(*v, 1, "a file was duplicated ({replay})");
                    String::from_utf8_lossy(k).into_owned()
                })
                .collect();
            let lost: Vec<&String> = w.expected.difference(&present).collect();
            if !lost.is_empty() {
                let _ = fs::copy(&log, std::env::temp_dir().join("chaos-failed-daemon.log"));
                let where_: Vec<String> = snapshot(&root)
                    .into_iter()
                    .map(|(p, v)| format!("{} {}", p.display(), &v[..v.len().min(40)]))
                    .collect();
                let _ = fs::write(
                    std::env::temp_dir().join("chaos-failed-tree.txt"),
                    where_.join("\n"),
                );
                let _ = fs::write(
                    std::env::temp_dir().join("chaos-failed-trace.txt"),
                    w.trace.join("\n"),
                );
            }
            assert!(
                lost.is_empty(),
                "files lost: {lost:?} ({replay}; daemon log in /tmp/chaos-failed-daemon.log)"
            );
            let extra: Vec<&String> = present.difference(&w.expected).collect();
            assert!(extra.is_empty(), "unexpected files: {extra:?} ({replay})");
            assert_eq!(
                snapshot(outside.path()),
                before_outside,
                "something outside the root changed ({replay})"
            );
            // A temp name can be in flight still: a reload the driver's last config edit asked
            // for opens the inbox again, and its SPEC §14 probe makes and removes symlinks in the
            // private directory. Only one that stays is a leftover.
            let mut temps = temp_leftovers(&root);
            let t = Instant::now();
            while !temps.is_empty() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
                temps = temp_leftovers(&root);
            }
            if !temps.is_empty() {
                let _ = fs::copy(&log, std::env::temp_dir().join("chaos-failed-daemon.log"));
            }
            assert!(
                temps.is_empty(),
                "leftovers {temps:?} ({replay}; daemon log in /tmp/chaos-failed-daemon.log)"
            );
            // The inbox: nothing damaged reached the models; every valid drop did, unless the
            // driver moved its folder away meanwhile (then it sits in the trash or the inbox).
            let in_models = contents_under(&w.models());
            let bad: Vec<&String> = w.damaged.intersection(&in_models).collect();
            assert!(
                bad.is_empty(),
                "damaged uploads reached the models: {bad:?} ({replay})"
            );
            let refused = contents_under(&w.inbox().join("_refused"));
            let trash = contents_under(&root.join("trash"));
            let wrongly: Vec<&String> = w.valid.intersection(&refused).collect();
            assert!(
                wrongly.is_empty(),
                "valid uploads refused: {wrongly:?} ({replay})"
            );
            assert!(
                w.moved_while_open.is_empty(),
                "files moved while open for writing: {:?} ({replay})",
                w.moved_while_open
            );
            accepted_now = w.valid.intersection(&in_models).count();
            refused_now = w.damaged.intersection(&refused).count();
            trashed_now = w.valid.union(&w.damaged).filter(|c| trash.contains(*c)).count();
        }
        files += w.expected.len();
        drops += w.valid.len() + w.damaged.len();
        accepted += accepted_now;
        refused_total += refused_now;
        trashed += trashed_now;
        for (i, n) in w.ops.iter().enumerate() {
            total_ops[i] += n;
        }
        let _ = daemon.kill();
        let _ = daemon.wait();
        let text = fs::read_to_string(&log).unwrap_or_default();
        for l in text.lines().filter(|l| l.contains("ERROR")) {
            errors.push(format!("seed {seed}: {l}"));
        }
        let _ = fs::remove_file(&log);
    }
    for e in errors.iter().take(10) {
        println!("  daemon error: {e}");
    }
    let n: u64 = total_ops.iter().sum();
    println!(
        "chaos campaign: {seeds} seeds, {n} operations in {rounds} rounds, {:?}; ops by kind \
         [del, retarget, hijack, folder, file, upload, new type, rename type, remove type, link_dir away, \
         target_dir away, config edit, SIGHUP, inbox valid, inbox damaged, inbox growing, inbox chunk] = {total_ops:?}; {files} files tracked; \
         {drops} inbox drops: at the end {accepted} accepted and in the models, {refused_total} refused, {trashed} accepted into a folder the driver moved away, \
         the rest waiting in an inbox folder whose model folder is gone; {} action errors logged; {transient} inventory walks raced a move and were repeated; 0 files lost, 0 writes outside, 0 leftovers",
        started.elapsed(),
        errors.len()
    );
}
