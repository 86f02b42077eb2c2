//! Round trips and refusals of the index encoding.

use super::*;
use crate::{FormatError, Limits};

/// Writes `idx`, checks that it reads back equal, and returns its bytes.
fn round_trips(idx: &Index) -> Vec<u8> {
    let bytes = idx.to_bytes();
    assert_eq!(
        &Index::from_bytes(&bytes, 38, &Limits::default()).unwrap(),
        idx
    );
    bytes
}

/// [`round_trips`], and every truncation of the bytes fails to parse.
fn round_trips_and_truncations_fail(idx: &Index) {
    let bytes = round_trips(idx);
    for cut in 0..bytes.len() {
        assert!(Index::from_bytes(&bytes[..cut], 38, &Limits::default()).is_err());
    }
}

fn sample() -> Index {
    Index {
        root: Root::File,
        entries: vec![Entry {
            path: "dir/model.safetensors".into(),
            kind: EntryKind::Safetensors,
            size: 30,
            sha256: [7; 32],
            base: None,
            packed: None,
            views: Vec::new(),
            segments: vec![
                Segment {
                    kind: SegmentKind::Bytes,
                    transform: Transform::Identity,
                    offset: 0,
                    len: 10,
                    blake3: [1; 32],
                    entropy_bits: 3.5,
                    chunks: vec![Chunk {
                        offset: 16,
                        stored_len: 10,
                        raw_len: 10,
                        codec: 0,
                        xxh3: 9,
                    }],
                },
                Segment {
                    kind: SegmentKind::Tensor(TensorInfo {
                        name: "w".into(),
                        dtype: "BF16".into(),
                        shape: vec![2, 5],
                    }),
                    transform: Transform::Identity,
                    offset: 10,
                    len: 20,
                    blake3: [2; 32],
                    entropy_bits: 100.0,
                    chunks: vec![Chunk {
                        offset: 26,
                        stored_len: 12,
                        raw_len: 20,
                        codec: 2,
                        xxh3: 1,
                    }],
                },
            ],
        }],
    }
}

#[test]
fn round_trip() {
    let idx = sample();
    round_trips(&idx);
}

#[test]
fn the_float_codecs_set_the_minor_version() {
    // Codec 2 needs 1.0, codecs 10 and 11 need 1.5, codec 12 needs 1.6, codecs 13 and 14 1.7,
    // codec 15 1.8, codec 16 1.9, codec 17 1.10.
    for (codec, minor) in [
        (2, 0),
        (10, 5),
        (11, 5),
        (12, 6),
        (13, 7),
        (14, 7),
        (15, 8),
        (16, 9),
        (17, 10),
    ] {
        let mut idx = sample();
        idx.entries[0].segments[1].chunks[0].codec = codec;
        assert_eq!(idx.min_minor(), minor, "codec {codec}");
        round_trips(&idx);
    }
}

#[test]
fn round_trip_of_lossy_and_delta_features() {
    let mut idx = sample();
    assert_eq!(idx.min_minor(), 0);
    let lossy = Lossy {
        mode: LossyMode::Int16,
        mantissa_bits: 0,
        group_size: 0,
        step: 0.25,
        float_grid: false,
        error: ErrorStats {
            max_abs: 0.1,
            mean_abs: 0.05,
            rel_l2: 0.01,
            snr_db: f64::INFINITY,
            values: None,
        },
    };
    idx.entries[0].kind = EntryKind::SafetensorsDelta;
    idx.entries[0].base = Some(BaseRef {
        sha256: [3; 32],
        size: 99,
        removed: vec!["gone".into()],
    });
    idx.entries[0].segments[1].transform = Transform::QuantDelta {
        base: "w".into(),
        lossy,
        unchanged: 4,
    };
    assert_eq!(idx.min_minor(), 1);
    round_trips_and_truncations_fail(&idx);
    idx.entries[0].segments[1].transform = Transform::Lossy(lossy);
    round_trips(&idx);
    // A delta segment needs a base; a header segment takes no transform.
    idx.entries[0].kind = EntryKind::Safetensors;
    idx.entries[0].base = None;
    idx.entries[0].segments[1].transform = Transform::Delta {
        base: "w".into(),
        unchanged: 0,
    };
    assert!(Index::from_bytes(&idx.to_bytes(), 38, &Limits::default()).is_err());
    let mut idx = sample();
    idx.entries[0].segments[0].transform = Transform::Lossy(lossy);
    assert!(Index::from_bytes(&idx.to_bytes(), 38, &Limits::default()).is_err());
}

/// Format 1.4: transforms 4 and 5 carry the extended record (grid kind, per-value errors);
/// an unknown grid kind, or the floating grid on a non-integer mode, is rejected.
#[test]
fn round_trip_of_extended_lossy_records() {
    let mut idx = sample();
    let lossy = Lossy {
        mode: LossyMode::Int16,
        mantissa_bits: 10,
        group_size: 0,
        step: 0.0,
        float_grid: true,
        error: ErrorStats {
            max_abs: 0.1,
            mean_abs: 0.05,
            rel_l2: 0.01,
            snr_db: 40.0,
            values: Some(ValueErrors {
                max_rel: 4.8e-4,
                nonzero: 17,
                zeroed: 0,
            }),
        },
    };
    idx.entries[0].segments[1].transform = Transform::Lossy(lossy);
    assert_eq!(idx.entries[0].segments[1].transform.id(), 4);
    assert_eq!(idx.min_minor(), 4);
    round_trips_and_truncations_fail(&idx);
    // Per-value errors alone also make the record extended; without either it is 1.1's.
    let linear = Lossy {
        float_grid: false,
        mantissa_bits: 0,
        step: 0.5,
        ..lossy
    };
    idx.entries[0].kind = EntryKind::SafetensorsDelta;
    idx.entries[0].base = Some(BaseRef {
        sha256: [3; 32],
        size: 99,
        removed: vec![],
    });
    idx.entries[0].segments[1].transform = Transform::QuantDelta {
        base: "w".into(),
        lossy: linear,
        unchanged: 4,
    };
    assert_eq!(idx.entries[0].segments[1].transform.id(), 5);
    round_trips(&idx);
    let old = Lossy {
        error: ErrorStats {
            values: None,
            ..linear.error
        },
        ..linear
    };
    idx.entries[0].segments[1].transform = Transform::QuantDelta {
        base: "w".into(),
        lossy: old,
        unchanged: 4,
    };
    assert_eq!(idx.entries[0].segments[1].transform.id(), 3);
    assert_eq!(idx.min_minor(), 1);
    // The grid byte follows the 61 bytes of the 1.1 record: a BFP record with the floating
    // grid, and a grid kind of 2, are unknown.
    let bfp = Lossy {
        mode: LossyMode::Bfp,
        ..lossy
    };
    let mut idx = sample();
    idx.entries[0].segments[1].transform = Transform::Lossy(bfp);
    let err = Index::from_bytes(&idx.to_bytes(), 38, &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("lossy grid"), "{err}");
    idx.entries[0].segments[1].transform = Transform::Lossy(lossy);
    let mut bytes = idx.to_bytes();
    // Transform 4, mode 2 (int16), 10 fraction bits, group size 0; then step and 4 errors.
    let grid_at = find(&bytes, &[4u8, 2, 10, 0, 0, 0, 0]).expect("record") + 7 + 8 * 5;
    assert_eq!(bytes[grid_at], 1);
    bytes[grid_at] = 2;
    let err = Index::from_bytes(&bytes, 38, &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("lossy grid"), "{err}");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn rejects_out_of_range_chunks() {
    let bytes = sample().to_bytes();
    assert!(matches!(
        Index::from_bytes(&bytes, 37, &Limits::default()),
        Err(FormatError::OutOfRange(_))
    ));
}

/// Format 1.2: a packed tensor segment and a pack followed by the files it holds.
fn packed_sample() -> Index {
    let mut idx = sample();
    idx.root = Root::Directory;
    let seg = &mut idx.entries[0].segments[1];
    seg.kind = SegmentKind::Packed(vec![
        PackedTensor {
            info: TensorInfo {
                name: "a".into(),
                dtype: "F32".into(),
                shape: vec![3],
            },
            len: 12,
        },
        PackedTensor {
            info: TensorInfo {
                name: "b".into(),
                dtype: "U8".into(),
                shape: vec![2, 4],
            },
            len: 8,
        },
    ]);
    let mut pack = idx.entries[0].clone();
    pack.path = String::new();
    pack.kind = EntryKind::Pack;
    pack.segments.truncate(1);
    pack.size = 10;
    let file = |path: &str, size: u64, at: u64| Entry {
        path: path.into(),
        kind: EntryKind::Packed,
        size,
        sha256: [0; 32],
        base: None,
        segments: vec![],
        packed: Some(at),
        views: Vec::new(),
    };
    idx.entries.splice(
        0..0,
        [pack, file("x:1", 4, 0), file("y\\z", 0, 4), file("w", 6, 4)],
    );
    idx
}

#[test]
fn round_trip_of_packs_and_packed_tensors() {
    let idx = packed_sample();
    assert_eq!(idx.min_minor(), 2);
    round_trips_and_truncations_fail(&idx);
    let tensors = idx.entries[4].segments[1].kind.tensors(20);
    assert_eq!(
        tensors.iter().map(|t| (t.1, t.2)).collect::<Vec<_>>(),
        [(0, 12), (12, 8)]
    );
    // Files that do not tile their pack, a pack in a single-file archive, member sizes
    // that do not add up, a pack with a path: all refused.
    let mut bad = packed_sample();
    bad.entries[1].size = 5;
    assert!(Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()).is_err());
    let mut bad = packed_sample();
    bad.entries.remove(3);
    assert!(Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()).is_err());
    let mut bad = packed_sample();
    bad.entries.remove(0);
    assert!(Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()).is_err());
    let mut bad = packed_sample();
    bad.entries[0].path = "p".into();
    assert!(Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()).is_err());
    let mut bad = packed_sample();
    if let SegmentKind::Packed(m) = &mut bad.entries[4].segments[1].kind {
        m[1].len = 9;
    }
    assert!(Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()).is_err());
    let mut bad = sample();
    bad.entries.insert(0, packed_sample().entries[0].clone());
    bad.entries[1].path = "other".into();
    assert!(Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()).is_err());
}

#[test]
fn names_with_colons_and_backslashes_are_stored() {
    for p in [
        "ckpt-2024-01-01T12:00:00.safetensors",
        "a\\b",
        "c:x",
        "dir/a:b",
    ] {
        let mut idx = sample();
        idx.entries[0].path = p.into();
        let parsed = Index::from_bytes(&idx.to_bytes(), 38, &Limits::default());
        assert_eq!(parsed.is_ok(), !cfg!(windows), "{p}");
    }
}

#[test]
fn rejects_bad_paths() {
    for p in ["", "/abs", "a/../b", "a//b", "./a", "a/", "a\0b", ".."] {
        let mut idx = sample();
        idx.entries[0].path = p.into();
        assert!(
            Index::from_bytes(&idx.to_bytes(), 38, &Limits::default()).is_err(),
            "{p}"
        );
    }
}

#[test]
fn every_truncation_errors() {
    let bytes = sample().to_bytes();
    for cut in 0..bytes.len() {
        assert!(Index::from_bytes(&bytes[..cut], 38, &Limits::default()).is_err());
    }
}

#[test]
fn huge_counts_do_not_allocate() {
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0; 64]);
    assert!(Index::from_bytes(&bytes, 38, &Limits::default()).is_err());
}

/// A torch entry (format 1.3): the sample's segments with a view table into segment 1.
fn torch_sample(kind: EntryKind) -> Index {
    let mut idx = sample();
    let e = &mut idx.entries[0];
    e.path = "optimizer.pt".into();
    e.kind = kind;
    if kind.is_delta() {
        e.base = Some(BaseRef {
            sha256: [3; 32],
            size: 30,
            removed: vec![],
        });
    }
    e.views = vec![
        TorchView {
            name: "state.0.exp_avg".into(),
            dtype: "BF16".into(),
            segment: 1,
            offset: 2,
            shape: vec![2, 3],
            stride: vec![1, 2],
        },
        TorchView {
            name: "scalar".into(),
            dtype: "BF16".into(),
            segment: 1,
            offset: 0,
            shape: vec![],
            stride: vec![],
        },
    ];
    idx
}

#[test]
fn round_trip_of_torch_entries() {
    for kind in [EntryKind::Torch, EntryKind::TorchDelta] {
        let idx = torch_sample(kind);
        assert_eq!(idx.min_minor(), 3);
        round_trips_and_truncations_fail(&idx);
    }
    // A view must name a tensor segment: a bytes segment or one past the end is refused.
    for segment in [0, 2, u64::MAX] {
        let mut bad = torch_sample(EntryKind::Torch);
        bad.entries[0].views[0].segment = segment;
        assert_eq!(
            Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()),
            Err(FormatError::Invalid(
                "a torch view that does not name a tensor segment"
            ))
        );
    }
    // A rank above the limit is refused like a tensor's.
    let mut bad = torch_sample(EntryKind::Torch);
    bad.entries[0].views[0].shape = vec![1; 65];
    bad.entries[0].views[0].stride = vec![1; 65];
    assert!(matches!(
        Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()),
        Err(FormatError::LimitExceeded {
            what: "tensor rank",
            ..
        })
    ));
    // A delta transform needs a base: allowed in a torch delta, refused in a torch entry.
    let mut idx = torch_sample(EntryKind::TorchDelta);
    idx.entries[0].segments[1].transform = Transform::Delta {
        base: "w".into(),
        unchanged: 1,
    };
    assert!(Index::from_bytes(&idx.to_bytes(), 38, &Limits::default()).is_ok());
    idx.entries[0].kind = EntryKind::Torch;
    idx.entries[0].base = None;
    assert!(Index::from_bytes(&idx.to_bytes(), 38, &Limits::default()).is_err());
}
