//! The inbox's filesystem side (SPEC §10) against real directories: every move, and a hostile
//! case for each safety rule (symlinks, FIFOs, sockets, hard links to files outside, files changed
//! or renamed during the check, folders replaced by symlinks, names no program expects).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use linkfarm_core::inbox::decide::{unchanged, FileType};
use linkfarm_core::inbox::{Inbox, InboxFolder};
use linkfarm_core::parse_config;
use linkfarm_fs::inbox::{InboxFs, NotMoved, NotTaken, Seen};

use linkfarm_testsupport::NoIds;

struct T {
    dir: tempfile::TempDir,
    inbox: Inbox,
}

fn test_dir() -> tempfile::TempDir {
    match std::env::var_os("LINKFARM_TEST_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// `root/models/{loras,vae}` and an inbox `root/inbox` with folders loras and vae.
fn setup(extra: &str) -> T {
    let dir = test_dir();
    for d in ["models/loras", "models/vae"] {
        fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let cfg = dir.path().join("linkfarm.yaml");
    let text = format!("version: 1\ninboxes:\n  - name: in\n    dir: inbox\n    target_dir: models\n    folders: [loras, vae]\n{extra}");
    let c = parse_config(&text, &cfg, &NoIds).unwrap();
    T {
        inbox: c.inboxes[0].clone(),
        dir,
    }
}

impl T {
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn open(&self) -> InboxFs {
        let mut fs = InboxFs::open(&self.inbox).unwrap();
        for f in self.inbox.explicit().unwrap() {
            fs.ensure_folder(f).unwrap();
        }
        fs
    }
}

fn loras() -> InboxFolder {
    InboxFolder {
        folder: "loras".into(),
        target: "loras".into(),
    }
}

fn seen_named(fs: &InboxFs, rel: &Path) -> Seen {
    let w = fs.walk(&loras());
    w.seen
        .into_iter()
        .find(|s| s.rel == rel)
        .unwrap_or_else(|| panic!("{} not seen", rel.display()))
}

/// Every regular file under `root` with its content, for "nothing lost".
fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push((e.path(), fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn open_makes_dir_folders_and_a_private_dir_only_root_enters() {
    let t = setup("");
    let _fs = t.open();
    assert!(t.p("inbox/loras").is_dir() && t.p("inbox/vae").is_dir());
    let m = fs::metadata(t.p("inbox/.linkfarm-private")).unwrap();
    assert_eq!(m.mode() & 0o777, 0o700);
}

#[test]
fn a_private_dir_someone_else_may_enter_is_refused() {
    let t = setup("");
    fs::create_dir_all(t.p("inbox/.linkfarm-private")).unwrap();
    fs::set_permissions(t.p("inbox/.linkfarm-private"), fs::Permissions::from_mode(0o777)).unwrap();
    let e = InboxFs::open(&t.inbox).unwrap_err();
    assert!(e.to_string().contains("mode 0777"), "{e}");
}

#[test]
fn a_symlink_where_a_folder_belongs_is_reported_never_followed() {
    let t = setup("");
    fs::create_dir_all(t.p("inbox")).unwrap();
    fs::create_dir(t.p("outside")).unwrap();
    symlink(t.p("outside"), t.p("inbox/loras")).unwrap();
    let mut fs_ = InboxFs::open(&t.inbox).unwrap();
    let e = fs_.ensure_folder(&loras()).unwrap_err();
    assert!(e.to_string().contains("symlink"), "{e}");
    fs::write(t.p("outside/a.safetensors"), b"x").unwrap();
    let w = fs_.walk(&loras());
    assert!(w.seen.is_empty(), "nothing seen through the link: {:?}", w.seen);
    assert!(!w.errors.is_empty());
}

#[test]
fn accept_moves_into_the_target_and_drops_exec_bits() {
    let t = setup("    file_mode: \"0640\"\n");
    let mut fs_ = t.open();
    fs::create_dir_all(t.p("inbox/loras/styles/old")).unwrap();
    fs::write(t.p("inbox/loras/styles/old/a.safetensors"), b"model bytes").unwrap();
    fs::set_permissions(
        t.p("inbox/loras/styles/old/a.safetensors"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let s = seen_named(&fs_, Path::new("styles/old/a.safetensors"));
    assert_eq!(s.candidate.file_type, FileType::Regular);
    let taken = fs_.take(&s).unwrap();
    assert!(
        !t.p("inbox/loras/styles/old/a.safetensors").exists(),
        "out of the clients' reach"
    );
    assert!(taken.private_path.exists());
    assert!(!taken.writer);
    let to = fs_.accept(&taken, OsStr::new("a.safetensors")).unwrap();
    assert_eq!(to, t.p("models/loras/styles/old/a.safetensors"));
    assert_eq!(fs::read(&to).unwrap(), b"model bytes");
    assert_eq!(fs::metadata(&to).unwrap().mode() & 0o7777, 0o640);
    assert_eq!(
        fs::metadata(t.p("models/loras/styles")).unwrap().mode() & 0o777,
        0o755
    );
}

#[test]
fn accept_never_overwrites_a_name_that_appeared() {
    let t = setup("");
    let mut fs_ = t.open();
    fs::write(t.p("inbox/loras/a.safetensors"), b"new").unwrap();
    fs::write(t.p("models/loras/a.safetensors"), b"old").unwrap();
    let taken = fs_.take(&seen_named(&fs_, Path::new("a.safetensors"))).unwrap();
    assert!(matches!(
        fs_.accept(&taken, OsStr::new("a.safetensors")),
        Err(NotMoved::Exists)
    ));
    assert_eq!(fs::read(t.p("models/loras/a.safetensors")).unwrap(), b"old");
    let back = fs_.put_back(taken).unwrap();
    assert_eq!(back, t.p("inbox/loras/a.safetensors"));
    assert_eq!(fs::read(back).unwrap(), b"new");
}

#[test]
fn refuse_writes_why_and_keeps_owner_and_mode() {
    let t = setup("");
    let mut fs_ = t.open();
    fs::write(t.p("inbox/loras/bad.safetensors"), b"cut short").unwrap();
    fs::set_permissions(
        t.p("inbox/loras/bad.safetensors"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let before = fs::metadata(t.p("inbox/loras/bad.safetensors")).unwrap();
    let taken = fs_.take(&seen_named(&fs_, Path::new("bad.safetensors"))).unwrap();
    let to = fs_
        .refuse(&taken, OsStr::new("bad.safetensors"), "it is truncated\n")
        .unwrap();
    assert_eq!(to, t.p("inbox/_refused/loras/bad.safetensors"));
    let after = fs::metadata(&to).unwrap();
    assert_eq!(
        (after.mode(), after.uid(), after.gid()),
        (before.mode(), before.uid(), before.gid())
    );
    assert_eq!(fs::read(&to).unwrap(), b"cut short");
    assert_eq!(
        fs::read_to_string(t.p("inbox/_refused/loras/bad.safetensors.why.txt")).unwrap(),
        "it is truncated\n"
    );
}

#[test]
fn a_hard_link_to_a_file_outside_is_refused_without_touching_the_outside_file() {
    let t = setup("");
    let mut fs_ = t.open();
    fs::write(t.p("secret"), b"root only").unwrap();
    fs::set_permissions(t.p("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::hard_link(t.p("secret"), t.p("inbox/loras/shadow.safetensors")).unwrap();
    let s = seen_named(&fs_, Path::new("shadow.safetensors"));
    assert_eq!(s.candidate.nlink, 2, "look() refuses it as not_plain");
    let taken = fs_.take(&s).unwrap();
    fs_.refuse(&taken, OsStr::new("shadow.safetensors"), "not plain\n")
        .unwrap();
    let m = fs::metadata(t.p("secret")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.nlink()), (0o600, 2));
    assert_eq!(fs::read(t.p("secret")).unwrap(), b"root only");
    assert!(
        fs::read_dir(t.p("models/loras")).unwrap().next().is_none(),
        "nothing in the target"
    );
}

#[test]
fn symlinks_fifos_and_sockets_are_seen_as_what_they_are() {
    let t = setup("");
    let fs_ = t.open();
    symlink("/etc/shadow", t.p("inbox/loras/l.safetensors")).unwrap();
    nix::unistd::mkfifo(
        &t.p("inbox/loras/f.safetensors"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(t.p("inbox/loras/s.safetensors")).unwrap();
    let w = fs_.walk(&loras());
    let mut types: Vec<(String, FileType)> = w
        .seen
        .iter()
        .map(|s| (s.rel.to_string_lossy().into_owned(), s.candidate.file_type))
        .collect();
    types.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        types,
        [
            ("f.safetensors".into(), FileType::Fifo),
            ("l.safetensors".into(), FileType::Symlink),
            ("s.safetensors".into(), FileType::Socket)
        ]
    );
}

#[test]
fn a_file_swapped_for_a_fifo_before_the_move_goes_back_without_blocking() {
    let t = setup("");
    let mut fs_ = t.open();
    fs::write(t.p("inbox/loras/a.safetensors"), b"x").unwrap();
    let s = seen_named(&fs_, Path::new("a.safetensors"));
    fs::remove_file(t.p("inbox/loras/a.safetensors")).unwrap();
    nix::unistd::mkfifo(
        &t.p("inbox/loras/a.safetensors"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    // take() opens it O_NONBLOCK in the private dir: a FIFO does not block, and is not the file seen.
    match fs_.take(&s) {
        Err(NotTaken::Raced(why)) => assert!(why.contains("replaced"), "{why}"),
        other => panic!("{other:?}"),
    }
    let m = fs::symlink_metadata(t.p("inbox/loras/a.safetensors")).unwrap();
    assert!(m.file_type().is_fifo_like(), "the FIFO is back where it was");
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

#[test]
fn a_file_renamed_away_before_the_move_is_not_taken() {
    let t = setup("");
    let mut fs_ = t.open();
    fs::write(t.p("inbox/loras/a.safetensors"), b"x").unwrap();
    let s = seen_named(&fs_, Path::new("a.safetensors"));
    fs::rename(t.p("inbox/loras/a.safetensors"), t.p("inbox/loras/b.safetensors")).unwrap();
    assert!(matches!(fs_.take(&s), Err(NotTaken::Raced(_))));
    assert_eq!(fs::read(t.p("inbox/loras/b.safetensors")).unwrap(), b"x");
}

#[test]
fn a_subfolder_replaced_by_a_symlink_before_the_move_is_not_followed() {
    let t = setup("");
    let mut fs_ = t.open();
    fs::create_dir(t.p("inbox/loras/sub")).unwrap();
    fs::write(t.p("inbox/loras/sub/a.safetensors"), b"x").unwrap();
    let s = seen_named(&fs_, Path::new("sub/a.safetensors"));
    fs::create_dir(t.p("elsewhere")).unwrap();
    fs::rename(t.p("inbox/loras/sub"), t.p("moved")).unwrap();
    fs::write(t.p("elsewhere/a.safetensors"), b"not the client's").unwrap();
    symlink(t.p("elsewhere"), t.p("inbox/loras/sub")).unwrap();
    assert!(matches!(fs_.take(&s), Err(NotTaken::Raced(_))));
    assert_eq!(
        fs::read(t.p("elsewhere/a.safetensors")).unwrap(),
        b"not the client's"
    );
    assert_eq!(fs::read(t.p("moved/a.safetensors")).unwrap(), b"x");
}

#[test]
fn a_file_truncated_or_extended_while_checked_goes_back() {
    for change in [0u64, 100] {
        let t = setup("");
        let mut fs_ = t.open();
        fs::write(t.p("inbox/loras/a.safetensors"), b"0123456789").unwrap();
        // A writer that opened the file before it was taken keeps writing to it.
        let w = fs::OpenOptions::new()
            .write(true)
            .open(t.p("inbox/loras/a.safetensors"))
            .unwrap();
        let taken = fs_.take(&seen_named(&fs_, Path::new("a.safetensors"))).unwrap();
        assert!(taken.writer, "the read lease test sees the writer");
        w.set_len(change).unwrap();
        drop(w);
        let (now, writer) = fs_.restat(&taken).unwrap();
        assert!(!writer);
        assert!(!unchanged(&taken.stamp, &now, writer), "size {change}");
        let back = fs_.put_back(taken).unwrap();
        assert_eq!(fs::metadata(back).unwrap().len(), change);
    }
}

#[test]
fn an_unchanged_file_has_an_equal_stamp_and_no_writer() {
    let t = setup("");
    let mut fs_ = t.open();
    fs::write(t.p("inbox/loras/a.safetensors"), b"0123456789").unwrap();
    let taken = fs_.take(&seen_named(&fs_, Path::new("a.safetensors"))).unwrap();
    let (now, writer) = fs_.restat(&taken).unwrap();
    assert!(unchanged(&taken.stamp, &now, writer));
}

#[test]
fn names_with_a_newline_invalid_utf8_or_255_bytes_round_trip() {
    let t = setup("");
    let mut fs_ = t.open();
    let long = OsString::from("a".repeat(243) + ".safetensors");
    let names = [
        OsString::from("bad\nname.safetensors"),
        OsString::from_vec(b"caf\xe9.gguf".to_vec()),
        long.clone(),
    ];
    for n in &names {
        fs::write(t.p("inbox/loras").join(n), n.as_bytes()).unwrap();
    }
    for (i, n) in names.iter().enumerate() {
        let taken = fs_.take(&seen_named(&fs_, Path::new(n))).unwrap();
        if i == 2 {
            // A 255-byte name refused is shortened so that its .why.txt fits (decide::refused_name).
            let short = linkfarm_core::inbox::decide::refused_name(n, &|_| false);
            let to = fs_.refuse(&taken, &short, "why\n").unwrap();
            assert_eq!(fs::read(&to).unwrap(), n.as_bytes());
            assert!(to
                .with_file_name(linkfarm_core::inbox::decide::why_name(&short))
                .exists());
        } else {
            let to = fs_.accept(&taken, n).unwrap();
            assert_eq!(fs::read(&to).unwrap(), n.as_bytes());
        }
    }
}

#[test]
fn a_crash_mid_check_returns_the_file_to_the_inbox_at_start_up() {
    let t = setup("");
    let mut fs_ = t.open();
    fs::create_dir(t.p("inbox/loras/sub")).unwrap();
    fs::write(t.p("inbox/loras/sub/a.safetensors"), b"x").unwrap();
    let before = files(t.dir.path());
    let taken = fs_
        .take(&seen_named(&fs_, Path::new("sub/a.safetensors")))
        .unwrap();
    // The client removed the emptied subfolder meanwhile: it is made again.
    fs::remove_dir(t.p("inbox/loras/sub")).unwrap();
    drop(taken);
    drop(fs_);
    let mut fs2 = t.open();
    let (back, errors) = fs2.recover();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(back, [t.p("inbox/loras/sub/a.safetensors")]);
    assert_eq!(files(t.dir.path()), before, "every file in exactly one place");
    assert_eq!(fs::read_dir(t.p("inbox/.linkfarm-private")).unwrap().count(), 0);
}

#[test]
fn put_back_onto_a_name_taken_meanwhile_picks_a_new_name() {
    let t = setup("");
    let mut fs_ = t.open();
    fs::write(t.p("inbox/loras/a.safetensors"), b"first").unwrap();
    let taken = fs_.take(&seen_named(&fs_, Path::new("a.safetensors"))).unwrap();
    fs::write(t.p("inbox/loras/a.safetensors"), b"second").unwrap();
    let back = fs_.put_back(taken).unwrap();
    assert_eq!(back, t.p("inbox/loras/a (2).safetensors"));
    assert_eq!(fs::read(back).unwrap(), b"first");
    assert_eq!(fs::read(t.p("inbox/loras/a.safetensors")).unwrap(), b"second");
}

#[test]
fn ignored_names_are_never_seen_and_empty_subfolders_are_found_and_removed() {
    let t = setup("");
    let mut fs_ = t.open();
    fs::write(t.p("inbox/loras/a.safetensors.part"), b"x").unwrap();
    fs::write(t.p("inbox/loras/.linkfarm-tmp.x"), b"x").unwrap();
    fs::create_dir_all(t.p("inbox/loras/empty/inner")).unwrap();
    let w = fs_.walk(&loras());
    assert!(w.seen.is_empty(), "{:?}", w.seen);
    assert_eq!(w.empty_dirs.len(), 1);
    assert_eq!(w.empty_dirs[0].rel, Path::new("empty/inner"));
    assert!(fs_.remove_empty(&w.empty_dirs[0]).unwrap());
    let w = fs_.walk(&loras());
    assert_eq!(w.empty_dirs[0].rel, Path::new("empty"));
    assert!(fs_.remove_empty(&w.empty_dirs[0]).unwrap());
    assert!(t.p("inbox/loras").is_dir(), "dir/<folder> stays");
    assert!(
        fs_.walk(&loras()).empty_dirs.is_empty(),
        "the folder itself is never listed"
    );
}

#[test]
fn a_subfolder_that_got_a_file_is_not_removed() {
    let t = setup("");
    let mut fs_ = t.open();
    fs::create_dir(t.p("inbox/loras/sub")).unwrap();
    let w = fs_.walk(&loras());
    fs::write(t.p("inbox/loras/sub/new.safetensors"), b"x").unwrap();
    assert!(!fs_.remove_empty(&w.empty_dirs[0]).unwrap());
    assert!(t.p("inbox/loras/sub/new.safetensors").exists());
}

#[test]
fn a_subfolder_that_is_a_symlink_is_seen_as_one_and_not_entered() {
    let t = setup("");
    let fs_ = t.open();
    fs::create_dir(t.p("outside")).unwrap();
    fs::write(t.p("outside/a.safetensors"), b"x").unwrap();
    symlink(t.p("outside"), t.p("inbox/loras/sub")).unwrap();
    let w = fs_.walk(&loras());
    assert_eq!(w.seen.len(), 1);
    assert_eq!(
        (w.seen[0].rel.as_path(), w.seen[0].candidate.file_type),
        (Path::new("sub"), FileType::Symlink)
    );
}

#[test]
fn a_writer_is_seen_in_place_before_any_move() {
    let t = setup("");
    let fs_ = t.open();
    fs::write(t.p("inbox/loras/a.safetensors"), b"x").unwrap();
    let s = seen_named(&fs_, Path::new("a.safetensors"));
    assert_eq!(fs_.writer_in_place(&s), Some(false));
    let w = fs::OpenOptions::new()
        .append(true)
        .open(t.p("inbox/loras/a.safetensors"))
        .unwrap();
    assert_eq!(fs_.writer_in_place(&s), Some(true));
    drop(w);
    // Swapped for a FIFO: opened without blocking, and not the file seen.
    fs::remove_file(t.p("inbox/loras/a.safetensors")).unwrap();
    nix::unistd::mkfifo(
        &t.p("inbox/loras/a.safetensors"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    assert_eq!(fs_.writer_in_place(&s), None);
}
