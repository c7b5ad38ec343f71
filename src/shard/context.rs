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
    pub async fn scan_filtered(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        filter_kind: u8,
        filter_arg: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Status> {
        use super::scan::{decode_page, encode_params, page_entries, ScanParams};
        let n = usize::from(self.shard_count());
        // Every shard scans its part at once (one message each); a shard that
        // stopped early (page full) is asked again from where it stopped.
        let mut from: Vec<Option<Vec<u8>>> = vec![Some(start.to_vec()); n];
        let mut got = vec![0u32; n];
        let mut all = Vec::new();
        let mut batch = self.new_batch();
        let mut params = Vec::new();
        loop {
            batch.clear();
            let mut asked = false;
            for (shard, f) in from.iter().enumerate() {
                if let Some(f) = f {
                    params.clear();
                    encode_params(
                        &mut params,
                        &ScanParams {
                            end,
                            limit: limit - got[shard],
                            filter_kind,
                            filter_arg,
                        },
                    );
                    batch.push(ShardId(shard as u16), OpKind::Scan, f, &params);
                    asked = true;
                }
            }
            if !asked {
                break;
            }
            self.router.execute(&mut batch).await;
            for shard in 0..n {
                if from[shard].is_none() {
                    continue;
                }
                let (status, body) = batch.replies(ShardId(shard as u16)).get(0);
                if status != Status::Ok {
                    return Err(status);
                }
                let page = decode_page(body).ok_or(Status::Internal)?;
                for (k, v) in page_entries(page.entries) {
                    all.push((k.to_vec(), v.to_vec()));
                    got[shard] += 1;
                }
                from[shard] = match page.resume {
                    Some(r) if got[shard] < limit => Some(r.to_vec()),
                    _ => None,
                };
            }
        }
        all.sort();
        all.truncate(limit as usize);
        Ok(all)
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
