//! Replays the committed fuzz regression cases: every file in
//! `tests/fuzz-regressions/<target>/` goes through the same property function as the fuzz
//! target `<target>` (`fuzz/src/lib.rs`, compiled here as a module), so a crash found once
//! by the fuzzer stays fixed in a plain `cargo test`. The golden vectors of `tests/vectors`
//! also go through the `archive` property.
//!
//! A case whose bug is not fixed yet is listed in [`PENDING`] and replayed by its own
//! `#[ignore]`d test naming the bug; once fixed, remove it from both.

#[path = "../../../../fuzz/src/lib.rs"]
mod props;

use std::path::{Path, PathBuf};

/// Cases (`target/file`) that still fail; each has an `#[ignore]`d test below.
const PENDING: &[&str] = &[];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The case files of `target`, sorted (none when the folder does not exist).
fn cases(target: &str) -> Vec<PathBuf> {
    let dir = root().join("tests/fuzz-regressions").join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .map(|e| e.expect("read case folder").path())
            .filter(|p| p.is_file())
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                name.is_some_and(|n| !n.starts_with('.') && !n.ends_with(".md"))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Runs `property` on every case of `target` not listed in [`PENDING`].
fn replay(target: &str, property: fn(&[u8])) -> usize {
    let mut n = 0;
    for path in cases(target) {
        let name = path.file_name().expect("name").to_string_lossy();
        if PENDING.contains(&format!("{target}/{name}").as_str()) {
            continue;
        }
        let data = std::fs::read(&path).expect("read case");
        eprintln!("replaying {target}/{name} ({} bytes)", data.len());
        property(&data);
        n += 1;
    }
    n
}

/// Runs one case by name (for the `#[ignore]`d tests of pending bugs).
fn replay_one(target: &str, name: &str, property: fn(&[u8])) {
    let path = root()
        .join("tests/fuzz-regressions")
        .join(target)
        .join(name);
    property(&std::fs::read(&path).expect("read case"));
}

#[test]
fn index() {
    replay("index", props::index);
}

#[test]
fn decode() {
    replay("decode", props::decode);
}

#[test]
fn roundtrip() {
    replay("roundtrip", props::roundtrip);
}

#[test]
fn bfp() {
    replay("bfp", props::bfp);
}

#[test]
fn quant() {
    replay("quant", props::quant);
}

#[test]
fn ints() {
    replay("ints", props::ints);
}

#[test]
fn delta() {
    replay("delta", props::delta);
}

#[test]
fn archive() {
    replay("archive", props::archive);
    // The golden vectors, valid and damaged, hold the archive property too.
    let mut vectors = 0;
    for entry in std::fs::read_dir(root().join("tests/vectors")).expect("tests/vectors") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "dmx") {
            props::archive(&std::fs::read(&path).expect("read vector"));
            props::index(&std::fs::read(&path).expect("read vector"));
            vectors += 1;
        }
    }
    assert!(vectors >= 2, "golden vectors found: {vectors}");
}

#[test]
fn safetensors() {
    replay("safetensors", props::safetensors);
    let tiny = std::fs::read(root().join("tests/vectors/tiny.safetensors")).expect("read");
    props::safetensors(&tiny);
}

/// The `pt_compress` property on every `torch.save` fixture of `dmx-pt`, whole and cut short
/// or with a byte flipped in the pickle (files that then no longer scan become blobs).
#[test]
fn pt_compress() {
    replay("pt_compress", props::pt_compress);
    let dir = root().join("crates/dmx-pt/tests/fixtures");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("dmx-pt fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "pt") {
            let bytes = std::fs::read(&path).expect("read fixture");
            props::pt_compress(&bytes);
            props::pt_compress(&bytes[..bytes.len() / 2]);
            let mut flipped = bytes.clone();
            flipped[bytes.len() / 3] ^= 0x55;
            props::pt_compress(&flipped);
            files += 1;
        }
    }
    assert!(files >= 10, "fixtures found: {files}");
}

/// Fixed bug: `Archive::read_segment` (crates/dmx/src/archive.rs, `vec![0u8; len]`) allocates a
/// segment's declared length before decoding or checking any chunk, so this 25 KB archive,
/// which declares a 62.5 GiB tensor whose chunks all fail their checksum, makes
/// `read_tensor` and `dmx extract` abort ("memory allocation of 67108864000 bytes failed")
/// instead of returning an error. It now checks every chunk before allocating and fails cleanly when the size cannot be allocated.
#[test]
fn archive_declared_size_alloc_abort() {
    replay_one("archive", "declared-size-alloc-abort", props::archive);
}

/// Fixed bug: `PlannedSegment::chunking` (crates/dmx/src/plan.rs, `t.shape[1..].iter().product()`)
/// overflows for an empty float tensor of shape [0, 2^33, 2^33], which safetensors accepts
/// (zero elements): `dmx compress` panics in debug builds ("attempt to multiply with
/// overflow") and wraps silently in release builds.
#[test]
fn safetensors_zero_dim_row_overflow() {
    replay_one("safetensors", "zero-dim-row-overflow", props::safetensors);
}

#[test]
fn every_case_folder_is_a_target() {
    let dir = root().join("tests/fuzz-regressions");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    let known = [
        "index",
        "decode",
        "roundtrip",
        "archive",
        "safetensors",
        "bfp",
        "quant",
        "ints",
        "delta",
    ];
    for entry in rd {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert!(
                known.contains(&name.as_str()),
                "tests/fuzz-regressions/{name} matches no fuzz target replayed here"
            );
        }
    }
    for p in PENDING {
        assert!(
            root().join("tests/fuzz-regressions").join(p).is_file(),
            "pending case {p} does not exist"
        );
    }
}
