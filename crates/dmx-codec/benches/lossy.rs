//! Criterion micro-benchmarks of the lossy codecs: encode and decode MB/s (of raw tensor
//! bytes) of one 1 MiB chunk of normally distributed weights with rows of 1024 values, for
//! BFP (G = 32, M = 6 and 7) in BF16, F16 and F32, and for int16 quantization.
//!
//! Run with `cargo bench -p dmx-codec --bench lossy`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dmx_codec::{FloatLayout, bfp, grid, quant};

/// Values per row.
const ROW: usize = 1024;

mod common;

/// Deterministic N(0, 0.02) samples, with a per-row scale as in trained weight matrices.
fn normal(n: usize) -> Vec<f64> {
    common::normal(n, 0x9E37_79B9_7F4A_7C15)
        .iter()
        .enumerate()
        .map(|(i, &z)| 0.02 * (1.0 + ((i / ROW) % 7) as f64 / 4.0) * z)
        .collect()
}

fn chunk(layout: FloatLayout) -> Vec<u8> {
    let b = layout.bytes();
    normal((1 << 20) / b)
        .iter()
        .flat_map(|&v| grid::from_f64(layout, v).to_le_bytes()[..b].to_vec())
        .collect()
}

fn bench(c: &mut Criterion) {
    for (name, layout) in [
        ("bf16", FloatLayout::BF16),
        ("f16", FloatLayout::F16),
        ("f32", FloatLayout::F32),
    ] {
        let data = chunk(layout);
        let mut g = c.benchmark_group(format!("lossy/{name}"));
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.sample_size(20);
        for m in [6u32, 7] {
            let p = bfp::Params {
                mantissa_bits: m,
                group_size: 32,
            };
            g.bench_function(format!("bfp_m{m}_encode"), |b| {
                b.iter(|| bfp::encode(layout, &data, ROW, p))
            });
            let (enc, _) = bfp::encode(layout, &data, ROW, p);
            let mut out = vec![0u8; data.len()];
            g.bench_function(format!("bfp_m{m}_decode"), |b| {
                b.iter(|| bfp::decode(&enc, &mut out).expect("decode"))
            });
        }
        let step = grid::step_for(0.2, 16);
        g.bench_function("int16_encode", |b| {
            b.iter(|| quant::encode(layout, &data, step, 16))
        });
        let (enc, _) = quant::encode(layout, &data, step, 16);
        let mut out = vec![0u8; data.len()];
        g.bench_function("int16_decode", |b| {
            b.iter(|| quant::decode(&enc, &mut out).expect("decode"))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
