//! The index rules of §5.5 that concern entries: safe paths (6), unique paths (11), one entry
//! in a single-file archive (12), packs and the files they tile (17, 18).

use super::{EntryKind, Index, MAX_PACK, Root};
use crate::FormatError;

impl Index {
    /// Rules 11 and 12 (§5.5): no two entries (packs aside) share a path, and a single-file
    /// archive holds exactly one entry.
    pub(super) fn check_entries(&self) -> Result<(), FormatError> {
        let mut paths: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| e.kind != EntryKind::Pack)
            .map(|e| e.path.as_str())
            .collect();
        paths.sort_unstable();
        if paths.windows(2).any(|w| w[0] == w[1]) {
            return Err(FormatError::Invalid("two entries share a path"));
        }
        if self.root == Root::File && self.entries.len() != 1 {
            return Err(FormatError::Invalid(
                "a single-file archive must hold one entry",
            ));
        }
        Ok(())
    }

    /// Rules 17 and 18 (format 1.2): packs belong to folders and are bounded; the packed
    /// files right after a pack tile it exactly, in order, which gives each its offset.
    pub(super) fn check_packs(&mut self) -> Result<(), FormatError> {
        let root = self.root;
        // (size of the current pack, bytes of it covered so far)
        let mut pack: Option<(u64, u64)> = None;
        for e in &mut self.entries {
            match e.kind {
                EntryKind::Packed => {
                    let (size, at) =
                        pack.ok_or(FormatError::Invalid("a packed file without a pack"))?;
                    let end = at
                        .checked_add(e.size)
                        .filter(|&end| end <= size)
                        .ok_or(FormatError::Invalid("packed files do not tile their pack"))?;
                    e.packed = Some(at);
                    pack = Some((size, end));
                    continue;
                }
                _ if pack.is_some_and(|(size, at)| at != size) => {
                    return Err(FormatError::Invalid("packed files do not tile their pack"));
                }
                EntryKind::Pack => {
                    if root != Root::Directory {
                        return Err(FormatError::Invalid("a pack in a single-file archive"));
                    }
                    if e.size > MAX_PACK {
                        return Err(FormatError::LimitExceeded {
                            what: "pack size",
                            value: e.size,
                            limit: MAX_PACK,
                        });
                    }
                    pack = Some((e.size, 0));
                }
                _ => pack = None,
            }
        }
        if pack.is_some_and(|(size, at)| at != size) {
            return Err(FormatError::Invalid("packed files do not tile their pack"));
        }
        Ok(())
    }
}

/// Checks a stored entry path (§5.5 rule 6): relative, `/`-separated, without NUL and
/// without empty, `.` or `..` components, so that restoring it can never write outside the
/// destination folder. Any other character, `:` and `\` included, is a valid part of a name
/// on Unix. On Windows, where `\` is a separator and `:` starts a drive or stream name, such
/// paths are refused too. The error says why.
pub fn check_entry_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("entry path is empty");
    }
    if path.contains('\0') {
        return Err("entry path contains NUL");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("entry path is not a safe relative path");
    }
    if cfg!(windows) && (path.contains('\\') || path.contains(':')) {
        return Err("entry path holds `\\` or `:`, which cannot be restored safely on Windows");
    }
    Ok(())
}
