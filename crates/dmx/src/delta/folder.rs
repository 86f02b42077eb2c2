//! Deltas between two checkpoint folders (a Trainer's `checkpoint-500/` and `checkpoint-600/`):
//! one archive with a folder root whose entries are the target folder's files. A file that
//! has a checkpoint file (safetensors or `torch.save`) of the same relative path in the base
//! folder is a delta entry (kind 2 or 6) whose base reference is that file's SHA-256 and
//! size; every other file is stored as `compress` stores it (a blob, or a standalone
//! safetensors or `torch.save` entry). Reconstruction rebuilds the folder byte for byte into
//! a temporary folder and moves it into place only when every file checked.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use dmx_format::{Index, Root};

use super::{
    Base, DeltaFile, DeltaOptions, DeltaReport, Precision, base_slices, delta_format, encode_delta,
    params_of, write_entry,
};
use crate::Options;
use crate::archive::Archive;
use crate::compress::{encode_entry, finish_archive};
use crate::error::{Error, Result};
use crate::io::{AtomicFile, Bytes, Stamp, same_file};
use crate::lossy::Coding;
use crate::plan::{PlannedFile, plan_input};

/// Stores the folder `target` relative to the folder `base` in `output` (see the module
/// docs). Lossless only.
pub(super) fn compress_dirs(
    base: &Path,
    target: &Path,
    output: &Path,
    d: &DeltaOptions,
    opts: &Options,
    start: Instant,
) -> Result<DeltaReport> {
    if d.precision != Precision::Lossless {
        return Err(Error::Unsupported(format!(
            "{}: --precision {} is not available for folder deltas yet; use --precision \
             lossless",
            target.display(),
            d.precision.name()
        )));
    }
    let (_, files) = plan_input(target)?;
    if let Some(f) = files.iter().find(|f| same_file(&f.path, output)) {
        return Err(Error::Destination(format!(
            "{} is a file of the target folder; choose an output outside it",
            f.path.display()
        )));
    }
    let (_, base_files) = plan_input(base)?;
    let base_bytes: u64 = base_files.iter().map(|f| f.size).sum();
    let mut base_files: BTreeMap<String, PlannedFile> =
        base_files.into_iter().map(|f| (f.rel.clone(), f)).collect();
    let pairs = files.iter().filter(|f| {
        f.kind.has_tensors() && base_files.get(&f.rel).is_some_and(|b| b.kind.has_tensors())
    });
    if pairs.count() == 0 {
        return Err(Error::Unsupported(format!(
            "no checkpoint file of {} (safetensors or torch.save) has one of the same path in \
             {}: nothing to store as a delta",
            target.display(),
            base.display()
        )));
    }
    let removed_files: Vec<String> = base_files
        .keys()
        .filter(|rel| !files.iter().any(|f| &f.rel == *rel))
        .cloned()
        .collect();
    let total: u64 = files.iter().map(|f| f.size).sum();
    let pool = opts.pool_for(total)?;
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start("delta-compressing", total);
    }
    let mut out = AtomicFile::create(output, opts.force, !opts.no_sync)?;
    let (minor, flags) = delta_format(&files, Precision::Lossless);
    out.write_all(&dmx_format::preamble_with(minor, flags))?;
    let mut report = DeltaReport {
        base_bytes,
        target_bytes: total,
        output_bytes: 0,
        precision: d.precision,
        params: files.iter().map(params_of).sum(),
        bits_per_param: None,
        delta_tensors: 0,
        added: Vec::new(),
        reshaped: Vec::new(),
        removed: Vec::new(),
        steps: BTreeMap::new(),
        seconds: 0.0,
        lossy: false,
        lossy_summary: None,
        files: Vec::with_capacity(files.len()),
        removed_files,
    };
    let mut entries = Vec::with_capacity(files.len());
    for f in &files {
        opts.check_cancel()?;
        let paired = base_files
            .remove(&f.rel)
            .filter(|b| b.kind.has_tensors() && f.kind.has_tensors());
        let entry = pool.install(|| store_file(f, paired, d, &mut out, &mut report, opts))?;
        entries.push(entry);
    }
    let index = Index {
        root: Root::Directory,
        entries,
    };
    finish_archive(&index, &mut out, target, flags)?;
    report.output_bytes = out.position();
    out.commit()?;
    if let Some(p) = progress {
        p.finish();
    }
    report.bits_per_param =
        (report.params > 0).then(|| report.output_bytes as f64 * 8.0 / report.params as f64);
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Stores one file of the target folder: as a delta from `paired` (its base file, when both
/// are checkpoint files), else whole, losslessly. Adds it to `report`.
fn store_file(
    f: &PlannedFile,
    paired: Option<PlannedFile>,
    d: &DeltaOptions,
    out: &mut AtomicFile,
    report: &mut DeltaReport,
    opts: &Options,
) -> Result<dmx_format::Entry> {
    let stamp = Stamp::of(&f.path)?;
    let bytes = Bytes::open_stable(&f.path)?;
    if bytes.len() as u64 != f.size {
        return Err(Error::changed(
            &f.path,
            "file changed size while being read",
        ));
    }
    let (entry, delta_tensors) = match paired {
        Some(b) => {
            let base = Base::of_plan(b)?;
            let (entry, pairing) = encode_delta(&base, f, &bytes, d, &BTreeMap::new(), out, opts)?;
            let named = |v: Vec<String>| v.into_iter().map(|n| format!("{}: {n}", f.rel));
            report.added.extend(named(pairing.added));
            report.reshaped.extend(named(pairing.reshaped));
            report.removed.extend(named(pairing.removed));
            report.delta_tensors += pairing.delta_tensors;
            (entry, pairing.delta_tensors)
        }
        None => {
            let codings = vec![Coding::Lossless; f.segments.len()];
            let bases = vec![None; f.segments.len()];
            (encode_entry(f, &bytes, &codings, &bases, out, opts)?, 0)
        }
    };
    stamp.check_unchanged(&f.path)?;
    report.files.push(DeltaFile {
        path: f.rel.clone(),
        kind: entry.kind.name().to_string(),
        size: f.size,
        delta_tensors,
    });
    Ok(entry)
}

/// Rebuilds the target folder of the folder delta `archive` from the folder `base` into the
/// folder `output` (new, or an existing one with `opts.force`, into which only the restored
/// files are moved). Every delta entry's base file must be the one it was made from (SHA-256
/// and size); every file restored is checked (chunks, BLAKE3, SHA-256) before the folder is
/// moved into place, so a failed run leaves nothing.
pub(crate) fn reconstruct_dirs(
    base: &Path,
    archive: &Archive,
    output: &Path,
    opts: &Options,
) -> Result<()> {
    if !crate::io::check_input(base)?.is_dir() {
        return Err(Error::Unsupported(format!(
            "{} is a folder delta: its base must be the base folder, not {}",
            archive.path().display(),
            base.display()
        )));
    }
    crate::io::check_destination(archive.path(), output)?;
    crate::io::check_writable_dir(output, opts.force)?;
    let total: u64 = archive.index().entries.iter().map(|e| e.size).sum();
    let pool = opts.pool_for(total)?;
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start("reconstructing", total);
    }
    pool.install(|| {
        crate::decompress::restore_tree(archive, output, opts, |entry, write| {
            if entry.base.is_none() {
                return write_entry(archive, entry, &[], opts, &mut *write);
            }
            let base = base_file(base, archive, entry)?;
            let slices = base_slices(archive, entry, &base)?;
            write_entry(archive, entry, &slices, opts, &mut *write)
        })
    })?;
    if let Some(p) = progress {
        p.finish();
    }
    Ok(())
}

/// Opens the file of the base folder `dir` that the delta entry `entry` was made from: a
/// missing file or one that is no longer a checkpoint file is a wrong base.
fn base_file(dir: &Path, archive: &Archive, entry: &dmx_format::Entry) -> Result<Base> {
    let path = dir.join(&entry.path);
    let wrong = |why: String| {
        Error::WrongBase(format!(
            "wrong base: {} was made from a base folder with the file {}, but {why}",
            archive.path().display(),
            entry.path
        ))
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(wrong(format!("{} is not a regular file", path.display()))),
        Err(_) => return Err(wrong(format!("{} does not exist", path.display()))),
    }
    match Base::open_file(&path) {
        Err(Error::Unsupported(why)) => Err(wrong(why)),
        other => other,
    }
}
