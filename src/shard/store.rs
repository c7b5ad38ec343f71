//! The shard's durable key-value state: an ordered in-memory map, rebuilt from the
//! WAL at startup.
//!
//! Only writes whose WAL batch is durable (or, in async mode, accepted) reach this
//! map, so anything read from it may be returned at once. This is the seam the
//! larger-than-memory storage replaces; it must stay this small.

use std::collections::BTreeMap;

#[derive(Default)]
pub struct Store {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    live_bytes: usize,
}

impl Store {
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        let (key_len, value_len) = (key.len(), value.len());
        match self.map.insert(key, value) {
            Some(old) => self.live_bytes = self.live_bytes - old.len() + value_len,
            None => self.live_bytes += key_len + value_len,
        }
    }

    pub fn delete(&mut self, key: &[u8]) -> bool {
        match self.map.remove_entry(key) {
            Some((k, v)) => {
                self.live_bytes -= k.len() + v.len();
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Key and value bytes held (not counting map overhead).
    pub fn live_bytes(&self) -> usize {
        self.live_bytes
    }

    /// Entries with `start <= key < end` (`end` empty: unbounded), in key order.
    pub fn range<'a>(
        &'a self,
        start: &[u8],
        end: &[u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.map
            .range::<Vec<u8>, _>(key_range(start, end))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }
}

/// The bounds of `start <= key < end`, where an empty `end` means unbounded (the
/// convention of SCAN).
pub fn key_range(start: &[u8], end: &[u8]) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
    use std::ops::Bound;
    let upper = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end.to_vec())
    };
    (Bound::Included(start.to_vec()), upper)
}
