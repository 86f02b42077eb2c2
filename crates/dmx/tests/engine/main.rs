//! The engine's integration tests, one binary (one link) for the whole suite.

mod chain;
mod corruption;
mod crafted;
mod delta;
mod diff;
mod fuzz_regressions;
mod lossy;
mod matrix;
mod roundtrip;
mod vectors;
