//! Reads one shard's WAL back at startup (and for `corekv verify`), telling a torn
//! tail from corruption.
//!
//! The rule, which rests on the writer starting a batch only after the previous one
//! is durable: the first batch that fails to validate ends the log. If any valid
//! batch exists *after* it (later in the segment, or a later segment with a valid
//! header), the damage is corruption of acknowledged data and recovery stops with
//! [`WalError::Corrupt`] naming file and offset. Otherwise it is the torn tail of a
//! write that never completed its fdatasync, so nothing in it was acknowledged: it
//! is discarded (and, when repairing, zeroed on disk so that it can never be
//! mistaken for data later).
//!
//! A batch is all-or-nothing: one bad record discards its whole batch.

use std::path::{Path, PathBuf};

use crate::core::limits::SECTOR_BYTES;
use crate::core::wal_format::{
    decode_batch_payload, BatchHeader, Record, SegmentHeader, BATCH_HEADER_BYTES,
};

use super::disk::{Disk, DiskFile, OpenMode};
use super::wal_writer::{
    parse_segment_file_name, segment_file_name, ResumePoint, WalError, SPARE_FILE,
};

const READ_CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug)]
pub struct ScanOptions {
    pub shard_id: u16,
    /// Zero torn tails and delete unusable trailing files, so writing can resume.
    /// `false` for read-only checks (`corekv verify`).
    pub repair: bool,
    /// On corruption, truncate the log there (dropping every later record) instead
    /// of failing. Only with `repair`.
    pub truncate_corruption: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    /// Non-zero bytes discarded after `offset`.
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub path: PathBuf,
    pub offset: u64,
    pub detail: String,
    /// Valid records found after the corruption and dropped with it.
    pub records_dropped: u64,
}

#[derive(Clone, Debug, Default)]
pub struct ScanReport {
    /// Where the writer continues; `None` when the WAL has no segment yet.
    pub resume: Option<ResumePoint>,
    /// LSN of the last record replayed (0 if none).
    pub last_lsn: u64,
    pub records: u64,
    pub batches: u64,
    pub segments: usize,
    pub bytes_read: u64,
    pub torn: Option<TornTail>,
    pub truncated: Option<Truncation>,
    /// Files removed (repair) or that would be removed (check only).
    pub removed: Vec<PathBuf>,
    /// `(sequence, first LSN)` of every segment with a valid header, in order:
    /// what the writer needs to know which segments a flush made redundant.
    pub segment_starts: Vec<(u64, u64)>,
}

/// A segment loaded into memory.
struct Loaded {
    seq: u64,
    path: PathBuf,
    bytes: Vec<u8>,
}

/// Replay the WAL in `dir`, calling `visit` for every record of every valid batch,
/// in LSN order.
pub async fn replay_log<D: Disk>(
    disk: &D,
    dir: &Path,
    opts: &ScanOptions,
    mut visit: impl FnMut(Record<'_>),
) -> Result<ScanReport, WalError> {
    let mut report = ScanReport::default();
    let names = match disk.list_dir(dir).await {
        Ok(names) => names,
        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(e.into()),
    };
    let mut seqs: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    seqs.sort_unstable();
    if names.iter().any(|n| n == SPARE_FILE) {
        report.removed.push(dir.join(SPARE_FILE));
    }

    let mut expected_lsn: Option<u64> = None;
    for i in 0..seqs.len() {
        if seqs.len() > 1 {
            // A long replay must say it is alive: one line per segment.
            tracing::info!(
                shard = opts.shard_id,
                segment = i + 1,
                segments = seqs.len(),
                records_so_far = report.records,
                "replaying WAL segment {}",
                segment_file_name(seqs[i])
            );
        }
        let seg = load(disk, dir, seqs[i]).await?;
        report.bytes_read += seg.bytes.len() as u64;
        report.segments += 1;
        let step = replay_segment(
            disk,
            opts,
            &seqs,
            i,
            &seg,
            &mut expected_lsn,
            &mut report,
            &mut visit,
        )
        .await?;
        match step {
            Step::Next => {}
            Step::Stop => break,
            Step::Corrupt { offset, detail } => {
                return corrupt(disk, dir, opts, &seqs, i, &seg, offset, detail, &mut report).await;
            }
        }
    }
    if opts.repair {
        for path in &report.removed {
            disk.remove(path).await?;
        }
        if !report.removed.is_empty() {
            disk.sync_dir(dir).await?;
        }
    }
    Ok(report)
}

/// What to do after one segment.
enum Step {
    /// Go on with the next segment.
    Next,
    /// The log ends in this segment (`report.resume` says where writing goes on).
    Stop,
    /// Damage of acknowledged data at `offset` of this segment.
    Corrupt { offset: u64, detail: String },
}

/// Replay segment `seqs[index]` (loaded as `seg`): check its header against
/// what came before, visit the records of its valid batches, and decide how
/// its end is read (full, torn tail, or corruption).
#[allow(
    clippy::too_many_arguments,
    reason = "the replay's state, passed down rather than bundled for one caller"
)]
async fn replay_segment<D: Disk>(
    disk: &D,
    opts: &ScanOptions,
    seqs: &[u64],
    index: usize,
    seg: &Loaded,
    expected_lsn: &mut Option<u64>,
    report: &mut ScanReport,
    visit: &mut impl FnMut(Record<'_>),
) -> Result<Step, WalError> {
    let seq = seqs[index];
    let corrupt_at_start = |detail: String| Ok(Step::Corrupt { offset: 0, detail });
    if index > 0 && seqs[index - 1] + 1 != seq {
        let missing = seqs[index - 1] + 1;
        return corrupt_at_start(format!(
            "segment {missing} is missing (found {seq} after it)"
        ));
    }
    let last_segment = index + 1 == seqs.len();
    let header = match SegmentHeader::decode(&seg.bytes) {
        Ok(h) => {
            report.segment_starts.push((seq, h.first_lsn.get()));
            h
        }
        Err(_) if last_segment && seg.bytes.iter().all(|&b| b == 0) => {
            // Renamed into place but never written: resume in it.
            report.resume = Some(ResumePoint { seq, offset: 0 });
            return Ok(Step::Stop);
        }
        Err(e) => return corrupt_at_start(format!("segment header: {e}")),
    };
    if header.segment_seq.get() != seq || header.shard_id.get() != u32::from(opts.shard_id) {
        return corrupt_at_start(format!(
            "segment header names segment {} of shard {}, expected segment {seq} of shard {}",
            header.segment_seq.get(),
            header.shard_id.get(),
            opts.shard_id
        ));
    }
    let first_lsn = header.first_lsn.get();
    if let Some(expected) = *expected_lsn {
        if first_lsn != expected {
            return corrupt_at_start(format!(
                "segment starts at LSN {first_lsn}, expected {expected}: records are missing"
            ));
        }
    }
    let (end_reason, offset, next_lsn) = replay_batches(seg, first_lsn, report, visit);
    *expected_lsn = Some(next_lsn);
    let detail = match end_reason {
        End::SegmentFull if last_segment => {
            report.resume = Some(ResumePoint {
                seq,
                offset: seg.bytes.len() as u64,
            });
            return Ok(Step::Stop);
        }
        End::SegmentFull => return Ok(Step::Next),
        End::NoBatch => None,
        End::Damaged(d) => Some(d),
    };
    let damaged = detail.is_some();
    let rest_is_zero = seg.bytes[offset..].iter().all(|&b| b == 0);
    let unreadable = || {
        detail
            .clone()
            .unwrap_or_else(|| "batch unreadable".to_string())
    };
    if let Some(later) = later_valid_batch(&seg.bytes, offset, seq, next_lsn) {
        let detail = format!("{}; a valid batch follows at offset {later}", unreadable());
        return Ok(Step::Corrupt {
            offset: offset as u64,
            detail,
        });
    }
    if !last_segment && (damaged || !rest_is_zero) {
        let detail = format!("{}; later segments exist", unreadable());
        return Ok(Step::Corrupt {
            offset: offset as u64,
            detail,
        });
    }
    if !rest_is_zero {
        let bytes = seg.bytes[offset..].iter().filter(|&&b| b != 0).count() as u64;
        report.torn = Some(TornTail {
            path: seg.path.clone(),
            offset: offset as u64,
            bytes,
        });
        if opts.repair {
            zero_tail(disk, seg, offset as u64).await?;
        }
    }
    if last_segment {
        report.resume = Some(ResumePoint {
            seq,
            offset: offset as u64,
        });
        return Ok(Step::Stop);
    }
    // The writer rolled over, leaving zeros behind: continue in the next segment.
    Ok(Step::Next)
}

/// Visit the records of the valid batches of `seg` from its first block on;
/// returns why the walk ended, where, and the LSN the next record would have.
fn replay_batches(
    seg: &Loaded,
    first_lsn: u64,
    report: &mut ScanReport,
    visit: &mut impl FnMut(Record<'_>),
) -> (End, usize, u64) {
    let mut next_lsn = first_lsn;
    let mut offset = SECTOR_BYTES;
    let mut records: Vec<Record<'_>> = Vec::new();
    let end = loop {
        if offset + BATCH_HEADER_BYTES > seg.bytes.len() {
            break End::SegmentFull;
        }
        let Some(bh) = BatchHeader::decode(&seg.bytes[offset..], seg.seq) else {
            break End::NoBatch;
        };
        match validate_batch(&seg.bytes, offset, &bh, next_lsn, &mut records) {
            Ok(extent) => {
                for r in records.drain(..) {
                    visit(r);
                }
                let count = u64::from(bh.record_count.get());
                report.records += count;
                report.batches += 1;
                next_lsn += count;
                report.last_lsn = next_lsn - 1;
                offset += extent;
            }
            Err(detail) => break End::Damaged(detail),
        }
    };
    (end, offset, next_lsn)
}

enum End {
    SegmentFull,
    NoBatch,
    Damaged(String),
}

/// Check a batch whose header is present; on success fill `out` with its records
/// and return its extent.
fn validate_batch<'a>(
    seg: &'a [u8],
    offset: usize,
    bh: &BatchHeader,
    expected_lsn: u64,
    out: &mut Vec<Record<'a>>,
) -> Result<usize, String> {
    out.clear();
    let extent = bh.extent_bytes() as usize;
    if offset + extent > seg.len() {
        return Err(format!(
            "batch declares {extent} bytes, past the segment end"
        ));
    }
    if bh.first_lsn.get() != expected_lsn {
        return Err(format!(
            "batch starts at LSN {}, expected {expected_lsn}",
            bh.first_lsn.get()
        ));
    }
    let payload_start = offset + BATCH_HEADER_BYTES;
    let payload = &seg[payload_start..payload_start + bh.payload_bytes.get() as usize];
    decode_batch_payload(payload, expected_lsn, bh.record_count.get(), |r| {
        out.push(r)
    })
    .map_err(|e| {
        out.clear();
        format!("{e} (payload starts at {payload_start})")
    })?;
    if seg[payload_start + payload.len()..offset + extent]
        .iter()
        .any(|&b| b != 0)
    {
        out.clear();
        return Err("batch padding is not zero".to_string());
    }
    Ok(extent)
}

/// Offset of a valid batch header later than `from` in this segment whose LSN
/// lies beyond `next_lsn`'s predecessor, if any.
fn later_valid_batch(seg: &[u8], from: usize, seq: u64, next_lsn: u64) -> Option<usize> {
    let mut offset = from + SECTOR_BYTES;
    while offset + BATCH_HEADER_BYTES <= seg.len() {
        if let Some(bh) = BatchHeader::decode(&seg[offset..], seq) {
            if bh.first_lsn.get() >= next_lsn {
                return Some(offset);
            }
        }
        offset += SECTOR_BYTES;
    }
    None
}

#[allow(clippy::too_many_arguments)]
async fn corrupt<D: Disk>(
    disk: &D,
    dir: &Path,
    opts: &ScanOptions,
    seqs: &[u64],
    index: usize,
    seg: &Loaded,
    offset: u64,
    detail: String,
    report: &mut ScanReport,
) -> Result<ScanReport, WalError> {
    if !(opts.repair && opts.truncate_corruption) {
        return Err(WalError::Corrupt {
            path: seg.path.clone(),
            offset,
            detail,
        });
    }
    // Count what is dropped: valid batches later in this segment and in later ones.
    let mut dropped = count_valid_records(&seg.bytes, offset as usize + SECTOR_BYTES, seg.seq);
    for &seq in &seqs[index + 1..] {
        let later = load(disk, dir, seq).await?;
        dropped += count_valid_records(&later.bytes, SECTOR_BYTES, seq);
        report.removed.push(later.path);
    }
    if offset == 0 {
        // The whole segment goes. Writing resumes after the previous segment, which
        // is treated as full so that the next batch starts a fresh segment.
        report.removed.push(seg.path.clone());
        report.resume = match index {
            0 => None,
            _ => {
                let prev = seqs[index - 1];
                let len = segment_len(disk, &dir.join(segment_file_name(prev))).await?;
                Some(ResumePoint {
                    seq: prev,
                    offset: len,
                })
            }
        };
    } else {
        zero_tail(disk, seg, offset).await?;
        report.resume = Some(ResumePoint {
            seq: seg.seq,
            offset,
        });
    }
    report.truncated = Some(Truncation {
        path: seg.path.clone(),
        offset,
        detail,
        records_dropped: dropped,
    });
    for path in &report.removed {
        disk.remove(path).await?;
    }
    disk.sync_dir(dir).await?;
    Ok(std::mem::take(report))
}

async fn segment_len<D: Disk>(disk: &D, path: &Path) -> Result<u64, WalError> {
    let file = disk.open(path, OpenMode::ReadOnly).await?;
    let len = file.size().await?;
    file.close().await?;
    Ok(len - len % SECTOR_BYTES as u64)
}

fn count_valid_records(seg: &[u8], from: usize, seq: u64) -> u64 {
    let mut n = 0u64;
    let mut offset = from - from % SECTOR_BYTES;
    while offset + BATCH_HEADER_BYTES <= seg.len() {
        if let Some(bh) = BatchHeader::decode(&seg[offset..], seq) {
            n += u64::from(bh.record_count.get());
        }
        offset += SECTOR_BYTES;
    }
    n
}

async fn load<D: Disk>(disk: &D, dir: &Path, seq: u64) -> Result<Loaded, WalError> {
    let path = dir.join(segment_file_name(seq));
    let file = disk.open(&path, OpenMode::ReadOnly).await?;
    let size = file.size().await?;
    let mut bytes = Vec::with_capacity(size as usize);
    let mut offset = 0u64;
    while offset < size {
        let want = READ_CHUNK_BYTES.min((size - offset) as usize);
        let want_aligned = crate::core::limits::align_up(want);
        let chunk = file.read_at(offset, want_aligned).await?;
        let got = chunk.len().min(want);
        bytes.extend_from_slice(&chunk[..got]);
        if got < want {
            break;
        }
        offset += got as u64;
    }
    file.close().await?;
    // A file whose size is not sector-aligned is read up to its last whole sector.
    bytes.truncate(bytes.len() - bytes.len() % SECTOR_BYTES);
    Ok(Loaded { seq, path, bytes })
}

/// Zero the blocks from `offset` to the last non-zero block, then fdatasync.
async fn zero_tail<D: Disk>(disk: &D, seg: &Loaded, offset: u64) -> Result<(), WalError> {
    let start = offset as usize;
    let Some(last_nonzero) = seg.bytes[start..].iter().rposition(|&b| b != 0) else {
        return Ok(());
    };
    let end = crate::core::limits::align_up(start + last_nonzero + 1);
    let file = disk.open(&seg.path, OpenMode::ReadWrite).await?;
    super::disk::write_zeros(&file, offset, (end - start) as u64, READ_CHUNK_BYTES).await?;
    file.fdatasync().await?;
    file.close().await?;
    Ok(())
}
