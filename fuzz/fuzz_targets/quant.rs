//! Fuzz target `quant`. Property: `dmx_codec::quant::decode` (grid quantization) never panics
//! on any payload and output length; encoder output (any step, any grid width) decodes, keeps
//! NaN and ±Inf exact, and refuses a wrong output length. Implemented by `dmx_fuzz::quant`
//! (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dmx_fuzz::quant(data));
