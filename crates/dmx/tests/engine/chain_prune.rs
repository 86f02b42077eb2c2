//! `chain_prune`: kept entries restore byte for byte (a kept delta whose parent goes is
//! re-anchored), unrelated files survive, a failed prune deletes nothing.

use dmx_testkit as common;

use std::path::{Path, PathBuf};

use common::diff_pairs::{f32_tensor, write_one};
use dmx::chain::{ChainEntryKind, read_manifest};
use dmx::{ChainOptions, Options};

fn opts() -> Options {
    Options {
        threads: Some(2),
        no_sync: true,
        ..Options::default()
    }
}

/// Six checkpoints of two tensors, each a small step from the previous one.
fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut w: Vec<f32> = (0..4096).map(|i| (i as f32 * 0.001).sin()).collect();
    (0..6)
        .map(|s| {
            for (i, v) in w.iter_mut().enumerate() {
                if (i + s) % 7 == 0 {
                    *v += 1e-4;
                }
            }
            let t = [
                f32_tensor("model.w", &[64, 64], &w),
                f32_tensor("optim.state.0.step", &[], &[s as f32]),
            ];
            write_one(dir, &format!("step-{s}"), &t)
        })
        .collect()
}

fn chain(tmp: &Path) -> (PathBuf, Vec<PathBuf>) {
    let ckpts = checkpoints(tmp);
    let dir = tmp.join("chain");
    dmx::chain_compress(&ckpts, &dir, &ChainOptions::default(), &opts()).expect("chain");
    (dir, ckpts)
}

#[test]
fn kept_entries_restore_exactly_and_other_files_survive() {
    let tmp = common::scratch();
    let (dir, ckpts) = chain(tmp.path());
    std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    let before = read_manifest(&dir).unwrap();
    let r = dmx::chain_prune(&dir, &[5, 3, 4], &opts()).expect("prune");
    assert_eq!(r.entries, 3);
    assert_eq!(r.removed.len(), 3);
    let m = read_manifest(&dir).unwrap();
    assert_eq!(m.entries[0].kind, ChainEntryKind::Anchor);
    assert_eq!(
        r.kept[0].reanchored,
        before.entries[3].kind == ChainEntryKind::Delta
    );
    assert!(r.kept.iter().all(|k| !k.dependency));
    // Only the listed entry files remain, plus the user's files.
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut want: Vec<String> = m.entries.iter().map(|e| e.file.clone()).collect();
    want.extend(["manifest.json", "notes.txt", "sub"].map(String::from));
    want.sort();
    assert_eq!(files, want);
    assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"mine");
    let out = tmp.path().join("out");
    let rr = dmx::chain_reconstruct(&dir, &out, None, &opts()).expect("reconstruct");
    assert!(rr.ok);
    for (e, ckpt) in m.entries.iter().zip(&ckpts[3..]) {
        assert_eq!(
            std::fs::read(out.join(&e.name)).unwrap(),
            std::fs::read(ckpt).unwrap()
        );
    }
    assert!(dmx::chain_verify(&dir, &opts()).unwrap().ok);
    // Appending goes on from the pruned chain.
    let extra = write_one(tmp.path(), "step-9", &[f32_tensor("model.w", &[1], &[1.0])]);
    dmx::chain_append(&dir, &[extra], &opts()).expect("append");
    assert_eq!(read_manifest(&dir).unwrap().entries.len(), 4);
}

#[test]
fn a_failed_prune_deletes_nothing() {
    let tmp = common::scratch();
    let (dir, _) = chain(tmp.path());
    let m = read_manifest(&dir).unwrap();
    let Some(i) = m
        .entries
        .iter()
        .position(|e| e.kind == ChainEntryKind::Delta)
    else {
        return; // no delta to re-anchor (identity delta codec)
    };
    // Damage the parent the re-anchoring of entry `i` needs.
    let victim = dir.join(&m.entries[i - 1].file);
    let mut data = std::fs::read(&victim).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&victim, &data).unwrap();
    let tree = common::tree(&dir);
    let err = dmx::chain_prune(&dir, &[i], &opts()).expect_err("must fail");
    assert!(err.is_integrity_failure(), "{err}");
    assert_eq!(common::tree(&dir), tree);
}

#[test]
fn bad_keep_lists_are_refused() {
    let tmp = common::scratch();
    let (dir, _) = chain(tmp.path());
    let tree = common::tree(&dir);
    assert!(dmx::chain_prune(&dir, &[], &opts()).is_err());
    assert!(dmx::chain_prune(&dir, &[6], &opts()).is_err());
    assert_eq!(common::tree(&dir), tree);
}
