//! The archive kinds under test, each a [`Subject`] made by one function.

use std::path::Path;

use dmx::Archive;
use dmx_testkit as common;
use dmx_testkit::{Layout, Mode, Restored, Tensor};

use super::damage::Plan;
use super::{Subject, opts};

fn decompress(archive: &Path, out: &Path) -> dmx::Result<()> {
    dmx::decompress(archive, out, &opts())
}

/// Compresses `original` (a file or folder in `dir`) losslessly into a subject that must
/// restore it exactly.
fn lossless(name: &'static str, dir: tempfile::TempDir, original: &Path) -> Subject {
    let packed = dir.path().join("good.dmx");
    dmx::compress(original, &packed, &opts()).expect("compress");
    let want = Restored::read(original);
    let s = Subject::new(name, dir, &packed, Box::new(decompress));
    assert!(s.expected == want, "{name}: restores the original");
    s
}

/// A single safetensors file whose archive is about 12 KB and uses codecs 0-3.
pub fn small_file() -> Subject {
    let tensors = vec![
        Tensor::generated("w.bf16", "BF16", &[48, 80], Mode::Weights, 1),
        Tensor::generated("w.f32", "F32", &[301], Mode::Mixed { rate: 7 }, 2),
        Tensor::generated("w.f16", "F16", &[17, 19], Mode::Weights, 3),
        Tensor::generated("noise", "U8", &[2048], Mode::Random, 4),
        Tensor::generated("ids", "I64", &[64], Mode::Weights, 5),
        Tensor::generated("mask", "BOOL", &[33], Mode::Random, 6),
        Tensor::new("empty", "F32", &[0], vec![]),
        Tensor::generated("e4m3", "F8_E4M3", &[129], Mode::Mixed { rate: 3 }, 7),
        Tensor::generated("emb.rows", "BF16", &[16, 40], Mode::RowScaled, 8),
    ];
    let dir = common::scratch();
    let original = dir.path().join("model.safetensors");
    common::write(&original, &common::safetensors(&tensors, &Layout::pt()));
    let s = lossless("file", dir, &original);
    let n = s.archive.len();
    assert!((8_000..60_000).contains(&n), "archive is {n} bytes");
    s
}

/// A small folder: a sharded model, JSON files, a nested file.
pub fn small_folder() -> Subject {
    let dir = common::scratch();
    let original = dir.path().join("model");
    common::model_folder(&original, 3);
    let s = lossless("folder", dir, &original);
    let n = s.archive.len();
    assert!(n < 20_000, "archive is {n} bytes");
    s
}

/// A format 1.2 folder archive (compressed index): a model of 80 tiny tensors (packed
/// segments) and 60 tiny text files (a pack).
pub fn packed_folder() -> Subject {
    let dir = common::scratch();
    let original = dir.path().join("packed");
    let tensors: Vec<Tensor> = (0..80u64)
        .map(|i| {
            let dtype = if i % 2 == 0 { "F32" } else { "BF16" };
            // Any two names differ in two bytes: a one-byte change of the index cannot
            // turn one tensor's name into another's (names are protected by the index
            // checksum alone).
            Tensor::generated(&format!("l.{i:02}.{i:02}.w"), dtype, &[4], Mode::Weights, i)
        })
        .collect();
    common::write(
        &original.join("model.safetensors"),
        &common::safetensors(&tensors, &Layout::default()),
    );
    for i in 0..60 {
        common::write(
            &original.join(format!("t/{i}.txt")),
            format!("text {i}\n").as_bytes(),
        );
    }
    let s = lossless("packed", dir, &original);
    assert_eq!(
        &s.archive[8..16],
        &[1, 0, 2, 0, 1, 0, 0, 0],
        "1.2, compressed index"
    );
    s
}

/// A lossless single-file archive (about 1.5 KB) of BF16, F32 and I64 tensors: raw, zstd
/// and float-huff payloads.
pub fn lossless_file() -> Subject {
    let tensors = vec![
        Tensor::generated("w.bf16", "BF16", &[12, 24], Mode::Weights, 11),
        Tensor::generated("norm.f32", "F32", &[40], Mode::Mixed { rate: 5 }, 12),
        Tensor::generated("ids.i64", "I64", &[3, 4], Mode::Weights, 13),
        Tensor::new("empty", "F32", &[0, 3], vec![]),
    ];
    let dir = common::scratch();
    let original = dir.path().join("model.safetensors");
    common::write(&original, &common::plain(&tensors));
    lossless("lossless", dir, &original)
}

/// A lossy archive (BFP for the BF16 tensor, int16 for the F32 one): what it restores to is
/// the approximation recorded at compression.
pub fn lossy_file() -> Subject {
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
pub fn delta_file() -> Subject {
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
    let delta = dmx::DeltaOptions::default();
    dmx::delta_compress(&base, &target, &packed, &delta, &opts()).expect("delta-compress");
    let s = Subject::new(
        "delta",
        dir,
        &packed,
        Box::new(move |d: &Path, out: &Path| dmx::delta_reconstruct(&base, d, out, &opts())),
    );
    assert_eq!(s.expected, Restored::File(target_bytes));
    s
}

/// A file whose F32 tensor spans three chunks (2 MiB and a bit): two full chunks, each one
/// value repeated (a different one per chunk, so that no two chunks store the same bytes),
/// and a short last one of weight-like values. The archive stays small (every damaged copy
/// is a check) while every restore decodes all three chunks.
pub fn multi_chunk() -> Subject {
    let chunk = dmx::CHUNK_SIZE as usize;
    let mut data = Vec::with_capacity(2 * chunk + 256);
    for v in [0.5f32, -1.25] {
        data.extend(std::iter::repeat_n(v.to_le_bytes(), chunk / 4).flatten());
    }
    data.extend(common::fill("F32", 64, Mode::Weights, 41));
    let tensors = vec![
        Tensor::new("big", "F32", &[data.len() / 4], data),
        Tensor::generated("small", "BF16", &[8, 8], Mode::Weights, 42),
    ];
    let dir = common::scratch();
    let original = dir.path().join("model.safetensors");
    common::write(&original, &common::plain(&tensors));
    let packed = dir.path().join("good.dmx");
    dmx::compress(&original, &packed, &opts()).expect("compress");
    let a = Archive::open(&packed).expect("open");
    let big = a.tensors().find(|t| t.info.name == "big").expect("big");
    assert_eq!(big.segment.chunks.len(), 3, "chunks of the big tensor");
    drop(a);
    let want = Restored::read(&original);
    let s = Subject::new("multi-chunk", dir, &packed, Box::new(decompress));
    assert!(s.expected == want, "multi-chunk: restores the original");
    s
}

/// The plan of [`multi_chunk`]: every restore decodes 2 MiB, so fewer full checks than
/// [`super::damage::SAMPLED`]: every byte XOR 0xff (every reader on every 31st), bit flips
/// at every 17th byte, every truncation, every 13th payload byte behind valid checksums,
/// every index byte behind a valid index checksum.
pub const MULTI_CHUNK: Plan = Plan {
    bytes: &[0xff],
    full_every: 31,
    bit_stride: 17,
    bits_framing: false,
    cuts: 1,
    payload: &[0x01, 0xff],
    payload_stride: 13,
    index: &[0xff],
};

/// A larger folder archive (about 54 KB) with multi-chunk tensors, for the exhaustive run.
pub fn larger_folder() -> Subject {
    let dir = common::scratch();
    let original = dir.path().join("model");
    common::model_folder(&original, 99);
    let chunk = dmx::CHUNK_SIZE as usize;
    // Two tensors of two chunks each, kept small: every decompress decodes all of them.
    let big = vec![
        Tensor::generated("constant", "F32", &[chunk / 4 + 9], Mode::Constant, 1),
        Tensor::generated("w", "BF16", &[96, 321], Mode::Mixed { rate: 100 }, 2),
        Tensor::generated("r", "U8", &[5000], Mode::Random, 3),
        Tensor::generated("emb", "F16", &[24, 80], Mode::RowScaled, 5),
        Tensor::generated("ids", "U8", &[chunk + 3], Mode::Constant, 4),
    ];
    common::write(&original.join("big.safetensors"), &common::plain(&big));
    lossless("larger", dir, &original)
}
