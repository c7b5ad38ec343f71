//! The byte format of one table block: a payload, zero padding, and a trailer
//! that names the block and checksums it; and the layout of data blocks
//! (prefix-compressed keys with restart points).
//!
//! ```text
//! block   = payload | trailer                    (the footer: payload | zeros | trailer, 4 KiB)
//! trailer = table_id u64 | block_no u32 | kind u8 | reserved [3] | payload_len u32 | crc u32
//!           crc = CRC32C(payload ++ trailer[0..20])
//! data    = entry* | restart u32 * n | n u32
//! entry   = shared varint | unshared varint | value_tag varint | key[shared..] | value
//!           value_tag = value_len << 1 | 0                      a value
//!                     = 1                                       a tombstone
//!                     = (8 + value_len) << 1 | 1                an expiring value (table v2):
//!                       value = expires_at_unix_ms u64 LE | value bytes
//! ```
//!
//! Expiring values (table format version 2) reuse the odd tags that version 1
//! never wrote: a v1 writer only ever wrote the odd tag 1 (a tombstone), so one
//! decoding rule reads both versions and needs no version passed down. A v1
//! reader would misread an expiring entry, which is why tables that may hold one
//! say version 2 in their footer (`table_format`), refused by older builds.
//!
//! Why the trailer names its table and block number: a checksum alone proves a
//! block is intact, not that it is the block we asked for. A write misdirected
//! to another offset or file carries a valid CRC; the name in its trailer is
//! what gives it away.
//!
//! Pure and defensive: every length read from a block is bounded by the block
//! before it is used, so a block that passed its CRC but is malformed (a bug, or
//! a fuzzer) yields an error, never a panic.

use super::checksum::{crc32c, crc32c_append};

pub const TRAILER_BYTES: usize = 24;
/// Entries between restart points: a lookup decodes at most this many keys
/// after its binary search.
pub const RESTART_INTERVAL: usize = 16;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockKind {
    Data = 1,
    Index = 2,
    Bloom = 3,
    Footer = 4,
}

impl BlockKind {
    fn from_u8(b: u8) -> Option<BlockKind> {
        Some(match b {
            1 => BlockKind::Data,
            2 => BlockKind::Index,
            3 => BlockKind::Bloom,
            4 => BlockKind::Footer,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("misplaced block: expected table {want_table} block {want_block}, found table {got_table} block {got_block}")]
    Misplaced {
        want_table: u64,
        want_block: u32,
        got_table: u64,
        got_block: u32,
    },
    #[error("expected a {want:?} block, found kind {got}")]
    Kind { want: BlockKind, got: u8 },
    #[error("malformed block: {0}")]
    Malformed(&'static str),
}

/// Append `payload` to `out` as one sealed block (payload then trailer);
/// returns its length.
pub fn seal_block(
    out: &mut Vec<u8>,
    payload: &[u8],
    table_id: u64,
    block_no: u32,
    kind: BlockKind,
) -> usize {
    seal_block_padded(
        out,
        payload,
        table_id,
        block_no,
        kind,
        payload.len() + TRAILER_BYTES,
    )
}

/// Like [`seal_block`], padded with zeros between payload and trailer to
/// exactly `len` bytes (the footer, which must fill the file's last 4 KiB).
pub fn seal_block_padded(
    out: &mut Vec<u8>,
    payload: &[u8],
    table_id: u64,
    block_no: u32,
    kind: BlockKind,
    len: usize,
) -> usize {
    assert!(len >= payload.len() + TRAILER_BYTES);
    let start = out.len();
    out.extend_from_slice(payload);
    out.resize(start + len - TRAILER_BYTES, 0);
    let mut trailer = [0u8; TRAILER_BYTES];
    trailer[0..8].copy_from_slice(&table_id.to_le_bytes());
    trailer[8..12].copy_from_slice(&block_no.to_le_bytes());
    trailer[12] = kind as u8;
    trailer[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = crc32c_append(crc32c(payload), &trailer[..20]);
    trailer[20..24].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&trailer);
    len
}

/// Check a block read from disk and return its payload. The checksum is checked
/// first: a block that fails it tells us nothing trustworthy about its name.
pub fn open_block(
    block: &[u8],
    table_id: u64,
    block_no: u32,
    kind: BlockKind,
) -> Result<&[u8], BlockError> {
    if block.len() < TRAILER_BYTES {
        return Err(BlockError::Malformed("shorter than a trailer"));
    }
    let (body, trailer) = block.split_at(block.len() - TRAILER_BYTES);
    let u32_at =
        |i: usize| u32::from_le_bytes([trailer[i], trailer[i + 1], trailer[i + 2], trailer[i + 3]]);
    let payload_len = u32_at(16) as usize;
    let stored = u32_at(20);
    if payload_len > body.len() {
        // The CRC cannot even be computed over a length past the block.
        return Err(BlockError::Checksum {
            stored,
            computed: 0,
        });
    }
    let payload = &body[..payload_len];
    let computed = crc32c_append(crc32c(payload), &trailer[..20]);
    if computed != stored {
        return Err(BlockError::Checksum { stored, computed });
    }
    let got_table = u64::from_le_bytes(trailer[0..8].try_into().unwrap_or([0; 8]));
    let got_block = u32_at(8);
    if got_table != table_id || got_block != block_no {
        return Err(BlockError::Misplaced {
            want_table: table_id,
            want_block: block_no,
            got_table,
            got_block,
        });
    }
    match BlockKind::from_u8(trailer[12]) {
        Some(k) if k == kind => Ok(payload),
        _ => Err(BlockError::Kind {
            want: kind,
            got: trailer[12],
        }),
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decode a varint at `*pos`, advancing it.
pub fn get_varint(b: &[u8], pos: &mut usize) -> Result<u64, BlockError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = b.get(*pos) else {
            return Err(BlockError::Malformed("varint runs past the block"));
        };
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(BlockError::Malformed("varint longer than 10 bytes"))
}

/// Builds one data block's payload from keys added in strictly increasing order.
#[derive(Default)]
pub struct DataBlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    since_restart: usize,
    last_key: Vec<u8>,
    entries: usize,
}

impl DataBlockBuilder {
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Payload bytes if finished now.
    pub fn payload_len(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// Payload bytes after adding an entry of this size (an upper bound,
    /// room for an expiry included).
    pub fn payload_len_with(&self, key_len: usize, value_len: usize) -> usize {
        self.payload_len() + key_len + value_len + 8 + 3 * 5 + 4
    }

    /// `value` `None` is a tombstone.
    pub fn add(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.add_expiring(key, value, crate::core::expiry::NEVER)
    }

    /// `value` `None` is a tombstone (its `expires_at` is ignored);
    /// `expires_at` 0 ([`crate::core::expiry::NEVER`]) writes a plain value.
    pub fn add_expiring(&mut self, key: &[u8], value: Option<&[u8]>, expires_at: u64) {
        debug_assert!(
            self.entries == 0 || key > self.last_key.as_slice(),
            "keys must be added in increasing order"
        );
        let shared = if self.since_restart == RESTART_INTERVAL || self.entries == 0 {
            self.restarts.push(self.buf.len() as u32);
            self.since_restart = 0;
            0
        } else {
            key.iter()
                .zip(&self.last_key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        let tag = match value {
            Some(v) if expires_at != crate::core::expiry::NEVER => ((8 + v.len() as u64) << 1) | 1,
            Some(v) => (v.len() as u64) << 1,
            None => 1,
        };
        put_varint(&mut self.buf, tag);
        self.buf.extend_from_slice(&key[shared..]);
        if let Some(v) = value {
            if expires_at != crate::core::expiry::NEVER {
                self.buf.extend_from_slice(&expires_at.to_le_bytes());
            }
            self.buf.extend_from_slice(v);
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.since_restart += 1;
        self.entries += 1;
    }

    /// Append the finished payload to `out` and reset for the next block.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.buf);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        self.buf.clear();
        self.restarts.clear();
        self.since_restart = 0;
        self.entries = 0;
    }
}

/// A parsed data block payload.
#[derive(Clone, Copy)]
pub struct DataBlock<'a> {
    entries: &'a [u8],
    restarts: &'a [u8],
}

/// One decoded entry's value: `None` for a tombstone.
pub type EntryValue<'a> = Option<&'a [u8]>;

/// One decoded entry's value and expiry (unix ms, 0: never; always 0 for a
/// tombstone).
pub type EntryCell<'a> = (EntryValue<'a>, u64);

impl<'a> DataBlock<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<DataBlock<'a>, BlockError> {
        let n_at = payload
            .len()
            .checked_sub(4)
            .ok_or(BlockError::Malformed("no restart count"))?;
        let n = u32::from_le_bytes(payload[n_at..].try_into().unwrap_or([0; 4])) as usize;
        let restarts_at = n
            .checked_mul(4)
            .and_then(|b| n_at.checked_sub(b))
            .ok_or(BlockError::Malformed("restart count past the block"))?;
        if n == 0 && restarts_at > 0 {
            return Err(BlockError::Malformed("entries without a restart point"));
        }
        let block = DataBlock {
            entries: &payload[..restarts_at],
            restarts: &payload[restarts_at..n_at],
        };
        for i in 0..n {
            if block.restart(i) as usize > restarts_at {
                return Err(BlockError::Malformed("restart point past the entries"));
            }
        }
        Ok(block)
    }

    /// The entry bytes (without the restart array), for [`decode_next`].
    pub fn entries(&self) -> &'a [u8] {
        self.entries
    }

    fn restart_count(&self) -> usize {
        self.restarts.len() / 4
    }

    fn restart(&self, i: usize) -> u32 {
        let b = &self.restarts[i * 4..i * 4 + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// A cursor before the first entry.
    pub fn cursor(&self) -> BlockCursor<'a> {
        BlockCursor {
            block: *self,
            pos: 0,
            key: Vec::new(),
        }
    }

    /// A cursor positioned so that `next()` returns the first entry with key >= `target`.
    pub fn seek(&self, target: &[u8]) -> Result<BlockCursor<'a>, BlockError> {
        // Binary search the restart points for the last one whose key < target.
        let (mut lo, mut hi) = (0usize, self.restart_count());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let mut pos = self.restart(mid) as usize;
            let (shared, suffix, _, _) = decode_entry(self.entries, &mut pos)?;
            if shared != 0 {
                return Err(BlockError::Malformed("restart entry shares a prefix"));
            }
            if suffix < target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let start = if lo == 0 {
            0
        } else {
            self.restart(lo - 1) as usize
        };
        let mut cursor = BlockCursor {
            block: *self,
            pos: start,
            key: Vec::new(),
        };
        // Walk forward to the first key >= target, then step back one entry.
        loop {
            let before = (cursor.pos, cursor.key.len());
            match cursor.next()? {
                None => return Ok(cursor),
                Some((key, _, _)) if key >= target => {
                    // Re-position at that entry: restore and let next() return it.
                    cursor.pos = before.0;
                    cursor.key.truncate(before.1);
                    return Ok(cursor);
                }
                Some(_) => {}
            }
        }
    }

    /// The value stored for exactly `key`, with its expiry: `Ok(None)` if
    /// absent, `Ok(Some((None, 0)))` for a tombstone.
    pub fn get(&self, key: &[u8]) -> Result<Option<EntryCell<'a>>, BlockError> {
        let mut c = self.seek(key)?;
        match c.next()? {
            Some((k, v, e)) if k == key => Ok(Some((v, e))),
            _ => Ok(None),
        }
    }
}

/// Decode the entry at `*pos`: (shared, key suffix, value, expiry).
fn decode_entry<'a>(
    b: &'a [u8],
    pos: &mut usize,
) -> Result<(usize, &'a [u8], EntryValue<'a>, u64), BlockError> {
    let shared = get_varint(b, pos)? as usize;
    let unshared = get_varint(b, pos)? as usize;
    let tag = get_varint(b, pos)?;
    // Bounded before any arithmetic: a length past the block is malformed
    // whatever the tag's kind.
    let slot_len = usize::try_from(tag >> 1).unwrap_or(usize::MAX);
    let expiring = tag & 1 == 1 && slot_len != 0;
    let tombstone = tag & 1 == 1 && slot_len == 0;
    if expiring && slot_len < 8 {
        return Err(BlockError::Malformed(
            "expiring entry shorter than its expiry",
        ));
    }
    let end = pos
        .checked_add(unshared)
        .and_then(|e| e.checked_add(slot_len))
        .filter(|&e| e <= b.len())
        .ok_or(BlockError::Malformed("entry runs past the block"))?;
    let suffix = &b[*pos..*pos + unshared];
    let slot = &b[*pos + unshared..end];
    *pos = end;
    if tombstone {
        return Ok((shared, suffix, None, 0));
    }
    if expiring {
        let (at, value) = slot.split_at(8);
        let at = u64::from_le_bytes(at.try_into().unwrap_or([0; 8]));
        return Ok((shared, suffix, Some(value), at));
    }
    Ok((shared, suffix, Some(slot), 0))
}

/// Decode the entry at `*pos` of a block's entry bytes into `key`, which must
/// hold the previous entry's key (empty at a restart point). Returns the value
/// (`None`: a tombstone) and its expiry (0: never).
pub fn decode_next<'a>(
    entries: &'a [u8],
    pos: &mut usize,
    key: &mut Vec<u8>,
) -> Result<EntryCell<'a>, BlockError> {
    let (shared, suffix, value, expires_at) = decode_entry(entries, pos)?;
    if shared > key.len() {
        return Err(BlockError::Malformed(
            "shared prefix longer than the previous key",
        ));
    }
    key.truncate(shared);
    key.extend_from_slice(suffix);
    Ok((value, expires_at))
}

/// A cursor's entry: key (borrowing the cursor), value, expiry.
pub type CursorEntry<'k, 'a> = (&'k [u8], EntryValue<'a>, u64);

/// Walks a data block's entries in key order.
pub struct BlockCursor<'a> {
    block: DataBlock<'a>,
    pos: usize,
    key: Vec<u8>,
}

impl<'a> BlockCursor<'a> {
    /// The next entry; the key borrows the cursor until the next call.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<CursorEntry<'_, 'a>>, BlockError> {
        if self.pos >= self.block.entries.len() {
            return Ok(None);
        }
        let (value, expires_at) = decode_next(self.block.entries, &mut self.pos, &mut self.key)?;
        Ok(Some((&self.key, value, expires_at)))
    }

    /// Where the cursor is (byte position, last key), to continue later with
    /// [`decode_next`] without holding a borrow of the block.
    pub fn into_parts(self) -> (usize, Vec<u8>) {
        (self.pos, self.key)
    }

    /// Byte position in the block's entries (resume a cursor across awaits).
    pub fn position(&self) -> usize {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(entries: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<u8> {
        let mut b = DataBlockBuilder::default();
        for (k, v) in entries {
            b.add(k, v.as_deref());
        }
        let mut payload = Vec::new();
        b.finish_into(&mut payload);
        payload
    }

    fn sample() -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        (0..100u32)
            .map(|i| {
                let k = format!("key{:05}", i * 2).into_bytes();
                let v = (i % 7 != 0).then(|| format!("v{i}").into_bytes());
                (k, v)
            })
            .collect()
    }

    #[test]
    fn data_block_round_trip_get_and_seek() {
        let entries = sample();
        let payload = build(&entries);
        let block = DataBlock::parse(&payload).unwrap();
        let mut c = block.cursor();
        for (k, v) in &entries {
            let (gk, gv, ge) = c.next().unwrap().unwrap();
            assert_eq!(gk, k.as_slice());
            assert_eq!(gv, v.as_deref());
            assert_eq!(ge, 0);
        }
        assert!(c.next().unwrap().is_none());
        for (k, v) in &entries {
            assert_eq!(block.get(k).unwrap(), Some((v.as_deref(), 0)));
        }
        assert_eq!(block.get(b"key00001").unwrap(), None);
        assert_eq!(block.get(b"a").unwrap(), None);
        assert_eq!(block.get(b"z").unwrap(), None);
        let mut c = block.seek(b"key00051").unwrap();
        assert_eq!(c.next().unwrap().unwrap().0, b"key00052");
        let mut c = block.seek(b"").unwrap();
        assert_eq!(c.next().unwrap().unwrap().0, b"key00000");
        let mut c = block.seek(b"zzz").unwrap();
        assert!(c.next().unwrap().is_none());
    }

    #[test]
    fn sealed_block_detects_flips_and_misdirection() {
        let payload = build(&sample());
        let mut out = Vec::new();
        let len = seal_block_padded(&mut out, &payload, 7, 3, BlockKind::Data, 8192);
        assert_eq!(len, 8192);
        let mut tight = Vec::new();
        assert_eq!(
            seal_block(&mut tight, &payload, 7, 3, BlockKind::Data),
            payload.len() + TRAILER_BYTES
        );
        assert_eq!(
            open_block(&tight, 7, 3, BlockKind::Data).unwrap(),
            &payload[..]
        );
        assert_eq!(
            open_block(&out, 7, 3, BlockKind::Data).unwrap(),
            &payload[..]
        );
        assert!(matches!(
            open_block(&out, 7, 4, BlockKind::Data),
            Err(BlockError::Misplaced { .. })
        ));
        assert!(matches!(
            open_block(&out, 8, 3, BlockKind::Data),
            Err(BlockError::Misplaced { .. })
        ));
        assert!(matches!(
            open_block(&out, 7, 3, BlockKind::Index),
            Err(BlockError::Kind { .. })
        ));
        for i in (0..out.len()).step_by(97) {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            // Padding bytes are not covered; every other byte is.
            let in_padding = i >= payload.len() && i < out.len() - TRAILER_BYTES;
            assert_eq!(
                open_block(&bad, 7, 3, BlockKind::Data).is_err(),
                !in_padding,
                "flip at {i}"
            );
        }
        let zeroed = vec![0u8; out.len()];
        assert!(open_block(&zeroed, 7, 3, BlockKind::Data).is_err());
    }

    #[test]
    fn malformed_payloads_error_without_panicking() {
        let payload = build(&sample());
        for cut in 0..payload.len() {
            if let Ok(b) = DataBlock::parse(&payload[..cut]) {
                let mut c = b.cursor();
                while let Ok(Some(_)) = c.next() {}
                let _ = b.get(b"key00010");
            }
        }
        let mut junk = payload.clone();
        for i in (0..junk.len()).step_by(3) {
            junk[i] = 0xff;
        }
        if let Ok(b) = DataBlock::parse(&junk) {
            let _ = b.get(b"key00010");
        }
    }

    #[test]
    fn expiring_entries_round_trip_next_to_plain_ones_and_tombstones() {
        let mut b = DataBlockBuilder::default();
        let entries: Vec<(Vec<u8>, Option<Vec<u8>>, u64)> = (0..60u32)
            .map(|i| {
                let k = format!("k{i:04}").into_bytes();
                match i % 4 {
                    0 => (k, None, 0),
                    1 => (k, Some(format!("v{i}").into_bytes()), 0),
                    2 => (k, Some(Vec::new()), 1_700_000_000_000 + u64::from(i)),
                    _ => (k, Some(vec![i as u8; i as usize]), u64::MAX - u64::from(i)),
                }
            })
            .collect();
        for (k, v, e) in &entries {
            b.add_expiring(k, v.as_deref(), *e);
        }
        let mut payload = Vec::new();
        b.finish_into(&mut payload);
        let block = DataBlock::parse(&payload).unwrap();
        let mut c = block.cursor();
        for (k, v, e) in &entries {
            let (gk, gv, ge) = c.next().unwrap().unwrap();
            assert_eq!((gk, gv, ge), (k.as_slice(), v.as_deref(), *e));
            assert_eq!(block.get(k).unwrap(), Some((v.as_deref(), *e)));
        }
        assert!(c.next().unwrap().is_none());
    }

    #[test]
    fn an_expiring_tag_too_short_for_its_expiry_is_malformed() {
        for slot in 1..8u64 {
            let mut payload = Vec::new();
            put_varint(&mut payload, 0);
            put_varint(&mut payload, 1);
            put_varint(&mut payload, (slot << 1) | 1);
            payload.push(b'k');
            payload.extend(std::iter::repeat_n(0u8, slot as usize));
            payload.extend_from_slice(&0u32.to_le_bytes());
            payload.extend_from_slice(&1u32.to_le_bytes());
            let block = DataBlock::parse(&payload).unwrap();
            assert!(block.cursor().next().is_err(), "slot {slot}");
        }
    }

    #[test]
    fn random_bytes_with_expiring_tags_never_panic() {
        // Fuzz-style: seeded random payloads, biased towards odd tags.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (rnd() % 64) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            if len > 6 {
                p[2] |= 1;
            }
            if let Ok(b) = DataBlock::parse(&p) {
                let mut c = b.cursor();
                while let Ok(Some(_)) = c.next() {}
                let _ = b.get(b"k");
            }
        }
    }

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut pos = 0;
            assert_eq!(get_varint(&b, &mut pos).unwrap(), v);
            assert_eq!(pos, b.len());
        }
        assert!(get_varint(&[0x80; 11], &mut 0).is_err());
    }
}
