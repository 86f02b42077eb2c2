//! Fuzz target `legacy`. Property: arbitrary bytes as a file of dmx-compress (.dmx v2/v3,
//! .dmxd, chain manifest) parse, decode and reconstruct without panics, within the limits
//! given. Implemented by `dmx_fuzz::legacy` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dmx_fuzz::legacy(data));
