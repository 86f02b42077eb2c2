//! Runners for the `dmx` binary, shared by the command's test modules.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// `dmx ARGS`, to be run in `dir`.
pub fn dmx(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dmx"));
    cmd.current_dir(dir).args(args);
    cmd
}

/// Output bytes as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks that the finished `dmx ARGS` exited with status `code` and did not panic; returns
/// (stdout, stderr).
pub fn check(args: &[&str], out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "dmx {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "dmx {args:?} panicked: {stderr}"
    );
    (stdout, stderr)
}

/// Runs `dmx ARGS` in `dir`, expects exit status `code` and no panic; returns (stdout, stderr).
pub fn run(dir: &Path, args: &[&str], code: i32) -> (String, String) {
    let out = dmx(dir, args).output().expect("run dmx");
    check(args, &out, code)
}

/// Parses `text` as JSON, naming it if it is not.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
