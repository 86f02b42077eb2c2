//! `dmx diff`'s text report (the CLI's `diff_text.rs`), over the checkpoints whose reports
//! the engine tests (`crates/dmx/tests/engine/diff.rs`) check field by field.

use std::path::Path;

use dmx_testkit::{Layout, Mode, Tensor, plain, safetensors, scratch, write};

use crate::support::run;

/// `dmx diff A B --top TOP` in `dir`: its standard output, after checking that it succeeded.
fn diff_text(dir: &Path, a: &Path, b: &Path, top: usize) -> String {
    let (a, b) = (a.to_str().expect("path"), b.to_str().expect("path"));
    run(dir, &["diff", a, b, "--top", &top.to_string()], 0).0
}

fn sample() -> Vec<Tensor> {
    vec![
        Tensor::generated("model.embed.weight", "BF16", &[16, 8], Mode::Weights, 1),
        Tensor::generated(
            "model.layers.0.mlp.weight",
            "F32",
            &[8, 8],
            Mode::Weights,
            2,
        ),
        Tensor::generated("model.layers.0.ids", "I64", &[3], Mode::Weights, 3),
        Tensor::generated("empty", "F16", &[0, 4], Mode::Weights, 4),
        Tensor::generated("scalar", "F64", &[], Mode::Weights, 5),
    ]
}

fn f32_tensor(name: &str, shape: &[usize], values: &[f32]) -> Tensor {
    let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor::new(name, "F32", shape, data)
}

/// Every element of a float tensor times two (exact in every binary float format; a BF16
/// value is the top half of an F32).
fn doubled(t: &Tensor) -> Tensor {
    let data = match t.dtype.as_str() {
        "F32" => t
            .data
            .chunks_exact(4)
            .flat_map(|c| (2.0 * f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
            .collect(),
        "BF16" => t
            .data
            .chunks_exact(2)
            .flat_map(|c| {
                let v = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
                (((2.0 * v).to_bits() >> 16) as u16).to_le_bytes()
            })
            .collect(),
        other => panic!("doubled: {other}"),
    };
    Tensor::new(&t.name, &t.dtype, &t.shape, data)
}

fn write_st(dir: &Path, name: &str, tensors: &[Tensor]) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.safetensors"));
    write(&p, &plain(tensors));
    p
}

#[test]
fn diff_text_of_identical_files() {
    let dir = scratch();
    let tensors = sample();
    let a = write_st(dir.path(), "a", &tensors);
    let b = write_st(dir.path(), "b", &tensors);
    let text = diff_text(dir.path(), &a, &b, 5);
    assert!(text.contains("identical: every tensor"), "{text}");
    assert!(text.contains("5 compared (5 identical)"), "{text}");
}

#[test]
fn diff_text_of_a_scaled_tensor() {
    let dir = scratch();
    let base = vec![
        Tensor::generated(
            "model.layers.0.attn.q_proj.weight",
            "F32",
            &[8, 8],
            Mode::Weights,
            1,
        ),
        Tensor::generated(
            "model.layers.1.mlp.up_proj.weight",
            "BF16",
            &[4, 16],
            Mode::Weights,
            2,
        ),
        Tensor::generated("lm_head.weight", "F32", &[16, 4], Mode::Weights, 3),
    ];
    let mut tuned = base.clone();
    tuned[0] = doubled(&base[0]);
    tuned[1] = doubled(&base[1]);
    let a = write_st(dir.path(), "a", &base);
    let b = write_st(dir.path(), "b", &tuned);
    let text = diff_text(dir.path(), &a, &b, 2);
    assert!(text.contains("top 2 of 3 float tensors"), "{text}");
    assert!(text.contains("per layer"), "{text}");
    assert!(!text.contains("lm_head.weight"), "{text}");
}

#[test]
fn diff_text_of_added_removed_and_reshaped_tensors() {
    let dir = scratch();
    let a = write_st(
        dir.path(),
        "a",
        &[
            f32_tensor("kept", &[2], &[1.0, 2.0]),
            f32_tensor("gone", &[1], &[1.0]),
            f32_tensor("reshaped", &[2, 2], &[1.0; 4]),
            f32_tensor("retyped", &[2], &[1.0; 2]),
        ],
    );
    let b = write_st(
        dir.path(),
        "b",
        &[
            f32_tensor("new", &[1], &[3.0]),
            f32_tensor("reshaped", &[4], &[1.0; 4]),
            Tensor::new("retyped", "F64", &[2], vec![0; 16]),
            f32_tensor("kept", &[2], &[1.0, 2.0]),
        ],
    );
    let text = diff_text(dir.path(), &a, &b, 10);
    assert!(text.contains("added (1): new"), "{text}");
    assert!(text.contains("removed (1): gone"), "{text}");
    assert!(text.contains("reshaped F32[2,2] -> F32[4]"), "{text}");
}

#[test]
fn diff_text_of_integer_and_bool_tensors() {
    let dir = scratch();
    let ids: Vec<u8> = (0..10i64).flat_map(|v| v.to_le_bytes()).collect();
    let mut ids2 = ids.clone();
    ids2[3 * 8] = 99;
    ids2[7 * 8 + 7] = 0x80;
    let a = write_st(
        dir.path(),
        "a",
        &[
            Tensor::new("ids", "I64", &[10], ids),
            Tensor::new("mask", "BOOL", &[4], vec![0, 1, 1, 0]),
            Tensor::new("codes", "U8", &[2, 2], vec![1, 2, 3, 4]),
        ],
    );
    let ids2t = Tensor::new("ids", "I64", &[10], ids2);
    let b = write_st(
        dir.path(),
        "b",
        &[
            ids2t,
            Tensor::new("mask", "BOOL", &[4], vec![1, 1, 1, 1]),
            Tensor::new("codes", "U8", &[2, 2], vec![1, 2, 3, 4]),
        ],
    );
    let text = diff_text(dir.path(), &a, &b, 10);
    assert!(
        text.contains("non-float tensors changed (2): ids (I64, 20.00%)"),
        "{text}"
    );
    assert!(!text.contains("float tensors by relative change"), "{text}");
}

#[test]
fn diff_text_of_zero_and_special_tensors() {
    let dir = scratch();
    let a = write_st(
        dir.path(),
        "a",
        &[
            f32_tensor("zero_zero", &[3], &[0.0; 3]),
            f32_tensor("zero_some", &[3], &[0.0; 3]),
            f32_tensor("some_zero", &[3], &[1.0, -2.0, 2.0]),
            f32_tensor("signs", &[2], &[0.0, 1.0]),
            f32_tensor("nan", &[3], &[f32::NAN, 1.0, f32::INFINITY]),
            f32_tensor("empty", &[0], &[]),
            f32_tensor("opposite", &[2], &[1.0, -1.0]),
        ],
    );
    let b = write_st(
        dir.path(),
        "b",
        &[
            f32_tensor("zero_zero", &[3], &[0.0; 3]),
            f32_tensor("zero_some", &[3], &[0.0, 0.5, 0.0]),
            f32_tensor("some_zero", &[3], &[0.0; 3]),
            f32_tensor("signs", &[2], &[-0.0, 1.0]),
            f32_tensor("nan", &[3], &[f32::NAN, 2.0, 1.0]),
            f32_tensor("empty", &[0], &[]),
            f32_tensor("opposite", &[2], &[-1.0, 1.0]),
        ],
    );
    let text = diff_text(dir.path(), &a, &b, 3);
    // The infinite change ranks first.
    let top = text
        .split("float tensors by relative change")
        .nth(1)
        .unwrap();
    let first = top.lines().nth(2).unwrap();
    assert!(first.trim_start().starts_with("zero_some"), "{text}");
    assert!(first.contains("inf"), "{text}");
}

#[test]
fn diff_text_rolls_up_optimizer_state() {
    let dir = scratch();
    let mut base = Vec::new();
    for prefix in ["model.", "optim.exp_avg.", "optim.exp_avg_sq."] {
        for l in 0..2 {
            base.push(Tensor::generated(
                &format!("{prefix}blocks.{l}.attn_qkv.weight"),
                "F32",
                &[4, 4],
                Mode::Weights,
                l,
            ));
            base.push(Tensor::generated(
                &format!("{prefix}blocks.{l}.ln1.weight"),
                "F32",
                &[4],
                Mode::Weights,
                10 + l,
            ));
        }
        base.push(Tensor::generated(
            &format!("{prefix}wte.weight"),
            "F32",
            &[8, 4],
            Mode::Weights,
            20,
        ));
    }
    let tuned: Vec<Tensor> = base
        .iter()
        .map(|t| {
            if t.name.starts_with("optim.exp_avg_sq.") {
                doubled(t)
            } else {
                t.clone()
            }
        })
        .collect();
    let a = write_st(dir.path(), "a", &base);
    let b = write_st(dir.path(), "b", &tuned);
    let text = diff_text(dir.path(), &a, &b, 3);
    assert!(text.contains("exp_avg_sq"), "{text}");
    // One top list per component, the moved one ranked by its own changes.
    assert!(
        text.contains("top 3 of 5 float tensors by relative change (weights)"),
        "{text}"
    );
    let sq = text.split("(exp_avg_sq)").nth(1).unwrap();
    assert!(sq.lines().nth(2).unwrap().contains("1.000e0"), "{text}");
}

#[test]
fn diff_text_reports_metadata() {
    let dir = scratch();
    let t = vec![f32_tensor("w", &[1], &[1.0])];
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    let meta = |pairs: &[(&str, &str)]| Layout {
        metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Layout::default()
    };
    write(
        &a,
        &safetensors(&t, &meta(&[("step", "600"), ("same", "x")])),
    );
    write(
        &b,
        &safetensors(
            &t,
            &meta(&[("step", "750"), ("same", "x"), ("lr", "3e-05")]),
        ),
    );
    let text = diff_text(dir.path(), &a, &b, 5);
    assert!(text.contains("step: 600 -> 750"), "{text}");
}
