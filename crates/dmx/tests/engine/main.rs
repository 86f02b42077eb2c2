//! The engine's integration tests, one binary (one link) for the whole suite.

mod cancel;
mod chain;
mod chain_prune;
mod corruption;
mod crafted;
mod delta;
mod diff;
mod fuzz_regressions;
mod lossy;
mod memory;
mod pt_safety;
mod roundtrip;
mod torch;
mod torch_delta;
mod trainer;
mod vectors;

/// Proptest settings: `default_cases` cases per property unless `PROPTEST_CASES` says otherwise.
fn proptest_config(default_cases: u32) -> proptest::prelude::ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    proptest::prelude::ProptestConfig {
        cases,
        ..proptest::prelude::ProptestConfig::default()
    }
}
mod legacy;
