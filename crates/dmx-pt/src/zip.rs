//! A bounded reader for the zip container `torch.save` writes: end-of-central-directory and
//! zip64 records, the central directory and every local header, giving each entry's exact
//! byte ranges. Only STORED entries are accepted, so there is nothing to inflate and no bomb
//! to defuse; every size and offset is checked against the file before it is used.

use std::collections::HashSet;
use std::ops::Range;

use crate::{Limits, PtError};

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;

/// The CRC-32 of `data`, as zip records it.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// One zip entry and where its parts lie in the file. The ranges of all entries, plus
/// [`ZipLayout::directory`], tile the file without overlap (gaps are allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipEntry {
    /// The entry's name as stored (UTF-8).
    pub name: String,
    /// Local file header, name and extra field (torch's alignment padding lives there).
    pub header: Range<u64>,
    /// The stored bytes.
    pub data: Range<u64>,
    /// The data descriptor after the data (empty when the entry has none).
    pub descriptor: Range<u64>,
    /// CRC-32 recorded in the central directory (not verified by [`read_zip`]; the scan
    /// verifies it for the pickle).
    pub crc32: u32,
}

/// The structure of a zip file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipLayout {
    /// Entries in central-directory order.
    pub entries: Vec<ZipEntry>,
    /// From the central directory's start to the end of the file (central directory, zip64
    /// records, end record and comment).
    pub directory: Range<u64>,
}

fn err(msg: impl Into<String>) -> PtError {
    PtError::Zip(msg.into())
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, PtError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| err(format!("truncated at byte {at}")))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, PtError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| err(format!("truncated at byte {at}")))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, PtError> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
        .ok_or_else(|| err(format!("truncated at byte {at}")))
}

fn to_usize(v: u64, what: &str) -> Result<usize, PtError> {
    usize::try_from(v).map_err(|_| err(format!("{what} {v} out of range")))
}

/// Where the central directory is and how many entries it claims.
struct Directory {
    offset: u64,
    size: u64,
    count: u64,
    /// Where the end records begin (the central directory must end at or before).
    end_records: u64,
}

/// Finds the end-of-central-directory record (and the zip64 one when present).
fn find_directory(file: &[u8]) -> Result<Directory, PtError> {
    if file.len() < 22 {
        return Err(err("too short for an end-of-central-directory record"));
    }
    let lowest = file.len().saturating_sub(22 + 0xFFFF);
    let mut at = file.len() - 22;
    let eocd = loop {
        if u32_at(file, at)? == EOCD_SIG
            && at + 22 + usize::from(u16_at(file, at + 20)?) == file.len()
        {
            break at;
        }
        if at == lowest {
            return Err(err("no end-of-central-directory record"));
        }
        at -= 1;
    };
    let disk = u16_at(file, eocd + 4)?;
    let cd_disk = u16_at(file, eocd + 6)?;
    let on_disk = u16_at(file, eocd + 8)?;
    let count = u16_at(file, eocd + 10)?;
    let size = u32_at(file, eocd + 12)?;
    let offset = u32_at(file, eocd + 16)?;
    if eocd >= 20 && u32_at(file, eocd - 20)? == ZIP64_LOCATOR_SIG {
        let loc = eocd - 20;
        if u32_at(file, loc + 4)? != 0 || u32_at(file, loc + 16)? > 1 {
            return Err(err("multi-disk zip64 archives are not supported"));
        }
        let z = u64_at(file, loc + 8)?;
        let zpos = to_usize(z, "zip64 end record offset")?;
        if zpos.checked_add(56).is_none_or(|e| e > loc) || u32_at(file, zpos)? != ZIP64_EOCD_SIG {
            return Err(err("bad zip64 end-of-central-directory record"));
        }
        let rec_size = u64_at(file, zpos + 4)?;
        if rec_size.checked_add(12) != Some((loc - zpos) as u64) {
            return Err(err("zip64 end record size does not reach its locator"));
        }
        if u32_at(file, zpos + 16)? != 0 || u32_at(file, zpos + 20)? != 0 {
            return Err(err("multi-disk zip64 archives are not supported"));
        }
        let on_disk64 = u64_at(file, zpos + 24)?;
        let count64 = u64_at(file, zpos + 32)?;
        if on_disk64 != count64 {
            return Err(err("zip64 entry counts disagree"));
        }
        return Ok(Directory {
            offset: u64_at(file, zpos + 48)?,
            size: u64_at(file, zpos + 40)?,
            count: count64,
            end_records: z,
        });
    }
    if disk != 0 || cd_disk != 0 || on_disk != count {
        return Err(err("multi-disk zip archives are not supported"));
    }
    Ok(Directory {
        offset: offset.into(),
        size: size.into(),
        count: count.into(),
        end_records: eocd as u64,
    })
}

/// One central-directory record, with zip64 values applied.
struct Central {
    name: String,
    flags: u16,
    method: u16,
    crc32: u32,
    csize: u64,
    usize_: u64,
    local: u64,
}

/// Parses the central-directory record at `at`; returns it and the next record's offset.
fn read_central(file: &[u8], at: usize, end: usize) -> Result<(Central, usize), PtError> {
    if at + 46 > end || u32_at(file, at)? != CENTRAL_SIG {
        return Err(err(format!("bad central directory record at byte {at}")));
    }
    let flags = u16_at(file, at + 8)?;
    let method = u16_at(file, at + 10)?;
    let crc32 = u32_at(file, at + 16)?;
    let mut csize = u64::from(u32_at(file, at + 20)?);
    let mut usize_ = u64::from(u32_at(file, at + 24)?);
    let name_len = usize::from(u16_at(file, at + 28)?);
    let extra_len = usize::from(u16_at(file, at + 30)?);
    let comment_len = usize::from(u16_at(file, at + 32)?);
    let disk = u16_at(file, at + 34)?;
    let mut local = u64::from(u32_at(file, at + 42)?);
    let next = at + 46 + name_len + extra_len + comment_len;
    if next > end {
        return Err(err(format!(
            "central directory record at byte {at} runs past the directory"
        )));
    }
    let name = std::str::from_utf8(&file[at + 46..at + 46 + name_len])
        .map_err(|_| err(format!("entry name at byte {at} is not UTF-8")))?
        .to_owned();
    let extra = &file[at + 46 + name_len..at + 46 + name_len + extra_len];
    let mut e = 0;
    while e + 4 <= extra.len() {
        let id = u16_at(extra, e)?;
        let len = usize::from(u16_at(extra, e + 2)?);
        let body = extra
            .get(e + 4..e + 4 + len)
            .ok_or_else(|| err(format!("extra field of {name:?} overruns")))?;
        if id == 1 {
            let mut p = 0;
            for field in [&mut usize_, &mut csize, &mut local] {
                if *field == 0xFFFF_FFFF {
                    *field = u64_at(body, p)?;
                    p += 8;
                }
            }
        }
        e += 4 + len;
    }
    if disk != 0 && disk != 0xFFFF {
        return Err(err(format!("entry {name:?} lies on another disk")));
    }
    Ok((
        Central {
            name,
            flags,
            method,
            crc32,
            csize,
            usize_,
            local,
        },
        next,
    ))
}

/// Reads the local header of `c` and returns the entry's ranges.
fn read_local(file: &[u8], c: Central, limit: u64) -> Result<ZipEntry, PtError> {
    let at = to_usize(c.local, "local header offset")?;
    let name = c.name;
    if c.local.checked_add(30).is_none_or(|e| e > limit) || u32_at(file, at)? != LOCAL_SIG {
        return Err(err(format!("entry {name:?}: no local header at byte {at}")));
    }
    let flags = u16_at(file, at + 6)?;
    let method = u16_at(file, at + 8)?;
    if method != c.method || (flags & 1) != (c.flags & 1) {
        return Err(err(format!(
            "entry {name:?}: local header disagrees with the directory"
        )));
    }
    let name_len = usize::from(u16_at(file, at + 26)?);
    let extra_len = usize::from(u16_at(file, at + 28)?);
    let start = (at + 30 + name_len + extra_len) as u64;
    if start > limit || file.get(at + 30..at + 30 + name_len) != Some(name.as_bytes()) {
        return Err(err(format!(
            "entry {name:?}: local header name differs or overruns"
        )));
    }
    let end = start
        .checked_add(c.csize)
        .filter(|&e| e <= limit)
        .ok_or_else(|| {
            err(format!(
                "entry {name:?}: {} bytes run past the entries",
                c.csize
            ))
        })?;
    let lsize = u64::from(u32_at(file, at + 18)?);
    let lusize = u64::from(u32_at(file, at + 22)?);
    if flags & 8 == 0 && lsize != 0xFFFF_FFFF && (lsize != c.csize || lusize != c.usize_) {
        return Err(err(format!(
            "entry {name:?}: local sizes disagree with the directory"
        )));
    }
    let descriptor = if flags & 8 != 0 {
        descriptor(file, end, limit, &c.crc32, c.csize, c.usize_)
            .ok_or_else(|| err(format!("entry {name:?}: missing or lying data descriptor")))?
    } else {
        end..end
    };
    Ok(ZipEntry {
        name,
        header: c.local..start,
        data: start..end,
        descriptor,
        crc32: c.crc32,
    })
}

/// The data descriptor at `at`, in whichever of its four forms matches the directory.
fn descriptor(
    file: &[u8],
    at: u64,
    limit: u64,
    crc: &u32,
    csize: u64,
    usize_: u64,
) -> Option<Range<u64>> {
    let p = usize::try_from(at).ok()?;
    let sig = u32_at(file, p).ok() == Some(DESCRIPTOR_SIG);
    let base = if sig { p + 4 } else { p };
    if u32_at(file, base).ok()? != *crc {
        return None;
    }
    let small = (
        u64::from(u32_at(file, base + 4).ok()?),
        u64::from(u32_at(file, base + 8).ok()?),
    );
    let len = if small == (csize, usize_) {
        base + 12 - p
    } else if (u64_at(file, base + 4).ok()?, u64_at(file, base + 12).ok()?) == (csize, usize_) {
        base + 20 - p
    } else {
        return None;
    };
    let end = at + len as u64;
    (end <= limit).then_some(at..end)
}

/// Reads the zip structure of `file`. Refuses compressed or encrypted entries, entries whose
/// parts overlap or leave the file, duplicate names and more than `limits.max_entries`
/// entries; allocates at most in proportion to the central directory's real size.
pub fn read_zip(file: &[u8], limits: &Limits) -> Result<ZipLayout, PtError> {
    let dir = find_directory(file)?;
    let cd_end = dir
        .offset
        .checked_add(dir.size)
        .filter(|&e| e <= dir.end_records)
        .ok_or_else(|| err("central directory runs past the end records"))?;
    if dir.count > limits.max_entries as u64 {
        return Err(PtError::Limit(format!(
            "{} zip entries (limit {})",
            dir.count, limits.max_entries
        )));
    }
    if dir.count.saturating_mul(46) > dir.size {
        return Err(err(format!(
            "{} entries cannot fit in a {}-byte directory",
            dir.count, dir.size
        )));
    }
    let mut entries = Vec::with_capacity(dir.count as usize);
    let mut names = HashSet::new();
    let mut at = to_usize(dir.offset, "central directory offset")?;
    let end = to_usize(cd_end, "central directory end")?;
    for _ in 0..dir.count {
        let (c, next) = read_central(file, at, end)?;
        at = next;
        if c.flags & 1 != 0 {
            return Err(err(format!("entry {:?} is encrypted", c.name)));
        }
        if c.method != 0 {
            return Err(PtError::Compressed {
                name: c.name,
                method: c.method,
            });
        }
        if c.csize != c.usize_ {
            return Err(err(format!(
                "STORED entry {:?} has two different sizes",
                c.name
            )));
        }
        if !names.insert(c.name.clone()) {
            return Err(err(format!("duplicate entry name {:?}", c.name)));
        }
        entries.push(read_local(file, c, dir.offset)?);
    }
    if at != end {
        return Err(err("central directory size disagrees with its records"));
    }
    let mut order: Vec<&ZipEntry> = entries.iter().collect();
    order.sort_by_key(|e| e.header.start);
    for pair in order.windows(2) {
        if pair[0].descriptor.end > pair[1].header.start {
            return Err(err(format!(
                "entries {:?} and {:?} overlap",
                pair[0].name, pair[1].name
            )));
        }
    }
    Ok(ZipLayout {
        entries,
        directory: dir.offset..file.len() as u64,
    })
}

#[cfg(test)]
mod crc_tests {
    /// The standard check value of CRC-32/ISO-HDLC (the zip CRC) and the empty input.
    #[test]
    fn crc32_matches_the_zip_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(super::crc32(b""), 0);
    }
}
