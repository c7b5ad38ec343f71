//! A [`Disk`] on the blocking std file API (buffered, not O_DIRECT), for the
//! whole-file work of backups and restores.
//!
//! Why it exists: the backup logic in [`super::backup_files`] is written once,
//! generic over [`Disk`], so that the deterministic simulation runs it on
//! [`super::sim_disk::SimDisk`] interleaved with flushes, compactions and
//! transactions. In production that same logic runs here, on a helper thread
//! (`shard::backup` drives it with `futures_lite::future::block_on`: every
//! future of this disk is ready at once), because a backup target may be a
//! file system without O_DIRECT (NFS, tmpfs) and because copying gigabytes
//! must not occupy a shard's core.
//!
//! It must never be used on a shard executor: every call blocks the thread.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::disk::{Disk, DiskFile, IoBuf, IoResult, OpenMode};
use super::error::{IoError, IoOp};

/// Offsets and lengths the generic callers align to. The std API needs none;
/// a sector keeps the code paths identical to the O_DIRECT disks.
const ALIGN: usize = crate::core::limits::SECTOR_BYTES;

#[derive(Clone, Copy, Debug, Default)]
pub struct StdDisk;

pub struct StdFile {
    file: File,
    path: PathBuf,
}

pub struct StdBuf(Vec<u8>);

impl AsRef<[u8]> for StdBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for StdBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl IoBuf for StdBuf {}

fn err(op: IoOp, path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |e| IoError::new(op, path, None, e)
}

impl Disk for StdDisk {
    type File = StdFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> IoResult<StdFile> {
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
        let file = opts.open(path).map_err(err(IoOp::Open, path))?;
        Ok(StdFile {
            file,
            path: path.to_path_buf(),
        })
    }

    async fn remove(&self, path: &Path) -> IoResult<()> {
        std::fs::remove_file(path).map_err(err(IoOp::Remove, path))
    }

    async fn rename(&self, from: &Path, to: &Path) -> IoResult<()> {
        std::fs::rename(from, to).map_err(err(IoOp::Rename, from))
    }

    async fn sync_dir(&self, dir: &Path) -> IoResult<()> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err(IoOp::SyncDir, dir))
    }

    async fn create_dir_all(&self, dir: &Path) -> IoResult<()> {
        super::disk::create_private_dir_all(dir).map_err(err(IoOp::CreateDir, dir))
    }

    async fn list_dir(&self, dir: &Path) -> IoResult<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(err(IoOp::ListDir, dir))? {
            let entry = entry.map_err(err(IoOp::ListDir, dir))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    async fn hard_link(&self, src: &Path, dst: &Path) -> IoResult<()> {
        std::fs::hard_link(src, dst).map_err(err(IoOp::Link, dst))
    }
}

impl DiskFile for StdFile {
    type Buf = StdBuf;
    type ReadBuf = Vec<u8>;

    fn path(&self) -> &Path {
        &self.path
    }

    fn alignment(&self) -> usize {
        ALIGN
    }

    fn alloc_buf(&self, len: usize) -> StdBuf {
        StdBuf(vec![0; len])
    }

    async fn write_at(&self, buf: StdBuf, offset: u64) -> IoResult<()> {
        self.file
            .write_all_at(&buf.0, offset)
            .map_err(|e| IoError::new(IoOp::Write, &self.path, Some(offset), e))
    }

    async fn read_at(&self, offset: u64, len: usize) -> IoResult<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(IoError::new(IoOp::Read, &self.path, Some(offset), e)),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    async fn fdatasync(&self) -> IoResult<()> {
        self.file.sync_data().map_err(err(IoOp::Sync, &self.path))
    }

    async fn allocate(&self, len: u64) -> IoResult<()> {
        if self.size().await? < len {
            self.file
                .set_len(len)
                .map_err(err(IoOp::Allocate, &self.path))?;
        }
        Ok(())
    }

    async fn size(&self) -> IoResult<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(err(IoOp::Stat, &self.path))
    }

    async fn truncate(&self, len: u64) -> IoResult<()> {
        self.file
            .set_len(len)
            .map_err(err(IoOp::Truncate, &self.path))
    }

    async fn close(self) -> IoResult<()> {
        Ok(())
    }
}
