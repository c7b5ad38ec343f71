//! One shard's block cache: a fixed byte budget of table blocks read with
//! O_DIRECT, replaced with S3-FIFO, with concurrent misses for the same block
//! coalesced into one read.
//!
//! Why S3-FIFO (Yang et al., SOSP 2023): most blocks a scan touches are read once;
//! a small probationary FIFO (10% of the budget) lets them leave quickly without
//! displacing the hot working set in the main FIFO, which is what makes it scan
//! resistant. A ghost queue of recently evicted keys lets a block that comes back
//! go straight to main. Hits only bump a 2-bit counter (no list moves), so a hit
//! costs one hash lookup; everything is single-threaded per shard, so no locks.
//!
//! It owns: the cached blocks and the bookkeeping. It must never: hold a block
//! whose checksum was not verified (callers insert only verified blocks), or
//! issue I/O itself (the caller's loader does).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::rc::Rc;

use crate::shard::wake::WaitQueue;

/// Identifies a block: which table file, and where in it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub table: u64,
    pub offset: u64,
}

/// Hashes a [`BlockKey`] with two multiply-xor rounds. The pool's maps are
/// looked up several times per block read; SipHash's flood resistance buys
/// nothing here (keys are table ids and offsets the shard made itself) and
/// cost about 5 % of a cached scan's CPU.
#[derive(Default, Clone, Copy)]
pub struct BlockKeyHasher(u64);

impl std::hash::Hasher for BlockKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }

    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^ (h >> 31)
    }
}

type KeyHash = std::hash::BuildHasherDefault<BlockKeyHasher>;

#[derive(Default, Debug, Clone, Copy)]
pub struct PoolStats {
    pub hits: u64,
    pub misses: u64,
    /// Misses that waited for another request's read of the same block.
    pub coalesced: u64,
    /// First uses of blocks read ahead (their read counted as a miss).
    pub prefetch_used: u64,
    pub evictions: u64,
    pub inserted_bytes: u64,
    pub resident_bytes: u64,
    pub resident_blocks: u64,
}

struct Entry<B> {
    block: Rc<B>,
    bytes: usize,
    /// 0..=3 accesses since insertion or last demotion.
    freq: u8,
    in_main: bool,
    /// Read ahead of its use and not used yet: the first use is the access
    /// that caused the read, not a second one, so it must not bump `freq`
    /// (else every block a scan reads would be promoted to main, and the cache
    /// would lose its scan resistance).
    prefetched: bool,
}

struct Inner<B> {
    capacity: usize,
    small_capacity: usize,
    map: HashMap<BlockKey, Entry<B>, KeyHash>,
    small: VecDeque<BlockKey>,
    main: VecDeque<BlockKey>,
    small_bytes: usize,
    main_bytes: usize,
    ghost: VecDeque<BlockKey>,
    ghost_set: HashSet<BlockKey, KeyHash>,
    loading: HashSet<BlockKey, KeyHash>,
    stats: PoolStats,
}

pub struct BufferPool<B> {
    inner: RefCell<Inner<B>>,
    loaded: WaitQueue,
    /// Blocks larger than this bypass the cache (a 16 MiB value would flush it).
    max_block_bytes: Cell<usize>,
}

impl<B> BufferPool<B> {
    pub fn new(capacity_bytes: usize) -> BufferPool<B> {
        BufferPool {
            inner: RefCell::new(Inner {
                capacity: capacity_bytes,
                small_capacity: capacity_bytes / 10,
                map: HashMap::default(),
                small: VecDeque::new(),
                main: VecDeque::new(),
                small_bytes: 0,
                main_bytes: 0,
                ghost: VecDeque::new(),
                ghost_set: HashSet::default(),
                loading: HashSet::default(),
                stats: PoolStats::default(),
            }),
            loaded: WaitQueue::default(),
            max_block_bytes: Cell::new((capacity_bytes / 8).max(4096)),
        }
    }

    /// Whether a block of `bytes` would be kept (larger ones bypass the cache).
    pub fn would_keep(&self, bytes: usize) -> bool {
        bytes <= self.max_block_bytes.get()
    }

    pub fn stats(&self) -> PoolStats {
        let inner = self.inner.borrow();
        let mut s = inner.stats;
        s.resident_bytes = (inner.small_bytes + inner.main_bytes) as u64;
        s.resident_blocks = inner.map.len() as u64;
        s
    }

    /// A cached block, counting a hit.
    pub fn get(&self, key: BlockKey) -> Option<Rc<B>> {
        let mut inner = self.inner.borrow_mut();
        let (block, first_use) = match inner.map.get_mut(&key) {
            None => return None,
            Some(e) if e.prefetched => {
                e.prefetched = false;
                (e.block.clone(), true)
            }
            Some(e) => {
                e.freq = (e.freq + 1).min(3);
                (e.block.clone(), false)
            }
        };
        if first_use {
            inner.stats.prefetch_used += 1;
        } else {
            inner.stats.hits += 1;
        }
        Some(block)
    }

    /// The block for `key`: from the cache, or from `load` (run at most once at a
    /// time per key: concurrent callers wait for the first one's result; if it
    /// fails, each waiter retries with its own loader).
    pub async fn get_or_load<E, F, Fut>(
        &self,
        key: BlockKey,
        bytes: usize,
        load: F,
    ) -> Result<Rc<B>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<B, E>>,
    {
        // Wait while another task loads this block; leave the loop holding
        // the load ourselves (or with the block).
        loop {
            if let Some(b) = self.get(key) {
                return Ok(b);
            }
            let must_wait = {
                let mut inner = self.inner.borrow_mut();
                if inner.loading.contains(&key) {
                    inner.stats.coalesced += 1;
                    true
                } else {
                    inner.loading.insert(key);
                    inner.stats.misses += 1;
                    false
                }
            };
            if !must_wait {
                break;
            }
            self.loaded
                .until(|| (!self.inner.borrow().loading.contains(&key)).then_some(()))
                .await;
        }
        let result = load().await;
        let out = match result {
            Ok(block) => {
                let block = Rc::new(block);
                self.insert_entry(key, block.clone(), bytes, false);
                Ok(block)
            }
            Err(e) => Err(e),
        };
        self.inner.borrow_mut().loading.remove(&key);
        self.loaded.wake_all();
        out
    }

    /// Claim the loading of `key` for a caller that reads many blocks with one
    /// request: false if the block is cached or already being loaded (nothing
    /// to do), true if the caller must now [`Self::finish_load`] it. Counts a
    /// miss when claimed.
    pub fn claim_load(&self, key: BlockKey) -> bool {
        let mut inner = self.inner.borrow_mut();
        if inner.map.contains_key(&key) || inner.loading.contains(&key) {
            return false;
        }
        inner.loading.insert(key);
        inner.stats.misses += 1;
        true
    }

    /// End a load claimed with [`Self::claim_load`]: cache the block if it was
    /// read and verified, and let waiters for it go on (after a failure each
    /// retries with its own read, which reports the error).
    pub fn finish_load(&self, key: BlockKey, block: Option<(Rc<B>, usize)>) {
        if let Some((block, bytes)) = block {
            self.insert_entry(key, block, bytes, true);
        }
        self.inner.borrow_mut().loading.remove(&key);
        self.loaded.wake_all();
    }

    /// Insert a verified block.
    pub fn insert(&self, key: BlockKey, block: Rc<B>, bytes: usize) {
        self.insert_entry(key, block, bytes, false)
    }

    fn insert_entry(&self, key: BlockKey, block: Rc<B>, bytes: usize, prefetched: bool) {
        if bytes > self.max_block_bytes.get() {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        if inner.map.contains_key(&key) {
            return;
        }
        inner.stats.inserted_bytes += bytes as u64;
        let to_main = inner.ghost_set.remove(&key);
        inner.map.insert(
            key,
            Entry {
                block,
                bytes,
                freq: 0,
                in_main: to_main,
                prefetched,
            },
        );
        if to_main {
            inner.main.push_back(key);
            inner.main_bytes += bytes;
        } else {
            inner.small.push_back(key);
            inner.small_bytes += bytes;
        }
        inner.evict_to_fit();
    }

    /// Forget every block of `table` (its file was deleted by compaction).
    pub fn drop_table(&self, table: u64) {
        let mut inner = self.inner.borrow_mut();
        let keys: Vec<BlockKey> = inner
            .map
            .keys()
            .filter(|k| k.table == table)
            .copied()
            .collect();
        for k in keys {
            if let Some(e) = inner.map.remove(&k) {
                if e.in_main {
                    inner.main_bytes -= e.bytes;
                } else {
                    inner.small_bytes -= e.bytes;
                }
            }
        }
        // Queue entries without a map entry are skipped lazily by eviction.
        inner.small.retain(|k| k.table != table);
        inner.main.retain(|k| k.table != table);
    }
}

impl<B> Inner<B> {
    fn evict_to_fit(&mut self) {
        while self.small_bytes + self.main_bytes > self.capacity {
            if self.small_bytes > self.small_capacity || self.main.is_empty() {
                self.evict_small();
            } else {
                self.evict_main();
            }
        }
    }

    fn evict_small(&mut self) {
        let Some(key) = self.small.pop_front() else {
            return self.evict_main();
        };
        let Some(e) = self.map.get_mut(&key) else {
            return;
        };
        self.small_bytes -= e.bytes;
        if e.freq > 0 {
            // Touched while on probation: it belongs to the working set.
            e.freq = 0;
            e.in_main = true;
            self.main_bytes += e.bytes;
            self.main.push_back(key);
        } else {
            self.map.remove(&key);
            self.stats.evictions += 1;
            self.ghost.push_back(key);
            self.ghost_set.insert(key);
            // The ghost remembers about as many keys as main holds blocks.
            while self.ghost.len() > self.main.len().max(64) {
                if let Some(old) = self.ghost.pop_front() {
                    self.ghost_set.remove(&old);
                }
            }
        }
    }

    fn evict_main(&mut self) {
        // Bounded: every pass lowers some freq, so a victim appears within 4 rounds.
        while let Some(key) = self.main.pop_front() {
            let Some(e) = self.map.get_mut(&key) else {
                continue;
            };
            if e.freq > 0 {
                e.freq -= 1;
                self.main.push_back(key);
                continue;
            }
            self.main_bytes -= e.bytes;
            self.map.remove(&key);
            self.stats.evictions += 1;
            return;
        }
        if self.main.is_empty() && !self.small.is_empty() {
            self.evict_small();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> BlockKey {
        BlockKey {
            table: 1,
            offset: i * 4096,
        }
    }

    #[test]
    fn stays_within_budget() {
        let pool: BufferPool<u64> = BufferPool::new(100 * 4096);
        for i in 0..10_000 {
            pool.insert(key(i % 977), Rc::new(i), 4096);
            assert!(pool.stats().resident_bytes <= 100 * 4096);
        }
    }

    #[test]
    fn a_scan_does_not_flush_the_hot_set() {
        let pool: BufferPool<u64> = BufferPool::new(100 * 4096);
        // A hot set of 50 blocks, each read a few times.
        for _ in 0..4 {
            for i in 0..50 {
                if pool.get(key(i)).is_none() {
                    pool.insert(key(i), Rc::new(i), 4096);
                }
            }
        }
        // A scan of 10,000 blocks, each read once.
        for i in 1_000..11_000 {
            if pool.get(key(i)).is_none() {
                pool.insert(key(i), Rc::new(i), 4096);
            }
        }
        let survivors = (0..50).filter(|i| pool.get(key(*i)).is_some()).count();
        assert!(
            survivors >= 45,
            "only {survivors}/50 hot blocks survived a scan"
        );
    }

    /// The same as above with the scan's blocks read ahead and then used once
    /// each: the use that caused the read must not count as a second access
    /// (it used to, and every scanned block went to main).
    #[test]
    fn a_read_ahead_scan_does_not_flush_the_hot_set() {
        let pool: BufferPool<u64> = BufferPool::new(100 * 4096);
        for _ in 0..4 {
            for i in 0..50 {
                if pool.get(key(i)).is_none() {
                    pool.insert(key(i), Rc::new(i), 4096);
                }
            }
        }
        for run in (1_000..11_000).step_by(16) {
            for i in run..run + 16 {
                if pool.claim_load(key(i)) {
                    pool.finish_load(key(i), Some((Rc::new(i), 4096)));
                }
            }
            for i in run..run + 16 {
                assert!(pool.get(key(i)).is_some(), "block {i} read ahead is cached");
            }
        }
        let survivors = (0..50).filter(|i| pool.get(key(*i)).is_some()).count();
        assert!(
            survivors >= 45,
            "only {survivors}/50 hot blocks survived a read-ahead scan"
        );
        let s = pool.stats();
        assert_eq!((s.misses, s.prefetch_used), (10_000, 10_000));
    }

    #[test]
    fn a_claimed_load_is_not_claimed_twice_and_a_failed_one_is_released() {
        let pool: BufferPool<u64> = BufferPool::new(100 * 4096);
        assert!(pool.claim_load(key(1)));
        assert!(!pool.claim_load(key(1)), "already loading");
        pool.finish_load(key(1), None);
        assert!(pool.get(key(1)).is_none());
        assert!(pool.claim_load(key(1)), "a failed load can be tried again");
        pool.finish_load(key(1), Some((Rc::new(1), 4096)));
        assert!(!pool.claim_load(key(1)), "cached");
    }

    #[test]
    fn lru_like_reuse_hits() {
        let pool: BufferPool<u64> = BufferPool::new(10 * 4096);
        for round in 0..3 {
            for i in 0..8 {
                if pool.get(key(i)).is_none() {
                    assert_eq!(round, 0, "block {i} evicted though the set fits");
                    pool.insert(key(i), Rc::new(i), 4096);
                }
            }
        }
    }

    #[test]
    fn concurrent_misses_read_once() {
        let ex = glommio::LocalExecutor::default();
        ex.run(async {
            let pool: Rc<BufferPool<u64>> = Rc::new(BufferPool::new(1 << 20));
            let reads = Rc::new(Cell::new(0));
            let mut tasks = Vec::new();
            for _ in 0..10 {
                let (pool, reads) = (pool.clone(), reads.clone());
                tasks.push(glommio::spawn_local(async move {
                    pool.get_or_load(key(7), 4096, || async {
                        reads.set(reads.get() + 1);
                        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                        Ok::<u64, ()>(42)
                    })
                    .await
                }));
            }
            for t in tasks {
                assert_eq!(*t.await.unwrap(), 42);
            }
            assert_eq!(reads.get(), 1);
            assert_eq!(pool.stats().coalesced, 9);
        });
    }

    #[test]
    fn failed_load_lets_the_next_caller_retry() {
        let ex = glommio::LocalExecutor::default();
        ex.run(async {
            let pool: BufferPool<u64> = BufferPool::new(1 << 20);
            let r = pool
                .get_or_load(key(1), 4096, || async { Err::<u64, &str>("EIO") })
                .await;
            assert!(r.is_err());
            let r = pool
                .get_or_load(key(1), 4096, || async { Ok::<u64, &str>(5) })
                .await;
            assert_eq!(*r.unwrap(), 5);
        });
    }
}
