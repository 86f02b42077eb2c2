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
        self.add_terms::<true, false>(layout, original, decoded);
    }

    /// [`ErrorAcc::add`] of the figures an index record holds ([`ErrorAcc::stats`],
    /// [`ErrorAcc::rel_l2`], [`ErrorAcc::sum_sq_err`]): without the terms of
    /// [`ErrorAcc::cosine`] (the dot product and the norm of the decoded values), which stay
    /// 0: what the writer needs. Every figure it does sum is bit for bit [`ErrorAcc::add`]'s.
    pub(crate) fn add_recorded(&mut self, layout: FloatLayout, original: &[u8], decoded: &[u8]) {
        self.add_terms::<false, false>(layout, original, decoded);
    }

    /// [`ErrorAcc::add_recorded`] of values restored exactly (`decoded == original`), bit for
    /// bit the same figures, in a lighter pass: only the norm and the counts move (a lossy
    /// writer's chunks kept exactly still count in their tensor's norm).
    pub(crate) fn add_exact(&mut self, layout: FloatLayout, original: &[u8]) {
        self.add_terms::<false, true>(layout, original, original);
    }

    /// `EXACT`: `decoded` is `original`, and the blocks take [`Lanes::add_blocks_exact`].
    fn add_terms<const COSINE: bool, const EXACT: bool>(
        &mut self,
        layout: FloatLayout,
        original: &[u8],
        decoded: &[u8],
    ) {
        // Monomorphized per layout with a cheap conversion: this runs over every value of
        // every lossy tensor (and of every candidate in auto mode).
        if layout == FloatLayout::BF16 {
            self.add_with::<2, COSINE, EXACT>(original, decoded, |r| {
                f64::from(f32::from_bits(u32::from(u16::from_le_bytes(r)) << 16))
            });
        } else if layout == FloatLayout::F16 {
            let lut = f16_table();
            self.add_with::<2, COSINE, EXACT>(original, decoded, |r| {
                f64::from(lut[usize::from(u16::from_le_bytes(r))])
            });
        } else if layout == FloatLayout::F32 {
            self.add_with::<4, COSINE, EXACT>(original, decoded, |r| {
                f64::from(f32::from_le_bytes(r))
            });
        } else {
            self.add_with::<8, COSINE, EXACT>(original, decoded, f64::from_le_bytes);
        }
    }

    /// The sum of squared errors so far.
    pub(crate) fn sum_sq_err(&self) -> f64 {
        self.sum_sq_err
    }

    /// Accumulates pairs of `W`-byte values converted by `conv`: blocks of [`LANES`] values
    /// whose differences are all finite go through [`Lanes`] (branch-free, vectorised on
    /// CPUs that have AVX2), the rest one value at a time.
    /// With `EXACT` (`decoded` is `original`) the blocks take [`Lanes::add_blocks_exact`]:
    /// the same sums in the same order.
    #[inline(always)]
    fn add_with<const W: usize, const COSINE: bool, const EXACT: bool>(
        &mut self,
        original: &[u8],
        decoded: &[u8],
        conv: impl Fn([u8; W]) -> f64 + Copy,
    ) {
        let level = dmx_codec::cpu::Level::detected();
        let mut a_ = *self;
        let blocks = if W < 8 {
            let mut lanes = Lanes::default();
            let n = dmx_codec::cpu::dispatch(
                level,
                #[inline(always)]
                || {
                    if EXACT {
                        lanes.add_blocks_exact::<W>(&mut a_, original, conv)
                    } else {
                        lanes.add_blocks::<W, COSINE>(&mut a_, original, decoded, conv)
                    }
                },
            );
            lanes.fold_into(&mut a_);
            n
        } else {
            0
        };
        let done = blocks * LANES * W;
        a_.add_each::<W, COSINE>(&original[done..], &decoded[done..], conv);
        *self = a_;
    }

    /// One value at a time: every case, NaN and ±Inf included.
    #[inline(always)]
    fn add_each<const W: usize, const COSINE: bool>(
        &mut self,
        original: &[u8],
        decoded: &[u8],
        conv: impl Fn([u8; W]) -> f64,
    ) {
        // The counts that follow from others are derived once per call: every pair is a
        // value, every original but NaN a counted one.
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
                // sums and maxima as they are, so only the norms move. NaN is skipped and
                // ±Inf adds nothing, as below.
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

/// Values per block of [`Lanes`].
const LANES: usize = 8;

/// The figures of [`ErrorAcc`] per lane: value `i` of a block goes to lane `i`, so they
/// form independent chains the compiler keeps in vector registers (a sum in value order is
/// one chain of dependent additions, which bounded this pass). The lanes' sums are added to
/// the accumulator in lane order when the call ends: a fixed order, so the figures are the
/// same on every CPU level and every run, within rounding of one value at a time.
/// `max_rel`, whose updates compare with the running value, is kept in the accumulator.
#[derive(Clone, Copy, Default)]
struct Lanes {
    sum_sq_err: [f64; LANES],
    sum_sq: [f64; LANES],
    sum_sq_decoded: [f64; LANES],
    dot: [f64; LANES],
    sum_abs_err: [f64; LANES],
    max_abs: [f64; LANES],
    nonzero: [u64; LANES],
    zeroed: [u64; LANES],
    identical: [u64; LANES],
    /// Values added (all of them finite, none NaN).
    values: u64,
}

impl Lanes {
    /// Adds the whole blocks of `LANES` pairs; a block with a non-finite difference (NaN or
    /// ±Inf on either side) goes to `acc` one value at a time. Returns the number of blocks.
    #[inline(always)]
    fn add_blocks<const W: usize, const COSINE: bool>(
        &mut self,
        acc: &mut ErrorAcc,
        original: &[u8],
        decoded: &[u8],
        conv: impl Fn([u8; W]) -> f64 + Copy,
    ) -> usize {
        // On a local copy, kept in registers: updated through `self`, every block stored the
        // figures and loaded them back (a chain through memory that bounded the loop).
        let mut s = *self;
        let mut blocks = 0;
        let mut finite_blocks = 0u64;
        for (a, b) in original
            .chunks_exact(LANES * W)
            .zip(decoded.chunks_exact(LANES * W))
        {
            blocks += 1;
            let mut x = [0f64; LANES];
            let mut y = [0f64; LANES];
            let mut same = [0u64; LANES];
            for l in 0..LANES {
                let ra: [u8; W] = a[l * W..(l + 1) * W].try_into().expect("W bytes");
                let rb: [u8; W] = b[l * W..(l + 1) * W].try_into().expect("W bytes");
                same[l] = u64::from(ra == rb);
                x[l] = conv(ra);
                y[l] = conv(rb);
            }
            let mut finite = true;
            for l in 0..LANES {
                finite &= (x[l] - y[l]).is_finite();
            }
            if !finite {
                acc.add_each::<W, COSINE>(a, b, conv);
                continue;
            }
            // Per lane, branch-free: the terms, the maxima and the counts. An exactly
            // restored value has the error terms +0.0, which leave the (non-negative) sums
            // and maxima as they are: the same as skipping them.
            let mut e = [0f64; LANES];
            let mut xx = [0f64; LANES];
            let mut rel = false;
            for l in 0..LANES {
                e[l] = (x[l] - y[l]).abs();
                xx[l] = x[l] * x[l];
                s.max_abs[l] = if e[l] > s.max_abs[l] {
                    e[l]
                } else {
                    s.max_abs[l]
                };
                let nz = x[l] != 0.0;
                s.nonzero[l] += u64::from(nz);
                s.zeroed[l] += u64::from(nz & (y[l] == 0.0));
                s.identical[l] += same[l];
                rel |= nz & (e[l] > acc.max_rel * x[l].abs());
            }
            for l in 0..LANES {
                if COSINE {
                    s.dot[l] += x[l] * y[l];
                    s.sum_sq_decoded[l] += y[l] * y[l];
                }
                s.sum_sq[l] += xx[l];
                s.sum_sq_err[l] += e[l] * e[l];
                s.sum_abs_err[l] += e[l];
            }
            if rel {
                // Rarely: a value raises the largest relative error.
                for l in 0..LANES {
                    if x[l] != 0.0 && e[l] > acc.max_rel * x[l].abs() {
                        acc.max_rel = e[l] / x[l].abs();
                    }
                }
            }
            finite_blocks += 1;
        }
        s.values += finite_blocks * LANES as u64;
        *self = s;
        blocks
    }

    /// [`Lanes::add_blocks`] of `original` against itself: a finite value adds its square to
    /// its lane's norm and counts as identical (and non-zero when it is), the error terms
    /// stay +0.0; a block with a non-finite value goes to `acc` one value at a time.
    #[inline(always)]
    fn add_blocks_exact<const W: usize>(
        &mut self,
        acc: &mut ErrorAcc,
        original: &[u8],
        conv: impl Fn([u8; W]) -> f64 + Copy,
    ) -> usize {
        // On a local copy, as in `add_blocks`.
        let mut s = *self;
        let mut blocks = 0;
        let mut finite_blocks = 0u64;
        for a in original.chunks_exact(LANES * W) {
            blocks += 1;
            let mut x = [0f64; LANES];
            let mut finite = true;
            for (l, x) in x.iter_mut().enumerate() {
                *x = conv(a[l * W..(l + 1) * W].try_into().expect("W bytes"));
                // `add_blocks`' test of the difference `x − x`, finite exactly when `x` is.
                finite &= x.is_finite();
            }
            if !finite {
                acc.add_each::<W, false>(a, a, conv);
                continue;
            }
            for (l, &x) in x.iter().enumerate() {
                s.nonzero[l] += u64::from(x != 0.0);
                s.identical[l] += 1;
                s.sum_sq[l] += x * x;
            }
            finite_blocks += 1;
        }
        s.values += finite_blocks * LANES as u64;
        *self = s;
        blocks
    }

    /// Adds the lanes' sums, maxima and counts to `acc`, in lane order.
    fn fold_into(&self, acc: &mut ErrorAcc) {
        for l in 0..LANES {
            acc.sum_sq_err += self.sum_sq_err[l];
            acc.sum_sq += self.sum_sq[l];
            acc.sum_sq_decoded += self.sum_sq_decoded[l];
            acc.dot += self.dot[l];
            acc.sum_abs_err += self.sum_abs_err[l];
            acc.max_abs = acc.max_abs.max(self.max_abs[l]);
            acc.nonzero += self.nonzero[l];
            acc.zeroed += self.zeroed[l];
            acc.identical += self.identical[l];
        }
        acc.values += self.values;
        acc.count += self.values;
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

    /// The one-value-at-a-time accumulation of earlier versions: [`ErrorAcc::add`] must
    /// reproduce its counts and maxima bit for bit and its sums within rounding.
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
    /// The same figures, bit for bit, on every CPU level (the block path runs compiled for
    /// the detected one).
    #[test]
    fn every_cpu_level_measures_alike() {
        use dmx_codec::cpu::{Level, with_level};
        let mut rng = dmx_testkit::Rng(0x9E37_79B9_7F4A_7C15);
        for layout in [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32] {
            let w = layout.bytes();
            let orig: Vec<u8> = (0..4099 * w).map(|_| rng.next_u64() as u8).collect();
            let dec: Vec<u8> = orig
                .iter()
                .enumerate()
                .map(|(i, &b)| if i % w == 0 { b ^ (i as u8 & 3) } else { b })
                .collect();
            let run = |level| {
                with_level(level, || {
                    let mut e = ErrorAcc::default();
                    e.add(layout, &orig, &dec);
                    e.add_recorded(layout, &dec, &orig);
                    bits(&e)
                })
            };
            let want = run(Level::SCALAR);
            for level in Level::available() {
                assert_eq!(run(level), want, "{layout:?} {level:?}");
            }
        }
    }

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
                assert_same(&got, &want, &format!("{layout:?} case {case}"));
                let mut rec = ErrorAcc::default();
                rec.add_recorded(layout, &orig[..2000 * w], &dec[..2000 * w]);
                rec.add_recorded(layout, &orig[2000 * w..], &dec[2000 * w..]);
                assert_eq!((rec.dot, rec.sum_sq_decoded), (0.0, 0.0));
                rec.dot = got.dot;
                rec.sum_sq_decoded = got.sum_sq_decoded;
                assert_eq!(bits(&rec), bits(&got), "recorded {layout:?} case {case}");
            }
        }
    }

    /// `add_exact` gives bit for bit what `add_recorded` of the values against themselves
    /// gives, on random bits (NaN, ±Inf, ±0, subnormals), on every layout, on every CPU level,
    /// and after other values were added.
    #[test]
    fn add_exact_is_add_recorded_of_the_same_values() {
        use dmx_codec::cpu::{Level, with_level};
        let mut rng = dmx_testkit::Rng(0x5851_F42D_4C95_7F2D);
        for layout in [
            FloatLayout::BF16,
            FloatLayout::F16,
            FloatLayout::F32,
            FloatLayout::F64,
        ] {
            let w = layout.bytes();
            let mut orig: Vec<u8> = (0..3001 * w).map(|_| rng.next_u64() as u8).collect();
            // A run of zeros (+0 and −0) and a stretch of small finite values.
            orig[40 * w..80 * w].fill(0);
            orig[80 * w + w - 1] = 0x80;
            for v in orig[200 * w..1200 * w].chunks_exact_mut(w) {
                v[w - 1] &= 0x3f;
            }
            let first: Vec<u8> = (0..17 * w).map(|_| rng.next_u64() as u8).collect();
            for level in Level::available() {
                let (got, want) = with_level(level, || {
                    let mut got = ErrorAcc::default();
                    let mut want = ErrorAcc::default();
                    got.add_recorded(layout, &first, &orig[..17 * w]);
                    want.add_recorded(layout, &first, &orig[..17 * w]);
                    for part in [&orig[..1000 * w], &orig[1000 * w..]] {
                        got.add_exact(layout, part);
                        want.add_recorded(layout, part, part);
                    }
                    (bits(&got), bits(&want))
                });
                assert_eq!(got, want, "{layout:?} {level:?}");
            }
        }
    }

    fn bits(e: &ErrorAcc) -> ([u64; 7], [u64; 5]) {
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
    }

    /// Counts and `max_abs` exact, sums and `max_rel` within rounding of a different order.
    fn assert_same(got: &ErrorAcc, want: &ErrorAcc, what: &str) {
        let (g, w) = (bits(got), bits(want));
        assert_eq!(g.1, w.1, "counts, {what}");
        assert_eq!(
            got.max_abs.to_bits(),
            want.max_abs.to_bits(),
            "max_abs, {what}"
        );
        let sums = [
            (got.sum_sq_err, want.sum_sq_err),
            (got.sum_sq, want.sum_sq),
            (got.sum_sq_decoded, want.sum_sq_decoded),
            (got.dot, want.dot),
            (got.sum_abs_err, want.sum_abs_err),
            (got.max_rel, want.max_rel),
        ];
        for (k, (a, b)) in sums.into_iter().enumerate() {
            let ok = a == b
                || (a.is_nan() && b.is_nan())
                || (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
            assert!(ok, "sum {k}: {a} vs {b}, {what}");
        }
    }

    /// The lane path, the one-value path and the reference agree on blocks that mix the
    /// cases: exact values, ±0, zeroed values, NaN and ±Inf at every position of a block.
    #[test]
    fn lanes_match_the_reference_around_specials() {
        let f = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let base: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.37).collect();
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1e-30];
        for (k, &sp) in specials.iter().enumerate() {
            for at in 0..base.len() {
                let mut orig = base.clone();
                let mut dec: Vec<f32> = orig.iter().map(|x| (x * 64.0).round() / 64.0).collect();
                match k % 3 {
                    0 => orig[at] = sp,
                    1 => dec[at] = sp,
                    _ => {
                        orig[at] = sp;
                        dec[at] = sp;
                    }
                }
                let (o, d) = (f(&orig), f(&dec));
                let mut got = ErrorAcc::default();
                got.add(FloatLayout::F32, &o, &d);
                let mut want = ErrorAcc::default();
                reference(&mut want, FloatLayout::F32, &o, &d);
                assert_same(&got, &want, &format!("special {sp} at {at}, case {k}"));
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
