//! Round trips through the library API: generated safetensors files over every dtype, edge
//! shapes, special float values, odd header layouts, multi-chunk tensors, model folders,
//! opaque files, and thread-count independence of the archive bytes.

use dmx_testkit as common;

use std::path::Path;

use common::{DTYPES, Layout, Mode, Tensor};
use dmx::dmx_format::{EntryKind, SegmentKind};
use dmx::{Archive, Options};
use proptest::prelude::*;

use crate::proptest_config as config;

fn opts(threads: usize) -> Options {
    Options {
        threads: Some(threads),
        ..Options::default()
    }
}

/// Compresses `file` (written under `dir` as `name`), then checks decompress, read_tensor,
/// the index contents and verify. Returns the archive bytes.
fn round_trip_file(dir: &Path, name: &str, file: &[u8], tensors: &[Tensor]) -> Vec<u8> {
    let input = dir.join(name);
    common::write(&input, file);
    let packed = dir.join(format!("{name}.dmx"));
    let report = dmx::compress(&input, &packed, &opts(2)).expect("compress");
    assert!(
        report.warnings.is_empty(),
        "warnings: {:?}",
        report.warnings
    );
    assert_eq!(report.input_bytes, file.len() as u64);
    assert_eq!(report.tensors, tensors.len());
    let archive_bytes = std::fs::read(&packed).expect("read archive");
    assert_eq!(report.output_bytes, archive_bytes.len() as u64);

    let restored = dir.join(format!("{name}.restored"));
    dmx::decompress(&packed, &restored, &opts(2)).expect("decompress");
    let back = std::fs::read(&restored).expect("read restored");
    assert!(back == file, "restored bytes differ from the original");

    let archive = Archive::open(&packed).expect("open");
    let entries = &archive.index().entries;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].kind, EntryKind::Safetensors);
    assert_eq!(entries[0].path, name);
    assert_eq!(archive.tensors().count(), tensors.len());
    for t in tensors {
        let r = archive.tensor(&t.name).expect("tensor listed");
        assert_eq!(r.info.dtype, t.dtype);
        assert_eq!(
            r.info.shape,
            t.shape.iter().map(|&d| d as u64).collect::<Vec<_>>()
        );
        let data = archive.read_tensor(&t.name).expect("read_tensor");
        assert!(data == t.data, "tensor {:?} differs", t.name);
    }
    let rep = dmx::verify(&archive, Some(&input), &opts(1)).expect("verify");
    assert!(rep.ok, "{rep:?}");
    assert_eq!(rep.files[0].bit_exact, Some(true));
    assert_eq!(rep.files[0].tensors, tensors.len());
    let rep = dmx::verify(&archive, None, &opts(2)).expect("verify");
    assert!(rep.ok, "{rep:?}");
    assert_eq!(rep.files[0].bit_exact, None);
    let stats = dmx::Stats::of_archive(&archive);
    assert!(stats.lossless);
    assert_eq!(stats.original_bytes, file.len() as u64);
    archive_bytes
}

fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        3 => (1usize..300).prop_map(|n| vec![n]),
        3 => (1usize..24, 1usize..24).prop_map(|(a, b)| vec![a, b]),
        1 => (1usize..5, 1usize..7, 1usize..9).prop_map(|(a, b, c)| vec![a, b, c]),
        1 => Just(vec![]),
        1 => Just(vec![0]),
        1 => Just(vec![3, 0]),
        1 => Just(vec![1, 1, 1, 1]),
    ]
}

fn mode_strategy() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::RowScaled),
        Just(Mode::Random),
        Just(Mode::Weights),
        (1u32..40).prop_map(|rate| Mode::Mixed { rate }),
        Just(Mode::Special),
        Just(Mode::Constant),
    ]
}

fn tensor_strategy() -> impl Strategy<Value = (usize, Vec<usize>, Mode, u64)> {
    (
        0..DTYPES.len(),
        shape_strategy(),
        mode_strategy(),
        any::<u64>(),
    )
}

/// Names that sort differently from their insertion order, with characters JSON escapes.
fn tensor_name(i: usize, salt: u8) -> String {
    match (i + usize::from(salt)) % 5 {
        0 => format!("model.layers.{i}.weight"),
        1 => format!("z{i}"),
        2 => format!("A_{i}/bias"),
        3 => format!("tensor \"{i}\" \\ é"),
        _ => format!("{i}"),
    }
}

/// A permutation of `0..n` derived from `seed`.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    let mut rng = common::Rng(seed);
    for i in (1..n).rev() {
        p.swap(i, rng.below(i as u64 + 1) as usize);
    }
    p
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn random_safetensors_round_trip(
        specs in prop::collection::vec(tensor_strategy(), 0..7),
        salt in any::<u8>(),
        metadata in prop::option::of(prop::collection::vec(("[a-z_]{1,8}", "[ -~]{0,12}"), 0..4)),
        metadata_pos in 0usize..8,
        order_seed in any::<u64>(),
        offsets_first in any::<bool>(),
        align in any::<bool>(),
        extra_spaces in prop_oneof![3 => Just(0usize), 1 => 0usize..40],
        pretty in any::<bool>(),
    ) {
        let tensors: Vec<Tensor> = specs
            .iter()
            .enumerate()
            .map(|(i, (d, shape, mode, seed))| {
                Tensor::generated(&tensor_name(i, salt), DTYPES[*d].0, shape, *mode, *seed)
            })
            .collect();
        let mut metadata = metadata.unwrap_or_default();
        metadata.sort();
        metadata.dedup_by(|a, b| a.0 == b.0);
        let layout = Layout {
            metadata,
            metadata_pos,
            header_order: permutation(tensors.len(), order_seed),
            data_order: permutation(tensors.len(), order_seed.rotate_left(17)),
            offsets_first,
            extra_spaces,
            align,
            pretty,
        };
        let file = common::safetensors(&tensors, &layout);
        let dir = tempfile::tempdir().unwrap();
        round_trip_file(dir.path(), "model.safetensors", &file, &tensors);
    }

    #[test]
    fn random_blobs_round_trip(
        data in prop::collection::vec(any::<u8>(), 0..3000),
        repeat in 1usize..40,
        safetensors_name in any::<bool>(),
    ) {
        // Arbitrary bytes (often repeated, so zstd wins) under a plain name or a misleading
        // `.safetensors` one.
        let data: Vec<u8> = data.iter().copied().cycle().take(data.len() * repeat).collect();
        let dir = tempfile::tempdir().unwrap();
        let name = if safetensors_name { "x.safetensors" } else { "x.bin" };
        let input = dir.path().join(name);
        common::write(&input, &data);
        let packed = dir.path().join("x.dmx");
        let report = dmx::compress(&input, &packed, &opts(2)).unwrap();
        prop_assert_eq!(report.tensors, 0);
        let restored = dir.path().join("back");
        dmx::decompress(&packed, &restored, &opts(1)).unwrap();
        prop_assert!(std::fs::read(&restored).unwrap() == data);
        let archive = Archive::open(&packed).unwrap();
        prop_assert!(dmx::verify(&archive, Some(&input), &opts(2)).unwrap().ok);
    }
}

#[test]
fn every_dtype_with_every_special_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = Vec::new();
    for (i, (dtype, _)) in DTYPES.iter().enumerate() {
        let n = common::specials(dtype).len();
        // Every special value, then (for an odd length) the same values mixed into weights.
        tensors.push(Tensor::generated(
            &format!("{dtype}.special"),
            dtype,
            &[n],
            Mode::Special,
            i as u64,
        ));
        tensors.push(Tensor::generated(
            &format!("{dtype}.mixed"),
            dtype,
            &[3, 333],
            Mode::Mixed { rate: 5 },
            i as u64,
        ));
        tensors.push(Tensor::generated(
            &format!("{dtype}.scalar"),
            dtype,
            &[],
            Mode::Weights,
            i as u64,
        ));
        tensors.push(Tensor::new(&format!("{dtype}.empty"), dtype, &[0], vec![]));
        tensors.push(Tensor::new(
            &format!("{dtype}.empty2"),
            dtype,
            &[3, 0],
            vec![],
        ));
    }
    let layout = Layout {
        metadata: vec![
            ("format".into(), "pt".into()),
            ("note".into(), "special \"values\"\n".into()),
        ],
        metadata_pos: 3,
        align: true,
        ..Layout::default()
    };
    let file = common::safetensors(&tensors, &layout);
    round_trip_file(dir.path(), "special.safetensors", &file, &tensors);
}

#[test]
fn header_only_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    // No tensors at all, with and without metadata, and an unpadded header.
    let cases: Vec<Vec<u8>> = vec![
        common::safetensors(&[], &Layout::default()),
        common::safetensors(
            &[],
            &Layout {
                metadata: vec![("a".into(), "b".into())],
                extra_spaces: 13,
                ..Layout::default()
            },
        ),
        common::safetensors(
            &[Tensor::new("only_empty", "F32", &[0, 5], vec![])],
            &Layout {
                align: true,
                pretty: true,
                ..Layout::default()
            },
        ),
    ];
    for (i, file) in cases.iter().enumerate() {
        let tensors = if i == 2 {
            vec![Tensor::new("only_empty", "F32", &[0, 5], vec![])]
        } else {
            vec![]
        };
        round_trip_file(dir.path(), &format!("h{i}.safetensors"), file, &tensors);
    }
}

#[test]
fn tensors_larger_than_a_chunk_span_several_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let chunk = dmx::CHUNK_SIZE as usize;
    // 2.5 chunks of BF16 weights, an F32 tensor with an odd element count just over one
    // chunk, and small tensors around them.
    let tensors = vec![
        Tensor::generated("before", "F16", &[7], Mode::Mixed { rate: 2 }, 1),
        Tensor::generated("big.bf16", "BF16", &[5, chunk / 4], Mode::Weights, 2),
        Tensor::generated(
            "big.f32",
            "F32",
            &[chunk / 4 + 3],
            Mode::Mixed { rate: 1000 },
            3,
        ),
        Tensor::generated("after", "I32", &[11], Mode::Random, 4),
    ];
    let file = common::plain(&tensors);
    let packed = round_trip_file(dir.path(), "big.safetensors", &file, &tensors);
    let archive = Archive::open(&dir.path().join("big.safetensors.dmx")).unwrap();
    let chunks = |name: &str| archive.tensor(name).unwrap().segment.chunks.len();
    assert_eq!(chunks("big.bf16"), 3);
    assert_eq!(chunks("big.f32"), 2);
    assert_eq!(chunks("before"), 1);
    assert!(
        packed.len() < file.len() * 9 / 10,
        "weights should compress"
    );
}

/// A file of several decode windows whose last window is shorter than the one before:
/// decompression reuses the longer window's buffer without zero-filling it again, and every
/// byte it hands on must still be the decoded one.
#[test]
fn windows_of_decreasing_size_restore_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let chunk = dmx::CHUNK_SIZE as usize;
    // Five 1 MiB chunks of BF16 (rows of half a chunk) and a small tail: with two threads,
    // windows of four chunks and then of one and a half.
    let tensors = vec![
        Tensor::generated("w", "BF16", &[10, chunk / 4], Mode::Weights, 7),
        Tensor::generated("tail", "F32", &[chunk / 16 + 5], Mode::Weights, 8),
    ];
    let file = common::plain(&tensors);
    round_trip_file(dir.path(), "windows.safetensors", &file, &tensors);
    let archive = Archive::open(&dir.path().join("windows.safetensors.dmx")).unwrap();
    assert_eq!(archive.tensor("w").unwrap().segment.chunks.len(), 5);
}

/// The codec ids of the chunks of tensor `name` of `archive`, in order.
fn chunk_codecs(archive: &Archive, name: &str) -> Vec<u8> {
    let tensor = archive.tensor(name).unwrap();
    tensor.segment.chunks.iter().map(|c| c.codec).collect()
}

/// Values whose symbols Huffman's whole-bit codes fit badly (one dominant binade) get codec
/// 12, and the archive says format 1.6; it restores byte for byte and decodes the same on
/// the scalar path.
#[test]
fn skewed_exponents_round_trip_through_codec_12() {
    let dir = tempfile::tempdir().unwrap();
    let skewed = |n: usize, seed: u64| -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = match x % 100 {
                    0..85 => 0u16,
                    85..95 => 1,
                    _ => 2,
                };
                ((125 - k) << 7 | (x >> 20) as u16 & 15).to_le_bytes()
            })
            .collect()
    };
    let tensors = vec![
        Tensor {
            name: "moments".into(),
            dtype: "BF16".into(),
            shape: vec![300, 1000],
            data: skewed(300_000, 3),
        },
        Tensor::generated("w", "BF16", &[64, 64], Mode::Weights, 9),
    ];
    let file = common::plain(&tensors);
    round_trip_file(dir.path(), "skewed.safetensors", &file, &tensors);
    let archive = Archive::open(&dir.path().join("skewed.safetensors.dmx")).unwrap();
    assert_eq!(archive.version(), (1, 6));
    assert_eq!(
        chunk_codecs(&archive, "moments"),
        [12],
        "one chunk of codec 12"
    );
    let chunk = archive.tensor("moments").unwrap().segment.chunks[0];
    let bytes = std::fs::read(dir.path().join("skewed.safetensors.dmx")).unwrap();
    let payload = &bytes[chunk.offset as usize..][..chunk.stored_len as usize];
    for level in dmx::dmx_codec::cpu::Level::available() {
        let mut out = vec![0u8; chunk.raw_len as usize];
        dmx::dmx_codec::split::ans::decode_at(payload, &mut out, level).expect("decodes");
        assert_eq!(out, tensors[0].data, "{}", level.name());
    }
}

/// Convolution kernels whose taps fall off towards the ends (CREPE's shape, `[O, I, k, 1]`)
/// go through codec 16, the column-relative exponent transform with the kernel as period, and
/// restore byte for byte; a matrix (no kernel) and kernels without the structure do not.
#[test]
fn tapered_kernels_round_trip_through_codec_16() {
    let dir = tempfile::tempdir().unwrap();
    let tapered = |n: usize, k: usize, seed: u64| -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let tap = (i % k) as u64;
                let e = 124 - (tap * 8 / k as u64) - (x >> 40) % 2;
                ((x & 1) << 15 | e << 7 | (x >> 20) & 0x7f) as u16
            })
            .flat_map(u16::to_le_bytes)
            .collect()
    };
    let tensors = vec![
        Tensor {
            name: "conv.weight".into(),
            dtype: "BF16".into(),
            shape: vec![128, 32, 64, 1],
            data: tapered(128 * 32 * 64, 64, 3),
        },
        Tensor {
            name: "same.as.matrix".into(),
            dtype: "BF16".into(),
            shape: vec![128, 2048],
            data: tapered(128 * 2048, 64, 3),
        },
        Tensor::generated("plain.conv", "BF16", &[64, 16, 3, 3], Mode::Weights, 9),
    ];
    let file = common::plain(&tensors);
    round_trip_file(dir.path(), "conv.safetensors", &file, &tensors);
    let archive = Archive::open(&dir.path().join("conv.safetensors.dmx")).unwrap();
    let codecs = |name: &str| chunk_codecs(&archive, name);
    // 1.9 for codec 16; 1.10 where a chunk also takes codec 17.
    let top = archive
        .tensors()
        .flat_map(|t| t.segment.chunks.iter().map(|c| c.codec))
        .max();
    assert_eq!(archive.version(), (1, if top == Some(17) { 10 } else { 9 }));
    assert_eq!(codecs("conv.weight"), [16], "conv.weight");
    assert!(!codecs("same.as.matrix").contains(&16));
    assert!(!codecs("plain.conv").contains(&16));
    let conv = archive.tensor("conv.weight").unwrap().segment.chunks[0].stored_len;
    let matrix = archive.tensor("same.as.matrix").unwrap().segment.chunks[0].stored_len;
    assert!(conv * 100 < matrix * 95, "{conv} vs {matrix}");
}

#[test]
fn row_scaled_matrices_round_trip_through_codecs_11_and_17() {
    let dir = tempfile::tempdir().unwrap();
    let chunk = dmx::CHUNK_SIZE as usize;
    let tensors = vec![
        Tensor::generated("emb.bf16", "BF16", &[64, 96], Mode::RowScaled, 1),
        Tensor::generated("emb.f16", "F16", &[40, 3, 11], Mode::RowScaled, 2),
        Tensor::generated("emb.f32", "F32", &[33, 70], Mode::RowScaled, 3),
        // Rows of 1000 values: chunks of whole rows (524 rows, 1,048,000 bytes), not 1 MiB.
        Tensor::generated("big.bf16", "BF16", &[700, 1000], Mode::RowScaled, 4),
        // Rows too short (< 8 values) and a single row: codec 3 does not apply.
        Tensor::generated("short.rows", "BF16", &[50, 7], Mode::RowScaled, 5),
        Tensor::generated("one.row", "F32", &[1, 300], Mode::RowScaled, 6),
        // F64 and FP8 have no row codec.
        Tensor::generated("f64", "F64", &[20, 16], Mode::RowScaled, 7),
        Tensor::generated("fp8", "F8_E4M3", &[20, 16], Mode::RowScaled, 8),
    ];
    let file = common::plain(&tensors);
    round_trip_file(dir.path(), "rows.safetensors", &file, &tensors);
    let archive = Archive::open(&dir.path().join("rows.safetensors.dmx")).unwrap();
    let codecs = |name: &str| chunk_codecs(&archive, name);
    // The row transform over codec 10 (11) or, where rANS pays, over codec 12 (17).
    for name in ["emb.bf16", "emb.f16", "emb.f32"] {
        assert!(
            matches!(codecs(name).as_slice(), [11] | [17]),
            "{name}: {:?}",
            codecs(name)
        );
    }
    let big = archive.tensor("big.bf16").unwrap().segment;
    let raw: Vec<u32> = big.chunks.iter().map(|c| c.raw_len).collect();
    assert_eq!(
        raw,
        [1_048_000, 1_400_000 - 1_048_000],
        "chunks of whole rows"
    );
    assert!(raw[0] as usize <= chunk);
    for name in ["short.rows", "one.row", "f64", "fp8"] {
        assert!(!codecs(name).contains(&3), "{name}: {:?}", codecs(name));
    }
}

#[test]
fn folder_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    common::model_folder(&model, 7);
    // An empty file and a non-UTF-8-content blob as well.
    common::write(&model.join("empty.txt"), b"");
    common::write(&model.join("sub/deeper/blob.bin"), &[0xff, 0xfe, 0, 1, 2]);
    let packed = dir.path().join("model.dmx");
    let report = dmx::compress(&model, &packed, &opts(2)).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.files, 7);
    assert_eq!(report.tensors, 5);

    let archive = Archive::open(&packed).unwrap();
    let paths: Vec<&str> = archive
        .index()
        .entries
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "config.json",
            "empty.txt",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "sub/deeper/blob.bin",
            "sub/tokenizer.json",
        ]
    );
    for e in &archive.index().entries {
        let want = if e.path.ends_with(".safetensors") {
            EntryKind::Safetensors
        } else {
            EntryKind::Blob
        };
        assert_eq!(e.kind, want, "{}", e.path);
    }
    let rep = dmx::verify(&archive, Some(&model), &opts(2)).unwrap();
    assert!(rep.ok, "{rep:?}");
    assert!(rep.files.iter().all(|f| f.bit_exact == Some(true)));

    let restored = dir.path().join("restored");
    dmx::decompress(&packed, &restored, &opts(2)).unwrap();
    assert_eq!(common::tree(&restored), common::tree(&model));
    assert!(common::leftovers(dir.path()).is_empty());

    // A folder archive refuses to be verified against a single file, and a changed file in
    // the original folder is reported.
    let one = model.join("config.json");
    assert!(dmx::verify(&archive, Some(&one), &opts(1)).is_err());
    common::write(&model.join("config.json"), b"{}");
    let rep = dmx::verify(&archive, Some(&model), &opts(1)).unwrap();
    assert!(!rep.ok);
    let bad: Vec<&str> = rep
        .files
        .iter()
        .filter(|f| !f.ok)
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(bad, ["config.json"]);
}

#[test]
fn archives_do_not_depend_on_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    common::model_folder(&model, 11);
    let chunk = dmx::CHUNK_SIZE as usize;
    let big = vec![
        Tensor::generated("a", "BF16", &[chunk / 2 + 5], Mode::Weights, 5),
        Tensor::new("e", "F32", &[0], vec![]),
        Tensor::new("d", "F32", &[0], vec![]),
        Tensor::generated("b", "F32", &[chunk / 4 + 1], Mode::Mixed { rate: 50 }, 6),
    ];
    common::write(&model.join("big.safetensors"), &common::plain(&big));
    let one = dir.path().join("one.dmx");
    let two = dir.path().join("two.dmx");
    dmx::compress(&model, &one, &opts(1)).unwrap();
    dmx::compress(&model, &two, &opts(2)).unwrap();
    let (one, two) = (std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
    assert!(one == two, "archives differ between 1 and 2 threads");
    // And the same input compressed again gives the same bytes.
    let again = dir.path().join("again.dmx");
    dmx::compress(&model, &again, &Options::default()).unwrap();
    assert!(std::fs::read(&again).unwrap() == one);
}

#[test]
fn opaque_and_invalid_files_round_trip_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let good = common::plain(&[Tensor::generated("w", "BF16", &[40], Mode::Weights, 3)]);
    let mut wrong_len = good.clone();
    wrong_len.push(0); // data does not fill the file exactly
    let mut overlong = good.clone();
    overlong[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let raw = |header: &[u8], data: &[u8]| {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header);
        v.extend_from_slice(data);
        v
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        // (name, bytes, expect a warning)
        ("notes.bin", b"not a model at all\n".repeat(50), false),
        ("weights.pt", good.clone(), false),
        ("short.safetensors", b"abc".to_vec(), true),
        ("empty.safetensors", Vec::new(), true),
        (
            "json.safetensors",
            b"\x05\0\0\0\0\0\0\0{\"a\":".to_vec(),
            true,
        ),
        ("trailing.safetensors", wrong_len, true),
        ("overlong.safetensors", overlong, true),
        (
            "baddtype.safetensors",
            raw(
                br#"{"w":{"dtype":"NOPE","shape":[2],"data_offsets":[0,2]}}"#,
                &[1, 2],
            ),
            true,
        ),
        (
            "badoffsets.safetensors",
            raw(
                br#"{"w":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#,
                &[1, 2, 3],
            ),
            true,
        ),
        (
            "badshape.safetensors",
            raw(
                br#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            true,
        ),
        ("notjson.safetensors", raw(b"\xff\xfe garbage", &[]), true),
    ];
    for (name, bytes, warn) in &cases {
        let input = dir.path().join(name);
        common::write(&input, bytes);
        let packed = dir.path().join(format!("{name}.dmx"));
        let report = dmx::compress(&input, &packed, &opts(2)).unwrap();
        assert_eq!(
            report.warnings.len(),
            usize::from(*warn),
            "{name}: {report:?}"
        );
        if *warn {
            assert!(
                report.warnings[0].contains("stored as opaque bytes"),
                "{name}: {:?}",
                report.warnings
            );
        }
        assert_eq!(report.tensors, 0, "{name}");
        let archive = Archive::open(&packed).unwrap();
        assert_eq!(archive.index().entries[0].kind, EntryKind::Blob, "{name}");
        assert!(
            archive.index().entries[0]
                .segments
                .iter()
                .all(|s| s.kind == SegmentKind::Bytes)
        );
        assert!(dmx::verify(&archive, Some(&input), &opts(1)).unwrap().ok);
        let restored = dir.path().join(format!("{name}.back"));
        dmx::decompress(&packed, &restored, &opts(2)).unwrap();
        assert!(std::fs::read(&restored).unwrap() == *bytes, "{name}");
    }
}

// ---- Format 1.2: archive overhead, unusual files and names (issue 11, findings 9, 10, 6) ----

/// The size bound the reference writer keeps (docs/FORMAT.md §7.1): at most `S + 4096 +
/// S/64` for an input of `S` bytes (file bytes plus path bytes).
fn within_bound(archive: u64, input: u64) -> bool {
    archive <= input + 4096 + input / 64
}

fn no_sync() -> Options {
    Options {
        no_sync: true,
        ..opts(2)
    }
}

/// Finding 9: a file of 20,000 tiny tensors. Before format 1.2 each tensor paid a segment, a
/// chunk record, a BLAKE3 and an entropy field (~130 bytes of index for 16 bytes of data),
/// making the archive larger than its input.
#[test]
fn many_tiny_tensors_cost_a_few_bytes_each() {
    let dir = common::scratch();
    let tensors: Vec<Tensor> = (0..20_000u64)
        .map(|i| {
            Tensor::generated(
                &format!("model.layers.{i}.scale"),
                "F32",
                &[4],
                Mode::Weights,
                i,
            )
        })
        .collect();
    let file = common::safetensors(&tensors, &Layout::default());
    let input = dir.path().join("many.safetensors");
    common::write(&input, &file);
    let packed = dir.path().join("many.dmx");
    dmx::compress(&input, &packed, &no_sync()).expect("compress");
    let size = std::fs::metadata(&packed).expect("archive").len();
    let zstd19 = zstd::bulk::compress(&file, 19).expect("zstd").len() as u64;
    eprintln!(
        "20k tiny tensors: input {} bytes, dmx {size}, zstd -19 {zstd19}",
        file.len()
    );
    assert!(size <= file.len() as u64, "{size} > input {}", file.len());
    assert!(
        size * 2 <= zstd19 * 3,
        "{size} not within 1.5x of zstd -19 ({zstd19})"
    );
    let archive = Archive::open(&packed).expect("open");
    // Packed tensors and a compressed index (1.2); the F32 values coded with codec 12
    // (1.6), which 4-byte values with raw low bytes take wherever it is smaller at all.
    assert_eq!(archive.version(), (1, 6));
    assert!(archive.index_len() * 8 < size, "the index is compressed");
    assert_eq!(archive.tensors().count(), 20_000);
    for i in [0usize, 1, 12_345, 19_999] {
        assert_eq!(
            archive.read_tensor(&tensors[i].name).expect("read_tensor"),
            tensors[i].data,
            "{}",
            tensors[i].name
        );
    }
    let stats = dmx::Stats::of_archive(&archive);
    assert_eq!(stats.tensors, 20_000);
    assert_eq!(stats.index_bytes, Some(archive.index_len()));
    let out = dir.path().join("restored.safetensors");
    dmx::decompress(&packed, &out, &no_sync()).expect("decompress");
    assert!(std::fs::read(&out).expect("restored") == file);
    let rep = dmx::verify(&archive, Some(&input), &opts(2)).expect("verify");
    assert!(rep.ok && rep.files[0].tensors == 20_000, "{rep:?}");
    // TensorFile (used by diff and deltas) sees every packed tensor.
    let tf = dmx::tensors::TensorFile::open(&packed).expect("TensorFile");
    assert_eq!(tf.tensors().len(), 20_000);
    assert_eq!(
        &*tf.read(&tensors[777].name).expect("read"),
        &tensors[777].data[..]
    );
    // extract of a packed tensor gives a valid one-tensor file.
    let one = dir.path().join("one.safetensors");
    dmx::extract(&archive, &[tensors[9].name.clone()], &one, &no_sync()).expect("extract");
    let one = std::fs::read(&one).expect("extracted");
    assert!(one.ends_with(&tensors[9].data));
}

/// Finding 9: a folder of thousands of tiny files shares chunks in packs.
#[test]
fn many_tiny_files_share_chunks() {
    let dir = common::scratch();
    let root = dir.path().join("files");
    let mut total = 0u64;
    for i in 0..3000 {
        let rel = format!("d{}/file-{i}.txt", i % 30);
        let body = format!("entry {i} = {}\n", i * 7919 % 1000);
        total += (body.len() + rel.len()) as u64;
        common::write(&root.join(&rel), body.as_bytes());
    }
    common::write(&root.join("empty"), b"");
    let packed = dir.path().join("files.dmx");
    dmx::compress(&root, &packed, &no_sync()).expect("compress");
    let size = std::fs::metadata(&packed).expect("archive").len();
    eprintln!("3000 tiny files: input {total} bytes (with names), dmx {size}");
    assert!(size < total, "{size} >= {total}");
    let archive = Archive::open(&packed).expect("open");
    assert_eq!(archive.version(), (1, 2));
    assert!(
        archive
            .index()
            .entries
            .iter()
            .any(|e| e.kind == EntryKind::Pack)
    );
    let out = dir.path().join("restored");
    dmx::decompress(&packed, &out, &no_sync()).expect("decompress");
    assert_eq!(common::tree(&out), common::tree(&root));
    let rep = dmx::verify(&archive, Some(&root), &opts(2)).expect("verify");
    assert!(rep.ok, "{:?}", rep.files.iter().find(|f| !f.ok));
    let stats = dmx::Stats::of_archive(&archive);
    assert_eq!(stats.files.len(), 3001, "packs are not listed as files");
    assert_eq!(
        stats.original_bytes,
        common::tree(&root)
            .iter()
            .map(|(_, b)| b.len() as u64)
            .sum::<u64>()
    );
}

/// Finding 9: incompressible inputs never grow beyond the stated bound: one large file,
/// many small random tensors, a folder of small random files.
#[test]
fn incompressible_inputs_stay_within_the_bound() {
    let dir = common::scratch();
    let mut rng = common::Rng(99);
    let big = dir.path().join("noise.bin");
    common::write(&big, &rng.bytes(3 << 20));
    let mut tensors: Vec<Tensor> = (0..3000)
        .map(|i| Tensor::new(&format!("t{i}"), "U8", &[64], rng.bytes(64)))
        .collect();
    for i in 0..8 {
        tensors.push(Tensor::new(
            &format!("big{i}"),
            "U8",
            &[100_000],
            rng.bytes(100_000),
        ));
    }
    let st = dir.path().join("noise.safetensors");
    common::write(&st, &common::safetensors(&tensors, &Layout::default()));
    let folder = dir.path().join("noise");
    let mut names = 0u64;
    for i in 0..500 {
        let rel = format!("n{i}.bin");
        names += rel.len() as u64;
        common::write(&folder.join(rel), &rng.bytes(100 + i));
    }
    for (input, extra) in [(&big, 8u64), (&st, 0), (&folder, names)] {
        let out = dir.path().join("x.dmx");
        let rep = dmx::compress(
            input,
            &out,
            &Options {
                force: true,
                ..no_sync()
            },
        )
        .expect("compress");
        let size = std::fs::metadata(&out).expect("archive").len();
        let s = rep.input_bytes + extra;
        eprintln!("{}: input {s}, archive {size}", input.display());
        assert!(
            within_bound(size, s),
            "{}: {size} > bound for {s}",
            input.display()
        );
        let back = dir.path().join("back");
        let _ = std::fs::remove_dir_all(&back);
        let _ = std::fs::remove_file(&back);
        dmx::decompress(&out, &back, &no_sync()).expect("decompress");
        if input.is_dir() {
            assert_eq!(common::tree(&back), common::tree(input));
        } else {
            assert!(std::fs::read(&back).expect("back") == std::fs::read(input).expect("in"));
        }
    }
    // The single noise file gains only the preamble, index and trailer.
    let out = dir.path().join("x.dmx");
    dmx::compress(
        &big,
        &out,
        &Options {
            force: true,
            ..no_sync()
        },
    )
    .expect("compress");
    assert!(std::fs::metadata(&out).expect("archive").len() <= (3 << 20) + 400);
}

/// Finding 10: a valid safetensors file with a tensor of rank 1001 (beyond the rank limit
/// of 64) is stored as a blob with a warning and restored exactly.
#[test]
fn rank_beyond_the_limit_is_stored_as_a_blob() {
    let dir = common::scratch();
    let shape = vec![1usize; 1001];
    let tensors = vec![
        Tensor::new("deep", "F32", &shape, 1.5f32.to_le_bytes().to_vec()),
        Tensor::generated("w", "BF16", &[8, 8], Mode::Weights, 1),
    ];
    let file = common::safetensors(&tensors, &Layout::default());
    let input = dir.path().join("deep.safetensors");
    common::write(&input, &file);
    let packed = dir.path().join("deep.dmx");
    let rep = dmx::compress(&input, &packed, &no_sync()).expect("compress");
    assert_eq!(rep.warnings.len(), 1, "{:?}", rep.warnings);
    assert!(rep.warnings[0].contains("rank 1001"), "{}", rep.warnings[0]);
    let archive = Archive::open(&packed).expect("open");
    assert_eq!(archive.index().entries[0].kind, EntryKind::Blob);
    let out = dir.path().join("back.safetensors");
    dmx::decompress(&packed, &out, &no_sync()).expect("decompress");
    assert!(std::fs::read(&out).expect("back") == file);
}

/// Finding 6: names with `:` and `\` (ordinary on Unix) are stored and restored, alone and
/// in a folder.
#[cfg(unix)]
#[test]
fn names_with_colons_and_backslashes_round_trip() {
    let dir = common::scratch();
    let t = vec![Tensor::generated("w", "BF16", &[4, 4], Mode::Weights, 2)];
    let file = common::safetensors(&t, &Layout::default());
    for name in ["ckpt-2024-01-01T12:00:00.safetensors", "a\\b.safetensors"] {
        let input = dir.path().join(name);
        common::write(&input, &file);
        let packed = dir.path().join("n.dmx");
        dmx::compress(
            &input,
            &packed,
            &Options {
                force: true,
                ..no_sync()
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let archive = Archive::open(&packed).expect("open");
        assert_eq!(archive.index().entries[0].path, name);
        assert_eq!(archive.tensors().count(), 1);
        let out = dir.path().join("n.out");
        dmx::decompress(
            &packed,
            &out,
            &Options {
                force: true,
                ..no_sync()
            },
        )
        .expect("decompress");
        assert!(std::fs::read(&out).expect("out") == file);
    }
    let folder = dir.path().join("folder");
    common::write(&folder.join("run:1/ckpt-12:00.safetensors"), &file);
    common::write(&folder.join("back\\slash.txt"), b"hello");
    let packed = dir.path().join("f.dmx");
    dmx::compress(&folder, &packed, &no_sync()).expect("compress folder");
    let out = dir.path().join("f.out");
    dmx::decompress(&packed, &out, &no_sync()).expect("decompress");
    assert_eq!(common::tree(&out), common::tree(&folder));
}

/// Finding 9: a lossy archive of many tiny tensors keeps one segment per tensor (each with
/// its error record) but gets the compressed index of format 1.2.
#[test]
fn lossy_archives_of_tiny_tensors_get_a_compressed_index() {
    let dir = common::scratch();
    let tensors: Vec<Tensor> = (0..2000u64)
        .map(|i| Tensor::generated(&format!("h.{i}.w"), "F32", &[32], Mode::Weights, i))
        .collect();
    let file = common::safetensors(&tensors, &Layout::default());
    let input = dir.path().join("lossy.safetensors");
    common::write(&input, &file);
    let packed = dir.path().join("lossy.dmx");
    let lossy = dmx::lossy::LossyOptions {
        mode: dmx::lossy::Mode::Int16,
        ..Default::default()
    };
    dmx::compress_with(&input, &packed, &lossy, &no_sync()).expect("compress");
    let archive = Archive::open(&packed).expect("open");
    // 1.4: lossy records with per-value errors.
    assert_eq!(archive.version(), (1, 4));
    let raw = archive.index().to_bytes().len() as u64;
    assert!(
        archive.index_len() * 2 < raw,
        "{} vs {raw}",
        archive.index_len()
    );
    assert!(
        archive
            .tensors()
            .all(|t| t.segment.transform.lossy().is_some() && t.len == t.segment.len)
    );
    let rep = dmx::verify(&archive, Some(&input), &opts(2)).expect("verify");
    assert!(rep.ok, "{rep:?}");
}

/// A lossless archive (and a delta) of a file of many small tensors that is too large for
/// packing, as a CNN's, compresses its index (format 1.2): one segment per tensor, an index
/// under half its raw size, the file back byte for byte. A file of a few tensors keeps a
/// plain index.
#[test]
fn lossless_archives_of_many_tensors_compress_their_index() {
    let dir = common::scratch();
    let layer = |i: u64, seed: u64| {
        Tensor::generated(
            &format!("features.{i}.conv.weight"),
            "BF16",
            &[128, 64],
            Mode::Weights,
            seed + i,
        )
    };
    let base: Vec<Tensor> = (0..400).map(|i| layer(i, 0)).collect();
    let file = common::safetensors(&base, &Layout::default());
    let input = dir.path().join("cnn.safetensors");
    common::write(&input, &file);
    let packed = dir.path().join("cnn.dmx");
    dmx::compress(&input, &packed, &no_sync()).expect("compress");
    let archive = Archive::open(&packed).expect("open");
    assert_eq!(
        dmx::dmx_format::preamble_flags(&std::fs::read(&packed).unwrap()),
        1
    );
    let raw = archive.index().to_bytes().len() as u64;
    assert!(
        archive.index_len() * 2 < raw,
        "{} vs {raw}",
        archive.index_len()
    );
    assert_eq!(archive.index().entries[0].segments.len(), 401, "no packing");
    let out = dir.path().join("cnn.out");
    dmx::decompress(&packed, &out, &no_sync()).expect("decompress");
    assert!(std::fs::read(&out).unwrap() == file);

    // Its fine-tune, as a delta: the same.
    let target: Vec<Tensor> = (0..400).map(|i| layer(i, u64::from(i % 3 == 0))).collect();
    let target_file = common::safetensors(&target, &Layout::default());
    let target_path = dir.path().join("tuned.safetensors");
    common::write(&target_path, &target_file);
    let delta = dir.path().join("tuned.dmxd");
    let d = dmx::DeltaOptions {
        precision: dmx::Precision::Lossless,
        steps: None,
    };
    dmx::delta_compress(&input, &target_path, &delta, &d, &no_sync()).expect("delta");
    assert_eq!(
        dmx::dmx_format::preamble_flags(&std::fs::read(&delta).unwrap()),
        1
    );
    let archive = Archive::open(&delta).expect("open delta");
    assert!(archive.index_len() * 2 < archive.index().to_bytes().len() as u64);
    let out = dir.path().join("tuned.out");
    dmx::delta_reconstruct(&input, &delta, &out, &no_sync()).expect("reconstruct");
    assert!(std::fs::read(&out).unwrap() == target_file);

    // A few tensors: a plain index.
    let small = common::safetensors(&base[..3], &Layout::default());
    let small_path = dir.path().join("small.safetensors");
    common::write(&small_path, &small);
    let small_dmx = dir.path().join("small.dmx");
    dmx::compress(&small_path, &small_dmx, &no_sync()).expect("compress small");
    assert_eq!(
        dmx::dmx_format::preamble_flags(&std::fs::read(&small_dmx).unwrap()),
        0
    );
}
