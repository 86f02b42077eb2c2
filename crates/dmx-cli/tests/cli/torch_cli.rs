//! The delta and chain commands on `torch.save` files and checkpoint folders (the fixtures of
//! `crates/dmx/tests/fixtures/make_pt_pairs.py`): outputs and exit statuses (0 success,
//! 1 corruption, 2 usage or a wrong base).

use std::path::{Path, PathBuf};

use crate::support::{json, run};

/// A fixture file or folder, as an absolute path string.
fn fx(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dmx/tests/fixtures/pt")
        .join(name)
        .display()
        .to_string()
}

/// The files of a folder (one level) with their bytes, sorted by name.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            let e = e.expect("entry");
            let bytes = std::fs::read(e.path()).expect("read");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn pt_and_folder_deltas_on_the_command_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let (out, _) = run(
        d,
        &[
            "delta-compress",
            &fx("step_1.pt"),
            &fx("step_2.pt"),
            "p.dmxd",
            "--json",
            "-q",
        ],
        0,
    );
    assert!(json(&out)["delta_tensors"].as_u64().expect("count") > 0);
    run(
        d,
        &[
            "delta-reconstruct",
            &fx("step_1.pt"),
            "p.dmxd",
            "p.pt",
            "-q",
        ],
        0,
    );
    assert_eq!(
        std::fs::read(d.join("p.pt")).expect("read"),
        std::fs::read(fx("step_2.pt")).expect("read")
    );
    let (out, _) = run(
        d,
        &[
            "delta-compress",
            &fx("ckpt_1"),
            &fx("ckpt_2"),
            "f.dmxd",
            "--json",
        ],
        0,
    );
    assert_eq!(json(&out)["files"].as_array().expect("files").len(), 5);
    let (out, _) = run(d, &["delta-info", "f.dmxd", "--json"], 0);
    assert_eq!(json(&out)["files"].as_array().expect("files").len(), 5);
    let (out, _) = run(d, &["delta-info", "f.dmxd"], 0);
    assert!(out.contains("optimizer.pt (torch-delta"), "{out}");
    run(
        d,
        &["delta-reconstruct", &fx("ckpt_1"), "f.dmxd", "out", "-q"],
        0,
    );
    assert_eq!(files_of(&d.join("out")), files_of(Path::new(&fx("ckpt_2"))));
    // Another base folder: refused (exit 2), nothing written.
    let (_, err) = run(
        d,
        &["delta-reconstruct", &fx("ckpt_3"), "f.dmxd", "out2", "-q"],
        2,
    );
    assert!(err.contains("wrong base"), "{err}");
    assert!(!d.join("out2").exists());
    // A damaged folder delta: exit 1, nothing written.
    let mut bytes = std::fs::read(d.join("f.dmxd")).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x08;
    std::fs::write(d.join("bad.dmxd"), &bytes).expect("write");
    run(
        d,
        &["delta-reconstruct", &fx("ckpt_1"), "bad.dmxd", "out3", "-q"],
        1,
    );
    assert!(!d.join("out3").exists());
}

#[test]
fn folder_chains_on_the_command_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let (out, _) = run(
        d,
        &[
            "chain-compress",
            &fx("ckpt_1"),
            &fx("ckpt_2"),
            "--output-dir",
            "chain",
            "--json",
        ],
        0,
    );
    assert_eq!(json(&out)["entries"], 2);
    run(d, &["chain-append", "chain", &fx("ckpt_3"), "-q"], 0);
    run(d, &["verify", "chain", "-q"], 0);
    let (out, _) = run(d, &["chain-info", "chain", "--json"], 0);
    assert_eq!(json(&out)["entries"].as_array().expect("entries").len(), 3);
    run(
        d,
        &["chain-reconstruct", "chain", "--output-dir", "out", "-q"],
        0,
    );
    for name in ["ckpt_1", "ckpt_2", "ckpt_3"] {
        assert_eq!(
            files_of(&d.join("out").join(name)),
            files_of(Path::new(&fx(name))),
            "{name}"
        );
    }
    // Mixing files and folders is a usage error.
    let (_, err) = run(d, &["chain-append", "chain", &fx("step_1.pt"), "-q"], 2);
    assert!(err.contains("all files or all folders"), "{err}");
    // A damaged entry file: verify fails with exit 1.
    let entry: PathBuf = d.join("chain/00001-ckpt_2.dmx");
    let entry = if entry.exists() {
        entry
    } else {
        d.join("chain/00001-ckpt_2.dmxd")
    };
    let mut bytes = std::fs::read(&entry).expect("read");
    bytes[100] ^= 1;
    std::fs::write(&entry, &bytes).expect("write");
    run(d, &["verify", "chain", "-q"], 1);
}
