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
    "setbit", "getbit", "bitcount", "bitpos", "bitop", "lcs", "object",
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

/// A key's value during evaluation, and whether the queue wrote it.
pub(super) struct Slot {
    pub(super) value: Option<Vec<u8>>,
    pub(super) written: bool,
}

/// The keys of a queue over one snapshot.
#[derive(Default)]
pub struct Overlay {
    pub(super) keys: HashMap<Vec<u8>, Slot>,
}

impl Overlay {
    pub(super) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let slot = self.keys.get(key);
        // Every key a command reads is in the snapshot (`read_keys`).
        debug_assert!(
            slot.is_some(),
            "a queued command read a key outside its read set"
        );
        slot.and_then(|s| s.value.as_deref())
    }

    pub(super) fn put(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        let slot = self.keys.entry(key.to_vec()).or_insert(Slot {
            value: None,
            written: false,
        });
        slot.value = value;
        slot.written = true;
    }
}
