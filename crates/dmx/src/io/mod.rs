//! Input and output on the file system.

pub(crate) mod fs;
