//! Range scans inside one shard, with the filter pushed down, and the formats
//! that carry a scan's parameters to a shard and its page of results back.
//!
//! A shard returns at most `limit` matching entries, at most
//! [`SCAN_REPLY_BYTES_MAX`] bytes, and examines at most [`SCAN_EXAMINED_MAX`]
//! records per request, so one scan never holds a core for long; when it stops
//! early it says where to resume. The connection's shard merges the pages of all
//! shards (see `net::connection`).
//!
//! Internal formats (never on the wire):
//! - params: `end_len u32 | end | limit u32 | filter_kind u8 | filter_arg`
//! - reply:  `resume_flag u8 | resume_len u32 | resume | (key_len u32 | key | value_len u32 | value)*`

use crate::core::filter::Filter;

use crate::io::table_file::TableError;
use crate::io::Disk;

use super::lsm::Lsm;
use super::merge::Merge;

/// Most entries one SCAN request may ask for.
pub const SCAN_LIMIT_MAX: u32 = 10_000;
/// A shard's page stops growing past this many bytes (one entry always fits).
pub const SCAN_REPLY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// A shard examines at most this many records per request before returning a
/// resume point, bounding the time a selective filter can hold the core.
pub const SCAN_EXAMINED_MAX: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanParams<'a> {
    pub end: &'a [u8],
    pub limit: u32,
    pub filter_kind: u8,
    pub filter_arg: &'a [u8],
}

pub fn encode_params(out: &mut Vec<u8>, p: &ScanParams<'_>) {
    out.extend_from_slice(&(p.end.len() as u32).to_le_bytes());
    out.extend_from_slice(p.end);
    out.extend_from_slice(&p.limit.to_le_bytes());
    out.push(p.filter_kind);
    out.extend_from_slice(p.filter_arg);
}

fn split_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (n, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*n), rest))
}

fn split_bytes(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (n, rest) = split_u32(b)?;
    let n = n as usize;
    (n <= rest.len()).then(|| rest.split_at(n))
}

pub fn decode_params(b: &[u8]) -> Option<ScanParams<'_>> {
    let (end, rest) = split_bytes(b)?;
    let (limit, rest) = split_u32(rest)?;
    let (&filter_kind, filter_arg) = rest.split_first()?;
    Some(ScanParams {
        end,
        limit,
        filter_kind,
        filter_arg,
    })
}

/// A decoded shard page.
pub struct ShardPage<'a> {
    /// Where this shard would continue, if it stopped early.
    pub resume: Option<&'a [u8]>,
    pub entries: &'a [u8],
}

pub fn decode_page(b: &[u8]) -> Option<ShardPage<'_>> {
    let (&flag, rest) = b.split_first()?;
    let (resume, entries) = split_bytes(rest)?;
    Some(ShardPage {
        resume: (flag == 1).then_some(resume),
        entries,
    })
}

/// Iterate `(key, value)` pairs of a page's entries.
pub fn page_entries(mut b: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::from_fn(move || {
        let (k, rest) = split_bytes(b)?;
        let (v, rest) = split_bytes(rest)?;
        b = rest;
        Some((k, v))
    })
}

fn push_entry(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// Write one page of the merged stream `merge` into `out`, keeping entries the
/// filter accepts. Returns the highest pending LSN the page depends on (0: none),
/// so that the reply waits until those writes are durable.
pub async fn scan_page<D: Disk>(
    lsm: &Lsm<D>,
    merge: &mut Merge<D>,
    p: &ScanParams<'_>,
    filter: &mut Filter,
    out: &mut Vec<u8>,
) -> Result<u64, TableError> {
    let header_at = out.len();
    out.push(0);
    out.extend_from_slice(&0u32.to_le_bytes());
    let entries_at = out.len();
    let mut wait_lsn = 0;
    let mut matched = 0u32;
    let mut examined = 0usize;
    let mut resume: Option<Vec<u8>> = None;
    while let Some((key, value, lsn)) = merge.next(lsm).await? {
        let full = matched >= p.limit
            || out.len() - entries_at >= SCAN_REPLY_BYTES_MAX
            || examined >= SCAN_EXAMINED_MAX;
        if full {
            resume = Some(key.to_vec());
            break;
        }
        examined += 1;
        wait_lsn = wait_lsn.max(lsn);
        let Some(value) = value else { continue };
        if filter.matches(key, value) {
            push_entry(out, key, value);
            matched += 1;
        }
    }
    if let Some(r) = resume {
        // The page must be self-contained: rebuild with the header in front.
        let entries = out.split_off(entries_at);
        out.truncate(header_at);
        out.push(1);
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(&r);
        out.extend_from_slice(&entries);
    }
    Ok(wait_lsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip() {
        let p = ScanParams {
            end: b"zz",
            limit: 5,
            filter_kind: 2,
            filter_arg: b"needle",
        };
        let mut b = Vec::new();
        encode_params(&mut b, &p);
        assert_eq!(decode_params(&b), Some(p));
        assert_eq!(decode_params(&b[..3]), None);
    }
}
