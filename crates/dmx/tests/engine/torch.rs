//! `torch.save` files in archives (issue 14): byte-exact round trips of every dmx-pt
//! fixture and of folders of `.pt`/`.bin` files; their tensors listed and read by name path,
//! views gathered contiguous; `info`, `extract` and `diff` on them; a view outside its
//! storage refused at open; and the golden torch vectors (`tests/vectors/torch-*`).

use dmx_testkit as common;

use std::path::{Path, PathBuf};

use dmx::dmx_format::EntryKind;
use dmx::tensors::TensorFile;
use dmx::{Archive, Options};

fn opts() -> Options {
    Options {
        threads: Some(2),
        no_sync: true,
        ..Options::default()
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dmx-pt/tests/fixtures")
}

/// Every `.pt` fixture of dmx-pt (file names).
fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pt"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    names
}

/// Copies fixture `name` into `dir` and compresses it; returns (copy, archive).
fn compressed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let src = dir.join(name);
    std::fs::copy(fixtures().join(name), &src).unwrap();
    let dmx = dir.join(format!("{name}.dmx"));
    let o = Options {
        force: true,
        ..opts()
    };
    dmx::compress(&src, &dmx, &o).unwrap();
    (src, dmx)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn every_fixture_round_trips_and_reads_like_the_file() {
    let dir = common::scratch();
    for name in fixture_names() {
        let (src, dmx) = compressed(dir.path(), &name);
        let out = dir.path().join(format!("{name}.out"));
        dmx::decompress(&dmx, &out, &opts()).unwrap();
        assert!(
            std::fs::read(&src).unwrap() == std::fs::read(&out).unwrap(),
            "{name}: not byte-exact"
        );
        let archive = Archive::open(&dmx).unwrap();
        assert_eq!(archive.index().entries[0].kind, EntryKind::Torch, "{name}");
        // The file and its archive list the same tensors with the same bytes.
        let (plain, packed) = (
            TensorFile::open(&src).unwrap(),
            TensorFile::open(&dmx).unwrap(),
        );
        assert!(plain.is_torch() && packed.is_torch() && packed.is_archive());
        assert_eq!(plain.tensors().len(), archive.tensors().count(), "{name}");
        for (a, b) in plain.tensors().iter().zip(packed.tensors()) {
            assert_eq!(
                (&a.name, &a.dtype, &a.shape, a.len),
                (&b.name, &b.dtype, &b.shape, b.len)
            );
            let (x, y) = (plain.read(&a.name).unwrap(), packed.read(&b.name).unwrap());
            assert!(x == y, "{name}: tensor {:?} differs", a.name);
            assert_eq!(x.len() as u64, a.len);
        }
        assert_eq!(plain.sha256().unwrap(), packed.sha256().unwrap());
        let report = dmx::diff::diff(&src, &dmx, &opts()).unwrap();
        assert!(report.identical, "{name}");
    }
}

#[test]
fn views_are_gathered_in_row_major_order() {
    let dir = common::scratch();
    let (_, dmx) = compressed(dir.path(), "views.pt");
    let a = Archive::open(&dmx).unwrap();
    let names: Vec<&str> = a.tensors().map(|t| t.info.name.as_str()).collect();
    for want in [
        "base",
        "slice",
        "transposed",
        "strided",
        "tied.0",
        "tied.1",
        "tied.2.0",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let base = f32s(&a.read_tensor("base").unwrap());
    assert_eq!(base.len(), 64);
    assert_eq!(f32s(&a.read_tensor("slice").unwrap()), base[10..20]);
    let strided: Vec<f32> = (0..13).map(|i| base[3 + 5 * i]).collect();
    assert_eq!(f32s(&a.read_tensor("strided").unwrap()), strided);
    let transposed: Vec<f32> = (0..64).map(|k| base[(k % 8) * 8 + k / 8]).collect();
    let t = a.tensor("transposed").unwrap();
    assert!(!t.is_contiguous() && t.view.is_some());
    assert_eq!(f32s(&a.read_tensor("transposed").unwrap()), transposed);
    // Into caller memory, whole and by rows.
    let mut buf = vec![0u8; 256];
    a.read_ref_into(t, &mut buf).unwrap();
    assert_eq!(f32s(&buf), transposed);
    let mut rows = vec![0u8; 3 * 32];
    a.read_ref_rows_into(t, 2..5, &mut rows).unwrap();
    assert_eq!(f32s(&rows), transposed[16..40]);
    // A contiguous view at an offset reads by rows straight from its chunks.
    let tied0 = a.read_tensor("tied.0").unwrap();
    let tied1 = a.tensor("tied.1").unwrap();
    assert!(tied1.is_contiguous());
    let mut rows = vec![0u8; 2 * 8];
    a.read_ref_rows_into(tied1, 1..3, &mut rows).unwrap();
    assert_eq!(rows, tied0[24..40]);
    // tied.2.0 is tied.0's storage seen as [4, 6] with strides [1, 4].
    let t20 = a.read_tensor("tied.2.0").unwrap();
    for (k, pair) in t20.chunks(2).enumerate() {
        let e = (k % 6) * 4 + k / 6;
        assert_eq!(pair, &tied0[2 * e..2 * e + 2]);
    }
    assert_eq!(a.tensor("scalar").unwrap().len, 2);
}

#[test]
fn info_lists_name_paths_and_components() {
    let dir = common::scratch();
    let (_, dmx) = compressed(dir.path(), "adamw.pt");
    let s = dmx::Stats::of_archive(&Archive::open(&dmx).unwrap());
    assert_eq!(s.files[0].kind, "torch");
    let names: Vec<&str> = s.files[0].tensors.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"optimizer.state.0.exp_avg_sq"), "{names:?}");
    let comp = |c: &str| {
        s.components
            .iter()
            .find(|x| x.component.as_str() == c)
            .unwrap_or_else(|| panic!("{c} in {:?}", s.components))
    };
    assert_eq!(comp("weights").params, 16 * 8 + 16 + 16 + 16 + 4 * 16 + 4);
    assert_eq!(comp("exp_avg").params, comp("weights").params);
    assert_eq!(comp("exp_avg_sq").params, comp("weights").params);
    assert!(comp("other_state").params >= 6, "steps");
    let total: u64 = s.components.iter().map(|c| c.stored_bytes).sum();
    assert_eq!(
        total,
        s.dtypes.values().map(|d| d.stored_bytes).sum::<u64>()
    );
    for c in &s.components {
        assert!(
            c.bits_per_param.is_some_and(|b| b > 0.0 && b <= 64.0),
            "{c:?}"
        );
    }
    let json = serde_json::to_value(&s).unwrap();
    assert!(
        json["components"][1]["bits_per_param"].is_number(),
        "{json}"
    );
    // Views are listed with their storage; rollups count the storage once.
    let (_, dmx) = compressed(dir.path(), "views.pt");
    let s = dmx::Stats::of_archive(&Archive::open(&dmx).unwrap());
    let t = |n: &str| s.files[0].tensors.iter().find(|t| t.name == n).unwrap();
    assert_eq!(t("transposed").shape, [8, 8]);
    assert_eq!(t("transposed").view_of.as_deref(), Some("base"));
    assert_eq!(t("scalar").view_of, None);
    assert_eq!(s.dtypes["F32"].params, 64);
}

/// The tensors of a safetensors file: name → (dtype, shape, bytes).
fn read_safetensors(path: &Path) -> Vec<(String, String, Vec<u64>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let shape = v.shape().iter().map(|&d| d as u64).collect();
            (n, format!("{:?}", v.dtype()), shape, v.data().to_vec())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn extract_writes_every_tensor_by_name_path() {
    let dir = common::scratch();
    for name in ["views.pt", "adamw.pt", "legacy.pt"] {
        let (src, dmx) = compressed(dir.path(), name);
        let a = Archive::open(&dmx).unwrap();
        let out = dir.path().join(format!("{name}.safetensors"));
        dmx::extract_from(&a, None, &[], &out, &opts()).unwrap();
        let got = read_safetensors(&out);
        let plain = TensorFile::open(&src).unwrap();
        assert_eq!(got.len(), plain.tensors().len(), "{name}");
        for (n, dtype, shape, data) in &got {
            let t = plain.get(n).unwrap();
            assert_eq!((dtype, shape), (&t.dtype, &t.shape), "{name}: {n}");
            assert!(
                plain.read(n).unwrap().as_ref() == data.as_slice(),
                "{name}: {n}"
            );
        }
        // A .pt and the extracted safetensors of its tensors diff to zero.
        let report = dmx::diff::diff(&src, &out, &opts()).unwrap();
        assert!(
            report.identical && report.totals.compared == got.len(),
            "{name}"
        );
    }
    // torch.save(tensor): the nameless tensor is called `tensor`.
    let (_, dmx) = compressed(dir.path(), "single.pt");
    let a = Archive::open(&dmx).unwrap();
    let out = dir.path().join("single.safetensors");
    dmx::extract(&a, &["tensor".into()], &out, &opts()).unwrap();
    let got = read_safetensors(&out);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.as_str(), &got[0].2), ("tensor", &vec![2, 3]));
    // Named views of a .pt.
    let (_, dmx) = compressed(dir.path(), "views.pt");
    let a = Archive::open(&dmx).unwrap();
    let out = dir.path().join("two.safetensors");
    let names = ["transposed".to_string(), "tied.1".to_string()];
    dmx::extract(&a, &names, &out, &opts()).unwrap();
    let got = read_safetensors(&out);
    assert_eq!(got[0].3, a.read_tensor("tied.1").unwrap());
    assert_eq!(got[1].3, a.read_tensor("transposed").unwrap());
}

#[test]
fn folder_of_pt_and_bin_files_round_trips_and_extracts_per_file() {
    let dir = common::scratch();
    let folder = dir.path().join("ckpt");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    for (from, to) in [
        ("model_f32.pt", "pytorch_model.bin"),
        ("adamw.pt", "optimizer.pt"),
        ("model_bf16.pt", "sub/model.pth"),
        ("legacy.pt", "legacy.ckpt"),
    ] {
        std::fs::copy(fixtures().join(from), folder.join(to)).unwrap();
    }
    common::write(&folder.join("notes.txt"), b"not a checkpoint\n");
    let dmx = dir.path().join("ckpt.dmx");
    dmx::compress(&folder, &dmx, &opts()).unwrap();
    let out = dir.path().join("out");
    dmx::decompress(&dmx, &out, &opts()).unwrap();
    assert_eq!(common::tree(&folder), common::tree(&out));
    let a = Archive::open(&dmx).unwrap();
    let torch = a
        .index()
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Torch);
    assert_eq!(torch.count(), 4);
    // The same name in two files: name the file.
    let x = dir.path().join("x.safetensors");
    let e = dmx::extract(&a, &["layer.0.weight".into()], &x, &opts()).unwrap_err();
    assert!(e.to_string().contains("name the file"), "{e}");
    dmx::extract_from(&a, Some("sub/model.pth"), &[], &x, &opts()).unwrap();
    let got = read_safetensors(&x);
    assert_eq!(got.len(), 6);
    assert!(got.iter().all(|t| t.1 == "BF16"));
    let e = dmx::extract_from(&a, None, &[], &x, &opts()).unwrap_err();
    assert!(matches!(e, dmx::Error::InvalidArgument(_)), "{e}");
    let e = dmx::extract_from(&a, Some("nope.pt"), &[], &x, &opts()).unwrap_err();
    assert!(matches!(e, dmx::Error::InvalidArgument(_)), "{e}");
    assert_eq!(dmx::Stats::of_archive(&a).files.len(), 5);
}

#[test]
fn a_view_outside_its_storage_is_corrupt() {
    let dir = common::scratch();
    let (_, dmx) = compressed(dir.path(), "views.pt");
    type Edit = fn(&mut dmx::dmx_format::TorchView);
    let cases: [(&str, Edit); 6] = [
        // One element past the end of base's 64.
        ("slice", |v| v.offset = 55),
        ("strided", |v| v.stride[0] = 6),
        ("transposed", |v| v.shape[1] = 9),
        ("slice", |v| v.offset = u64::MAX / 2),
        ("strided", |v| v.stride[0] = u64::MAX),
        // F16 elements in an F32 storage.
        ("slice", |v| v.dtype = "F16".into()),
    ];
    for (i, (name, edit)) in cases.into_iter().enumerate() {
        let bad = dir.path().join(format!("bad{i}.dmx"));
        common::craft_index(&dmx, &bad, |index| {
            let v = index.entries[0]
                .views
                .iter_mut()
                .find(|v| v.name == name)
                .unwrap();
            edit(v);
        });
        let e = Archive::open(&bad).err().expect("refused");
        assert!(matches!(e, dmx::Error::Corrupt { .. }), "case {i}: {e}");
        assert_eq!(e.exit_code(), 1, "case {i}");
        assert!(TensorFile::open(&bad).is_err());
    }
    // The largest view that fits still opens: base[54..64].
    let ok = dir.path().join("ok.dmx");
    common::craft_index(&dmx, &ok, |index| {
        let v = index.entries[0]
            .views
            .iter_mut()
            .find(|v| v.name == "slice")
            .unwrap();
        v.offset = 54;
    });
    let a = Archive::open(&ok).unwrap();
    let base = a.read_tensor("base").unwrap();
    assert_eq!(a.read_tensor("slice").unwrap(), base[54 * 4..]);
}

/// The golden torch vectors: committed `torch.save` files and their archives.
pub const VECTORS: &[(&str, &str)] = &[
    ("torch-views.pt", "torch-views.dmx"),
    ("torch-adamw.pt", "torch-adamw.dmx"),
];

/// Writes the torch vectors into `d` (the `.pt` files copied from the dmx-pt fixtures of
/// the same names); returns the files written.
pub fn bless_vectors(d: &Path) -> Vec<String> {
    let o = Options {
        force: true,
        threads: Some(2),
        ..Options::default()
    };
    let mut files = Vec::new();
    for (pt, dmx) in VECTORS {
        let src = fixtures().join(pt.trim_start_matches("torch-"));
        std::fs::copy(&src, d.join(pt)).expect("copy torch fixture");
        dmx::compress(&d.join(pt), &d.join(dmx), &o).expect("compress torch vector");
        files.extend([pt.to_string(), dmx.to_string()]);
    }
    files
}

#[test]
fn torch_vectors_decode_and_are_reproduced() {
    let d = crate::vectors::vectors();
    let scratch = common::scratch();
    for (pt, dmx) in VECTORS {
        let input = std::fs::read(d.join(pt)).expect("committed .pt vector");
        let committed = std::fs::read(d.join(dmx)).expect("committed .dmx vector");
        let out = scratch.path().join(pt);
        dmx::decompress(&d.join(dmx), &out, &opts()).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == input,
            "{dmx} decodes to {pt}"
        );
        let a = Archive::open(&d.join(dmx)).unwrap();
        // Torch entries (1.3) with codec 10 chunks (1.5).
        assert_eq!(a.version(), (1, 5));
        assert_eq!(a.index().entries[0].kind, EntryKind::Torch);
        for t in a.tensors() {
            assert_eq!(a.read_tensor_ref(t).unwrap().len() as u64, t.len);
        }
        for threads in [1, 2] {
            let fresh = scratch.path().join(format!("t{threads}-{dmx}"));
            let o = Options {
                threads: Some(threads),
                ..opts()
            };
            dmx::compress(&d.join(pt), &fresh, &o).unwrap();
            assert!(
                std::fs::read(&fresh).unwrap() == committed,
                "{dmx} ({threads} threads): the encoder's output changed; regenerate with \
                 `DMX_BLESS=1 cargo test -p dmx --test engine vectors::`"
            );
        }
    }
    // The views vector has views into a shared storage.
    let a = Archive::open(&d.join("torch-views.dmx")).unwrap();
    assert!(!a.index().entries[0].views.is_empty());
}
