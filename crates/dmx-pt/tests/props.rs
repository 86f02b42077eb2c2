//! Property tests: scanning arbitrary or mutated bytes never panics, and whatever it
//! returns is self-consistent (ranges inside the file, views inside their storages).

use std::path::PathBuf;

use dmx_pt::{Limits, PtLayout, scan_with};
use proptest::prelude::*;

fn fixtures() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    [
        "model_f32.pt",
        "adamw.pt",
        "views.pt",
        "legacy.pt",
        "protocol4.pt",
        "malicious.pt",
    ]
    .iter()
    .map(|n| std::fs::read(dir.join(n)).unwrap())
    .collect()
}

/// Small limits so that hostile inputs hit them quickly.
fn limits() -> Limits {
    Limits {
        max_ops: 100_000,
        max_nodes: 100_000,
        max_alloc: 8 << 20,
        ..Limits::default()
    }
}

fn check(file: &[u8], layout: &PtLayout) {
    if let Err(e) = layout.invariants(file.len() as u64) {
        panic!("{e}");
    }
}

/// Opcodes and arguments that make pickles interesting.
fn pickle_soup() -> impl Strategy<Value = Vec<u8>> {
    let atoms = prop::sample::select(vec![
        &b"("[..],
        b")",
        b"]",
        b"}",
        b"N",
        b"K\x05",
        b"J\xff\xff\xff\xff",
        b"X\x01\x00\x00\x00a",
        b"t",
        b"l",
        b"d",
        b"a",
        b"e",
        b"s",
        b"u",
        b"R",
        b"\x81",
        b"b",
        b"q\x00",
        b"h\x00",
        b"q\x01",
        b"h\x01",
        b"2",
        b"0",
        b"1",
        b"\x85",
        b"\x86",
        b"\x87",
        b"\x94",
        b"\x93",
        b"Q",
        b"\x8f",
        b"\x90",
        b"\x91",
        b"ctorch._utils\n_rebuild_tensor_v2\n",
        b"ctorch\nFloatStorage\n",
        b"ccollections\nOrderedDict\n",
        b"cposix\nsystem\n",
        b"X\x07\x00\x00\x00storage",
        b"X\x03\x00\x00\x00cpu",
        b"\x8a\x01\x05",
        b"c_codecs\nencode\n",
        b"X\x06\x00\x00\x00latin1",
        b"\x95\x00\x00\x00\x00\x00\x00\x00\x00",
    ]);
    prop::collection::vec(atoms, 0..200).prop_map(|parts| {
        let mut p = b"\x80\x02".to_vec();
        for a in parts {
            p.extend_from_slice(a);
        }
        p.push(b'.');
        p
    })
}

fn legacy(body: &[u8]) -> Vec<u8> {
    let mut f =
        b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.\x80\x02}."
            .to_vec();
    f.extend_from_slice(body);
    f.extend_from_slice(b"\x80\x02].");
    f
}

// 256 cases each by default; `PROPTEST_CASES=30000` runs more (30 000 passed when written).
proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), zip in any::<bool>()) {
        let mut file = bytes;
        if zip {
            file.splice(0..0, *b"PK\x03\x04");
        } else {
            file.insert(0, 0x80);
        }
        if let Ok(layout) = scan_with(&file, &limits()) {
            check(&file, &layout);
        }
    }

    #[test]
    fn mutated_fixtures_never_panic(
        which in 0usize..6,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut file = fixtures().swap_remove(which);
        for (at, b) in edits {
            let i = at.index(file.len());
            file[i] = b;
        }
        if let Some(c) = cut {
            file.truncate(c.index(file.len()));
        }
        if let Ok(layout) = scan_with(&file, &limits()) {
            check(&file, &layout);
        }
    }

    #[test]
    fn pickle_soup_never_panics(body in pickle_soup()) {
        let file = legacy(&body);
        if let Ok(layout) = scan_with(&file, &limits()) {
            check(&file, &layout);
        }
    }
}
