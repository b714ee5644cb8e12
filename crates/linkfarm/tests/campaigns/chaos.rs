//! Chaos: a seeded random driver breaks the trees while the daemon runs (links deleted,
//! retargeted, hijacked, replaced by folders and files; uploads; target folders added, renamed,
//! removed; link_dir and target_dir renamed away and back; config edits and SIGHUP), then waits for
//! quiet and checks the invariants: converged, the multiset of file contents under the test root
//! unchanged except for what the driver wrote, nothing outside the root touched, no temp names.

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
    ops: [u64; 13],
    /// Contents of every file the driver wrote successfully.
    expected: std::collections::BTreeSet<String>,
    /// What the driver did, written out when a seed fails.
    trace: Vec<String>,
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
    fn write_config(&self) {
        let text = format!(
            "version: 1\nfarms:\n  - name: chaos\n    target_dir: models\n    link_dir: share/up\n    entries: \"*\"\n    \
             on_conflict: {}\nsettings:\n  adopt_after: 0s\n  resync_interval: 0\n  state_file: state.json\n",
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
    fn op(&mut self, daemon: Pid) {
        let kind = self.rng.below(13) as usize;
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
            _ => {
                let _ = kill(daemon, Signal::SIGHUP);
            }
        }
    }
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
    let mut total_ops = [0u64; 13];
    let mut rounds = 0;
    let mut files = 0;
    let mut errors: Vec<String> = Vec::new();
    let mut transient = 0;
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
            ops: [0; 13],
            expected: Default::default(),
            trace: Vec::new(),
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
        while done < ops_per_seed {
            for _ in 0..round.min(ops_per_seed - done) {
                w.op(pid);
                done += 1;
            }
            rounds += 1;
            // Wait for quiet: the daemon converges the farm by itself.
            let cfg = root.join("linkfarm.yaml");
            let t = Instant::now();
            loop {
                if states(&cfg) == ["converged"] {
                    break;
                }
                assert!(daemon.try_wait().unwrap().is_none(), "the daemon died ({replay})");
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "not converged after 30 s: {:?} ({replay})",
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
            let skip = ["state.json", "linkfarm.yaml", ".linkfarm.yaml"];
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
            let temps = temp_leftovers(&root);
            assert!(temps.is_empty(), "leftovers {temps:?} ({replay})");
        }
        files += w.expected.len();
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
         target_dir away, config edit, SIGHUP] = {total_ops:?}; {files} files tracked; {} action errors logged; {transient} inventory walks raced a move and were repeated; 0 files lost, 0 writes outside, 0 leftovers",
        started.elapsed(),
        errors.len()
    );
}
