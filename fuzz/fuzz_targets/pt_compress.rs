//! Fuzz target `pt_compress`. Property: arbitrary bytes as a `.pt` input (seed the corpus with
//! `crates/dmx-pt/tests/fixtures/*.pt`, so that mutated `torch.save` files reach the torch
//! planner): `dmx::compress` succeeds (files that do not scan are stored as opaque bytes),
//! `verify` against the input passes, and `decompress` restores the input byte for byte.
//! Implemented by `dmx_fuzz::pt_compress` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dmx_fuzz::pt_compress(data));
