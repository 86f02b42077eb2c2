//! A real Hugging Face Trainer checkpoint folder (`tests/fixtures/trainer/`, written by a tiny
//! `transformers` run; see its script) compresses to one archive and back byte for byte; its
//! `torch.save` files are torch entries whose storages are tensor segments, and the files
//! holding globals outside torch's allow-list are stored verbatim with a warning.

use dmx_testkit as common;

use std::path::{Path, PathBuf};

use dmx::dmx_format::{Entry, EntryKind, SegmentKind};
use dmx::{Archive, Options};

fn quiet() -> Options {
    Options {
        no_sync: true,
        threads: Some(2),
        ..Options::default()
    }
}

/// The committed Trainer checkpoint folders.
fn checkpoints() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/trainer");
    let dirs: Vec<PathBuf> = ["checkpoint-2", "checkpoint-4"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    for d in &dirs {
        assert!(d.join("optimizer.pt").is_file(), "{} missing", d.display());
    }
    dirs
}

/// One member of a zip file: its name, where its data starts, its stored size, and the
/// offsets of its local header and central directory entry.
#[derive(Debug, Clone)]
pub struct ZipMember {
    /// File name inside the zip.
    pub name: String,
    /// Offset of the local file header.
    pub local: usize,
    /// Offset of the central directory record.
    pub central: usize,
    /// Offset of the first data byte.
    pub data: usize,
    /// Stored (= uncompressed, torch stores) size.
    pub size: usize,
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The members of the zip `b`, read from its central directory (zip64 fields included), as
/// the zip specification (APPNOTE 4.3) lays them out. Panics on a malformed file (test data).
pub fn zip_members(b: &[u8]) -> Vec<ZipMember> {
    let eocd = (0..=b.len() - 22)
        .rev()
        .find(|&i| b[i..i + 4] == *b"PK\x05\x06")
        .expect("end of central directory");
    let (mut count, mut cd) = (u16_at(b, eocd + 10) as u64, u32_at(b, eocd + 16));
    if count == 0xffff || cd == 0xffff_ffff {
        let loc = eocd - 20;
        assert_eq!(&b[loc..loc + 4], b"PK\x06\x07", "zip64 locator");
        let z = u64_at(b, loc + 8) as usize;
        assert_eq!(&b[z..z + 4], b"PK\x06\x06", "zip64 end record");
        count = u64_at(b, z + 32);
        cd = u64_at(b, z + 48);
    }
    let mut at = cd as usize;
    let mut out = Vec::new();
    for _ in 0..count {
        assert_eq!(&b[at..at + 4], b"PK\x01\x02", "central directory record");
        let (name_len, extra_len, comment_len) =
            (u16_at(b, at + 28), u16_at(b, at + 30), u16_at(b, at + 32));
        let mut size = u32_at(b, at + 24);
        let mut local = u32_at(b, at + 42);
        let name = String::from_utf8_lossy(&b[at + 46..at + 46 + name_len]).into_owned();
        // Zip64 extended information: the fields whose 32-bit value is all ones, in order.
        let mut e = at + 46 + name_len;
        let extra_end = e + extra_len;
        while e + 4 <= extra_end {
            let (id, n) = (u16_at(b, e), u16_at(b, e + 2));
            if id == 1 {
                let mut f = e + 4;
                if size == 0xffff_ffff {
                    size = u64_at(b, f);
                    f += 8;
                }
                if u32_at(b, at + 20) == 0xffff_ffff {
                    f += 8;
                }
                if local == 0xffff_ffff {
                    local = u64_at(b, f);
                }
            }
            e += 4 + n;
        }
        let local = local as usize;
        assert_eq!(
            &b[local..local + 4],
            b"PK\x03\x04",
            "local header of {name}"
        );
        let data = local + 30 + u16_at(b, local + 26) + u16_at(b, local + 28);
        out.push(ZipMember {
            name,
            local,
            central: at,
            data,
            size: size as usize,
        });
        at = extra_end + comment_len;
    }
    out
}

/// The storages (`<stem>/data/<key>`) of a `torch.save` zip, as (offset, length).
pub fn zip_storages(b: &[u8]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = zip_members(b)
        .into_iter()
        .filter(|m| m.name.split('/').nth(1) == Some("data") && m.size > 0)
        .map(|m| (m.data as u64, m.size as u64))
        .collect();
    out.sort();
    out
}

/// The tensor segments of `entry` as (offset, length, dtype).
fn tensor_segments(entry: &Entry) -> Vec<(u64, u64, String)> {
    let mut out: Vec<_> = entry
        .segments
        .iter()
        .filter_map(|s| match &s.kind {
            SegmentKind::Tensor(info) => Some((s.offset, s.len, info.dtype.clone())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

#[test]
fn trainer_checkpoints_round_trip_byte_for_byte() {
    let dir = common::scratch();
    for (k, ckpt) in checkpoints().iter().enumerate() {
        let packed = dir.path().join(format!("ckpt{k}.dmx"));
        let report = dmx::compress(ckpt, &packed, &quiet()).expect("compress");
        assert_eq!(report.files, 8, "{report:?}");
        let restored = dir.path().join(format!("restored{k}"));
        dmx::decompress(&packed, &restored, &quiet()).expect("decompress");
        let (orig, back) = (common::tree(ckpt), common::tree(&restored));
        assert_eq!(orig.len(), back.len());
        for ((n1, b1), (n2, b2)) in orig.iter().zip(&back) {
            assert_eq!(n1, n2);
            assert!(b1 == b2, "{n1} differs after the round trip");
        }
        let archive = Archive::open(&packed).expect("open");
        assert!(dmx::verify(&archive, Some(ckpt), &quiet()).unwrap().ok);
        check_entries(ckpt, &archive, &report.warnings);
    }
}

/// The torch files are torch entries; their storages are exactly the tensor segments (dtype
/// coded: F32 for the optimizer, U8 for the RNG states); the files with globals outside the
/// allow-list are named in a warning that says nothing was executed.
fn check_entries(ckpt: &Path, archive: &Archive, warnings: &[String]) {
    let entry = |name: &str| {
        archive
            .index()
            .entries
            .iter()
            .find(|e| e.path == name)
            .unwrap_or_else(|| panic!("{name} not in the archive"))
    };
    assert_eq!(entry("model.safetensors").kind, EntryKind::Safetensors);
    for name in [
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "training_args.bin",
    ] {
        let e = entry(name);
        assert_eq!(e.kind, EntryKind::Torch, "{name}");
        let file = std::fs::read(ckpt.join(name)).unwrap();
        let storages = zip_storages(&file);
        let segs = tensor_segments(e);
        let coded: Vec<(u64, u64)> = segs.iter().map(|s| (s.0, s.1)).collect();
        assert_eq!(coded, storages, "{name}: storages vs tensor segments");
        let want = match name {
            "optimizer.pt" => Some("F32"),
            "rng_state.pth" => Some("U8"),
            _ => None,
        };
        match want {
            Some(d) => {
                assert!(!segs.is_empty(), "{name}: no storages");
                assert!(segs.iter().all(|s| s.2 == d), "{name}: {segs:?}");
            }
            None => assert!(segs.is_empty(), "{name}: {segs:?}"),
        }
    }
    // The optimizer holds exp_avg and exp_avg_sq for every parameter tensor.
    let names: Vec<&str> = archive
        .tensors()
        .filter(|t| t.entry.path == "optimizer.pt")
        .map(|t| t.info.name.as_str())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".exp_avg")), "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with(".exp_avg_sq")),
        "{names:?}"
    );
    for name in ["rng_state.pth", "training_args.bin"] {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(name) && w.contains("nothing executed")),
            "no warning for {name}: {warnings:?}"
        );
    }
    for name in ["optimizer.pt", "scheduler.pt", "model.safetensors"] {
        assert!(
            !warnings.iter().any(|w| w.contains(name)),
            "{name}: {warnings:?}"
        );
    }
}
