//! Deltas and chains of `torch.save` files and of checkpoint folders, on the fixtures of
//! `tests/fixtures/make_pt_pairs.py` (three AdamW steps of a small network saved with the
//! real `torch.save`, as single files and as Trainer-style folders): byte-exact
//! reconstruction, entry kinds and views, wrong bases and corrupt deltas refused, folder
//! outputs written atomically.

use std::path::{Path, PathBuf};

use dmx::{DeltaOptions, Error, Options, Precision};
use dmx_format::{EntryKind, Root};
use dmx_testkit::scratch;

fn quiet() -> Options {
    Options {
        no_sync: true,
        ..Options::default()
    }
}

fn forced() -> Options {
    Options {
        force: true,
        ..quiet()
    }
}

/// A fixture file or folder.
fn fx(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pt")
        .join(name)
}

fn lossless() -> DeltaOptions {
    DeltaOptions::default()
}

/// Copies the folder `from` to `to` (files only, one level).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        std::fs::copy(item.path(), to.join(item.file_name())).unwrap();
    }
}

/// The files of a folder (one level) with their bytes, sorted by name.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn index_of(path: &Path) -> dmx_format::Index {
    dmx::Archive::open(path).unwrap().index().clone()
}

/// The format minor version in an archive's preamble.
fn minor_of(path: &Path) -> u16 {
    let b = std::fs::read(path).unwrap();
    u16::from_le_bytes([b[10], b[11]])
}

#[test]
fn pt_deltas_reconstruct_byte_for_byte_with_their_views() {
    let dir = scratch();
    let d = dir.path().join("d.dmxd");
    let r = dmx::delta_compress(
        &fx("step_1.pt"),
        &fx("step_2.pt"),
        &d,
        &lossless(),
        &quiet(),
    )
    .unwrap();
    assert!(r.delta_tensors > 10, "{r:?}");
    assert!(r.added.is_empty() && r.reshaped.is_empty() && r.removed.is_empty());
    // A torch delta (1.3) whose new tensors use codec 10 (1.5).
    assert_eq!(minor_of(&d), 5);
    let index = index_of(&d);
    assert_eq!(index.root, Root::File);
    assert_eq!(index.entries[0].kind, EntryKind::TorchDelta);
    // The view table is the one `compress` stores (the tied embedding is a view).
    let alone = dir.path().join("alone.dmx");
    dmx::compress(&fx("step_2.pt"), &alone, &quiet()).unwrap();
    assert_eq!(index.entries[0].views, index_of(&alone).entries[0].views);
    let out = dir.path().join("r.pt");
    dmx::delta_reconstruct(&fx("step_1.pt"), &d, &out, &quiet()).unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(fx("step_2.pt")).unwrap()
    );
    let info = dmx::delta_info(&d).unwrap();
    assert!(info.lossless);
    for c in ["weights", "exp_avg", "exp_avg_sq"] {
        assert!(info.components.contains_key(c), "{:?}", info.components);
    }
    assert!(info.files.is_empty());
    // Applying it again to its own output is refused: that is not its base.
    let err = dmx::delta_reconstruct(&out, &d, &dir.path().join("x.pt"), &quiet()).unwrap_err();
    assert!(matches!(err, Error::WrongBase(_)), "{err}");
}

#[test]
fn pt_base_given_as_dmx_and_changed_storages() {
    let dir = scratch();
    let packed = dir.path().join("base.dmx");
    dmx::compress(&fx("step_1.pt"), &packed, &quiet()).unwrap();
    let d = dir.path().join("d.dmxd");
    let r =
        dmx::delta_compress(&packed, &fx("step_2_resized.pt"), &d, &lossless(), &quiet()).unwrap();
    assert_eq!(r.added, ["model.extra_buffer"]);
    assert!(
        r.reshaped.contains(&"model.mlp.0.weight".to_string()),
        "{r:?}"
    );
    assert!(r.delta_tensors > 0);
    let want = std::fs::read(fx("step_2_resized.pt")).unwrap();
    for base in [packed, fx("step_1.pt")] {
        let out = dir.path().join("r.pt");
        dmx::delta_reconstruct(&base, &d, &out, &forced()).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), want);
    }
}

#[test]
fn pt_and_safetensors_mix_and_quantized_torch_is_refused() {
    let dir = scratch();
    // A .pt base, a safetensors target: names differ, so everything is stored whole.
    let d = dir.path().join("d.dmxd");
    let target = fx("ckpt_2/model.safetensors");
    let r = dmx::delta_compress(&fx("step_1.pt"), &target, &d, &lossless(), &quiet()).unwrap();
    assert_eq!(r.delta_tensors, 0);
    assert_eq!(index_of(&d).entries[0].kind, EntryKind::SafetensorsDelta);
    let out = dir.path().join("r.safetensors");
    dmx::delta_reconstruct(&fx("step_1.pt"), &d, &out, &quiet()).unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&target).unwrap()
    );
    // Quantized deltas of torch.save targets would break the zip's CRC-32s: refused.
    let q = DeltaOptions {
        precision: Precision::Int16,
        steps: None,
    };
    let bad = dir.path().join("q.dmxd");
    let err =
        dmx::delta_compress(&fx("step_1.pt"), &fx("step_2.pt"), &bad, &q, &quiet()).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("lossless"), "{err}");
    assert!(!bad.exists());
    // A file and a folder do not pair.
    let err = dmx::delta_compress(&fx("ckpt_1"), &fx("step_2.pt"), &bad, &lossless(), &quiet())
        .unwrap_err();
    assert!(err.to_string().contains("two checkpoint"), "{err}");
}

#[test]
fn corrupt_pt_deltas_fail_without_output() {
    let dir = scratch();
    let d = dir.path().join("d.dmxd");
    dmx::delta_compress(
        &fx("step_1.pt"),
        &fx("step_2.pt"),
        &d,
        &lossless(),
        &quiet(),
    )
    .unwrap();
    let bytes = std::fs::read(&d).unwrap();
    let want = std::fs::read(fx("step_2.pt")).unwrap();
    let (bad, out) = (dir.path().join("bad.dmxd"), dir.path().join("r.pt"));
    let mut failures = 0;
    for at in (16..bytes.len()).step_by(bytes.len() / 61) {
        let mut b = bytes.clone();
        b[at] ^= 0x21;
        std::fs::write(&bad, &b).unwrap();
        match dmx::delta_reconstruct(&fx("step_1.pt"), &bad, &out, &quiet()) {
            Err(e) => {
                failures += 1;
                assert!(e.is_integrity_failure(), "byte {at}: {e}");
                assert!(!out.exists(), "byte {at}: partial output");
            }
            Ok(()) => {
                assert_eq!(std::fs::read(&out).unwrap(), want, "byte {at}");
                std::fs::remove_file(&out).unwrap();
            }
        }
    }
    assert!(failures > 30, "{failures}");
}

#[test]
fn folder_deltas_rebuild_the_folder_byte_for_byte() {
    let dir = scratch();
    let d = dir.path().join("f.dmxd");
    let r = dmx::delta_compress(&fx("ckpt_1"), &fx("ckpt_2"), &d, &lossless(), &quiet()).unwrap();
    assert_eq!(r.files.len(), 5);
    let index = index_of(&d);
    assert_eq!(index.root, Root::Directory);
    let kind = |p: &str| index.entries.iter().find(|e| e.path == p).unwrap();
    assert_eq!(kind("model.safetensors").kind, EntryKind::SafetensorsDelta);
    assert_eq!(kind("optimizer.pt").kind, EntryKind::TorchDelta);
    assert_eq!(kind("trainer_state.json").kind, EntryKind::Blob);
    assert!(kind("trainer_state.json").base.is_none());
    // Each delta entry names its own base file.
    let opt = std::fs::read(fx("ckpt_1/optimizer.pt")).unwrap();
    let base = kind("optimizer.pt").base.clone().unwrap();
    assert_eq!(base.size, opt.len() as u64);
    let info = dmx::delta_info(&d).unwrap();
    assert_eq!(info.files.len(), 5);
    assert!(info.components.contains_key("exp_avg"));
    let out = dir.path().join("out");
    dmx::delta_reconstruct(&fx("ckpt_1"), &d, &out, &quiet()).unwrap();
    assert_eq!(files_of(&out), files_of(&fx("ckpt_2")));
    // An existing folder is refused without --force.
    let err = dmx::delta_reconstruct(&fx("ckpt_1"), &d, &out, &quiet()).unwrap_err();
    assert!(matches!(err, Error::Exists(_)), "{err}");
    // `decompress` refuses a folder delta.
    let err = dmx::decompress(&d, &dir.path().join("o2"), &quiet()).unwrap_err();
    assert!(err.to_string().contains("delta-reconstruct"), "{err}");
}

#[test]
fn folder_deltas_with_added_removed_and_retyped_files() {
    let dir = scratch();
    let (base, target) = (dir.path().join("base"), dir.path().join("target"));
    copy_dir(&fx("ckpt_1"), &base);
    copy_dir(&fx("ckpt_2"), &target);
    std::fs::remove_file(target.join("rng_state.pth")).unwrap();
    std::fs::create_dir(target.join("sub")).unwrap();
    std::fs::write(target.join("sub/config.json"), b"{\"a\": 1}").unwrap();
    std::fs::copy(fx("step_2.pt"), target.join("sub/extra.pt")).unwrap();
    // Base file that is not a checkpoint, target file that is: stored whole.
    std::fs::write(base.join("scheduler.pt"), b"not a torch file").unwrap();
    let d = dir.path().join("f.dmxd");
    let r = dmx::delta_compress(&base, &target, &d, &lossless(), &quiet()).unwrap();
    assert_eq!(r.removed_files, ["rng_state.pth"]);
    let kinds: Vec<(String, String)> = r
        .files
        .iter()
        .map(|f| (f.path.clone(), f.kind.clone()))
        .collect();
    assert!(
        kinds.contains(&("scheduler.pt".into(), "torch".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("sub/extra.pt".into(), "torch".into())),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("optimizer.pt".into(), "torch-delta".into())));
    let out = dir.path().join("out");
    dmx::delta_reconstruct(&base, &d, &out, &quiet()).unwrap();
    assert_eq!(files_of(&out.join("sub")), files_of(&target.join("sub")));
    std::fs::remove_dir_all(out.join("sub")).unwrap();
    std::fs::remove_dir_all(target.join("sub")).unwrap();
    assert_eq!(files_of(&out), files_of(&target));
}

#[test]
fn folder_reconstruct_refuses_wrong_bases_and_writes_atomically() {
    let dir = scratch();
    let d = dir.path().join("f.dmxd");
    dmx::delta_compress(&fx("ckpt_1"), &fx("ckpt_2"), &d, &lossless(), &quiet()).unwrap();
    std::fs::write(dir.path().join("unrelated.txt"), b"keep").unwrap();
    let out = dir.path().join("out");
    // A base folder whose optimizer.pt is another step's: refused, nothing written.
    let wrong = dir.path().join("wrong");
    copy_dir(&fx("ckpt_1"), &wrong);
    std::fs::copy(fx("ckpt_3/optimizer.pt"), wrong.join("optimizer.pt")).unwrap();
    let err = dmx::delta_reconstruct(&wrong, &d, &out, &quiet()).unwrap_err();
    assert!(matches!(err, Error::WrongBase(_)), "{err}");
    assert!(!out.exists());
    // A base folder that lacks a file, or a base file instead of a folder.
    std::fs::remove_file(wrong.join("optimizer.pt")).unwrap();
    let err = dmx::delta_reconstruct(&wrong, &d, &out, &quiet()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = dmx::delta_reconstruct(&fx("step_1.pt"), &d, &out, &quiet()).unwrap_err();
    assert!(err.to_string().contains("base folder"), "{err}");
    assert!(!out.exists());
    // A corrupt delta: nothing written, integrity failure.
    let mut bytes = std::fs::read(&d).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x10;
    let bad = dir.path().join("bad.dmxd");
    std::fs::write(&bad, &bytes).unwrap();
    let err = dmx::delta_reconstruct(&fx("ckpt_1"), &bad, &out, &quiet()).unwrap_err();
    assert!(err.is_integrity_failure(), "{err}");
    assert!(!out.exists());
    // Into an existing folder with --force: its other files are kept.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    dmx::delta_reconstruct(&fx("ckpt_1"), &d, &out, &forced()).unwrap();
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(
        std::fs::read(out.join("optimizer.pt")).unwrap(),
        std::fs::read(fx("ckpt_2/optimizer.pt")).unwrap()
    );
    assert_eq!(
        std::fs::read(dir.path().join("unrelated.txt")).unwrap(),
        b"keep"
    );
    // No temporaries left beside the output.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".dmx-tmp")),
        "{names:?}"
    );
}

/// Three checkpoint folders whose consecutive deltas are small: `a` (step 2), `b` (the same
/// tensors, another trainer_state.json), `c` (`b` with step 3's optimizer state).
fn folder_steps(root: &Path) -> Vec<PathBuf> {
    let (a, b, c) = (root.join("a"), root.join("b"), root.join("c"));
    copy_dir(&fx("ckpt_2"), &a);
    copy_dir(&fx("ckpt_2"), &b);
    std::fs::write(b.join("trainer_state.json"), b"{\"global_step\": 2.5}").unwrap();
    copy_dir(&b, &c);
    std::fs::copy(fx("ckpt_3/optimizer.pt"), c.join("optimizer.pt")).unwrap();
    vec![a, b, c]
}

#[test]
fn chains_of_folders_restore_every_folder_and_verify() {
    let dir = scratch();
    let steps = folder_steps(dir.path());
    let chain = dir.path().join("chain");
    let c = dmx::chain::ChainOptions::default();
    let r = dmx::chain::chain_compress(&steps[..2], &chain, &c, &quiet()).unwrap();
    assert_eq!(r.entries, 2);
    let r = dmx::chain::chain_append(&chain, &steps[2..], &quiet()).unwrap();
    assert_eq!(r.entries, 3);
    let m = dmx::chain::read_manifest(&chain).unwrap();
    assert!(m.entries.iter().all(|e| e.folder));
    assert_eq!(m.entries[1].kind, dmx::chain::ChainEntryKind::Delta);
    for e in &m.entries {
        assert!(e.stored_size <= e.standalone_size, "{e:?}");
    }
    // The delta entry is a folder delta whose optimizer.pt is a torch delta.
    let index = index_of(&chain.join(&m.entries[1].file));
    assert_eq!(index.root, Root::Directory);
    assert!(
        index
            .entries
            .iter()
            .any(|e| e.path == "optimizer.pt" && e.kind == EntryKind::TorchDelta)
    );
    let v = dmx::chain::chain_verify(&chain, &quiet()).unwrap();
    assert!(v.ok, "{v:?}");
    let out = dir.path().join("out");
    let rr = dmx::chain::chain_reconstruct(&chain, &out, None, &quiet()).unwrap();
    assert!(rr.ok, "{rr:?}");
    for s in &steps {
        let name = s.file_name().unwrap();
        assert_eq!(files_of(&out.join(name)), files_of(s), "{name:?}");
    }
    // Restoring over existing folders needs --force, which keeps their other files.
    let err = dmx::chain::chain_reconstruct(&chain, &out, Some(&[2]), &quiet()).unwrap_err();
    assert!(matches!(err, Error::Exists(_)), "{err}");
    std::fs::write(out.join("c/notes.txt"), b"mine").unwrap();
    let rr = dmx::chain::chain_reconstruct(&chain, &out, Some(&[2]), &forced()).unwrap();
    assert!(rr.ok);
    assert_eq!(std::fs::read(out.join("c/notes.txt")).unwrap(), b"mine");
}

#[test]
fn folder_chain_damage_is_found() {
    let dir = scratch();
    let steps = folder_steps(dir.path());
    let chain = dir.path().join("chain");
    let c = dmx::chain::ChainOptions::default();
    dmx::chain::chain_compress(&steps, &chain, &c, &quiet()).unwrap();
    // A manifest whose folder hash is another folder's: every restore of it fails.
    let path = chain.join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let m = dmx::chain::read_manifest(&chain).unwrap();
    let (good, other) = (&m.entries[1].original_sha256, &m.entries[0].original_sha256);
    std::fs::write(&path, text.replace(good.as_str(), other)).unwrap();
    let v = dmx::chain::chain_verify(&chain, &quiet()).unwrap();
    assert!(!v.ok);
    assert!(
        v.entries[0].restored_ok && !v.entries[1].restored_ok,
        "{v:?}"
    );
    let why = v.entries[1].error.clone().unwrap();
    assert!(why.contains("another folder"), "{why}");
    std::fs::write(&path, text).unwrap();
    // A stored delta swapped for another entry's file: refused as corrupt.
    let last = chain.join(&m.entries[2].file);
    std::fs::copy(chain.join(&m.entries[0].file), &last).unwrap();
    let v = dmx::chain::chain_verify(&chain, &quiet()).unwrap();
    assert!(!v.ok && !v.entries[2].stored_ok);
}

#[test]
fn chains_of_pt_files() {
    let dir = scratch();
    let (x, y) = (dir.path().join("x.pt"), dir.path().join("y.pt"));
    std::fs::copy(fx("step_2.pt"), &x).unwrap();
    std::fs::copy(fx("step_2.pt"), &y).unwrap();
    let steps = vec![x, y, fx("step_3.pt")];
    let chain = dir.path().join("chain");
    let c = dmx::chain::ChainOptions {
        max_depth: 1,
        ..Default::default()
    };
    dmx::chain::chain_compress(&steps, &chain, &c, &quiet()).unwrap();
    let m = dmx::chain::read_manifest(&chain).unwrap();
    use dmx::chain::ChainEntryKind::{Anchor, Delta};
    let kinds: Vec<_> = m.entries.iter().map(|e| e.kind).collect();
    // The depth limit forces the third entry to be an anchor.
    assert_eq!(kinds, [Anchor, Delta, Anchor]);
    assert!(m.entries.iter().all(|e| !e.folder));
    let index = index_of(&chain.join(&m.entries[1].file));
    assert_eq!(index.entries[0].kind, EntryKind::TorchDelta);
    let out = dir.path().join("out");
    assert!(
        dmx::chain::chain_reconstruct(&chain, &out, None, &quiet())
            .unwrap()
            .ok
    );
    for s in &steps {
        let name = s.file_name().unwrap();
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(s).unwrap()
        );
    }
    assert!(dmx::chain::chain_verify(&chain, &quiet()).unwrap().ok);
}

#[test]
fn chains_refuse_mixed_and_quantized_torch_checkpoints() {
    let dir = scratch();
    let chain = dir.path().join("chain");
    let c = dmx::chain::ChainOptions::default();
    let err = dmx::chain::chain_compress(&[fx("ckpt_1"), fx("step_2.pt")], &chain, &c, &quiet())
        .unwrap_err();
    assert!(
        err.to_string().contains("all files or all folders"),
        "{err}"
    );
    assert!(!chain.exists());
    let q = dmx::chain::ChainOptions {
        precision: Precision::Int16,
        ..Default::default()
    };
    for input in [fx("ckpt_1"), fx("step_1.pt")] {
        let err = dmx::chain::chain_compress(std::slice::from_ref(&input), &chain, &q, &quiet())
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("lossless"), "{err}");
        assert!(!chain.exists());
    }
    // A folder chain takes no file, and the reverse.
    dmx::chain::chain_compress(&[fx("ckpt_1")], &chain, &c, &quiet()).unwrap();
    let err = dmx::chain::chain_append(&chain, &[fx("step_1.pt")], &quiet()).unwrap_err();
    assert!(
        err.to_string().contains("all files or all folders"),
        "{err}"
    );
    assert_eq!(dmx::chain::read_manifest(&chain).unwrap().entries.len(), 1);
}

#[test]
fn chains_refuse_folders_that_are_not_checkpoints() {
    let dir = scratch();
    let c = dmx::chain::ChainOptions::default();
    let chain = dir.path().join("chain");
    dmx::chain::chain_compress(&[fx("step_1.pt")], &chain, &c, &quiet()).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), b"no tensors").unwrap();
    for (input, why) in [(&chain, "is a dmx chain"), (&empty, "holds no")] {
        let out = dir.path().join("c2");
        let err = dmx::chain::chain_compress(std::slice::from_ref(input), &out, &c, &quiet())
            .unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
        assert!(!out.exists());
    }
}
