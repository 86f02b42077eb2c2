//! `dmx info`, `extract` and `diff` on archives of `torch.save` files (issue 14): output and
//! exit statuses (0 ok, 1 a damaged archive, 2 usage).

use std::path::{Path, PathBuf};

use dmx_testkit::scratch;

use crate::support::{json, run};

/// Copies the dmx-pt fixture `name` into `dir` and compresses it to `name.dmx`.
fn pt_archive(dir: &Path, name: &str) -> PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dmx-pt/tests/fixtures");
    std::fs::copy(fixtures.join(name), dir.join(name)).expect("copy fixture");
    let archive = format!("{name}.dmx");
    run(dir, &["compress", name, &archive, "-q"], 0);
    dir.join(archive)
}

#[test]
fn info_shows_torch_entries_by_name_path_and_components() {
    let dir = scratch();
    pt_archive(dir.path(), "adamw.pt");
    let (text, _) = run(dir.path(), &["info", "adamw.pt.dmx"], 0);
    assert!(text.contains("adamw.pt (torch,"), "{text}");
    assert!(text.contains("optimizer.state.0.exp_avg_sq"), "{text}");
    assert!(text.contains("component"), "{text}");
    for c in ["weights", "exp_avg", "exp_avg_sq", "other_state"] {
        assert!(text.lines().any(|l| l.starts_with(c)), "{c}: {text}");
    }
    let (out, _) = run(dir.path(), &["info", "adamw.pt.dmx", "--json"], 0);
    let v = json(&out);
    assert_eq!(v["files"][0]["kind"], "torch");
    let comps = v["components"].as_array().expect("components");
    assert_eq!(comps.len(), 4, "{v}");
    assert!(comps.iter().all(|c| c["bits_per_param"].is_number()), "{v}");
    pt_archive(dir.path(), "views.pt");
    let (text, _) = run(dir.path(), &["info", "views.pt.dmx"], 0);
    assert!(text.contains("transposed (view of base)"), "{text}");
    assert!(text.contains("[8, 8]"), "{text}");
}

#[test]
fn extract_all_or_named_tensors_of_a_pt_archive() {
    let dir = scratch();
    pt_archive(dir.path(), "views.pt");
    run(
        dir.path(),
        &["extract", "views.pt.dmx", "all.safetensors", "--all", "-q"],
        0,
    );
    let bytes = std::fs::read(dir.path().join("all.safetensors")).expect("written");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = json(std::str::from_utf8(&bytes[8..8 + n]).expect("utf-8"));
    let tensors = header.as_object().expect("header object");
    assert_eq!(tensors.len(), 15, "{header}");
    assert_eq!(header["empty"]["shape"], serde_json::json!([0, 3]));
    assert_eq!(header["transposed"]["shape"], serde_json::json!([8, 8]));
    let end = tensors
        .values()
        .filter_map(|t| t["data_offsets"][1].as_u64())
        .max();
    assert_eq!(end, Some((bytes.len() - 8 - n) as u64));
    let args = [
        "extract",
        "views.pt.dmx",
        "t.safetensors",
        "--tensor",
        "tied.1",
        "-q",
    ];
    run(dir.path(), &args, 0);
    // Usage errors: unknown name, neither or both of --tensor and --all, unknown file.
    for args in [
        &[
            "extract",
            "views.pt.dmx",
            "x.safetensors",
            "--tensor",
            "nope",
        ][..],
        &["extract", "views.pt.dmx", "x.safetensors"],
        &[
            "extract",
            "views.pt.dmx",
            "x.safetensors",
            "--all",
            "--tensor",
            "base",
        ],
        &[
            "extract",
            "views.pt.dmx",
            "x.safetensors",
            "--all",
            "--file",
            "no.pt",
        ],
    ] {
        run(dir.path(), args, 2);
    }
    assert!(!dir.path().join("x.safetensors").exists());
    // The .pt and what extract wrote from its archive diff to zero.
    let (text, _) = run(dir.path(), &["diff", "views.pt", "all.safetensors"], 0);
    assert!(text.contains("identical: every tensor"), "{text}");
    let (out, _) = run(
        dir.path(),
        &["diff", "views.pt", "views.pt.dmx", "--json"],
        0,
    );
    assert_eq!(json(&out)["identical"], true);
}

#[test]
fn a_view_outside_its_storage_fails_with_status_1() {
    let dir = scratch();
    let good = pt_archive(dir.path(), "views.pt");
    dmx_testkit::craft_index(&good, &dir.path().join("bad.dmx"), |index| {
        let v = (index.entries[0].views.iter_mut())
            .find(|v| v.name == "strided")
            .expect("view");
        v.stride[0] = 1 << 40;
    });
    let (_, err) = run(dir.path(), &["info", "bad.dmx"], 1);
    assert!(err.contains("view outside its storage"), "{err}");
    run(
        dir.path(),
        &["extract", "bad.dmx", "x.safetensors", "--all"],
        1,
    );
    run(dir.path(), &["diff", "views.pt", "bad.dmx"], 1);
    run(dir.path(), &["verify", "bad.dmx"], 1);
    assert!(!dir.path().join("x.safetensors").exists());
}
