//! Range scans inside one shard, with the filter pushed down: one page of the
//! merged stream of memtables and tables.
//!
//! A shard returns at most `limit` matching entries, at most
//! [`SCAN_REPLY_BYTES_MAX`] bytes, and examines at most [`SCAN_EXAMINED_MAX`]
//! records per request, so one scan never holds a core for long; when it stops
//! early it says where to resume. The caller's shard merges the pages of all
//! shards (`ShardContext::scan_merged`). The formats are
//! `core::scan_format`.

use crate::core::filter::Filter;
use crate::core::limits::{SCAN_EXAMINED_MAX, SCAN_REPLY_BYTES_MAX};
use crate::core::scan_format::{push_entry, ScanParams};
use crate::io::table_file::TableError;
use crate::io::Disk;

use crate::shard::lsm::merge::Merge;
use crate::shard::lsm::Lsm;

/// Write one page of the merged stream `merge` into `out`, keeping entries the
/// filter accepts. Returns the highest pending LSN the page depends on (0: none),
/// so that the reply waits until those writes are durable.
pub async fn scan_page<D: Disk>(
    lsm: &Lsm<D>,
    merge: &mut Merge<D>,
    p: &ScanParams<'_>,
    filter: &mut Filter,
    out: &mut Vec<u8>,
    now_ms: u64,
) -> Result<u64, TableError> {
    let entries_at = out.len();
    let mut wait_lsn = 0;
    let mut matched = 0u32;
    let mut examined = 0usize;
    let mut resume: Option<Vec<u8>> = None;
    loop {
        // Checked before asking for the next entry, so a full page never
        // reads the block after its last entry.
        let full = matched >= p.limit
            || out.len() - entries_at >= SCAN_REPLY_BYTES_MAX
            || examined >= SCAN_EXAMINED_MAX;
        if full {
            resume = Some(merge.resume_point());
            break;
        }
        let Some((key, value, lsn, expires_at)) = merge.next(lsm).await? else {
            break;
        };
        examined += 1;
        wait_lsn = wait_lsn.max(lsn);
        let Some(value) = value else { continue };
        // An expired value is absent: skipped like a tombstone, never counted
        // toward the page's limit.
        if crate::core::expiry::is_expired(expires_at, now_ms) {
            continue;
        }
        if filter.matches(key, value) {
            push_entry(out, key, value);
            matched += 1;
        }
    }
    let r = resume.as_deref().unwrap_or_default();
    out.extend_from_slice(r);
    out.extend_from_slice(&(r.len() as u32).to_le_bytes());
    out.push(u8::from(resume.is_some()));
    Ok(wait_lsn)
}
