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

    /// The best level of this CPU, unless `DMX_CPU=scalar` is set (detected once).
    pub fn detected() -> Self {
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

/// Runs `f` compiled for `level`. `f` must be an `#[inline(always)]` closure that calls
/// `#[inline(always)]` code,
/// so that the whole loop is compiled inside the target-feature function.
#[inline(always)]
pub(crate) fn dispatch<R>(level: Level, f: impl FnOnce() -> R) -> R {
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
