//! Training-run chains through the library API: byte-exact restores, the standalone-size
//! guarantee, the depth limit, quantized chains on their anchor's grid, damaged or missing
//! entries, single-index restores, appends equal to one-shot chains, leftovers of interrupted
//! runs.
//!
//! Some assertions depend on the real delta and quant codecs (a delta must beat the standalone
//! archive, quantization must move values): while either codec is an identity stub they are
//! checked in the form that holds for both (see `real_delta_codec`, `real_quant_codec`).

use dmx_testkit as common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Rng, Tensor};
use dmx::chain::{ChainEntryKind, ChainManifest, read_manifest};
use dmx::dmx_codec::{FloatLayout, ValueKind};
use dmx::lossy::Grid;
use dmx::{Archive, ChainOptions, Options, Precision};
use proptest::prelude::*;

use crate::proptest_config as config;

fn opts() -> Options {
    Options {
        threads: Some(2),
        no_sync: true,
        ..Options::default()
    }
}

/// Whether the delta codec codes identical tensors in fewer bytes than they take (false
/// while it is an identity stub).
fn real_delta_codec() -> bool {
    let base = vec![0x3cu8; 4096];
    let (payload, _) =
        dmx::dmx_codec::delta::encode(ValueKind::Float(FloatLayout::F32), &base, &base);
    payload.len() < base.len()
}

/// Whether int16 quantization changes off-grid values (false while it is an identity stub).
fn real_quant_codec() -> bool {
    let data: Vec<u8> = (0..256)
        .flat_map(|i| (0.123_456_7f32 * i as f32).to_le_bytes())
        .collect();
    let (payload, _) = dmx::dmx_codec::quant::encode(FloatLayout::F32, &data, 0.01, 16);
    let mut out = vec![0u8; data.len()];
    dmx::dmx_codec::quant::decode(&payload, &mut out).is_ok() && out != data
}

/// A float in [-1, 1).
fn unit(rng: &mut Rng) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// A checkpoint's tensors as f32 values (stored as their dtype).
#[derive(Clone, Debug)]
struct State {
    tensors: Vec<(String, &'static str, Vec<usize>, Vec<f32>)>,
}

impl State {
    fn new(rng: &mut Rng, sizes: &[(&str, &'static str, usize)]) -> Self {
        Self {
            tensors: sizes
                .iter()
                .map(|&(n, d, len)| {
                    (
                        n.to_string(),
                        d,
                        vec![len],
                        (0..len).map(|_| unit(rng) * 0.1).collect(),
                    )
                })
                .collect(),
        }
    }

    /// A training step: a few values move a little.
    fn step(&mut self, rng: &mut Rng, moved_per_mille: u64, scale: f32) {
        for (_, _, _, v) in &mut self.tensors {
            for x in v.iter_mut() {
                if rng.below(1000) < moved_per_mille {
                    *x += unit(rng) * scale;
                }
            }
        }
    }

    /// A big jump: every value redrawn.
    fn jump(&mut self, rng: &mut Rng) {
        for (_, _, _, v) in &mut self.tensors {
            for x in v.iter_mut() {
                *x = unit(rng);
            }
        }
    }

    fn to_tensors(&self) -> Vec<Tensor> {
        self.tensors
            .iter()
            .map(|(name, dtype, shape, v)| {
                let data: Vec<u8> = match *dtype {
                    "F32" => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    "BF16" => v
                        .iter()
                        .flat_map(|x| half::bf16::from_f32(*x).to_bits().to_le_bytes())
                        .collect(),
                    other => panic!("dtype {other}"),
                };
                Tensor::new(name, dtype, shape, data)
            })
            .collect()
    }

    fn bytes(&self) -> Vec<u8> {
        common::plain(&self.to_tensors())
    }
}

/// Writes checkpoint files `dir/name` and returns their paths.
fn write_all(dir: &Path, files: &[(String, Vec<u8>)]) -> Vec<PathBuf> {
    files
        .iter()
        .map(|(name, bytes)| {
            let p = dir.join(name);
            common::write(&p, bytes);
            p
        })
        .collect()
}

/// The sizes every entry must respect: the stored file is the size the manifest records and
/// no larger than `dmx compress` of the checkpoint alone, which `standalone_size` is.
fn check_sizes(dir: &Path, m: &ChainManifest, inputs: &[PathBuf], scratch: &Path) {
    let lossy = dmx::lossy::LossyOptions {
        mode: match m.precision {
            Precision::Lossless => dmx::lossy::Mode::Lossless,
            Precision::Int16 => dmx::lossy::Mode::Int16,
            Precision::Int32 => dmx::lossy::Mode::Int32,
        },
        ..Default::default()
    };
    for (e, input) in m.entries.iter().zip(inputs) {
        let stored = std::fs::metadata(dir.join(&e.file)).unwrap().len();
        assert_eq!(stored, e.stored_size, "entry {}", e.index);
        assert!(
            e.stored_size <= e.standalone_size,
            "entry {}: {} > standalone {}",
            e.index,
            e.stored_size,
            e.standalone_size
        );
        let alone = scratch.join(format!("alone-{}.dmx", e.index));
        let r = dmx::compress_with(input, &alone, &lossy, &opts()).unwrap();
        assert_eq!(r.output_bytes, e.standalone_size, "entry {}", e.index);
        assert!(e.depth <= m.max_depth, "entry {}", e.index);
    }
}

/// Restores every entry and returns the files by index.
fn restore_all(dir: &Path, out: &Path) -> Vec<Vec<u8>> {
    let r = dmx::chain_reconstruct(dir, out, None, &opts()).unwrap();
    assert!(r.ok, "{r:?}");
    r.entries
        .iter()
        .map(|e| std::fs::read(e.output.as_ref().unwrap()).unwrap())
        .collect()
}

/// Grid steps of a quantized anchor, exact, from its archive's index.
fn anchor_grid(dir: &Path, m: &ChainManifest, index: usize) -> BTreeMap<String, Grid> {
    let anchor = &m.entries[m.anchor_of(index)];
    let archive = Archive::open(&dir.join(&anchor.file)).unwrap();
    let mut steps = BTreeMap::new();
    for t in archive.tensors() {
        if let Some(l) = t.segment.transform.lossy() {
            steps.insert(
                t.info.name.clone(),
                Grid::of_record(l).expect("an integer grid"),
            );
        }
    }
    // The manifest records the same steps, exactly.
    assert_eq!(steps, anchor.steps);
    steps
}

/// `tensors` with every value of a tensor listed in `steps` replaced by its grid point
/// (values off the grid's range kept exactly), as a safetensors file.
fn quantized(tensors: &[Tensor], steps: &BTreeMap<String, Grid>, bits: u32) -> Vec<u8> {
    let mapped: Vec<Tensor> = tensors
        .iter()
        .map(|t| {
            let Some(&g) = steps.get(&t.name) else {
                return t.clone();
            };
            let layout = match t.dtype.as_str() {
                "F32" => FloatLayout::F32,
                "BF16" => FloatLayout::BF16,
                other => panic!("{other}"),
            };
            let w = layout.bytes();
            let mut data = Vec::with_capacity(t.data.len());
            for c in t.data.chunks_exact(w) {
                let mut raw = [0u8; 8];
                raw[..w].copy_from_slice(c);
                let raw = u64::from_le_bytes(raw);
                let out = g.snap(layout, bits, raw);
                data.extend_from_slice(&out.to_le_bytes()[..w]);
            }
            Tensor::new(&t.name, &t.dtype, &t.shape.clone(), data)
        })
        .collect();
    common::plain(&mapped)
}

#[test]
fn lossless_chain_restores_every_entry_and_respects_standalone_sizes() {
    let tmp = common::scratch();
    let mut rng = Rng(11);
    let mut s = State::new(
        &mut rng,
        &[
            ("model.layers.0.mlp.weight", "F32", 3000),
            ("model.embed.weight", "BF16", 2000),
            (
                "optimizer.state.model.layers.0.mlp.weight.exp_avg",
                "F32",
                3000,
            ),
            (
                "optimizer.state.model.layers.0.mlp.weight.exp_avg_sq",
                "F32",
                3000,
            ),
        ],
    );
    let mut files = Vec::new();
    for i in 0..6 {
        // Two inputs share a file name (in different folders).
        let name = if i == 2 || i == 4 {
            format!("run{i}/model.safetensors")
        } else {
            format!("step-{i}.safetensors")
        };
        files.push((name, s.bytes()));
        s.step(&mut rng, 20, 1e-3);
    }
    let inputs = write_all(tmp.path(), &files);
    let chain = tmp.path().join("chain");
    let r = dmx::chain_compress(&inputs[..4], &chain, &ChainOptions::default(), &opts()).unwrap();
    assert_eq!((r.entries_before, r.entries), (0, 4));
    let r = dmx::chain_append(&chain, &inputs[4..], &opts()).unwrap();
    assert_eq!((r.entries_before, r.entries), (4, 6));
    let m = read_manifest(&chain).unwrap();
    assert_eq!(m.format, "dmx-chain");
    assert_eq!(m.version, 1);
    assert_eq!(m.entries.len(), 6);
    assert_eq!(m.entries[0].file, "00000-step-0.safetensors.dmx");
    assert_eq!(m.entries[2].name, "model.safetensors");
    assert!(m.entries[2].file.starts_with("00002-model.safetensors.dmx"));
    assert_eq!(m.entries[0].kind, ChainEntryKind::Anchor);
    for e in &m.entries {
        assert_eq!(e.restored_sha256, e.original_sha256);
        assert_eq!(e.original_size, files[e.index].1.len() as u64);
    }
    if real_delta_codec() {
        assert!(
            m.entries.iter().any(|e| e.kind == ChainEntryKind::Delta),
            "small training steps must be stored as deltas"
        );
    }
    check_sizes(&chain, &m, &inputs, tmp.path());

    let out = tmp.path().join("out");
    let restored = restore_all(&chain, &out);
    for (i, (_, bytes)) in files.iter().enumerate() {
        assert!(restored[i] == *bytes, "entry {i} differs");
    }
    // The shared name is restored with index prefixes, the others under their own names.
    assert!(out.join("00002-model.safetensors").is_file());
    assert!(out.join("00004-model.safetensors").is_file());
    assert!(out.join("step-5.safetensors").is_file());
    assert!(common::leftovers(&out).is_empty());
    assert!(common::leftovers(&chain).is_empty());
    // Existing outputs are refused without force.
    let err = dmx::chain_reconstruct(&chain, &out, Some(&[5]), &opts()).unwrap_err();
    assert!(!err.is_integrity_failure(), "{err}");
    let forced = Options {
        force: true,
        ..opts()
    };
    assert!(
        dmx::chain_reconstruct(&chain, &out, Some(&[5]), &forced)
            .unwrap()
            .ok
    );

    let v = dmx::chain_verify(&chain, &opts()).unwrap();
    assert!(v.ok, "{v:?}");
    assert!(v.entries.iter().all(|e| e.stored_ok && e.restored_ok));

    let info = dmx::chain_info(&chain).unwrap();
    assert_eq!(info.totals.entries, 6);
    assert_eq!(info.totals.anchors + info.totals.deltas, 6);
    let stored: u64 = m.entries.iter().map(|e| e.stored_size).sum();
    assert_eq!(info.totals.stored_bytes, stored);
    assert!(info.totals.stored_bytes <= info.totals.standalone_bytes);
    for e in &info.entries {
        assert!(e.error.is_none());
        for c in ["weights", "exp_avg", "exp_avg_sq", "header"] {
            assert!(e.components.contains_key(c), "{c} in {:?}", e.components);
        }
        let payload: u64 = e.components.values().map(|c| c.stored_bytes).sum();
        assert_eq!(payload + e.container_bytes.unwrap(), e.stored_size);
    }
}

#[test]
fn max_depth_forces_anchors() {
    let tmp = common::scratch();
    let mut rng = Rng(5);
    let mut s = State::new(&mut rng, &[("h.0.attn.q", "F32", 2048)]);
    let mut files = Vec::new();
    for i in 0..8 {
        files.push((format!("c{i}.safetensors"), s.bytes()));
        s.step(&mut rng, 5, 1e-4);
    }
    let inputs = write_all(tmp.path(), &files);
    for max_depth in [0usize, 2, 3] {
        let chain = tmp.path().join(format!("chain-{max_depth}"));
        let c = ChainOptions {
            max_depth,
            ..ChainOptions::default()
        };
        dmx::chain_compress(&inputs, &chain, &c, &opts()).unwrap();
        let m = read_manifest(&chain).unwrap();
        assert_eq!(m.max_depth, max_depth);
        for e in &m.entries {
            assert!(e.depth <= max_depth);
            match e.kind {
                ChainEntryKind::Anchor => assert_eq!((e.parent, e.depth), (None, 0)),
                ChainEntryKind::Delta => {
                    assert_eq!(e.parent, Some(e.index - 1));
                    assert_eq!(e.depth, m.entries[e.index - 1].depth + 1);
                }
            }
            // A restore reads at most one anchor and max_depth deltas.
            assert!(m.needed_for(e.index).count() <= max_depth + 1);
        }
        if real_delta_codec() {
            // Tiny steps: every delta wins, so the kinds follow the depth limit exactly.
            let depths: Vec<usize> = m.entries.iter().map(|e| e.depth).collect();
            let want: Vec<usize> = (0..8).map(|i| i % (max_depth + 1)).collect();
            assert_eq!(depths, want);
        }
        if max_depth == 0 {
            assert!(m.entries.iter().all(|e| e.kind == ChainEntryKind::Anchor));
        }
        let restored = restore_all(&chain, &tmp.path().join(format!("out-{max_depth}")));
        for (i, (_, bytes)) in files.iter().enumerate() {
            assert!(restored[i] == *bytes, "depth {max_depth}: entry {i}");
        }
    }
}

#[test]
fn appending_gives_the_same_chain_as_one_run() {
    let tmp = common::scratch();
    for precision in [Precision::Lossless, Precision::Int16, Precision::Int32] {
        let mut rng = Rng(21);
        let mut s = State::new(
            &mut rng,
            &[
                ("w.0.mlp", "F32", 1500),
                ("w.1.mlp", "F32", 1500),
                ("e", "BF16", 700),
            ],
        );
        let mut files = Vec::new();
        for i in 0..5 {
            files.push((format!("p{i}.safetensors"), s.bytes()));
            s.step(&mut rng, 30, 1e-3);
        }
        let inputs = write_all(tmp.path(), &files);
        let c = ChainOptions {
            precision,
            max_depth: 3,
        };
        let once = tmp.path().join(format!("once-{precision:?}"));
        dmx::chain_compress(&inputs, &once, &c, &opts()).unwrap();
        let parts = tmp.path().join(format!("parts-{precision:?}"));
        dmx::chain_compress(&inputs[..2], &parts, &c, &opts()).unwrap();
        dmx::chain_append(&parts, &inputs[2..3], &opts()).unwrap();
        dmx::chain_append(&parts, &inputs[3..], &opts()).unwrap();
        let (a, b) = (
            read_manifest(&once).unwrap(),
            read_manifest(&parts).unwrap(),
        );
        assert_eq!(a, b, "{precision:?}");
        for e in &a.entries {
            assert!(
                std::fs::read(once.join(&e.file)).unwrap()
                    == std::fs::read(parts.join(&e.file)).unwrap(),
                "{precision:?}: entry {}",
                e.index
            );
        }
        assert!(dmx::chain_verify(&parts, &opts()).unwrap().ok);
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// Random sequences of related tensors (random walks of F32 and BF16 values, small
    /// updates, sometimes big jumps, sometimes a tensor added): every entry is no larger than
    /// its standalone archive and restores exactly, whatever route is taken.
    #[test]
    fn random_runs_restore_exactly_within_standalone_sizes(
        seed in any::<u64>(),
        len in 2usize..6,
        max_depth in 0usize..4,
        n32 in 1usize..700,
        n16 in 1usize..700,
        events in proptest::collection::vec(0u8..10, 6),
        int16 in proptest::bool::weighted(0.3),
    ) {
        let tmp = common::scratch();
        let mut rng = Rng(seed);
        let mut s = State::new(&mut rng, &[("a.0.w", "F32", n32), ("a.0.e", "BF16", n16)]);
        let mut files = Vec::new();
        for (i, &ev) in events.iter().take(len).enumerate() {
            files.push((format!("s{i}.safetensors"), s.bytes()));
            match ev {
                0 => s.jump(&mut rng),
                1 if s.tensors.len() == 2 => {
                    s.tensors.push(("a.1.new".into(), "F32", vec![33], vec![0.5; 33]));
                }
                2 => {}
                _ => s.step(&mut rng, u64::from(ev) * 40, 1e-2),
            }
        }
        let inputs = write_all(tmp.path(), &files);
        let precision = if int16 { Precision::Int16 } else { Precision::Lossless };
        let chain = tmp.path().join("chain");
        let c = ChainOptions { precision, max_depth };
        dmx::chain_compress(&inputs, &chain, &c, &opts()).unwrap();
        let m = read_manifest(&chain).unwrap();
        prop_assert_eq!(m.entries.len(), len);
        check_sizes(&chain, &m, &inputs, tmp.path());
        let all = restore_all(&chain, &tmp.path().join("all"));
        for (i, e) in m.entries.iter().enumerate() {
            // Each entry alone (its own walk from its anchor) gives the same bytes.
            let out = tmp.path().join(format!("one-{i}"));
            let r = dmx::chain_reconstruct(&chain, &out, Some(&[i]), &opts()).unwrap();
            prop_assert!(r.ok);
            prop_assert_eq!(&r.touched, &m.needed_for(i).collect::<Vec<_>>());
            let one = std::fs::read(out.join(&e.name)).unwrap();
            prop_assert!(one == all[i], "entry {} differs between routes", i);
            let sha: String = {
                use sha2::Digest;
                sha2::Sha256::digest(&one).iter().map(|b| format!("{b:02x}")).collect()
            };
            prop_assert_eq!(&sha, &e.restored_sha256);
            if precision == Precision::Lossless {
                prop_assert!(all[i] == files[i].1, "entry {} is not byte-exact", i);
            }
        }
        prop_assert!(dmx::chain_verify(&chain, &opts()).unwrap().ok);
    }
}

#[test]
fn long_int16_chain_restores_on_the_anchor_grid() {
    let tmp = common::scratch();
    let mut rng = Rng(100);
    let mut s = State::new(
        &mut rng,
        &[("blk.0.attn.w", "F32", 512), ("blk.0.mlp.w", "F32", 384)],
    );
    let mut states = Vec::new();
    let mut files = Vec::new();
    for i in 0..100 {
        if i == 60 {
            // A value outside the anchor's grid: stored exactly (an escape).
            s.tensors[0].3[7] = 3.0;
        }
        states.push(s.clone());
        files.push((format!("ckpt-{i:03}.safetensors"), s.bytes()));
        s.step(&mut rng, 50, 1e-3);
    }
    let inputs = write_all(tmp.path(), &files);
    let chain = tmp.path().join("chain");
    let c = ChainOptions {
        precision: Precision::Int16,
        max_depth: 16,
    };
    dmx::chain_compress(&inputs, &chain, &c, &opts()).unwrap();
    let m = read_manifest(&chain).unwrap();
    assert_eq!(m.entries.len(), 100);
    let real = real_quant_codec();
    let want = |i: usize| {
        if real {
            quantized(&states[i].to_tensors(), &anchor_grid(&chain, &m, i), 16)
        } else {
            // Identity stub: "quantization" keeps every value.
            files[i].1.clone()
        }
    };
    // Entry 100 alone: its anchor and at most 16 deltas.
    let out = tmp.path().join("one");
    let r = dmx::chain_reconstruct(&chain, &out, Some(&[99]), &opts()).unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.touched, m.needed_for(99).collect::<Vec<_>>());
    assert!(r.touched.len() <= 17);
    let last = std::fs::read(out.join(&m.entries[99].name)).unwrap();
    assert!(
        last == want(99),
        "entry 100 ({:?}, depth {}) is not its quantization on its anchor's grid",
        m.entries[99].kind,
        m.entries[99].depth
    );
    // Every entry, restored in one walk: no error accumulates along the chain.
    let all = restore_all(&chain, &tmp.path().join("all"));
    assert!(all[99] == last);
    for (i, got) in all.iter().enumerate() {
        assert!(
            *got == want(i),
            "entry {i} ({:?}) is not its quantization on its anchor's grid",
            m.entries[i].kind
        );
    }
    if real && real_delta_codec() {
        let deltas = m
            .entries
            .iter()
            .filter(|e| e.kind == ChainEntryKind::Delta)
            .count();
        assert!(deltas > 50, "only {deltas} deltas");
    }
}

/// A chain of 7 entries with depth limit 2.
fn small_chain(tmp: &Path) -> (PathBuf, ChainManifest, Vec<Vec<u8>>) {
    let mut rng = Rng(77);
    let mut s = State::new(&mut rng, &[("x.0.w", "F32", 1024), ("x.0.b", "BF16", 256)]);
    let mut files = Vec::new();
    for i in 0..7 {
        files.push((format!("e{i}.safetensors"), s.bytes()));
        s.step(&mut rng, 10, 1e-3);
    }
    let inputs = write_all(tmp, &files);
    let chain = tmp.join("chain");
    let c = ChainOptions {
        max_depth: 2,
        ..ChainOptions::default()
    };
    dmx::chain_compress(&inputs, &chain, &c, &opts()).unwrap();
    let m = read_manifest(&chain).unwrap();
    (chain, m, files.into_iter().map(|(_, b)| b).collect())
}

#[test]
fn damaged_or_missing_entries_are_named_and_the_rest_restores() {
    for damage in ["corrupt", "missing"] {
        let tmp = common::scratch();
        let (chain, m, files) = small_chain(tmp.path());
        let bad = 3;
        let bad_path = chain.join(&m.entries[bad].file);
        if damage == "missing" {
            std::fs::remove_file(&bad_path).unwrap();
        } else {
            let mut bytes = std::fs::read(&bad_path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            std::fs::write(&bad_path, bytes).unwrap();
        }
        let out = tmp.path().join("out");
        let r = dmx::chain_reconstruct(&chain, &out, None, &opts()).unwrap();
        assert!(!r.ok);
        for e in &r.entries {
            let depends = m.needed_for(e.index).any(|j| j == bad);
            if depends {
                let err = e.error.as_deref().expect("must fail");
                assert!(err.contains(&m.entries[bad].file), "{damage}: {err}");
                if e.index == bad && damage == "missing" {
                    assert!(err.contains("missing"), "{err}");
                }
                assert!(!out.join(&e.name).exists());
            } else {
                assert!(
                    e.error.is_none(),
                    "{damage}: entry {}: {:?}",
                    e.index,
                    e.error
                );
                assert!(std::fs::read(out.join(&e.name)).unwrap() == files[e.index]);
            }
        }
        let v = dmx::chain_verify(&chain, &opts()).unwrap();
        assert!(!v.ok);
        for e in &v.entries {
            let depends = m.needed_for(e.index).any(|j| j == bad);
            assert_eq!(e.error.is_some(), depends, "{damage}: entry {}", e.index);
            assert_eq!(e.stored_ok, e.index != bad);
        }
        // Appending to a chain whose last entry cannot be restored fails as corruption
        // (when the next entry could be a delta).
        if m.needed_for(6).any(|j| j == bad) && m.entries[6].depth < m.max_depth {
            let next = tmp.path().join("e7.safetensors");
            common::write(&next, &files[6]);
            let err = dmx::chain_append(&chain, &[next], &opts()).unwrap_err();
            assert!(err.is_integrity_failure(), "{err}");
        }
    }
}

#[test]
fn a_single_index_reads_only_its_anchor_and_deltas() {
    let tmp = common::scratch();
    let (chain, m, files) = small_chain(tmp.path());
    let i = 4;
    let needed: Vec<usize> = m.needed_for(i).collect();
    // Remove every entry the restore of `i` does not need.
    for e in &m.entries {
        if !needed.contains(&e.index) {
            std::fs::remove_file(chain.join(&e.file)).unwrap();
        }
    }
    let out = tmp.path().join("out");
    let r = dmx::chain_reconstruct(&chain, &out, Some(&[i]), &opts()).unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.touched, needed);
    assert!(std::fs::read(out.join(&m.entries[i].name)).unwrap() == files[i]);
    let err = dmx::chain_reconstruct(&chain, &out, Some(&[7]), &opts()).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[test]
fn leftovers_of_interrupted_runs_do_not_trip_later_runs() {
    let tmp = common::scratch();
    let (chain, m, files) = small_chain(tmp.path());
    // What a killed append may leave: a work folder, a manifest temp file, an orphan entry
    // (written, not yet in the manifest) under another name than the next append picks.
    std::fs::create_dir(chain.join(".dmx-tmp-work")).unwrap();
    std::fs::write(chain.join(".dmx-tmp-work/standalone.dmx"), b"partial").unwrap();
    std::fs::write(chain.join(".dmx-tmp-abc123"), b"{\"partial").unwrap();
    std::fs::write(chain.join("00007-other.safetensors.dmx"), b"orphan").unwrap();
    std::fs::write(chain.join("notes.txt"), b"user file").unwrap();
    assert!(dmx::chain_verify(&chain, &opts()).unwrap().ok);
    let next = tmp.path().join("e7.safetensors");
    common::write(&next, &files[6]);
    let r = dmx::chain_append(&chain, std::slice::from_ref(&next), &opts()).unwrap();
    assert_eq!(r.entries, m.entries.len() + 1);
    assert!(common::leftovers(&chain).is_empty());
    // The orphan is kept aside, never deleted, and reported.
    assert!(!chain.join("00007-other.safetensors.dmx").exists());
    assert_eq!(r.set_aside, ["orphans/00007-other.safetensors.dmx"]);
    assert_eq!(
        std::fs::read(chain.join("orphans/00007-other.safetensors.dmx")).unwrap(),
        b"orphan"
    );
    assert!(chain.join("notes.txt").exists());
    let v = dmx::chain_verify(&chain, &opts()).unwrap();
    assert!(v.ok);
    assert_eq!(v.orphans, ["orphans/00007-other.safetensors.dmx"]);

    // A non-empty folder is refused without force; force replaces the chain, keeping
    // unrelated files.
    let err = dmx::chain_compress(
        std::slice::from_ref(&next),
        &chain,
        &ChainOptions::default(),
        &opts(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, dmx::Error::FolderNotEmpty { path, chain: true } if *path == chain),
        "{err}"
    );
    let forced = Options {
        force: true,
        ..opts()
    };
    dmx::chain_compress(&[next], &chain, &ChainOptions::default(), &forced).unwrap();
    assert_eq!(read_manifest(&chain).unwrap().entries.len(), 1);
    let left: Vec<String> = std::fs::read_dir(&chain)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(chain.join("notes.txt").exists());
    assert!(chain.join("orphans/00007-other.safetensors.dmx").exists());
}

#[test]
fn bad_inputs_and_manifests_are_refused() {
    let tmp = common::scratch();
    let not_st = tmp.path().join("notes.txt");
    std::fs::write(&not_st, b"hello").unwrap();
    let err = dmx::chain_compress(
        &[not_st],
        &tmp.path().join("c"),
        &ChainOptions::default(),
        &opts(),
    )
    .unwrap_err();
    assert!(!err.is_integrity_failure());
    let err = dmx::chain_append(tmp.path(), &[tmp.path().join("x")], &opts()).unwrap_err();
    assert!(err.to_string().contains("not a dmx chain"), "{err}");

    let (chain, _, _) = small_chain(tmp.path());
    let manifest = chain.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"00001-e1", "\"../00001-e1")).unwrap();
    let err = dmx::chain_verify(&chain, &opts()).unwrap_err();
    assert!(err.is_integrity_failure(), "{err}");
    std::fs::write(&manifest, &text[..text.len() / 2]).unwrap();
    assert!(dmx::chain_info(&chain).unwrap_err().is_integrity_failure());
    std::fs::write(&manifest, text.replace("\"version\": 1", "\"version\": 9")).unwrap();
    let err = dmx::chain_info(&chain).unwrap_err();
    assert!(err.to_string().contains("not supported"), "{err}");
}

#[test]
fn a_delta_the_engine_refuses_leaves_an_anchor() {
    // One-value tensors on an int16 grid: the quantized delta of such a tensor may not fit
    // the container's rules (a stored chunk larger than its raw size); the entry is then
    // stored as its standalone archive and the chain stays valid.
    let tmp = common::scratch();
    let one = |x: f32| common::plain(&[Tensor::new("w", "F32", &[1], x.to_le_bytes().to_vec())]);
    let files = vec![
        ("t0.safetensors".to_string(), one(0.1)),
        ("t1.safetensors".to_string(), one(0.7)),
        ("t2.safetensors".to_string(), one(0.7)),
    ];
    let inputs = write_all(tmp.path(), &files);
    let chain = tmp.path().join("chain");
    let c = ChainOptions {
        precision: Precision::Int16,
        ..ChainOptions::default()
    };
    let r = dmx::chain_compress(&inputs, &chain, &c, &opts()).unwrap();
    for a in &r.appended {
        if a.delta_error.is_some() {
            assert_eq!(a.entry.kind, ChainEntryKind::Anchor);
            assert!(a.delta_size.is_none());
        }
        assert!(a.entry.stored_size <= a.entry.standalone_size);
    }
    assert!(dmx::chain_verify(&chain, &opts()).unwrap().ok);
}

/// Deletes `victim` when the `at`-th progress phase starts: a checkpoint that disappears in
/// the middle of a run (as one that cannot be read would).
struct Sabotage {
    calls: std::sync::atomic::AtomicUsize,
    at: usize,
    victim: PathBuf,
}

impl dmx::Progress for Sabotage {
    fn start(&self, _what: &str, _total: u64) {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n == self.at {
            let _ = std::fs::remove_file(&self.victim);
        }
    }
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

fn sabotaged(victim: &Path, at: usize, force: bool) -> Options {
    Options {
        force,
        progress: Some(std::sync::Arc::new(Sabotage {
            calls: 0.into(),
            at,
            victim: victim.to_path_buf(),
        })),
        ..opts()
    }
}

/// Every file under `dir` (relative paths) with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    common::tree(dir)
}

#[test]
fn a_failed_chain_compress_leaves_nothing_and_a_rerun_works() {
    let tmp = common::scratch();
    let mut rng = Rng(5);
    let mut s = State::new(&mut rng, &[("x.0.w", "F32", 2048)]);
    let mut files = Vec::new();
    for i in 0..3 {
        files.push((format!("f{i}.safetensors"), s.bytes()));
        s.step(&mut rng, 10, 1e-3);
    }
    let inputs = write_all(tmp.path(), &files);
    let restore_victim = || common::write(&inputs[2], &files[2].1);

    // A new folder (and its missing parents): nothing at all is left.
    let chain = tmp.path().join("new/sub/chain");
    let err = dmx::chain_compress(
        &inputs,
        &chain,
        &ChainOptions::default(),
        &sabotaged(&inputs[2], 2, false),
    )
    .unwrap_err();
    assert!(err.to_string().contains("f2.safetensors"), "{err}");
    assert!(!tmp.path().join("new").exists());
    assert!(common::leftovers(tmp.path()).is_empty());
    restore_victim();
    dmx::chain_compress(&inputs, &chain, &ChainOptions::default(), &opts()).unwrap();
    assert_eq!(read_manifest(&chain).unwrap().entries.len(), 3);
    assert!(dmx::chain_verify(&chain, &opts()).unwrap().ok);

    // --force over an existing chain with a file of the user's: a failed run changes
    // nothing, a good one replaces the chain and keeps the user's file.
    std::fs::write(chain.join("notes.txt"), b"mine").unwrap();
    let before = snapshot(&chain);
    let two = &inputs[1..];
    let err = dmx::chain_compress(
        two,
        &chain,
        &ChainOptions::default(),
        &sabotaged(&inputs[2], 1, true),
    )
    .unwrap_err();
    assert!(err.to_string().contains("f2.safetensors"), "{err}");
    assert_eq!(snapshot(&chain), before);
    assert!(common::leftovers(&chain).is_empty());
    restore_victim();
    let forced = Options {
        force: true,
        ..opts()
    };
    let r = dmx::chain_compress(two, &chain, &ChainOptions::default(), &forced).unwrap();
    assert_eq!(r.dir, chain.display().to_string());
    assert!(r.set_aside.is_empty());
    let m = read_manifest(&chain).unwrap();
    assert_eq!(m.entries.len(), 2);
    assert_eq!(m.entries[0].name, "f1.safetensors");
    assert_eq!(std::fs::read(chain.join("notes.txt")).unwrap(), b"mine");
    assert!(common::leftovers(&chain).is_empty());
    // Only the new chain's files and the user's are left.
    let mut names: Vec<String> = std::fs::read_dir(&chain)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = m.entries.iter().map(|e| e.file.clone()).collect();
    want.extend(["manifest.json".to_string(), "notes.txt".to_string()]);
    want.sort();
    assert_eq!(names, want);
    assert!(dmx::chain_verify(&chain, &opts()).unwrap().ok);

    // --force into a folder holding an invalid manifest and stray entry-like files: they
    // are moved aside, not deleted.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("manifest.json"), b"{ not mine to delete").unwrap();
    std::fs::write(other.join("00000-f1.safetensors.dmx"), b"old").unwrap();
    let r = dmx::chain_compress(two, &other, &ChainOptions::default(), &forced).unwrap();
    assert_eq!(
        r.set_aside,
        ["orphans/00000-f1.safetensors.dmx", "orphans/manifest.json"]
    );
    assert_eq!(
        std::fs::read(other.join("orphans/manifest.json")).unwrap(),
        b"{ not mine to delete"
    );
    assert!(dmx::chain_verify(&other, &opts()).unwrap().ok);
}

#[test]
fn manifests_deeper_than_their_max_depth_are_corrupt() {
    let tmp = common::scratch();
    let (chain, m, _) = small_chain(tmp.path());
    assert!(m.entries.iter().any(|e| e.depth == 2));
    let manifest = chain.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("\"max_depth\": 2", "\"max_depth\": 1"),
    )
    .unwrap();
    for err in [
        read_manifest(&chain).unwrap_err(),
        dmx::chain_verify(&chain, &opts()).unwrap_err(),
        dmx::chain_info(&chain).unwrap_err(),
    ] {
        assert!(err.is_integrity_failure(), "{err}");
        assert!(err.to_string().contains("corrupt manifest"), "{err}");
        assert!(err.to_string().contains("max_depth 1"), "{err}");
    }
    // A delta whose parent link skips an entry.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let i = m.entries.iter().position(|e| e.depth == 2).unwrap();
    v["entries"][i]["parent"] = serde_json::json!(i - 2);
    std::fs::write(&manifest, serde_json::to_string(&v).unwrap()).unwrap();
    let err = read_manifest(&chain).unwrap_err();
    assert!(err.is_integrity_failure(), "{err}");
    assert!(err.to_string().contains("corrupt manifest"), "{err}");
}

#[cfg(unix)]
#[test]
fn ordinary_names_with_colons_and_backslashes_round_trip() {
    let tmp = common::scratch();
    let mut rng = Rng(9);
    let mut s = State::new(&mut rng, &[("x.0.w", "F32", 1024)]);
    let names = [
        "ckpt-2024-01-01T12:00:00.safetensors",
        "ckpt-2024-01-01T13:00:00.safetensors",
        "run\\step-3.safetensors",
    ];
    let mut files = Vec::new();
    for n in names {
        files.push((n.to_string(), s.bytes()));
        s.step(&mut rng, 10, 1e-3);
    }
    let inputs = write_all(tmp.path(), &files);
    let chain = tmp.path().join("chain");
    dmx::chain_compress(&inputs[..2], &chain, &ChainOptions::default(), &opts()).unwrap();
    dmx::chain_append(&chain, &inputs[2..], &opts()).unwrap();
    let m = read_manifest(&chain).unwrap();
    for (e, n) in m.entries.iter().zip(names) {
        assert_eq!(e.name, n);
    }
    assert!(m.entries.iter().any(|e| e.kind == ChainEntryKind::Delta));
    let out = tmp.path().join("out");
    let restored = restore_all(&chain, &out);
    for ((n, bytes), r) in files.iter().zip(&restored) {
        assert!(r == bytes, "{n}");
        assert!(std::fs::read(out.join(n)).unwrap() == *bytes, "{n}");
    }
    assert!(dmx::chain_verify(&chain, &opts()).unwrap().ok);
}

/// What a `chain_compress` killed long ago leaves beside its destination is removed by the
/// next one into the same folder; a live or recent one is not.
#[cfg(target_os = "linux")]
#[test]
fn stale_staging_folders_of_killed_runs_are_removed() {
    let tmp = common::scratch();
    let mut rng = Rng(11);
    let s = State::new(&mut rng, &[("x.0.w", "F32", 256)]);
    let inputs = write_all(tmp.path(), &[("a.safetensors".to_string(), s.bytes())]);
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let make = |name: &str, age: Option<std::time::SystemTime>| {
        let p = tmp.path().join(name);
        std::fs::create_dir(&p).unwrap();
        let f = p.join("00000-a.safetensors.dmx");
        std::fs::write(&f, b"partial").unwrap();
        if let Some(t) = age {
            std::fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_modified(t)
                .unwrap();
            std::fs::File::open(&p).unwrap().set_modified(t).unwrap();
        }
        p
    };
    // No such process (above Linux's largest pid), old: removed.
    let dead = make(".dmx-tmp-4294967-abc", Some(old));
    // No such process but recent: kept (it may belong to another PID namespace).
    let recent = make(".dmx-tmp-4294967-def", None);
    // This very process, old: kept.
    let alive = make(&format!(".dmx-tmp-{}-ghi", std::process::id()), Some(old));
    // Not a staging name: kept.
    let other = make(".dmx-tmp-other", Some(old));
    dmx::chain_compress(
        &inputs,
        &tmp.path().join("chain"),
        &ChainOptions::default(),
        &opts(),
    )
    .unwrap();
    assert!(!dead.exists());
    assert!(recent.exists() && alive.exists() && other.exists());
}

/// A restore that restores nothing leaves no output folder behind (when it created it) and
/// deletes nothing in an existing one.
#[test]
fn a_restore_that_fails_leaves_nothing() {
    let tmp = common::scratch();
    let (chain, m, _) = small_chain(tmp.path());
    std::fs::write(chain.join(&m.entries[0].file), b"damaged").unwrap();
    let out = tmp.path().join("new-out");
    let r = dmx::chain_reconstruct(&chain, &out, Some(&[0, 1]), &opts()).unwrap();
    assert!(!r.ok);
    assert!(!out.exists());
    let existing = tmp.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join(&m.entries[0].name), b"old").unwrap();
    let forced = Options {
        force: true,
        ..opts()
    };
    let r = dmx::chain_reconstruct(&chain, &existing, Some(&[0]), &forced).unwrap();
    assert!(!r.ok);
    assert_eq!(
        std::fs::read(existing.join(&m.entries[0].name)).unwrap(),
        b"old"
    );
    assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 1);
}
