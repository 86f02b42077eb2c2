//! Issue 11, findings 6, 9 and 10 through the `dmx` binary: ordinary checkpoint names with
//! `:` or `\`, archives of many tiny tensors or files that stay smaller than their input
//! (format 1.2) with `info` counting the index, and valid files beyond the reader limits
//! stored as blobs.

use dmx_testkit as common;

use crate::support::run;

use common::{Layout, Mode, Tensor};

fn model() -> Vec<u8> {
    let t = vec![Tensor::generated("w", "BF16", &[8, 8], Mode::Weights, 1)];
    common::safetensors(&t, &Layout::default())
}

/// Finding 6: `ckpt-2024-01-01T12:00:00.safetensors` and names with `\` compress and
/// restore, alone and inside a folder (they used to fail with "archive corrupt").
#[cfg(unix)]
#[test]
fn ordinary_checkpoint_names_are_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let file = model();
    for name in [
        "ckpt-2024-01-01T12:00:00.safetensors",
        "back\\slash.safetensors",
    ] {
        common::write(&d.join(name), &file);
        let (_, err) = run(d, &["compress", name, "x.dmx", "-q", "-f"], 0);
        assert!(!err.contains("corrupt"), "{err}");
        let (out, _) = run(d, &["info", "x.dmx"], 0);
        assert!(out.contains(name), "{out}");
        run(d, &["decompress", "x.dmx", "x.out", "-q", "-f"], 0);
        assert!(std::fs::read(d.join("x.out")).expect("restored") == file);
    }
    let folder = d.join("run");
    common::write(&folder.join("ckpt-2024-01-01T12:00:00.safetensors"), &file);
    common::write(&folder.join("a\\b.txt"), b"notes");
    common::write(&folder.join("step:1/config.json"), b"{}");
    run(d, &["compress", "run", "run.dmx", "-q"], 0);
    run(d, &["decompress", "run.dmx", "run.out", "-q"], 0);
    assert_eq!(common::tree(&d.join("run.out")), common::tree(&folder));
    run(d, &["verify", "run", "run.dmx"], 0);
}

/// Finding 6: a name that cannot be stored (not UTF-8) is refused during compression with
/// an error naming the file, exit status 2, and never "archive corrupt".
#[cfg(unix)]
#[test]
fn an_unstorable_name_is_a_named_usage_error() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let folder = d.join("f");
    common::write(&folder.join("ok.txt"), b"fine");
    let bad = folder.join(std::ffi::OsStr::from_bytes(b"bad-\xff-name.bin"));
    if std::fs::write(&bad, b"x").is_err() {
        return; // the file system refuses such names itself
    }
    let (_, err) = run(d, &["compress", "f", "f.dmx", "-q"], 2);
    assert!(err.contains("bad-"), "names the file: {err}");
    assert!(!err.contains("corrupt"), "{err}");
    assert!(!d.join("f.dmx").exists());
    let (_, err) = run(
        d,
        &["compress", bad.to_str().unwrap_or("f/bad"), "g.dmx"],
        2,
    );
    assert!(!err.contains("corrupt"), "{err}");
}

/// Finding 10: a valid safetensors file with a tensor of rank 1001 (above the rank limit
/// of 64) is stored as a blob with a warning, not refused, and restores exactly.
#[test]
fn a_rank_beyond_the_limit_is_stored_as_a_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let shape = vec![1usize; 1001];
    let t = vec![
        Tensor::new("deep", "F32", &shape, 2.5f32.to_le_bytes().to_vec()),
        Tensor::generated("w", "BF16", &[8, 8], Mode::Weights, 1),
    ];
    let file = common::safetensors(&t, &Layout::default());
    common::write(&d.join("deep.safetensors"), &file);
    let (_, err) = run(d, &["compress", "deep.safetensors", "deep.dmx", "-q"], 0);
    assert!(err.contains("rank 1001"), "warns: {err}");
    let (out, _) = run(d, &["info", "deep.dmx"], 0);
    assert!(out.contains("blob"), "{out}");
    run(d, &["decompress", "deep.dmx", "back.safetensors", "-q"], 0);
    assert!(std::fs::read(d.join("back.safetensors")).expect("restored") == file);
}

/// Finding 9: many tiny tensors or files give an archive smaller than the input (format
/// 1.2), and `info` shows the index bytes, which its size and ratio include.
#[test]
fn tiny_tensors_and_files_do_not_inflate_and_info_counts_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let tensors: Vec<Tensor> = (0..5000u64)
        .map(|i| Tensor::generated(&format!("blocks.{i}.norm"), "F32", &[4], Mode::Weights, i))
        .collect();
    let file = common::safetensors(&tensors, &Layout::default());
    common::write(&d.join("many.safetensors"), &file);
    run(d, &["compress", "many.safetensors", "many.dmx", "-q"], 0);
    let size = std::fs::metadata(d.join("many.dmx"))
        .expect("archive")
        .len();
    assert!(size < file.len() as u64, "{size} >= {}", file.len());
    let (out, _) = run(d, &["info", "many.dmx"], 0);
    // Packed tensors (1.2) coded with codec 10 (1.5).
    assert!(out.contains("format:    dmx 1.5"), "{out}");
    assert!(out.contains("index:"), "{out}");
    assert!(out.contains("tensors:   5000"), "{out}");
    let (json, _) = run(d, &["info", "many.dmx", "--json"], 0);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let index = v["index_bytes"].as_u64().expect("index_bytes");
    assert!(index > 0 && index < size, "{index}");
    assert_eq!(v["archive_bytes"].as_u64(), Some(size));
    run(d, &["verify", "many.safetensors", "many.dmx"], 0);
    let (out, _) = run(
        d,
        &[
            "extract",
            "--tensor",
            "blocks.4321.norm",
            "many.dmx",
            "one.safetensors",
        ],
        0,
    );
    let _ = out;
    let one = std::fs::read(d.join("one.safetensors")).expect("extracted");
    assert!(one.ends_with(&tensors[4321].data));

    let folder = d.join("small");
    let mut total = 0;
    for i in 0..2000 {
        let body = format!("{i}\n");
        total += body.len() as u64;
        common::write(
            &folder.join(format!("s{}/{i}.txt", i % 10)),
            body.as_bytes(),
        );
    }
    run(d, &["compress", "small", "small.dmx", "-q", "--no-sync"], 0);
    let size = std::fs::metadata(d.join("small.dmx"))
        .expect("archive")
        .len();
    assert!(size < total, "{size} >= {total} bytes of files");
    let (out, _) = run(d, &["info", "small.dmx"], 0);
    assert!(out.contains("files:     2000"), "{out}");
    run(
        d,
        &["decompress", "small.dmx", "small.out", "-q", "--no-sync"],
        0,
    );
    assert_eq!(common::tree(&d.join("small.out")), common::tree(&folder));
    run(d, &["verify", "small", "small.dmx"], 0);
}
