//! The error of decoded values against the originals ([`ErrorAcc`]).

use dmx_codec::FloatLayout;
use dmx_format::{ErrorStats, ValueErrors};

/// Running error of decoded values against the originals.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ErrorAcc {
    sum_sq_err: f64,
    sum_sq: f64,
    sum_sq_decoded: f64,
    dot: f64,
    sum_abs_err: f64,
    max_abs: f64,
    /// Largest `|x − x̂| / |x|` over finite non-zero originals.
    max_rel: f64,
    /// Finite non-zero originals.
    nonzero: u64,
    /// Of those, the values restored as zero.
    zeroed: u64,
    count: u64,
    /// Values whose bits are identical (NaN included).
    pub(crate) identical: u64,
    /// Values compared (NaN included).
    pub(crate) values: u64,
}

impl ErrorAcc {
    /// Accumulates the error of `decoded` against `original` (both little-endian `layout`).
    /// Values that are NaN in the original are skipped (they are stored exactly).
    pub(crate) fn add(&mut self, layout: FloatLayout, original: &[u8], decoded: &[u8]) {
        self.add_terms::<true>(layout, original, decoded);
    }

    /// [`ErrorAcc::add`] of the figures an index record holds ([`ErrorAcc::stats`],
    /// [`ErrorAcc::rel_l2`], [`ErrorAcc::sum_sq_err`]): without the terms of
    /// [`ErrorAcc::cosine`] (the dot product and the norm of the decoded values), which stay
    /// 0: what the writer needs. Every figure it does sum is bit for bit [`ErrorAcc::add`]'s.
    pub(crate) fn add_recorded(&mut self, layout: FloatLayout, original: &[u8], decoded: &[u8]) {
        self.add_terms::<false>(layout, original, decoded);
    }

    fn add_terms<const COSINE: bool>(
        &mut self,
        layout: FloatLayout,
        original: &[u8],
        decoded: &[u8],
    ) {
        // Monomorphized per layout with a cheap conversion: this runs over every value of
        // every lossy tensor (and of every candidate in auto mode).
        if layout == FloatLayout::BF16 {
            self.add_with::<2, COSINE>(original, decoded, |r| {
                f64::from(f32::from_bits(u32::from(u16::from_le_bytes(r)) << 16))
            });
        } else if layout == FloatLayout::F16 {
            let lut = f16_table();
            self.add_with::<2, COSINE>(original, decoded, |r| {
                f64::from(lut[usize::from(u16::from_le_bytes(r))])
            });
        } else if layout == FloatLayout::F32 {
            self.add_with::<4, COSINE>(original, decoded, |r| f64::from(f32::from_le_bytes(r)));
        } else {
            self.add_with::<8, COSINE>(original, decoded, f64::from_le_bytes);
        }
    }

    /// The sum of squared errors so far.
    pub(crate) fn sum_sq_err(&self) -> f64 {
        self.sum_sq_err
    }

    #[inline(always)]
    fn add_with<const W: usize, const COSINE: bool>(
        &mut self,
        original: &[u8],
        decoded: &[u8],
        conv: impl Fn([u8; W]) -> f64,
    ) {
        // The sums run in the same order and with the same operations as one value at a
        // time; the counts that follow from others are derived once per call: every pair is
        // a value, every original but NaN a counted one.
        let mut a_ = *self;
        let mut nan = 0u64;
        let mut pairs = 0u64;
        for (a, b) in original.chunks_exact(W).zip(decoded.chunks_exact(W)) {
            let (a, b): ([u8; W], [u8; W]) = (
                a.try_into().expect("chunks_exact"),
                b.try_into().expect("chunks_exact"),
            );
            pairs += 1;
            let x = conv(a);
            if a == b {
                // Restored exactly: the error terms are +0.0, which leave their (non-negative)
                // sums and maxima as they are, so only the norms move (the same products
                // added in the same order). NaN is skipped and ±Inf adds nothing, as below.
                a_.identical += 1;
                if x.is_nan() {
                    nan += 1;
                } else if x.is_finite() {
                    let p = x * x;
                    if COSINE {
                        a_.dot += p;
                        a_.sum_sq_decoded += p;
                    }
                    a_.sum_sq += p;
                    a_.nonzero += u64::from(x != 0.0);
                }
                continue;
            }
            let y = conv(b);
            let d = x - y;
            // Both finite: for 16- and 32-bit values (far from the f64 range) exactly when
            // their difference is.
            let finite = if W < 8 {
                d.is_finite()
            } else {
                x.is_finite() && y.is_finite()
            };
            if finite {
                // The common case, straight-line.
                let e = d.abs();
                if COSINE {
                    a_.dot += x * y;
                    a_.sum_sq_decoded += y * y;
                }
                a_.sum_sq += x * x;
                a_.sum_sq_err += e * e;
                a_.sum_abs_err += e;
                if e > a_.max_abs {
                    a_.max_abs = e;
                }
                if x != 0.0 {
                    a_.nonzero += 1;
                    a_.zeroed += u64::from(y == 0.0);
                    // Rarely taken: no division per value.
                    if e > a_.max_rel * x.abs() {
                        a_.max_rel = e / x.abs();
                    }
                }
                continue;
            }
            if x.is_nan() {
                nan += 1;
                continue;
            }
            if COSINE && x.is_finite() && y.is_finite() {
                a_.dot += x * y;
                a_.sum_sq_decoded += y * y;
            }
            let e = if x == y { 0.0 } else { (x - y).abs() };
            let e = if e.is_nan() { f64::INFINITY } else { e };
            if x.is_finite() {
                a_.sum_sq += x * x;
            }
            a_.sum_sq_err += e * e;
            a_.sum_abs_err += e;
            a_.max_abs = a_.max_abs.max(e);
            if x.is_finite() && x != 0.0 {
                // The original is finite and the restored value is not (or NaN).
                a_.nonzero += 1;
                a_.max_rel = f64::INFINITY;
            }
        }
        a_.values += pairs;
        a_.count += pairs - nan;
        *self = a_;
    }

    pub(crate) fn merge(&mut self, o: &ErrorAcc) {
        self.sum_sq_err += o.sum_sq_err;
        self.sum_sq += o.sum_sq;
        self.sum_sq_decoded += o.sum_sq_decoded;
        self.dot += o.dot;
        self.identical += o.identical;
        self.values += o.values;
        self.sum_abs_err += o.sum_abs_err;
        self.max_abs = self.max_abs.max(o.max_abs);
        self.max_rel = self.max_rel.max(o.max_rel);
        self.nonzero += o.nonzero;
        self.zeroed += o.zeroed;
        self.count += o.count;
    }

    /// Relative L2 error: 0 when exact, +Inf when the original is all zero but the decoded
    /// values are not.
    pub(crate) fn rel_l2(&self) -> f64 {
        if self.sum_sq_err == 0.0 {
            0.0
        } else if self.sum_sq == 0.0 {
            f64::INFINITY
        } else {
            (self.sum_sq_err / self.sum_sq).sqrt()
        }
    }

    /// Cosine similarity of the original and decoded values: 1 when both are all zero, 0 when
    /// only one is.
    pub(crate) fn cosine(&self) -> f64 {
        match (self.sum_sq == 0.0, self.sum_sq_decoded == 0.0) {
            (true, true) => 1.0,
            (true, false) | (false, true) => 0.0,
            (false, false) => {
                (self.dot / (self.sum_sq.sqrt() * self.sum_sq_decoded.sqrt())).clamp(-1.0, 1.0)
            }
        }
    }

    pub(crate) fn stats(&self) -> ErrorStats {
        ErrorStats {
            max_abs: self.max_abs,
            mean_abs: if self.count == 0 {
                0.0
            } else {
                self.sum_abs_err / self.count as f64
            },
            rel_l2: self.rel_l2(),
            snr_db: if self.sum_sq_err == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (self.sum_sq / self.sum_sq_err).log10()
            },
            values: Some(ValueErrors {
                max_rel: self.max_rel,
                nonzero: self.nonzero,
                zeroed: self.zeroed,
            }),
        }
    }
}

/// Every IEEE half value as an `f32` (exact), built once.
pub(super) fn f16_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|b| half::f16::from_bits(b).to_f32())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_of_exact_and_zero_tensors() {
        let mut e = ErrorAcc::default();
        let z = [0u8; 8];
        e.add(FloatLayout::F32, &z, &z);
        assert_eq!(e.rel_l2(), 0.0);
        assert_eq!(e.stats().snr_db, f64::INFINITY);
        assert_eq!(e.cosine(), 1.0);
        assert_eq!(e.identical, 2);
        let one = 1.0f32.to_le_bytes();
        let mut e = ErrorAcc::default();
        e.add(FloatLayout::F32, &z[..4], &one);
        assert_eq!(e.rel_l2(), f64::INFINITY);
        assert_eq!(e.cosine(), 0.0);
        let mut e = ErrorAcc::default();
        e.add(FloatLayout::F32, &2.0f32.to_le_bytes(), &one);
        assert_eq!(e.rel_l2(), 0.5);
        assert_eq!(e.stats().max_abs, 1.0);
        assert_eq!(e.stats().values.unwrap().max_rel, 0.5);
    }

    /// The one-value-at-a-time accumulation of earlier versions: the sums and counts
    /// [`ErrorAcc::add`] must reproduce bit for bit.
    fn reference(s: &mut ErrorAcc, layout: FloatLayout, original: &[u8], decoded: &[u8]) {
        let w = layout.bytes();
        let conv = |r: &[u8]| dmx_codec::grid::to_f64(layout, crate::lossy::raw(r));
        for (a, b) in original.chunks_exact(w).zip(decoded.chunks_exact(w)) {
            s.values += 1;
            if a == b {
                s.identical += 1;
            }
            let (x, y) = (conv(a), conv(b));
            if x.is_finite() && y.is_finite() {
                let e = (x - y).abs();
                s.dot += x * y;
                s.sum_sq_decoded += y * y;
                s.sum_sq += x * x;
                s.sum_sq_err += e * e;
                s.sum_abs_err += e;
                if e > s.max_abs {
                    s.max_abs = e;
                }
                s.count += 1;
                if x != 0.0 {
                    s.nonzero += 1;
                    s.zeroed += u64::from(y == 0.0);
                    if e > s.max_rel * x.abs() {
                        s.max_rel = e / x.abs();
                    }
                }
                continue;
            }
            if x.is_nan() {
                continue;
            }
            if x.is_finite() && y.is_finite() {
                s.dot += x * y;
                s.sum_sq_decoded += y * y;
            }
            let e = if x == y { 0.0 } else { (x - y).abs() };
            let e = if e.is_nan() { f64::INFINITY } else { e };
            if x.is_finite() {
                s.sum_sq += x * x;
            }
            s.sum_sq_err += e * e;
            s.sum_abs_err += e;
            s.max_abs = s.max_abs.max(e);
            s.count += 1;
            if x.is_finite() && x != 0.0 {
                s.nonzero += 1;
                s.max_rel = f64::INFINITY;
            }
        }
    }

    /// Bit for bit the reference on random bits (NaN, Inf, subnormals included) and on close
    /// pairs, for every layout.
    #[test]
    fn add_is_the_reference() {
        let mut rng = dmx_testkit::Rng(0x2545_F491_4F6C_DD1D);
        let mut next = move || rng.next_u64();
        for layout in [
            FloatLayout::BF16,
            FloatLayout::F16,
            FloatLayout::F32,
            FloatLayout::F64,
        ] {
            let w = layout.bytes();
            for case in 0..3 {
                let orig: Vec<u8> = (0..5000 * w).map(|_| next() as u8).collect();
                let dec: Vec<u8> = match case {
                    0 => (0..5000 * w).map(|_| next() as u8).collect(),
                    1 => orig.clone(),
                    // The low byte of each value changed: close values.
                    _ => orig
                        .iter()
                        .enumerate()
                        .map(|(i, &b)| {
                            if i % w == 0 {
                                b ^ (next() as u8 & 7)
                            } else {
                                b
                            }
                        })
                        .collect(),
                };
                let mut got = ErrorAcc::default();
                got.add(layout, &orig[..2000 * w], &dec[..2000 * w]);
                got.add(layout, &orig[2000 * w..], &dec[2000 * w..]);
                let mut want = ErrorAcc::default();
                reference(&mut want, layout, &orig[..2000 * w], &dec[..2000 * w]);
                reference(&mut want, layout, &orig[2000 * w..], &dec[2000 * w..]);
                let bits = |e: &ErrorAcc| {
                    (
                        [
                            e.sum_sq_err,
                            e.sum_sq,
                            e.sum_sq_decoded,
                            e.dot,
                            e.sum_abs_err,
                            e.max_abs,
                            e.max_rel,
                        ]
                        .map(f64::to_bits),
                        [e.nonzero, e.zeroed, e.count, e.identical, e.values],
                    )
                };
                assert_eq!(bits(&got), bits(&want), "{layout:?} case {case}");
                let mut rec = ErrorAcc::default();
                rec.add_recorded(layout, &orig[..2000 * w], &dec[..2000 * w]);
                rec.add_recorded(layout, &orig[2000 * w..], &dec[2000 * w..]);
                rec.dot = want.dot;
                rec.sum_sq_decoded = want.sum_sq_decoded;
                assert_eq!(bits(&rec), bits(&want), "recorded {layout:?} case {case}");
            }
        }
    }

    /// Per-value errors: the largest relative error over non-zero originals and the count of
    /// non-zero values restored as zero, which the norms hide.
    #[test]
    fn per_value_errors() {
        let f = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mut e = ErrorAcc::default();
        e.add(
            FloatLayout::F32,
            &f(&[1000.0, 1e-6, 0.0, -2.0, 3.0]),
            &f(&[1000.0, 0.0, 0.0, -2.5, 3.0]),
        );
        let v = e.stats().values.unwrap();
        assert_eq!((v.nonzero, v.zeroed), (4, 1));
        assert_eq!(v.max_rel, 1.0);
        assert!(e.rel_l2() < 1e-3, "the norm hides both");
        let mut other = ErrorAcc::default();
        other.add(FloatLayout::F32, &f(&[4.0]), &f(&[f32::INFINITY]));
        e.merge(&other);
        let v = e.stats().values.unwrap();
        assert_eq!((v.nonzero, v.zeroed), (5, 1));
        assert_eq!(v.max_rel, f64::INFINITY);
    }
}
