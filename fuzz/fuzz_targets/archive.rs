//! Fuzz target `archive`. Property: arbitrary bytes written to a file (in /dev/shm):
//! `Archive::open`, reading every segment and tensor, the info statistics, `verify`,
//! `decompress` and `extract` never panic (errors are fine), and a successful `decompress`
//! restores the recorded sizes and BLAKE3 digests. Inputs whose index parses are also tried
//! with recomputed checksums. Implemented by `dmx_fuzz::archive_bounded` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dmx_fuzz::archive_bounded(data, dmx_fuzz::FUZZ_MAX_READ));
