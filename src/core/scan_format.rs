//! The formats of a range scan: what a client asks for (`ScanRequest`, the
//! wire fields), the parameters that carry a scan to one shard, and the page
//! of results a shard sends back, with the limits that bound a page.
//!
//! Internal formats (between shards, never on the wire):
//! - params: `end_len u32 | end | limit u32 | filter_kind u8 | filter_arg`
//! - reply:  `(key_len u32 | key | value_len u32 | value)* | resume | resume_len u32 | resume_flag u8`
//!   (the resume point last, so a page is written in one pass straight into
//!   the reply buffer: it is known only when the page ends)
//!
//! Plain data: no I/O. The scan itself is `shard::lsm::scan`.

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

/// How many entries to ask each of `shards` shards for first, for a merged
/// page of `limit`. Keys are spread over shards by a hash, so a shard's count
/// among the first `limit` keys is binomial(limit, 1/shards): ask for the mean
/// plus 1.5 standard deviations (a shard falls short about 7 % of the time and
/// is asked again for exactly what is missing). Every entry asked for beyond
/// what the merge keeps is read from disk for nothing: asking every shard for
/// the whole limit read `shards` times the blocks.
pub fn first_share(limit: usize, shards: usize) -> usize {
    if shards <= 1 {
        return limit;
    }
    let p = 1.0 / shards as f64;
    let sd = (limit as f64 * p * (1.0 - p)).sqrt();
    let share = limit.div_ceil(shards) + (1.5 * sd).ceil() as usize + 1;
    share.min(limit)
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

/// One SCAN as a client asks for it (the wire fields; `net::codec::scan_fields`
/// reads them from a request body): merged over every shard by
/// `ShardContext::scan_merged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanRequest<'a> {
    pub start: &'a [u8],
    pub end: &'a [u8],
    pub limit: u32,
    pub filter_kind: u8,
    pub filter_arg: &'a [u8],
}

/// A decoded shard page.
pub struct ShardPage<'a> {
    /// Where this shard would continue, if it stopped early.
    pub resume: Option<&'a [u8]>,
    pub entries: &'a [u8],
}

pub fn decode_page(b: &[u8]) -> Option<ShardPage<'_>> {
    let (&flag, rest) = b.split_last()?;
    let (rest, n) = rest.split_last_chunk::<4>()?;
    let n = u32::from_le_bytes(*n) as usize;
    let entries_len = rest.len().checked_sub(n)?;
    let (entries, resume) = rest.split_at(entries_len);
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

pub fn push_entry(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_share_covers_the_mean_and_never_exceeds_the_limit() {
        assert_eq!(first_share(50, 1), 50);
        assert_eq!(first_share(1, 2), 1);
        assert_eq!(first_share(50, 2), 25 + 6 + 1);
        assert_eq!(first_share(100, 2), 50 + 8 + 1);
        for shards in 1..=16 {
            for limit in 0..=1000 {
                let share = first_share(limit, shards);
                assert!(share <= limit && share >= limit.div_ceil(shards));
            }
        }
    }

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
