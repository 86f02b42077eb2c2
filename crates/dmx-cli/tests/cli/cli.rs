//! The `dmx` command line: every command, its output modes and its exit status (0 success,
//! 1 verification failure or corruption, 2 usage or I/O error).

use dmx_testkit as common;

use crate::support::json;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::{Layout, Mode, Tensor};
use serde_json::Value;

/// A scratch folder holding a generated model file and folder.
struct Env {
    dir: tempfile::TempDir,
    tensors: Vec<Tensor>,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let tensors = vec![
            Tensor::generated("model.embed.weight", "BF16", &[40, 64], Mode::Weights, 1),
            Tensor::generated("model.norm", "F32", &[129], Mode::Mixed { rate: 5 }, 2),
            Tensor::generated("ids", "I64", &[9], Mode::Weights, 3),
            Tensor::generated("half", "F16", &[3, 5], Mode::Weights, 4),
            Tensor::new("empty", "F32", &[0], vec![]),
        ];
        let file = common::safetensors(&tensors, &Layout::pt());
        common::write(&dir.path().join("model.safetensors"), &file);
        common::model_folder(&dir.path().join("folder"), 5);
        Self { dir, tensors }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// `dmx ARGS`, run in the scratch folder.
    fn dmx(&self, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("dmx").expect("dmx binary");
        cmd.current_dir(self.dir.path()).args(args);
        cmd
    }

    /// Runs `dmx ARGS`, expects exit status `code`, and checks it did not panic; returns
    /// (stdout, stderr).
    fn run(&self, args: &[&str], code: i32) -> (String, String) {
        let out = self.dmx(args).output().expect("run dmx");
        crate::support::check(args, &out, code)
    }

    /// Compresses `input` to `output` quietly.
    fn compress(&self, input: &str, output: &str) {
        self.run(&["compress", input, output, "-q"], 0);
    }

    /// Fails when a `.dmx-tmp-*` file or folder is left anywhere under the scratch folder.
    fn assert_no_leftovers(&self) {
        fn walk(dir: &Path) {
            for e in std::fs::read_dir(dir).expect("read_dir") {
                let e = e.expect("entry");
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(
                    !name.starts_with(".dmx-tmp-"),
                    "leftover {}",
                    e.path().display()
                );
                if e.path().is_dir() {
                    walk(&e.path());
                }
            }
        }
        walk(self.dir.path());
    }

    /// Flips a byte in the middle of the first chunk of `tensor` in archive `rel`.
    fn corrupt_tensor(&self, rel: &str, tensor: &str) {
        let at = {
            let archive = dmx::Archive::open(&self.path(rel)).expect("open");
            let t = archive.tensor(tensor).expect("tensor");
            let c = t.segment.chunks[0];
            c.offset as usize + c.stored_len as usize / 2
        };
        let mut bytes = self.read(rel);
        bytes[at] ^= 0x20;
        std::fs::write(self.path(rel), bytes).expect("write");
    }
}

#[test]
fn help_and_version() {
    let env = Env::new();
    let (out, _) = env.run(&["--help"], 0);
    for cmd in ["compress", "decompress", "info", "verify", "extract"] {
        assert!(out.contains(cmd), "{cmd} missing from --help");
    }
    let (out, _) = env.run(&["--version"], 0);
    assert!(out.starts_with("dmx "), "{out}");
    env.run(&[], 2);
    env.run(&["frobnicate"], 2);
    env.run(&["compress", "model.safetensors"], 2);
}

#[test]
fn file_round_trip() {
    let env = Env::new();
    let (out, err) = env.run(&["compress", "model.safetensors", "m.dmx"], 0);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("model.safetensors -> m.dmx"), "{err}");
    assert!(err.contains("BF16"), "summary lists dtypes: {err}");
    let (_, err) = env.run(&["decompress", "m.dmx", "back.safetensors"], 0);
    assert!(err.contains("m.dmx -> back.safetensors"), "{err}");
    assert!(env.read("back.safetensors") == env.read("model.safetensors"));
    // Absolute paths and thread counts work too.
    let abs_in = env.path("model.safetensors");
    let abs_out = env.path("sub/m2.dmx");
    std::fs::create_dir(env.path("sub")).unwrap();
    env.run(
        &[
            "compress",
            abs_in.to_str().unwrap(),
            abs_out.to_str().unwrap(),
            "--threads",
            "1",
            "-q",
        ],
        0,
    );
    assert!(
        env.read("sub/m2.dmx") == env.read("m.dmx"),
        "archives depend on threads"
    );
    env.assert_no_leftovers();
}

#[test]
fn folder_round_trip() {
    let env = Env::new();
    env.run(&["compress", "folder", "f.dmx", "-t", "2"], 0);
    env.run(&["decompress", "f.dmx", "restored", "-q"], 0);
    assert_eq!(
        common::tree(&env.path("restored")),
        common::tree(&env.path("folder"))
    );
    assert!(env.path("restored/sub/tokenizer.json").is_file());
    env.run(&["verify", "folder", "f.dmx", "-q"], 0);
    env.assert_no_leftovers();
}

#[test]
fn quiet_prints_nothing() {
    let env = Env::new();
    let cases: Vec<Vec<&str>> = vec![
        vec!["compress", "model.safetensors", "m.dmx", "--quiet"],
        vec!["decompress", "m.dmx", "back.safetensors", "--quiet"],
        vec!["verify", "m.dmx", "--quiet"],
        vec!["verify", "model.safetensors", "m.dmx", "-q"],
        vec!["extract", "m.dmx", "x.safetensors", "--tensor", "ids", "-q"],
        vec!["compress", "folder", "f.dmx", "-q"],
        vec!["decompress", "f.dmx", "f", "-q"],
    ];
    for args in cases {
        let (out, err) = env.run(&args, 0);
        assert!(
            out.is_empty() && err.is_empty(),
            "{args:?}: {out:?} {err:?}"
        );
    }
}

#[test]
fn compress_json_summary() {
    let env = Env::new();
    let (out, _) = env.run(&["compress", "model.safetensors", "m.dmx", "--json"], 0);
    let v = json(&out);
    let size = env.read("model.safetensors").len() as u64;
    assert_eq!(v["input_bytes"], size);
    assert_eq!(v["output_bytes"], env.read("m.dmx").len() as u64);
    assert_eq!(v["files"], 1);
    assert_eq!(v["tensors"], env.tensors.len());
    assert_eq!(v["warnings"], Value::Array(vec![]));
    assert!(v["stats"]["lossless"].as_bool().unwrap());
    assert!(v["seconds"].is_number());
    // --json with --quiet still prints the JSON (and only it).
    let (out, err) = env.run(&["compress", "folder", "f.dmx", "--json", "--quiet"], 0);
    assert_eq!(json(&out)["files"], 5);
    assert!(err.is_empty(), "{err}");
}

#[test]
fn compress_warns_about_invalid_safetensors() {
    let env = Env::new();
    common::write(&env.path("bad.safetensors"), b"definitely not safetensors");
    let (out, err) = env.run(&["compress", "bad.safetensors", "b.dmx", "--json"], 0);
    let v = json(&out);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1);
    assert!(err.contains("warning"), "{err}");
    env.run(&["decompress", "b.dmx", "b.out", "-q"], 0);
    assert!(env.read("b.out") == env.read("bad.safetensors"));
}

#[test]
fn existing_outputs_need_force() {
    let env = Env::new();
    env.compress("model.safetensors", "m.dmx");
    std::fs::write(env.path("taken"), b"precious").unwrap();
    // compress, decompress and extract refuse an existing output...
    for args in [
        vec!["compress", "model.safetensors", "taken"],
        vec!["decompress", "m.dmx", "taken"],
        vec!["extract", "m.dmx", "taken", "--tensor", "ids"],
    ] {
        let (_, err) = env.run(&args, 2);
        assert!(
            err.contains("already exists") && err.contains("--force"),
            "{err}"
        );
        assert_eq!(env.read("taken"), b"precious", "{args:?}");
    }
    // ...and overwrite it with --force.
    env.run(
        &["compress", "model.safetensors", "taken", "--force", "-q"],
        0,
    );
    assert!(env.read("taken") == env.read("m.dmx"));
    std::fs::write(env.path("taken"), b"precious").unwrap();
    env.run(&["decompress", "m.dmx", "taken", "-f", "-q"], 0);
    assert!(env.read("taken") == env.read("model.safetensors"));
    // A folder restore into an existing folder replaces the archive's files only.
    env.compress("folder", "f.dmx");
    std::fs::create_dir(env.path("out")).unwrap();
    std::fs::write(env.path("out/stale.txt"), b"old").unwrap();
    env.run(&["decompress", "f.dmx", "out", "-q"], 2);
    env.run(&["decompress", "f.dmx", "out", "--force", "-q"], 0);
    let mut expected = common::tree(&env.path("folder"));
    expected.push(("stale.txt".into(), b"old".to_vec()));
    expected.sort();
    assert_eq!(common::tree(&env.path("out")), expected);
    // verify --report refuses to overwrite a report without --force.
    std::fs::write(env.path("r.json"), b"{}").unwrap();
    env.run(&["verify", "m.dmx", "--report", "r.json", "-q"], 2);
    assert_eq!(env.read("r.json"), b"{}");
    env.run(
        &["verify", "m.dmx", "--report", "r.json", "--force", "-q"],
        0,
    );
    assert_eq!(
        json(&String::from_utf8(env.read("r.json")).unwrap())["ok"],
        true
    );
    env.assert_no_leftovers();
}

#[test]
fn input_and_output_must_differ() {
    let env = Env::new();
    env.compress("model.safetensors", "m.dmx");
    let before = env.read("m.dmx");
    let original = env.read("model.safetensors");
    for args in [
        vec!["compress", "model.safetensors", "model.safetensors"],
        vec![
            "compress",
            "model.safetensors",
            "./model.safetensors",
            "--force",
        ],
        vec!["decompress", "m.dmx", "m.dmx"],
        vec!["decompress", "m.dmx", "m.dmx", "--force"],
        vec!["compress", "folder", "folder/", "--force"],
    ] {
        let (_, err) = env.run(&args, 2);
        assert!(err.contains("same path"), "{args:?}: {err}");
    }
    assert!(env.read("m.dmx") == before);
    assert!(env.read("model.safetensors") == original);
    assert!(env.path("folder/config.json").is_file());
    env.assert_no_leftovers();
}

#[test]
fn missing_inputs_are_usage_errors() {
    let env = Env::new();
    env.compress("model.safetensors", "m.dmx");
    for args in [
        vec!["compress", "nope.safetensors", "n.dmx"],
        vec!["decompress", "nope.dmx", "n.out"],
        vec!["info", "nope.dmx"],
        vec!["verify", "nope.dmx"],
        vec!["verify", "nope.safetensors", "m.dmx"],
        vec!["extract", "nope.dmx", "n.out", "--tensor", "ids"],
        vec!["compress", "model.safetensors", "no/such/dir/m.dmx"],
    ] {
        let (out, err) = env.run(&args, 2);
        assert!(err.starts_with("dmx: error:"), "{args:?}: {err}");
        assert!(!err.contains("panicked") && !out.contains("panicked"));
    }
    assert!(!env.path("n.dmx").exists() && !env.path("n.out").exists());
    env.assert_no_leftovers();
}

#[test]
fn zero_threads_is_a_usage_error() {
    let env = Env::new();
    env.compress("model.safetensors", "m.dmx");
    for args in [
        vec!["compress", "model.safetensors", "t.dmx", "--threads", "0"],
        vec!["decompress", "m.dmx", "t.out", "-t", "0"],
        vec!["verify", "m.dmx", "--threads", "0"],
        vec![
            "extract",
            "m.dmx",
            "t.out",
            "--tensor",
            "ids",
            "--threads",
            "0",
        ],
    ] {
        let (_, err) = env.run(&args, 2);
        assert!(err.contains("threads"), "{args:?}: {err}");
    }
    env.run(
        &["compress", "model.safetensors", "t.dmx", "--threads", "x"],
        2,
    );
    assert!(!env.path("t.dmx").exists() && !env.path("t.out").exists());
    env.assert_no_leftovers();
}

#[test]
fn info_human_and_json() {
    let env = Env::new();
    env.compress("model.safetensors", "m.dmx");
    let (out, _) = env.run(&["info", "m.dmx"], 0);
    assert!(out.contains("lossless:  yes"), "{out}");
    for t in &env.tensors {
        assert!(out.contains(&t.name), "{} missing: {out}", t.name);
    }
    // Quiet prints no report (the status says the archive opened); --json still prints.
    assert_eq!(
        env.run(&["info", "m.dmx", "-q"], 0),
        (String::new(), String::new())
    );
    env.run(&["info", "missing.dmx", "-q"], 2);
    let (out, _) = env.run(&["info", "m.dmx", "--json", "-q"], 0);
    let v = json(&out);
    assert_eq!(v["lossless"], true);
    assert_eq!(v["root"], "file");
    assert_eq!(v["tensors"], env.tensors.len());
    assert_eq!(v["archive_bytes"], env.read("m.dmx").len() as u64);
    assert_eq!(
        v["original_bytes"],
        env.read("model.safetensors").len() as u64
    );
    let dtypes = v["dtypes"].as_object().expect("dtypes");
    let mut names: Vec<&str> = dtypes.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["BF16", "F16", "F32", "I64"]);
    let bf16 = &dtypes["BF16"];
    assert_eq!(bf16["params"], 40 * 64);
    let bpw = bf16["bits_per_weight"].as_f64().expect("bits_per_weight");
    assert!(bpw > 1.0 && bpw < 16.0, "BF16 bits per weight {bpw}");
    assert!(dtypes["F32"]["bits_per_weight"].as_f64().is_some());
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["path"], "model.safetensors");
    assert_eq!(files[0]["kind"], "safetensors");
    assert_eq!(files[0]["sha256"].as_str().unwrap().len(), 64);
    let tensors = files[0]["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), env.tensors.len());
    let embed = tensors
        .iter()
        .find(|t| t["name"] == "model.embed.weight")
        .unwrap();
    assert_eq!(embed["shape"], serde_json::json!([40, 64]));
    assert!(embed["bits_per_weight"].as_f64().unwrap() < 16.0);
    let empty = tensors.iter().find(|t| t["name"] == "empty").unwrap();
    assert_eq!(empty["bits_per_weight"], Value::Null);
    assert_eq!(empty["codec"], "none");

    // A folder archive.
    env.compress("folder", "f.dmx");
    let (out, _) = env.run(&["info", "f.dmx", "--json", "--tensors"], 0);
    let v = json(&out);
    assert_eq!(v["root"], "folder");
    assert_eq!(v["files"].as_array().unwrap().len(), 5);
    let (out, _) = env.run(&["info", "f.dmx", "--tensors"], 0);
    assert!(out.contains("sub/tokenizer.json"), "{out}");
}

#[test]
fn verify_passes_and_writes_a_report() {
    let env = Env::new();
    env.compress("model.safetensors", "m.dmx");
    let (out, _) = env.run(&["verify", "m.dmx"], 0);
    assert!(out.contains("verify: all checks passed"), "{out}");
    let (out, _) = env.run(
        &["verify", "model.safetensors", "m.dmx", "--report", "r.json"],
        0,
    );
    assert!(out.contains("bit-exact"), "{out}");
    let r = json(&String::from_utf8(env.read("r.json")).unwrap());
    assert_eq!(r["ok"], true);
    assert_eq!(r["schema"], 2);
    assert_eq!(r["original"], "model.safetensors");
    let files = r["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["ok"], true);
    assert_eq!(files[0]["bit_exact"], true);
    assert_eq!(files[0]["tensors"], env.tensors.len());
    assert_eq!(files[0]["problems"], Value::Array(vec![]));
    // --json prints the same report.
    let (out, _) = env.run(&["verify", "model.safetensors", "m.dmx", "--json"], 0);
    let v = json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["files"][0]["bit_exact"], true);
    env.assert_no_leftovers();
}

#[test]
fn verify_against_a_modified_original_fails() {
    let env = Env::new();
    env.compress("model.safetensors", "m.dmx");
    // Change one byte of the last tensor, and separately append a byte.
    let mut changed = env.read("model.safetensors");
    let n = changed.len();
    changed[n - 3] ^= 1;
    common::write(&env.path("changed.safetensors"), &changed);
    let (out, _) = env.run(
        &[
            "verify",
            "changed.safetensors",
            "m.dmx",
            "--report",
            "r.json",
        ],
        1,
    );
    assert!(out.contains("FAIL") && out.contains("differs"), "{out}");
    let r = json(&String::from_utf8(env.read("r.json")).unwrap());
    assert_eq!(r["ok"], false);
    assert_eq!(r["files"][0]["bit_exact"], false);
    let problems = r["files"][0]["problems"].to_string();
    assert!(problems.contains(&format!("byte {}", n - 3)), "{problems}");

    let mut longer = env.read("model.safetensors");
    longer.push(0);
    common::write(&env.path("longer.safetensors"), &longer);
    let (out, _) = env.run(&["verify", "longer.safetensors", "m.dmx", "--json"], 1);
    assert_eq!(json(&out)["files"][0]["bit_exact"], false);

    // Folders: a changed file, a missing file, an extra file.
    env.compress("folder", "f.dmx");
    std::fs::write(env.path("folder/config.json"), b"{}").unwrap();
    env.run(&["verify", "folder", "f.dmx", "-q"], 1);
    env.compress("folder", "f2.dmx");
    std::fs::write(env.path("folder/extra.txt"), b"new").unwrap();
    let (out, _) = env.run(&["verify", "folder", "f2.dmx", "--json"], 1);
    assert!(out.contains("not in the archive"), "{out}");
    std::fs::remove_file(env.path("folder/extra.txt")).unwrap();
    std::fs::remove_file(env.path("folder/config.json")).unwrap();
    let (out, _) = env.run(&["verify", "folder", "f2.dmx", "--json"], 1);
    assert!(out.contains("missing from the original"), "{out}");
    // A file original for a folder archive is a usage error.
    env.run(&["verify", "model.safetensors", "f2.dmx"], 2);
}

#[test]
fn corrupted_archives_are_detected() {
    let env = Env::new();
    env.compress("model.safetensors", "m.dmx");
    env.corrupt_tensor("m.dmx", "model.embed.weight");
    // verify: exit 1, report names the tensor and chunk.
    let (out, _) = env.run(&["verify", "m.dmx", "--report", "r.json"], 1);
    assert!(out.contains("verify: FAILED"), "{out}");
    let r = json(&String::from_utf8(env.read("r.json")).unwrap());
    assert_eq!(r["ok"], false);
    let problems = r["files"][0]["problems"].to_string();
    assert!(
        problems.contains("model.embed.weight") && problems.contains("chunk 0"),
        "{problems}"
    );
    env.run(&["verify", "model.safetensors", "m.dmx", "-q"], 1);
    // decompress: exit 1, the message names the tensor and chunk, no output left.
    let (_, err) = env.run(&["decompress", "m.dmx", "out.safetensors"], 1);
    assert!(
        err.contains("tensor \"model.embed.weight\"") && err.contains("chunk 0"),
        "{err}"
    );
    assert!(err.contains("checksum"), "{err}");
    assert!(!env.path("out.safetensors").exists());
    // extract of the damaged tensor fails; of an intact one succeeds.
    env.run(
        &[
            "extract",
            "m.dmx",
            "x.safetensors",
            "--tensor",
            "model.embed.weight",
        ],
        1,
    );
    assert!(!env.path("x.safetensors").exists());
    env.run(
        &["extract", "m.dmx", "x.safetensors", "--tensor", "ids", "-q"],
        0,
    );
    // info still works: the index is intact.
    env.run(&["info", "m.dmx"], 0);

    // A damaged folder archive leaves no partial folder behind.
    env.compress("folder", "f.dmx");
    env.corrupt_tensor("f.dmx", "model.layers.0.mlp");
    let (_, err) = env.run(&["decompress", "f.dmx", "restored"], 1);
    assert!(err.contains("model.layers.0.mlp"), "{err}");
    assert!(!env.path("restored").exists());

    // Damage to the index: every command fails with exit 1.
    let mut arch = env.read("f.dmx");
    let n = arch.len();
    arch[n - 40] ^= 0xff;
    std::fs::write(env.path("i.dmx"), &arch).unwrap();
    for args in [
        vec!["info", "i.dmx"],
        vec!["verify", "i.dmx"],
        vec!["decompress", "i.dmx", "i.out"],
        vec!["extract", "i.dmx", "i.out", "--tensor", "ids"],
    ] {
        let (out, err) = env.run(&args, 1);
        assert!(
            err.contains("index checksum mismatch") || out.contains("index checksum mismatch"),
            "{args:?}: {out} {err}"
        );
    }
    assert!(!env.path("i.out").exists());
    env.assert_no_leftovers();
}

#[test]
fn not_an_archive_never_panics() {
    let env = Env::new();
    env.compress("model.safetensors", "m.dmx");
    let good = env.read("m.dmx");
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("empty.dmx", vec![]),
        ("short.dmx", b"\x89DMX".to_vec()),
        (
            "text.dmx",
            b"hello, this is not an archive at all\n".repeat(4),
        ),
        ("st.dmx", env.read("model.safetensors")),
        ("preamble.dmx", good[..16].to_vec()),
        ("cut.dmx", good[..good.len() - 1].to_vec()),
        ("zeros.dmx", vec![0; 100]),
    ];
    for (name, bytes) in &inputs {
        std::fs::write(env.path(name), bytes).unwrap();
        for args in [
            vec!["info", name],
            vec!["info", name, "--json"],
            vec!["verify", name],
            vec!["verify", "model.safetensors", name],
            vec!["decompress", name, "out"],
            vec!["extract", name, "out", "--tensor", "ids"],
        ] {
            let out = env.dmx(&args).output().expect("run");
            let code = out.status.code();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                code == Some(1) || code == Some(2),
                "{args:?}: exit {code:?}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
            assert!(!env.path("out").exists(), "{args:?}");
        }
    }
    // Foreign files are usage errors (2); damaged archives integrity failures (1).
    env.run(&["info", "text.dmx"], 2);
    env.run(&["decompress", "st.dmx", "out"], 2);
    env.run(&["info", "cut.dmx"], 1);
    // A folder given as an archive.
    env.run(&["info", "folder"], 2);
    env.run(&["decompress", "folder", "out"], 2);
    env.assert_no_leftovers();
}

#[test]
fn extract_writes_valid_safetensors() {
    let env = Env::new();
    env.compress("model.safetensors", "m.dmx");
    let picked = ["half", "model.embed.weight", "empty"];
    let (_, err) = env.run(
        &[
            "extract",
            "m.dmx",
            "x.safetensors",
            "--tensor",
            picked[0],
            "--tensor",
            picked[1],
            "--tensor",
            picked[2],
        ],
        0,
    );
    assert!(err.contains("3 tensor(s) -> x.safetensors"), "{err}");
    let x = env.read("x.safetensors");
    let n = u64::from_le_bytes(x[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "header padded to 8 bytes");
    let header = json(std::str::from_utf8(&x[8..8 + n]).unwrap());
    let header = header.as_object().expect("header object");
    assert_eq!(header["__metadata__"], serde_json::json!({"format": "pt"}));
    let mut names: Vec<&str> = header
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "__metadata__")
        .collect();
    names.sort_unstable();
    let mut want = picked.to_vec();
    want.sort_unstable();
    assert_eq!(names, want);
    let data = &x[8 + n..];
    let mut end = 0;
    for name in picked {
        let t = env.tensors.iter().find(|t| t.name == name).unwrap();
        let info = &header[name];
        assert_eq!(info["dtype"], t.dtype.as_str());
        assert_eq!(info["shape"], serde_json::json!(t.shape));
        let offs = info["data_offsets"].as_array().unwrap();
        let (s, e) = (
            offs[0].as_u64().unwrap() as usize,
            offs[1].as_u64().unwrap() as usize,
        );
        assert!(data[s..e] == t.data[..], "{name}: bytes differ");
        end = end.max(e);
    }
    assert_eq!(end, data.len(), "data fills the file exactly");
    // The result is itself a valid safetensors file for dmx (no warning).
    let (out, _) = env.run(&["compress", "x.safetensors", "x.dmx", "--json"], 0);
    let v = json(&out);
    assert_eq!(v["warnings"], Value::Array(vec![]));
    assert_eq!(v["tensors"], 3);

    // From a folder archive: metadata of the shard that holds the first tensor.
    env.compress("folder", "f.dmx");
    env.run(
        &[
            "extract",
            "f.dmx",
            "y.safetensors",
            "--tensor",
            "model.layers.0.ids",
            "-q",
        ],
        0,
    );
    let y = env.read("y.safetensors");
    let n = u64::from_le_bytes(y[..8].try_into().unwrap()) as usize;
    let header = json(std::str::from_utf8(&y[8..8 + n]).unwrap());
    assert_eq!(header["model.layers.0.ids"]["dtype"], "I64");
    assert_eq!(
        header["model.layers.0.ids"]["shape"],
        serde_json::json!([5, 3])
    );
    env.assert_no_leftovers();
}

#[test]
fn extract_of_unknown_or_repeated_tensors_is_a_usage_error() {
    let env = Env::new();
    env.compress("model.safetensors", "m.dmx");
    let (_, err) = env.run(
        &["extract", "m.dmx", "x.safetensors", "--tensor", "nope"],
        2,
    );
    assert!(err.contains("nope"), "{err}");
    env.run(
        &[
            "extract",
            "m.dmx",
            "x.safetensors",
            "--tensor",
            "ids",
            "--tensor",
            "nope",
        ],
        2,
    );
    env.run(
        &[
            "extract",
            "m.dmx",
            "x.safetensors",
            "--tensor",
            "ids",
            "--tensor",
            "ids",
        ],
        2,
    );
    // --tensor is required.
    env.run(&["extract", "m.dmx", "x.safetensors"], 2);
    assert!(!env.path("x.safetensors").exists());
    env.assert_no_leftovers();
}

#[test]
fn bench_measures_and_round_trips() {
    let env = Env::new();
    let (out, _) = env.run(
        &[
            "bench",
            "model.safetensors",
            "--reps",
            "1",
            "--json",
            "-t",
            "1",
        ],
        0,
    );
    let v = json(&out);
    let runs = v.as_array().expect("one result per file and thread count");
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(r["round_trip_ok"], true);
    assert_eq!(r["threads"], 1);
    assert_eq!(r["bytes"], env.read("model.safetensors").len() as u64);
    let bf16 = &r["dtypes"]["BF16"];
    assert_eq!(bf16["params"], 40 * 64);
    let bpw = bf16["bits_per_weight"].as_f64().unwrap();
    assert!(bpw > 1.0 && bpw < 16.0, "{bpw}");
    let (out, _) = env.run(
        &[
            "bench",
            "folder",
            "model.safetensors",
            "--reps",
            "1",
            "-t",
            "2",
        ],
        0,
    );
    assert!(out.contains("bits/w") && out.contains("BF16"), "{out}");
    env.run(&["bench", "nope.safetensors", "--reps", "1"], 2);
    env.run(&["bench"], 2);
}

/// `--threads 0` is refused by `dmx bench` as by every other command (exit 2).
#[test]
fn bench_zero_threads_is_a_usage_error() {
    let env = Env::new();
    env.run(&["bench", "model.safetensors", "--reps", "1", "-t", "0"], 2);
}

/// Like `compress` and `decompress`, `extract` and `verify --report` refuse to write over
/// their own inputs, even with `--force`.
#[test]
fn extract_and_verify_report_refuse_to_overwrite_their_inputs() {
    let env = Env::new();
    env.compress("model.safetensors", "m.dmx");
    let archive = env.read("m.dmx");
    let original = env.read("model.safetensors");
    env.run(
        &["extract", "m.dmx", "m.dmx", "--tensor", "ids", "--force"],
        2,
    );
    assert!(
        env.read("m.dmx") == archive,
        "extract replaced its input archive"
    );
    env.run(
        &["verify", "m.dmx", "--report", "m.dmx", "--force", "-q"],
        2,
    );
    assert!(
        env.read("m.dmx") == archive,
        "verify --report replaced the archive"
    );
    env.run(
        &[
            "verify",
            "model.safetensors",
            "m.dmx",
            "--report",
            "model.safetensors",
            "--force",
        ],
        2,
    );
    assert!(
        env.read("model.safetensors") == original,
        "verify --report replaced the original"
    );
}
