//! `dmx diff`'s text report (the CLI's `diff_text.rs`), over the checkpoint pairs whose
//! reports the engine tests (`crates/dmx/tests/engine/diff.rs`) check field by field.

use std::path::Path;

use dmx_testkit::diff_pairs::{self as pairs, sample};
use dmx_testkit::scratch;

use crate::support::run;

/// `dmx diff A B --top TOP` in `dir`: its standard output, after checking that it succeeded.
fn diff_text(dir: &Path, (a, b): (std::path::PathBuf, std::path::PathBuf), top: usize) -> String {
    let (a, b) = (a.to_str().expect("path"), b.to_str().expect("path"));
    run(dir, &["diff", a, b, "--top", &top.to_string()], 0).0
}

#[test]
fn diff_text_of_identical_files() {
    let dir = scratch();
    let text = diff_text(
        dir.path(),
        pairs::write(dir.path(), &(sample(), sample())),
        5,
    );
    assert!(text.contains("identical: every tensor"), "{text}");
    assert!(text.contains("5 compared (5 identical)"), "{text}");
}

#[test]
fn diff_text_of_a_scaled_tensor() {
    let dir = scratch();
    let text = diff_text(dir.path(), pairs::write(dir.path(), &pairs::scaled()), 2);
    assert!(text.contains("top 2 of 3 float tensors"), "{text}");
    assert!(text.contains("per layer"), "{text}");
    assert!(!text.contains("lm_head.weight"), "{text}");
}

#[test]
fn diff_text_of_added_removed_and_reshaped_tensors() {
    let dir = scratch();
    let text = diff_text(
        dir.path(),
        pairs::write(dir.path(), &pairs::added_removed_reshaped()),
        10,
    );
    assert!(text.contains("added (1): new"), "{text}");
    assert!(text.contains("removed (1): gone"), "{text}");
    assert!(text.contains("reshaped F32[2,2] -> F32[4]"), "{text}");
}

#[test]
fn diff_text_of_integer_and_bool_tensors() {
    let dir = scratch();
    let text = diff_text(
        dir.path(),
        pairs::write(dir.path(), &pairs::integer_and_bool()),
        10,
    );
    assert!(
        text.contains("non-float tensors changed (2): ids (I64, 20.00%)"),
        "{text}"
    );
    assert!(!text.contains("float tensors by relative change"), "{text}");
}

#[test]
fn diff_text_of_zero_and_special_tensors() {
    let dir = scratch();
    let text = diff_text(
        dir.path(),
        pairs::write(dir.path(), &pairs::zero_and_special()),
        3,
    );
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
    let text = diff_text(
        dir.path(),
        pairs::write(dir.path(), &pairs::optimizer_state()),
        3,
    );
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
    let text = diff_text(dir.path(), pairs::write_metadata_pair(dir.path()), 5);
    assert!(text.contains("step: 600 -> 750"), "{text}");
}
