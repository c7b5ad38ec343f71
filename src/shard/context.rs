//! What a shard hands to the code that serves it (the network server, an embedded
//! application, a benchmark): the router to every shard's data, and the shutdown
//! signal that code must obey.

use std::rc::Rc;

use crate::core::status::Status;
use crate::core::types::{Durability, ShardId};

use super::ops::OpKind;
use super::router::{RoutedBatch, Router};
use super::sync::Event;

/// Per-core handle to the engine. Cheap to clone; lives on its core (`!Send`).
#[derive(Clone)]
pub struct ShardContext {
    pub router: Rc<Router>,
    /// Set when the engine is asked to stop. The service must stop accepting new
    /// work, finish what it started, and return.
    pub shutdown: Rc<Event>,
    pub durability: Durability,
}

impl ShardContext {
    pub fn shard(&self) -> ShardId {
        self.router.id
    }

    pub fn shard_count(&self) -> u16 {
        self.router.shard_count
    }

    /// A reusable batch for [`Router::execute`], the allocation-free path.
    pub fn new_batch(&self) -> RoutedBatch {
        RoutedBatch::new(self.router.shard_count)
    }

    /// Read one key. Convenient, not the fast path: it allocates a batch.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Status> {
        let (status, value) = self.one(OpKind::Get, key, b"").await;
        match status {
            Status::Ok => Ok(Some(value)),
            Status::NotFound => Ok(None),
            other => Err(other),
        }
    }

    /// Write one key; returns once durable (sync mode) or logged (async mode).
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), Status> {
        match self.one(OpKind::Put, key, value).await.0 {
            Status::Ok => Ok(()),
            other => Err(other),
        }
    }

    /// Delete one key; returns whether it existed.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, Status> {
        let (status, body) = self.one(OpKind::Delete, key, b"").await;
        match status {
            Status::Ok => Ok(body.first() == Some(&1)),
            other => Err(other),
        }
    }

    /// Entries with `start <= key < end` (`end` empty: no bound) in key order,
    /// at most `limit`, from every shard. Convenient, not the fast path (the
    /// server streams pages instead of collecting them).
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Status> {
        self.scan_filtered(start, end, limit, crate::core::filter::FILTER_NONE, b"")
            .await
    }

    /// [`Self::scan`] with a filter pushed down into every shard (see
    /// `core::filter` for the kinds and their arguments).
    ///
    /// Each shard is first asked for its share of `limit` plus a margin (keys
    /// spread evenly by the hash, so one round usually suffices), and the pages
    /// are merged in key order; a shard whose page ran out is asked again only
    /// when the merge cannot go on without it. Asking every shard for the whole
    /// `limit` read `shards` times the entries the answer keeps.
    pub async fn scan_filtered(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        filter_kind: u8,
        filter_arg: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Status> {
        use std::collections::VecDeque;

        use super::scan::{decode_page, encode_params, page_entries, ScanParams};
        let n = usize::from(self.shard_count());
        let limit_n = limit as usize;
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(limit_n.min(4096));
        if limit == 0 {
            return Ok(out);
        }
        // Per shard: entries fetched and not yet merged, and where to go on
        // (`None`: the shard has nothing more in range).
        let mut bufs: Vec<VecDeque<(Vec<u8>, Vec<u8>)>> = vec![VecDeque::new(); n];
        let mut resume: Vec<Option<Vec<u8>>> = vec![Some(start.to_vec()); n];
        let share = limit_n.div_ceil(n) + (limit_n / 4).max(4);
        let mut want: Vec<usize> = (0..n).collect();
        let mut amount = share.min(limit_n);
        let mut batch = self.new_batch();
        let mut params = Vec::new();
        loop {
            if !want.is_empty() {
                batch.clear();
                for &shard in &want {
                    let Some(from) = &resume[shard] else { continue };
                    params.clear();
                    encode_params(
                        &mut params,
                        &ScanParams {
                            end,
                            limit: amount as u32,
                            filter_kind,
                            filter_arg,
                        },
                    );
                    batch.push(ShardId(shard as u16), OpKind::Scan, from, &params);
                }
                self.router.execute(&mut batch).await;
                for &shard in &want {
                    if resume[shard].is_none() {
                        continue;
                    }
                    let (status, body) = batch.replies(ShardId(shard as u16)).get(0);
                    if status != Status::Ok {
                        return Err(status);
                    }
                    let page = decode_page(body).ok_or(Status::Internal)?;
                    bufs[shard]
                        .extend(page_entries(page.entries).map(|(k, v)| (k.to_vec(), v.to_vec())));
                    resume[shard] = page.resume.map(<[u8]>::to_vec);
                }
                want.clear();
            }
            if out.len() == limit_n {
                return Ok(out);
            }
            let best = (0..n)
                .filter(|&s| !bufs[s].is_empty())
                .min_by(|&a, &b| bufs[a][0].0.cmp(&bufs[b][0].0));
            // A shard with nothing buffered but more in range may hold the
            // next key: its remaining keys start at its resume point.
            for s in 0..n {
                if bufs[s].is_empty() {
                    if let Some(r) = &resume[s] {
                        if best.is_none_or(|b| r.as_slice() <= bufs[b][0].0.as_slice()) {
                            want.push(s);
                        }
                    }
                }
            }
            if !want.is_empty() {
                amount = (limit_n - out.len()).max(16).min(limit_n);
                continue;
            }
            let Some(b) = best else {
                return Ok(out);
            };
            if let Some(entry) = bufs[b].pop_front() {
                out.push(entry);
            }
        }
    }

    /// Flush this shard's memtable into a table and wait until the manifest
    /// records it (tools and tests; the shard flushes on its own when full).
    pub async fn flush_local(&self) -> Result<(), String> {
        let lsm = &self.router.state().lsm;
        loop {
            if let Some(reason) = lsm.failure() {
                return Err(reason);
            }
            let empty = lsm.memtable().borrow().is_empty();
            if empty && lsm.frozen().is_none() {
                return Ok(());
            }
            lsm.freeze_now();
            lsm.work
                .until(|| (lsm.frozen().is_none() || lsm.failure().is_some()).then_some(()))
                .await;
        }
    }

    /// Compact this shard's level 0 into level 1 now; false if level 0 was empty.
    pub async fn compact_local(&self) -> Result<bool, String> {
        super::compaction::compact(&self.router.state().lsm, 1)
            .await
            .map_err(|e| e.to_string())
    }

    async fn one(&self, kind: OpKind, key: &[u8], value: &[u8]) -> (Status, Vec<u8>) {
        if key.len() > crate::core::limits::KEY_BYTES_MAX {
            return (Status::KeyTooLarge, Vec::new());
        }
        let mut batch = self.new_batch();
        let shard = self.router.shard_of(key);
        batch.push(shard, kind, key, value);
        self.router.execute(&mut batch).await;
        let (status, value) = batch.replies(shard).get(0);
        (status, value.to_vec())
    }
}
