//! Fuzz target `delta`. Property: `dmx_codec::delta::decode` / `decode_quantized` never panic
//! on any payload, base and output length; lossless deltas restore the target exactly and
//! quantized ones keep NaN and ±Inf exact. Implemented by `dmx_fuzz::delta` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dmx_fuzz::delta(data));
