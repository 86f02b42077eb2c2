//! Checks of outputs before anything is written: a destination must not be an input, hold
//! the archive being read, or be anything but a regular file (or a folder, for folders).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Refuses to write `output` when it is the same file or folder as `input` (by resolved path,
/// or by device and inode for hard links and bind mounts): an error naming both, exit
/// status 2 in the CLI.
pub fn check_distinct(input: &Path, output: &Path) -> Result<()> {
    let same_path = matches!(
        (input.canonicalize(), output.canonicalize()),
        (Ok(a), Ok(b)) if a == b
    );
    if same_path || same_file(input, output) {
        return Err(Error::Destination(format!(
            "input and output are the same path ({}); choose another output",
            output.display()
        )));
    }
    Ok(())
}

/// Refuses to write `output` over an existing file inside the folder `input` (a chain or an
/// original model folder): a report written there would replace one of the input's files.
/// Does nothing when `input` is not a folder or `output` does not exist.
pub fn check_outside(input: &Path, output: &Path) -> Result<()> {
    if !input.is_dir() || output.symlink_metadata().is_err() {
        return Ok(());
    }
    let (Ok(i), Some(o)) = (input.canonicalize(), resolve(output)) else {
        return Ok(());
    };
    if o.starts_with(&i) {
        return Err(Error::Destination(format!(
            "{} is a file of the input folder {}; replacing it would lose it: choose another \
             output",
            output.display(),
            input.display()
        )));
    }
    Ok(())
}

/// True when `path` is spelled `-` (standard input or output on the command line).
pub fn is_dash(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Refuses the output `-` (a file, or a folder when `folder`): only `dmx decompress ARCHIVE -`
/// writes to standard output, and nothing named `-` is created by accident (`./-` names it).
pub(crate) fn refuse_dash(output: &Path, folder: bool) -> Result<()> {
    if !is_dash(output) {
        return Ok(());
    }
    Err(Error::Destination(format!(
        "`-` (standard output) is accepted only by `dmx decompress ARCHIVE -`; use ./- for a \
         {} named -",
        if folder { "folder" } else { "file" }
    )))
}

/// What kind of non-regular file `meta` describes, for error messages.
pub(crate) fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        return "a symbolic link";
    }
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Fails unless the file `output` may be written: it must not exist unless `force` is set,
/// and even with `force` only a regular file is ever replaced. Folders, symbolic links
/// (dmx never writes through or replaces a link: name its target instead), devices, FIFOs
/// and sockets are refused, and so is `-` (see [`is_dash`]).
pub fn check_writable(output: &Path, force: bool) -> Result<()> {
    refuse_dash(output, false)?;
    let Ok(meta) = output.symlink_metadata() else {
        return Ok(());
    };
    if meta.file_type().is_file() {
        if force {
            return Ok(());
        }
        return Err(Error::Exists(output.to_path_buf()));
    }
    Err(Error::Destination(format!(
        "{} exists and is {}; dmx only ever replaces regular files, even when asked \
         to overwrite (choose another output{})",
        output.display(),
        kind_of(&meta),
        if meta.file_type().is_symlink() {
            ", or name the link's target"
        } else {
            ""
        }
    )))
}

/// Fails unless the folder `output` may be written by a folder restore: it must not exist
/// unless `force` is set; with `force` it must be a real folder (not a symbolic link), into
/// which a folder restore merges the restored files.
pub fn check_writable_dir(output: &Path, force: bool) -> Result<()> {
    refuse_dash(output, true)?;
    let Ok(meta) = output.symlink_metadata() else {
        return Ok(());
    };
    if !meta.file_type().is_dir() {
        return Err(Error::Destination(format!(
            "{} exists and is {}; a folder archive restores only into a new or existing \
             folder (choose another output)",
            output.display(),
            kind_of(&meta)
        )));
    }
    if !force {
        return Err(Error::Exists(output.to_path_buf()));
    }
    Ok(())
}

/// `path` made absolute with every existing part resolved (symbolic links, `.` and `..`), and
/// the rest (which does not exist yet) normalised lexically.
pub(crate) fn resolve(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let mut out = PathBuf::new();
    let mut resolved = true;
    for c in abs.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => out.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => {
                out.push(n);
                if resolved {
                    match out.canonicalize() {
                        Ok(c) => out = c,
                        Err(_) => resolved = false,
                    }
                }
            }
        }
    }
    Some(out)
}

#[cfg(unix)]
fn same_node(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_node(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    false
}

/// Refuses a destination that is the input `archive`, holds it (at any depth), or lies inside
/// it, however either is spelled (`.`, `..`, `dst/x/..`, symbolic links, bind mounts and hard
/// links are compared by resolved path and by device and inode).
pub fn check_destination(archive: &Path, output: &Path) -> Result<()> {
    let refuse = || {
        Err(Error::Destination(format!(
            "{} is, holds or lies inside the input {}; restoring there could destroy the \
             archive itself: choose another destination",
            output.display(),
            archive.display()
        )))
    };
    let (Ok(a), Some(o)) = (archive.canonicalize(), resolve(output)) else {
        return Ok(());
    };
    if a.starts_with(&o) || o.starts_with(&a) {
        return refuse();
    }
    if let Ok(dest) = std::fs::metadata(output) {
        for ancestor in a.ancestors() {
            if let Ok(m) = std::fs::metadata(ancestor)
                && same_node(&m, &dest)
            {
                return refuse();
            }
        }
    }
    Ok(())
}

/// Whether `a` and `b` name the same existing file (device and inode, or resolved path).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) if cfg!(unix) => same_node(&x, &y),
        (Ok(_), Ok(_)) => matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(check_writable(&file, false).is_err());
        assert!(check_writable(&file, true).is_ok());
        assert!(check_writable(dir.path(), true).is_err());
        assert!(check_writable(Path::new("-"), true).is_err());
        assert!(check_writable(&dir.path().join("new"), false).is_ok());
        assert!(check_writable_dir(dir.path(), true).is_ok());
        assert!(check_writable_dir(dir.path(), false).is_err());
        assert!(check_writable_dir(&file, true).is_err());
        #[cfg(unix)]
        {
            let link = dir.path().join("l");
            std::os::unix::fs::symlink(&file, &link).unwrap();
            assert!(check_writable(&link, true).is_err());
            assert!(check_writable_dir(&link, true).is_err());
            assert!(check_writable(Path::new("/dev/null"), true).is_err());
        }
    }

    #[test]
    fn destinations_holding_the_archive_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/x")).unwrap();
        let archive = d.join("a/m.dmx");
        std::fs::write(&archive, b"x").unwrap();
        for bad in [
            "a",
            "a/",
            "a/x/..",
            "a/y/..",
            "a/./x/../.",
            "a/m.dmx",
            "a/m.dmx/z",
        ] {
            assert!(check_destination(&archive, &d.join(bad)).is_err(), "{bad}");
        }
        assert!(check_destination(&archive, d).is_err());
        for good in ["a/x", "b", "a/y", "a/m.dmx2"] {
            assert!(check_destination(&archive, &d.join(good)).is_ok(), "{good}");
        }
    }
}
