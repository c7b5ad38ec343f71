//! Key locks of one shard, held by transactions and snapshot reads between
//! their phases.
//!
//! Locks are taken per shard, all of a request's keys on that shard at once or
//! none (one synchronous check, since a shard is single-threaded), and shards are
//! visited in ascending order by the coordinator. A request waiting here
//! therefore holds nothing on this shard and only locks on lower shards, so a
//! wait-for cycle would need a strictly increasing cycle of shard numbers:
//! there is none, and no deadlock. Every wait has a deadline anyway, because
//! a coordinator whose WAL failed may leave locks held until restart.
//!
//! Keys are identified by their 64-bit hash, so the table never allocates per
//! key; a collision only makes two unrelated keys wait for each other.
//!
//! It must never: grant a lock to one request while another holds an
//! incompatible one on the same key, or be consulted on the single-key fast path
//! when no lock is held (callers check [`LockTable::is_empty`] first).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use futures_lite::future;

use crate::shard::wake::WaitQueue;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Readers: snapshot reads and condition-only keys.
    Shared,
    /// Writers: keys a transaction writes.
    Exclusive,
}

/// The locks one request needs on one shard: sorted by hash, one entry per
/// hash, exclusive where any use of the key writes it.
#[derive(Default, Debug, Clone)]
pub struct LockSet {
    entries: Vec<(u64, Mode)>,
}

pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, 0x6c6f_636b)
}

impl LockSet {
    pub fn add(&mut self, key: &[u8], mode: Mode) {
        self.entries.push((key_hash(key), mode));
    }

    /// Sort and merge duplicates; call once after the last `add`.
    pub fn seal(&mut self) {
        // Exclusive sorts after Shared, so the last entry of a run is the strongest.
        self.entries.sort_unstable();
        self.entries.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                earlier.1 = earlier.1.max(later.1);
                true
            } else {
                false
            }
        });
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[derive(Debug)]
struct Held {
    exclusive: bool,
    holders: u32,
    /// Held for good by an in-doubt transaction (see [`LockTable::poison`]).
    poisoned: bool,
}

#[derive(Default)]
pub struct LockTable {
    held: RefCell<HashMap<u64, Held>>,
    released: WaitQueue,
}

impl LockTable {
    pub fn is_empty(&self) -> bool {
        self.held.borrow().is_empty()
    }

    pub fn len(&self) -> usize {
        self.held.borrow().len()
    }

    fn try_grant(&self, set: &LockSet) -> bool {
        let mut held = self.held.borrow_mut();
        let free = set.entries.iter().all(|(h, mode)| match held.get(h) {
            None => true,
            Some(l) => *mode == Mode::Shared && !l.exclusive,
        });
        if !free {
            return false;
        }
        for (h, mode) in &set.entries {
            let l = held.entry(*h).or_insert(Held {
                exclusive: *mode == Mode::Exclusive,
                holders: 0,
                poisoned: false,
            });
            l.holders += 1;
            debug_assert!(!l.exclusive || l.holders == 1, "two exclusive holders");
        }
        true
    }

    /// Take every lock of `set` if all are free now.
    pub fn grant_now(&self, set: &LockSet) -> bool {
        self.try_grant(set)
    }

    /// Take every lock of `set` at once, waiting until `deadline` at most.
    /// Returns false (holding nothing) if the deadline passed first.
    pub async fn acquire(&self, set: &LockSet, deadline: Instant) -> bool {
        if self.try_grant(set) {
            return true;
        }
        let granted = async {
            self.released
                .until(|| self.try_grant(set).then_some(()))
                .await;
            true
        };
        let expired = async {
            glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
            false
        };
        // `or` polls `granted` first, so a grant made in the same wake-up wins.
        future::or(granted, expired).await
    }

    pub fn release(&self, set: &LockSet) {
        {
            let mut held = self.held.borrow_mut();
            for (h, mode) in &set.entries {
                let Some(l) = held.get_mut(h) else {
                    panic!("released a lock that is not held");
                };
                assert!(
                    l.poisoned || l.exclusive == (*mode == Mode::Exclusive),
                    "lock mode mismatch"
                );
                l.holders -= 1;
                if l.holders == 0 {
                    held.remove(h);
                }
            }
        }
        self.released.wake_all();
    }

    /// Whether a single-key operation on `key` must wait: any lock blocks a
    /// write, an exclusive one blocks a read.
    fn blocks(&self, hash: u64, write: bool) -> bool {
        match self.held.borrow().get(&hash) {
            None => false,
            Some(l) => write || l.exclusive,
        }
    }

    /// Lock every key of `set` exclusively for as long as the process runs,
    /// whoever holds it now (their releases still balance). For the keys of a
    /// transaction whose outcome a failed WAL left in doubt.
    pub fn poison(&self, set: &LockSet) {
        let mut held = self.held.borrow_mut();
        for (h, _) in &set.entries {
            let l = held.entry(*h).or_insert(Held {
                exclusive: true,
                holders: 0,
                poisoned: true,
            });
            l.exclusive = true;
            l.poisoned = true;
            l.holders += 1;
        }
    }

    /// Whether a single-key operation on `key` would have to wait now.
    pub fn is_blocked(&self, key: &[u8], write: bool) -> bool {
        !self.is_empty() && self.blocks(key_hash(key), write)
    }

    /// Wait until a single-key operation on `key` may run; false if `deadline`
    /// passed first. Takes no lock: the caller runs without awaiting before its
    /// operation takes effect (a write is logged synchronously).
    pub async fn wait_unlocked(&self, key: &[u8], write: bool, deadline: Instant) -> bool {
        let hash = key_hash(key);
        if !self.blocks(hash, write) {
            return true;
        }
        let free = async {
            self.released
                .until(|| (!self.blocks(hash, write)).then_some(()))
                .await;
            true
        };
        let expired = async {
            glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
            false
        };
        future::or(free, expired).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: &[(&[u8], Mode)]) -> LockSet {
        let mut s = LockSet::default();
        for (k, m) in keys {
            s.add(k, *m);
        }
        s.seal();
        s
    }

    #[test]
    fn seal_keeps_the_strongest_mode() {
        let s = set(&[
            (b"a", Mode::Shared),
            (b"a", Mode::Exclusive),
            (b"a", Mode::Shared),
        ]);
        assert_eq!(s.entries, vec![(key_hash(b"a"), Mode::Exclusive)]);
    }

    #[test]
    fn compatibility() {
        let t = LockTable::default();
        let sa = set(&[(b"a", Mode::Shared)]);
        let xa = set(&[(b"a", Mode::Exclusive)]);
        let xab = set(&[(b"a", Mode::Exclusive), (b"b", Mode::Exclusive)]);
        assert!(t.try_grant(&sa));
        assert!(t.try_grant(&sa), "shared locks share");
        assert!(!t.try_grant(&xa));
        assert!(!t.try_grant(&xab), "all or nothing");
        assert!(!t.blocks(key_hash(b"b"), true), "b was not taken");
        assert!(t.blocks(key_hash(b"a"), true));
        assert!(!t.blocks(key_hash(b"a"), false), "reads pass shared locks");
        t.release(&sa);
        t.release(&sa);
        assert!(t.is_empty());
        assert!(t.try_grant(&xab));
        assert!(!t.try_grant(&sa));
        assert!(t.blocks(key_hash(b"a"), false));
        t.release(&xab);
        assert!(t.is_empty());
    }

    #[test]
    fn waiters_get_the_lock_or_time_out() {
        glommio::LocalExecutor::default().run(async {
            let t = std::rc::Rc::new(LockTable::default());
            let xa = set(&[(b"a", Mode::Exclusive)]);
            assert!(t.try_grant(&xa));
            let soon = Instant::now() + std::time::Duration::from_millis(20);
            assert!(!t.acquire(&xa, soon).await, "times out while held");
            assert!(!t.wait_unlocked(b"a", false, soon).await);
            let t2 = t.clone();
            let xa2 = xa.clone();
            let releaser = glommio::spawn_local(async move {
                glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                t2.release(&xa2);
            });
            let later = Instant::now() + std::time::Duration::from_secs(5);
            assert!(t.acquire(&xa, later).await, "granted once released");
            releaser.await;
            t.release(&xa);
            assert!(t.is_empty());
        });
    }
}
