//! Measures the lossy codecs on a real safetensors file: bits per weight (every payload byte),
//! relative L2 error and single-thread speed, over the 2-D float tensors cut into chunks of
//! whole rows (1 MiB by default, like the engine).
//!
//! `cargo run --release -p dmx-codec --example lossy_measure -- FILE [--group 32]
//! [--chunk BYTES] [--m 4,5,6,7,8] [--int] [--loop N]`
//!
//! `--int` adds int16/int32 quantization (step = max |x| of the tensor / qmax); `--loop N`
//! instead codes the first chunk of the largest tensor N times (BFP at the first `--m`,
//! int16/int32, and the lossless codec as a yardstick). Speeds are per thread, from the
//! thread's on-CPU time, so a busy machine skews them less.

use dmx_codec::{FloatLayout, bfp, grid, quant};
use std::time::Instant;

/// On-CPU time of this thread in seconds (from /proc, so that a loaded machine does not skew
/// throughput), or wall-clock time where that is unavailable.
fn cpu_now() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(
            || {
                static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
                START.get_or_init(Instant::now).elapsed().as_secs_f64()
            },
            |ns| ns as f64 * 1e-9,
        )
}

struct Tensor {
    layout: FloatLayout,
    row: usize,
    data: Vec<u8>,
}

fn tensors(path: &str) -> Vec<Tensor> {
    let bytes = std::fs::read(path).expect("read file");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("header")) as usize;
    let head: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("json");
    let mut out = Vec::new();
    for (name, v) in head.as_object().expect("object") {
        if name == "__metadata__" {
            continue;
        }
        let layout = match v["dtype"].as_str() {
            Some("BF16") => FloatLayout::BF16,
            Some("F16") => FloatLayout::F16,
            Some("F32") => FloatLayout::F32,
            _ => continue,
        };
        let shape: Vec<usize> = v["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|x| x.as_u64().expect("dim") as usize)
            .collect();
        if shape.len() != 2 {
            continue;
        }
        let o = v["data_offsets"].as_array().expect("offsets");
        let (s, e) = (
            o[0].as_u64().expect("offset") as usize,
            o[1].as_u64().expect("offset") as usize,
        );
        out.push(Tensor {
            layout,
            row: shape[1],
            data: bytes[8 + n + s..8 + n + e].to_vec(),
        });
    }
    out
}

fn values(layout: FloatLayout, data: &[u8]) -> Vec<f64> {
    data.chunks_exact(layout.bytes())
        .map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            grid::to_f64(layout, u64::from_le_bytes(w))
        })
        .collect()
}

/// Chunks of whole rows of at most `chunk` bytes (at least one row).
fn chunks(t: &Tensor, chunk: usize) -> Vec<&[u8]> {
    let row_bytes = t.row * t.layout.bytes();
    let rows = (chunk / row_bytes.max(1)).max(1);
    t.data.chunks(rows * row_bytes.max(1)).collect()
}

#[derive(Default)]
struct Tally {
    values: usize,
    bytes: usize,
    entropy: f64,
    err2: f64,
    norm2: f64,
    enc_s: f64,
    dec_s: f64,
    raw: usize,
}

impl Tally {
    fn add(&mut self, layout: FloatLayout, orig: &[u8], back: &[u8]) {
        for (x, y) in values(layout, orig).iter().zip(values(layout, back)) {
            if x.is_finite() {
                self.err2 += (x - y) * (x - y);
                self.norm2 += x * x;
            }
        }
        self.values += orig.len() / layout.bytes();
        self.raw += orig.len();
    }

    fn line(&self, label: &str) {
        println!(
            "{label:>8}: {:.3} bits/weight (entropy {:.3}), rel L2 {:.3e}, encode {:.0} MB/s, decode {:.0} MB/s",
            self.bytes as f64 * 8.0 / self.values as f64,
            self.entropy / self.values as f64,
            (self.err2 / self.norm2).sqrt(),
            self.raw as f64 / self.enc_s / 1e6,
            self.raw as f64 / self.dec_s / 1e6,
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().expect("usage: lossy_measure FILE [options]");
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let group: u32 = opt("--group").map_or(32, |v| v.parse().expect("group"));
    let chunk: usize = opt("--chunk").map_or(1 << 20, |v| v.parse().expect("chunk"));
    let ms: Vec<u32> = opt("--m").map_or(vec![4, 5, 6, 7, 8], |v| {
        v.split(',').map(|x| x.parse().expect("m")).collect()
    });
    let ts = tensors(path);
    if let Some(n) = opt("--loop") {
        // Encode and decode one 1 MiB chunk of the largest tensor `n` times each.
        let n: usize = n.parse().expect("loop count");
        let t = ts.iter().max_by_key(|t| t.data.len()).expect("a tensor");
        let c = chunks(t, chunk)[0];
        let p = bfp::Params {
            mantissa_bits: ms[0].min(bfp::max_mantissa_bits(t.layout)),
            group_size: group,
        };
        let mut back = vec![1u8; c.len()];
        let t0 = cpu_now();
        let mut enc = Vec::new();
        for _ in 0..n {
            enc = bfp::encode(t.layout, c, t.row, p).0;
        }
        let t1 = cpu_now();
        for _ in 0..n {
            bfp::decode(&enc, &mut back).expect("decode");
        }
        let t2 = cpu_now();
        let mb = (c.len() * n) as f64 / 1e6;
        // The lossless float codec on the same chunk, as a yardstick for the machine.
        let kind = dmx_codec::ValueKind::Float(t.layout);
        let l0 = cpu_now();
        let mut lossless = dmx_codec::encode(kind, c, 3);
        for _ in 1..n {
            lossless = dmx_codec::encode(kind, c, 3);
        }
        let l1 = cpu_now();
        for _ in 0..n {
            dmx_codec::decode(lossless.codec, &lossless.payload, &mut back).expect("decode");
        }
        let l2 = cpu_now();
        println!(
            "lossless codec on the same chunk: encode {:.0} MB/s, decode {:.0} MB/s",
            mb / (l1 - l0),
            mb / (l2 - l1)
        );
        for bits in [16u32, 32] {
            let max = values(t.layout, c)
                .iter()
                .filter(|x| x.is_finite())
                .fold(0f64, |a, x| a.max(x.abs()));
            let step = grid::step_for(max, bits);
            let q0 = cpu_now();
            let mut enc = Vec::new();
            for _ in 0..n {
                enc = quant::encode(t.layout, c, step, bits).0;
            }
            let q1 = cpu_now();
            for _ in 0..n {
                quant::decode(&enc, &mut back).expect("decode");
            }
            let q2 = cpu_now();
            println!(
                "int{bits} on the same chunk: encode {:.0} MB/s, decode {:.0} MB/s",
                mb / (q1 - q0),
                mb / (q2 - q1)
            );
        }
        println!(
            "one chunk of {} bytes x{n}: encode {:.0} MB/s, decode {:.0} MB/s",
            c.len(),
            mb / (t1 - t0),
            mb / (t2 - t1)
        );
        return;
    }
    let count: usize = ts.iter().map(|t| t.data.len() / t.layout.bytes()).sum();
    println!(
        "{path}: {} 2-D float tensors, {count} values, G = {group}, chunks of {chunk} bytes",
        ts.len()
    );
    for &m in &ms {
        let mut tally = Tally::default();
        for t in &ts {
            let p = bfp::Params {
                mantissa_bits: m.min(bfp::max_mantissa_bits(t.layout)),
                group_size: group,
            };
            for c in chunks(t, chunk) {
                let t0 = cpu_now();
                let (enc, bits) = bfp::encode(t.layout, c, t.row, p);
                let t1 = cpu_now();
                let mut back = vec![0u8; c.len()];
                bfp::decode(&enc, &mut back).expect("decode");
                let t2 = cpu_now();
                tally.enc_s += t1 - t0;
                tally.dec_s += t2 - t1;
                tally.bytes += enc.len();
                tally.entropy += bits;
                tally.add(t.layout, c, &back);
            }
        }
        tally.line(&format!("BFP M={m}"));
    }
    if args.iter().any(|a| a == "--int") {
        for bits in [16u32, 32] {
            let mut tally = Tally::default();
            for t in &ts {
                let max = values(t.layout, &t.data)
                    .iter()
                    .filter(|x| x.is_finite())
                    .fold(0f64, |a, x| a.max(x.abs()));
                let step = grid::step_for(max, bits);
                for c in chunks(t, chunk) {
                    let t0 = cpu_now();
                    let (enc, eb) = quant::encode(t.layout, c, step, bits);
                    let t1 = cpu_now();
                    let mut back = vec![0u8; c.len()];
                    quant::decode(&enc, &mut back).expect("decode");
                    let t2 = cpu_now();
                    tally.enc_s += t1 - t0;
                    tally.dec_s += t2 - t1;
                    tally.bytes += enc.len();
                    tally.entropy += eb;
                    tally.add(t.layout, c, &back);
                }
            }
            tally.line(&format!("int{bits}"));
        }
    }
}
