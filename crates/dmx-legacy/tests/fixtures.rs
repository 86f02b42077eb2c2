//! Bit-exact comparison with the old tool's own outputs, on the files written by
//! `make_fixtures.py` with dmx-compress 0.4.0 and 1.2.0; and hostile variants of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dmx_legacy::{
    BaseTensor, ChainManifest, Container, DeltaFile, LegacyKind, Limits, Tensor, detect,
};
use safetensors::SafeTensors;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn dtype_name(d: safetensors::Dtype) -> String {
    format!("{d:?}")
}

/// name -> (dtype, shape, bytes) of a safetensors file.
type Loaded = BTreeMap<String, (String, Vec<u64>, Vec<u8>)>;

fn load(path: &Path) -> Loaded {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let shape = v.shape().iter().map(|&d| d as u64).collect();
            (n, (dtype_name(v.dtype()), shape, v.data().to_vec()))
        })
        .collect()
}

fn compare(got: &[Tensor], expected: &Path) {
    let want = load(expected);
    let names: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        want.keys().map(String::as_str).collect::<Vec<_>>(),
        "{}",
        expected.display()
    );
    for t in got {
        let (d, s, b) = &want[&t.name];
        assert_eq!(
            (t.dtype, &t.shape),
            (d.as_str(), s),
            "{}: {}",
            expected.display(),
            t.name
        );
        assert!(t.data == *b, "{}: {} differs", expected.display(), t.name);
    }
}

fn decode_dmx(path: &Path) -> Vec<Tensor> {
    let bytes = std::fs::read(path).unwrap();
    Container::parse(&bytes, &Limits::default())
        .unwrap()
        .decode_all()
        .unwrap()
}

fn reconstruct(delta: &Path, base: &Loaded) -> Vec<Tensor> {
    let bytes = std::fs::read(delta).unwrap();
    let d = DeltaFile::parse(&bytes, &Limits::default()).unwrap();
    d.reconstruct(|n| {
        base.get(n).map(|(dt, s, b)| BaseTensor {
            dtype: dt,
            shape: s,
            data: b,
        })
    })
    .unwrap()
}

fn to_loaded(ts: Vec<Tensor>) -> Loaded {
    ts.into_iter()
        .map(|t| (t.name, (t.dtype.to_string(), t.shape, t.data)))
        .collect()
}

fn files(ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn every_dmx_fixture_decodes_like_the_old_tool() {
    let all = files("dmx");
    assert!(all.len() >= 20, "{} fixtures", all.len());
    for p in all {
        let bytes = std::fs::read(&p).unwrap();
        let stem = p.file_stem().unwrap().to_str().unwrap();
        let want = if stem.starts_with("v04") {
            LegacyKind::DmxV2
        } else {
            LegacyKind::DmxV3
        };
        assert_eq!(detect(&bytes), Some(want), "{stem}");
        compare(
            &decode_dmx(&p),
            &dir().join(format!("expected/{stem}.safetensors")),
        );
    }
}

#[test]
fn lossy_flags_follow_the_modes() {
    for (name, lossy) in [
        ("v04_f32_bfp", true),
        ("v04_f32_int32", true),
        ("v12_f32_auto", false),
        ("v04_f16_int16", false),
        ("v12_bf16_bfp", true),
    ] {
        let bytes = std::fs::read(dir().join(format!("{name}.dmx"))).unwrap();
        let c = Container::parse(&bytes, &Limits::default()).unwrap();
        assert_eq!(c.is_lossy(), lossy, "{name}: {}", c.summary());
    }
    let bytes = std::fs::read(dir().join("v12_f32_bfp.dmx")).unwrap();
    let c = Container::parse(&bytes, &Limits::default()).unwrap();
    assert_eq!(
        c.summary(),
        "written by dmx-compress, format v3, mode bfp — lossy"
    );
    assert!(c.provenance.as_ref().unwrap().contains_key("content_hash"));
}

#[test]
fn deltas_reconstruct_like_the_old_tool() {
    let base = load(&dir().join("ckpt0.safetensors"));
    for name in [
        "v04_delta_int16",
        "v04_delta_int32",
        "v12_delta_int16",
        "v12_delta_int32",
        "l12_delta_lossless",
    ] {
        let p = dir().join(format!("{name}.dmxd"));
        let kind = detect(&std::fs::read(&p).unwrap()).unwrap();
        assert!(kind.is_delta(), "{name}");
        compare(
            &reconstruct(&p, &base),
            &dir().join(format!("expected/{name}.safetensors")),
        );
    }
}

#[test]
fn chains_reconstruct_like_the_old_tool() {
    for tag in ["v04", "v12"] {
        let folder = dir().join(format!("{tag}_chain"));
        let text = std::fs::read(folder.join("chain_manifest.json")).unwrap();
        assert_eq!(detect(&text), Some(LegacyKind::ChainManifest));
        let m = ChainManifest::parse(&text, &Limits::default()).unwrap();
        assert_eq!(m.entries.len(), 3);
        assert!(m.entries.iter().any(|e| e.is_delta), "{tag}: no delta kept");
        for e in &m.entries {
            let anchor = m.entries.iter().find(|a| a.index == e.anchor).unwrap();
            let decoded = decode_dmx(&folder.join(&anchor.path));
            let got = if e.is_delta {
                reconstruct(&folder.join(&e.path), &to_loaded(decoded))
            } else {
                decoded
            };
            let stem = e.source.trim_end_matches(".safetensors");
            compare(
                &got,
                &dir().join(format!("expected/{tag}_chain/{stem}.safetensors")),
            );
        }
    }
}

/// Every prefix of a file, and every single-byte change, gives a result or an error.
#[test]
fn truncated_and_flipped_files_never_panic() {
    let small = Limits {
        max_tensor_bytes: 1 << 22,
        ..Limits::default()
    };
    for name in [
        "v04_f32_bfp.dmx",
        "v12_f16_auto.dmx",
        "v04_delta_int16.dmxd",
        "l12_delta_lossless.dmxd",
    ] {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        let base = load(&dir().join("ckpt0.safetensors"));
        let try_all = |b: &[u8]| {
            if let Ok(c) = Container::parse(b, &small) {
                let _ = c.decode_all();
            }
            if let Ok(d) = DeltaFile::parse(b, &small) {
                let _ = d.reconstruct(|n| {
                    base.get(n).map(|(dt, s, x)| BaseTensor {
                        dtype: dt,
                        shape: s,
                        data: x,
                    })
                });
            }
        };
        for cut in (0..bytes.len()).step_by(7) {
            try_all(&bytes[..cut]);
            assert!(Container::parse(&bytes[..cut.min(12)], &small).is_err());
        }
        for at in (0..bytes.len()).step_by(bytes.len() / 300 + 1) {
            let mut b = bytes.clone();
            b[at] ^= 0x5A;
            try_all(&b);
        }
    }
}

fn v2_file(manifest: &str, tail: &[u8]) -> Vec<u8> {
    let mut f = b"DMX1\x02\0\0\0".to_vec();
    f.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    f.extend_from_slice(manifest.as_bytes());
    f.extend_from_slice(tail);
    f
}

#[test]
fn lying_manifests_are_clear_errors() {
    let l = Limits::default();
    let entry = |off: u64, size: u64, shape: &str| {
        format!(
            r#"{{"mode":"int16","tensors":{{"w":{{"shape":{shape},"dtype":"float32","encoding":3,"raw_size":4,"compressed_size":{size},"offset":{off}}}}}}}"#
        )
    };
    let z = zstd::bulk::compress(&[0u8; 4], 3).unwrap();
    let m = entry(100, z.len() as u64, "[1]");
    let base = 12 + m.len() as u64;
    // Honest file decodes.
    let good = v2_file(&entry(base, z.len() as u64, "[1]"), &z);
    assert_eq!(
        Container::parse(&good, &l).unwrap().decode_all().unwrap()[0].data,
        vec![0u8; 4]
    );
    // Offsets past the end, lengths past the end, overflowing offsets: all rejected up front.
    for (off, size) in [
        (base + 1, z.len() as u64),
        (base, 1 << 40),
        (u64::MAX, 1),
        (u64::MAX - 2, 4),
    ] {
        assert!(Container::parse(&v2_file(&entry(off, size, "[1]"), &z), &l).is_err());
    }
    // A shape that disagrees with the bytes, or is enormous.
    for shape in ["[2]", "[18446744073709551615, 4]", "[-1]", "\"x\""] {
        let f = v2_file(&entry(base, z.len() as u64, shape), &z);
        assert!(
            Container::parse(&f, &l)
                .and_then(|c| c.decode_all())
                .is_err(),
            "{shape}"
        );
    }
    // A manifest length beyond the file, or beyond the limit.
    let mut huge = b"DMX1\x02\0\0\0\xff\xff\xff\x7f{}".to_vec();
    assert!(Container::parse(&huge, &l).is_err());
    huge[8..12].copy_from_slice(&(1u32 << 20).to_le_bytes());
    huge.resize(12 + (1 << 20), b' ');
    let tight = Limits {
        max_manifest_bytes: 1 << 10,
        ..l
    };
    assert!(matches!(
        Container::parse(&huge, &tight),
        Err(dmx_legacy::Error::Limit(_))
    ));
    // Unknown versions.
    let mut v9 = good.clone();
    v9[4] = 9;
    assert!(matches!(
        Container::parse(&v9, &l),
        Err(dmx_legacy::Error::Version { .. })
    ));
}
