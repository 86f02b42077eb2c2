//! Storing one checkpoint as a chain entry: the smaller of a delta and an anchor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dmx_format::{EntryKind, Root, SegmentKind};

use crate::Options;
use crate::archive::Archive;
use crate::delta::{Base, Precision, hex, planner_reason, restore_delta_to, write_entry};
use crate::error::{Error, Result};
use crate::io::AtomicFile;
use crate::io::fs::sha256_file;
use crate::lossy::Grid;

use super::MANIFEST;
use super::folder::{hash_files, remove_scratch};
use super::manifest::{ChainEntry, ChainEntryKind, ChainManifest, check_name};

/// Checks a checkpoint to append: one safetensors or `torch.save` file, or a checkpoint
/// folder (lossless chains only for `torch.save` files and folders: see
/// [`crate::delta::refuse_quantized_torch`]). Returns its name and whether it is a folder.
pub(super) fn check_input(path: &Path, precision: Precision) -> Result<(String, bool)> {
    let folder = crate::io::check_input(path)?.is_dir();
    if folder && precision != Precision::Lossless {
        return Err(Error::Unsupported(format!(
            "{}: --precision {} is not available for chains of checkpoint folders yet; use \
             --precision lossless",
            path.display(),
            precision.name()
        )));
    }
    if folder {
        check_checkpoint_folder(path)?;
    } else {
        let (root, files) = crate::plan::plan_input(path)?;
        match (root, files.first()) {
            (Root::File, Some(f)) if f.kind.has_tensors() && !f.kind.is_delta() => {
                let d = crate::delta::DeltaOptions {
                    precision,
                    steps: None,
                };
                crate::delta::refuse_quantized_torch(&d, f)?;
            }
            (_, f) => {
                let warning = f.and_then(|f| f.warning.as_deref());
                let why = planner_reason(path, warning, "not named *.safetensors");
                return Err(Error::Unsupported(format!(
                    "{}: {why}; chain entries must be safetensors or torch.save checkpoints, \
                     or checkpoint folders",
                    path.display()
                )));
            }
        }
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Unsupported(format!("{}: file name is not UTF-8", path.display())))?;
    check_name(name).map_err(|d| Error::Unsupported(format!("{}: {d}", path.display())))?;
    Ok((name.to_string(), folder))
}

/// A checkpoint folder holds at least one checkpoint file (safetensors or `torch.save`) and
/// is not a chain.
fn check_checkpoint_folder(path: &Path) -> Result<()> {
    if super::is_chain_dir(path) {
        return Err(Error::Unsupported(format!(
            "{}: is a dmx chain, not a checkpoint folder",
            path.display()
        )));
    }
    let (_, files) = crate::plan::plan_input(path)?;
    if !files.iter().any(|f| f.kind.has_tensors()) {
        return Err(Error::Unsupported(format!(
            "{}: holds no safetensors or torch.save file; a checkpoint folder must hold at \
             least one",
            path.display()
        )));
    }
    Ok(())
}

/// Checks that `checkpoints` (with their folder flags) are all files or all folders, and of
/// the same kind as the chain's entries `existing`.
pub(super) fn check_uniform(
    checkpoints: &[PathBuf],
    folders: &[bool],
    existing: Option<bool>,
) -> Result<()> {
    let first = existing.or(folders.first().copied()).unwrap_or(false);
    match folders.iter().position(|&f| f != first) {
        None => Ok(()),
        Some(i) => Err(Error::InvalidArgument(format!(
            "{} is {}, but {}: a chain's checkpoints are all files or all folders",
            checkpoints[i].display(),
            if folders[i] { "a folder" } else { "a file" },
            match existing {
                Some(_) => "the chain's checkpoints are not".to_string(),
                None => format!("{} is not", checkpoints[0].display()),
            }
        ))),
    }
}

/// Grids of the quantized tensors of an anchor archive, from their lossy records.
pub(super) fn grid_of(archive: &Archive) -> BTreeMap<String, Grid> {
    archive.index().entries[0]
        .segments
        .iter()
        .filter_map(|s| match (&s.kind, s.transform.lossy()) {
            (SegmentKind::Tensor(t), Some(l)) => Some((t.name.clone(), Grid::of_record(l)?)),
            _ => None,
        })
        .collect()
}

/// A chain opened for reading.
pub(super) struct Chain<'a> {
    dir: &'a Path,
    m: &'a ChainManifest,
    opts: &'a Options,
    pool: rayon::ThreadPool,
}

/// An error's message without the path it starts with (for messages that already name the
/// file).
pub(super) fn detail_of(err: &Error) -> String {
    match err {
        Error::Format { source, .. } => source.to_string(),
        Error::Corrupt { what, detail, .. } => format!("{what}: {detail}"),
        Error::Mismatch { detail, .. } => detail.clone(),
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// What a walk over a chain did to one entry: restored to this path, or failed.
pub(super) type Outcome = std::result::Result<PathBuf, Error>;

impl<'a> Chain<'a> {
    pub(super) fn new(dir: &'a Path, m: &'a ChainManifest, opts: &'a Options) -> Result<Self> {
        Ok(Self {
            dir,
            m,
            opts,
            pool: opts.pool()?,
        })
    }

    fn path_of(&self, e: &ChainEntry) -> PathBuf {
        self.dir.join(&e.file)
    }

    fn corrupt(&self, e: &ChainEntry, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            path: self.path_of(e),
            what: format!("chain entry {}", e.index),
            detail: detail.into(),
        }
    }

    /// Checks the size and SHA-256 of the stored file against the manifest.
    pub(super) fn check_stored(&self, e: &ChainEntry) -> Result<()> {
        let (sha, size) = sha256_file(&self.path_of(e)).map_err(|err| match err {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => self
                .corrupt(
                    e,
                    format!("missing: {MANIFEST} lists it but the file does not exist"),
                ),
            Error::Io { source, .. } => self.corrupt(e, format!("cannot be read: {source}")),
            other => other,
        })?;
        if size != e.stored_size {
            return Err(self.corrupt(
                e,
                format!(
                    "{size} bytes where {MANIFEST} records {} (the file is damaged)",
                    e.stored_size
                ),
            ));
        }
        if sha != e.stored_sha256 {
            return Err(self.corrupt(
                e,
                format!(
                    "SHA-256 of the stored file does not match {MANIFEST} (the file is damaged)"
                ),
            ));
        }
        Ok(())
    }

    /// Opens an entry (after [`Chain::check_stored`] unless `hashed`) and checks its index
    /// against the manifest: kind, restored SHA-256 and size, and a delta's base.
    fn load(&self, e: &ChainEntry, hashed: bool) -> Result<Archive> {
        if !hashed {
            self.check_stored(e)?;
        }
        let archive =
            Archive::open(&self.path_of(e)).map_err(|err| self.corrupt(e, detail_of(&err)))?;
        let index = archive.index();
        if e.folder {
            return self.check_folder_archive(e, archive);
        }
        let delta = e.kind == ChainEntryKind::Delta;
        let fits = index.root == Root::File
            && index.entries.len() == 1
            && index.entries[0].kind.has_tensors()
            && index.entries[0].kind.is_delta() == delta;
        if !fits {
            return Err(self.corrupt(
                e,
                format!("is not a single-file {} archive", e.kind.as_str()),
            ));
        }
        let entry = &index.entries[0];
        if hex(&entry.sha256) != e.restored_sha256 || entry.size != e.original_size {
            return Err(self.corrupt(
                e,
                format!("restores another file than {MANIFEST} records (SHA-256 or size differ)"),
            ));
        }
        if e.kind == ChainEntryKind::Delta {
            let parent = &self.m.entries[e.index - 1];
            let ok = entry.base.as_ref().is_some_and(|b| {
                hex(&b.sha256) == parent.restored_sha256 && b.size == parent.original_size
            });
            if !ok {
                return Err(self.corrupt(
                    e,
                    format!("was not made from entry {} ({})", parent.index, parent.file),
                ));
            }
        }
        Ok(archive)
    }

    /// A folder entry's archive: a folder root, delta entries exactly when the entry is a
    /// delta, and the size the manifest records. (Its hash is checked on the restored
    /// folder, [`Chain::check_folder`].)
    fn check_folder_archive(&self, e: &ChainEntry, archive: Archive) -> Result<Archive> {
        let index = archive.index();
        let delta = e.kind == ChainEntryKind::Delta;
        if index.root != Root::Directory || index.entries.iter().any(|x| x.base.is_some()) != delta
        {
            return Err(self.corrupt(e, format!("is not a folder {} archive", e.kind.as_str())));
        }
        let size: u64 = index
            .entries
            .iter()
            .filter(|x| x.kind != EntryKind::Pack)
            .map(|x| x.size)
            .sum();
        if size != e.original_size {
            return Err(self.corrupt(
                e,
                format!("restores another folder than {MANIFEST} records (sizes differ)"),
            ));
        }
        Ok(archive)
    }

    /// A restored folder entry at `path` (the files of `archive`) hashes to the manifest's
    /// `restored_sha256`.
    fn check_folder(&self, e: &ChainEntry, archive: &Archive, path: &Path) -> Result<()> {
        if !e.folder {
            return Ok(());
        }
        let rels = archive
            .index()
            .entries
            .iter()
            .filter(|x| x.kind != EntryKind::Pack)
            .map(|x| x.path.clone());
        if hash_files(path, rels)?.sha256 == e.restored_sha256 {
            return Ok(());
        }
        Err(self.corrupt(
            e,
            format!("restores another folder than {MANIFEST} records (its hash differs)"),
        ))
    }

    /// Restores an opened entry to `dest`: see [`restore_entry`].
    fn restore(
        &self,
        archive: &Archive,
        base: Option<&Path>,
        dest: &Path,
        force: bool,
        sync: bool,
    ) -> Result<()> {
        restore_entry(&self.pool, self.opts, archive, base, dest, force, sync)
    }

    /// Restores entry `index` of the chain (and the entries it depends on) into scratch files
    /// under `scratch`: its reconstruction, or the first error met on the way.
    pub(super) fn restore_one(&self, index: usize, scratch: &Path) -> Result<Option<PathBuf>> {
        let needed: Vec<usize> = self.m.needed_for(index).collect();
        let mut failure = None;
        let rebuilt = self.rebuild(&needed, scratch, &|_| false, &|_| None, &mut |_, r| {
            if let Err(e) = r
                && failure.is_none()
            {
                failure = Some(e);
            }
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(rebuilt.map(|(_, p)| p)),
        }
    }

    /// Restores the entries `needed` (ascending, closed under parents) one by one, each from
    /// its parent's reconstruction. `dest(i)` is the output of entry `i`, or `None` for a
    /// scratch file in `scratch` (removed once the next entry is built). `done` gets every
    /// entry's outcome; an entry that fails (corrupt or missing) fails the deltas after it
    /// until the next anchor, and the others go on. Errors that are not about the chain's
    /// data (writing an output) stop the walk. Returns the last entry's reconstruction if it
    /// succeeded.
    pub(super) fn rebuild(
        &self,
        needed: &[usize],
        scratch: &Path,
        hashed: &dyn Fn(usize) -> bool,
        dest: &dyn Fn(usize) -> Option<PathBuf>,
        done: &mut dyn FnMut(usize, Outcome),
    ) -> Result<Option<(usize, PathBuf)>> {
        // The last reconstruction: (index, path, is a scratch file).
        let mut prev: Option<(usize, PathBuf, bool)> = None;
        // The entry whose failure breaks the current run of deltas, with its error.
        let mut broken: Option<(usize, String)> = None;
        for &i in needed {
            self.opts.check_cancel()?;
            let e = &self.m.entries[i];
            let base = match (e.kind, &prev) {
                (ChainEntryKind::Anchor, _) => None,
                (ChainEntryKind::Delta, Some((p, path, _))) if *p + 1 == i => Some(path.clone()),
                (ChainEntryKind::Delta, _) => {
                    let (j, why) = broken
                        .clone()
                        .unwrap_or((i - 1, "it was not reconstructed".into()));
                    let parent = &self.m.entries[j];
                    done(
                        i,
                        Err(self.corrupt(
                            e,
                            format!(
                                "not reconstructed: it depends on entry {j} ({}), which failed: \
                                 {why}",
                                parent.file
                            ),
                        )),
                    );
                    continue;
                }
            };
            let (path, is_scratch, force, sync) = match dest(i) {
                Some(p) => (p, false, self.opts.force, !self.opts.no_sync),
                None => (
                    scratch.join(format!("{i:05}-{}", e.name)),
                    true,
                    true,
                    false,
                ),
            };
            let result = self
                .load(e, hashed(i))
                .and_then(|a| {
                    self.restore(&a, base.as_deref(), &path, force, sync)?;
                    self.check_folder(e, &a, &path)
                })
                .map_err(|err| match err {
                    // The parent's reconstruction is not this delta's base: the chain is
                    // damaged (for folder deltas, checked file by file while restoring).
                    Error::WrongBase(_) => self.corrupt(
                        e,
                        format!("was not made from entry {} (a wrong base)", i - 1),
                    ),
                    err => err,
                });
            if let Some((_, p, true)) = prev.take() {
                remove_scratch(&p);
            }
            match result {
                Ok(()) => {
                    done(i, Ok(path.clone()));
                    prev = Some((i, path, is_scratch));
                    broken = None;
                }
                Err(err) if err.is_integrity_failure() => {
                    broken = Some((i, detail_of(&err)));
                    done(i, Err(err));
                }
                Err(err) => return Err(err),
            }
        }
        Ok(prev.map(|(i, p, _)| (i, p)))
    }
}

/// Restores an opened chain entry to `dest` (atomically); `base` is the parent's
/// reconstruction for deltas. Checks every chunk, tensor and the file's SHA-256.
pub(super) fn restore_entry(
    pool: &rayon::ThreadPool,
    opts: &Options,
    archive: &Archive,
    base: Option<&Path>,
    dest: &Path,
    force: bool,
    sync: bool,
) -> Result<()> {
    let o = Options {
        threads: opts.threads,
        force,
        no_sync: !sync,
        progress: opts.progress.clone(),
        cancel: opts.cancel.clone(),
    };
    if entry_is_folder(archive) {
        // Folder restores report their own progress.
        return pool.install(|| match base {
            Some(b) => crate::delta::reconstruct_dirs(b, archive, dest, &o),
            None => crate::decompress(archive.path(), dest, &o),
        });
    }
    let progress = o.progress.as_deref();
    let entry = &archive.index().entries[0];
    if let Some(p) = progress {
        p.start("reconstructing", entry.size);
    }
    pool.install(|| match base {
        Some(b) => {
            let base = Base::open(b, &o)?;
            restore_delta_to(archive, &base, dest, &o)
        }
        None => {
            let mut out = AtomicFile::create(dest, force, sync)?;
            out.reserve(entry.size);
            write_entry(archive, entry, &[], &o, |d| out.write_all(d))?;
            out.commit()
        }
    })?;
    if let Some(p) = progress {
        p.finish();
    }
    Ok(())
}

/// Whether a chain entry's archive holds a folder checkpoint.
fn entry_is_folder(archive: &Archive) -> bool {
    archive.index().root == Root::Directory
}
