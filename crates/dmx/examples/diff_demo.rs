//! Prints the weight-shift report between two checkpoints.
//!
//! `cargo run -p dmx --example diff_demo -- A B [--json] [--top K]`

use std::path::Path;

/// The text form of the report, as `dmx diff` prints it.
#[path = "../../dmx-cli/src/diff_text.rs"]
mod diff_text;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut files, mut json, mut top) = (Vec::new(), false, 10);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--top" => top = it.next().ok_or("--top needs a number")?.parse()?,
            _ => files.push(a),
        }
    }
    let [a, b] = files[..] else {
        return Err("usage: diff_demo A B [--json] [--top K]".into());
    };
    let report = dmx::diff::diff(Path::new(a), Path::new(b), &dmx::Options::default())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", diff_text::render(&report, top));
    }
    Ok(())
}
