//! Human output of the chain commands.

use dmx::chain::{ChainEntryKind, ComponentSize};
use dmx::{ChainInfo, ChainReport, ChainVerifyReport, ReconstructReport};

/// A size in B, kB, MB or GB (decimal units, as `ls -h --si`).
fn mb(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// `s` with control characters escaped (names and messages come from files that may be
/// hostile, and must not drive the terminal), as everywhere in the CLI.
fn shown(s: &str) -> String {
    crate::escape::escape(s)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.1}%"))
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.3}x"))
}

fn parent(p: Option<usize>) -> String {
    p.map_or_else(|| "-".to_string(), |p| p.to_string())
}

/// Summary of `chain-compress` and `chain-append` (stderr).
pub fn append_summary(r: &ChainReport) {
    for a in &r.appended {
        let e = &a.entry;
        if let Some(why) = &a.delta_error {
            eprintln!(
                "dmx: warning: entry {} ({}): no delta: {}",
                e.index,
                shown(&e.name),
                shown(why)
            );
        }
        let how = match e.kind {
            ChainEntryKind::Anchor => match a.delta_size {
                Some(d) => format!("anchor (delta of {} was not smaller)", mb(d)),
                None if e.index == 0 => "anchor (first entry)".to_string(),
                None if a.delta_error.is_some() => "anchor (no delta)".to_string(),
                None => "anchor (depth limit)".to_string(),
            },
            ChainEntryKind::Delta => format!("delta of {} (depth {})", parent(e.parent), e.depth),
        };
        eprintln!(
            "  [{:>3}] {}: {} -> {} as {how}; standalone {} in {:.2} s",
            e.index,
            shown(&e.name),
            mb(e.original_size),
            mb(e.stored_size),
            mb(e.standalone_size),
            a.seconds
        );
    }
    let saved = r.standalone_bytes as i64 - r.stored_bytes as i64;
    eprintln!(
        "{}: {} entr{} added ({} now, {}, max depth {}): {} -> {} ({}; {} less than \
         compressing each alone) in {:.2} s",
        shown(&r.dir),
        r.appended.len(),
        if r.appended.len() == 1 { "y" } else { "ies" },
        r.entries,
        r.precision.name(),
        r.max_depth,
        mb(r.original_bytes),
        mb(r.stored_bytes),
        ratio((r.stored_bytes > 0).then(|| r.original_bytes as f64 / r.stored_bytes as f64)),
        pct((r.standalone_bytes > 0).then(|| 100.0 * saved as f64 / r.standalone_bytes as f64)),
        r.seconds
    );
}

/// Warns (stderr) about the files a chain command moved into `DIR/orphans/`.
pub fn warn_set_aside(r: &ChainReport) {
    if !r.set_aside.is_empty() {
        eprintln!(
            "dmx: warning: {}: {} file{} that no valid manifest lists moved aside, not \
             deleted: {}",
            shown(&r.dir),
            r.set_aside.len(),
            if r.set_aside.len() == 1 { "" } else { "s" },
            shown(&r.set_aside.join(", "))
        );
    }
}

/// The orphans line of `chain-info` and `verify` (empty when there are none).
fn orphans_line(dir: &str, orphans: &[String]) -> Option<String> {
    (!orphans.is_empty()).then(|| {
        let line = format!(
            "warning: {dir}: {} orphan file{} that {} does not list (ignored; left by an \
             interrupted run or an older manifest): {}",
            orphans.len(),
            if orphans.len() == 1 { "" } else { "s" },
            dmx::chain::MANIFEST,
            orphans.join(", ")
        );
        shown(&line)
    })
}

/// `chain-info` in human form (stdout).
pub fn info(i: &ChainInfo) {
    println!("chain:      {}", shown(&i.dir));
    println!(
        "precision:  {}{}",
        i.precision.name(),
        if i.precision == dmx::Precision::Lossless {
            " (every entry restores byte for byte)"
        } else {
            " (entries restore on their anchor's grid)"
        }
    );
    println!("max depth:  {}", i.max_depth);
    println!();
    println!(
        "{:>5}  {:<32} {:<6} {:>6} {:>5} {:>14} {:>14} {:>9} {:>14} {:>8}",
        "index",
        "name",
        "kind",
        "parent",
        "depth",
        "original",
        "stored",
        "ratio",
        "standalone",
        "savings"
    );
    for e in &i.entries {
        println!(
            "{:>5}  {:<32} {:<6} {:>6} {:>5} {:>14} {:>14} {:>9} {:>14} {:>8}",
            e.index,
            shown(&e.name),
            e.kind.as_str(),
            parent(e.parent),
            e.depth,
            e.original_size,
            e.stored_size,
            ratio(e.ratio),
            e.standalone_size,
            pct(e.savings_percent)
        );
        if let Some(err) = &e.error {
            println!("       ! {}", shown(err));
        } else if e.components.len() > 1 {
            let parts: Vec<String> = e
                .components
                .iter()
                .map(|(k, c)| format!("{k} {}", c.stored_bytes))
                .collect();
            println!("       stored per component: {}", parts.join(", "));
        }
    }
    let t = &i.totals;
    println!();
    println!(
        "totals: {} entries ({} anchors, {} deltas); original {}, stored {} ({}), \
         standalone sum {} (the chain saves {})",
        t.entries,
        t.anchors,
        t.deltas,
        mb(t.original_bytes),
        mb(t.stored_bytes),
        ratio(t.ratio),
        mb(t.standalone_bytes),
        pct(t.savings_vs_standalone_percent)
    );
    if !t.components.is_empty() {
        println!();
        println!(
            "{:<14} {:>8} {:>16} {:>16} {:>9}",
            "component", "tensors", "original bytes", "stored bytes", "ratio"
        );
        let row = |k: &str, c: &ComponentSize| {
            println!(
                "{k:<14} {:>8} {:>16} {:>16} {:>9}",
                c.tensors,
                c.original_bytes,
                c.stored_bytes,
                ratio(
                    (c.stored_bytes > 0).then(|| c.original_bytes as f64 / c.stored_bytes as f64)
                )
            );
        };
        for (k, c) in &t.components {
            row(k, c);
        }
    }
    if let Some(line) = orphans_line(&i.dir, &i.orphans) {
        println!();
        println!("{line}");
    }
}

/// `chain-reconstruct` in human form (stderr); failures are always shown.
pub fn reconstruct(r: &ReconstructReport, quiet: bool) {
    for e in &r.entries {
        match (&e.output, &e.error) {
            (Some(out), _) if !quiet => {
                eprintln!("  [{:>3}] {} -> {}", e.index, shown(&e.name), shown(out))
            }
            (_, Some(err)) => eprintln!("dmx: error: {}", shown(err)),
            _ => {}
        }
    }
    if !quiet {
        let ok = r.entries.iter().filter(|e| e.error.is_none()).count();
        eprintln!(
            "{} of {} entr{} restored into {} ({}, {} entr{} read) in {:.2} s (every checksum \
             verified)",
            ok,
            r.entries.len(),
            if r.entries.len() == 1 { "y" } else { "ies" },
            shown(&r.output_dir),
            mb(r.output_bytes),
            r.touched.len(),
            if r.touched.len() == 1 { "y" } else { "ies" },
            r.seconds
        );
    }
}

/// `verify DIR` of a chain in human form (stdout).
pub fn verify(r: &ChainVerifyReport) {
    for e in &r.entries {
        match &e.error {
            None => println!(
                "OK    [{:>3}] {} ({})",
                e.index,
                shown(&e.name),
                e.kind.as_str()
            ),
            Some(err) => println!(
                "FAIL  [{:>3}] {} ({}): {}",
                e.index,
                shown(&e.name),
                e.kind.as_str(),
                shown(err)
            ),
        }
    }
    if let Some(line) = orphans_line(&r.dir, &r.orphans) {
        println!("{line}");
    }
    let failed = r.entries.iter().filter(|e| e.error.is_some()).count();
    if r.ok {
        println!(
            "chain {}: OK, {} entr{} verified ({}) in {:.2} s",
            shown(&r.dir),
            r.entries.len(),
            if r.entries.len() == 1 { "y" } else { "ies" },
            r.precision.name(),
            r.seconds
        );
    } else {
        println!(
            "chain {}: FAILED, {failed} of {} entr{} failed",
            shown(&r.dir),
            r.entries.len(),
            if r.entries.len() == 1 { "y" } else { "ies" }
        );
    }
}
