//! What a RESP connection keeps for MULTI and WATCH (the queue, the watched
//! keys' fingerprints) and the key overlay a queue is evaluated over
//! (multi.rs runs it, bits.rs and multi.rs's evaluator read and write it).
//!
//! Pure data: no I/O, and it must never import the modules that use it
//! (commands.rs holds these in its session; the imports point one way).

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_128;

/// Commands that run through multi.rs's evaluator even outside MULTI
/// (each is then a one-command transaction).
pub const EVALUATED: &[&str] = &[
    "setbit", "getbit", "bitcount", "bitpos", "bitop", "lcs", "object", "rename", "renamenx",
    "copy",
];

/// A MULTI's queue.
#[derive(Default)]
pub struct Queue {
    pub(super) cmds: Vec<Vec<Vec<u8>>>,
    pub(super) bytes: usize,
    /// A command was rejected while queuing: EXEC answers EXECABORT.
    pub(super) dirty: bool,
}

/// A watched key and what WATCH saw: absent, or the value's length and
/// 128-bit hash (not the value: a watched 16 MiB value costs 24 bytes).
pub struct Watched {
    pub(super) key: Vec<u8>,
    pub(super) seen: Option<(usize, u128)>,
}

pub(super) fn fingerprint(v: Option<&[u8]>) -> Option<(usize, u128)> {
    v.map(|v| (v.len(), xxh3_128(v)))
}

/// A key's value during evaluation, its expiry, and whether the queue
/// wrote it.
pub(super) struct Slot {
    pub(super) value: Option<Vec<u8>>,
    /// Unix ms; 0: never (and for an absent key).
    pub(super) expires_at: u64,
    pub(super) written: bool,
}

/// The keys of a queue over one snapshot, judged at one instant (`now_ms`,
/// read once per run, as Redis judges a whole EXEC at its start).
#[derive(Default)]
pub struct Overlay {
    pub(super) keys: HashMap<Vec<u8>, Slot>,
    pub(super) now_ms: u64,
}

impl Overlay {
    fn slot(&self, key: &[u8]) -> Option<&Slot> {
        let slot = self.keys.get(key);
        // Every key a command reads is in the snapshot (`read_keys`).
        debug_assert!(
            slot.is_some(),
            "a queued command read a key outside its read set"
        );
        slot
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.slot(key).and_then(|s| s.value.as_deref())
    }

    /// The key's expiry (0: none, or no key).
    pub(super) fn expiry(&self, key: &[u8]) -> u64 {
        self.slot(key)
            .filter(|s| s.value.is_some())
            .map_or(0, |s| s.expires_at)
    }

    /// A new value (or a delete) that expires at `expires_at` (0: never). A
    /// time already past deletes the key, as Redis does for SET EXAT and
    /// EXPIRE with a past time.
    pub(super) fn put_expiring(&mut self, key: &[u8], value: Option<Vec<u8>>, expires_at: u64) {
        let past = expires_at != 0 && expires_at <= self.now_ms;
        let slot = self.keys.entry(key.to_vec()).or_insert(Slot {
            value: None,
            expires_at: 0,
            written: false,
        });
        slot.value = if past { None } else { value };
        slot.expires_at = if slot.value.is_some() { expires_at } else { 0 };
        slot.written = true;
    }

    /// A new value (SET, GETSET, MSET, BITOP's destination) or a delete:
    /// any expiry is gone, as in Redis.
    pub(super) fn put(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        self.put_expiring(key, value, 0);
    }

    /// The value changed in place (APPEND, SETRANGE, INCR..., SETBIT): the
    /// expiry stays, as in Redis.
    pub(super) fn update(&mut self, key: &[u8], value: Vec<u8>) {
        let at = self.expiry(key);
        self.put_expiring(key, Some(value), at);
    }

    /// EXPIRE/PERSIST of a live key: same value, expiry `at` (0: none).
    pub(super) fn set_expiry(&mut self, key: &[u8], at: u64) {
        let value = self.get(key).map(<[u8]>::to_vec);
        self.put_expiring(key, value, at);
    }
}
