//! Measures the delta codecs on a pair of safetensors files with the same keys.
//!
//! `cargo run --release -p dmx-codec --example delta_measure -- BASE TARGET`
//!
//! For every floating-point tensor present in both files with the same size, each 1 MiB chunk
//! is coded three ways: standalone lossless (`encode_with`), the lossless delta
//! (`delta::encode`), and the int16 quantized delta (`delta::encode_quantized` with
//! step = max|base tensor| / 32767). Prints bits per parameter per tensor group (the engine
//! keeps the smaller of standalone and delta per chunk, column `best`), the entropy bound of
//! the delta, which delta variants won (payload variant byte: chunk count), and then the
//! speed of each codec over the whole file: MB of target tensor per second of this thread's
//! CPU time, best of 3 passes (the machine may be shared).
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use dmx_codec::{Encoded, FloatLayout, Hints, ValueKind, delta, encode_with, grid};

struct Tensor {
    layout: Option<FloatLayout>,
    data: Vec<u8>,
}

fn load(path: &str) -> BTreeMap<String, Tensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("json");
    let mut out = BTreeMap::new();
    for (name, v) in header.as_object().expect("object") {
        if name == "__metadata__" {
            continue;
        }
        let off = v["data_offsets"].as_array().expect("offsets");
        let s = off[0].as_u64().expect("u64") as usize;
        let e = off[1].as_u64().expect("u64") as usize;
        let layout = match v["dtype"].as_str().unwrap_or("") {
            "F32" => Some(FloatLayout::F32),
            "F16" => Some(FloatLayout::F16),
            "BF16" => Some(FloatLayout::BF16),
            "F64" => Some(FloatLayout::F64),
            _ => None,
        };
        out.insert(
            name.clone(),
            Tensor {
                layout,
                data: bytes[8 + n + s..8 + n + e].to_vec(),
            },
        );
    }
    out
}

const CHUNK: usize = 1 << 20;
/// Timing passes per codec (the least CPU time is kept).
const REPS: usize = 3;

/// CPU time of this thread (from /proc/thread-self/schedstat), so that timings on a busy
/// machine count only the time this thread ran.
fn cpu_time() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = s
        .split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Runs `f` over all chunks [`REPS`] times; returns the last results and the least CPU time
/// of one pass.
fn timed<T>(chunks: &[Chunk<'_>], mut f: impl FnMut(&Chunk<'_>) -> T) -> (Vec<T>, Duration) {
    let mut best = Duration::MAX;
    let mut last = Vec::new();
    for _ in 0..REPS {
        let t0 = cpu_time();
        last = chunks.iter().map(&mut f).collect();
        best = best.min(cpu_time() - t0);
    }
    (last, best)
}

/// Decodes every chunk into `outs` with `f` [`REPS`] times; the least CPU time of one pass.
fn decode_all(outs: &mut [Vec<u8>], f: impl Fn(usize, &mut [u8])) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..REPS {
        let t0 = cpu_time();
        for (i, out) in outs.iter_mut().enumerate() {
            f(i, out);
        }
        best = best.min(cpu_time() - t0);
    }
    best
}

struct Chunk<'a> {
    group: String,
    layout: FloatLayout,
    step: f64,
    base: &'a [u8],
    target: &'a [u8],
}

#[derive(Default)]
struct Totals {
    params: usize,
    standalone: usize,
    delta: usize,
    best: usize,
    quant: usize,
    entropy: f64,
    variants: BTreeMap<u8, usize>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 3, "usage: delta_measure BASE TARGET");
    let base = load(&args[1]);
    let target = load(&args[2]);
    let mut chunks = Vec::new();
    for (name, t) in &target {
        let Some(b) = base.get(name) else { continue };
        let Some(layout) = t.layout else { continue };
        if b.data.len() != t.data.len() || b.layout != t.layout {
            continue;
        }
        let group = if name.starts_with("optim") {
            name.split('.').take(2).collect::<Vec<_>>().join(".")
        } else {
            "model".to_string()
        };
        let max_abs = b
            .data
            .chunks_exact(layout.bytes())
            .map(|v| {
                let mut w = [0u8; 8];
                w[..v.len()].copy_from_slice(v);
                grid::to_f64(layout, u64::from_le_bytes(w)).abs()
            })
            .filter(|x| x.is_finite())
            .fold(0f64, f64::max);
        let step = grid::step_for(max_abs, 16);
        let chunk = CHUNK / layout.bytes() * layout.bytes();
        for (tc, bc) in t.data.chunks(chunk).zip(b.data.chunks(chunk)) {
            chunks.push(Chunk {
                group: group.clone(),
                layout,
                step,
                base: bc,
                target: tc,
            });
        }
    }
    let bytes: usize = chunks.iter().map(|c| c.target.len()).sum();
    let hints = Hints {
        zstd_level: 3,
        row_len: 0,
        period: 0,
    };
    let kind = |c: &Chunk<'_>| ValueKind::Float(c.layout);
    let (plain, t_plain_enc): (Vec<Encoded>, _) =
        timed(&chunks, |c| encode_with(kind(c), c.target, hints));
    let mut outs: Vec<Vec<u8>> = chunks.iter().map(|c| vec![0u8; c.target.len()]).collect();
    let t_plain_dec = decode_all(&mut outs, |i, out| {
        dmx_codec::decode(plain[i].codec, &plain[i].payload, out).expect("decodes")
    });
    let (deltas, t_delta_enc) = timed(&chunks, |c| delta::encode(kind(c), c.base, c.target));
    let t_delta_dec = decode_all(&mut outs, |i, out| {
        delta::decode(&deltas[i].0, chunks[i].base, out).expect("decodes")
    });
    for (c, out) in chunks.iter().zip(&outs) {
        assert!(out == c.target, "lossless delta mismatch");
    }
    let (quants, t_quant_enc) = timed(&chunks, |c| {
        delta::encode_quantized(c.layout, c.base, c.target, c.step, 16)
    });
    let t_quant_dec = decode_all(&mut outs, |i, out| {
        delta::decode_quantized(&quants[i].0, chunks[i].base, out).expect("decodes")
    });
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    let mut all = Totals::default();
    for (i, c) in chunks.iter().enumerate() {
        for tot in [groups.entry(c.group.clone()).or_default(), &mut all] {
            tot.params += c.target.len() / c.layout.bytes();
            tot.standalone += plain[i].payload.len();
            tot.delta += deltas[i].0.len();
            tot.best += plain[i].payload.len().min(deltas[i].0.len());
            tot.quant += quants[i].0.len();
            tot.entropy += deltas[i].1;
            *tot.variants.entry(deltas[i].0[0]).or_default() += 1;
        }
    }
    println!(
        "{:20} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8}  variants",
        "bits/param", "params", "standalone", "delta", "best", "bound", "int16Δ",
    );
    for (g, t) in groups.iter().chain([(&"ALL".to_string(), &all)]) {
        let bpp = |x: usize| 8.0 * x as f64 / t.params as f64;
        let v: Vec<String> = t.variants.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        println!(
            "{:20} {:>9} {:>10.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}  {}",
            g,
            t.params,
            bpp(t.standalone),
            bpp(t.delta),
            bpp(t.best),
            t.entropy / t.params as f64,
            bpp(t.quant),
            v.join(","),
        );
    }
    let mbs = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9);
    println!(
        "MB/s (CPU time) encode/decode: standalone {:.0}/{:.0}, delta {:.0}/{:.0}, int16 delta {:.0}/{:.0}",
        mbs(t_plain_enc),
        mbs(t_plain_dec),
        mbs(t_delta_enc),
        mbs(t_delta_dec),
        mbs(t_quant_enc),
        mbs(t_quant_dec),
    );
}
