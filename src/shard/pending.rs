//! Writes that are in the WAL's open or in-flight batch but not yet durable
//! (sync durability only).
//!
//! Reads consult this overlay first so that a pipelined GET sees the PUT before it;
//! such a read's reply is held until the write is durable. When a batch becomes
//! durable its writes move into the store; when the WAL fails they are dropped,
//! so a value that never became durable is never returned.

use std::collections::HashMap;

pub struct PendingWrite {
    pub lsn: u64,
    /// `None` is a delete.
    pub value: Option<Vec<u8>>,
    /// Unix ms (0: never; always 0 for a delete).
    pub expires_at: u64,
}

#[derive(Default)]
pub struct Pending {
    map: HashMap<Vec<u8>, PendingWrite>,
    bytes: usize,
}

impl Pending {
    pub fn get(&self, key: &[u8]) -> Option<&PendingWrite> {
        self.map.get(key)
    }

    pub fn insert(&mut self, key: &[u8], lsn: u64, value: Option<&[u8]>) {
        self.insert_expiring(key, lsn, value, 0)
    }

    /// Like `insert`, with the value's expiry (0: never).
    pub fn insert_expiring(&mut self, key: &[u8], lsn: u64, value: Option<&[u8]>, expires_at: u64) {
        let expires_at = if value.is_some() { expires_at } else { 0 };
        let new_len = value.map_or(0, <[u8]>::len);
        match self.map.get_mut(key) {
            Some(entry) => {
                debug_assert!(entry.lsn < lsn, "pending LSNs must grow");
                self.bytes -= entry.value.as_ref().map_or(0, Vec::len);
                entry.lsn = lsn;
                entry.expires_at = expires_at;
                match (&mut entry.value, value) {
                    (Some(old), Some(v)) => {
                        old.clear();
                        old.extend_from_slice(v);
                    }
                    (slot, v) => *slot = v.map(<[u8]>::to_vec),
                }
            }
            None => {
                self.bytes += key.len();
                self.map.insert(
                    key.to_vec(),
                    PendingWrite {
                        lsn,
                        value: value.map(<[u8]>::to_vec),
                        expires_at,
                    },
                );
            }
        }
        self.bytes += new_len;
    }

    /// The write of `key` at `lsn` became durable: hand its key and value over if it
    /// is still the latest pending write of that key (key, value, expiry).
    pub fn take_if_latest(
        &mut self,
        key: &[u8],
        lsn: u64,
    ) -> Option<(Vec<u8>, Option<Vec<u8>>, u64)> {
        match self.map.get(key) {
            Some(entry) if entry.lsn == lsn => {
                let (k, w) = self.map.remove_entry(key)?;
                self.bytes -= k.len() + w.value.as_ref().map_or(0, Vec::len);
                Some((k, w.value, w.expires_at))
            }
            _ => None,
        }
    }

    /// Pending writes with `start <= key < end` (`end` empty: unbounded), sorted
    /// by key. Pending writes are few (only those awaiting their fdatasync), so a
    /// filtered sort is cheap.
    pub fn range_sorted<'a>(
        &'a self,
        start: &[u8],
        end: &[u8],
        out: &mut Vec<(&'a [u8], &'a PendingWrite)>,
    ) {
        out.clear();
        out.extend(
            self.map
                .iter()
                .filter(|(k, _)| k.as_slice() >= start && (end.is_empty() || k.as_slice() < end))
                .map(|(k, w)| (k.as_slice(), w)),
        );
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Key and value bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_wins_and_hands_over_once() {
        let mut p = Pending::default();
        p.insert(b"k", 1, Some(b"a"));
        p.insert(b"k", 2, Some(b"bb"));
        assert_eq!(p.get(b"k").unwrap().lsn, 2);
        assert!(
            p.take_if_latest(b"k", 1).is_none(),
            "superseded write must not be handed over"
        );
        let (k, v, _) = p.take_if_latest(b"k", 2).unwrap();
        assert_eq!((k.as_slice(), v.as_deref()), (&b"k"[..], Some(&b"bb"[..])));
        assert!(p.is_empty());
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn delete_then_put() {
        let mut p = Pending::default();
        p.insert(b"k", 1, None);
        p.insert(b"k", 2, Some(b"v"));
        assert_eq!(p.bytes(), 2);
        assert_eq!(p.get(b"k").unwrap().value.as_deref(), Some(&b"v"[..]));
    }
}
