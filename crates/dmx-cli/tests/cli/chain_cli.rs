//! The chain commands of the `dmx` binary: outputs, exit statuses (0 success, 1 corruption,
//! 2 usage or I/O), `dmx verify DIR`, and a kill test: `dmx chain-append` SIGKILLed at random
//! moments always leaves a chain that `dmx verify` accepts at its old or new length, and the
//! next append succeeds.

use dmx_testkit as common;

use crate::support::{dmx, json, run};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{Rng, Tensor};

/// Entries in the chain's manifest.
fn chain_len(dir: &Path) -> usize {
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest");
    json(&text)["entries"].as_array().expect("entries").len()
}

/// A checkpoint: weights and Adam states as F32, `n` values each, moved from `seed`'s
/// starting point by `steps` small training steps.
fn checkpoint(n: usize, seed: u64, steps: usize) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut w: Vec<f32> = (0..3 * n)
        .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2)
        .collect();
    let mut moves = Rng(seed ^ 0xabc);
    for _ in 0..steps {
        for _ in 0..w.len() / 100 {
            let i = moves.below(w.len() as u64) as usize;
            w[i] += 1e-3;
        }
    }
    let tensor = |name: &str, part: &[f32]| {
        Tensor::new(
            name,
            "F32",
            &[part.len()],
            part.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    };
    common::plain(&[
        tensor("model.layers.0.mlp.weight", &w[..n]),
        tensor("optimizer.state.0.exp_avg", &w[n..2 * n]),
        tensor("optimizer.state.0.exp_avg_sq", &w[2 * n..]),
    ])
}

fn files_of(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn chain_commands_outputs_and_exit_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let names = [
        "a.safetensors",
        "b.safetensors",
        "x/c.safetensors",
        "y/c.safetensors",
    ];
    let ckpts: Vec<Vec<u8>> = (0..4).map(|i| checkpoint(3000, 1, i)).collect();
    for (n, b) in names.iter().zip(&ckpts) {
        common::write(&d.join(n), b);
    }
    run(
        d,
        &[
            "chain-compress",
            names[0],
            names[1],
            names[2],
            "--output-dir",
            "chain",
            "-q",
        ],
        0,
    );
    assert_eq!(chain_len(&d.join("chain")), 3);
    let (_, err) = run(d, &["chain-compress", names[0], "--output-dir", "chain"], 2);
    assert!(err.contains("--force"), "{err}");
    let (_, err) = run(
        d,
        &[
            "chain-compress",
            names[0],
            names[1],
            names[2],
            "--output-dir",
            "chain",
            "--force",
        ],
        0,
    );
    assert!(err.contains("3 entries added"), "{err}");

    // Quiet: no report, like every other command; --json still prints.
    assert_eq!(
        run(d, &["chain-info", "chain", "-q"], 0),
        (String::new(), String::new())
    );
    let (out, _) = run(d, &["chain-info", "chain", "--json", "-q"], 0);
    let info = json(&out);
    assert_eq!(info["totals"]["entries"], 3);
    assert_eq!(info["precision"], "lossless");
    assert_eq!(info["max_depth"], 16);
    assert_eq!(info["entries"][0]["kind"], "anchor");
    assert!(info["entries"][0]["parent"].is_null());
    assert!(info["entries"][1]["components"]["exp_avg_sq"]["stored_bytes"].as_u64() > Some(0));
    let (out, _) = run(d, &["chain-info", "chain"], 0);
    assert!(
        out.contains("totals:") && out.contains("exp_avg_sq"),
        "{out}"
    );

    let (out, _) = run(d, &["chain-append", "chain", names[3], "--json"], 0);
    let rep = json(&out);
    assert_eq!(rep["entries"], 4);
    assert_eq!(rep["appended"][0]["index"], 3);
    assert_eq!(rep["appended"][0]["name"], "c.safetensors");

    run(
        d,
        &["chain-reconstruct", "chain", "--output-dir", "out", "-q"],
        0,
    );
    assert_eq!(
        files_of(&d.join("out")),
        [
            "00002-c.safetensors",
            "00003-c.safetensors",
            "a.safetensors",
            "b.safetensors"
        ]
    );
    assert!(std::fs::read(d.join("out/00003-c.safetensors")).unwrap() == ckpts[3]);
    assert!(std::fs::read(d.join("out/a.safetensors")).unwrap() == ckpts[0]);
    let (out, _) = run(
        d,
        &[
            "chain-reconstruct",
            "chain",
            "--output-dir",
            "one",
            "--indices",
            "3",
            "--json",
        ],
        0,
    );
    let rep = json(&out);
    assert_eq!(rep["ok"], true);
    assert_eq!(rep["entries"].as_array().unwrap().len(), 1);
    assert!(std::fs::read(d.join("one/c.safetensors")).unwrap() == ckpts[3]);
    run(
        d,
        &["chain-reconstruct", "chain", "--output-dir", "out", "-q"],
        2,
    );
    run(
        d,
        &[
            "chain-reconstruct",
            "chain",
            "--output-dir",
            "out",
            "-q",
            "--force",
        ],
        0,
    );
    let (_, err) = run(
        d,
        &[
            "chain-reconstruct",
            "chain",
            "--output-dir",
            "o",
            "--indices",
            "9",
        ],
        2,
    );
    assert!(err.contains("out of range"), "{err}");

    let (out, _) = run(d, &["verify", "chain"], 0);
    assert!(
        out.contains("OK") && out.contains("4 entries verified"),
        "{out}"
    );
    let (out, _) = run(d, &["verify", "chain", "--json"], 0);
    assert_eq!(json(&out)["ok"], true);

    // Damage entry 1: verify and reconstruct name it and exit 1; independent entries restore.
    let m = json(&std::fs::read_to_string(d.join("chain/manifest.json")).unwrap());
    let file = m["entries"][1]["file"].as_str().unwrap().to_string();
    let path = d.join("chain").join(&file);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let (out, _) = run(d, &["verify", "chain"], 1);
    assert!(out.contains("FAIL") && out.contains(&file), "{out}");
    let (out, _) = run(d, &["verify", "chain", "-q", "--json"], 1);
    assert_eq!(json(&out)["ok"], false);
    let (_, err) = run(
        d,
        &["chain-reconstruct", "chain", "--output-dir", "bad", "-q"],
        1,
    );
    assert!(err.contains(&file), "{err}");
    assert!(std::fs::read(d.join("bad/a.safetensors")).unwrap() == ckpts[0]);

    // Usage errors.
    std::fs::create_dir(d.join("empty")).unwrap();
    let (_, err) = run(d, &["chain-append", "empty", names[0]], 2);
    assert!(err.contains("not a dmx chain"), "{err}");
    run(d, &["chain-info", "empty"], 2);
    run(d, &["verify", "empty"], 2);
    run(d, &["chain-compress", "chain", "--output-dir", "c2"], 2);
    run(
        d,
        &["chain-compress", "nope.safetensors", "--output-dir", "c3"],
        2,
    );
}

#[test]
fn quantized_chain_commands() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    for i in 0..4 {
        common::write(
            &d.join(format!("s{i}.safetensors")),
            &checkpoint(2000, 9, i),
        );
    }
    let (out, _) = run(
        d,
        &[
            "chain-compress",
            "s0.safetensors",
            "s1.safetensors",
            "s2.safetensors",
            "--output-dir",
            "q",
            "--precision",
            "int16",
            "--max-depth",
            "1",
            "--json",
        ],
        0,
    );
    let rep = json(&out);
    assert_eq!(rep["precision"], "int16");
    assert_eq!(rep["max_depth"], 1);
    // Anchors of quantized chains record their grid (steps as exact decimal strings).
    let step = &rep["appended"][0]["steps"]["model.layers.0.mlp.weight"];
    assert!(
        step.as_str().and_then(|s| s.parse::<f64>().ok()) > Some(0.0),
        "{step}"
    );
    for e in rep["appended"].as_array().unwrap() {
        assert!(e["stored_size"].as_u64() <= e["standalone_size"].as_u64());
        assert!(e["depth"].as_u64() <= Some(1));
    }
    run(d, &["chain-append", "q", "s3.safetensors", "-q"], 0);
    let (out, _) = run(d, &["verify", "q"], 0);
    assert!(out.contains("int16"), "{out}");
    run(d, &["chain-reconstruct", "q", "--output-dir", "o", "-q"], 0);
    assert_eq!(files_of(&d.join("o")).len(), 4);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `dmx chain-append` killed (SIGKILL) at random moments, 24 times, with and without fsync:
/// the chain always verifies at its old or new length, and a following append succeeds.
#[test]
fn killed_appends_leave_a_valid_chain() {
    let tmp = common::scratch();
    let d = tmp.path();
    // 3 × 300k F32 values: a 3.6 MB checkpoint, so an append lives long enough to be hit.
    let n = 300_000;
    for i in 0..3 {
        common::write(&d.join(format!("k{i}.safetensors")), &checkpoint(n, 3, i));
    }
    run(
        d,
        &[
            "chain-compress",
            "k0.safetensors",
            "--output-dir",
            "base",
            "-q",
        ],
        0,
    );

    // How long one append takes here.
    copy_dir(&d.join("base"), &d.join("calibrate"));
    let t = Instant::now();
    run(
        d,
        &[
            "chain-append",
            "calibrate",
            "k1.safetensors",
            "-q",
            "--no-sync",
        ],
        0,
    );
    // Updated after every append that runs to its end, as the machine's load changes.
    let mut full = t.elapsed();
    let first_estimate = full;

    let mut rng = Rng(0x5eed_c4a1);
    let (mut killed, mut old_len, mut new_len) = (0, 0, 0);
    let start = Instant::now();
    for i in 0..24 {
        let dir = format!("c{i}");
        copy_dir(&d.join("base"), &d.join(&dir));
        let sync = i % 6 == 0;
        let mut args = vec!["chain-append", dir.as_str(), "k1.safetensors", "-q"];
        if !sync {
            args.push("--no-sync");
        }
        let mut child = dmx(d, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        // Half the kills anywhere in the run, half near its end (where the entry file and
        // the manifest are renamed into place).
        let at = if i % 2 == 0 {
            rng.below(1100)
        } else {
            600 + rng.below(450)
        };
        let delay = full.mul_f64(at as f64 / 1000.0);
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().expect("wait");
        if status.code().is_none() {
            killed += 1;
        }
        let chain = d.join(&dir);
        let (out, _) = run(d, &["verify", &dir, "-q", "--json"], 0);
        assert_eq!(json(&out)["ok"], true);
        let len = chain_len(&chain);
        assert!(
            len == 1 || len == 2,
            "kill {i} after {delay:?}: {len} entries"
        );
        if len == 1 {
            old_len += 1;
        } else {
            new_len += 1;
        }
        // The next append succeeds and cleans what the killed one left.
        let t = Instant::now();
        run(
            d,
            &["chain-append", &dir, "k2.safetensors", "-q", "--no-sync"],
            0,
        );
        full = t.elapsed();
        assert_eq!(chain_len(&chain), len + 1);
        assert!(
            common::leftovers(&chain).is_empty(),
            "kill {i}: {:?}",
            files_of(&chain)
        );
        if i % 4 == 0 {
            run(d, &["verify", &dir, "-q"], 0);
        }
        std::fs::remove_dir_all(&chain).unwrap();
    }
    eprintln!(
        "kill test: append takes {first_estimate:?} .. {full:?}; {killed} of 24 killed; chain left at old length \
         {old_len}, new length {new_len}; {:?} in all",
        start.elapsed()
    );
    assert!(
        killed >= 8,
        "only {killed} appends were killed before they finished"
    );
}

/// Every file under `dir` (relative path, bytes), hidden ones included.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    common::tree(dir)
}

#[test]
fn a_failed_chain_compress_leaves_nothing_and_force_keeps_other_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    for i in 0..3 {
        common::write(
            &d.join(format!("s{i}.safetensors")),
            &checkpoint(2000, 4, i),
        );
    }
    std::fs::write(d.join("bad.safetensors"), b"not a checkpoint").unwrap();
    // A bad checkpoint in the middle: no folder, no manifest, no temporary files.
    let args = [
        "chain-compress",
        "s0.safetensors",
        "bad.safetensors",
        "s2.safetensors",
        "--output-dir",
        "chain",
    ];
    let (_, err) = run(d, &args, 2);
    assert!(err.contains("bad.safetensors"), "{err}");
    assert!(!err.contains("corrupt"), "{err}");
    assert!(!d.join("chain").exists());
    assert!(common::leftovers(d).is_empty());
    // The same into an existing empty folder: it stays empty.
    std::fs::create_dir(d.join("chain")).unwrap();
    run(d, &args, 2);
    assert!(files_of(&d.join("chain")).is_empty());
    // A re-run with good inputs just works.
    run(
        d,
        &[
            "chain-compress",
            "s0.safetensors",
            "s1.safetensors",
            "--output-dir",
            "chain",
            "-q",
        ],
        0,
    );
    assert_eq!(chain_len(&d.join("chain")), 2);

    // --force over the chain: a failing run changes nothing; a good one replaces the chain
    // and keeps the user's files.
    std::fs::write(d.join("chain/notes.txt"), b"mine").unwrap();
    let before = snapshot(&d.join("chain"));
    let (_, err) = run(
        d,
        &[
            "chain-compress",
            "s2.safetensors",
            "bad.safetensors",
            "--output-dir",
            "chain",
            "--force",
        ],
        2,
    );
    assert!(err.contains("bad.safetensors"), "{err}");
    assert_eq!(snapshot(&d.join("chain")), before);
    run(
        d,
        &[
            "chain-compress",
            "s2.safetensors",
            "--output-dir",
            "chain",
            "--force",
            "-q",
        ],
        0,
    );
    assert_eq!(chain_len(&d.join("chain")), 1);
    assert_eq!(std::fs::read(d.join("chain/notes.txt")).unwrap(), b"mine");
    assert_eq!(
        files_of(&d.join("chain")),
        ["00000-s2.safetensors.dmx", "manifest.json", "notes.txt"]
    );
    run(d, &["verify", "chain", "-q"], 0);
}

#[test]
fn orphans_survive_appends_and_are_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    for i in 0..4 {
        common::write(
            &d.join(format!("s{i}.safetensors")),
            &checkpoint(2000, 5, i),
        );
    }
    run(
        d,
        &[
            "chain-compress",
            "s0.safetensors",
            "s1.safetensors",
            "--output-dir",
            "chain",
            "-q",
        ],
        0,
    );
    let old_manifest = std::fs::read(d.join("chain/manifest.json")).unwrap();
    run(d, &["chain-append", "chain", "s2.safetensors", "-q"], 0);
    let m = json(&std::fs::read_to_string(d.join("chain/manifest.json")).unwrap());
    let orphan = m["entries"][2]["file"].as_str().unwrap().to_string();
    let orphan_bytes = std::fs::read(d.join("chain").join(&orphan)).unwrap();
    // The manifest is rolled back: entry 2 is now an orphan.
    std::fs::write(d.join("chain/manifest.json"), &old_manifest).unwrap();
    let (out, _) = run(d, &["verify", "chain"], 0);
    assert!(out.contains("orphan") && out.contains(&orphan), "{out}");
    let (out, _) = run(d, &["verify", "chain", "--json"], 0);
    assert_eq!(json(&out)["orphans"][0], orphan.as_str());
    let (out, _) = run(d, &["chain-info", "chain"], 0);
    assert!(out.contains("orphan") && out.contains(&orphan), "{out}");
    let (out, _) = run(d, &["chain-info", "chain", "--json"], 0);
    assert_eq!(json(&out)["orphans"][0], orphan.as_str());
    // An append keeps it (moved aside, with a warning), never deletes it.
    let (_, err) = run(d, &["chain-append", "chain", "s3.safetensors", "-q"], 0);
    assert!(err.contains("warning") && err.contains(&orphan), "{err}");
    assert_eq!(chain_len(&d.join("chain")), 3);
    let kept = d.join("chain/orphans").join(&orphan);
    assert_eq!(std::fs::read(&kept).unwrap(), orphan_bytes);
    let (out, _) = run(d, &["verify", "chain", "--json"], 0);
    let v = json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["orphans"][0], format!("orphans/{orphan}").as_str());
}

#[test]
fn manifests_with_bad_depths_or_links_are_corrupt() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    for i in 0..3 {
        common::write(
            &d.join(format!("s{i}.safetensors")),
            &checkpoint(2000, 6, i),
        );
    }
    run(
        d,
        &[
            "chain-compress",
            "s0.safetensors",
            "s1.safetensors",
            "s2.safetensors",
            "--output-dir",
            "chain",
            "-q",
        ],
        0,
    );
    let path = d.join("chain/manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let m = json(&text);
    assert_eq!(m["entries"][2]["depth"], 2, "{text}");
    let mut shallow = m.clone();
    shallow["max_depth"] = 1.into();
    std::fs::write(&path, shallow.to_string()).unwrap();
    for args in [
        &["verify", "chain"][..],
        &["chain-info", "chain"],
        &["chain-reconstruct", "chain", "--output-dir", "o"],
    ] {
        let (_, err) = run(d, args, 1);
        assert!(
            err.contains("corrupt manifest") && err.contains("max_depth 1"),
            "{args:?}: {err}"
        );
    }
    let (_, err) = run(d, &["chain-append", "chain", "s0.safetensors"], 1);
    assert!(err.contains("corrupt manifest"), "{err}");
    let mut broken = m;
    broken["entries"][2]["parent"] = 0.into();
    std::fs::write(&path, broken.to_string()).unwrap();
    let (_, err) = run(d, &["verify", "chain"], 1);
    assert!(err.contains("corrupt manifest"), "{err}");
    assert!(!d.join("o").exists());
}

#[cfg(unix)]
#[test]
fn chain_reconstruct_destinations_are_safe() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let ckpts: Vec<Vec<u8>> = (0..2).map(|i| checkpoint(2000, 7, i)).collect();
    for (i, b) in ckpts.iter().enumerate() {
        common::write(&d.join(format!("s{i}.safetensors")), b);
    }
    run(
        d,
        &[
            "chain-compress",
            "s0.safetensors",
            "s1.safetensors",
            "--output-dir",
            "chain",
            "-q",
        ],
        0,
    );
    std::fs::write(d.join("chain/notes.txt"), b"mine").unwrap();
    let chain_before = snapshot(&d.join("chain"));
    // --force only replaces the restored files.
    std::fs::create_dir(d.join("out")).unwrap();
    std::fs::write(d.join("out/keep.txt"), b"keep").unwrap();
    std::fs::write(d.join("out/s0.safetensors"), b"old").unwrap();
    run(
        d,
        &["chain-reconstruct", "chain", "--output-dir", "out", "-q"],
        2,
    );
    assert_eq!(std::fs::read(d.join("out/s0.safetensors")).unwrap(), b"old");
    run(
        d,
        &[
            "chain-reconstruct",
            "chain",
            "--output-dir",
            "out",
            "-q",
            "--force",
        ],
        0,
    );
    assert_eq!(std::fs::read(d.join("out/keep.txt")).unwrap(), b"keep");
    assert!(std::fs::read(d.join("out/s0.safetensors")).unwrap() == ckpts[0]);
    assert!(std::fs::read(d.join("out/s1.safetensors")).unwrap() == ckpts[1]);
    assert_eq!(
        files_of(&d.join("out")),
        ["keep.txt", "s0.safetensors", "s1.safetensors"]
    );

    // The chain folder, however spelled, or a folder inside it: refused, with nothing
    // written or deleted.
    std::os::unix::fs::symlink(d.join("chain"), d.join("link")).unwrap();
    std::fs::create_dir(d.join("chain/sub")).unwrap();
    let spellings: [(&Path, &str); 6] = [
        (d, "chain"),
        (d, "link"),
        (d, "chain/sub/.."),
        (d, "chain/new"),
        (&d.join("chain"), "."),
        (&d.join("chain"), "../link"),
    ];
    for (cwd, out) in spellings {
        let chain = if cwd == d { "chain" } else { "." };
        for force in [false, true] {
            let mut args = vec!["chain-reconstruct", chain, "--output-dir", out];
            if force {
                args.push("--force");
            }
            let (_, err) = run(cwd, &args, 2);
            assert!(err.contains("chain folder"), "{args:?} in {cwd:?}: {err}");
        }
    }
    std::fs::remove_dir(d.join("chain/sub")).unwrap();
    assert_eq!(snapshot(&d.join("chain")), chain_before);
    assert!(!d.join("chain/new").exists());

    // A folder that merely holds the chain (restoring beside it) is fine: only the restored
    // files are written.
    let args = [
        "chain-reconstruct",
        ".",
        "--output-dir",
        "..",
        "--force",
        "-q",
    ];
    run(&d.join("chain"), &args, 0);
    assert!(std::fs::read(d.join("s0.safetensors")).unwrap() == ckpts[0]);
    assert_eq!(snapshot(&d.join("chain")), chain_before);

    // Special files, folders and links where a file would be written: refused even with
    // --force, and left as they were.
    std::fs::create_dir(d.join("special")).unwrap();
    let fifo = d.join("special/s0.safetensors");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    std::fs::write(d.join("special/other.txt"), b"other").unwrap();
    let (_, err) = run(
        d,
        &[
            "chain-reconstruct",
            "chain",
            "--output-dir",
            "special",
            "--force",
        ],
        2,
    );
    assert!(err.contains("FIFO"), "{err}");
    use std::os::unix::fs::FileTypeExt;
    assert!(fifo.symlink_metadata().unwrap().file_type().is_fifo());
    assert_eq!(
        files_of(&d.join("special")),
        ["other.txt", "s0.safetensors"]
    );
    std::fs::remove_file(&fifo).unwrap();
    std::fs::create_dir(&fifo).unwrap();
    run(
        d,
        &[
            "chain-reconstruct",
            "chain",
            "--output-dir",
            "special",
            "-f",
        ],
        2,
    );
    assert!(fifo.is_dir());
    std::fs::remove_dir(&fifo).unwrap();
    std::os::unix::fs::symlink(d.join("special/other.txt"), &fifo).unwrap();
    run(
        d,
        &[
            "chain-reconstruct",
            "chain",
            "--output-dir",
            "special",
            "-f",
        ],
        2,
    );
    assert_eq!(
        std::fs::read(d.join("special/other.txt")).unwrap(),
        b"other"
    );
    assert!(fifo.symlink_metadata().unwrap().file_type().is_symlink());
    assert!(common::leftovers(&d.join("special")).is_empty());
}

#[cfg(unix)]
#[test]
fn checkpoints_with_colons_or_backslashes_and_info_on_a_chain() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let names = [
        "ckpt-2024-01-01T12:00:00.safetensors",
        "ckpt-2024-01-01T13:00:00.safetensors",
        "run\\3.safetensors",
    ];
    let ckpts: Vec<Vec<u8>> = (0..3).map(|i| checkpoint(2000, 8, i)).collect();
    for (n, b) in names.iter().zip(&ckpts) {
        common::write(&d.join(n), b);
    }
    let (_, err) = run(
        d,
        &[
            "chain-compress",
            names[0],
            names[1],
            "--output-dir",
            "chain",
        ],
        0,
    );
    assert!(err.contains("2 entries added"), "{err}");
    run(d, &["chain-append", "chain", names[2], "-q"], 0);
    run(
        d,
        &["chain-reconstruct", "chain", "--output-dir", "out", "-q"],
        0,
    );
    for (n, b) in names.iter().zip(&ckpts) {
        assert!(std::fs::read(d.join("out").join(n)).unwrap() == *b, "{n}");
    }
    run(d, &["verify", "chain", "-q"], 0);
    let (out, _) = run(d, &["chain-info", "chain", "--json"], 0);
    assert_eq!(json(&out)["entries"][0]["name"], names[0]);

    // A name with terminal escapes is stored, and shown escaped.
    let evil = "evil\u{1b}[2J\n.safetensors";
    common::write(&d.join(evil), &ckpts[0]);
    run(d, &["chain-append", "chain", evil, "-q"], 0);
    for args in [&["chain-info", "chain"][..], &["verify", "chain"]] {
        let (out, _) = run(d, args, 0);
        assert!(!out.contains('\u{1b}'), "{args:?}: {out:?}");
        assert!(out.contains("evil\\x1b[2J\\n.safetensors"), "{out}");
    }
    let (out, _) = run(d, &["chain-info", "chain", "--json"], 0);
    assert_eq!(json(&out)["entries"][3]["name"], evil);

    // `dmx info` on a chain folder points to chain-info.
    let (_, err) = run(d, &["info", "chain"], 2);
    assert!(
        err.contains("chain folder") && err.contains("dmx chain-info chain"),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
}

/// `DIR/orphans` as a symbolic link is refused: files dmx sets aside never leave the chain
/// folder through a link (nor go into a file named `orphans`).
#[cfg(unix)]
#[test]
fn orphans_never_go_through_a_link() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    common::write(&d.join("s0.safetensors"), &checkpoint(500, 5, 0));
    std::fs::create_dir_all(d.join("chain")).unwrap();
    std::fs::create_dir_all(d.join("elsewhere")).unwrap();
    std::fs::write(d.join("chain/manifest.json"), b"not a manifest").unwrap();
    std::os::unix::fs::symlink(d.join("elsewhere"), d.join("chain/orphans")).unwrap();
    let args = [
        "chain-compress",
        "s0.safetensors",
        "--output-dir",
        "chain",
        "-f",
        "-q",
    ];
    let (_, err) = run(d, &args, 2);
    assert!(err.contains("orphans"), "{err}");
    assert_eq!(files_of(&d.join("elsewhere")), Vec::<String>::new());
    assert_eq!(
        std::fs::read(d.join("chain/manifest.json")).unwrap(),
        b"not a manifest"
    );
    // A regular file named `orphans`: refused with a clear message, kept.
    std::fs::remove_file(d.join("chain/orphans")).unwrap();
    std::fs::write(d.join("chain/orphans"), b"keep").unwrap();
    let (_, err) = run(d, &args, 2);
    assert!(err.contains("not a folder"), "{err}");
    assert_eq!(std::fs::read(d.join("chain/orphans")).unwrap(), b"keep");
}

/// `--output-dir -` never creates a folder named `-` (chain-compress, chain-reconstruct).
#[test]
fn dash_output_folders_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    common::write(&d.join("s0.safetensors"), &checkpoint(500, 5, 0));
    let (_, err) = run(
        d,
        &[
            "chain-compress",
            "s0.safetensors",
            "--output-dir",
            "-",
            "-q",
        ],
        2,
    );
    assert!(err.contains("./-"), "{err}");
    assert!(!d.join("-").exists());
    run(
        d,
        &[
            "chain-compress",
            "s0.safetensors",
            "--output-dir",
            "chain",
            "-q",
        ],
        0,
    );
    let (_, err) = run(d, &["chain-reconstruct", "chain", "--output-dir", "-"], 2);
    assert!(err.contains("./-"), "{err}");
    assert!(!d.join("-").exists());
}

/// `verify CHAIN --report CHAIN/manifest.json --force` never replaces a file of the chain.
#[test]
fn verify_report_never_replaces_a_chain_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    common::write(&d.join("s0.safetensors"), &checkpoint(500, 5, 0));
    run(
        d,
        &[
            "chain-compress",
            "s0.safetensors",
            "--output-dir",
            "chain",
            "-q",
        ],
        0,
    );
    let before = snapshot(&d.join("chain"));
    for report in ["chain/manifest.json", "chain/../chain/manifest.json"] {
        let (_, err) = run(d, &["verify", "chain", "-q", "-f", "--report", report], 2);
        assert!(err.contains("input folder"), "{err}");
    }
    assert_eq!(snapshot(&d.join("chain")), before);
    run(d, &["verify", "chain", "-q"], 0);
}
