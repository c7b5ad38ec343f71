//! Expiry inside one shard: the EXPIRE read-modify-write, and the sweeper that
//! deletes expired keys so that they stop taking space.
//!
//! Readers already treat an expired value as absent (`state::read_cell`);
//! removal is only about space. It happens three ways: lazily (a read that
//! meets an expired key queues it, bounded, in `expired_seen`), actively (this
//! module's sweeper walks the shard's keys a bounded slice per tick), and in
//! compaction (which drops expired values, `lsm::compaction`).
//!
//! Atomicity: EXPIRE and the sweeper read a key and then write it, and the read
//! may wait for a block. Both hold the key's exclusive lock in `locks` from
//! before the read until the write is logged, so that no PUT, DELETE or
//! transaction on that key runs in between (single-key writes wait for a
//! locked key, `execute`). They also enter the backup write gate, as PUT does.
//!
//! It must never: delete a key that is not expired at the moment of the write
//! (the sweeper re-reads it under the lock), or write a key a transaction
//! holds (it takes the lock like a transaction does).

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::core::expiry::{is_expired, ExpireMode, NEVER};
use crate::core::status::Status;
use crate::io::Disk;
use crate::shard::locks::{LockSet, Mode};
use crate::shard::lsm::merge::Merge;
use crate::shard::ops::ReplyBatch;
use crate::shard::state::{read_failure, ShardState};
use crate::shard::wake::Event;

/// Keys the sweeper's walk examines per tick: bounded so that a tick never
/// holds the shard long (the walk reads through the block cache).
const SWEEP_WALK_KEYS: usize = 256;
/// Expired keys deleted per tick, at most.
const SWEEP_DELETES_MAX: usize = 256;

/// Releases a key lock on every path out.
struct KeyLock<'a> {
    locks: &'a crate::shard::locks::LockTable,
    set: LockSet,
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        self.locks.release(&self.set);
    }
}

impl<D: Disk> ShardState<D> {
    /// Take `key`'s exclusive lock, waiting until the lock timeout at most.
    async fn lock_key(&self, key: &[u8]) -> Option<KeyLock<'_>> {
        let mut set = LockSet::default();
        set.add(key, Mode::Exclusive);
        set.seal();
        let deadline = Instant::now() + self.lock_timeout;
        self.locks.acquire(&set, deadline).await.then_some(KeyLock {
            locks: &self.locks,
            set,
        })
    }

    /// EXPIRE (native opcode 12): value `mode u8 | expires_at u64 LE`. Reply
    /// `[1]` if applied, `[0]` if not (no such key, or the mode's condition
    /// is false). An expiry at or before now deletes the key, as in Redis.
    pub(super) async fn expire(&self, key: &[u8], arg: &[u8], out: &mut ReplyBatch) {
        let parsed = arg.split_first().and_then(|(m, at)| {
            let at: [u8; 8] = at.try_into().ok()?;
            Some((ExpireMode::from_u8(*m)?, u64::from_le_bytes(at)))
        });
        let Some((mode, new_at)) = parsed else {
            return out.push(Status::InvalidArgument, b"EXPIRE: bad mode or time", 0);
        };
        self.metrics.puts.set(self.metrics.puts.get() + 1);
        let Some(_lock) = self.lock_key(key).await else {
            return out.push(Status::LockTimeout, b"", 0);
        };
        let _gate = self.backup.enter_write().await;
        let now = self.now_ms();
        // Under the lock and the gate: nothing else writes this key until
        // our write is logged, whatever this read waits for.
        let current = self
            .read_raw(key, |v, e, _| match v {
                Some(v) if !is_expired(e, now) => Some((v.to_vec(), e)),
                _ => None,
            })
            .await;
        let (value, current_at) = match current {
            Ok(Some(c)) => c,
            Ok(None) => return out.push(Status::Ok, &[0], 0),
            Err(e) => return out.push(read_failure(&e), b"", 0),
        };
        let new_at = if mode == ExpireMode::Persist {
            NEVER
        } else {
            new_at
        };
        if !mode.applies(current_at, new_at) {
            return out.push(Status::Ok, &[0], 0);
        }
        let written = if new_at != NEVER && is_expired(new_at, now) {
            self.write(key, None)
        } else {
            self.write_expiring(key, Some(&value), new_at)
        };
        match written {
            Ok(lsn) => out.push(Status::Ok, &[1], lsn),
            Err(status) => self.push_write_error(status, out),
        }
    }

    /// Delete `key` if it is still expired now: under its lock and the
    /// backup gate, re-read, then a normal WAL DELETE. Returns whether it
    /// deleted. A locked key is left for a later tick.
    async fn sweep_key(&self, key: &[u8]) -> bool {
        if self.locks.is_blocked(key, true) {
            return false;
        }
        let Some(_lock) = self.lock_key(key).await else {
            return false;
        };
        let _gate = self.backup.enter_write().await;
        let now = self.now_ms();
        let expired = self
            .read_raw(key, |v, e, _| v.is_some() && is_expired(e, now))
            .await;
        if !matches!(expired, Ok(true)) {
            return false;
        }
        self.write(key, None).is_ok()
    }

    /// One sweeper tick: the keys reads queued, then a bounded slice of the
    /// walk from `cursor` (empty: the start), which it advances (back to
    /// empty at the end of the keys). Returns how many keys it deleted.
    pub async fn sweep_once(&self, cursor: &mut Vec<u8>) -> (u64, u64) {
        self.tick_clock();
        if self.write_refusal().is_some() {
            return (0, 0);
        }
        let queued: Vec<Vec<u8>> = std::mem::take(&mut *self.expired_seen.borrow_mut());
        let mut lazy = 0u64;
        for key in queued.iter().take(SWEEP_DELETES_MAX) {
            lazy += u64::from(self.sweep_key(key).await);
        }
        let now = self.now_ms();
        let mut found: Vec<Vec<u8>> = Vec::new();
        let walked = async {
            let sources = Merge::sources_of(&self.lsm, None, 0);
            let mut merge = Merge::new(&self.lsm, sources, cursor, b"").await?;
            let mut seen = 0;
            while seen < SWEEP_WALK_KEYS {
                let Some((key, value, _, at)) = merge.next(&self.lsm).await? else {
                    return Ok::<_, crate::io::table_file::TableError>(None);
                };
                seen += 1;
                if value.is_some() && is_expired(at, now) && found.len() < SWEEP_DELETES_MAX {
                    found.push(key.to_vec());
                }
            }
            Ok(Some(merge.resume_point()))
        }
        .await;
        match walked {
            Ok(Some(next)) => *cursor = next,
            Ok(None) | Err(_) => cursor.clear(),
        }
        let mut swept = 0u64;
        for key in &found {
            swept += u64::from(self.sweep_key(key).await);
        }
        self.metrics.note_expired(lazy, swept);
        (lazy, swept)
    }
}

/// The per-shard sweeper: a tick every `interval` until `stop` is set.
pub async fn run_expiry_sweeper<D: Disk>(
    state: Rc<ShardState<D>>,
    stop: Rc<Event>,
    interval: Duration,
) {
    let mut cursor = Vec::new();
    while !stop.is_set() {
        let tick = glommio::timer::sleep(interval);
        futures_lite::future::or(tick, stop.wait()).await;
        if stop.is_set() {
            return;
        }
        state.sweep_once(&mut cursor).await;
    }
}
