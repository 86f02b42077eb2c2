//! The corruption matrix, per archive kind: every byte of a small archive changed (XOR 0xff),
//! single-bit flips at sampled positions, every truncation, and payload bytes changed behind
//! recomputed checksums. For each damaged copy, `Archive::open`, `verify`, decoding every
//! segment and restoring the archive must either fail with an error or yield exactly what the
//! undamaged archive yields — never different data, never a panic, nothing left behind.
//!
//! Each archive kind is a [`Subject`] built by one function; adding a kind (lossy, delta,
//! chain manifest) is that function plus one `#[test]` line calling [`matrix`]. The full
//! matrix (every bit of every byte) is `#[ignore]`d:
//! `cargo test -p dmx --test engine matrix -- --ignored`.

use dmx_testkit as common;
use dmx_testkit::Restored;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use common::{Mode, Tensor};
use dmx::dmx_format::{Index, Limits, Trailer};
use dmx::{Archive, Options};

fn opts() -> Options {
    Options {
        threads: Some(1),
        no_sync: true,
        ..Options::default()
    }
}

/// Restores the archive at the first path to the second (a file or a folder). A closure, so a
/// kind can capture what else it needs (a delta's base file, a chain's other archives).
type Restore = Box<dyn Fn(&Path, &Path) -> dmx::Result<()>>;

/// One archive kind under test.
struct Subject {
    name: &'static str,
    /// Scratch folder: the original, and the damaged copies and their outputs.
    dir: tempfile::TempDir,
    /// The undamaged archive.
    archive: Vec<u8>,
    restore: Restore,
    /// What `restore` yields from the undamaged archive (the original, for lossless kinds).
    expected: Restored,
    /// What every entry's segments decode to (concatenated), from the undamaged archive.
    decoded: Vec<(String, Vec<u8>)>,
}

/// How a damaged copy fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// `Archive::open` failed.
    OpenFailed,
    /// Opened, but `verify` and restoring both failed.
    Rejected,
    /// Some step passed, and what it yielded was identical to the undamaged archive's.
    Identical,
}

impl Subject {
    /// A subject from an undamaged archive file in `dir`: records what it restores to and what
    /// it decodes to, after checking that it verifies.
    fn new(name: &'static str, dir: tempfile::TempDir, archive: &Path, restore: Restore) -> Self {
        let bytes = std::fs::read(archive).expect("read archive");
        let a = Archive::open(archive).expect("open undamaged archive");
        // A delta decodes only with its base: only its restore (delta-reconstruct) applies.
        let is_delta = a.index().entries.iter().any(|e| e.base.is_some());
        let decoded = if is_delta {
            Vec::new()
        } else {
            let report = dmx::verify(&a, None, &opts()).expect("verify undamaged archive");
            assert!(report.ok, "{name}: undamaged archive fails verify");
            decode_all(&a).expect("decode undamaged archive")
        };
        let out = dir.path().join("expected");
        restore(archive, &out).expect("restore undamaged archive");
        let expected = Restored::read(&out);
        remove(&out);
        std::fs::remove_file(archive).expect("remove archive");
        Self {
            name,
            dir,
            archive: bytes,
            restore,
            expected,
            decoded,
        }
    }

    fn damaged(&self) -> PathBuf {
        self.dir.path().join("damaged.dmx")
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("restored")
    }

    /// Checks one damaged copy; panics (naming `what`) when it yields different data or
    /// panics itself.
    fn check(&self, bytes: &[u8], what: &str) -> Outcome {
        let path = self.damaged();
        std::fs::write(&path, bytes).expect("write damaged archive");
        let result = catch_unwind(AssertUnwindSafe(|| self.check_file(&path, what)));
        let out = self.out();
        if out.symlink_metadata().is_ok() {
            remove(&out);
        }
        match result {
            Ok(outcome) => outcome,
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{}: {what}: {msg}", self.name)
            }
        }
    }

    fn check_file(&self, path: &Path, what: &str) -> Outcome {
        let name = self.name;
        let archive = match Archive::open(path) {
            Ok(a) => a,
            Err(_) => return Outcome::OpenFailed,
        };
        let verified = matches!(dmx::verify(&archive, None, &opts()), Ok(r) if r.ok);
        if verified {
            // verify passed, so every segment must decode to what it did before the damage.
            let decoded = decode_all(&archive);
            assert!(
                decoded.as_ref() == Ok(&self.decoded),
                "{name}: {what}: verify passed but the archive decodes to different data"
            );
        }
        let out = self.out();
        let restored = (self.restore)(path, &out).is_ok();
        if restored {
            assert!(
                Restored::read(&out) == self.expected,
                "{name}: {what}: restored different data"
            );
        } else {
            assert!(
                out.symlink_metadata().is_err(),
                "{name}: {what}: a failed restore left its output behind"
            );
        }
        drop(archive);
        if verified || restored {
            Outcome::Identical
        } else {
            Outcome::Rejected
        }
    }

    /// Nothing but the damaged copy (and the original) is left in the scratch folder.
    fn assert_clean(&self) {
        let left = common::leftovers(self.dir.path());
        assert!(
            left.is_empty(),
            "{}: temporary files left: {left:?}",
            self.name
        );
    }
}

/// Every entry's segments decoded (chunk checksums checked, no BLAKE3), concatenated.
fn decode_all(a: &Archive) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for e in &a.index().entries {
        let mut bytes = Vec::new();
        for s in &e.segments {
            bytes.extend(a.read_segment(e, s).map_err(|e| e.to_string())?);
        }
        out.push((e.path.clone(), bytes));
    }
    Ok(out)
}

fn remove(path: &Path) {
    if path.is_dir() {
        std::fs::remove_dir_all(path).expect("remove folder");
    } else {
        std::fs::remove_file(path).expect("remove file");
    }
}

fn decompress(archive: &Path, out: &Path) -> dmx::Result<()> {
    dmx::decompress(archive, out, &opts())
}

// ---------------------------------------------------------------------------------------------
// Archive kinds. Each returns a Subject; add lossy, delta and chain-manifest kinds here.

/// A lossless single-file archive (about 1.5 KB) of a safetensors file holding BF16, F32 and
/// I64 tensors: raw, zstd and float-huff payloads.
fn lossless_file() -> Subject {
    let tensors = vec![
        Tensor::generated("w.bf16", "BF16", &[12, 24], Mode::Weights, 11),
        Tensor::generated("norm.f32", "F32", &[40], Mode::Mixed { rate: 5 }, 12),
        Tensor::generated("ids.i64", "I64", &[3, 4], Mode::Weights, 13),
        Tensor::new("empty", "F32", &[0, 3], vec![]),
    ];
    let file = common::plain(&tensors);
    let dir = common::scratch();
    let original = dir.path().join("model.safetensors");
    common::write(&original, &file);
    let packed = dir.path().join("model.dmx");
    dmx::compress(&original, &packed, &opts()).expect("compress");
    let s = Subject::new("lossless", dir, &packed, Box::new(decompress));
    assert_eq!(
        s.expected,
        Restored::File(file),
        "lossless restores the original"
    );
    s
}

/// A lossy archive (BFP for the BF16 tensor, int16 for the F32 one): what it restores to is
/// the approximation recorded at compression, and damage must never change it.
fn lossy_file() -> Subject {
    let tensors = vec![
        Tensor::generated("w.bf16", "BF16", &[12, 24], Mode::Weights, 21),
        Tensor::generated("norm.f32", "F32", &[40], Mode::Mixed { rate: 5 }, 22),
        Tensor::generated("ids.i64", "I64", &[3, 4], Mode::Weights, 23),
    ];
    let dir = common::scratch();
    let original = dir.path().join("model.safetensors");
    common::write(&original, &common::plain(&tensors));
    let packed = dir.path().join("model.dmx");
    let lossy = dmx::lossy::LossyOptions {
        mode: dmx::lossy::Mode::Auto,
        max_rel_error: Some(0.05),
        ..Default::default()
    };
    dmx::compress_with(&original, &packed, &lossy, &opts()).expect("compress");
    let a = Archive::open(&packed).expect("open");
    assert!(a.tensors().any(|t| t.segment.transform.lossy().is_some()));
    drop(a);
    Subject::new("lossy", dir, &packed, Box::new(decompress))
}

/// A lossless delta of a nudged checkpoint against its base; restored with the base.
fn delta_file() -> Subject {
    let base_tensors = vec![
        Tensor::generated("w.f32", "F32", &[16, 20], Mode::Weights, 31),
        Tensor::generated("w.bf16", "BF16", &[8, 24], Mode::Weights, 32),
        Tensor::generated("step", "I64", &[1], Mode::Weights, 33),
    ];
    let mut target_tensors = base_tensors.clone();
    for t in &mut target_tensors {
        for (i, b) in t.data.iter_mut().enumerate() {
            if i % 11 == 0 {
                *b ^= 1;
            }
        }
    }
    let dir = common::scratch();
    let base = dir.path().join("base.safetensors");
    let target = dir.path().join("target.safetensors");
    common::write(&base, &common::plain(&base_tensors));
    let target_bytes = common::plain(&target_tensors);
    common::write(&target, &target_bytes);
    let packed = dir.path().join("target.dmxd");
    dmx::delta_compress(
        &base,
        &target,
        &packed,
        &dmx::DeltaOptions::default(),
        &opts(),
    )
    .expect("delta-compress");
    let s = Subject::new(
        "delta",
        dir,
        &packed,
        Box::new(move |d: &Path, out: &Path| dmx::delta_reconstruct(&base, d, out, &opts())),
    );
    assert_eq!(s.expected, Restored::File(target_bytes));
    s
}

// ---------------------------------------------------------------------------------------------
// The matrix.

/// Which damage to apply.
struct Plan {
    /// Single-bit flips at every `bit_stride`-th byte (every bit of it).
    bit_stride: usize,
    /// Truncation at every `cut_stride`-th length (and every length near both ends).
    cut_stride: usize,
    /// Payload bytes changed behind recomputed checksums at every `payload_stride`-th byte.
    payload_stride: usize,
}

/// Sampled: every byte XOR 0xff, bit flips at every 7th byte, every truncation.
const SAMPLED: Plan = Plan {
    bit_stride: 7,
    cut_stride: 1,
    payload_stride: 3,
};

/// Exhaustive: every bit of every byte.
const FULL: Plan = Plan {
    bit_stride: 1,
    cut_stride: 1,
    payload_stride: 1,
};

/// Bytes 10..12 hold the minor version, which readers of the same major accept: the only
/// bytes of an archive whose change goes unnoticed (and changes nothing).
const UNUSED: [usize; 2] = [10, 11];

/// Runs the matrix on `s` and prints a summary line.
fn matrix(s: &Subject, plan: &Plan) {
    let start = std::time::Instant::now();
    let mut tally: BTreeMap<(&str, Outcome), usize> = BTreeMap::new();
    assert_eq!(s.check(&s.archive, "undamaged"), Outcome::Identical);
    let n = s.archive.len();
    let mut bytes = s.archive.clone();
    for i in 0..n {
        let mut patterns = vec![0xffu8];
        if i % plan.bit_stride == 0 {
            patterns.extend((0..8).map(|b| 1u8 << b));
        }
        for p in patterns {
            bytes[i] ^= p;
            let outcome = s.check(&bytes, &format!("byte {i} of {n} ^ {p:#04x}"));
            bytes[i] ^= p;
            *tally.entry(("flip", outcome)).or_default() += 1;
            if outcome == Outcome::Identical {
                assert!(
                    UNUSED.contains(&i),
                    "{}: byte {i} ^ {p:#04x} went unnoticed",
                    s.name
                );
            }
        }
    }
    let mut cuts: Vec<usize> = (0..n).step_by(plan.cut_stride).collect();
    cuts.extend(n.saturating_sub(40)..n);
    for len in cuts {
        let outcome = s.check(&s.archive[..len], &format!("truncated to {len} of {n}"));
        assert_ne!(
            outcome,
            Outcome::Identical,
            "{}: truncated to {len}",
            s.name
        );
        *tally.entry(("cut", outcome)).or_default() += 1;
    }
    let mut longer = s.archive.clone();
    longer.push(0);
    assert_eq!(s.check(&longer, "one byte appended"), Outcome::OpenFailed);
    for (at, bytes) in payload_damage(&s.archive, plan.payload_stride) {
        let outcome = s.check(&bytes, &format!("payload byte {at} behind valid checksums"));
        *tally.entry(("payload", outcome)).or_default() += 1;
    }
    s.assert_clean();
    eprintln!(
        "matrix {}: {n}-byte archive, {:.1} s: {tally:?}",
        s.name,
        start.elapsed().as_secs_f64()
    );
}

/// Copies of `archive` with one payload byte changed (every `stride`-th byte of the data
/// area, XOR 0x01 and 0xff alternately) and the chunk and index checksums recomputed, so the
/// change reaches the decoders and only the end-to-end digests can catch it.
fn payload_damage(archive: &[u8], stride: usize) -> Vec<(usize, Vec<u8>)> {
    let n = archive.len();
    let t = Trailer::from_bytes(&archive[n - 32..]).expect("trailer");
    let (start, len) = (t.index_offset as usize, t.index_len as usize);
    // Format 1.2 archives may store the index compressed (preamble flag bit 0).
    let flags = dmx::dmx_format::preamble_flags(archive);
    let index = Index::from_stored(
        &archive[start..start + len],
        flags,
        t.index_offset,
        &Limits::default(),
    )
    .expect("index");
    let mut out = Vec::new();
    for at in (16..start).step_by(stride) {
        let mut bytes = archive.to_vec();
        bytes[at] ^= if at % 2 == 0 { 0x01 } else { 0xff };
        let mut idx = index.clone();
        for c in idx
            .entries
            .iter_mut()
            .flat_map(|e| e.segments.iter_mut())
            .flat_map(|s| s.chunks.iter_mut())
        {
            let (o, l) = (c.offset as usize, c.stored_len as usize);
            c.xxh3 = xxhash_rust::xxh3::xxh3_64(&bytes[o..o + l]);
        }
        // A compressed index may change size: rebuild index and trailer after the data.
        let new_index = idx.to_stored(flags);
        if flags == 0 {
            assert_eq!(
                new_index.len(),
                len,
                "recomputed checksums keep the index size"
            );
        }
        bytes.truncate(start);
        bytes.extend_from_slice(&new_index);
        bytes.extend_from_slice(&Trailer::for_index(t.index_offset, &new_index).to_bytes());
        out.push((at, bytes));
    }
    out
}

#[test]
fn lossless_file_matrix_sampled() {
    let s = lossless_file();
    assert!(
        (300..4096).contains(&s.archive.len()),
        "fixture size {}",
        s.archive.len()
    );
    matrix(&s, &SAMPLED);
}

#[test]
#[ignore = "exhaustive; run with --ignored"]
fn lossless_file_matrix_full() {
    matrix(&lossless_file(), &FULL);
}

/// A format 1.2 folder archive (issue 11, finding 9): a model of 60 tiny tensors (packed
/// segments), 40 small text files (a pack) and a compressed index.
fn packed_folder() -> Subject {
    let dir = common::scratch();
    let original = dir.path().join("packed");
    let tensors: Vec<Tensor> = (0..60u64)
        .map(|i| Tensor::generated(&format!("p.{i:02}.{i:02}"), "F32", &[3], Mode::Weights, i))
        .collect();
    common::write(
        &original.join("model.safetensors"),
        &common::plain(&tensors),
    );
    for i in 0..40 {
        common::write(
            &original.join(format!("txt/{i:02}.txt")),
            format!("line {i}\n").as_bytes(),
        );
    }
    let packed = dir.path().join("packed.dmx");
    dmx::compress(&original, &packed, &opts()).expect("compress");
    let a = Archive::open(&packed).expect("open");
    assert_eq!(a.version(), (1, 2), "the fixture uses format 1.2");
    drop(a);
    let s = Subject::new("packed", dir, &packed, Box::new(decompress));
    assert_eq!(s.expected, Restored::Folder(common::tree(&original)));
    s
}

#[test]
fn packed_folder_matrix_sampled() {
    matrix(&packed_folder(), &SAMPLED);
}

#[test]
fn lossy_file_matrix_sampled() {
    matrix(&lossy_file(), &SAMPLED);
}

#[test]
fn delta_file_matrix_sampled() {
    matrix(&delta_file(), &SAMPLED);
}
