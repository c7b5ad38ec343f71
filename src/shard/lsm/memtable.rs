//! The shard's in-memory write buffer: an ordered map of the newest durable
//! version of each recently written key, tombstones included, until it is frozen
//! and flushed into a sorted table.
//!
//! Single-threaded (one shard owns it), so a plain `BTreeMap` is the right
//! structure: no concurrent skiplist is needed. It must never hold a write that
//! is not yet durable (those live in `pending` in sync mode).
//!
//! Each value carries its expiry (unix ms, 0: never) as it was written; the
//! memtable never judges expiry itself (readers do, with their batch's "now"),
//! so a flush writes exactly what was logged.

use std::collections::BTreeMap;

/// What the memtable knows about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A value and its expiry (0: never).
    Value(&'a [u8], u64),
    Deleted,
    /// Not in this memtable: look in older data.
    Absent,
}

/// One key's newest durable write: `value` `None` is a tombstone (whose
/// `expires_at` is always 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub value: Option<Vec<u8>>,
    pub expires_at: u64,
}

/// A copied entry: key, value (`None`: tombstone), expiry.
pub type OwnedEntry = (Vec<u8>, Option<Vec<u8>>, u64);

#[derive(Default)]
pub struct Memtable {
    map: BTreeMap<Vec<u8>, Slot>,
    /// Key and value bytes held, plus a per-entry overhead estimate.
    bytes: usize,
    max_lsn: u64,
}

/// Rough per-entry cost of the map node and the two vectors.
const ENTRY_OVERHEAD_BYTES: usize = 64;

impl Memtable {
    pub fn get(&self, key: &[u8]) -> Lookup<'_> {
        match self.map.get(key) {
            Some(Slot {
                value: Some(v),
                expires_at,
            }) => Lookup::Value(v, *expires_at),
            Some(Slot { value: None, .. }) => Lookup::Deleted,
            None => Lookup::Absent,
        }
    }

    /// Record a durable write (`None` deletes) with its LSN.
    pub fn apply(&mut self, key: Vec<u8>, value: Option<Vec<u8>>, lsn: u64) {
        self.apply_expiring(key, value, 0, lsn)
    }

    /// Record a durable write (`None` deletes) with its expiry (0: never) and
    /// its LSN.
    pub fn apply_expiring(
        &mut self,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        expires_at: u64,
        lsn: u64,
    ) {
        let expires_at = if value.is_some() { expires_at } else { 0 };
        // Writes to one key arrive in LSN order, but a transaction's writes are
        // applied after its record is durable, possibly after later records of
        // other keys: the WAL floor (see `Lsm::set_wal_floor`) keeps such
        // records replayable until they are applied.
        self.max_lsn = self.max_lsn.max(lsn);
        let add = key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD_BYTES;
        let key_len = key.len();
        if let Some(old) = self.map.insert(key, Slot { value, expires_at }) {
            self.bytes -= key_len + old.value.map_or(0, |v| v.len()) + ENTRY_OVERHEAD_BYTES;
        }
        self.bytes += add;
    }

    /// Copy up to `max` entries with key > `after` (or >= `start` when `after` is
    /// `None`) and key < `end` (`end` empty: no bound) into `out`, in order.
    /// Returns false when the range is exhausted.
    pub fn copy_range(
        &self,
        after: Option<&[u8]>,
        start: &[u8],
        end: &[u8],
        max: usize,
        out: &mut std::collections::VecDeque<OwnedEntry>,
    ) -> bool {
        use std::ops::Bound;
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Included(start),
        };
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        if let (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u)) = (lower, upper) {
            if l >= u {
                return false;
            }
        }
        for (n, (k, v)) in self.map.range::<[u8], _>((lower, upper)).enumerate() {
            if n == max {
                return true;
            }
            out.push_back((k.clone(), v.value.clone(), v.expires_at));
        }
        false
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Highest LSN applied: once this memtable is in a table, the WAL up to here
    /// is no longer needed.
    pub fn max_lsn(&self) -> u64 {
        self.max_lsn
    }

    /// A record with no writes here (a transaction part that only checked
    /// conditions) took effect at `lsn`: once this memtable is in a table, the
    /// WAL up to here is as covered as if it had written something.
    pub fn note_lsn(&mut self, lsn: u64) {
        self.max_lsn = self.max_lsn.max(lsn);
    }

    /// Entries in key order, tombstones as `None`, with their expiries.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>, u64)> {
        self.map
            .iter()
            .map(|(k, v)| (k.as_slice(), v.value.as_deref(), v.expires_at))
    }

    /// Entries with `start <= key < end` (`end` empty: no upper bound), in order.
    pub fn range<'a>(
        &'a self,
        start: &[u8],
        end: &[u8],
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> {
        self.map
            .range::<Vec<u8>, _>(key_range(start, end))
            .map(|(k, v)| (k.as_slice(), v.value.as_deref()))
    }
}

/// The bounds of `start <= key < end`, where an empty `end` means unbounded (the
/// convention of SCAN).
fn key_range(start: &[u8], end: &[u8]) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
    use std::ops::Bound;
    let upper = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end.to_vec())
    };
    (Bound::Included(start.to_vec()), upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_shadow_and_sizes_track() {
        let mut m = Memtable::default();
        m.apply(b"a".to_vec(), Some(b"1".to_vec()), 1);
        m.apply(b"b".to_vec(), Some(b"22".to_vec()), 2);
        assert_eq!(m.get(b"a"), Lookup::Value(b"1", 0));
        m.apply_expiring(b"e".to_vec(), Some(b"x".to_vec()), 77, 3);
        assert_eq!(m.get(b"e"), Lookup::Value(b"x", 77));
        m.apply_expiring(b"e".to_vec(), None, 77, 3);
        assert_eq!(m.get(b"e"), Lookup::Deleted);
        m.apply(b"a".to_vec(), None, 3);
        assert_eq!(m.get(b"a"), Lookup::Deleted);
        assert_eq!(m.get(b"c"), Lookup::Absent);
        assert_eq!(
            m.bytes(),
            1 + ENTRY_OVERHEAD_BYTES + 1 + 2 + ENTRY_OVERHEAD_BYTES + 1 + ENTRY_OVERHEAD_BYTES
        );
        assert_eq!(m.max_lsn(), 3);
        let all: Vec<_> = m.iter().collect();
        assert_eq!(
            all,
            vec![
                (&b"a"[..], None, 0),
                (&b"b"[..], Some(&b"22"[..]), 0),
                (&b"e"[..], None, 0)
            ]
        );
        let r: Vec<_> = m.range(b"b", b"").map(|(k, _)| k.to_vec()).collect();
        assert_eq!(r, vec![b"b".to_vec(), b"e".to_vec()]);
        let r: Vec<_> = m.range(b"a", b"b").map(|(k, _)| k.to_vec()).collect();
        assert_eq!(r, vec![b"a".to_vec()]);
    }
}
