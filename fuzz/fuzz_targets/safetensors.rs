//! Fuzz target `safetensors`. Property: arbitrary bytes as a `.safetensors` input:
//! `dmx::compress` succeeds (invalid files are stored as opaque bytes), `verify` against the
//! input passes, and `decompress` restores the input byte for byte. Implemented by
//! `dmx_fuzz::safetensors` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dmx_fuzz::safetensors(data));
