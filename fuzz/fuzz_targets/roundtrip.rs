//! Fuzz target `roundtrip`. Property: arbitrary bytes read as values of any float layout (or
//! as plain bytes), with any row-length hint: `encode_with` never grows them, `decode`
//! restores them exactly, `encode_within` agrees with it at any limit, and a wrong output
//! length is an error. Implemented by
//! `dmx_fuzz::roundtrip` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dmx_fuzz::roundtrip(data));
