//! What an operator needs to know when the disk says no: free bytes of the
//! file system holding a path (statvfs), and the file system's type (statfs)
//! when it lacks a feature corekv asks for.
//!
//! These are blocking metadata syscalls. They run only on failure paths and
//! at startup, never per request, so an executor calling them stalls for a
//! few microseconds once, which is acceptable there and nowhere else.
//!
//! It must never: be called on the request path, or decide anything on its
//! own (callers latch failures; this only describes them).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The nearest existing ancestor of `path` (a file that could not be created
/// has no statvfs of its own; its directory does).
fn existing(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

/// Bytes available to this (unprivileged) user on the file system holding
/// `path`, or `None` if it cannot be told.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let c = CString::new(existing(path)?.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is a plain C struct of integers, for which all-zero
    // bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes only into the struct we own and pass by unique
    // reference; `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// The name of the file system type holding `path` (`ext4`, `xfs`, `tmpfs`,
/// `fuse`…), or its magic number in hex when it is not one we know.
pub fn fs_type(path: &Path) -> String {
    let Some(c) = existing(path).and_then(|p| CString::new(p.as_os_str().as_bytes()).ok()) else {
        return "unknown".into();
    };
    // SAFETY: statfs is a plain C struct of integers; all-zero bytes are valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as in `free_bytes`: statfs writes only into `st`, `c` outlives
    // the call.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return "unknown".into();
    }
    fs_type_name(st.f_type as i64)
}

/// Names of the file system magic numbers of linux/magic.h an operator is
/// likely to meet under a data directory.
pub fn fs_type_name(magic: i64) -> String {
    match magic {
        0xEF53 => "ext4".into(), // ext2/3/4 share the magic
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x6573_5546 => "fuse".into(),
        0x6969 => "nfs".into(),
        0x794c_7630 => "overlay".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0xFF53_4D42 => "cifs".into(),
        0x5346_544e => "ntfs".into(),
        0x4d44 => "vfat".into(),
        other => format!("type {other:#x}"),
    }
}

/// "<dir> has N bytes free" for an error message, naming what could be told.
pub fn describe_free(path: &Path) -> String {
    let dir = existing(path).unwrap_or(path);
    match free_bytes(path) {
        Some(n) => format!("{} has {n} bytes free", dir.display()),
        None => format!("free space of {} unknown", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_dir_has_free_space_and_a_known_type() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not/yet/created");
        assert!(free_bytes(&missing).is_some_and(|n| n > 0));
        assert!(!fs_type(dir.path()).is_empty());
        assert!(describe_free(&missing).starts_with(&dir.path().display().to_string()));
        assert_eq!(fs_type_name(0x0102_1994), "tmpfs");
        assert_eq!(fs_type_name(1), "type 0x1");
    }
}
