//! Crash-safe outputs: everything is written to a temporary file (or folder) beside the
//! destination, synced, and renamed into place only when complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::destination::{check_writable, check_writable_dir, kind_of};
use super::fs::sync_dir;
use crate::error::{Error, Result};

/// Prefix of every temporary file and folder dmx creates.
pub const TEMP_PREFIX: &str = ".dmx-tmp-";

/// How old (by modification time) a temporary of a process that no longer exists must be
/// before a later run removes it.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// True for names of dmx temporaries (`.dmx-tmp-*`), which folder walks skip.
pub fn is_temp_name(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes())
}

/// The temporaries this process has created and not yet committed or dropped.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Set by [`remove_temps`]: no new temporary may appear afterwards.
static CLOSING: AtomicBool = AtomicBool::new(false);
/// Folders already swept for stale temporaries by this process.
static SWEPT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn remove_any(path: &Path) {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Removes every temporary file and folder (`.dmx-tmp-*`) this process has created and not yet
/// renamed into place or dropped, and refuses any new one from then on. Call it right before
/// the process exits on a signal (the `dmx` binary does so on SIGINT, SIGTERM and SIGHUP);
/// it never touches a destination or any other file.
pub fn remove_temps() {
    // A commit in progress (several renames that make one output) is finished first: a
    // signal never leaves half a folder merged or half a chain swapped in.
    let _commit = commit_guard();
    let mut live = live();
    CLOSING.store(true, Ordering::SeqCst);
    for p in live.drain(..) {
        // The run goes on while this runs and may still add a file to a temporary folder
        // being removed (`remove_dir_all` then fails on a non-empty folder): try again.
        for _ in 0..50 {
            remove_any(&p);
            if p.symlink_metadata().is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Held while a commit made of several renames runs (see [`commit_guard`]).
static COMMIT: Mutex<()> = Mutex::new(());

/// Holds off [`remove_temps`] (and so the exit on a signal) until the guard is dropped: taken
/// around the renames of a commit that moves several paths into place (a folder merged into
/// an existing one, a chain swapped in), which must run to the end once begun.
pub(crate) fn commit_guard() -> std::sync::MutexGuard<'static, ()> {
    COMMIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A registered temporary path: unregistered when dropped.
struct Registered(PathBuf);

impl Registered {
    /// Registers `path`, created while `live` (the lock, taken by [`closing_check`]) was held.
    fn locked(mut live: std::sync::MutexGuard<'static, Vec<PathBuf>>, path: &Path) -> Self {
        live.push(path.to_path_buf());
        Self(path.to_path_buf())
    }
}

/// The lock on the live temporaries, unless a signal's cleanup has begun (then an
/// "interrupted" error for `dir`): hold it while creating a temporary and registering it.
fn closing_check(dir: &Path) -> Result<std::sync::MutexGuard<'static, Vec<PathBuf>>> {
    let live = live();
    if CLOSING.load(Ordering::SeqCst) {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"),
        ));
    }
    Ok(live)
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut live = live();
        if let Some(i) = live.iter().position(|p| *p == self.0) {
            live.swap_remove(i);
        }
    }
}

/// The process id in a temporary's name `.dmx-tmp-<pid>-<random>`, if it has that form.
fn temp_pid(name: &std::ffi::OsStr) -> Option<u32> {
    let rest = name.to_str()?.strip_prefix(TEMP_PREFIX)?;
    let (pid, random) = rest.split_once('-')?;
    if random.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` exists; `None` where this cannot be told (no `/proc`).
fn pid_alive(pid: u32) -> Option<bool> {
    if !cfg!(target_os = "linux") || !Path::new("/proc/self").exists() {
        return None;
    }
    Some(Path::new("/proc").join(pid.to_string()).exists())
}

/// The newest modification time of `path` and, for a folder, of everything in it (a bounded
/// walk: a huge folder counts as fresh).
fn newest_mtime(path: &Path, budget: &mut usize) -> Option<std::time::SystemTime> {
    let meta = path.symlink_metadata().ok()?;
    let mut newest = meta.modified().ok()?;
    if meta.is_dir() {
        for item in std::fs::read_dir(path).ok()? {
            *budget = budget.checked_sub(1)?;
            let t = newest_mtime(&item.ok()?.path(), budget)?;
            newest = newest.max(t);
        }
    }
    Some(newest)
}

/// Removes, once per process and folder, the temporaries in `dir` left by dmx runs that were
/// killed: names `.dmx-tmp-<pid>-<random>` whose process no longer exists and that have not
/// been modified for a few minutes. Nothing else is ever removed (older unnamed temporaries,
/// live processes' and unknown files are kept), and where liveness cannot be told (no
/// `/proc`) nothing is removed.
pub fn sweep_stale(dir: &Path) {
    {
        let mut swept = SWEPT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if swept.iter().any(|d| d == dir) {
            return;
        }
        swept.push(dir.to_path_buf());
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    let now = std::time::SystemTime::now();
    for item in rd.flatten() {
        let name = item.file_name();
        let Some(pid) = temp_pid(&name) else {
            continue;
        };
        if pid == me || pid_alive(pid) != Some(false) {
            continue;
        }
        let path = item.path();
        let mut budget = 10_000;
        let Some(t) = newest_mtime(&path, &mut budget) else {
            continue;
        };
        if now.duration_since(t).is_ok_and(|age| age >= STALE_AFTER) {
            remove_any(&path);
        }
    }
}

/// A builder for hidden temporary names `.dmx-tmp-<pid>-<random>` whose final permissions are
/// the usual ones for new files and folders (`mode` less the umask) rather than tempfile's
/// private 0600/0700.
fn temp_builder(prefix: &str, mode: u32) -> tempfile::Builder<'_, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    b
}

fn own_prefix() -> String {
    format!("{TEMP_PREFIX}{}-", std::process::id())
}

/// `e` without the ` at path "…/.dmx-tmp-…"` that tempfile appends: the error is reported
/// for the folder, and the temporary name is an internal detail.
fn without_temp_path(e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    match text.split_once(" at path \"") {
        Some((head, tail)) if tail.contains(TEMP_PREFIX) => {
            std::io::Error::new(e.kind(), head.to_string())
        }
        _ => e,
    }
}

/// A registered temporary file in `dir` (stale temporaries there are swept first).
pub(crate) fn temp_file_in(dir: &Path) -> Result<TempFile> {
    sweep_stale(dir);
    // Created and registered under one lock: a signal's cleanup sees it or forbids it.
    let guard = closing_check(dir)?;
    let file = temp_builder(&own_prefix(), 0o666)
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, without_temp_path(e)))?;
    let reg = Registered::locked(guard, file.path());
    Ok(TempFile { file, _reg: reg })
}

/// A registered temporary folder in `dir` (stale temporaries there are swept first).
pub(crate) fn temp_dir_in(dir: &Path) -> Result<TempDir> {
    sweep_stale(dir);
    let guard = closing_check(dir)?;
    let tmp = temp_builder(&own_prefix(), 0o777)
        .tempdir_in(dir)
        .map_err(|e| Error::io(dir, without_temp_path(e)))?;
    let reg = Registered::locked(guard, tmp.path());
    Ok(TempDir {
        dir: Some(tmp),
        _reg: reg,
    })
}

/// A temporary file, removed when dropped, and removed by [`remove_temps`] on a signal.
pub(crate) struct TempFile {
    /// The file (dropped first: removes it).
    pub(crate) file: tempfile::NamedTempFile,
    _reg: Registered,
}

/// A temporary folder, removed with its contents when dropped, and by [`remove_temps`].
pub(crate) struct TempDir {
    dir: Option<tempfile::TempDir>,
    _reg: Registered,
}

impl TempDir {
    /// The folder.
    pub(crate) fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("."), |t| t.path())
    }

    /// Stops removing the folder on drop (after it was renamed or emptied).
    pub(crate) fn keep(mut self) -> PathBuf {
        self.dir.take().map(|t| t.keep()).unwrap_or_default()
    }
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
    // A second handle on `tmp`'s file: errors of writes through it name no temporary path.
    writer: BufWriter<File>,
    tmp: tempfile::NamedTempFile,
    pos: u64,
    // The length `reserve` gave the file before its bytes were written.
    reserved: u64,
    // Declared after `tmp`: unregistered only once the temporary is gone.
    _reg: Registered,
}

impl AtomicFile {
    /// Starts writing `dest` (checked with [`check_writable`]); `sync` makes [`commit`]
    /// fsync the data before the rename.
    ///
    /// [`commit`]: AtomicFile::commit
    pub fn create(dest: &Path, force: bool, sync: bool) -> Result<Self> {
        check_writable(dest, force)?;
        let TempFile { file, _reg } = temp_file_in(&parent_of(dest))?;
        let handle = file.as_file().try_clone().map_err(|e| Error::io(dest, e))?;
        Ok(Self {
            dest: dest.to_path_buf(),
            force,
            sync,
            writer: BufWriter::with_capacity(1 << 20, handle),
            tmp: file,
            pos: 0,
            reserved: 0,
            _reg,
        })
    }

    /// Allocates the disk blocks of a file of `len` bytes (what it will hold, or a bound)
    /// before they are written (Linux `fallocate`; elsewhere nothing): the writes then fill
    /// blocks the file already has rather than reserving them page by page, and the file
    /// costs less to free when a later run replaces it (BENCHMARKS.md §38: decompressing
    /// MiniLM F32 over its previous output, 73 → 41 ms). Best effort: where the filesystem
    /// cannot (or the disk is too full), the writes go on as before and report what matters.
    /// The file has `len` bytes (zeros past what is written) until [`commit`] cuts it to the
    /// bytes written, freeing the blocks they did not fill.
    ///
    /// [`commit`]: AtomicFile::commit
    pub fn reserve(&mut self, len: u64) {
        if len > self.pos && reserve_blocks(self.tmp.as_file(), len) {
            self.reserved = self.reserved.max(len);
        }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Appends bytes.
    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        write_through(&mut self.writer, data).map_err(|e| Error::io(&self.dest, e))?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Overwrites `data.len()` bytes already written at `offset` (the preamble's minor
    /// version, known only once every chunk is encoded); later writes still append.
    pub fn rewrite_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        if offset + data.len() as u64 > self.pos {
            return Err(Error::Resource(format!(
                "{}: internal error: rewriting bytes not written yet",
                self.dest.display()
            )));
        }
        let dest = &self.dest;
        (|| {
            self.writer.seek(SeekFrom::Start(offset))?;
            self.writer.write_all(data)?;
            self.writer.seek(SeekFrom::Start(self.pos))?;
            Ok(())
        })()
        .map_err(|e: std::io::Error| Error::io(dest, e))
    }

    /// Flushes, syncs and renames the file into place (checking again that the destination
    /// is still absent, or a regular file when forced).
    pub fn commit(self) -> Result<()> {
        let dest = self.dest;
        let file = self
            .writer
            .into_inner()
            .map_err(|e| Error::io(&dest, e.into_error()))?;
        end_reserved(&file, self.reserved, self.pos).map_err(|e| Error::io(&dest, e))?;
        if self.sync {
            file.sync_all().map_err(|e| Error::io(&dest, e))?;
        }
        drop(file);
        let tmp = self.tmp;
        check_writable(&dest, self.force)?;
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

/// A folder restored under a temporary name and moved to its destination by [`commit`].
///
/// A destination that does not exist is created by renaming the whole temporary folder. An
/// existing folder (with `force`) is merged into: the temporary folder is built inside it,
/// and [`commit`] moves each file it holds over the file of the same path, one atomic rename
/// each, after checking every path first. Files of the destination that the archive does
/// not hold are never touched; nothing is replaced or removed before everything is complete.
/// Dropping it without committing removes the temporary folder.
///
/// [`commit`]: AtomicDir::commit
pub struct AtomicDir {
    dest: PathBuf,
    merge: bool,
    sync: bool,
    tmp: TempDir,
}

impl AtomicDir {
    /// Starts building `dest` (checked with [`check_writable_dir`]); `sync` makes [`commit`]
    /// sync the folder entries after the renames (files are synced by their writers).
    ///
    /// [`commit`]: AtomicDir::commit
    pub fn create(dest: &Path, force: bool, sync: bool) -> Result<Self> {
        check_writable_dir(dest, force)?;
        let merge = dest.symlink_metadata().is_ok();
        let tmp = if merge {
            temp_dir_in(dest)?
        } else {
            temp_dir_in(&parent_of(dest))?
        };
        Ok(Self {
            dest: dest.to_path_buf(),
            merge,
            sync,
            tmp,
        })
    }

    /// The temporary folder to fill.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Checks that files at the relative paths `rels` (`/`-separated) may be restored into
    /// the destination: when merging into an existing folder, every folder on the way must
    /// be a real folder (never a symbolic link) and every existing file a regular file.
    pub fn check_paths<'a>(&self, rels: impl IntoIterator<Item = &'a str>) -> Result<()> {
        if !self.merge {
            return Ok(());
        }
        for rel in rels {
            self.check_path(rel)?;
        }
        Ok(())
    }

    fn check_path(&self, rel: &str) -> Result<()> {
        let parts: Vec<&str> = rel.split('/').collect();
        let mut at = self.dest.clone();
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            let last = i + 1 == parts.len();
            let meta = match at.symlink_metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io(&at, e)),
            };
            let ok = if last {
                meta.file_type().is_file()
            } else {
                meta.file_type().is_dir()
            };
            if !ok {
                return Err(Error::Destination(format!(
                    "{}: is {}, where the archive restores {} {rel:?}; nothing was changed \
                     (move it away or choose another destination)",
                    at.display(),
                    kind_of(&meta),
                    if last {
                        "the file"
                    } else {
                        "a folder on the way to"
                    }
                )));
            }
            #[cfg(unix)]
            if !last {
                use std::os::unix::fs::MetadataExt;
                let tmp_dev = self
                    .tmp
                    .path()
                    .symlink_metadata()
                    .map_err(|e| Error::io(self.tmp.path(), e))?
                    .dev();
                if meta.dev() != tmp_dev {
                    return Err(Error::Destination(format!(
                        "{}: is on another file system than {}, so files cannot be moved \
                         into it atomically; nothing was changed",
                        at.display(),
                        self.dest.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Moves the restored files into place: renames the folder (new destination), or moves
    /// every file over its counterpart (existing destination, after checking every path).
    pub fn commit(self) -> Result<()> {
        if !self.merge {
            // Renamed while still registered; a failed rename leaves it to be removed on drop.
            std::fs::rename(self.tmp.path(), &self.dest).map_err(|e| Error::io(&self.dest, e))?;
            self.tmp.keep();
            if self.sync {
                sync_dir(&parent_of(&self.dest));
            }
            return Ok(());
        }
        let mut rels = Vec::new();
        list_files(self.tmp.path(), "", &mut rels)?;
        self.check_paths(rels.iter().map(String::as_str))?;
        let _commit = commit_guard();
        let mut touched: Vec<PathBuf> = Vec::new();
        for rel in &rels {
            let target = self.dest.join(rel);
            let parent = parent_of(&target);
            // Create missing folders one level at a time (never following a link).
            let mut at = self.dest.clone();
            let parts: Vec<&str> = rel.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                at.push(part);
                match std::fs::create_dir(&at) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let m = at.symlink_metadata().map_err(|e| Error::io(&at, e))?;
                        if !m.file_type().is_dir() {
                            return Err(Error::Destination(format!(
                                "{}: is {}, not a folder",
                                at.display(),
                                kind_of(&m)
                            )));
                        }
                    }
                    Err(e) => return Err(Error::io(&at, e)),
                }
            }
            if let Ok(m) = target.symlink_metadata()
                && !m.file_type().is_file()
            {
                return Err(Error::Destination(format!(
                    "{}: is {}, not a regular file; not replaced",
                    target.display(),
                    kind_of(&m)
                )));
            }
            std::fs::rename(self.tmp.path().join(rel), &target)
                .map_err(|e| Error::io(&target, e))?;
            if !touched.contains(&parent) {
                touched.push(parent);
            }
        }
        if self.sync {
            for d in &touched {
                sync_dir(d);
            }
        }
        Ok(())
    }
}

/// The files under `dir` (relative, `/`-separated), depth first.
fn list_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let mut items: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io(dir, e))?;
    items.sort_by_key(|i| i.file_name());
    for item in items {
        let name = item.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let t = item.file_type().map_err(|e| Error::io(item.path(), e))?;
        if t.is_dir() {
            list_files(&item.path(), &rel, out)?;
        } else if t.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

/// Writes `data` to `path` atomically (temporary file, rename), refusing an existing file
/// unless `force`.
pub fn write_file(path: &Path, data: &[u8], force: bool, sync: bool) -> Result<()> {
    let mut f = AtomicFile::create(path, force, sync)?;
    f.write_all(data)?;
    f.commit()
}

/// Creates the file `path` inside a folder being built, and its missing parent folders, under
/// the lock that [`remove_temps`] holds while removing: once a signal's cleanup has begun, the
/// folder being built (perhaps just removed) is never created again.
pub(crate) fn create_plain(path: &Path) -> Result<File> {
    let _live = closing_check(path)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    File::create(path).map_err(|e| Error::io(path, e))
}

/// Allocates the disk blocks of the first `len` bytes of `file`, which then has at least
/// `len` bytes (zeros past its data): what [`AtomicFile::reserve`] does, for files written
/// otherwise. Returns whether it did (Linux `fallocate`; elsewhere, or where the filesystem
/// cannot or the disk is too full, nothing is done).
pub(crate) fn reserve_blocks(file: &File, len: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, len);
        false
    }
}

/// Ends `file`, for which [`reserve_blocks`] reserved `reserved` bytes (0: none), at the
/// `written` bytes written to it: a file written shorter than reserved is cut to its bytes,
/// which frees the blocks they did not fill.
pub(crate) fn end_reserved(file: &File, reserved: u64, written: u64) -> std::io::Result<()> {
    if reserved > written {
        file.set_len(written)?;
    }
    Ok(())
}

/// Slices at least this long bypass a [`BufWriter`]'s buffer ([`write_through`]).
const DIRECT_WRITE: usize = 64 << 10;

/// Appends `data` to `w`: a slice of [`DIRECT_WRITE`] bytes or more (a decoded chunk, a
/// coded payload) goes to the file after the bytes buffered before it, without being copied
/// into the buffer first; smaller ones are buffered. (`BufWriter` itself copies every slice
/// shorter than its capacity.)
pub fn write_through<W: Write>(w: &mut BufWriter<W>, data: &[u8]) -> std::io::Result<()> {
    if data.len() >= DIRECT_WRITE {
        w.flush()?;
        w.get_mut().write_all(data)
    } else {
        w.write_all(data)
    }
}

/// Writes a file inside a folder being built (no rename needed: the folder is renamed).
pub fn write_plain(path: &Path) -> Result<BufWriter<File>> {
    let f = create_plain(path)?;
    Ok(BufWriter::with_capacity(1 << 20, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large slices bypass the buffer but keep their place: small and large writes, mixed,
    /// give the bytes in order, and `rewrite_at` still patches them.
    #[test]
    fn large_writes_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let mut f = AtomicFile::create(&dest, false, false).unwrap();
        let mut want = Vec::new();
        for (i, len) in [
            3usize,
            DIRECT_WRITE,
            1,
            DIRECT_WRITE + 7,
            0,
            5,
            3 * DIRECT_WRITE,
        ]
        .into_iter()
        .enumerate()
        {
            let piece: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7) as u8).collect();
            f.write_all(&piece).unwrap();
            want.extend_from_slice(&piece);
        }
        assert_eq!(f.position(), want.len() as u64);
        f.rewrite_at(1, b"XY").unwrap();
        want[1..3].copy_from_slice(b"XY");
        f.write_all(b"tail").unwrap();
        want.extend_from_slice(b"tail");
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), want);
    }

    #[test]
    fn reserved_files_hold_exactly_the_bytes_written() {
        let dir = tempfile::tempdir().unwrap();
        for (reserve, chunks) in [(0u64, 3usize), (3 << 20, 3), (5 << 20, 3), (1 << 20, 3)] {
            let dest = dir.path().join(format!("r{reserve}"));
            let mut f = AtomicFile::create(&dest, false, false).unwrap();
            f.reserve(reserve);
            let mut want = Vec::new();
            for i in 0..chunks {
                let part = vec![i as u8 + 1; (1 << 20) + 7];
                f.write_all(&part).unwrap();
                want.extend_from_slice(&part);
            }
            f.write_all(b"tail").unwrap();
            want.extend_from_slice(b"tail");
            f.commit().unwrap();
            assert_eq!(std::fs::read(&dest).unwrap(), want, "reserve {reserve}");
        }
        // Dropped without a commit: nothing appears, the reservation goes with the temporary.
        let dest = dir.path().join("dropped");
        let mut f = AtomicFile::create(&dest, false, false).unwrap();
        f.reserve(4 << 20);
        f.write_all(&[1; 100]).unwrap();
        drop(f);
        assert!(!dest.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| is_temp_name(&e.file_name()))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

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

    #[test]
    fn temp_names_carry_the_pid() {
        assert_eq!(
            temp_pid(std::ffi::OsStr::new(".dmx-tmp-123-aB9x")),
            Some(123)
        );
        for other in [
            ".dmx-tmp-aB9xyz",
            ".dmx-tmp-123-",
            ".dmx-tmp--x",
            "x.dmx-tmp-1-a",
            "a",
        ] {
            assert_eq!(temp_pid(std::ffi::OsStr::new(other)), None, "{other}");
        }
        assert!(is_temp_name(std::ffi::OsStr::new(".dmx-tmp-x")));
        assert!(!is_temp_name(std::ffi::OsStr::new("dmx-tmp-x")));
        let dir = tempfile::tempdir().unwrap();
        let f = AtomicFile::create(&dir.path().join("o"), false, false).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        assert_eq!(temp_pid(&names[0]), Some(std::process::id()));
        assert!(live().iter().any(|p| p.file_name() == Some(&names[0])));
        drop(f);
        assert!(!live().iter().any(|p| p.file_name() == Some(&names[0])));
    }

    #[test]
    fn merge_replaces_only_the_archive_files() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir_all(dest.join("sub")).unwrap();
        std::fs::write(dest.join("keep"), b"keep").unwrap();
        std::fs::write(dest.join("sub/f"), b"old").unwrap();
        let d = AtomicDir::create(&dest, true, false).unwrap();
        d.check_paths(["sub/f", "new/g"]).unwrap();
        assert!(d.check_paths(["keep/x"]).is_err(), "a file on the way");
        assert!(
            d.check_paths(["sub"]).is_err(),
            "a folder replaced by a file"
        );
        std::fs::write(d.path().join("top"), b"top").unwrap();
        std::fs::create_dir_all(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), b"new").unwrap();
        std::fs::create_dir_all(d.path().join("new")).unwrap();
        std::fs::write(d.path().join("new/g"), b"g").unwrap();
        d.commit().unwrap();
        assert_eq!(std::fs::read(dest.join("keep")).unwrap(), b"keep");
        assert_eq!(std::fs::read(dest.join("sub/f")).unwrap(), b"new");
        assert_eq!(std::fs::read(dest.join("new/g")).unwrap(), b"g");
        assert_eq!(std::fs::read(dest.join("top")).unwrap(), b"top");
        assert_eq!(
            std::fs::read_dir(&dest).unwrap().count(),
            4,
            "temporary left"
        );
    }
}
