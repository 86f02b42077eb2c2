//! Destinations, special files, standard input and output, signals and temporary files
//! (issue 11, findings 1, 2, 3, 7 and 11): dmx never deletes or replaces what it was not asked
//! to write, never reads a device or a FIFO, and leaves no temporary file behind.

use dmx_testkit as common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use assert_cmd::Command;
use common::{Layout, Mode, Tensor};

const DMX: &str = env!("CARGO_BIN_EXE_dmx");

/// A scratch folder with a model file `model.safetensors` and a model folder `folder`.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let tensors = vec![
            Tensor::generated("w", "BF16", &[40, 64], Mode::Weights, 1),
            Tensor::generated("ids", "I64", &[9], Mode::Weights, 3),
        ];
        let file = common::safetensors(&tensors, &Layout::default());
        common::write(&dir.path().join("model.safetensors"), &file);
        common::model_folder(&dir.path().join("folder"), 5);
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// Runs `dmx ARGS` in `cwd` (relative to the scratch folder), expects exit status `code`
    /// and no panic; returns stderr.
    fn run_in(&self, cwd: &str, args: &[&str], code: i32) -> String {
        let out = Command::new(DMX)
            .current_dir(self.path(cwd))
            .args(args)
            .timeout(Duration::from_secs(60))
            .output()
            .expect("run dmx");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "dmx {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "dmx {args:?}: {stderr}");
        stderr
    }

    fn run(&self, args: &[&str], code: i32) -> String {
        self.run_in(".", args, code)
    }

    /// Every `.dmx-tmp-*` file or folder anywhere under the scratch folder.
    fn temps(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for item in std::fs::read_dir(dir).expect("read_dir").flatten() {
                let path = item.path();
                if item.file_name().to_string_lossy().starts_with(".dmx-tmp-") {
                    out.push(path.clone());
                }
                let t = item.file_type().expect("file type");
                if t.is_dir() && !t.is_symlink() {
                    walk(&path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out
    }

    fn assert_no_temps(&self) {
        assert_eq!(self.temps(), Vec::<PathBuf>::new(), "temporary files left");
    }
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo")
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

#[cfg(unix)]
fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    path.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_fifo())
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `decompress --force` into an existing folder replaces the files the archive holds and
/// keeps every other file.
#[test]
fn force_restore_keeps_unrelated_files() {
    let env = Env::new();
    env.run(&["compress", "folder", "f.dmx", "-q"], 0);
    common::write(&env.path("out/unrelated.txt"), b"mine");
    common::write(&env.path("out/sub/notes.md"), b"also mine");
    common::write(&env.path("out/config.json"), b"old config");
    env.run(&["decompress", "f.dmx", "out", "--force", "-q"], 0);
    let mut expected = common::tree(&env.path("folder"));
    expected.push(("unrelated.txt".into(), b"mine".to_vec()));
    expected.push(("sub/notes.md".into(), b"also mine".to_vec()));
    expected.sort();
    assert_eq!(common::tree(&env.path("out")), expected);
    env.assert_no_temps();
}

/// A restore that fails (a corrupt archive) replaces and deletes nothing.
#[test]
fn failed_restore_changes_nothing() {
    let env = Env::new();
    env.run(&["compress", "folder", "f.dmx", "-q"], 0);
    let mut bytes = env.read("f.dmx");
    // Damage the payload of the last file restored, so that earlier files are complete
    // when the error is found.
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(env.path("bad.dmx"), &bytes).unwrap();
    common::write(&env.path("out/unrelated.txt"), b"mine");
    common::write(&env.path("out/config.json"), b"old config");
    common::write(&env.path("out/sub/tokenizer.json"), b"old tokenizer");
    let before = common::tree(&env.path("out"));
    env.run(&["decompress", "bad.dmx", "out", "--force", "-q"], 1);
    assert_eq!(common::tree(&env.path("out")), before);
    env.assert_no_temps();
}

/// A destination that is, holds or lies inside the archive is refused in every spelling, and
/// the archive and everything beside it survive.
#[test]
fn destination_holding_the_archive_is_refused() {
    let env = Env::new();
    env.run(&["compress", "folder", "dst/m.dmx", "-q"], 2);
    std::fs::create_dir_all(env.path("dst/x")).unwrap();
    env.run(&["compress", "folder", "dst/m.dmx", "-q"], 0);
    common::write(&env.path("dst/keep.txt"), b"keep");
    #[cfg(unix)]
    std::os::unix::fs::symlink(env.path("dst"), env.path("link")).unwrap();
    let before = common::tree(&env.path("dst"));
    let cases: &[(&str, &[&str])] = &[
        (".", &["decompress", "dst/m.dmx", "dst", "-f"]),
        (".", &["decompress", "dst/m.dmx", "dst/", "-f"]),
        (".", &["decompress", "dst/m.dmx", "dst/x/..", "-f"]),
        (".", &["decompress", "dst/m.dmx", "dst/nothere/..", "-f"]),
        (".", &["decompress", "dst/m.dmx", ".", "-f"]),
        (".", &["decompress", "dst/m.dmx", "link", "-f"]),
        (".", &["decompress", "link/m.dmx", "dst", "-f"]),
        (".", &["decompress", "dst/m.dmx", "dst/m.dmx", "-f"]),
        (".", &["decompress", "dst/m.dmx", "dst/m.dmx/inner", "-f"]),
        ("dst", &["decompress", "m.dmx", ".", "-f"]),
        ("dst/x", &["decompress", "../m.dmx", "..", "-f"]),
        ("dst/x", &["decompress", "../m.dmx", "../x/..", "-f"]),
    ];
    for (cwd, args) in cases {
        env.run_in(cwd, args, 2);
        assert_eq!(
            common::tree(&env.path("dst")),
            before,
            "{args:?} in {cwd} changed the destination"
        );
    }
    env.assert_no_temps();
}

/// `--force` never replaces a FIFO, a device, a symbolic link or a folder where a file is
/// written, in any command that writes an output.
#[test]
#[cfg(unix)]
fn special_destinations_are_refused() {
    let env = Env::new();
    env.run(&["compress", "model.safetensors", "m.dmx", "-q"], 0);
    env.run(&["compress", "folder", "f.dmx", "-q"], 0);
    mkfifo(&env.path("fifo"));
    std::fs::create_dir(env.path("adir")).unwrap();
    std::fs::write(env.path("target"), b"target").unwrap();
    std::os::unix::fs::symlink("target", env.path("alink")).unwrap();
    let mut dests = vec!["fifo", "adir", "alink"];
    if is_root() {
        dests.push("/dev/null");
    }
    for dest in dests {
        for args in [
            vec!["compress", "model.safetensors", dest],
            vec!["decompress", "m.dmx", dest],
            vec!["extract", "m.dmx", dest, "--tensor", "ids"],
            vec!["verify", "m.dmx", "--report", dest],
            vec![
                "delta-compress",
                "model.safetensors",
                "model.safetensors",
                dest,
            ],
        ] {
            let mut args = args.clone();
            args.extend(["--force", "-q"]);
            let err = env.run(&args, 2);
            assert!(!err.is_empty(), "{args:?}: no message");
        }
    }
    assert!(is_fifo(&env.path("fifo")), "the FIFO was replaced");
    assert!(env.path("adir").is_dir(), "the folder was replaced");
    assert!(
        env.path("alink").symlink_metadata().unwrap().is_symlink(),
        "the link was replaced"
    );
    assert_eq!(env.read("target"), b"target", "written through the link");
    if is_root() {
        use std::os::unix::fs::FileTypeExt;
        let meta = std::fs::metadata("/dev/null").unwrap();
        assert!(meta.file_type().is_char_device(), "/dev/null was replaced");
    }
    // A folder archive never restores onto a FIFO or a file, nor a file archive onto a folder.
    env.run(&["decompress", "f.dmx", "fifo", "-f", "-q"], 2);
    env.run(&["decompress", "f.dmx", "target", "-f", "-q"], 2);
    assert_eq!(env.read("target"), b"target");
    common::write(&env.path("adir/keep"), b"keep");
    env.run(&["decompress", "m.dmx", "adir", "-f", "-q"], 2);
    assert_eq!(env.read("adir/keep"), b"keep");
    assert!(is_fifo(&env.path("fifo")));
    env.assert_no_temps();
}

/// A folder restore refuses to write through a symbolic link to a folder, or to replace a
/// folder, link or FIFO where the archive holds a file, before changing anything.
#[test]
#[cfg(unix)]
fn folder_restore_never_replaces_non_files() {
    let env = Env::new();
    env.run(&["compress", "folder", "f.dmx", "-q"], 0);
    // `sub` (which holds tokenizer.json) is a link to a folder outside the destination.
    std::fs::create_dir_all(env.path("outside")).unwrap();
    std::fs::write(env.path("outside/tokenizer.json"), b"outside").unwrap();
    std::fs::create_dir_all(env.path("o1")).unwrap();
    std::fs::write(env.path("o1/config.json"), b"old").unwrap();
    std::os::unix::fs::symlink(env.path("outside"), env.path("o1/sub")).unwrap();
    env.run(&["decompress", "f.dmx", "o1", "-f", "-q"], 2);
    assert_eq!(env.read("outside/tokenizer.json"), b"outside");
    assert_eq!(env.read("o1/config.json"), b"old");
    // A folder, a link and a FIFO where the archive holds files.
    for (name, make) in [
        ("o2", 0), // config.json is a folder
        ("o3", 1), // config.json is a link
        ("o4", 2), // config.json is a FIFO
    ] {
        let dir = env.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.safetensors.index.json"), b"old").unwrap();
        let at = dir.join("config.json");
        match make {
            0 => std::fs::create_dir(&at).unwrap(),
            1 => std::os::unix::fs::symlink(env.path("target"), &at).unwrap(),
            _ => mkfifo(&at),
        }
        let err = env.run(&["decompress", "f.dmx", name, "-f", "-q"], 2);
        assert!(err.contains("config.json"), "{err}");
        assert_eq!(
            std::fs::read(dir.join("model.safetensors.index.json")).unwrap(),
            b"old",
            "{name}: a file was replaced before the refusal"
        );
    }
    assert!(is_fifo(&env.path("o4/config.json")));
    env.assert_no_temps();
}

/// Devices and FIFOs are refused as inputs, at once, with a message pointing to `-`.
#[test]
#[cfg(unix)]
fn special_inputs_are_refused_quickly() {
    let env = Env::new();
    mkfifo(&env.path("fifo"));
    let start = Instant::now();
    for input in ["/dev/zero", "fifo", "/dev/stdin"] {
        let out = Command::new(DMX)
            .current_dir(env.dir.path())
            .args(["compress", input, "x.dmx", "-q"])
            .write_stdin(Vec::new())
            .timeout(Duration::from_secs(20))
            .output()
            .expect("run dmx");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{input}: {err}");
        assert!(
            err.contains("not a regular file") && err.contains('-'),
            "{err}"
        );
    }
    mkfifo(&env.path("fifo.safetensors"));
    env.run(&["compress", "model.safetensors", "m.dmx", "-q"], 0);
    for args in [
        vec!["verify", "/dev/zero", "m.dmx"],
        vec!["verify", "fifo.safetensors", "m.dmx"],
        vec!["info", "fifo", "-q"],
        vec!["delta-info", "/dev/zero", "-q"],
        vec!["bench", "fifo.safetensors", "--reps", "1"],
        vec!["compress", "fifo.safetensors", "y.dmx"],
        vec![
            "delta-compress",
            "model.safetensors",
            "fifo.safetensors",
            "d.dmxd",
        ],
        vec![
            "delta-compress",
            "fifo.safetensors",
            "model.safetensors",
            "d.dmxd",
        ],
        vec!["diff", "model.safetensors", "fifo.safetensors"],
    ] {
        env.run(&args, 2);
    }
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(!env.path("x.dmx").exists());
    env.assert_no_temps();
}

/// `compress - OUT` reads standard input (safetensors detected by content) and
/// `decompress ARCHIVE -` writes the checked file to standard output.
#[test]
fn dash_round_trips_through_pipes() {
    let env = Env::new();
    let original = env.read("model.safetensors");
    let out = Command::new(DMX)
        .current_dir(env.dir.path())
        .args(["compress", "-", "piped.dmx", "-q"])
        .write_stdin(original.clone())
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = Command::new(DMX)
        .current_dir(env.dir.path())
        .args(["info", "piped.dmx", "--json"])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("piped.safetensors"), "stored name: {info}");
    assert!(info.contains("\"ids\""), "stored as tensors: {info}");
    let out = Command::new(DMX)
        .current_dir(env.dir.path())
        .args(["decompress", "piped.dmx", "-", "-q"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == original, "stdout differs from the input");
    // Any bytes, stored under the output's name.
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let out = Command::new(DMX)
        .current_dir(env.dir.path())
        .args(["compress", "-", "blob.dmx", "-q"])
        .write_stdin(blob.clone())
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(DMX)
        .current_dir(env.dir.path())
        .args(["decompress", "blob.dmx", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == blob);
    // Folder archives and deltas do not go to standard output, and a corrupt archive
    // writes nothing there.
    env.run(&["compress", "folder", "f.dmx", "-q"], 0);
    env.run(
        &[
            "delta-compress",
            "model.safetensors",
            "model.safetensors",
            "d.dmxd",
            "-q",
        ],
        0,
    );
    for (archive, code) in [("f.dmx", 2), ("d.dmxd", 2)] {
        let out = Command::new(DMX)
            .current_dir(env.dir.path())
            .args(["decompress", archive, "-"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code));
        assert!(out.stdout.is_empty());
    }
    let mut bad = env.read("piped.dmx");
    let at = bad.len() / 2;
    bad[at] ^= 0x11;
    std::fs::write(env.path("bad.dmx"), &bad).unwrap();
    let out = Command::new(DMX)
        .current_dir(env.dir.path())
        .args(["decompress", "bad.dmx", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "unverified bytes reached stdout");
    env.assert_no_temps();
}

/// `-` as any other output is refused and never creates a file named `-`; `./-` is a file.
#[test]
fn dash_elsewhere_never_creates_a_file_named_dash() {
    let env = Env::new();
    env.run(&["compress", "model.safetensors", "m.dmx", "-q"], 0);
    env.run(
        &[
            "delta-compress",
            "m.dmx",
            "model.safetensors",
            "d.dmxd",
            "-q",
        ],
        0,
    );
    for args in [
        vec!["compress", "model.safetensors", "-"],
        vec!["extract", "m.dmx", "-", "--tensor", "ids"],
        vec!["verify", "m.dmx", "--report", "-"],
        vec![
            "delta-compress",
            "model.safetensors",
            "model.safetensors",
            "-",
        ],
        vec!["delta-reconstruct", "m.dmx", "d.dmxd", "-"],
    ] {
        let err = env.run(&args, 2);
        assert!(err.contains("./-"), "{args:?}: {err}");
        assert!(!env.path("-").exists(), "{args:?} created a file named -");
    }
    env.run(&["compress", "model.safetensors", "./-", "-q"], 0);
    // A hard link to an input is that input.
    std::fs::hard_link(env.path("model.safetensors"), env.path("hard")).unwrap();
    let err = env.run(&["compress", "model.safetensors", "hard", "-f"], 2);
    assert!(err.contains("same"), "{err}");
    assert!(env.path("-").is_file());
    env.assert_no_temps();
}

/// Writes `n` bytes that compress slowly (pseudo-random) to `path`.
fn noise(path: &Path, n: usize) {
    let mut rng = common::Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

/// SIGINT, SIGTERM and SIGHUP sent mid-run remove the temporary file and exit 130, 143, 129.
#[test]
#[cfg(target_os = "linux")]
fn signals_remove_temporary_files() {
    let env = Env::new();
    noise(&env.path("big.bin"), 96 << 20);
    for (sig, code) in [("INT", 130), ("TERM", 143), ("HUP", 129)] {
        let mut child = std::process::Command::new(DMX)
            .current_dir(env.dir.path())
            .args(["compress", "big.bin", "big.dmx", "-q", "-t", "1"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the temporary archive exists, then signal.
        let start = Instant::now();
        while env.temps().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no temporary file"
            );
            assert!(child.try_wait().unwrap().is_none(), "finished too early");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100));
        let ok = std::process::Command::new("kill")
            .args([format!("-{sig}"), child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "SIG{sig}");
        env.assert_no_temps();
        assert!(!env.path("big.dmx").exists());
    }
}

/// A write past `ulimit -f` is an ordinary I/O error (exit 2) that removes the temporary file
/// (SIGXFSZ is handled by dmx itself, not by the shell).
#[test]
#[cfg(unix)]
fn file_size_limit_leaves_no_temporary_file() {
    let env = Env::new();
    noise(&env.path("big.bin"), 1 << 20);
    env.run(&["compress", "big.bin", "ok.dmx", "-q"], 0);
    for args in [
        vec!["compress", "big.bin", "big.dmx"],
        vec!["compress", "folder", "f.dmx"],
        vec!["decompress", "ok.dmx", "restored.bin"],
    ] {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -f 4; exec "$@""#)
            .arg("sh")
            .arg(DMX)
            .args(&args)
            .arg("-q")
            .current_dir(env.dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.to_lowercase().contains("too large"), "{err}");
        assert!(!err.contains(".dmx-tmp"), "internal path in {err}");
    }
    for never in ["big.dmx", "f.dmx", "restored.bin"] {
        assert!(!env.path(never).exists(), "{never} was written");
    }
    env.assert_no_temps();
}

/// Later runs remove the temporaries of dead dmx processes (after a few minutes), and
/// nothing else.
#[test]
#[cfg(target_os = "linux")]
fn stale_temporaries_of_dead_runs_are_removed() {
    let env = Env::new();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let dead = child.id();
    assert!(!Path::new(&format!("/proc/{dead}")).exists());
    let live = std::process::id();
    let old = SystemTime::now() - Duration::from_secs(3600);
    let make = |name: &str, dir: bool, aged: bool| {
        let p = env.path(name);
        if dir {
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("part"), b"x").unwrap();
            if aged {
                let f = std::fs::File::open(p.join("part")).unwrap();
                f.set_modified(old).unwrap();
            }
        } else {
            std::fs::write(&p, b"x").unwrap();
        }
        if aged {
            std::fs::File::open(&p).unwrap().set_modified(old).unwrap();
        }
    };
    let stale_file = format!(".dmx-tmp-{dead}-aBc123");
    let stale_dir = format!(".dmx-tmp-{dead}-dEf456");
    let fresh = format!(".dmx-tmp-{dead}-gHi789");
    let alive = format!(".dmx-tmp-{live}-jKl012");
    make(&stale_file, false, true);
    make(&stale_dir, true, true);
    make(&fresh, false, false);
    make(&alive, false, true);
    make(".dmx-tmp-legacy", false, true);
    make("unrelated", false, true);
    env.run(&["compress", "model.safetensors", "m.dmx", "-q"], 0);
    assert!(!env.path(&stale_file).exists(), "stale file kept");
    assert!(!env.path(&stale_dir).exists(), "stale folder kept");
    for kept in [&fresh, &alive, ".dmx-tmp-legacy", "unrelated"] {
        assert!(env.path(kept).exists(), "{kept} was removed");
    }
}

/// Compressing a folder into itself twice does not swallow the first archive, and temporary
/// files in an input folder are never stored.
#[test]
fn archive_inside_its_input_folder_is_not_swallowed() {
    let env = Env::new();
    env.run(&["compress", "folder", "folder/m.dmx", "-q"], 0);
    let first = env.read("folder/m.dmx");
    std::fs::write(env.path("folder/.dmx-tmp-123-abcdef"), b"junk").unwrap();
    env.run(&["compress", "folder", "folder/m.dmx", "-f", "-q"], 0);
    assert!(
        env.read("folder/m.dmx") == first,
        "the second archive differs"
    );
    env.run(&["decompress", "folder/m.dmx", "out", "-q"], 0);
    let names: Vec<String> = common::tree(&env.path("out"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("m.dmx") || n.contains(".dmx-tmp"))
    );
    assert_eq!(names.len(), 5, "{names:?}");
    // Verifying against the folder that holds the archive ignores the archive itself.
    env.run(&["verify", "folder", "folder/m.dmx", "-q"], 0);
}

/// An output that names a file of the input folder which is not a dmx archive is refused
/// (it would be left out of the archive and then overwritten: lost), even with `--force`.
#[test]
fn output_naming_a_file_of_the_input_folder_is_refused() {
    let env = Env::new();
    let before = common::tree(&env.path("folder"));
    let (name, _) = before
        .iter()
        .find(|(n, _)| n.ends_with(".safetensors"))
        .expect("a safetensors file in the folder")
        .clone();
    let target = format!("folder/{name}");
    let err = env.run(&["compress", "folder", &target, "-f", "-q"], 2);
    assert!(err.contains("input folder"), "{err}");
    assert_eq!(
        common::tree(&env.path("folder")),
        before,
        "the input folder changed"
    );
    // Another spelling of the same file.
    let other = format!("folder/../folder/{name}");
    env.run(&["compress", "folder", &other, "-f", "-q"], 2);
    assert_eq!(
        common::tree(&env.path("folder")),
        before,
        "the input folder changed"
    );
}

/// A signal that arrives while a folder restore is being merged into an existing folder (the
/// renames of the commit) waits for the merge to end: never half the files old and half new.
#[test]
#[cfg(target_os = "linux")]
fn signal_during_a_merge_never_leaves_it_half_done() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let n = 2000;
    std::fs::create_dir(env.path("many")).unwrap();
    for i in 0..n {
        std::fs::write(env.path(&format!("many/f{i:05}")), format!("new {i}")).unwrap();
    }
    env.run(&["compress", "many", "many.dmx", "-q"], 0);
    for attempt in 0..2 {
        let out = env.path(&format!("out{attempt}"));
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("keep"), b"keep").unwrap();
        for i in 0..n {
            std::fs::write(out.join(format!("f{i:05}")), b"old").unwrap();
        }
        let first = out.join("f00000");
        let ino = std::fs::metadata(&first).unwrap().ino();
        let mut child = std::process::Command::new(DMX)
            .current_dir(env.dir.path())
            .args(["decompress", "many.dmx"])
            .arg(&out)
            .args(["-f", "-q", "--no-sync"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Signal as soon as the first file has been replaced (the merge has begun).
        let start = Instant::now();
        while std::fs::metadata(&first).is_ok_and(|m| m.ino() == ino) {
            assert!(start.elapsed() < Duration::from_secs(60), "no merge");
            if child.try_wait().unwrap().is_some() {
                break;
            }
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().unwrap();
        let new = (0..n)
            .filter(|i| std::fs::read(out.join(format!("f{i:05}"))).unwrap() != b"old")
            .count();
        assert_eq!(
            new, n,
            "attempt {attempt}: only {new} of {n} files restored"
        );
        assert_eq!(std::fs::read(out.join("keep")).unwrap(), b"keep");
        env.assert_no_temps();
        let temps: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .filter(|e| dmx::is_temp_name(&e.file_name()))
            .collect();
        assert!(temps.is_empty(), "temporaries left in {}", out.display());
    }
}

/// An output in a folder that does not exist is an I/O error naming that folder, never the
/// internal temporary name.
#[test]
fn missing_output_folder_error_names_no_temporary() {
    let env = Env::new();
    env.run(&["compress", "model.safetensors", "m.dmx", "-q"], 0);
    env.run(&["compress", "folder", "f.dmx", "-q"], 0);
    for args in [
        vec!["compress", "model.safetensors", "missing/x.dmx"],
        vec!["decompress", "m.dmx", "missing/x.safetensors"],
        vec!["decompress", "f.dmx", "missing/x/y"],
        vec!["extract", "m.dmx", "missing/x.safetensors", "--tensor", "w"],
    ] {
        let err = env.run(&args, 2);
        assert!(err.contains("missing"), "{args:?}: {err}");
        assert!(
            !err.contains(".dmx-tmp"),
            "{args:?}: internal path in {err}"
        );
    }
    assert!(!env.path("missing").exists());
}

/// `verify --report --force` never replaces an input: the `--base` of a delta, or a file of
/// the original folder.
#[test]
fn verify_report_never_replaces_an_input() {
    let env = Env::new();
    std::fs::copy(env.path("model.safetensors"), env.path("base.safetensors")).unwrap();
    env.run(
        &[
            "delta-compress",
            "base.safetensors",
            "model.safetensors",
            "d.dmxd",
            "-q",
        ],
        0,
    );
    let base = env.read("base.safetensors");
    let verify_base = [
        "verify",
        "model.safetensors",
        "d.dmxd",
        "--base",
        "base.safetensors",
        "-q",
        "-f",
        "--report",
    ];
    for report in ["base.safetensors", "./folder/../base.safetensors"] {
        let mut args = verify_base.to_vec();
        args.push(report);
        env.run(&args, 2);
        assert_eq!(env.read("base.safetensors"), base, "the base was replaced");
    }
    env.run(&["compress", "folder", "f.dmx", "-q"], 0);
    let before = common::tree(&env.path("folder"));
    let (name, _) = before[0].clone();
    let report = format!("folder/{name}");
    let err = env.run(
        &["verify", "folder", "f.dmx", "-q", "-f", "--report", &report],
        2,
    );
    assert!(err.contains("input folder"), "{err}");
    assert_eq!(common::tree(&env.path("folder")), before);
    // A new report file beside the inputs is fine.
    env.run(
        &["verify", "folder", "f.dmx", "-q", "--report", "r.json"],
        0,
    );
}

/// SIGTERM at many moments of a folder restore (many files in subfolders) never leaves the
/// temporary folder behind: a writer never recreates it once the cleanup has begun.
#[test]
#[cfg(target_os = "linux")]
fn signals_during_folder_restores_leave_no_temporary() {
    let env = Env::new();
    for d in 0..40 {
        let sub = env.path(&format!("many/d{d:02}"));
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..10 {
            std::fs::write(sub.join(format!("f{i}")), format!("{d} {i}")).unwrap();
        }
    }
    env.run(&["compress", "many", "many.dmx", "-q"], 0);
    for attempt in 0..30u64 {
        let out = format!("out{attempt}");
        let mut child = std::process::Command::new(DMX)
            .current_dir(env.dir.path())
            .args(["decompress", "many.dmx", &out, "-q", "--no-sync"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(500 * attempt));
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().unwrap();
        env.assert_no_temps();
    }
}
