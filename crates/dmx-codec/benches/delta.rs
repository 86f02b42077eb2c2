//! Criterion micro-benchmarks of the integer stream coder and the delta codecs: MB/s of
//! decoded output for `ints` (8-byte values) and of target tensor bytes for the deltas, on one
//! 1 MiB chunk of synthetic FP32 weights N(0, 0.02) and a fine-tune-like target (each weight
//! moved by N(0, 3e-4)).
//!
//! Run with `cargo bench -p dmx-codec --bench delta`; real checkpoints are measured by
//! `cargo run --release -p dmx-codec --example delta_measure -- BASE TARGET`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dmx_codec::{FloatLayout, ValueKind, delta, grid, ints};

mod common;

use common::normal;

fn bench(c: &mut Criterion) {
    let n = (1 << 20) / 4;
    let w = normal(n, 1);
    let d = normal(n, 2);
    let base: Vec<u8> = w
        .iter()
        .flat_map(|&x| ((0.02 * x) as f32).to_le_bytes())
        .collect();
    let target: Vec<u8> = w
        .iter()
        .zip(&d)
        .flat_map(|(&x, &y)| ((0.02 * x + 3e-4 * y) as f32).to_le_bytes())
        .collect();

    let values: Vec<i64> = d.iter().map(|&y| (y * 1000.0) as i64).collect();
    let block = ints::encode_signed(&values);
    let mut group = c.benchmark_group("ints");
    group.throughput(Throughput::Bytes(8 * values.len() as u64));
    group.bench_function("encode", |b| b.iter(|| ints::encode_signed(&values)));
    let mut out = vec![0i64; values.len()];
    group.bench_function("decode", |b| {
        b.iter(|| ints::decode_signed(&block, &mut out).expect("valid block"))
    });
    group.finish();

    let kind = ValueKind::Float(FloatLayout::F32);
    let (payload, _) = delta::encode(kind, &base, &target);
    let mut group = c.benchmark_group("delta_f32");
    group.throughput(Throughput::Bytes(target.len() as u64));
    group.bench_function("encode", |b| b.iter(|| delta::encode(kind, &base, &target)));
    let mut out = vec![0u8; target.len()];
    group.bench_function("decode", |b| {
        b.iter(|| delta::decode(&payload, &base, &mut out).expect("valid payload"))
    });
    let step = grid::step_for(0.1, 16);
    let (qp, _) = delta::encode_quantized(FloatLayout::F32, &base, &target, step, 16);
    group.bench_function("encode_int16", |b| {
        b.iter(|| delta::encode_quantized(FloatLayout::F32, &base, &target, step, 16))
    });
    group.bench_function("decode_int16", |b| {
        b.iter(|| delta::decode_quantized(&qp, &base, &mut out).expect("valid payload"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
