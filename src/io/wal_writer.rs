//! Appends group-commit batches to one shard's WAL segments, durably.
//!
//! One batch = one aligned durable write (`DiskFile::write_at_durable`: a write
//! and an fdatasync, one `RWF_DSYNC` write on the O_DIRECT disk); the next batch
//! starts only after it returned, which is what lets the reader tell a torn tail
//! from corruption. Segments are pre-filled with zeros while idle ("spare" segments) so
//! that an fdatasync covers data only, not extent metadata.
//!
//! Failure model (fsyncgate): the first failed write or fdatasync *latches* the
//! writer. Every later call returns [`WalError::Latched`]; nothing is retried. The
//! bytes of a failed batch may or may not be on disk, and the page cache may have
//! dropped its dirty state, so only a restart and replay can say what survived.
//!
//! Segment life cycle, in the order each step is made durable:
//! 1. `spare.tmp` is created, allocated, zero-filled in bounded steps, fdatasynced;
//! 2. on rollover it is renamed to `<seq:016x>.wal` and the directory fsynced;
//! 3. its first write carries the segment header block and the first batch.
//!
//! A crash between 2 and 3 leaves a last segment with no header: the reader treats
//! it as unused and resumes there.

use std::path::{Path, PathBuf};

use zerocopy::IntoBytes;

use crate::core::limits::{align_up_u64, SECTOR_BYTES};
use crate::core::wal_format::{
    BatchHeader, SegmentHeader, BATCH_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};

use super::disk::{Disk, DiskFile, OpenMode};
use super::error::IoError;

pub const SPARE_FILE: &str = "spare.tmp";
const ZERO_CHUNK_BYTES: usize = 1024 * 1024;

pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O failed: {0}")]
    Io(#[from] IoError),
    #[error("WAL is latched read-only after an earlier failure ({first}); restart to recover")]
    Latched { first: String },
    #[error("WAL corrupt in {path} at offset {offset}: {detail}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
}

impl WalError {
    /// ENOSPC or EDQUOT underneath: the disk is full, not broken.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, WalError::Io(e) if e.is_disk_full())
    }

    /// The error with, when the disk is full, the free bytes where it failed.
    pub fn describe(&self) -> String {
        match self {
            WalError::Io(e) if e.is_disk_full() => {
                format!("{e}; {}", crate::io::disk_space::describe_free(&e.path))
            }
            other => other.to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct WalConfig {
    pub dir: PathBuf,
    pub shard_id: u16,
    pub shard_count: u16,
    pub segment_bytes: u64,
    /// Zero-fill new segments before use (see the module doc).
    pub prefill: bool,
}

/// Where appending continues, as found by the reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    pub seq: u64,
    /// Byte offset of the next batch; 0 means the segment header is not written yet.
    pub offset: u64,
}

struct Active<F> {
    file: F,
    seq: u64,
    /// Next batch goes here; 0 = header not written yet.
    offset: u64,
}

struct Spare<F> {
    file: F,
    zeroed_bytes: u64,
    synced: bool,
}

/// What one `append_batch` did, for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchWritten {
    pub bytes: u64,
    pub rolled_over: bool,
}

pub struct WalWriter<D: Disk> {
    disk: D,
    cfg: WalConfig,
    active: Active<D::File>,
    /// `(sequence, first LSN)` of every segment holding records, oldest first.
    segments: std::collections::VecDeque<(u64, u64)>,
    spare: Option<Spare<D::File>>,
    latched: Option<String>,
    /// When preparing a spare last failed for want of space: the next try
    /// waits a while (nothing depends on it until the active segment fills).
    spare_failed_at: Option<std::time::Instant>,
    /// The LSN the next batch must start with, once one was written: LSNs
    /// grow by one per record, forever (a gap or a repeat would make
    /// recovery replay the wrong records).
    next_lsn: Option<u64>,
}

impl<D: Disk> WalWriter<D> {
    /// Open for appending at `resume`, or start the first segment when there is none.
    /// `segment_starts` is the reader's `(sequence, first LSN)` list.
    pub async fn open(
        disk: D,
        cfg: WalConfig,
        resume: Option<ResumePoint>,
        segment_starts: &[(u64, u64)],
    ) -> Result<Self, WalError> {
        assert!(cfg.segment_bytes % SECTOR_BYTES as u64 == 0);
        disk.create_dir_all(&cfg.dir).await?;
        let active = match resume {
            Some(ResumePoint { seq, offset }) => {
                assert!(offset % SECTOR_BYTES as u64 == 0 && offset <= cfg.segment_bytes);
                let file = disk
                    .open(&cfg.dir.join(segment_file_name(seq)), OpenMode::ReadWrite)
                    .await?;
                Active { file, seq, offset }
            }
            None => {
                let spare = prepare_spare(&disk, &cfg).await?;
                let file = promote_spare(&disk, &cfg, spare, 1).await?;
                Active {
                    file,
                    seq: 1,
                    offset: 0,
                }
            }
        };
        Ok(WalWriter {
            disk,
            cfg,
            active,
            segments: segment_starts.iter().copied().collect(),
            spare: None,
            latched: None,
            spare_failed_at: None,
            next_lsn: None,
        })
    }

    pub fn is_latched(&self) -> bool {
        self.latched.is_some()
    }

    pub fn position(&self) -> ResumePoint {
        ResumePoint {
            seq: self.active.seq,
            offset: self.active.offset,
        }
    }

    /// Write `payload` (encoded records `first_lsn..first_lsn+count`) as one
    /// durable batch. Ok means durable.
    pub async fn append_batch(
        &mut self,
        payload: &[u8],
        first_lsn: u64,
        count: u32,
    ) -> Result<BatchWritten, WalError> {
        if let Some(first) = &self.latched {
            return Err(WalError::Latched {
                first: first.clone(),
            });
        }
        assert!(count > 0, "empty batch");
        if let Some(next) = self.next_lsn {
            assert_eq!(
                first_lsn, next,
                "a WAL batch must continue the LSN sequence (no gap, no repeat)"
            );
        }
        let result = self.append_inner(payload, first_lsn, count).await;
        match &result {
            Ok(_) => self.next_lsn = Some(first_lsn + u64::from(count)),
            Err(e) => self.latched = Some(e.to_string()),
        }
        result
    }

    async fn append_inner(
        &mut self,
        payload: &[u8],
        first_lsn: u64,
        count: u32,
    ) -> Result<BatchWritten, WalError> {
        let extent = align_up_u64((BATCH_HEADER_BYTES + payload.len()) as u64);
        let mut rolled_over = false;
        let start = self.active.offset.max(SECTOR_BYTES as u64);
        if start + extent > self.cfg.segment_bytes {
            self.roll_over().await?;
            rolled_over = true;
        }
        let with_header = self.active.offset == 0;
        let offset = if with_header { 0 } else { self.active.offset };
        let header_bytes = if with_header { SECTOR_BYTES } else { 0 };
        assert!(
            offset + header_bytes as u64 + extent <= self.cfg.segment_bytes,
            "batch of {extent} bytes cannot fit an empty segment of {}",
            self.cfg.segment_bytes
        );

        let mut buf = self.active.file.alloc_buf(header_bytes + extent as usize);
        {
            let bytes = buf.as_mut();
            if with_header {
                let sh = SegmentHeader::new(
                    u32::from(self.cfg.shard_id),
                    u32::from(self.cfg.shard_count),
                    self.active.seq,
                    first_lsn,
                    unix_ms(),
                );
                bytes[..SEGMENT_HEADER_BYTES].copy_from_slice(sh.as_bytes());
            }
            let bh = BatchHeader::new(self.active.seq, first_lsn, count, payload.len() as u32);
            let b = &mut bytes[header_bytes..];
            b[..BATCH_HEADER_BYTES].copy_from_slice(bh.as_bytes());
            b[BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + payload.len()].copy_from_slice(payload);
            // The rest is padding, zeroed by alloc_buf.
        }
        let total = (header_bytes as u64) + extent;
        if with_header {
            self.segments.push_back((self.active.seq, first_lsn));
        }
        self.active.file.write_at_durable(buf, offset).await?;
        self.active.offset = offset + total;
        Ok(BatchWritten {
            bytes: total,
            rolled_over,
        })
    }

    async fn roll_over(&mut self) -> Result<(), WalError> {
        let spare = match self.spare.take() {
            Some(mut s) => {
                if let Err(e) = fill_spare(&mut s, &self.cfg).await {
                    discard_spare(&self.disk, &self.cfg, s).await;
                    return Err(e);
                }
                s
            }
            None => prepare_spare(&self.disk, &self.cfg).await?,
        };
        let next_seq = self.active.seq + 1;
        let file = promote_spare(&self.disk, &self.cfg, spare, next_seq).await?;
        let old = std::mem::replace(
            &mut self.active,
            Active {
                file,
                seq: next_seq,
                offset: 0,
            },
        );
        old.file.close().await?;
        Ok(())
    }

    /// Delete segments every record of which is at or below `cutoff_lsn` (they
    /// are in durable tables). The active segment is never deleted, and nor is
    /// the last one with records, so the log always says where LSNs continue.
    /// A failed removal is reported and the segment kept: no data depends on it.
    pub async fn remove_segments_through(&mut self, cutoff_lsn: u64) -> Result<usize, WalError> {
        let mut removed = 0;
        while self.segments.len() >= 2 {
            let (seq, _) = self.segments[0];
            let (_, next_first) = self.segments[1];
            if seq == self.active.seq || next_first.saturating_sub(1) > cutoff_lsn {
                break;
            }
            self.disk
                .remove(&self.cfg.dir.join(segment_file_name(seq)))
                .await?;
            self.segments.pop_front();
            removed += 1;
        }
        if removed > 0 {
            self.disk.sync_dir(&self.cfg.dir).await?;
        }
        Ok(removed)
    }

    /// Segments on disk holding records.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// One bounded step of background work (preparing the next segment once the
    /// active one is half full). Returns true while more work remains. Call it when
    /// the shard is idle; it never delays a batch by more than one chunk write.
    pub async fn background_step(&mut self) -> Result<bool, WalError> {
        if self.latched.is_some() {
            return Ok(false);
        }
        if self
            .spare_failed_at
            .is_some_and(|t| t.elapsed() < SPARE_RETRY_AFTER)
        {
            return Ok(false);
        }
        let result = self.background_inner().await;
        match &result {
            // Preparing a spare wrote nothing the log depends on: give the
            // space back and try again later (a flush may free segments). Only
            // a rollover that finds no space fails the WAL.
            Err(WalError::Io(e)) if e.is_disk_full() => {
                if let Some(spare) = self.spare.take() {
                    discard_spare(&self.disk, &self.cfg, spare).await;
                }
                if self.spare_failed_at.is_none() {
                    tracing::warn!(
                        error = "DISK_FULL",
                        dir = %self.cfg.dir.display(),
                        "cannot prepare the next WAL segment ({} bytes): {}; {}. Writes go on \
                         until the active segment is full; retrying every {}s",
                        self.cfg.segment_bytes,
                        e,
                        crate::io::disk_space::describe_free(&self.cfg.dir),
                        SPARE_RETRY_AFTER.as_secs()
                    );
                }
                self.spare_failed_at = Some(std::time::Instant::now());
                return Ok(false);
            }
            Err(e) => self.latched = Some(e.to_string()),
            Ok(_) => self.spare_failed_at = None,
        }
        result
    }

    /// True when preparing the next segment must progress even under continuous
    /// load: once the space left in the active segment is no more than the
    /// zero-fill still to do, every batch must be matched by a fill step, or the
    /// rollover would stall a batch behind the rest of the fill.
    pub fn background_urgent(&self) -> bool {
        let left_in_active = self.cfg.segment_bytes.saturating_sub(self.active.offset);
        let fill_left = match &self.spare {
            Some(s) if s.synced => return false,
            Some(s) => self.cfg.segment_bytes - s.zeroed_bytes + SECTOR_BYTES as u64,
            None if self.active.offset < self.cfg.segment_bytes / 2 => return false,
            None => self.cfg.segment_bytes + SECTOR_BYTES as u64,
        };
        left_in_active <= fill_left
    }

    async fn background_inner(&mut self) -> Result<bool, WalError> {
        if self.spare.is_none() {
            if self.active.offset < self.cfg.segment_bytes / 2 {
                return Ok(false);
            }
            self.spare = Some(start_spare(&self.disk, &self.cfg).await?);
            return Ok(true);
        }
        match &mut self.spare {
            Some(spare) => finish_spare_step(spare, &self.cfg).await,
            None => Ok(false),
        }
    }

    pub async fn close(self) -> Result<(), WalError> {
        self.active.file.close().await?;
        if let Some(spare) = self.spare {
            spare.file.close().await?;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }
}

async fn start_spare<D: Disk>(disk: &D, cfg: &WalConfig) -> Result<Spare<D::File>, WalError> {
    let path = cfg.dir.join(SPARE_FILE);
    // A spare left by a crash is incomplete by definition: start over.
    if disk
        .list_dir(&cfg.dir)
        .await?
        .iter()
        .any(|n| n == SPARE_FILE)
    {
        disk.remove(&path).await?;
    }
    let file = disk.open(&path, OpenMode::CreateNew).await?;
    if let Err(e) = file.allocate(cfg.segment_bytes).await {
        let unsupported = e.is_unsupported();
        // Not every file system has fallocate (FUSE, some network ones). The
        // zero fill below writes every block of the segment anyway, which
        // allocates it as well; only the speed of preparing a segment differs.
        // Without the prefill, segments grow as they are written and
        // fdatasync also persists their size: correct, only slower.
        if !unsupported {
            let _ = file.close().await;
            let _ = disk.remove(&path).await;
            return Err(e.into());
        }
        warn_no_fallocate(&cfg.dir);
    }
    Ok(Spare {
        file,
        zeroed_bytes: if cfg.prefill { 0 } else { cfg.segment_bytes },
        synced: false,
    })
}

/// How long after a spare could not get space the next try waits.
const SPARE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// A whole spare segment, allocated, zeroed and synced; on failure nothing
/// is left behind (a partial spare on a full disk is space the operator needs).
async fn prepare_spare<D: Disk>(disk: &D, cfg: &WalConfig) -> Result<Spare<D::File>, WalError> {
    let mut spare = start_spare(disk, cfg).await?;
    if let Err(e) = fill_spare(&mut spare, cfg).await {
        discard_spare(disk, cfg, spare).await;
        return Err(e);
    }
    Ok(spare)
}

async fn fill_spare<F: DiskFile>(spare: &mut Spare<F>, cfg: &WalConfig) -> Result<(), WalError> {
    while finish_spare_step(spare, cfg).await? {}
    Ok(())
}

/// Close and delete an unfinished spare (best effort: it is only space; the
/// next start removes a leftover one anyway).
async fn discard_spare<D: Disk>(disk: &D, cfg: &WalConfig, spare: Spare<D::File>) {
    let _ = spare.file.close().await;
    let _ = disk.remove(&cfg.dir.join(SPARE_FILE)).await;
    let _ = disk.sync_dir(&cfg.dir).await;
}

/// Said once per process: the file system of the WAL has no fallocate.
fn warn_no_fallocate(dir: &Path) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::warn!(
            dir = %dir.display(),
            fs = %crate::io::disk_space::fs_type(dir),
            "this file system does not support fallocate; WAL segments are preallocated by \
             writing zeros instead (slower to prepare, same durability)"
        );
    });
}

/// Returns true while more steps remain.
async fn finish_spare_step<F: DiskFile>(
    spare: &mut Spare<F>,
    cfg: &WalConfig,
) -> Result<bool, WalError> {
    if spare.zeroed_bytes < cfg.segment_bytes {
        let n = (cfg.segment_bytes - spare.zeroed_bytes).min(ZERO_CHUNK_BYTES as u64);
        super::disk::write_zeros(&spare.file, spare.zeroed_bytes, n, ZERO_CHUNK_BYTES).await?;
        spare.zeroed_bytes += n;
        return Ok(true);
    }
    if !spare.synced {
        spare.file.fdatasync().await?;
        spare.synced = true;
    }
    Ok(false)
}

async fn promote_spare<D: Disk>(
    disk: &D,
    cfg: &WalConfig,
    spare: Spare<D::File>,
    seq: u64,
) -> Result<D::File, WalError> {
    assert!(spare.synced && spare.zeroed_bytes == cfg.segment_bytes);
    let from = cfg.dir.join(SPARE_FILE);
    let to = cfg.dir.join(segment_file_name(seq));
    // Reopen under the final name so that later errors name the right file.
    spare.file.close().await?;
    disk.rename(&from, &to).await?;
    disk.sync_dir(&cfg.dir).await?;
    Ok(disk.open(&to, OpenMode::ReadWrite).await?)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(26), "000000000000001a.wal");
        assert_eq!(parse_segment_file_name("000000000000001a.wal"), Some(26));
        assert_eq!(parse_segment_file_name("1a.wal"), None);
        assert_eq!(parse_segment_file_name("spare.tmp"), None);
    }
}

#[cfg(test)]
mod fault_tests {
    use super::*;
    use crate::core::wal_format::{encode_record, Record};
    use crate::io::sim_disk::{Fault, FaultKind, SimDisk};
    use crate::io::wal_reader::{replay_log, ScanOptions};
    use futures_lite::future::block_on;

    fn cfg() -> WalConfig {
        WalConfig {
            dir: "/d/wal".into(),
            shard_id: 0,
            shard_count: 1,
            segment_bytes: 64 * 1024,
            prefill: true,
        }
    }

    fn batch(lsn: u64) -> Vec<u8> {
        let mut payload = Vec::new();
        encode_record(
            &mut payload,
            &Record::Put {
                lsn,
                key: b"k",
                value: &[7u8; 20_000],
            },
        );
        payload
    }

    /// A file system without fallocate (EOPNOTSUPP on every call): segments
    /// are still prepared (by the zero fill), the log rolls over and reads
    /// back whole.
    #[test]
    fn no_fallocate_falls_back_to_writing_zeros() {
        let disk = SimDisk::new(3);
        disk.add_fault(Fault {
            kind: FaultKind::AllocateUnsupported,
            nth: 1,
            sticky: true,
        });
        block_on(async {
            let mut w = WalWriter::open(disk.clone(), cfg(), None, &[])
                .await
                .unwrap();
            for lsn in 1..=10 {
                w.append_batch(&batch(lsn), lsn, 1).await.unwrap();
            }
            assert!(w.position().seq > 1, "rolled over to a new segment");
            w.close().await.unwrap();
            let opts = ScanOptions {
                shard_id: 0,
                repair: false,
                truncate_corruption: false,
            };
            let r = replay_log(&disk, Path::new("/d/wal"), &opts, |_| {})
                .await
                .unwrap();
            assert_eq!(r.records, 10);
        });
        assert!(disk.op_count(FaultKind::AllocateUnsupported) >= 2);
    }

    /// ENOSPC while preparing the first segment: the open fails with a
    /// disk-full error, and no partial spare is left taking space.
    #[test]
    fn no_space_for_the_first_segment_leaves_no_spare() {
        let disk = SimDisk::new(4);
        disk.add_fault(Fault {
            kind: FaultKind::WriteEnospc,
            nth: 1,
            sticky: true,
        });
        block_on(async {
            let Err(e) = WalWriter::open(disk.clone(), cfg(), None, &[]).await else {
                panic!("the open must fail")
            };
            assert!(e.is_disk_full(), "{e}");
            assert!(e.describe().contains("bytes free") || e.describe().contains("free space"));
            let names = disk.list_dir(Path::new("/d/wal")).await.unwrap();
            assert!(!names.iter().any(|n| n == SPARE_FILE), "{names:?}");
        });
    }
}
