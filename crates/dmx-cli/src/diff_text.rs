//! The text form of `dmx diff`: the library computes the [`DiffReport`], this module lays it
//! out for a terminal (tables, thousands separators, percentages).
//!
//! `crates/dmx-cli/tests/cli/diff_cli.rs` checks the text through `dmx diff`.

use std::fmt::Write as _;

use dmx::diff::{DiffReport, Rollup, TensorDiff};

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn percent(f: f64) -> String {
    if f > 0.0 && f < 0.0001 {
        "<0.01%".into()
    } else if f < 1.0 && f > 0.9999 {
        ">99.99%".into()
    } else {
        format!("{:.2}%", f * 100.0)
    }
}

/// A relative change: `-` without float data, `inf` when infinite.
fn rel(value: Option<f64>, float: bool) -> String {
    match (value, float) {
        (_, false) => "-".into(),
        (Some(v), true) => format!("{v:.3e}"),
        (None, true) => "inf".into(),
    }
}

fn opt(value: Option<f64>, f: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".into(), f)
}

fn shape(s: &[u64]) -> String {
    let dims: Vec<String> = s.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(","))
}

/// Appends a table indented by two spaces: the first `left` columns left-aligned, the
/// others right-aligned.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>], left: usize) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::from(" ");
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            let pad = w - cell.chars().count();
            line.push(' ');
            if i < left {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            } else {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// A count of float elements: `-` without float data.
fn count(value: Option<u64>) -> String {
    value.map_or_else(|| "-".into(), thousands)
}

fn rollup_cells(r: &Rollup) -> [String; 6] {
    [
        r.tensors.to_string(),
        thousands(r.params),
        percent(r.fraction_changed),
        rel(r.relative_change, r.is_float()),
        rel(r.max_rel_change, r.is_float()),
        count(r.zeroed),
    ]
}

/// A list of names, the first `max` of them.
fn names_line(out: &mut String, what: &str, names: &[String], max: usize) {
    if names.is_empty() {
        return;
    }
    let shown: Vec<&str> = names.iter().take(max).map(String::as_str).collect();
    let more = names.len() - shown.len();
    let _ = write!(out, "{what} ({}): {}", names.len(), shown.join(", "));
    if more > 0 {
        let _ = write!(out, ", ... and {more} more");
    }
    out.push('\n');
}

/// A readable report: the summary, rollups per component, role and layer, then the `top`
/// most changed float tensors by relative change, per component (and the changed
/// non-float tensors).
pub fn render(report: &DiffReport, top: usize) -> String {
    let mut out = String::new();
    let max_names = top.max(10);
    summary(&mut out, report, max_names);
    if report.tensors.is_empty() {
        return out;
    }
    rollups(&mut out, report);
    top_lists(&mut out, report, top);
    let others: Vec<String> = report
        .tensors
        .iter()
        .filter(|t| !t.is_float() && t.changed > 0)
        .map(|t| format!("{} ({}, {})", t.name, t.dtype, percent(t.fraction_changed)))
        .collect();
    if !others.is_empty() {
        out.push('\n');
        names_line(&mut out, "non-float tensors changed", &others, max_names);
    }
    out
}

/// The summary lines: files, totals, and the added, removed, reshaped tensors and changed
/// metadata (at most `max_names` names each).
fn summary(out: &mut String, report: &DiffReport, max_names: usize) {
    let t = &report.totals;
    let _ = writeln!(out, "A: {}\nB: {}", report.a, report.b);
    let _ = writeln!(
        out,
        "tensors: {} compared ({} identical), {} added, {} removed, {} with a new dtype or shape",
        t.compared, t.identical, t.added, t.removed, t.changed_shape_or_dtype
    );
    let _ = writeln!(
        out,
        "params: {} compared, {} changed; relative change |B-A|/|A| (L2 norms): {}",
        thousands(t.stats.params),
        percent(t.stats.fraction_changed),
        rel(t.stats.relative_change, t.stats.is_float()),
    );
    if let (Some(nonzero), Some(zeroed)) = (t.stats.nonzero_a, t.stats.zeroed) {
        let _ = writeln!(
            out,
            "per value: largest |B-A|/|A| {}; {} of {} non-zero values of A are 0 in B",
            rel(t.stats.max_rel_change, true),
            thousands(zeroed),
            thousands(nonzero),
        );
    }
    if report.identical {
        out.push_str("identical: every tensor has the same name, dtype, shape and bytes\n");
    }
    names_line(out, "added", &report.added, max_names);
    names_line(out, "removed", &report.removed, max_names);
    let reshaped: Vec<String> = report
        .changed_shape_or_dtype
        .iter()
        .map(|c| {
            format!(
                "{} {}{} -> {}{}",
                c.name,
                c.a_dtype,
                shape(&c.a_shape),
                c.b_dtype,
                shape(&c.b_shape)
            )
        })
        .collect();
    names_line(out, "new dtype or shape", &reshaped, max_names);
    let meta: Vec<String> = report
        .metadata_changed
        .iter()
        .map(|m| {
            let v = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
            format!("{}: {} -> {}", m.key, v(&m.a), v(&m.b))
        })
        .collect();
    names_line(out, "metadata changed", &meta, max_names);
}

/// The tables per component, role and layer.
fn rollups(out: &mut String, report: &DiffReport) {
    out.push_str("\nper component\n");
    let rows = report
        .components
        .iter()
        .map(|c| (vec![c.component.to_string()], &c.stats));
    rollup_table(out, &["component"], 1, rows);

    out.push_str("\nper role\n");
    let rows = report
        .roles
        .iter()
        .map(|r| (vec![r.component.to_string(), r.role.to_string()], &r.stats));
    rollup_table(out, &["component", "role"], 2, rows);

    if !report.layers.is_empty() {
        out.push_str("\nper layer\n");
        let rows = report
            .layers
            .iter()
            .map(|l| (vec![l.component.to_string(), l.layer.to_string()], &l.stats));
        // The layer number is right-aligned.
        rollup_table(out, &["component", "layer"], 1, rows);
    }
}

/// A table of rollups: the columns `keys` (the first `left` of all columns left-aligned),
/// then [`rollup_cells`]; each row gives its key cells and its rollup.
fn rollup_table<'r>(
    out: &mut String,
    keys: &[&str],
    left: usize,
    rows: impl Iterator<Item = (Vec<String>, &'r Rollup)>,
) {
    let rows: Vec<Vec<String>> = rows
        .map(|(mut row, stats)| {
            row.extend(rollup_cells(stats));
            row
        })
        .collect();
    let mut header = keys.to_vec();
    header.extend([
        "tensors",
        "params",
        "changed",
        "rel.change",
        "max rel",
        "→0",
    ]);
    table(out, &header, &rows, left);
}

/// The `top` most changed float tensors by relative change, per component: optimizer
/// moments move far more than weights and would otherwise crowd them out.
fn top_lists(out: &mut String, report: &DiffReport, top: usize) {
    let several = report.components.len() > 1;
    for c in &report.components {
        let mut floats: Vec<&TensorDiff> = report
            .tensors
            .iter()
            .filter(|t| t.is_float() && t.component == c.component)
            .collect();
        if top == 0 || floats.is_empty() {
            continue;
        }
        let key = |t: &TensorDiff| t.relative_change.unwrap_or(f64::INFINITY);
        floats.sort_by(|x, y| key(y).total_cmp(&key(x)));
        let _ = write!(
            out,
            "\ntop {} of {} float tensors by relative change",
            top.min(floats.len()),
            floats.len()
        );
        if several {
            let _ = write!(out, " ({})", c.component);
        }
        out.push('\n');
        let rows: Vec<Vec<String>> = floats
            .iter()
            .take(top)
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.dtype.clone(),
                    shape(&t.shape),
                    thousands(t.params),
                    percent(t.fraction_changed),
                    rel(t.relative_change, true),
                    opt(t.cosine, |c| format!("{c:.6}")),
                    opt(t.max_abs_change, |m| format!("{m:.3e}")),
                    rel(t.max_rel_change, true),
                    count(t.zeroed),
                ]
            })
            .collect();
        table(
            out,
            &[
                "name",
                "dtype",
                "shape",
                "params",
                "changed",
                "rel.change",
                "cosine",
                "max|B-A|",
                "max rel",
                "→0",
            ],
            &rows,
            3,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_902_720), "1,902,720");
        assert_eq!(percent(0.0), "0.00%");
        assert_eq!(percent(1e-9), "<0.01%");
        assert_eq!(percent(0.999_999), ">99.99%");
        assert_eq!(percent(1.0), "100.00%");
    }
}
