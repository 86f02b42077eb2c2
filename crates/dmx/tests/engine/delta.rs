//! Deltas through the engine: byte-exact lossless reconstruction whatever changed between
//! base and target, bases given as `.dmx`, quantized deltas equal to the target's grid values,
//! and refusals (wrong base, corrupt or truncated delta).

use dmx_testkit as common;

use std::path::{Path, PathBuf};

use common::{Layout, Mode, Tensor, plain, safetensors, scratch, write};
use dmx::lossy::Grid;
use dmx::{DeltaOptions, Options, Precision};

fn quiet() -> Options {
    Options {
        no_sync: true,
        ..Options::default()
    }
}

/// `base` with small updates: every `every`-th value of float tensors nudged by one or a few
/// units in the last place.
fn nudged(t: &Tensor, every: usize, seed: u64) -> Tensor {
    let mut t = t.clone();
    let w = common::dtype_size(&t.dtype);
    if common::float_layout(&t.dtype).is_some() {
        let mut rng = common::Rng(seed);
        for (i, v) in t.data.chunks_mut(w).enumerate() {
            if i % every == 0 {
                let mut x = [0u8; 8];
                x[..w].copy_from_slice(v);
                let bits = u64::from_le_bytes(x)
                    .wrapping_add(rng.below(5))
                    .wrapping_sub(2);
                v.copy_from_slice(&bits.to_le_bytes()[..w]);
            }
        }
    }
    t
}

fn base_model(seed: u64) -> Vec<Tensor> {
    vec![
        Tensor::generated("model.h.0.attn.w", "F32", &[48, 40], Mode::Weights, seed),
        Tensor::generated(
            "model.h.0.mlp.w",
            "BF16",
            &[32, 64],
            Mode::Mixed { rate: 50 },
            seed + 1,
        ),
        Tensor::generated("model.h.0.ln.w", "F16", &[40], Mode::Weights, seed + 2),
        Tensor::generated(
            "optim.exp_avg.model.h.0.attn.w",
            "F32",
            &[48, 40],
            Mode::Weights,
            seed + 3,
        ),
        Tensor::generated(
            "optim.exp_avg_sq.model.h.0.attn.w",
            "F32",
            &[48, 40],
            Mode::Weights,
            seed + 4,
        ),
        Tensor::generated("step", "I64", &[1], Mode::Random, seed + 5),
        Tensor::generated("gone", "F32", &[10], Mode::Weights, seed + 6),
        Tensor::generated("reshaped", "F32", &[4, 6], Mode::Weights, seed + 7),
        Tensor::generated("retyped", "F32", &[8], Mode::Weights, seed + 8),
    ]
}

fn target_model(base: &[Tensor], seed: u64) -> Vec<Tensor> {
    let mut t: Vec<Tensor> = base
        .iter()
        .filter(|t| t.name != "gone")
        .map(|t| nudged(t, 3, seed))
        .collect();
    for x in t.iter_mut() {
        match x.name.as_str() {
            "step" => x.data = 501i64.to_le_bytes().to_vec(),
            "reshaped" => x.shape = vec![6, 4],
            "retyped" => *x = Tensor::generated("retyped", "BF16", &[8], Mode::Weights, seed),
            _ => {}
        }
    }
    t.push(Tensor::generated(
        "added",
        "F32",
        &[5, 5],
        Mode::Weights,
        seed + 9,
    ));
    t
}

struct Pair {
    _dir: tempfile::TempDir,
    base: PathBuf,
    target: PathBuf,
    target_bytes: Vec<u8>,
    root: PathBuf,
}

fn pair(seed: u64) -> Pair {
    let dir = scratch();
    let root = dir.path().to_path_buf();
    let b = base_model(seed);
    let t = target_model(&b, seed + 100);
    let base = root.join("base.safetensors");
    let target = root.join("target.safetensors");
    write(&base, &plain(&b));
    let target_bytes = safetensors(
        &t,
        &Layout {
            metadata: vec![("step".into(), "500".into())],
            align: true,
            ..Layout::default()
        },
    );
    write(&target, &target_bytes);
    Pair {
        _dir: dir,
        base,
        target,
        target_bytes,
        root,
    }
}

fn delta(p: &Pair, base: &Path, precision: Precision, name: &str) -> (PathBuf, dmx::DeltaReport) {
    let out = p.root.join(name);
    let d = DeltaOptions {
        precision,
        steps: None,
    };
    let r = dmx::delta_compress(base, &p.target, &out, &d, &quiet()).unwrap();
    (out, r)
}

#[test]
fn lossless_delta_reconstructs_byte_for_byte() {
    let p = pair(1);
    let (d, r) = delta(&p, &p.base, Precision::Lossless, "t.dmxd");
    assert_eq!(r.added, ["added"]);
    assert_eq!(r.removed, ["gone"]);
    assert_eq!(r.reshaped.len(), 2);
    let out = p.root.join("restored.safetensors");
    dmx::delta_reconstruct(&p.base, &d, &out, &quiet()).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), p.target_bytes);
    // Never larger than compressing the target alone (plus the delta's own bookkeeping).
    let alone = p.root.join("alone.dmx");
    let c = dmx::compress(&p.target, &alone, &quiet()).unwrap();
    assert!(
        r.output_bytes <= c.output_bytes + 256,
        "{} vs {}",
        r.output_bytes,
        c.output_bytes
    );
    let info = dmx::delta_info(&d).unwrap();
    assert!(info.lossless);
    assert_eq!(info.removed, ["gone"]);
    assert!(
        info.components.contains_key("exp_avg_sq"),
        "{:?}",
        info.components.keys()
    );
    let f = info.storage["delta"].unchanged_fraction.unwrap();
    assert!(f > 0.4 && f < 0.9, "{f}");
}

#[test]
fn base_given_as_dmx_works() {
    let p = pair(2);
    let packed = p.root.join("base.dmx");
    dmx::compress(&p.base, &packed, &quiet()).unwrap();
    let (d, _) = delta(&p, &packed, Precision::Lossless, "t.dmxd");
    // Either form of the base reconstructs, since both hold the same file.
    for base in [&packed, &p.base] {
        let out = p.root.join("restored.safetensors");
        let opts = Options {
            force: true,
            ..quiet()
        };
        dmx::delta_reconstruct(base, &d, &out, &opts).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), p.target_bytes);
    }
}

/// A base of the right size and layout whose values differ: its SHA-256 is checked beside
/// the decoding, and the refusal names the base (not a damaged delta), at every thread count.
#[test]
fn a_wrong_base_of_the_right_size_is_refused_as_a_wrong_base() {
    let p = pair(4);
    let (d, _) = delta(&p, &p.base, Precision::Lossless, "t.dmxd");
    let mut bytes = std::fs::read(&p.base).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let other = p.root.join("other-base.safetensors");
    write(&other, &bytes);
    let out = p.root.join("restored.safetensors");
    for threads in [1, 2, 4] {
        let opts = Options {
            threads: Some(threads),
            ..quiet()
        };
        let err = dmx::delta_reconstruct(&other, &d, &out, &opts).unwrap_err();
        assert!(err.to_string().contains("wrong base"), "{threads}: {err}");
        assert!(!err.is_integrity_failure());
        assert!(!out.exists());
    }
    dmx::delta_reconstruct(&p.base, &d, &out, &quiet()).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), p.target_bytes);
}

#[test]
fn wrong_base_is_refused() {
    let p = pair(3);
    let (d, _) = delta(&p, &p.base, Precision::Lossless, "t.dmxd");
    let out = p.root.join("restored.safetensors");
    let err = dmx::delta_reconstruct(&p.target, &d, &out, &quiet()).unwrap_err();
    assert!(err.to_string().contains("wrong base"), "{err}");
    assert!(!err.is_integrity_failure());
    assert!(!out.exists());
    // A delta is not restored by decompress.
    let err = dmx::decompress(&d, &out, &quiet()).unwrap_err();
    assert!(err.to_string().contains("delta-reconstruct"), "{err}");
}

#[test]
fn corrupt_or_truncated_deltas_fail_without_output() {
    let p = pair(4);
    let (d, _) = delta(&p, &p.base, Precision::Lossless, "t.dmxd");
    let bytes = std::fs::read(&d).unwrap();
    let out = p.root.join("restored.safetensors");
    let bad = p.root.join("bad.dmxd");
    let step = (bytes.len() / 97).max(1);
    for at in (16..bytes.len()).step_by(step) {
        let mut b = bytes.clone();
        b[at] ^= 0x40;
        std::fs::write(&bad, &b).unwrap();
        match dmx::delta_reconstruct(&p.base, &bad, &out, &quiet()) {
            Err(_) => assert!(!out.exists(), "byte {at}: partial output"),
            Ok(()) => {
                assert_eq!(std::fs::read(&out).unwrap(), p.target_bytes, "byte {at}");
                std::fs::remove_file(&out).unwrap();
            }
        }
    }
    for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        let err = dmx::delta_reconstruct(&p.base, &bad, &out, &quiet()).unwrap_err();
        assert!(err.is_integrity_failure() || cut < 16, "cut {cut}: {err}");
        assert!(!out.exists());
    }
}

/// The grid value of every element of `t` (escapes exact), as the quantized delta restores it.
fn on_grid(t: &Tensor, grid: Grid, bits: u32) -> Vec<u8> {
    let layout = match t.dtype.as_str() {
        "F32" => dmx::dmx_codec::FloatLayout::F32,
        "BF16" => dmx::dmx_codec::FloatLayout::BF16,
        "F16" => dmx::dmx_codec::FloatLayout::F16,
        _ => return t.data.clone(),
    };
    let w = layout.bytes();
    let mut out = Vec::with_capacity(t.data.len());
    for c in t.data.chunks(w) {
        let mut x = [0u8; 8];
        x[..w].copy_from_slice(c);
        let raw = u64::from_le_bytes(x);
        let r = grid.snap(layout, bits, raw);
        out.extend_from_slice(&r.to_le_bytes()[..w]);
    }
    out
}

#[test]
fn quantized_deltas_restore_the_targets_grid_values() {
    for (precision, bits) in [(Precision::Int16, 16), (Precision::Int32, 32)] {
        let p = pair(5);
        let (d, r) = delta(&p, &p.base, precision, "q.dmxd");
        let out = p.root.join("restored.safetensors");
        dmx::delta_reconstruct(&p.base, &d, &out, &quiet()).unwrap();
        let got = std::fs::read(&out).unwrap();
        assert_eq!(got.len(), p.target_bytes.len());
        let archive = dmx::Archive::open(&d).unwrap();
        let target = target_model(&base_model(5), 105);
        for t in &target {
            let seg = archive.tensor(&t.name).unwrap().segment;
            let range = seg.offset as usize..(seg.offset + seg.len) as usize;
            let want = match seg.transform.lossy() {
                Some(l) => {
                    let grid = Grid::of_record(l).expect("an integer grid");
                    assert_eq!(r.steps.get(&t.name), Some(&grid), "{}", t.name);
                    on_grid(t, grid, bits)
                }
                None => t.data.clone(),
            };
            assert_eq!(&got[range], &want[..], "{precision:?}: {}", t.name);
        }
        // At int32 the floating grid keeps every bit of an F32: a tensor on it is stored
        // exactly, and may make the whole delta exact.
        if precision == Precision::Int16 {
            assert!(!dmx::delta_info(&d).unwrap().lossless);
        }
    }
}

#[test]
fn deltas_verify_against_their_base_and_target() {
    for precision in [Precision::Lossless, Precision::Int16, Precision::Int32] {
        let p = pair(7);
        let (d, r) = delta(&p, &p.base, precision, "v.dmxd");
        // Never larger than the lossless delta (each chunk keeps the smaller form).
        if precision != Precision::Lossless {
            let (_, exact) = delta(&p, &p.base, Precision::Lossless, "l.dmxd");
            assert!(r.output_bytes <= exact.output_bytes + 64, "{precision:?}");
            assert_eq!(r.lossy, r.lossy_summary.is_some());
        }
        let a = dmx::Archive::open(&d).unwrap();
        // Without the base: a typed error (the CLI adds how to give it).
        let err = dmx::verify(&a, Some(&p.target), &quiet()).unwrap_err();
        assert!(
            matches!(&err, dmx::Error::BaseNeeded(path) if path == &d),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);
        let v = dmx::verify_delta(&a, Some(&p.target), Some(&p.base), None, &quiet()).unwrap();
        assert!(v.ok, "{precision:?}: {:?}", v.files[0].problems);
        let v = dmx::verify_delta(&a, None, Some(&p.base), None, &quiet()).unwrap();
        assert!(v.ok, "{precision:?}");
        // Compared with a file it does not restore: fails.
        let v = dmx::verify_delta(&a, Some(&p.base), Some(&p.base), None, &quiet()).unwrap();
        assert!(!v.ok, "{precision:?}");
        // Another base is refused before anything is decoded.
        let err = dmx::verify_delta(&a, None, Some(&p.target), None, &quiet()).unwrap_err();
        assert!(err.to_string().contains("wrong base"), "{err}");
        let info = dmx::delta_info(&d).unwrap();
        assert_eq!(info.lossless, info.lossy_summary.is_none());
    }
}
