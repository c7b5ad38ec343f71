//! I/O errors with the context an operator needs: operation, path, offset.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IoOp {
    Open,
    Read,
    Write,
    /// A write that is also a data sync (`RWF_DSYNC`).
    DurableWrite,
    Sync,
    SyncDir,
    Allocate,
    Truncate,
    Remove,
    Rename,
    ListDir,
    CreateDir,
    Close,
    Stat,
    Link,
    Copy,
    Chown,
}

impl IoOp {
    pub fn name(self) -> &'static str {
        match self {
            IoOp::Open => "open",
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::DurableWrite => "durable write (RWF_DSYNC)",
            IoOp::Sync => "fdatasync",
            IoOp::SyncDir => "fsync of directory",
            IoOp::Allocate => "fallocate",
            IoOp::Truncate => "truncate",
            IoOp::Remove => "remove",
            IoOp::Rename => "rename",
            IoOp::ListDir => "list directory",
            IoOp::CreateDir => "create directory",
            IoOp::Close => "close",
            IoOp::Stat => "stat",
            IoOp::Link => "hard link",
            IoOp::Copy => "copy",
            IoOp::Chown => "chown",
        }
    }
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub struct IoError {
    pub op: IoOp,
    pub path: PathBuf,
    pub offset: Option<u64>,
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    pub fn new(op: IoOp, path: &Path, offset: Option<u64>, source: std::io::Error) -> IoError {
        IoError {
            op,
            path: path.to_path_buf(),
            offset,
            source,
        }
    }

    pub fn short_write(path: &Path, offset: u64, written: usize, wanted: usize) -> IoError {
        IoError::new(
            IoOp::Write,
            path,
            Some(offset),
            std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {written} of {wanted} bytes"),
            ),
        )
    }

    /// ENOSPC or EDQUOT: the disk (or quota) is full. glommio's errors reach
    /// us re-wrapped (the OS code is in the message, not `raw_os_error`), but
    /// they keep the error kind, so both are checked.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT)
        ) || matches!(
            self.source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
    }

    /// EOPNOTSUPP/ENOSYS: the file system lacks the operation (fallocate on
    /// FUSE, say); nothing is wrong with the disk.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
        ) || self.source.kind() == std::io::ErrorKind::Unsupported
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.op, self.path.display())?;
        if let Some(offset) = self.offset {
            write!(f, " at offset {offset}")?;
        }
        write!(f, " failed: {}", self.source)
    }
}
