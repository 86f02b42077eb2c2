//! The CLI on files of dmx-compress (fixtures of `crates/dmx-legacy`): `info` and `verify`
//! name them and exit 2, `decompress` and `delta-reconstruct` restore them as the old tool
//! does, `import` converts them.

use std::path::{Path, PathBuf};

use dmx_testkit::scratch;

use crate::support::run;

fn fixture(name: &str) -> String {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dmx-legacy/tests/fixtures")
        .join(name);
    p.to_str().expect("path").to_string()
}

#[test]
fn info_and_verify_name_the_old_format() {
    let dir = scratch();
    for cmd in ["info", "verify"] {
        let (_, err) = run(dir.path(), &[cmd, &fixture("v04_f32_bfp.dmx")], 2);
        assert!(
            err.contains("written by dmx-compress, format v2, mode bfp — lossy"),
            "{err}"
        );
        assert!(err.contains("dmx import"), "{err}");
    }
}

#[test]
fn decompress_import_and_reconstruct_old_files() {
    let dir = scratch();
    run(
        dir.path(),
        &["decompress", &fixture("v12_f16_bfp.dmx"), "a.safetensors"],
        0,
    );
    let want = std::fs::read(fixture("expected/v12_f16_bfp.safetensors")).expect("expected");
    assert_eq!(
        std::fs::read(dir.path().join("a.safetensors")).expect("out"),
        want
    );

    run(
        dir.path(),
        &["import", &fixture("v12_f16_bfp.dmx"), "b.dmx"],
        0,
    );
    run(dir.path(), &["verify", "b.dmx"], 0);
    run(
        dir.path(),
        &[
            "delta-reconstruct",
            &fixture("ckpt0.safetensors"),
            &fixture("v04_delta_int16.dmxd"),
            "c.safetensors",
        ],
        0,
    );
    let want = std::fs::read(fixture("expected/v04_delta_int16.safetensors")).expect("expected");
    assert_eq!(
        std::fs::read(dir.path().join("c.safetensors")).expect("out"),
        want
    );

    let (_, err) = run(
        dir.path(),
        &["import", &fixture("v04_delta_int16.dmxd"), "d.dmxd"],
        2,
    );
    assert!(err.contains("base"), "{err}");
    run(
        dir.path(),
        &[
            "import",
            &fixture("v04_delta_int16.dmxd"),
            "d.dmxd",
            "--base",
            &fixture("ckpt0.safetensors"),
        ],
        0,
    );
    run(dir.path(), &["import", &fixture("v12_chain"), "chain"], 0);
    run(dir.path(), &["verify", "chain"], 0);
}
