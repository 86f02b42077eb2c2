//! Crash-safe outputs: everything is written to a temporary file (or folder) beside the
//! destination, synced, and renamed into place only when complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Refuses to write `output` when it is the same file or folder as `input` (an error naming
/// both, exit status 2 in the CLI).
pub fn check_distinct(input: &Path, output: &Path) -> Result<()> {
    if let (Ok(a), Ok(b)) = (input.canonicalize(), output.canonicalize())
        && a == b
    {
        return Err(Error::Usage(format!(
            "input and output are the same path ({}); choose another output",
            output.display()
        )));
    }
    Ok(())
}

/// Fails unless `output` may be written: it must not exist unless `force` is set.
pub fn check_writable(output: &Path, force: bool) -> Result<()> {
    if !force && output.symlink_metadata().is_ok() {
        return Err(Error::Exists(output.to_path_buf()));
    }
    Ok(())
}

/// A builder for hidden temporary names whose final permissions are the usual ones for new
/// files and folders (`mode` less the umask) rather than tempfile's private 0600/0700.
fn temp_builder(mode: u32) -> tempfile::Builder<'static, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(".dmx-tmp-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    b
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A file written under a temporary name and renamed to its destination by [`commit`].
/// Dropping it without committing removes the temporary file.
///
/// [`commit`]: AtomicFile::commit
pub struct AtomicFile {
    dest: PathBuf,
    force: bool,
    sync: bool,
    writer: BufWriter<tempfile::NamedTempFile>,
    pos: u64,
}

impl AtomicFile {
    /// Starts writing `dest` (checked with [`check_writable`]); `sync` makes [`commit`]
    /// fsync the data before the rename.
    ///
    /// [`commit`]: AtomicFile::commit
    pub fn create(dest: &Path, force: bool, sync: bool) -> Result<Self> {
        check_writable(dest, force)?;
        let dir = parent_of(dest);
        let tmp = temp_builder(0o666)
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        Ok(Self {
            dest: dest.to_path_buf(),
            force,
            sync,
            writer: BufWriter::with_capacity(1 << 20, tmp),
            pos: 0,
        })
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Appends bytes.
    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.writer
            .write_all(data)
            .map_err(|e| Error::io(&self.dest, e))?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(self) -> Result<()> {
        let dest = self.dest;
        let tmp = self
            .writer
            .into_inner()
            .map_err(|e| Error::io(&dest, e.into_error()))?;
        if self.sync {
            tmp.as_file().sync_all().map_err(|e| Error::io(&dest, e))?;
        }
        let persisted = if self.force {
            tmp.persist(&dest)
        } else {
            tmp.persist_noclobber(&dest)
        };
        persisted.map_err(|e| Error::io(&dest, e.error))?;
        if self.sync {
            sync_dir(&parent_of(&dest));
        }
        Ok(())
    }
}

/// A folder built under a temporary name and renamed to its destination by [`commit`].
///
/// [`commit`]: AtomicDir::commit
pub struct AtomicDir {
    dest: PathBuf,
    force: bool,
    sync: bool,
    tmp: Option<tempfile::TempDir>,
}

impl AtomicDir {
    /// Starts building `dest` (checked with [`check_writable`]); `sync` makes [`commit`]
    /// sync the folder entry after the rename (files are synced by their writers).
    ///
    /// [`commit`]: AtomicDir::commit
    pub fn create(dest: &Path, force: bool, sync: bool) -> Result<Self> {
        check_writable(dest, force)?;
        let dir = parent_of(dest);
        let tmp = temp_builder(0o777)
            .tempdir_in(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        Ok(Self {
            dest: dest.to_path_buf(),
            force,
            sync,
            tmp: Some(tmp),
        })
    }

    /// The temporary folder to fill.
    pub fn path(&self) -> &Path {
        self.tmp.as_ref().map_or(Path::new("."), |t| t.path())
    }

    /// Renames the folder into place, replacing an existing destination when forced.
    pub fn commit(mut self) -> Result<()> {
        let tmp = self.tmp.take().map(|t| t.keep()).unwrap_or_default();
        if self.force && self.dest.symlink_metadata().is_ok() {
            let meta = self
                .dest
                .symlink_metadata()
                .map_err(|e| Error::io(&self.dest, e))?;
            let removed = if meta.is_dir() {
                std::fs::remove_dir_all(&self.dest)
            } else {
                std::fs::remove_file(&self.dest)
            };
            removed.map_err(|e| Error::io(&self.dest, e))?;
        }
        std::fs::rename(&tmp, &self.dest).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            Error::io(&self.dest, e)
        })?;
        if self.sync {
            sync_dir(&parent_of(&self.dest));
        }
        Ok(())
    }
}

/// Writes `data` to `path` atomically (temporary file, rename), refusing an existing file
/// unless `force`.
pub fn write_file(path: &Path, data: &[u8], force: bool, sync: bool) -> Result<()> {
    let mut f = AtomicFile::create(path, force, sync)?;
    f.write_all(data)?;
    f.commit()
}

/// Writes a file inside a folder being built (no rename needed: the folder is renamed).
pub fn write_plain(path: &Path) -> Result<BufWriter<File>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    Ok(BufWriter::with_capacity(1 << 20, f))
}

fn sync_dir(dir: &Path) {
    // Best effort: makes the rename durable where the platform allows opening folders.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let mut f = AtomicFile::create(&dest, false, true).unwrap();
        f.write_all(b"hello").unwrap();
        assert!(!dest.exists());
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
            assert_ne!(
                mode & 0o044,
                0,
                "outputs must not be private to the owner: {mode:o}"
            );
        }
        assert!(AtomicFile::create(&dest, false, true).is_err());
        let f = AtomicFile::create(&dest, true, false).unwrap();
        drop(f);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
