//! Crash safety of the `dmx` command: a run killed at any moment (SIGKILL, which no program
//! can catch) leaves its destination either absent or complete and valid, and the stray
//! temporary files it leaves (`.dmx-tmp-*`) never trip a later run. A run that cannot write
//! (file-size limit: writes fail with EFBIG, as on a full disk) fails with a clear error and
//! exit status 2 and leaves nothing behind.
//!
//! Kill delays are drawn from a seeded generator over the measured length of a full run, so
//! the same delays are tried on every run (set `DMX_CRASH_SEED` to try others); where in
//! the run a delay lands still depends on the machine's load.
//! Unix only (signals, `sh`, `ulimit`).
#![cfg(unix)]

use dmx_testkit as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Mode, Rng, Tensor};

const DMX: &str = env!("CARGO_BIN_EXE_dmx");

/// Kills per command.
const KILLS: usize = 24;

fn opts() -> dmx::Options {
    dmx::Options {
        threads: Some(1),
        no_sync: true,
        ..dmx::Options::default()
    }
}

fn seed() -> u64 {
    std::env::var("DMX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xC0FFEE)
}

/// A scratch folder with a model file of about 4 MB (floats and integers, so every codec
/// family runs and the process lives long enough to be killed mid-write).
struct Env {
    dir: tempfile::TempDir,
    input: PathBuf,
    original: Vec<u8>,
}

impl Env {
    fn new() -> Self {
        let dir = common::scratch();
        let tensors = vec![
            Tensor::generated("embed", "BF16", &[512, 1536], Mode::Weights, 1),
            Tensor::generated("proj", "F32", &[256, 1024], Mode::Mixed { rate: 50 }, 2),
            Tensor::generated("ids", "I64", &[4096], Mode::Weights, 3),
        ];
        let original = common::plain(&tensors);
        let input = dir.path().join("model.safetensors");
        common::write(&input, &original);
        Self {
            dir,
            input,
            original,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `dmx ARGS` to completion; panics unless it succeeds.
    fn run_ok(&self, args: &[&Path]) -> Duration {
        let start = Instant::now();
        let out = Command::new(DMX)
            .args(args)
            .arg("-q")
            .output()
            .expect("run dmx");
        assert!(
            out.status.success(),
            "dmx {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        start.elapsed()
    }

    /// Starts `dmx ARGS`, kills it after `delay`, and waits for it.
    fn run_killed(&self, args: &[&Path], delay: Duration) {
        let mut child = Command::new(DMX)
            .args(args)
            .arg("-q")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dmx");
        std::thread::sleep(delay);
        // SIGKILL; an error only means the run had already finished.
        let _ = child.kill();
        child.wait().expect("wait for dmx");
    }

    /// The names in the scratch folder other than `keep`, which must all be temporary files.
    fn strays(&self, keep: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| !keep.contains(&n.as_str()))
            .collect();
        names.sort();
        for n in &names {
            assert!(
                n.starts_with(".dmx-tmp-"),
                "unexpected file {n} left behind"
            );
        }
        names
    }
}

/// The archive at `path` is complete and restores the original exactly.
fn assert_valid_archive(env: &Env, path: &Path, what: &str) {
    let archive =
        dmx::Archive::open(path).unwrap_or_else(|e| panic!("{what}: archive does not open: {e}"));
    let report = dmx::verify(&archive, Some(&env.input), &opts())
        .unwrap_or_else(|e| panic!("{what}: verify failed: {e}"));
    assert!(
        report.ok,
        "{what}: archive does not verify: {:?}",
        report.files
    );
}

/// Kill delays spread over a full run of `full` (a few past its end, to cover the rename).
fn delays(rng: &mut Rng, full: Duration) -> Vec<Duration> {
    let span = full.as_micros() as u64 * 11 / 10 + 1;
    (0..KILLS)
        .map(|_| Duration::from_micros(rng.below(span)))
        .collect()
}

/// Kills `dmx ARGS` (which writes `dest`, a name in the scratch folder) [`KILLS`] times at
/// random moments. After each kill `dest` must be absent or pass `check` (then it is removed
/// for the next try); afterwards a full run must succeed beside every stray temporary file
/// the killed runs left, and `dest` pass `check`. `inputs` are the other files the scratch
/// folder holds. A further command (say `delta-reconstruct`) is one more call of this.
fn kill_at_random_moments(
    env: &Env,
    args: &[&Path],
    dest: &str,
    inputs: &[&str],
    seed: u64,
    check: &dyn Fn(&Path, &str),
) {
    let dest_path = env.path(dest);
    let full = env.run_ok(args);
    check(&dest_path, "uninterrupted run");
    std::fs::remove_file(&dest_path).expect("remove");
    let mut rng = Rng(seed);
    let mut completed = 0;
    for (i, delay) in delays(&mut rng, full).into_iter().enumerate() {
        env.run_killed(args, delay);
        if dest_path.symlink_metadata().is_ok() {
            check(&dest_path, &format!("kill {i} after {delay:?}"));
            std::fs::remove_file(&dest_path).expect("remove");
            completed += 1;
        }
    }
    let strays = env.strays(inputs);
    env.run_ok(args);
    check(&dest_path, "run after the kills");
    let mut with_dest = inputs.to_vec();
    with_dest.push(dest);
    assert_eq!(env.strays(&with_dest), strays, "the later run left files");
    eprintln!(
        "{:?}: full run {full:?}; {KILLS} kills, {completed} finished first, {} stray \
         temporary files",
        args[0],
        strays.len()
    );
}

#[test]
fn killed_compress_leaves_no_partial_archive() {
    let env = Env::new();
    let dest = env.path("model.dmx");
    let args = [Path::new("compress"), &env.input, &dest];
    kill_at_random_moments(
        &env,
        &args,
        "model.dmx",
        &["model.safetensors"],
        seed(),
        &|path, what| assert_valid_archive(&env, path, what),
    );
}

#[test]
fn killed_decompress_leaves_no_partial_file() {
    let env = Env::new();
    let packed = env.path("model.dmx");
    env.run_ok(&[Path::new("compress"), &env.input, &packed]);
    let dest = env.path("restored.safetensors");
    let args = [Path::new("decompress"), &packed, &dest];
    kill_at_random_moments(
        &env,
        &args,
        "restored.safetensors",
        &["model.safetensors", "model.dmx"],
        seed() ^ 1,
        &|path, what| {
            let restored = std::fs::read(path).expect("read restored");
            assert!(
                restored == env.original,
                "{what}: a partial or different file is at the destination ({} of {} bytes)",
                restored.len(),
                env.original.len()
            );
        },
    );
}

/// Runs `dmx ARGS` with a file-size limit of 128 blocks (64 or 128 KiB, by the shell's block
/// size) and SIGXFSZ ignored, so writes past the limit fail with EFBIG, as they would on a
/// full disk; returns (exit code, stderr).
fn run_size_limited(dir: &Path, args: &[&Path]) -> (Option<i32>, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 128; exec "$@""#)
        .arg("sh")
        .arg(DMX)
        .args(args)
        .arg("-q")
        .current_dir(dir)
        .output()
        .expect("run sh");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn full_disk_is_a_clear_error_with_nothing_left_behind() {
    let env = Env::new();
    // Compress: the archive (about 3 MB) cannot be written.
    let dest = env.path("model.dmx");
    let (code, stderr) =
        run_size_limited(env.dir.path(), &[Path::new("compress"), &env.input, &dest]);
    assert_eq!(code, Some(2), "compress under a size limit: {stderr}");
    assert!(
        stderr.starts_with("dmx: error:") && stderr.contains("model.dmx"),
        "the error names the output: {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("too large"),
        "the error says why (EFBIG): {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        dest.symlink_metadata().is_err(),
        "a partial archive was left"
    );
    assert_eq!(
        env.strays(&["model.safetensors"]),
        Vec::<String>::new(),
        "temporary files left"
    );

    // Decompress: the restored file cannot be written.
    let packed = env.path("packed.dmx");
    env.run_ok(&[Path::new("compress"), &env.input, &packed]);
    let restored = env.path("restored.safetensors");
    let (code, stderr) = run_size_limited(
        env.dir.path(),
        &[Path::new("decompress"), &packed, &restored],
    );
    assert_eq!(code, Some(2), "decompress under a size limit: {stderr}");
    assert!(
        stderr.starts_with("dmx: error:") && stderr.contains("restored.safetensors"),
        "the error names the output: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        restored.symlink_metadata().is_err(),
        "a partial file was left"
    );
    assert_eq!(
        env.strays(&["model.safetensors", "packed.dmx"]),
        Vec::<String>::new(),
        "temporary files left"
    );
}
