//! Test data shared by the benchmarks.

/// Deterministic N(0, 1) samples (xorshift64 + Box-Muller) from `seed`.
pub fn normal(n: usize, seed: u64) -> Vec<f64> {
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next().max(1e-12), next());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        })
        .collect()
}
