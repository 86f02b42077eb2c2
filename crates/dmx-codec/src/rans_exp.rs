#![allow(dead_code, clippy::all)]
use crate::float::{self, Analysis};
use crate::{FloatLayout, split};

fn norm(counts: &[u64], pb: u32) -> Vec<u64> {
    let total: u64 = counts.iter().sum();
    let t = 1u64 << pb;
    let mut f: Vec<u64> = counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0
            } else {
                ((c as f64 * t as f64 / total as f64).round() as u64).max(1)
            }
        })
        .collect();
    let mut s: i64 = f.iter().sum::<u64>() as i64 - t as i64;
    while s != 0 {
        // adjust the symbol whose change costs least
        let mut best = None;
        let mut bc = f64::MAX;
        for (i, &c) in counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if s > 0 && f[i] <= 1 {
                continue;
            }
            let nf = if s > 0 { f[i] - 1 } else { f[i] + 1 } as f64;
            let cost = c as f64 * ((f[i] as f64) / nf).log2();
            if cost < bc {
                bc = cost;
                best = Some(i);
            }
        }
        let i = best.unwrap();
        if s > 0 {
            f[i] -= 1;
            s -= 1
        } else {
            f[i] += 1;
            s += 1
        }
    }
    f
}
fn norm_desc(counts: &[u64], pb: u32, scale: f64) -> (Vec<u64>, usize) {
    // descriptors on a 1/scale-octave grid, then normalized to 2^pb
    let max = *counts.iter().max().unwrap() as f64;
    let desc: Vec<u8> = counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0
            } else {
                (104.0 + scale * (c as f64 / max).log2())
                    .round()
                    .clamp(1.0, 104.0) as u8
            }
        })
        .collect();
    let mut bv = crate::bits::BitVec::default();
    crate::entropy::rans::write(&desc, &mut bv);
    let bytes = bv.finish().len();
    let w: Vec<f64> = desc
        .iter()
        .map(|&d| {
            if d == 0 {
                0.0
            } else {
                2f64.powf((d as f64 - 104.0) / scale)
            }
        })
        .collect();
    let tot: f64 = w.iter().sum();
    let pseudo: Vec<u64> = w
        .iter()
        .map(|&x| (x / tot * 1e9).round() as u64 + if x > 0.0 { 1 } else { 0 })
        .collect();
    (norm(&pseudo, pb), bytes)
}
fn xent(counts: &[u64], f: &[u64], pb: u32) -> f64 {
    counts
        .iter()
        .zip(f)
        .filter(|(c, _)| **c > 0)
        .map(|(&c, &f)| c as f64 * (pb as f64 - (f as f64).log2()))
        .sum()
}

#[test]
#[ignore]
fn rans_gain() {
    let root = std::path::Path::new("/work/tmp/rx/out");
    let mut dirs: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for d in dirs {
        let mut files: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let (mut raw, mut huff, mut ent) = (0usize, 0f64, 0f64);
        let mut r = [0f64; 5];
        let mut rw = [0f64; 5];
        for f in files {
            let data = std::fs::read(&f).unwrap();
            for ch in data.chunks(1 << 20) {
                if ch.len() < 64 {
                    raw += ch.len();
                    huff += ch.len() as f64;
                    ent += ch.len() as f64;
                    for k in 0..5 {
                        r[k] += ch.len() as f64;
                        rw[k] += ch.len() as f64;
                    }
                    continue;
                }
                raw += ch.len();
                let a = Analysis::new(FloatLayout::BF16, ch);
                let p = split::best_plan(&a, Some(ch));
                huff += p.size as f64;
                ent += p.entropy_bits / 8.0;
                let n = a.count();
                for (k, pb) in [11u32, 12, 13, 14, 15].iter().enumerate() {
                    // at plan's w
                    let hist = a.symbol_hist(p.sym_bits);
                    let used = hist.iter().filter(|&&c| c > 0).count();
                    let resid = (n * (16 - p.sym_bits - p.tz) as usize).div_ceil(8);
                    let _ = used;
                    let (f, tb) = norm_desc(&hist, *pb, 8.0);
                    let cost =
                        xent(&hist, &f, *pb) / 8.0 + 8.0 + tb as f64 + 4.0 * 4.0 + resid as f64;
                    r[k] += cost.min(p.size as f64);
                    // best over w
                    let mut best = p.size as f64;
                    for w in 9..=a.hist_bits() {
                        let hist = a.symbol_hist(w);
                        let used = hist.iter().filter(|&&c| c > 0).count();
                        let tz = a.trailing_zeros().min(16 - w);
                        let resid = (n * (16 - w - tz) as usize).div_ceil(8);
                        let _ = used;
                        let (f, tb) = norm_desc(&hist, *pb, 8.0);
                        let cost =
                            xent(&hist, &f, *pb) / 8.0 + 8.0 + tb as f64 + 16.0 + resid as f64;
                        best = best.min(cost);
                    }
                    rw[k] += best;
                }
            }
        }
        println!(
            "{:?}: raw {} huff {:.0} ent {:.0} (huff-ent {:.3}% of huff)",
            d.file_name().unwrap(),
            raw,
            huff,
            ent,
            100.0 * (huff - ent) / huff
        );
        for (k, pb) in [11u32, 12, 13, 14, 15].iter().enumerate() {
            println!(
                "  pb {pb}: rans@w {:.0} ({:+.3}%)  best w {:.0} ({:+.3}%)",
                r[k],
                100.0 * (r[k] - huff) / huff,
                rw[k],
                100.0 * (rw[k] - huff) / huff
            );
        }
    }
    let _ = float::entropy(&[1]);
}

fn enc32(syms: &[usize], f: &[u64], pb: u32, lanes: usize) -> usize {
    let mut cum = vec![0u64; f.len()];
    let mut c = 0;
    for i in 0..f.len() {
        cum[i] = c;
        c += f[i];
    }
    let mut x = vec![1u64 << 16; lanes];
    let mut words = 0;
    for (i, &s) in syms.iter().enumerate().rev() {
        let st = &mut x[i % lanes];
        let xmax = (1u64 << (32 - pb)) * f[s];
        if *st >= xmax {
            *st >>= 16;
            words += 1;
        }
        *st = (*st / f[s] << pb) + *st % f[s] + cum[s];
    }
    words * 2 + 4 * lanes
}
fn enc64(syms: &[usize], f: &[u64], pb: u32, lanes: usize) -> usize {
    let mut cum = vec![0u64; f.len()];
    let mut c = 0;
    for i in 0..f.len() {
        cum[i] = c;
        c += f[i];
    }
    let mut x = vec![1u64 << 31; lanes];
    let mut words = 0;
    for (i, &s) in syms.iter().enumerate().rev() {
        let st = &mut x[i % lanes];
        let xmax = (1u64 << (63 - pb)) * f[s];
        if *st >= xmax {
            *st >>= 32;
            words += 1;
        }
        *st = (*st / f[s] << pb) + *st % f[s] + cum[s];
    }
    words * 4 + 8 * lanes
}

#[test]
#[ignore]
fn rans_overhead() {
    for tag in ["effnet", "minilm_c"] {
        let d = std::path::Path::new("/work/tmp/rx/out").join(tag);
        let mut files: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let (mut ideal, mut a32, mut a64) = (0f64, 0usize, 0usize);
        for f in files.iter().take(60) {
            let data = std::fs::read(f).unwrap();
            for ch in data.chunks(1 << 20) {
                if ch.len() < 4096 {
                    continue;
                }
                let a = Analysis::new(FloatLayout::BF16, ch);
                let p = split::best_plan(&a, Some(ch));
                let hist = a.symbol_hist(p.sym_bits);
                let (fr, _) = norm_desc(&hist, 14, 8.0);
                let syms: Vec<usize> = ch
                    .chunks_exact(2)
                    .map(|v| (u16::from_le_bytes([v[0], v[1]]) >> (16 - p.sym_bits)) as usize)
                    .collect();
                ideal += xent(&hist, &fr, 14) / 8.0;
                a32 += enc32(&syms, &fr, 14, 8);
                a64 += enc64(&syms, &fr, 14, 8);
            }
        }
        println!(
            "{tag}: ideal {ideal:.0} r32/16 {a32} ({:+.3}%) r64/32 {a64} ({:+.3}%)",
            100.0 * (a32 as f64 - ideal) / ideal,
            100.0 * (a64 as f64 - ideal) / ideal
        );
    }
}
