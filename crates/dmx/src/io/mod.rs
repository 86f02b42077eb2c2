//! Input and output on the file system: memory-mapped inputs ([`source`]), checks of
//! destinations ([`destination`]), crash-safe outputs ([`atomic`]), work buffers for decoded
//! windows ([`scratch`]) and small helpers ([`fs`]).

mod atomic;
mod destination;
pub(crate) mod fs;
mod scratch;
mod source;

pub(crate) use atomic::{
    AtomicDir, AtomicFile, TempDir, commit_guard, create_plain, end_reserved, reserve_blocks,
    temp_dir_in, temp_file_in,
};
pub use atomic::{
    TEMP_PREFIX, is_temp_name, remove_temps, sweep_stale, write_file, write_plain, write_through,
};
pub use destination::{
    check_destination, check_distinct, check_outside, check_writable, check_writable_dir, is_dash,
};
pub(crate) use destination::{kind_of, refuse_dash, resolve, same_file};
pub(crate) use scratch::Scratch;
pub(crate) use source::{Bytes, Stamp, spool_stdin};
pub use source::{check_input, is_archive_file};
