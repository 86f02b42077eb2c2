//! Fuzz target `decode`. Property: `dmx_codec::decode` never panics, for every codec id
//! (unknown ones included), any payload and any output length up to 1 MiB, including encoded
//! payloads with a few damaged bytes. Implemented by `dmx_fuzz::decode` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dmx_fuzz::decode(data));
