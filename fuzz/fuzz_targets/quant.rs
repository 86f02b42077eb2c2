//! Fuzz target `quant`. Property: `dmx_codec::quant::decode` (grid quantization) never panics
//! on any payload and output length; encoder output (any step, any grid width) decodes, keeps
//! NaN and ±Inf exact, and refuses a wrong output length; the writer's one-pass encoder gives
//! the same payload and the bytes the decoder restores; the same values on the floating grid
//! (`dmx_codec::fquant`, codec 9) decode, keep NaN and ±Inf exact and lose no non-zero value.
//! Implemented by `dmx_fuzz::quant` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dmx_fuzz::quant(data));
