//! Fuzz target `ints`. Property: `dmx_codec::ints::decode_signed` / `decode_unsigned` never
//! panic on any block and count and never claim more bytes than given; integer blocks
//! round-trip exactly. Implemented by `dmx_fuzz::ints` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dmx_fuzz::ints(data));
