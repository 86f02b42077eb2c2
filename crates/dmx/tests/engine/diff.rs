//! `dmx::tensors::TensorFile` over safetensors files and archives, and `dmx::diff::diff`.

use dmx_testkit as common;

use std::path::{Path, PathBuf};

use common::diff_pairs::{self as pairs, sample};
use common::{Layout, Mode, Tensor, plain, safetensors, scratch, write};
use dmx::Options;
use dmx::tensors::TensorFile;
use sha2::Digest;

fn opts() -> Options {
    Options {
        threads: Some(2),
        no_sync: true,
        ..Options::default()
    }
}

/// Writes `tensors` (with metadata) to `dir/name.safetensors` and compresses it to
/// `dir/name.dmx`; returns both paths and the file's bytes.
fn both(dir: &Path, name: &str, tensors: &[Tensor]) -> (PathBuf, PathBuf, Vec<u8>) {
    let layout = Layout {
        metadata: vec![("format".into(), "pt".into())],
        align: true,
        // Header order differs from data order: readers must sort by offset.
        header_order: (0..tensors.len()).rev().collect(),
        ..Layout::default()
    };
    let bytes = safetensors(tensors, &layout);
    let st = dir.join(format!("{name}.safetensors"));
    write(&st, &bytes);
    let packed = dir.join(format!("{name}.dmx"));
    dmx::compress(&st, &packed, &opts()).unwrap();
    (st, packed, bytes)
}

#[test]
fn tensor_file_reads_safetensors_and_archives_alike() {
    let dir = scratch();
    let tensors = sample();
    let (st, packed, bytes) = both(dir.path(), "m", &tensors);
    let a = TensorFile::open(&st).unwrap();
    let b = TensorFile::open(&packed).unwrap();
    assert!(!a.is_archive());
    assert!(b.is_archive());
    assert_eq!(a.path(), st);
    assert_eq!(b.path(), packed);
    assert_eq!(a.tensors(), b.tensors());
    assert_eq!(a.file_len(), bytes.len() as u64);
    assert_eq!(b.file_len(), bytes.len() as u64);
    let names: Vec<&str> = a.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "model.embed.weight",
            "model.layers.0.mlp.weight",
            "model.layers.0.ids",
            "empty",
            "scalar"
        ]
    );
    for t in &tensors {
        let m = a.get(&t.name).unwrap();
        assert_eq!(m.dtype, t.dtype);
        assert_eq!(
            m.shape,
            t.shape.iter().map(|&d| d as u64).collect::<Vec<_>>()
        );
        assert_eq!(
            &bytes[m.offset as usize..(m.offset + m.len) as usize],
            &t.data[..]
        );
        assert_eq!(&*a.read(&t.name).unwrap(), &t.data[..]);
        assert_eq!(&*b.read(&t.name).unwrap(), &t.data[..]);
    }
    assert!(matches!(
        a.read(&tensors[0].name).unwrap(),
        std::borrow::Cow::Borrowed(_)
    ));
    assert!(a.get("missing").is_none());
    assert!(a.read("missing").is_err());
    assert!(b.read("missing").is_err());
    let header_len = a.tensors()[0].offset as usize;
    assert_eq!(a.header().unwrap(), &bytes[..header_len]);
    assert_eq!(b.header().unwrap(), &bytes[..header_len]);
    assert_eq!(a.metadata().unwrap()["format"], "pt");
    assert_eq!(a.metadata(), b.metadata());
    let sha: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    assert_eq!(a.sha256().unwrap(), sha);
    assert_eq!(b.sha256().unwrap(), sha);
}

#[test]
fn tensor_file_without_metadata_or_tensors() {
    let dir = scratch();
    let p = dir.path().join("empty.safetensors");
    write(&p, &plain(&[]));
    let f = TensorFile::open(&p).unwrap();
    assert!(f.tensors().is_empty());
    assert!(f.metadata().is_none());
    assert_eq!(f.header().unwrap(), std::fs::read(&p).unwrap());
}

#[test]
fn tensor_file_rejects_what_it_cannot_read() {
    let dir = scratch();
    let d = dir.path();
    // Not safetensors.
    for (name, bytes) in [
        ("empty", &b""[..]),
        ("short", b"1234"),
        ("text", b"hello world, this is no model"),
    ] {
        let p = d.join(name);
        write(&p, bytes);
        let e = TensorFile::open(&p).err().expect("not a model");
        assert!(matches!(e, dmx::Error::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("safetensors"), "{e}");
    }
    // A huge header length must not allocate.
    let mut huge = (u64::MAX / 2).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    write(&d.join("huge"), &huge);
    assert!(TensorFile::open(&d.join("huge")).is_err());
    // Data not filling the file.
    let mut bytes = plain(&sample());
    bytes.push(0);
    write(&d.join("long.safetensors"), &bytes);
    assert!(TensorFile::open(&d.join("long.safetensors")).is_err());
    // A missing file is an I/O error.
    assert!(matches!(
        TensorFile::open(&d.join("missing")),
        Err(dmx::Error::Io { .. })
    ));

    // Archives of something other than exactly one safetensors file.
    let blob = d.join("notes.txt");
    write(&blob, b"just text");
    dmx::compress(&blob, &d.join("blob.dmx"), &opts()).unwrap();
    let e = TensorFile::open(&d.join("blob.dmx")).err().unwrap();
    assert!(matches!(e, dmx::Error::Unsupported(_)), "{e}");
    assert!(e.to_string().contains("exactly one"), "{e}");
    let folder = d.join("folder");
    common::model_folder(&folder, 3);
    dmx::compress(&folder, &d.join("folder.dmx"), &opts()).unwrap();
    let e = TensorFile::open(&d.join("folder.dmx")).err().unwrap();
    assert!(e.to_string().contains("holds 2 safetensors files"), "{e}");
}

#[test]
fn tensor_file_detects_archive_damage() {
    let dir = scratch();
    let tensors = vec![Tensor::generated("w", "F32", &[64, 64], Mode::Weights, 9)];
    let (_, packed, _) = both(dir.path(), "m", &tensors);
    let mut bytes = std::fs::read(&packed).unwrap();
    // Damage the middle of the data area (the tensor's chunk), not the index.
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    let damaged = dir.path().join("damaged.dmx");
    write(&damaged, &bytes);
    let f = TensorFile::open(&damaged).unwrap();
    let e = f.read("w").unwrap_err();
    assert!(e.is_integrity_failure(), "{e}");
}

// ---------------------------------------------------------------------------------------
// diff

use dmx::diff::{DiffReport, diff};

use dmx::names::{Component, Role};

fn json(report: &DiffReport) -> serde_json::Value {
    let mut v = serde_json::to_value(report).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("a");
    o.remove("b");
    let text = v.to_string();
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    v
}

fn tensor<'a>(r: &'a DiffReport, name: &str) -> &'a dmx::diff::TensorDiff {
    r.tensors.iter().find(|t| t.name == name).unwrap()
}

#[test]
fn diff_of_identical_files() {
    let dir = scratch();
    let tensors = sample();
    let (a, b) = pairs::write(dir.path(), &(tensors.clone(), tensors.clone()));
    let r = diff(&a, &b, &opts()).unwrap();
    assert!(r.identical);
    assert_eq!(r.totals.compared, tensors.len());
    assert_eq!(r.totals.identical, tensors.len());
    assert_eq!(r.totals.stats.changed, 0);
    assert_eq!(r.totals.stats.fraction_changed, 0.0);
    assert_eq!(r.totals.stats.relative_change, Some(0.0));
    assert!(r.added.is_empty() && r.removed.is_empty());
    assert!(r.changed_shape_or_dtype.is_empty() && r.metadata_changed.is_empty());
    for t in &r.tensors {
        assert_eq!(t.changed, 0, "{}", t.name);
        if t.is_float() {
            assert_eq!(t.relative_change, Some(0.0), "{}", t.name);
            assert_eq!(t.cosine, Some(1.0), "{}", t.name);
            assert_eq!(t.max_abs_change, Some(0.0), "{}", t.name);
            assert_eq!(t.norm_a, t.norm_b);
        }
    }
    let ids = tensor(&r, "model.layers.0.ids");
    assert!(!ids.is_float());
    assert_eq!(ids.relative_change, None);
    // Order: A's file order.
    let names: Vec<&str> = r.tensors.iter().map(|t| t.name.as_str()).collect();
    let want: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, want);
    json(&r);
}

#[test]
fn diff_of_a_scaled_tensor() {
    let dir = scratch();
    let pair = pairs::scaled();
    let (a, b) = pairs::write(dir.path(), &pair);
    let base = pair.0;
    let r = diff(&a, &b, &opts()).unwrap();
    assert!(!r.identical);
    for name in [&base[0].name, &base[1].name] {
        let t = tensor(&r, name);
        assert_eq!(t.relative_change, Some(1.0), "{name}");
        assert!((t.cosine.unwrap() - 1.0).abs() < 1e-12, "{name}");
        assert_eq!(t.fraction_changed, 1.0, "{name}");
        assert_eq!(t.changed, t.params);
        assert_eq!(t.norm_b, t.norm_a.map(|n| 2.0 * n));
        assert_eq!(t.norm_diff, t.norm_a);
        assert_eq!(t.nonfinite, 0);
        // The largest change is the largest |A|.
        let max_a = match t.dtype.as_str() {
            "F32" => base[0]
                .data
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()).abs()))
                .fold(0.0, f64::max),
            _ => base[1]
                .data
                .chunks_exact(2)
                .map(|c| {
                    half::bf16::from_le_bytes(c.try_into().unwrap())
                        .to_f64()
                        .abs()
                })
                .fold(0.0, f64::max),
        };
        assert_eq!(t.max_abs_change, Some(max_a), "{name}");
    }
    let head = tensor(&r, "lm_head.weight");
    assert_eq!(head.relative_change, Some(0.0));
    assert_eq!(head.role, Role::Output);
    assert_eq!(r.totals.identical, 1);
    // Rollups: layers 0 and 1, the roles, one component.
    assert_eq!(r.components.len(), 1);
    assert_eq!(r.components[0].component, Component::Weights);
    let layers: Vec<(u32, Option<f64>)> = r
        .layers
        .iter()
        .map(|l| (l.layer, l.stats.relative_change))
        .collect();
    assert_eq!(layers, [(0, Some(1.0)), (1, Some(1.0))]);
    let roles: Vec<Role> = r.roles.iter().map(|x| x.role).collect();
    assert_eq!(roles, [Role::Attention, Role::Mlp, Role::Output]);
    // The total is the relative change of the concatenation.
    let (na, nh) = (
        tensor(&r, &base[0].name).norm_a.unwrap().powi(2)
            + tensor(&r, &base[1].name).norm_a.unwrap().powi(2),
        head.norm_a.unwrap().powi(2),
    );
    let want = (na / (na + nh)).sqrt();
    assert!((r.totals.stats.relative_change.unwrap() - want).abs() < 1e-12);
    json(&r);
}

#[test]
fn diff_of_added_removed_and_reshaped_tensors() {
    let dir = scratch();
    let (a, b) = pairs::write(dir.path(), &pairs::added_removed_reshaped());
    let r = diff(&a, &b, &opts()).unwrap();
    assert!(!r.identical);
    assert_eq!(r.added, ["new"]);
    assert_eq!(r.removed, ["gone"]);
    let changed: Vec<String> = r
        .changed_shape_or_dtype
        .iter()
        .map(|c| {
            format!(
                "{} {}{:?} {}{:?}",
                c.name, c.a_dtype, c.a_shape, c.b_dtype, c.b_shape
            )
        })
        .collect();
    assert_eq!(
        changed,
        ["reshaped F32[2, 2] F32[4]", "retyped F32[2] F64[2]"]
    );
    assert_eq!(r.tensors.len(), 1);
    assert_eq!(r.totals.tensors_a, 4);
    assert_eq!(r.totals.tensors_b, 4);
    assert_eq!(
        (
            r.totals.added,
            r.totals.removed,
            r.totals.changed_shape_or_dtype
        ),
        (1, 1, 2)
    );
    let v = json(&r);
    assert_eq!(v["changed_shape_or_dtype"][1]["b_dtype"], "F64");
}

#[test]
fn diff_of_integer_and_bool_tensors() {
    let dir = scratch();
    let (a, b) = pairs::write(dir.path(), &pairs::integer_and_bool());
    let r = diff(&a, &b, &opts()).unwrap();
    let ids = tensor(&r, "ids");
    assert_eq!((ids.changed, ids.params), (2, 10));
    assert_eq!(ids.fraction_changed, 0.2);
    let mask = tensor(&r, "mask");
    assert_eq!(mask.fraction_changed, 0.5);
    assert_eq!(tensor(&r, "codes").changed, 0);
    for t in &r.tensors {
        assert!(!t.is_float());
        assert_eq!(t.relative_change, None);
        assert_eq!(t.cosine, None);
        assert_eq!(t.max_abs_change, None);
        assert_eq!(t.norm_a, None);
    }
    assert_eq!(r.totals.stats.relative_change, None);
    assert_eq!(r.totals.stats.changed, 4);
    let v = json(&r);
    assert!(v["tensors"][0]["relative_change"].is_null());
    assert!(v["tensors"][0]["cosine"].is_null());
    assert!(v["totals"]["relative_change"].is_null());
    assert_eq!(v["totals"]["changed"], 4);
}

#[test]
fn diff_of_zero_and_special_tensors() {
    let dir = scratch();
    let (a, b) = pairs::write(dir.path(), &pairs::zero_and_special());
    let r = diff(&a, &b, &opts()).unwrap();
    let t = tensor(&r, "zero_zero");
    assert_eq!((t.relative_change, t.cosine), (Some(0.0), Some(1.0)));
    let t = tensor(&r, "zero_some");
    assert_eq!((t.relative_change, t.cosine), (None, Some(0.0)));
    assert_eq!(t.norm_diff, Some(0.5));
    assert_eq!(t.max_abs_change, Some(0.5));
    let t = tensor(&r, "some_zero");
    assert_eq!((t.relative_change, t.cosine), (Some(1.0), Some(0.0)));
    let t = tensor(&r, "signs");
    assert_eq!(t.changed, 1);
    assert_eq!(t.relative_change, Some(0.0));
    let t = tensor(&r, "nan");
    // The unchanged NaN is unchanged bits; inf -> 1 changed; both left out of the norms.
    assert_eq!((t.changed, t.nonfinite), (2, 2));
    assert_eq!(t.relative_change, Some(1.0));
    let t = tensor(&r, "empty");
    assert_eq!((t.params, t.changed, t.fraction_changed), (0, 0, 0.0));
    assert_eq!((t.relative_change, t.cosine), (Some(0.0), Some(1.0)));
    let t = tensor(&r, "opposite");
    assert_eq!((t.relative_change, t.cosine), (Some(2.0), Some(-1.0)));
    let v = json(&r);
    assert!(v["tensors"][1]["relative_change"].is_null());
    assert_eq!(v["tensors"][1]["cosine"], 0.0);
}

#[test]
fn diff_of_archives_matches_diff_of_safetensors() {
    let dir = scratch();
    let base = vec![
        Tensor::generated(
            "model.embed_tokens.weight",
            "BF16",
            &[64, 16],
            Mode::Weights,
            1,
        ),
        Tensor::generated(
            "model.layers.0.self_attn.q_proj.weight",
            "F32",
            &[16, 16],
            Mode::Weights,
            2,
        ),
        Tensor::generated(
            "model.layers.0.mlp.down_proj.weight",
            "F16",
            &[16, 32],
            Mode::Weights,
            3,
        ),
        Tensor::generated(
            "model.layers.1.input_layernorm.weight",
            "F64",
            &[16],
            Mode::Weights,
            4,
        ),
        Tensor::generated("model.ids", "I32", &[7], Mode::Weights, 5),
    ];
    let mut tuned = base.clone();
    for (i, t) in tuned.iter_mut().enumerate() {
        // Perturb some elements of each tensor.
        let mut rng = common::Rng(i as u64);
        for _ in 0..5 {
            let k = rng.below(t.data.len() as u64) as usize;
            t.data[k] ^= 1 << rng.below(7);
        }
    }
    let (sa, da, _) = both(dir.path(), "a", &base);
    let (sb, db, _) = both(dir.path(), "b", &tuned);
    let want = json(&diff(&sa, &sb, &opts()).unwrap());
    assert!(!want["identical"].as_bool().unwrap());
    for (a, b) in [(&da, &db), (&sa, &db), (&da, &sb)] {
        let got = json(&diff(a, b, &opts()).unwrap());
        assert_eq!(got, want, "{} vs {}", a.display(), b.display());
    }
    // One thread gives the same numbers as several.
    let one = Options {
        threads: Some(1),
        ..opts()
    };
    assert_eq!(json(&diff(&da, &sb, &one).unwrap()), want);
}

#[test]
fn diff_rolls_up_optimizer_state() {
    let dir = scratch();
    let (a, b) = pairs::write(dir.path(), &pairs::optimizer_state());
    let r = diff(&a, &b, &opts()).unwrap();
    let comps: Vec<(Component, usize, Option<f64>)> = r
        .components
        .iter()
        .map(|c| (c.component, c.stats.tensors, c.stats.relative_change))
        .collect();
    assert_eq!(
        comps,
        [
            (Component::Weights, 5, Some(0.0)),
            (Component::ExpAvg, 5, Some(0.0)),
            (Component::ExpAvgSq, 5, Some(1.0)),
        ]
    );
    let layers: Vec<(Component, u32, usize, u64)> = r
        .layers
        .iter()
        .map(|l| (l.component, l.layer, l.stats.tensors, l.stats.params))
        .collect();
    assert_eq!(
        layers,
        [
            (Component::Weights, 0, 2, 20),
            (Component::Weights, 1, 2, 20),
            (Component::ExpAvg, 0, 2, 20),
            (Component::ExpAvg, 1, 2, 20),
            (Component::ExpAvgSq, 0, 2, 20),
            (Component::ExpAvgSq, 1, 2, 20),
        ]
    );
    let roles: Vec<(Component, Role, usize)> = r
        .roles
        .iter()
        .map(|x| (x.component, x.role, x.stats.tensors))
        .collect();
    assert_eq!(roles.len(), 9);
    assert!(roles.contains(&(Component::ExpAvgSq, Role::Embedding, 1)));
    assert!(roles.contains(&(Component::Weights, Role::Norm, 2)));
    assert!(roles.contains(&(Component::ExpAvg, Role::Attention, 2)));
    let v = json(&r);
    assert_eq!(v["components"][2]["component"], "exp_avg_sq");
    assert_eq!(v["roles"][0]["role"], "attention");
    assert_eq!(v["tensors"][0]["component"], "weights");
}

#[test]
fn diff_reports_metadata_and_errors() {
    let dir = scratch();
    let (a, b) = pairs::write_metadata_pair(dir.path());
    let r = diff(&a, &b, &opts()).unwrap();
    assert!(r.identical);
    let m: Vec<(&str, Option<&str>, Option<&str>)> = r
        .metadata_changed
        .iter()
        .map(|m| (m.key.as_str(), m.a.as_deref(), m.b.as_deref()))
        .collect();
    assert_eq!(
        m,
        [
            ("lr", None, Some("3e-05")),
            ("step", Some("600"), Some("750"))
        ]
    );

    let zero = Options {
        threads: Some(0),
        ..opts()
    };
    assert!(matches!(
        diff(&a, &b, &zero),
        Err(dmx::Error::InvalidArgument(_))
    ));
    let text = dir.path().join("x.txt");
    write(&text, b"no model here");
    assert!(diff(&a, &text, &opts()).is_err());
    assert!(diff(&dir.path().join("missing"), &b, &opts()).is_err());
}
