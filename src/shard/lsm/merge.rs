//! Ordered iteration over a shard's layers (not-yet-durable writes, memtables,
//! level-0 tables, the level-1 run) merged into one stream, newest version of
//! each key first. Used by scans and by compaction.
//!
//! Memory is bounded: a memtable is copied out in small chunks, a table run
//! holds one block at a time (from the block cache), and the merged entry is
//! copied into buffers the iterator reuses. Table blocks load across awaits, so
//! sources hold `Rc`s to what they read (a frozen memtable, a version's tables)
//! and stay valid while flushes and compactions publish new versions.
//!
//! It must never: return an older version of a key when a newer layer has one,
//! or skip a key because the layer holding it was replaced mid-iteration.

use std::collections::VecDeque;
use std::rc::Rc;

use crate::core::block_format::{decode_next, BlockError, DataBlock};
use crate::io::table_file::TableError;
use crate::io::Disk;

use crate::shard::lsm::{Lsm, SharedMem, Table};
use crate::shard::wake::{join_all, Boxed};

/// Memtable entries copied per refill.
const MEM_CHUNK: usize = 16;

type Owned = crate::shard::lsm::memtable::OwnedEntry;

/// Not-yet-durable writes in key order, each with the LSN a reply must wait
/// for and its expiry: (key, value, lsn, expires_at).
pub type Overlay = VecDeque<(Vec<u8>, Option<Vec<u8>>, u64, u64)>;

/// A run of non-overlapping tables in key order (one level-0 table, or level 1),
/// read one block at a time.
pub struct TableRun<D: Disk> {
    tables: Vec<Rc<Table<D>>>,
    t: usize,
    block_i: usize,
    block: Option<Rc<Vec<u8>>>,
    entries_len: usize,
    pos: usize,
    key: Vec<u8>,
    value: Option<(usize, usize)>,
    expires_at: u64,
    valid: bool,
    /// Read through the block cache (false for compaction, whose reads are
    /// one-off and would only push the working set out).
    cached: bool,
    /// Blocks loaded one after another by this run: the read-ahead window
    /// doubles with it (up to READ_AHEAD_MAX), so a short scan reads one block
    /// and a long one keeps several reads in flight.
    sequential: u32,
    /// Entries of this run the caller expects to consume after a seek (0:
    /// unknown). A seek reads the blocks holding them all at once, one device
    /// round trip instead of one per block, and no block past them.
    expect: usize,
    /// Blocks below this index of the current table were already requested
    /// by the seek's read-ahead.
    requested_until: usize,
}

/// A table run's current entry: key, value (`None`: tombstone), expiry.
type RunEntry<'a> = (&'a [u8], Option<&'a [u8]>, u64);

/// Most blocks a scan reads ahead of the one it needs, per table run.
const READ_AHEAD_MAX: usize = 8;
/// Most blocks a seek reads at once for an expected entry count.
const SEEK_READ_MAX: usize = 64;

impl<D: Disk> TableRun<D> {
    pub fn new(tables: Vec<Rc<Table<D>>>) -> Self {
        TableRun {
            tables,
            t: 0,
            block_i: 0,
            block: None,
            entries_len: 0,
            pos: 0,
            key: Vec::new(),
            value: None,
            expires_at: 0,
            valid: false,
            cached: true,
            sequential: 0,
            expect: 0,
            requested_until: 0,
        }
    }

    /// Entries in this run's tables.
    pub fn entries(&self) -> u64 {
        self.tables.iter().map(|t| t.meta.entries).sum()
    }

    /// A run whose reads bypass the block cache.
    pub fn uncached(tables: Vec<Rc<Table<D>>>) -> Self {
        TableRun {
            cached: false,
            ..TableRun::new(tables)
        }
    }

    fn corrupt(&self, e: BlockError) -> TableError {
        let t = &self.tables[self.t];
        TableError::Corrupt {
            path: t.file.path().to_path_buf(),
            offset: t.file.index().blocks[self.block_i].offset.to_native(),
            block: self.block_i.to_string(),
            detail: e,
        }
    }

    async fn load(&mut self, lsm: &Lsm<D>) -> Result<(), TableError> {
        let table = &self.tables[self.t];
        let block = if self.cached {
            if self.block_i >= self.requested_until {
                let blocks = table.file.index().blocks.len();
                let window = (1usize << self.sequential.min(3)).min(READ_AHEAD_MAX);
                let last = (self.block_i + window).min(blocks);
                if self.sequential > 0 && last > self.block_i + 1 {
                    lsm.prefetch_blocks(table, self.block_i..last).await;
                }
                self.sequential += 1;
            }
            lsm.load_block(table, self.block_i).await?
        } else {
            Rc::new(table.file.read_block(self.block_i).await?)
        };
        let parsed = DataBlock::parse(&block).map_err(|e| self.corrupt(e))?;
        self.entries_len = parsed.entries().len();
        self.block = Some(block);
        self.pos = 0;
        self.key.clear();
        Ok(())
    }

    /// Position at the first entry with key >= `start`.
    pub async fn seek(&mut self, lsm: &Lsm<D>, start: &[u8]) -> Result<(), TableError> {
        self.sequential = 0;
        self.t = self
            .tables
            .partition_point(|t| t.meta.largest.as_slice() < start);
        self.valid = false;
        if self.t == self.tables.len() {
            return Ok(());
        }
        let table = &self.tables[self.t];
        let Some(i) = table.file.find_block(start) else {
            return Ok(());
        };
        self.block_i = i;
        self.requested_until = 0;
        if self.cached && self.expect > 0 {
            // The first block holds on average half a block of entries below
            // `start`, hence the extra block.
            let blocks = table.file.index().blocks.len();
            let per_block = (table.meta.entries as usize / blocks.max(1)).max(1);
            let want = (self.expect.div_ceil(per_block) + 1).min(SEEK_READ_MAX);
            self.requested_until = (i + want).min(blocks);
            if self.requested_until > i + 1 {
                lsm.prefetch_blocks(table, i..self.requested_until).await;
            }
            // Past the expected blocks the scan is longer than foreseen: go on
            // with a doubling window.
            self.sequential = 1;
        }
        self.load(lsm).await?;
        let block = self.block.clone().unwrap_or_default();
        let parsed = DataBlock::parse(&block).map_err(|e| self.corrupt(e))?;
        let (pos, key) = parsed
            .seek(start)
            .map_err(|e| self.corrupt(e))?
            .into_parts();
        self.pos = pos;
        self.key = key;
        self.step(lsm).await
    }

    /// Move to the next entry.
    pub async fn step(&mut self, lsm: &Lsm<D>) -> Result<(), TableError> {
        loop {
            if let Some(block) = &self.block {
                if self.pos < self.entries_len {
                    let entries = &block[..self.entries_len];
                    let v = decode_next(entries, &mut self.pos, &mut self.key);
                    let (v, expires_at) = match v {
                        Ok(v) => v,
                        Err(e) => return Err(self.corrupt(e)),
                    };
                    self.expires_at = expires_at;
                    self.value = v.map(|v| {
                        let at = v.as_ptr() as usize - block.as_ptr() as usize;
                        (at, at + v.len())
                    });
                    self.valid = true;
                    return Ok(());
                }
            }
            // Next block, or next table.
            self.block = None;
            self.valid = false;
            if self.t >= self.tables.len() {
                return Ok(());
            }
            self.block_i += 1;
            if self.block_i >= self.tables[self.t].file.index().blocks.len() {
                self.t += 1;
                self.block_i = 0;
                self.requested_until = 0;
                if self.t >= self.tables.len() {
                    return Ok(());
                }
            }
            self.load(lsm).await?;
        }
    }

    fn current(&self) -> Option<RunEntry<'_>> {
        if !self.valid {
            return None;
        }
        let block = self.block.as_ref()?;
        Some((
            &self.key,
            self.value.map(|(a, b)| &block[a..b]),
            self.expires_at,
        ))
    }
}

/// A memtable read in chunks.
pub struct MemRun {
    mem: SharedMem,
    chunk: VecDeque<Owned>,
    more: bool,
    last: Option<Vec<u8>>,
}

impl MemRun {
    pub fn new(mem: SharedMem) -> Self {
        MemRun {
            mem,
            chunk: VecDeque::new(),
            more: true,
            last: None,
        }
    }

    fn refill(&mut self, start: &[u8], end: &[u8]) {
        if self.chunk.is_empty() && self.more {
            self.more = self.mem.borrow().copy_range(
                self.last.as_deref(),
                start,
                end,
                MEM_CHUNK,
                &mut self.chunk,
            );
            if let Some((k, _, _)) = self.chunk.back() {
                self.last = Some(k.clone());
            }
        }
    }
}

/// One layer of the merge.
pub enum Source<D: Disk> {
    /// Writes not yet durable, sorted, with the LSN each depends on.
    Overlay(Overlay),
    Mem(MemRun),
    Run(TableRun<D>),
}

impl<D: Disk> Source<D> {
    fn current(&self) -> Option<MergedEntry<'_>> {
        match self {
            Source::Overlay(q) => q
                .front()
                .map(|(k, v, l, e)| (k.as_slice(), v.as_deref(), *l, *e)),
            Source::Mem(m) => m
                .chunk
                .front()
                .map(|(k, v, e)| (k.as_slice(), v.as_deref(), 0, *e)),
            Source::Run(r) => r.current().map(|(k, v, e)| (k, v, 0, e)),
        }
    }
}

/// The merged stream.
pub struct Merge<D: Disk> {
    /// Newest layer first: on equal keys the lowest index wins.
    sources: Vec<Source<D>>,
    start: Vec<u8>,
    end: Vec<u8>,
    key: Vec<u8>,
    value: Vec<u8>,
    /// `key` was returned and the layers still stand on it: they step past it
    /// at the next call, not before, so that a page that stops after an entry
    /// never reads the block after it.
    returned: bool,
}

/// One merged entry: key, value (`None`: deleted), the pending LSN it
/// depends on (0: durable) and the value's expiry (unix ms, 0: never; the
/// merge returns expired values as they are: readers and compaction judge).
pub type MergedEntry<'a> = (&'a [u8], Option<&'a [u8]>, u64, u64);

impl<D: Disk> Merge<D> {
    /// Position every source at `start`; `end` empty means no upper bound.
    pub async fn new(
        lsm: &Lsm<D>,
        mut sources: Vec<Source<D>>,
        start: &[u8],
        end: &[u8],
    ) -> Result<Self, TableError> {
        // Table seeks each read a block: issue them all at once.
        let mut seeks: Vec<Boxed<'_, Result<(), TableError>>> = Vec::new();
        for s in &mut sources {
            match s {
                Source::Overlay(_) => {}
                Source::Mem(m) => m.refill(start, end),
                Source::Run(r) => seeks.push(Box::pin(r.seek(lsm, start))),
            }
        }
        for r in join_all(seeks).await {
            r?;
        }
        Ok(Merge {
            sources,
            start: start.to_vec(),
            end: end.to_vec(),
            key: Vec::new(),
            value: Vec::new(),
            returned: false,
        })
    }

    /// Where a scan that stops now continues: just past the last key returned
    /// (`key ++ 0x00` is the smallest key greater than it), or at the start.
    pub fn resume_point(&self) -> Vec<u8> {
        if !self.returned {
            return self.start.clone();
        }
        let mut k = Vec::with_capacity(self.key.len() + 1);
        k.extend_from_slice(&self.key);
        k.push(0);
        k
    }

    /// The layers of `lsm` as sources, newest first: an optional overlay, the
    /// memtable, the frozen memtable, level-0 tables, the level-1 run.
    ///
    /// `expect` is how many entries the caller expects to read after the seek
    /// (0: unknown, e.g. behind a selective filter). Keys are spread over the
    /// layers in proportion to their sizes, so each table run is told its share
    /// and reads exactly the blocks that share needs at once.
    pub fn sources_of(lsm: &Lsm<D>, overlay: Option<Overlay>, expect: usize) -> Vec<Source<D>> {
        let version = lsm.version();
        let mut sources = Vec::with_capacity(4 + version.l0.len());
        if let Some(o) = overlay {
            sources.push(Source::Overlay(o));
        }
        sources.push(Source::Mem(MemRun::new(lsm.memtable())));
        if let Some(imm) = lsm.frozen() {
            sources.push(Source::Mem(MemRun::new(imm)));
        }
        for t in &version.l0 {
            sources.push(Source::Run(TableRun::new(vec![t.clone()])));
        }
        if !version.l1.is_empty() {
            sources.push(Source::Run(TableRun::new(version.l1.clone())));
        }
        if expect > 0 {
            let mem = lsm.memtable().borrow().len() as u64
                + lsm.frozen().map_or(0, |m| m.borrow().len() as u64);
            let total: u64 = mem
                + sources
                    .iter()
                    .map(|s| match s {
                        Source::Run(r) => r.entries(),
                        _ => 0,
                    })
                    .sum::<u64>();
            for s in &mut sources {
                if let Source::Run(r) = s {
                    let share = (expect as u64 * r.entries()).div_ceil(total.max(1));
                    r.expect = share as usize;
                }
            }
        }
        sources
    }

    /// The next entry in key order, tombstones included.
    pub async fn next(&mut self, lsm: &Lsm<D>) -> Result<Option<MergedEntry<'_>>, TableError> {
        if self.returned {
            self.step_past_key(lsm).await?;
            self.returned = false;
        }
        // The smallest current key; on a tie the earlier (newer) source wins.
        let mut winner: Option<MergedEntry<'_>> = None;
        for s in &self.sources {
            if let Some(entry) = s.current() {
                if winner.is_none_or(|(wk, _, _, _)| entry.0 < wk) {
                    winner = Some(entry);
                }
            }
        }
        let Some((k, v, lsn, expires_at)) = winner else {
            return Ok(None);
        };
        if !self.end.is_empty() && k >= self.end.as_slice() {
            return Ok(None);
        }
        self.key.clear();
        self.key.extend_from_slice(k);
        self.value.clear();
        if let Some(v) = v {
            self.value.extend_from_slice(v);
        }
        let tombstone = v.is_none();
        self.returned = true;
        let value = (!tombstone).then_some(self.value.as_slice());
        Ok(Some((&self.key, value, lsn, expires_at)))
    }

    /// Step past `self.key` in every layer that has it (older versions die here).
    async fn step_past_key(&mut self, lsm: &Lsm<D>) -> Result<(), TableError> {
        for i in 0..self.sources.len() {
            let same = self.sources[i]
                .current()
                .is_some_and(|(k, _, _, _)| k == self.key.as_slice());
            if same {
                match &mut self.sources[i] {
                    Source::Overlay(q) => {
                        q.pop_front();
                    }
                    Source::Mem(m) => {
                        m.chunk.pop_front();
                        m.refill(&self.start, &self.end);
                    }
                    Source::Run(r) => r.step(lsm).await?,
                }
            }
        }
        Ok(())
    }
}
