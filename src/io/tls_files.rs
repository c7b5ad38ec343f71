//! Reading the TLS files (certificates, keys, CA bundles) the operator names
//! in the settings.
//!
//! These are small configuration files, not storage: they are read whole,
//! once at start, with std I/O (not the Disk seam, whose job is the data
//! directory). It owns only getting the bytes; parsing is `net::tls`'s. It
//! must never log or return the bytes of a file in an error (a key file is a
//! secret): errors carry the OS error only.

use std::path::Path;

/// Larger than any sane certificate bundle; a path pointing at something
/// huge (a device, a log) is refused rather than read into memory.
pub const TLS_FILE_BYTES_MAX: u64 = 1 << 20;

/// The whole file, if it is at most [`TLS_FILE_BYTES_MAX`] bytes.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let len = std::fs::metadata(path)?.len();
    if len > TLS_FILE_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len} bytes: larger than {TLS_FILE_BYTES_MAX}, not a PEM file"),
        ));
    }
    std::fs::read(path)
}
