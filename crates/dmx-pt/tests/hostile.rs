//! Hostile input: pickles that would run commands, zip structures that lie, and pickles
//! built to exhaust memory. None of them runs anything, panics or grows without bound.

use std::path::PathBuf;

use dmx_pt::{Limits, PtError, scan, scan_with};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn malicious_pickle_is_inert_and_reported() {
    let marker = std::path::Path::new("/tmp/dmx_pt_pwned_marker");
    let _ = std::fs::remove_file(marker);
    let layout = scan(&fixture("malicious.pt")).unwrap();
    let w = layout.warnings.join("\n");
    assert!(w.contains("global posix.system is not allow-listed"), "{w}");
    assert!(
        w.contains("global builtins.eval is not allow-listed"),
        "{w}"
    );
    assert!(w.contains("call of posix.system kept inert"), "{w}");
    let names: Vec<&str> = layout.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["weight", "nested.bias"]);
    assert!(!marker.exists(), "nothing may run");
}

/// A zip whose single STORED entry claims `claimed` bytes.
fn tiny_zip(claimed: u32, count: u16) -> Vec<u8> {
    let name = b"a/data.pkl";
    let data = b"\x80\x02}q\x00.";
    let mut f = Vec::new();
    f.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    f.extend_from_slice(&0xc502_91f2u32.to_le_bytes()); // crc of the pickle
    f.extend_from_slice(&claimed.to_le_bytes());
    f.extend_from_slice(&claimed.to_le_bytes());
    f.extend_from_slice(&(name.len() as u16).to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(name);
    f.extend_from_slice(data);
    let cd = f.len() as u32;
    f.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    f.extend_from_slice(&0xc502_91f2u32.to_le_bytes());
    f.extend_from_slice(&claimed.to_le_bytes());
    f.extend_from_slice(&claimed.to_le_bytes());
    f.extend_from_slice(&(name.len() as u16).to_le_bytes());
    f.extend_from_slice(&[0; 12]);
    f.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    f.extend_from_slice(name);
    let cd_size = f.len() as u32 - cd;
    f.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00");
    f.extend_from_slice(&count.to_le_bytes());
    f.extend_from_slice(&count.to_le_bytes());
    f.extend_from_slice(&cd_size.to_le_bytes());
    f.extend_from_slice(&cd.to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    f
}

#[test]
fn hand_made_zip_is_read() {
    let layout = scan(&tiny_zip(6, 1)).unwrap();
    assert!(layout.tensors.is_empty() && layout.storages.is_empty());
    assert_eq!(layout.pickle, 40..46);
}

/// The same entry with every central-directory size and offset in a zip64 extra field and
/// zip64 end records.
fn tiny_zip64() -> Vec<u8> {
    let name = b"a/data.pkl";
    let mut f = tiny_zip(6, 1);
    let cd = f.len() - 22 - (46 + name.len());
    f.truncate(cd);
    f.extend_from_slice(b"PK\x01\x02\x2d\x00\x2d\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    f.extend_from_slice(&0xc502_91f2u32.to_le_bytes());
    f.extend_from_slice(&[0xFF; 8]); // sizes in the extra field
    f.extend_from_slice(&(name.len() as u16).to_le_bytes());
    f.extend_from_slice(&28u16.to_le_bytes()); // extra length
    f.extend_from_slice(&[0; 10]);
    f.extend_from_slice(&[0xFF; 4]); // offset in the extra field
    f.extend_from_slice(name);
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&24u16.to_le_bytes());
    for v in [6u64, 6, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    let cd_size = (f.len() - cd) as u64;
    let z64 = f.len() as u64;
    f.extend_from_slice(b"PK\x06\x06");
    f.extend_from_slice(&44u64.to_le_bytes());
    f.extend_from_slice(&[0x2d, 0, 0x2d, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for v in [1u64, 1, cd_size, cd as u64] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(b"PK\x06\x07\x00\x00\x00\x00");
    f.extend_from_slice(&z64.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00\xff\xff\xff\xff");
    f.extend_from_slice(&[0xFF; 8]);
    f.extend_from_slice(&0u16.to_le_bytes());
    f
}

#[test]
fn zip64_extra_fields_are_read() {
    let file = tiny_zip64();
    let layout = scan(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(layout.pickle, 40..46);
    layout.invariants(file.len() as u64).unwrap();
    // a zip64 record whose entry count lies
    let mut bad = file.clone();
    let z = find_all(&bad, b"PK\x06\x06")[0];
    bad[z + 24..z + 40].copy_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    assert!(scan(&bad).is_err());
}

#[test]
fn lying_sizes_and_counts_are_refused() {
    for (claimed, count) in [(7, 1), (5, 1), (u32::MAX - 1, 1), (6, 2), (6, 0xFFFF)] {
        let e = scan(&tiny_zip(claimed, count)).unwrap_err();
        assert!(
            matches!(e, PtError::Zip(_) | PtError::Pickle { .. }),
            "{claimed} {count}: {e}"
        );
    }
}

#[test]
fn zip_limits_hold() {
    let limits = Limits {
        max_entries: 0,
        ..Limits::default()
    };
    assert!(matches!(
        scan_with(&tiny_zip(6, 1), &limits),
        Err(PtError::Limit(_))
    ));
}

#[test]
fn overlapping_entries_are_refused() {
    let file = fixture("model_f32.pt");
    // point the second central record's local header offset at the first entry
    let cd = find_all(&file, b"PK\x01\x02");
    let mut bad = file.clone();
    bad[cd[1] + 42..cd[1] + 46].copy_from_slice(&0u32.to_le_bytes());
    assert!(scan(&bad).is_err());
}

#[test]
fn corrupt_pickle_fails_its_crc() {
    let mut file = fixture("model_f32.pt");
    let at = find_all(&file, b"_rebuild_tensor_v2")[0];
    file[at + 1] = b'X';
    assert!(matches!(scan(&file), Err(PtError::Zip(m)) if m.contains("CRC-32")));
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// A legacy-format stream whose object pickle is `body`.
fn legacy(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
    f.extend_from_slice(b"\x80\x02M\xe9\x03.");
    f.extend_from_slice(b"\x80\x02}.");
    f.extend_from_slice(body);
    f.extend_from_slice(b"\x80\x02].");
    f
}

#[test]
fn billion_laughs_stays_linear() {
    // a list holding the previous list ten times, 40 levels deep, all through the memo
    let mut p = b"\x80\x02]q\x00".to_vec();
    for i in 0..40u8 {
        p.extend_from_slice(b"(");
        for _ in 0..10 {
            p.extend_from_slice(&[b'h', i]);
        }
        p.extend_from_slice(&[b'l', b'q', i + 1]);
    }
    p.push(b'.');
    let layout = scan(&legacy(&p)).unwrap();
    assert!(layout.tensors.is_empty());
}

#[test]
fn deep_nesting_is_bounded() {
    let mut p = b"\x80\x02".to_vec();
    p.extend(std::iter::repeat_n(b'(', 100_000));
    p.extend_from_slice(b"N");
    p.extend(std::iter::repeat_n(b"l", 100_000).flatten());
    p.push(b'.');
    let layout = scan(&legacy(&p)).unwrap();
    assert!(
        layout
            .warnings
            .iter()
            .any(|w| w.contains("nested too deeply"))
    );
    let limits = Limits {
        max_stack: 1000,
        ..Limits::default()
    };
    assert!(matches!(
        scan_with(&legacy(&p), &limits),
        Err(PtError::Limit(_))
    ));
}

#[test]
fn memo_and_op_limits_hold() {
    let mut p = b"\x80\x02N".to_vec();
    for i in 0..5000u32 {
        p.push(b'r');
        p.extend_from_slice(&(i.wrapping_mul(2_654_435_761)).to_le_bytes());
    }
    p.push(b'.');
    let limits = Limits {
        max_memo: 100,
        ..Limits::default()
    };
    assert!(matches!(
        scan_with(&legacy(&p), &limits),
        Err(PtError::Limit(_))
    ));
    assert!(
        scan(&legacy(&p)).is_ok(),
        "huge memo indices cost nothing by themselves"
    );
    let limits = Limits {
        max_ops: 1000,
        ..Limits::default()
    };
    assert!(matches!(
        scan_with(&legacy(&p), &limits),
        Err(PtError::Limit(_))
    ));
    // a memo read of an index never written is a clean error
    assert!(matches!(
        scan(&legacy(b"\x80\x02j\xff\xff\xff\xff.")),
        Err(PtError::Pickle { .. })
    ));
}

#[test]
fn repeated_copies_are_charged() {
    // _codecs.encode of one memoized 1 MiB string, 64 times: 64 MiB of copies
    let mut p = b"\x80\x02c_codecs\nencode\nq\x00X".to_vec();
    p.extend_from_slice(&(1u32 << 20).to_le_bytes());
    p.extend(std::iter::repeat_n(b'a', 1 << 20));
    p.extend_from_slice(b"q\x01(");
    for _ in 0..64 {
        p.extend_from_slice(b"h\x00h\x01X\x06\x00\x00\x00latin1\x86R");
    }
    p.extend_from_slice(b"l.");
    assert!(scan(&legacy(&p)).is_ok());
    let limits = Limits {
        max_alloc: 16 << 20,
        ..Limits::default()
    };
    assert!(matches!(
        scan_with(&legacy(&p), &limits),
        Err(PtError::Limit(_))
    ));
}

#[test]
fn protocol_0_text_opcodes() {
    // (dp0\nVa\np1\nI5\nsS'x'\nF1.5\ns.  → {'a': 5, 'x': 1.5}
    let p = b"(dp0\nVa\np1\nI5\nsS'x'\np2\nF1.5\ns(lp3\nL12L\nag1\na.";
    let layout = scan(&legacy(p)).unwrap_or_else(|e| panic!("{e}"));
    assert!(layout.tensors.is_empty());
}

#[test]
fn garbage_is_not_torch() {
    assert!(matches!(scan(b"hello"), Err(PtError::NotTorch(_))));
    assert!(matches!(scan(b""), Err(PtError::NotTorch(_))));
    assert!(matches!(scan(b"\x80\x02K\x01."), Err(PtError::NotTorch(_))));
}
