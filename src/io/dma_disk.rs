//! The production [`Disk`]: glommio DMA files (O_DIRECT) on the shard's own
//! io_uring ring.
//!
//! Directory listing and creation use blocking std calls: they are metadata
//! operations made at startup and at WAL segment rollover only, never per request.

use std::path::{Path, PathBuf};

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::disk::{Disk, DiskFile, IoBuf, IoResult, OpenMode};
use super::error::{IoError, IoOp};

#[derive(Clone, Copy, Debug, Default)]
pub struct DmaDisk;

impl DmaDisk {
    /// Must run on each shard thread before it opens any other DMA file.
    ///
    /// Why: glommio decides once per thread and device whether to use the
    /// IOPOLL ring by reading the first file opened. For an empty file that read
    /// succeeds without touching the device, glommio wrongly picks IOPOLL, and on
    /// devices without poll queues every later read fails with EOPNOTSUPP. Opening
    /// a non-empty file on the same device first makes the probe truthful.
    pub async fn prime_device_probe(&self, non_empty_file: &Path) -> IoResult<()> {
        let file = OpenOptions::new()
            .read(true)
            .dma_open(non_empty_file)
            .await
            .map_err(|e| IoError::new(IoOp::Open, non_empty_file, None, e.into()))?;
        file.close()
            .await
            .map_err(|e| IoError::new(IoOp::Close, non_empty_file, None, e.into()))
    }
}

pub struct DmaBuf(DmaBuffer);

impl AsRef<[u8]> for DmaBuf {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl AsMut<[u8]> for DmaBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self.0.as_bytes_mut()
    }
}

impl IoBuf for DmaBuf {}

pub struct DmaDiskFile {
    file: DmaFile,
    path: PathBuf,
}

impl Disk for DmaDisk {
    type File = DmaDiskFile;

    const BULK_COPIES_ON_HELPER_THREAD: bool = true;

    async fn open(&self, path: &Path, mode: OpenMode) -> IoResult<DmaDiskFile> {
        debug_assert!(
            path.is_absolute(),
            "DmaDisk needs absolute paths (see sync_dir): {}",
            path.display()
        );
        let mut opts = OpenOptions::new();
        match mode {
            OpenMode::CreateNew => opts
                .read(true)
                .write(true)
                .create_new(true)
                .mode(super::disk::PRIVATE_FILE_MODE),
            OpenMode::ReadWrite => opts.read(true).write(true),
            OpenMode::ReadOnly => opts.read(true),
        };
        let file = opts
            .dma_open(path)
            .await
            .map_err(|e| IoError::new(IoOp::Open, path, None, e.into()))?;
        Ok(DmaDiskFile {
            file,
            path: path.to_path_buf(),
        })
    }

    async fn remove(&self, path: &Path) -> IoResult<()> {
        glommio::io::remove(path)
            .await
            .map_err(|e| IoError::new(IoOp::Remove, path, None, e.into()))
    }

    async fn rename(&self, from: &Path, to: &Path) -> IoResult<()> {
        glommio::io::rename(from, to)
            .await
            .map_err(|e| IoError::new(IoOp::Rename, from, None, e.into()))
    }

    async fn sync_dir(&self, dir: &Path) -> IoResult<()> {
        // glommio 0.9 opens directories with openat(-1, path): a relative path
        // has no directory to resolve against and fails with EBADF (issue 16,
        // finding 2). Settings are made absolute at startup; this says so.
        debug_assert!(
            dir.is_absolute(),
            "DmaDisk needs absolute paths: {}",
            dir.display()
        );
        let d = glommio::io::Directory::open(dir)
            .await
            .map_err(|e| IoError::new(IoOp::Open, dir, None, e.into()))?;
        let synced = d
            .sync()
            .await
            .map_err(|e| IoError::new(IoOp::SyncDir, dir, None, e.into()));
        let closed = d
            .close()
            .await
            .map_err(|e| IoError::new(IoOp::Close, dir, None, e.into()));
        synced.and(closed)
    }

    async fn create_dir_all(&self, dir: &Path) -> IoResult<()> {
        super::disk::create_private_dir_all(dir)
            .map_err(|e| IoError::new(IoOp::CreateDir, dir, None, e))
    }

    async fn list_dir(&self, dir: &Path) -> IoResult<Vec<String>> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| IoError::new(IoOp::ListDir, dir, None, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| IoError::new(IoOp::ListDir, dir, None, e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    async fn hard_link(&self, src: &Path, dst: &Path) -> IoResult<()> {
        // Blocking, like the directory calls above: a metadata operation,
        // made only by backups (whose bulk work runs off the executor).
        std::fs::hard_link(src, dst).map_err(|e| IoError::new(IoOp::Link, dst, None, e))
    }
}

impl DmaDiskFile {
    /// A write's outcome: its error named by `op`, or a short write.
    fn check_written(
        &self,
        written: glommio::Result<usize, ()>,
        op: IoOp,
        offset: u64,
        wanted: usize,
    ) -> IoResult<()> {
        let written = written.map_err(|e| IoError::new(op, &self.path, Some(offset), e.into()))?;
        if written != wanted {
            return Err(IoError::short_write(&self.path, offset, written, wanted));
        }
        Ok(())
    }
}

impl DiskFile for DmaDiskFile {
    type Buf = DmaBuf;
    type ReadBuf = ReadResult;

    fn path(&self) -> &Path {
        &self.path
    }

    fn alignment(&self) -> usize {
        // glommio reports the device's logical block; we never go below a sector.
        (self.file.alignment() as usize).max(crate::core::limits::SECTOR_BYTES)
    }

    fn read_alignment(&self) -> usize {
        // O_DIRECT reads need the logical block, never less than 512 B.
        (self.file.alignment() as usize).max(512)
    }

    fn alloc_buf(&self, len: usize) -> DmaBuf {
        let mut buf = self.file.alloc_dma_buffer(len);
        buf.as_bytes_mut().fill(0);
        DmaBuf(buf)
    }

    async fn write_at(&self, buf: DmaBuf, offset: u64) -> IoResult<()> {
        let wanted = buf.0.len();
        let written = self.file.write_at(buf.0, offset).await;
        self.check_written(written, IoOp::Write, offset, wanted)
    }

    async fn write_at_durable(&self, buf: DmaBuf, offset: u64) -> IoResult<()> {
        // Runtime patch 6 (docs/architecture.md): the write carries
        // RWF_DSYNC, so the WAL task waits for one completion per batch, not
        // for a write's and then an fdatasync's, each posted only when the
        // busy shard next enters the kernel and each queued behind the
        // connection tasks. No fallback: every kernel glommio runs on (5.8+)
        // takes the flag (pwritev2 since 4.7, io_uring since 5.1), on every
        // file system (the sync is the VFS's, as for O_DSYNC).
        let wanted = buf.0.len();
        let written = self.file.write_at_dsync(buf.0, offset).await;
        self.check_written(written, IoOp::DurableWrite, offset, wanted)
    }

    async fn read_at(&self, offset: u64, len: usize) -> IoResult<ReadResult> {
        self.file
            .read_at_aligned(offset, len)
            .await
            .map_err(|e| IoError::new(IoOp::Read, &self.path, Some(offset), e.into()))
    }

    async fn fdatasync(&self) -> IoResult<()> {
        self.file
            .fdatasync()
            .await
            .map_err(|e| IoError::new(IoOp::Sync, &self.path, None, e.into()))
    }

    async fn allocate(&self, len: u64) -> IoResult<()> {
        self.file
            .pre_allocate(len, false)
            .await
            .map_err(|e| IoError::new(IoOp::Allocate, &self.path, None, e.into()))
    }

    async fn size(&self) -> IoResult<u64> {
        self.file
            .file_size()
            .await
            .map_err(|e| IoError::new(IoOp::Stat, &self.path, None, e.into()))
    }

    async fn truncate(&self, len: u64) -> IoResult<()> {
        self.file
            .truncate(len)
            .await
            .map_err(|e| IoError::new(IoOp::Truncate, &self.path, Some(len), e.into()))
    }

    async fn close(self) -> IoResult<()> {
        self.file
            .close()
            .await
            .map_err(|e| IoError::new(IoOp::Close, &self.path, None, e.into()))
    }
}
