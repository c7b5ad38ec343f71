//! The storage seam: the few operations the engine needs from a disk.
//!
//! The engine is generic over [`Disk`]; production uses [`crate::io::DmaDisk`]
//! (glommio, O_DIRECT, io_uring), tests plug in a simulated disk that loses
//! unsynced writes and injects faults. Keep this interface narrow: every method
//! added here must be implemented, and faulted, by every implementation.
//!
//! Contract for implementations:
//! - `write_at` writes the whole buffer or returns an error (a short write is an
//!   error, never a partial success);
//! - offsets and lengths of reads and writes are multiples of `alignment()`;
//! - nothing written is durable until a later `fdatasync` on the same file returns
//!   Ok; a file's existence and name are durable only after `sync_dir` of its
//!   directory;
//! - an error is reported once; retrying is the caller's decision (and the WAL's
//!   decision is: never);
//! - files it creates get mode [`PRIVATE_FILE_MODE`] (0600) and directories
//!   [`PRIVATE_DIR_MODE`] (0700), before the umask: they hold every key and
//!   value in the clear, so other local users must not read them
//!   (docs/security.md). Use [`create_private_dir`] and
//!   [`create_private_dir_all`] for directories made outside the seam.
//!
//! Futures are deliberately not `Send`: each disk belongs to one shard's thread.

#![allow(async_fn_in_trait)]

use std::ops::Deref;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use super::error::IoError;

pub type IoResult<T> = Result<T, IoError>;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create; fail if it exists.
    CreateNew,
    /// Open an existing file for reading and writing.
    ReadWrite,
    /// Open an existing file for reading only.
    ReadOnly,
}

/// Mode of every file the engine creates (data, WAL, metadata, lock,
/// backups): the owner only. The umask can only narrow it.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of every directory the engine creates (the data directory, its shard
/// directories, backups): the owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// `mkdir DIR` with [`PRIVATE_DIR_MODE`]; fails if it exists.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

/// `mkdir -p DIR`: every directory it creates gets [`PRIVATE_DIR_MODE`];
/// existing ones keep theirs.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

/// An aligned, writable buffer owned by the caller until handed to `write_at`.
pub trait IoBuf: AsRef<[u8]> + AsMut<[u8]> {}

pub trait Disk: Clone + 'static {
    type File: DiskFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> IoResult<Self::File>;
    async fn remove(&self, path: &Path) -> IoResult<()>;
    async fn rename(&self, from: &Path, to: &Path) -> IoResult<()>;
    async fn sync_dir(&self, dir: &Path) -> IoResult<()>;
    async fn create_dir_all(&self, dir: &Path) -> IoResult<()>;
    /// File names (not paths) in `dir`, in no particular order.
    async fn list_dir(&self, dir: &Path) -> IoResult<Vec<String>>;
    /// A second name `dst` for the file `src` (same contents, durable like any
    /// new name: after `sync_dir` of `dst`'s directory). Backups link tables.
    async fn hard_link(&self, src: &Path, dst: &Path) -> IoResult<()>;

    /// Whole-file copies (backups) through this disk would occupy the shard
    /// that owns it: run them on a helper thread through
    /// [`crate::io::std_disk::StdDisk`] instead. True for the O_DIRECT disk;
    /// the simulated disk runs them in place, interleaved with everything else.
    const BULK_COPIES_ON_HELPER_THREAD: bool = false;
}

pub trait DiskFile: 'static {
    type Buf: IoBuf;
    type ReadBuf: Deref<Target = [u8]>;

    fn path(&self) -> &Path;
    /// Required alignment of offsets, lengths and buffers.
    fn alignment(&self) -> usize;
    /// Alignment of offsets and lengths a read needs (the device's logical
    /// block, often 512 B): smaller than [`Self::alignment`], which writes use
    /// to avoid read-modify-write below a 4 KiB physical sector. A 4 KiB value's
    /// block (4.1 KB) is then one 4.5 KiB read instead of an 8 KiB one, which
    /// this machine's disk serves 18 % more often per second.
    fn read_alignment(&self) -> usize {
        self.alignment()
    }
    /// A zeroed buffer of `len` bytes (`len` a multiple of `alignment()`).
    fn alloc_buf(&self, len: usize) -> Self::Buf;
    async fn write_at(&self, buf: Self::Buf, offset: u64) -> IoResult<()>;
    /// Read `len` bytes at `offset`; shorter only at end of file.
    async fn read_at(&self, offset: u64, len: usize) -> IoResult<Self::ReadBuf>;
    async fn fdatasync(&self) -> IoResult<()>;
    /// Write `buf` at `offset` and make it durable: Ok means what
    /// [`Self::write_at`] then [`Self::fdatasync`] would mean, and that is
    /// what this does unless the disk can do both as one operation (the
    /// O_DIRECT disk: one `RWF_DSYNC` write, one wake-up instead of two). A
    /// failure says nothing about which bytes reached the disk.
    async fn write_at_durable(&self, buf: Self::Buf, offset: u64) -> IoResult<()> {
        self.write_at(buf, offset).await?;
        self.fdatasync().await
    }
    /// Reserve blocks so the file is at least `len` bytes long.
    async fn allocate(&self, len: u64) -> IoResult<()>;
    async fn size(&self) -> IoResult<u64>;
    async fn truncate(&self, len: u64) -> IoResult<()>;
    async fn close(self) -> IoResult<()>;
}

/// Write `len` zero bytes at `offset` in chunks, e.g. to pre-fill a WAL segment so
/// that later fdatasyncs need not commit extent metadata.
pub async fn write_zeros<F: DiskFile>(
    file: &F,
    offset: u64,
    len: u64,
    chunk_bytes: usize,
) -> IoResult<()> {
    assert!(chunk_bytes % file.alignment() == 0);
    assert!(offset % file.alignment() as u64 == 0 && len % file.alignment() as u64 == 0);
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(chunk_bytes as u64) as usize;
        file.write_at(file.alloc_buf(n), offset + done).await?;
        done += n as u64;
    }
    Ok(())
}
