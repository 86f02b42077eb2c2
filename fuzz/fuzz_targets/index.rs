//! Fuzz target `index`. Property: dmx_format's preamble, trailer and index parsers never panic
//! on arbitrary bytes and allocate only in proportion to their input (run with
//! `-rss_limit_mb=512`); an index they accept obeys docs/FORMAT.md §5.5 and §6 and serializes
//! back to the same bytes. Implemented by `dmx_fuzz::index` (src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dmx_fuzz::index(data));
