//! Fuzz target `bfp`. Property: `dmx_codec::bfp::decode` (block floating point) never panics
//! on any payload and output length; encoder output decodes, keeps NaN and ±Inf exact, and
//! refuses a wrong output length. Implemented by `dmx_fuzz::bfp` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dmx_fuzz::bfp(data));
