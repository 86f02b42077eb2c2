//! Files of dmx-compress (the fixtures of `crates/dmx-legacy`): a clear error where an
//! archive is expected, restore to safetensors, and import as dmx archive, delta and chain.

use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dmx-legacy/tests/fixtures")
        .join(name)
}

#[test]
fn opening_an_old_file_names_it() {
    let Err(err) = dmx::Archive::open(&fixture("v12_f32_bfp.dmx")) else {
        panic!("an old file opened as an archive");
    };
    let msg = err.to_string();
    assert!(matches!(err, dmx::Error::Legacy { .. }), "{msg}");
    assert!(
        msg.contains("written by dmx-compress, format v3, mode bfp — lossy"),
        "{msg}"
    );
    assert!(msg.contains("dmx import"), "{msg}");
    assert!(!err.is_integrity_failure());
}

#[test]
fn restore_and_import_keep_the_decoded_values() {
    let dir = tempfile::tempdir().unwrap();
    let opts = dmx::Options::default();
    let out = dir.path().join("out.safetensors");
    let info = dmx::legacy::restore(&fixture("v04_f32_int16.dmx"), None, &out, &opts).unwrap();
    assert!(info.lossy);
    let expected = std::fs::read(fixture("expected/v04_f32_int16.safetensors")).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), expected);

    let new = dir.path().join("new.dmx");
    dmx::legacy::import(&fixture("v04_f32_int16.dmx"), &new, None, &opts).unwrap();
    let archive = dmx::Archive::open(&new).unwrap();
    let (tensors, _, _) = dmx::legacy::decode_file(&fixture("v04_f32_int16.dmx"), None).unwrap();
    for t in &tensors {
        assert_eq!(archive.read_tensor(&t.name).unwrap(), t.data, "{}", t.name);
    }
}

#[test]
fn old_deltas_and_chains_import() {
    let dir = tempfile::tempdir().unwrap();
    let opts = dmx::Options::default();
    let base = fixture("ckpt0.safetensors");
    let out = dir.path().join("d.safetensors");
    dmx::legacy::restore(&fixture("v12_delta_int16.dmxd"), Some(&base), &out, &opts).unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(fixture("expected/v12_delta_int16.safetensors")).unwrap()
    );
    let err = dmx::legacy::restore(
        &fixture("v12_delta_int16.dmxd"),
        None,
        &dir.path().join("x"),
        &opts,
    );
    assert!(matches!(err, Err(dmx::Error::BaseNeeded(_))));
    let new = dir.path().join("new.dmxd");
    dmx::legacy::import(&fixture("v04_delta_int32.dmxd"), &new, Some(&base), &opts).unwrap();
    assert!(new.exists());
    let chain = dir.path().join("chain");
    let r = dmx::legacy::import(&fixture("v04_chain"), &chain, None, &opts).unwrap();
    assert_eq!(r.tensors, 3);
    assert!(dmx::chain_info(&chain).is_ok());
}
