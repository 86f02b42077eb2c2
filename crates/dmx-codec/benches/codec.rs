//! Criterion micro-benchmarks of the chunk codec: encode and decode MB/s of one 1 MiB chunk of
//! normally distributed weights in BF16, F16 and F32 (the shapes of real trained weights).
//!
//! Run with `cargo bench -p dmx-codec`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dmx_codec::{FloatLayout, ValueKind, decode, encode};

mod common;

/// Deterministic N(0, 0.02) samples.
fn normal(n: usize) -> Vec<f32> {
    common::normal(n, 0x9E37_79B9_7F4A_7C15)
        .iter()
        .map(|&z| (0.02 * z) as f32)
        .collect()
}

fn chunk(layout: FloatLayout) -> Vec<u8> {
    let n = (1 << 20) / layout.bytes();
    let values = normal(n);
    match layout.bytes() {
        2 if layout == FloatLayout::BF16 => values
            .iter()
            .flat_map(|v| ((v.to_bits() + 0x8000) >> 16).to_le_bytes()[..2].to_vec())
            .collect(),
        2 => values
            .iter()
            .flat_map(|&v| f16_bits(v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// f32 to IEEE half bits (round toward zero; enough for benchmark data).
fn f16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xFF) as i32 - 127 + 15;
    if exp <= 0 {
        return sign;
    }
    sign | ((exp as u16) << 10) | ((b >> 13) & 0x3FF) as u16
}

fn bench(c: &mut Criterion) {
    for (name, layout) in [
        ("bf16", FloatLayout::BF16),
        ("f16", FloatLayout::F16),
        ("f32", FloatLayout::F32),
    ] {
        let data = chunk(layout);
        let kind = ValueKind::Float(layout);
        let enc = encode(kind, &data, 3);
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function("encode", |b| b.iter(|| encode(kind, &data, 3)));
        let mut out = vec![0u8; data.len()];
        group.bench_function("decode", |b| {
            b.iter(|| decode(enc.codec, &enc.payload, &mut out).expect("valid payload"))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
