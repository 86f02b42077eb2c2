//! Fuzz target `pt_pickle`. Property: arbitrary bytes as the object pickle of a legacy
//! `torch.save` stream (the magic, protocol and sys_info pickles and an empty storage-key
//! list are added around them, so every byte reaches the pickle interpreter): scanning never
//! panics, never executes anything (it cannot: globals outside the allow-list stay inert
//! names), stays within its limits, and a successful layout keeps `PtLayout::invariants`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut file =
        b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.\x80\x02}."
            .to_vec();
    file.extend_from_slice(data);
    file.extend_from_slice(b"\x80\x02].");
    let limits = dmx_pt::Limits {
        max_alloc: 64 << 20,
        max_nodes: 1 << 20,
        ..Default::default()
    };
    for input in [&file[..], data] {
        if let Ok(layout) = dmx_pt::scan_with(input, &limits) {
            if let Err(e) = layout.invariants(input.len() as u64) {
                panic!("{e}");
            }
        }
    }
});
