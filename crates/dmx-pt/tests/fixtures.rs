//! Scans the fixtures written by `make_fixtures.py` (the real `torch.save`) and compares
//! every storage and tensor with the script's own description in `expected.json`.

use std::path::PathBuf;

use dmx_pt::{Component, Format, PtLayout, RecordKind, Segment, component, scan};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(dir().join("expected.json")).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

fn load(name: &str) -> (Vec<u8>, PtLayout) {
    let file = std::fs::read(dir().join(name)).unwrap();
    let layout = scan(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
    (file, layout)
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn every_fixture_matches_its_description() {
    let all = expected();
    assert_eq!(all.len(), 12);
    for (name, want) in &all {
        let (file, layout) = load(name);
        let format = if matches!(layout.format, Format::Zip { .. }) {
            "zip"
        } else {
            "legacy"
        };
        assert_eq!(format, want["format"], "{name}");
        let ws = want["storages"].as_array().unwrap();
        assert_eq!(layout.storages.len(), ws.len(), "{name}: storages");
        for (s, w) in layout.storages.iter().zip(ws) {
            assert_eq!(s.key, w["key"].as_str().unwrap(), "{name}");
            assert_eq!(s.dtype.unwrap().name(), w["dtype"], "{name} {}", s.key);
            assert_eq!(s.numel, w["numel"].as_u64().unwrap(), "{name} {}", s.key);
            assert_eq!(
                s.range.start,
                w["start"].as_u64().unwrap(),
                "{name} {}",
                s.key
            );
            assert_eq!(s.range.end, w["end"].as_u64().unwrap(), "{name} {}", s.key);
            assert_eq!(s.location, "cpu");
        }
        let wt = want["tensors"].as_array().unwrap();
        assert_eq!(layout.tensors.len(), wt.len(), "{name}: tensors");
        for (t, w) in layout.tensors.iter().zip(wt) {
            assert_eq!(t.name, w["name"].as_str().unwrap(), "{name}");
            assert_eq!(
                layout.storages[t.storage].key,
                w["storage"].as_str().unwrap(),
                "{name} {}",
                t.name
            );
            assert_eq!(t.dtype.name(), w["dtype"], "{name} {}", t.name);
            assert_eq!(t.offset, w["offset"].as_u64().unwrap(), "{name} {}", t.name);
            assert_eq!(t.shape, u64s(&w["shape"]), "{name} {}", t.name);
            assert_eq!(t.stride, u64s(&w["stride"]), "{name} {}", t.name);
        }
        if name != "malicious.pt" {
            assert!(layout.warnings.is_empty(), "{name}: {:?}", layout.warnings);
        }
        assert!(!layout.big_endian);
        // the segments tile the file exactly
        let mut at = 0;
        for seg in layout.segments(file.len() as u64) {
            let r = match seg {
                Segment::Skeleton(r) => r,
                Segment::Storage(i) => layout.storages[i].range.clone(),
            };
            assert_eq!(r.start, at, "{name}");
            at = r.end;
        }
        assert_eq!(at, file.len() as u64, "{name}");
    }
}

#[test]
fn zip_records_are_all_found_and_aligned() {
    let (file, layout) = load("adamw.pt");
    assert_eq!(
        layout.format,
        Format::Zip {
            archive: "adamw".into()
        }
    );
    let kinds: Vec<RecordKind> = layout.records.iter().map(|r| r.kind).collect();
    for k in [
        RecordKind::Pickle,
        RecordKind::FormatVersion,
        RecordKind::StorageAlignment,
        RecordKind::ByteOrder,
        RecordKind::Version,
        RecordKind::SerializationId,
    ] {
        assert_eq!(kinds.iter().filter(|&&x| x == k).count(), 1, "{k:?}");
    }
    assert_eq!(
        kinds.iter().filter(|&&x| x == RecordKind::Storage).count(),
        layout.storages.len()
    );
    for r in &layout.records {
        assert_eq!(r.header.end, r.data.start);
        assert_eq!(r.data.end, r.descriptor.start);
        assert!(
            r.descriptor.end > r.descriptor.start,
            "torch writes data descriptors"
        );
        if r.kind == RecordKind::Storage {
            assert_eq!(r.data.start % 64, 0);
        }
    }
    let pkl = layout
        .records
        .iter()
        .find(|r| r.kind == RecordKind::Pickle)
        .unwrap();
    assert_eq!(layout.pickle, pkl.data);
    assert_eq!(file[pkl.data.start as usize], 0x80);
    assert_eq!(file[pkl.data.end as usize - 1], b'.');
}

#[test]
fn odd_file_names_keep_their_archive_name() {
    let (_, layout) = load("odd name-ü.v1.pt");
    // torch names the top folder "archive" when the file's stem is not plain ASCII
    assert_eq!(
        layout.format,
        Format::Zip {
            archive: "archive".into()
        }
    );
    let names: Vec<&str> = layout.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["päram.0", "7"]);
}

#[test]
fn optimizer_components() {
    let (_, layout) = load("adamw.pt");
    let count = |c: Component| {
        layout
            .tensors
            .iter()
            .filter(|t| component(&t.name) == c)
            .count()
    };
    assert_eq!(count(Component::Weights), 6);
    assert_eq!(count(Component::ExpAvg), 6);
    assert_eq!(count(Component::ExpAvgSq), 6);
    assert_eq!(count(Component::Other), 6, "the step counters");
    let (_, sgd) = load("sgd_momentum.pt");
    assert!(
        sgd.tensors
            .iter()
            .all(|t| component(&t.name) == Component::Other)
    );
    assert!(
        sgd.tensors
            .iter()
            .any(|t| t.name == "state.0.momentum_buffer")
    );
    assert_eq!(component("layer.0.weight"), Component::Weights);
    assert_eq!(
        component("optimizer_states.0.state.12.exp_avg_sq"),
        Component::ExpAvgSq
    );
    assert_eq!(component("param_groups.0.lr"), Component::Other);
}

#[test]
fn shared_storages_pair_by_first_name() {
    let (_, layout) = load("views.pt");
    let names = layout.storage_names();
    assert_eq!(names[0], Some("base"));
    assert_eq!(names[1], Some("tied.0"));
    let strided = layout.tensors.iter().find(|t| t.name == "strided").unwrap();
    assert_eq!((strided.offset, strided.stride.as_slice()), (3, &[5][..]));
}

#[test]
fn legacy_format_is_read() {
    let (file, layout) = load("legacy.pt");
    assert_eq!(layout.format, Format::Legacy);
    assert!(layout.records.is_empty());
    assert_eq!(layout.storages.last().unwrap().range.end, file.len() as u64);
    assert!(layout.pickle.start > 0 && layout.pickle.end < layout.storages[0].range.start);
}
