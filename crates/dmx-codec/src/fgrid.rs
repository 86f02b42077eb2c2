//! The floating (logarithmic) integer grid shared by codec 9 (`fquant`) and codec 7 variant 9:
//! a value keeps its sign, its exponent and the top `m` bits of its fraction.
//!
//! The magnitude bits `u = exponent << F | fraction` of a normal value are rounded to a
//! multiple of `2^(F − m)` (round half to even on `u >> (F − m)`); the quotient `c`, negated
//! for a negative value, is the value's *coordinate*. Coordinates are plain integers, monotone
//! in the value, so deltas between them are exact integer arithmetic. Every binade holds
//! `2^m` grid points: the error of a value is at most half a unit of the `m`-bit fraction at
//! its binade (relative `2^−(m+1)`), and no non-zero value becomes 0.
//!
//! Off the grid (stored exactly by the codecs): NaN, ±Inf, −0, non-zero subnormals, and
//! values whose rounding carries into the all-ones exponent.

use crate::FloatLayout;

/// Whether the floating grid handles `layout`: BF16, F16 and F32.
pub fn supports(layout: FloatLayout) -> bool {
    layout == FloatLayout::BF16 || layout == FloatLayout::F16 || layout == FloatLayout::F32
}

/// Fraction bits `F` of `layout` (7 for BF16, 10 for F16, 23 for F32): the largest `m`.
pub fn max_fraction_bits(layout: FloatLayout) -> u32 {
    layout.bits() - 1 - layout.exp_bits
}

/// The coordinate of the value of bits `bits` on the grid of `m` kept fraction bits, or `None`
/// when it is off the grid (or `layout` is unsupported, or `m > F`).
pub fn coordinate(layout: FloatLayout, m: u32, bits: u64) -> Option<i64> {
    FloatGrid::new(layout, m)?.coordinate(bits)
}

/// The bits of coordinate `q` on the grid of `m` kept fraction bits, or `None` when it lies
/// beyond the finite range (or `layout` is unsupported, or `m > F`). Zero gives `+0`.
pub fn value(layout: FloatLayout, m: u32, q: i64) -> Option<u64> {
    FloatGrid::new(layout, m)?.value(q)
}

/// A floating grid with its constants computed once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FloatGrid {
    /// Position of the sign bit (`8B − 1`).
    sign_at: u32,
    /// Fraction bits `F`.
    f: u32,
    /// Dropped fraction bits `F − m`.
    sh: u32,
    /// The all-ones exponent, as magnitude bits (`(2^eb − 1) << F`).
    inf: u64,
}

impl FloatGrid {
    /// The grid of `m` kept fraction bits of `layout`; `None` when `layout` is unsupported or
    /// `m > F`.
    pub(crate) fn new(layout: FloatLayout, m: u32) -> Option<Self> {
        let f = max_fraction_bits(layout);
        (supports(layout) && m <= f).then(|| Self {
            sign_at: layout.bits() - 1,
            f,
            sh: f - m,
            inf: ((1u64 << layout.exp_bits) - 1) << f,
        })
    }

    /// See [`coordinate`].
    #[inline(always)]
    pub(crate) fn coordinate(self, bits: u64) -> Option<i64> {
        let neg = (bits >> self.sign_at) & 1 != 0;
        let u = bits & ((1u64 << self.sign_at) - 1);
        if u == 0 {
            return (!neg).then_some(0);
        }
        if u < (1u64 << self.f) || u >= self.inf {
            return None;
        }
        let c = if self.sh == 0 {
            u
        } else {
            // Round half to even: add just under half, plus the kept low bit for the tie.
            let odd = (u >> self.sh) & 1;
            (u + (1u64 << (self.sh - 1)) - 1 + odd) >> self.sh
        };
        if c << self.sh >= self.inf {
            return None;
        }
        let c = c as i64;
        Some(if neg { -c } else { c })
    }

    /// The constants of [`Rounding::round`] (for values of at most 32 bits).
    pub(crate) fn rounding(self) -> Rounding {
        let sign = 1u32 << self.sign_at;
        Rounding {
            sign,
            min_normal: 1u32 << self.f,
            inf: self.inf as u32,
            sh: self.sh,
            below_half: if self.sh == 0 {
                0
            } else {
                (1u32 << (self.sh - 1)) - 1
            },
            tie: u32::from(self.sh != 0),
        }
    }

    /// See [`value`].
    #[inline(always)]
    pub(crate) fn value(self, q: i64) -> Option<u64> {
        let c = q.unsigned_abs();
        if c >= self.inf >> self.sh {
            return None;
        }
        Some(u64::from(q < 0) << self.sign_at | c << self.sh)
    }
}

/// [`FloatGrid::coordinate`] then [`FloatGrid::value`] in one branch-free step, for values
/// of at most 32 bits: the bits a value restores to on the grid, or the value itself where
/// `coordinate` escapes it (NaN, ±Inf, −0, subnormals, values that round into Inf). Zero
/// keeps its bits either way (`+0` is on the grid, `−0` escapes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rounding {
    sign: u32,
    min_normal: u32,
    inf: u32,
    sh: u32,
    below_half: u32,
    tie: u32,
}

impl Rounding {
    /// See [`Rounding`].
    #[inline(always)]
    pub(crate) fn round(self, x: u32) -> u32 {
        let u = x & (self.sign - 1);
        // Round half to even at `sh` dropped bits (`u < inf` leaves room for the carry).
        let r =
            (u.wrapping_add(self.below_half + ((u >> self.sh) & self.tie)) >> self.sh) << self.sh;
        let on_grid = (u >= self.min_normal) & (u < self.inf) & (r < self.inf);
        if on_grid { (x & self.sign) | r } else { x }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LAYOUTS: [FloatLayout; 3] = [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32];

    /// Value of bits as `f64` (exact for the three layouts).
    fn num(layout: FloatLayout, bits: u64) -> f64 {
        crate::grid::to_f64(layout, bits)
    }

    /// Checks the guarantees for one bit pattern; returns its coordinate.
    fn check(layout: FloatLayout, m: u32, bits: u64) -> Option<i64> {
        let g = FloatGrid::new(layout, m).unwrap();
        let x = num(layout, bits);
        let q = g.coordinate(bits);
        let w = layout.bits();
        let u = bits & ((1u64 << (w - 1)) - 1);
        let f = max_fraction_bits(layout);
        let special =
            x.is_nan() || x.is_infinite() || (u == 0 && bits != 0) || (u != 0 && u < 1 << f);
        let Some(q) = q else {
            // Escapes: specials, or rounding that overflows into Inf.
            if !special {
                let top = num(layout, g.inf - (1 << g.sh));
                assert!(x.abs() > top, "{layout:?} m {m} {bits:#x} escaped");
            }
            return None;
        };
        assert!(!special, "{layout:?} m {m} {bits:#x} on the grid");
        let y = g.value(q).unwrap();
        let yv = num(layout, y);
        assert_eq!(yv == 0.0, x == 0.0, "{bits:#x}");
        if x != 0.0 {
            assert_eq!(yv.is_sign_negative(), x.is_sign_negative());
            let e = x.abs().log2().floor();
            let bound = 2f64.powf(e - f64::from(m) - 1.0);
            assert!(
                (x - yv).abs() <= bound,
                "{layout:?} m {m} {bits:#x} -> {y:#x}"
            );
            assert!((x - yv).abs() <= x.abs() * 2f64.powi(-(m as i32) - 1));
        } else {
            assert_eq!(y, 0);
        }
        assert_eq!(g.coordinate(y), Some(q), "idempotent");
        Some(q)
    }

    #[test]
    fn exhaustive_16_bit() {
        for layout in [FloatLayout::BF16, FloatLayout::F16] {
            for m in 0..=max_fraction_bits(layout) {
                // Monotone: walk the positive and negative values in value order.
                let mut last = i64::MIN;
                let neg = (0x8001..=0xFFFFu64).rev();
                for bits in neg.chain(0..=0x7FFF) {
                    if let Some(q) = check(layout, m, bits) {
                        assert!(q >= last, "{layout:?} m {m} {bits:#x} not monotone");
                        last = q;
                    }
                }
            }
        }
    }

    #[test]
    fn edge_values() {
        let g = FloatGrid::new(FloatLayout::F32, 0).unwrap();
        // 1.5 is a tie between 1 and 2: even exponent field 127 + 1 is 128, odd is 127.
        assert_eq!(g.coordinate(0x3FC0_0000), Some(128));
        assert_eq!(g.coordinate(0x3F80_0000), Some(127));
        assert_eq!(g.coordinate(0x4040_0000), Some(128)); // 3.0: tie, 128 is even
        assert_eq!(g.coordinate(0xBF80_0000), Some(-127));
        assert_eq!(g.coordinate(0x8000_0000), None); // -0
        assert_eq!(g.coordinate(0), Some(0));
        assert_eq!(g.coordinate(1), None); // subnormal
        assert_eq!(g.coordinate(0x7F7F_FFFF), None); // rounds into Inf
        assert_eq!(g.coordinate(0x7F3F_FFFF), Some(254));
        assert_eq!(g.value(255), None);
        assert_eq!(g.value(-254), Some(0xFF00_0000));
        let full = FloatGrid::new(FloatLayout::F32, 23).unwrap();
        assert_eq!(full.coordinate(0x7F7F_FFFF), Some(0x7F7F_FFFF));
        assert_eq!(full.value(0x7F80_0000), None);
        assert_eq!(value(FloatLayout::F64, 3, 1), None);
        assert_eq!(coordinate(FloatLayout::BF16, 8, 0x3F80), None);
        assert_eq!(value(FloatLayout::F16, 10, i64::MIN), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn random_f32(bits in any::<u32>(), other in any::<u32>(), m in 0u32..=23) {
            let l = FloatLayout::F32;
            let a = check(l, m, u64::from(bits));
            let b = check(l, m, u64::from(other));
            let (x, y) = (f32::from_bits(bits), f32::from_bits(other));
            if let (Some(a), Some(b)) = (a, b) && x < y {
                prop_assert!(a <= b, "not monotone");
            }
            // Every coordinate of the finite range decodes and is a fixed point where normal.
            let g = FloatGrid::new(l, m).unwrap();
            let q = i64::from(other as i32) >> (m % 8);
            if let Some(v) = g.value(q) && v & 0x7FFF_FFFF >= 1 << 23 {
                prop_assert_eq!(g.coordinate(v), Some(q));
            }
        }
    }

    #[test]
    fn layouts() {
        for l in LAYOUTS {
            assert!(supports(l));
        }
        assert!(!supports(FloatLayout::F64));
        assert_eq!(max_fraction_bits(FloatLayout::BF16), 7);
        assert_eq!(max_fraction_bits(FloatLayout::F16), 10);
        assert_eq!(max_fraction_bits(FloatLayout::F32), 23);
    }
}
