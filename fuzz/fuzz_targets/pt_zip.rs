//! Fuzz target `pt_zip`. Property: arbitrary bytes as a whole `.pt` file (seed the corpus
//! with `crates/dmx-pt/tests/fixtures/*.pt`): `dmx_pt::scan` returns an error or a layout
//! that keeps its promises (`PtLayout::invariants`: storages and zip records inside the file,
//! in order and not overlapping, each view inside its storage, segments tiling the file),
//! without panicking or allocating beyond its limits.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = dmx_pt::Limits {
        max_alloc: 64 << 20,
        max_nodes: 1 << 20,
        ..Default::default()
    };
    if let Ok(layout) = dmx_pt::scan_with(data, &limits) {
        if let Err(e) = layout.invariants(data.len() as u64) {
            panic!("{e}");
        }
        let mut at = 0;
        for seg in layout.segments(data.len() as u64) {
            let r = match seg {
                dmx_pt::Segment::Skeleton(r) => r,
                dmx_pt::Segment::Storage(i) => layout.storages[i].range.clone(),
            };
            assert_eq!(r.start, at, "segments must tile the file");
            at = r.end;
        }
        assert_eq!(at, data.len() as u64);
    }
});
