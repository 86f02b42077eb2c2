//! Run-time CPU dispatch for the hot loops: the only module of this crate with `unsafe` code.
//!
//! The codecs are written once, in portable Rust. `dispatch` runs such a loop either as
//! compiled for the baseline target (the scalar fallback) or, on an x86-64 CPU that has them,
//! compiled again with the x86-64-v3 instruction set enabled (AVX2, BMI1/BMI2, LZCNT,
//! POPCNT): BMI2's flag-free shifts by a register (`shlx`/`shrx`) suit the bit-stream code, and
//! AVX2 lets the compiler vectorise the counting loops. Both paths run the same source, so
//! their output is byte-identical; the tests run every codec on both and compare.
//!
//! The level is detected once per process. Setting the environment variable
//! `DMX_CPU=scalar` forces the fallback (for comparison and as an escape hatch).
#![allow(unsafe_code)]

use std::cell::Cell;
use std::sync::OnceLock;

/// An instruction-set level the hot loops can be compiled for. Only the levels this CPU
/// supports can be obtained ([`Level::detected`], [`Level::available`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    X86V3,
}

impl Level {
    /// The portable fallback, available everywhere.
    pub const SCALAR: Self = Self(Kind::Scalar);

    /// The best level of this CPU, unless `DMX_CPU=scalar` is set (detected once), or the
    /// level [`with_level`] set for the calling thread.
    pub fn detected() -> Self {
        if let Some(level) = FORCED.with(Cell::get) {
            return level;
        }
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            if std::env::var_os("DMX_CPU").is_some_and(|v| v == "scalar") {
                Self::SCALAR
            } else {
                Self::best()
            }
        })
    }

    /// Every level this CPU supports, the fallback first.
    pub fn available() -> Vec<Self> {
        let best = Self::best();
        let mut all = vec![Self::SCALAR];
        if best != Self::SCALAR {
            all.push(best);
        }
        all
    }

    fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("lzcnt")
            && std::arch::is_x86_feature_detected!("popcnt")
        {
            return Self(Kind::X86V3);
        }
        Self::SCALAR
    }

    /// A short name for reports: `scalar` or `x86-64-v3`.
    pub fn name(self) -> &'static str {
        match self.0 {
            Kind::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kind::X86V3 => "x86-64-v3",
        }
    }
}

thread_local! {
    static FORCED: Cell<Option<Level>> = const { Cell::new(None) };
}

/// Runs `f` with [`Level::detected`] returning `level` on this thread (any level this CPU
/// has; [`Level::available`] lists them): how tests compare the paths of code that picks
/// its level itself. Restores the previous setting afterwards, also when `f` panics.
pub fn with_level<R>(level: Level, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Level>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(FORCED.with(|c| c.replace(Some(level))));
    f()
}

/// Runs `f` compiled for `level`. `f` must be an `#[inline(always)]` closure that calls
/// `#[inline(always)]` code,
/// so that the whole loop is compiled inside the target-feature function. Other crates of
/// the workspace use it for their own hot loops (the engine's error measurement).
#[inline(always)]
pub fn dispatch<R>(level: Level, f: impl FnOnce() -> R) -> R {
    match level.0 {
        Kind::Scalar => f(),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Level` holding `Kind::X86V3` is only made by `Level::best`, after
        // `is_x86_feature_detected!` confirmed every feature `x86_v3` enables on this CPU, so
        // the instructions it may use exist.
        Kind::X86V3 => unsafe { x86_v3(f) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,avx2,bmi1,bmi2,lzcnt,popcnt")]
#[inline(never)]
unsafe fn x86_v3<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// What the vector rounds of codec 12's decoder read ([`ans_rounds`]).
pub(crate) struct AnsRounds<'a> {
    /// Per slot: `f << 16 | (slot − cum)`.
    pub fb: &'a [u32; 1 << 14],
    /// Per slot: the symbol, then two entries of padding.
    pub sym: &'a [u16; (1 << 14) + 2],
    /// The shared word stream (16-bit little-endian words).
    pub words: &'a [u8],
    /// The residual area.
    pub res: &'a [u8],
    /// Residual width (at most 25).
    pub r: u32,
    /// Where the symbol sits in a value.
    pub shift: u32,
    /// Where the residual sits in a value.
    pub tz: u32,
    /// Value width in bytes.
    pub bytes: usize,
}

/// Decodes whole rounds of 32 values of codec 12 (docs/CODECS.md §10: four groups of
/// eight, one vector of states each) from the start of `out` with AVX2, as long as the word
/// stream and the residual area leave room for the vector loads; returns how many groups of
/// eight values were decoded (a multiple of four), with the states `x` and the word index
/// `k` advanced past them. Returns 0 (and changes nothing) on the scalar level and for
/// 1-byte values. The scalar decoder continues from there; both give the same values.
pub(crate) fn ans_rounds(
    level: Level,
    a: &AnsRounds<'_>,
    x: &mut [u32; 32],
    k: &mut usize,
    out: &mut [u8],
) -> usize {
    match level.0 {
        Kind::Scalar => 0,
        #[cfg(target_arch = "x86_64")]
        Kind::X86V3 => {
            if !matches!(a.bytes, 2 | 4) || a.r > 25 {
                return 0;
            }
            let groups = out.len() / (8 * a.bytes);
            // Residual bit positions stay below 2^31 (they are i32 lanes), and the residual
            // loads of a group stay inside the residual area.
            let r = a.r as usize;
            let mut safe = groups.min((i32::MAX as usize - 64) / (8 * r).max(1));
            if r > 0 {
                // Group t loads 16 bytes at byte t·r and 16 at byte t·r + high_at(r) (a
                // group's residuals are 8r bits, r bytes).
                let fit = a
                    .res
                    .len()
                    .checked_sub(16 + high_at(r))
                    .map_or(0, |room| room / r + 1);
                safe = safe.min(fit);
                debug_assert!(safe == 0 || (safe - 1) * r + high_at(r) + 16 <= a.res.len());
            }
            // SAFETY: a `Level` holding `Kind::X86V3` is only made after AVX2 was detected
            // (`Level::best`). `avx2::ans` keeps its memory accesses in bounds: table
            // gathers use indices below 2^14 (16384 + 2 entries for the two-byte symbol
            // reads), residual loads (16 bytes at t·r and at t·r + high_at(r)) only in the
            // first `safe` groups (checked above: the last byte read is inside `res`), word
            // loads only where 16 bytes remain (checked per group), and stores only inside
            // `out[..safe * 8 * bytes]`.
            unsafe { avx2::ans(a, x, k, out, safe / 4 * 4) }
        }
    }
}

/// What the vector encoder of codec 12 reads ([`ans_encode`]).
pub(crate) struct AnsEncode<'a> {
    /// Whole rounds of 32 values.
    pub data: &'a [u8],
    /// Value width in bytes.
    pub bytes: usize,
    /// Where the symbol sits in a value.
    pub shift: u32,
    /// Per symbol: `cum << 16 | f`.
    pub fc: &'a [u32; 4096],
    /// Per symbol: `1 / f` (0 for absent symbols).
    pub inv: &'a [f32; 4096],
}

/// Pushes the symbols of every whole round of `a.data` (last first; the states of group
/// `g` of a round are `x[8g..8g + 8]`) as codec 12's encoder does, with AVX2; returns
/// `false` (and changes nothing) on the scalar level and for 1-byte values, where the
/// scalar encoder does it. `words` must have room for eight words past the last one
/// pushed. Both give the same states and words.
pub(crate) fn ans_encode(
    level: Level,
    a: &AnsEncode<'_>,
    x: &mut [u32; 32],
    words: &mut [u16],
    n: &mut usize,
) -> bool {
    match level.0 {
        Kind::Scalar => false,
        #[cfg(target_arch = "x86_64")]
        Kind::X86V3 => {
            if !matches!(a.bytes, 2 | 4) || a.shift > 31 {
                return false;
            }
            let values = a.data.len() / a.bytes;
            // Each value pushes at most one word, and each group's store writes 8 slots.
            assert!(
                values.is_multiple_of(32) && *n + values + 8 <= words.len(),
                "the vector encoder needs whole rounds and room for its stores"
            );
            // SAFETY: `Kind::X86V3` implies AVX2 (`Level::best`). `avx2::encode` reads the
            // data in whole groups inside `a.data`, gathers from the 4096-entry tables with
            // 12-bit indices (masked), and stores 16 bytes at `words[n..]`, where n stays
            // at most the number of values pushed so far (checked above).
            unsafe { avx2::encode(a, x, words, n) };
            true
        }
    }
}

/// Widest residual the vector decoder of codec 12 takes from one 16-byte load and a byte
/// shuffle (the eighth lane's four bytes start at byte 7r / 8 ≤ 12).
const SHUFFLE_MAX_R: usize = 14;

/// Where, from the first byte of a group's `r`-bit residuals, the vector decoder of codec 12
/// loads the 16 bytes that lanes 4 to 7 take their residuals from: the same bytes as lanes 0
/// to 3 up to [`SHUFFLE_MAX_R`], else the byte that holds lane 4's first bit (lane 7's four
/// bytes then start at most at byte 3r / 8 + 1 ≤ 10 of them, for r ≤ 25). Lanes 0 to 3 read
/// their four bytes at byte ir / 8 ≤ 9 of the first 16.
fn high_at(r: usize) -> usize {
    if r <= SHUFFLE_MAX_R { 0 } else { 4 * r / 8 }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{AnsEncode, AnsRounds};
    use std::arch::x86_64::*;

    /// `PERM[m]`: for each lane whose bit is set in `m`, the index of its word among the
    /// round's consecutive words (the number of set bits below it); 0 elsewhere.
    const PERM: [[i32; 8]; 256] = {
        let mut t = [[0i32; 8]; 256];
        let mut m = 0;
        while m < 256 {
            let mut n = 0;
            let mut j = 0;
            while j < 8 {
                if m >> j & 1 == 1 {
                    t[m][j] = n;
                    n += 1;
                }
                j += 1;
            }
            m += 1;
        }
        t
    };

    /// `ENC_PERM[m]`: the lanes whose bit is set in `m`, highest first (the encoder pushes
    /// the words of a group from state 7 down to state 0), then zeros.
    const ENC_PERM: [[i32; 8]; 256] = {
        let mut t = [[0i32; 8]; 256];
        let mut m = 0;
        while m < 256 {
            let mut n = 0;
            let mut j = 8;
            while j > 0 {
                j -= 1;
                if m >> j & 1 == 1 {
                    t[m][n] = j;
                    n += 1;
                }
            }
            m += 1;
        }
        t
    };

    /// Pushes one group of eight symbols (indices in `s`) into the states `x`, storing the
    /// words of the states that renormalize at `words[*n..]`.
    #[target_feature(enable = "avx,avx2,bmi1,bmi2,lzcnt,popcnt")]
    #[inline]
    unsafe fn encode_group(
        a: &AnsEncode<'_>,
        s: __m256i,
        x: &mut __m256i,
        words: &mut [u16],
        n: &mut usize,
    ) {
        // SAFETY: gathers use 12-bit indices into 4096-entry tables; the store
        // of 16 bytes at words[n..] is inside (checked by `ans_encode`).
        unsafe {
            let low16 = _mm256_set1_epi32(0xFFFF);
            let fc = _mm256_i32gather_epi32::<4>(a.fc.as_ptr().cast(), s);
            let inv = _mm256_i32gather_ps::<4>(a.inv.as_ptr(), s);
            let f = _mm256_and_si256(fc, low16);
            let c = _mm256_srli_epi32::<16>(fc);
            // Renormalize where x >= f << 18 (unsigned: max(x, xmax) == x), except for
            // f = 2^14, whose bound 2^32 no state reaches (and which wraps to 0 here).
            let xmax = _mm256_slli_epi32::<18>(f);
            let full = _mm256_cmpeq_epi32(f, _mm256_set1_epi32(1 << 14));
            let over =
                _mm256_andnot_si256(full, _mm256_cmpeq_epi32(_mm256_max_epu32(*x, xmax), *x));
            let m = _mm256_movemask_ps(_mm256_castsi256_ps(over)) as usize & 0xFF;
            let perm = _mm256_loadu_si256(ENC_PERM[m].as_ptr().cast());
            let w = _mm256_and_si256(_mm256_permutevar8x32_epi32(*x, perm), low16);
            let w = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi32(w, w));
            _mm_storeu_si128(words.as_mut_ptr().add(*n).cast(), _mm256_castsi256_si128(w));
            *n += m.count_ones() as usize;
            let v = _mm256_blendv_epi8(*x, _mm256_srli_epi32::<16>(*x), over);
            // q = v / f: a float estimate, off by at most one, then corrected. v may
            // reach 2^32 − 1, so it is converted halved (the estimate only needs to be
            // close).
            let vf = _mm256_mul_ps(
                _mm256_cvtepi32_ps(_mm256_srli_epi32::<1>(v)),
                _mm256_set1_ps(2.0),
            );
            let mut q = _mm256_cvttps_epi32(_mm256_mul_ps(vf, inv));
            let mut r = _mm256_sub_epi32(v, _mm256_mullo_epi32(q, f));
            // r in (−f, 2f) as a signed value: one step each way.
            let neg = _mm256_cmpgt_epi32(_mm256_setzero_si256(), r);
            q = _mm256_add_epi32(q, neg);
            r = _mm256_add_epi32(r, _mm256_and_si256(neg, f));
            let big = _mm256_cmpgt_epi32(r, _mm256_sub_epi32(f, _mm256_set1_epi32(1)));
            q = _mm256_sub_epi32(q, big);
            r = _mm256_sub_epi32(r, _mm256_and_si256(big, f));
            *x = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32::<14>(q), r), c);
        }
    }

    /// The eight symbol indices of the group of `B`-byte values at `p`.
    #[target_feature(enable = "avx,avx2,bmi1,bmi2,lzcnt,popcnt")]
    #[inline]
    unsafe fn symbols(p: *const u8, bytes: usize, shift: __m128i) -> __m256i {
        // SAFETY: the caller passes a group of 8·bytes readable bytes.
        unsafe {
            let v = if bytes == 2 {
                _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()))
            } else {
                _mm256_loadu_si256(p.cast())
            };
            _mm256_and_si256(_mm256_srl_epi32(v, shift), _mm256_set1_epi32(0xFFF))
        }
    }

    /// Every whole round of `a.data`, last first (see [`super::ans_encode`]).
    #[target_feature(enable = "avx,avx2,bmi1,bmi2,lzcnt,popcnt")]
    pub(super) unsafe fn encode(
        a: &AnsEncode<'_>,
        xs: &mut [u32; 32],
        words: &mut [u16],
        n: &mut usize,
    ) {
        let b = a.bytes;
        let rounds = a.data.len() / (32 * b);
        // SAFETY: `xs` holds four vectors of states; rounds are inside
        // `a.data`; `encode_group`'s stores are covered by `ans_encode`'s check.
        unsafe {
            let shift = _mm_cvtsi32_si128(a.shift as i32);
            let p = xs.as_mut_ptr().cast::<__m256i>();
            let [mut x0, mut x1, mut x2, mut x3] =
                [0, 1, 2, 3].map(|i| _mm256_loadu_si256(p.add(i)));
            for t in (0..rounds).rev() {
                let at = a.data.as_ptr().add(t * 32 * b);
                encode_group(a, symbols(at.add(24 * b), b, shift), &mut x3, words, n);
                encode_group(a, symbols(at.add(16 * b), b, shift), &mut x2, words, n);
                encode_group(a, symbols(at.add(8 * b), b, shift), &mut x1, words, n);
                encode_group(a, symbols(at, b, shift), &mut x0, words, n);
            }
            for (i, x) in [x0, x1, x2, x3].into_iter().enumerate() {
                _mm256_storeu_si256(p.add(i), x);
            }
        }
    }

    /// Per-chunk constants of the vector decoder.
    struct Consts {
        mask: __m256i,
        low16: __m256i,
        zero: __m256i,
        rmask: __m256i,
        lane_shift: __m256i,
        ctl: __m256i,
        shift: __m128i,
        tz: __m128i,
        /// [`super::high_at`] of the residual width.
        high: usize,
    }

    /// One group of eight values with the states `x` (see [`super::ans_rounds`], which
    /// checks the bounds the residual loads rely on); `g` is the group's index. The caller
    /// checked that 16 bytes of words remain at `*kk`.
    #[target_feature(enable = "avx,avx2,bmi1,bmi2,lzcnt,popcnt")]
    #[inline]
    unsafe fn group(
        a: &AnsRounds<'_>,
        c: &Consts,
        x: &mut __m256i,
        kk: &mut usize,
        out: &mut [u8],
        g: usize,
    ) {
        let b = a.bytes;
        let r = a.r as i32;
        // SAFETY: the loads and stores stay in bounds, as noted at each.
        unsafe {
            let slot = _mm256_and_si256(*x, c.mask);
            // Indices are below 2^14: inside both tables (the symbol read takes 4 bytes at
            // 2·slot, inside the two padding entries).
            let e = _mm256_i32gather_epi32::<4>(a.fb.as_ptr().cast(), slot);
            let s = _mm256_and_si256(
                _mm256_i32gather_epi32::<2>(a.sym.as_ptr().cast(), slot),
                c.low16,
            );
            let y = _mm256_add_epi32(
                _mm256_mullo_epi32(_mm256_srli_epi32::<16>(e), _mm256_srli_epi32::<14>(*x)),
                _mm256_and_si256(e, c.low16),
            );
            let need = _mm256_cmpeq_epi32(_mm256_srli_epi32::<16>(y), c.zero);
            let m = _mm256_movemask_ps(_mm256_castsi256_ps(need)) as usize;
            // 16 bytes at 2·kk are inside `words` (checked by the caller).
            let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(a.words.as_ptr().add(2 * *kk).cast()));
            let perm = _mm256_loadu_si256(PERM[m & 0xFF].as_ptr().cast());
            let w = _mm256_permutevar8x32_epi32(w, perm);
            *x = _mm256_blendv_epi8(y, _mm256_or_si256(_mm256_slli_epi32::<16>(y), w), need);
            *kk += m.count_ones() as usize;
            let rv = if r > 0 {
                // 16 bytes at g·r and at g·r + high are inside `res` (checked by
                // `ans_rounds`); lanes 0–3 shuffle theirs from the first, lanes 4–7 from the
                // second.
                let at = a.res.as_ptr().add(g * r as usize);
                let v = _mm256_set_m128i(
                    _mm_loadu_si128(at.add(c.high).cast()),
                    _mm_loadu_si128(at.cast()),
                );
                let v = _mm256_shuffle_epi8(v, c.ctl);
                _mm256_and_si256(_mm256_srlv_epi32(v, c.lane_shift), c.rmask)
            } else {
                c.zero
            };
            let v = _mm256_or_si256(_mm256_sll_epi32(s, c.shift), _mm256_sll_epi32(rv, c.tz));
            // Group g of the checked groups, each 8·b bytes of `out`.
            let o = out.as_mut_ptr().add(g * 8 * b);
            if b == 2 {
                let p = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi32(v, v));
                _mm_storeu_si128(o.cast(), _mm256_castsi256_si128(p));
            } else {
                _mm256_storeu_si256(o.cast(), v);
            }
        }
    }

    /// The first `groups` groups (a multiple of four; see [`super::ans_rounds`]); stops
    /// early, at a multiple of four, where fewer than 32 words remain.
    #[target_feature(enable = "avx,avx2,bmi1,bmi2,lzcnt,popcnt")]
    pub(super) unsafe fn ans(
        a: &AnsRounds<'_>,
        xs: &mut [u32; 32],
        k: &mut usize,
        out: &mut [u8],
        groups: usize,
    ) -> usize {
        let r = a.r as i32;
        let high = super::high_at(a.r as usize);
        // Lane j's four bytes, from the first load (j < 4) or the second (at `high`).
        let mut ctl = [0i8; 32];
        for (j, c) in ctl.chunks_exact_mut(4).enumerate() {
            let from = if j < 4 { 0 } else { high as i32 };
            let at = (j as i32 * r) / 8 - from;
            for (i, c) in c.iter_mut().enumerate() {
                *c = (at + i as i32) as i8;
            }
        }
        // SAFETY: `xs` holds 32 states, four vectors; `group` is called only
        // for checked groups with 32 words left, 16 bytes for each of its four calls.
        unsafe {
            let lane_r = _mm256_mullo_epi32(
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                _mm256_set1_epi32(r),
            );
            let c = Consts {
                mask: _mm256_set1_epi32((1 << 14) - 1),
                low16: _mm256_set1_epi32(0xFFFF),
                zero: _mm256_setzero_si256(),
                rmask: _mm256_set1_epi32(((1u64 << a.r) - 1) as i32),
                lane_shift: _mm256_and_si256(lane_r, _mm256_set1_epi32(7)),
                ctl: _mm256_loadu_si256(ctl.as_ptr().cast()),
                shift: _mm_cvtsi32_si128(a.shift as i32),
                tz: _mm_cvtsi32_si128(a.tz as i32),
                high,
            };
            let p = xs.as_mut_ptr().cast::<__m256i>();
            let [mut x0, mut x1, mut x2, mut x3] =
                [0, 1, 2, 3].map(|i| _mm256_loadu_si256(p.add(i)));
            let mut kk = *k;
            let mut g = 0;
            while g < groups && 2 * kk + 64 <= a.words.len() {
                group(a, &c, &mut x0, &mut kk, out, g);
                group(a, &c, &mut x1, &mut kk, out, g + 1);
                group(a, &c, &mut x2, &mut kk, out, g + 2);
                group(a, &c, &mut x3, &mut kk, out, g + 3);
                g += 4;
            }
            for (i, x) in [x0, x1, x2, x3].into_iter().enumerate() {
                _mm256_storeu_si256(p.add(i), x);
            }
            *k = kk;
            g
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_start_with_the_fallback_and_dispatch_runs_the_closure() {
        let all = Level::available();
        assert_eq!(all[0], Level::SCALAR);
        assert!(all.contains(&Level::detected()) || Level::detected() == Level::SCALAR);
        for level in all {
            let data: Vec<u64> = (0..1000).collect();
            let sum = dispatch(level, || data.iter().map(|x| x * x).sum::<u64>());
            assert_eq!(sum, 332_833_500, "{}", level.name());
        }
    }
}
