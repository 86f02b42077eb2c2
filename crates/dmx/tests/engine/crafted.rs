//! Hand-crafted format 1.2 archives (issue 11, hostile pass): indexes that pass the
//! container's checks but lie about packed tensors, packed files and tensor sizes. Every
//! reader (open, info, verify, decompress, extract, diff) must fail cleanly or detect the
//! damage: no panic, no wrong data reported as good, no file left behind.

use dmx_testkit as common;

use std::path::{Path, PathBuf};

use common::{Layout, Mode, Tensor};
use dmx::dmx_format::{EntryKind, Index, SegmentKind};
use dmx::{Archive, Options};

fn opts() -> Options {
    Options {
        threads: Some(2),
        ..Options::default()
    }
}

/// A folder with a safetensors file of many tiny tensors (packed tensor segments) and small
/// text files (a pack), compressed; returns (scratch, folder, archive path).
fn packed() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = common::scratch();
    let folder = dir.path().join("in");
    let tensors: Vec<Tensor> = (0..20u64)
        .map(|i| Tensor::generated(&format!("t.{i:02}"), "F32", &[4], Mode::Weights, i))
        .collect();
    common::write(
        &folder.join("model.safetensors"),
        &common::safetensors(&tensors, &Layout::default()),
    );
    for i in 0..10 {
        common::write(
            &folder.join(format!("f{i}.txt")),
            format!("file {i}\n").as_bytes(),
        );
    }
    let archive = dir.path().join("a.dmx");
    dmx::compress(&folder, &archive, &opts()).unwrap();
    (dir, folder, archive)
}

/// What each reader made of a crafted archive.
#[derive(Debug)]
struct Outcome {
    /// The error of `Archive::open`, if it failed (nothing else is tried then).
    open: Option<dmx::Error>,
    /// `verify` without and with the original: passed?
    verify: (bool, bool),
    /// The error of `decompress`, if it failed.
    decompress: Option<dmx::Error>,
    /// Whether the decompress destination exists afterwards.
    left: bool,
    /// The error of extracting `name`, if it failed.
    extract: Option<dmx::Error>,
}

/// Runs every reader on `path` (a crafted archive of `original`), extracting `name`.
fn outcome(path: &Path, original: &Path, name: &str) -> Outcome {
    let archive = match Archive::open(path) {
        Ok(a) => a,
        Err(e) => {
            return Outcome {
                open: Some(e),
                verify: (false, false),
                decompress: None,
                left: false,
                extract: None,
            };
        }
    };
    let _ = dmx::Stats::of_archive(&archive);
    let ok = |r: dmx::Result<dmx::VerifyReport>| r.is_ok_and(|r| r.ok);
    let verify = (
        ok(dmx::verify(&archive, None, &opts())),
        ok(dmx::verify(&archive, Some(original), &opts())),
    );
    let dest = path.with_extension("out");
    let decompress = dmx::decompress(path, &dest, &opts()).err();
    let left = dest.exists();
    let x = path.with_extension("x.safetensors");
    let extract = dmx::extract(&archive, &[name.to_string()], &x, &opts()).err();
    Outcome {
        open: None,
        verify,
        decompress,
        left,
        extract,
    }
}

fn model_entry(index: &mut Index) -> &mut dmx::dmx_format::Entry {
    index
        .entries
        .iter_mut()
        .find(|e| e.kind == EntryKind::Safetensors)
        .unwrap()
}

fn packed_members(index: &mut Index) -> &mut Vec<dmx::dmx_format::PackedTensor> {
    model_entry(index)
        .segments
        .iter_mut()
        .find_map(|s| match &mut s.kind {
            SegmentKind::Packed(m) => Some(m),
            _ => None,
        })
        .expect("a packed tensor segment")
}

fn first_packed_file(index: &Index) -> usize {
    index
        .entries
        .iter()
        .position(|e| e.kind == EntryKind::Packed)
        .unwrap()
}

/// Runs `edit` on a fresh copy of the packed archive's index and every reader on the result.
fn crafted(edit: impl FnOnce(&mut Index), name: &str) -> Outcome {
    let (dir, folder, archive) = packed();
    let out = dir.path().join("crafted.dmx");
    common::craft_index(&archive, &out, edit);
    outcome(&out, &folder, name)
}

fn corrupt_at_open(o: &Outcome) -> bool {
    o.open.as_ref().is_some_and(|e| e.is_integrity_failure())
}

#[test]
fn packed_tensor_sizes_that_disagree_with_their_shapes_are_refused_at_open() {
    let swapped = crafted(
        |i| {
            let m = packed_members(i);
            m[0].len += 4;
            m[1].len -= 4;
        },
        "t.00",
    );
    assert!(corrupt_at_open(&swapped), "{swapped:?}");
    let scalar = crafted(|i| packed_members(i)[0].info.shape = vec![], "t.00");
    assert!(corrupt_at_open(&scalar), "{scalar:?}");
}

#[test]
fn unchecked_dtypes_with_moved_boundaries_do_not_panic() {
    // Unknown dtypes are not size-checked (FORMAT.md §5.6 rule 14): the boundaries between
    // packed members may move, even to an empty member; every reader copes.
    for zero in [false, true] {
        let o = crafted(
            |i| {
                let m = packed_members(i);
                m[0].info.dtype = "X".into();
                m[1].info.dtype = "X".into();
                if zero {
                    m[1].len += m[0].len;
                    m[0].len = 0;
                } else {
                    m[0].len += 4;
                    m[1].len -= 4;
                }
            },
            "t.00",
        );
        assert!(o.open.is_none() && o.decompress.is_none(), "{o:?}");
        assert!(
            o.verify.0 && o.verify.1,
            "the restored bytes are the original's: {o:?}"
        );
    }
}

#[test]
fn a_tensor_name_twice_in_one_file_is_not_extracted_silently() {
    let o = crafted(
        |i| {
            let m = packed_members(i);
            m[1].info.name = m[0].info.name.clone();
        },
        "t.00",
    );
    let e = o.extract.as_ref().expect("extract refuses");
    assert!(e.is_integrity_failure(), "{e}");
    assert!(
        e.to_string().contains("2 tensors are named \"t.00\""),
        "{e}"
    );
}

#[test]
fn packed_file_boundaries_that_move_are_caught_before_any_file_is_written() {
    let o = crafted(
        |i| {
            let p = first_packed_file(i);
            i.entries[p].size += 1;
            i.entries[p + 1].size -= 1;
        },
        "t.00",
    );
    assert!(o.open.is_none(), "{o:?}");
    assert!(!o.verify.0 && !o.verify.1, "{o:?}");
    let e = o.decompress.as_ref().expect("decompress fails");
    assert!(e.is_integrity_failure(), "{e}");
    assert!(!o.left, "nothing restored");
}

#[test]
fn unsafe_or_shared_packed_file_paths_are_refused_at_open() {
    let dup = crafted(
        |i| {
            let p = first_packed_file(i);
            i.entries[p + 1].path = i.entries[p].path.clone();
        },
        "t.00",
    );
    assert!(corrupt_at_open(&dup), "{dup:?}");
    let up = crafted(
        |i| {
            let p = first_packed_file(i);
            i.entries[p].path = "../evil".into();
        },
        "t.00",
    );
    assert!(corrupt_at_open(&up), "{up:?}");
}

#[test]
fn a_file_path_under_another_file_restores_nothing() {
    // "model.safetensors/x" beside the file "model.safetensors": valid by the format's
    // rules, but it cannot be restored; the run fails and leaves no destination behind.
    let o = crafted(
        |i| {
            let p = first_packed_file(i);
            i.entries[p].path = "model.safetensors/x".into();
        },
        "t.00",
    );
    assert!(o.open.is_none() && o.decompress.is_some(), "{o:?}");
    assert!(!o.left, "{o:?}");
}
