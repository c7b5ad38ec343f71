//! What a shard hands to the code that serves it (the network server, an embedded
//! application, a benchmark): the router to every shard's data, and the shutdown
//! signal that code must obey.

use std::rc::Rc;

use crate::core::status::Status;
use crate::core::types::{Durability, ShardId};

use crate::core::scan_format::ScanRequest;
use crate::shard::ops::OpKind;
use crate::shard::route::router::{RoutedBatch, Router};
use crate::shard::wake::Event;

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
        let mut out = Vec::with_capacity((limit as usize).min(4096));
        let request = ScanRequest {
            start,
            end,
            limit,
            filter_kind,
            filter_arg,
        };
        self.scan_merged(&request, usize::MAX, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .await?;
        Ok(out)
    }

    /// The merged scan every caller uses: entries of every shard in key
    /// order, at most `limit`, each handed to `emit` (borrowed from the shard's
    /// page: no copy unless `emit` makes one). Returns where to continue
    /// (`None`: the range is exhausted). An `emit` that returns false did not
    /// take its entry: the scan stops and continues from that entry's key
    /// (a caller's reply-size bound).
    ///
    /// Each shard is first asked for its share of `limit` plus a margin
    /// ([`first_share`]), and the pages are merged in key order; a shard whose
    /// page ran out is asked again, for what the answer still lacks, only when
    /// the merge cannot go on without it. After `max_rounds` rounds the scan
    /// stops short at the lowest point some shard has not reached (the caller
    /// pages on from there), which bounds the work of one request behind a
    /// selective filter.
    pub async fn scan_merged(
        &self,
        r: &ScanRequest<'_>,
        max_rounds: usize,
        mut emit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<Option<Vec<u8>>, Status> {
        use crate::core::scan_format::{
            decode_page, encode_params, first_share, page_entries, ScanParams,
        };
        let n = usize::from(self.shard_count());
        let limit = r.limit as usize;
        if limit == 0 {
            return Ok(Some(r.start.to_vec()));
        }
        // Per shard: how far into its page's entries the merge is, and where
        // to go on (`None`: the shard has nothing more in range). First-round
        // pages are merged where they lie, in `first`'s replies; a page from a
        // later round is copied into `owned` (its batch is reused).
        let mut at = vec![0usize; n];
        let mut owned: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut resume: Vec<Option<Vec<u8>>> = vec![Some(r.start.to_vec()); n];
        let mut want: Vec<usize> = (0..n).collect();
        let mut amount = first_share(limit, n);
        let mut rounds = 0;
        let mut emitted = 0;
        let mut last: Vec<u8> = Vec::new();
        let mut first = self.new_batch();
        let mut topup = self.new_batch();
        let mut params = Vec::new();
        loop {
            if !want.is_empty() {
                rounds += 1;
                let batch = if rounds == 1 { &mut first } else { &mut topup };
                batch.clear();
                params.clear();
                encode_params(
                    &mut params,
                    &ScanParams {
                        end: r.end,
                        limit: amount as u32,
                        filter_kind: r.filter_kind,
                        filter_arg: r.filter_arg,
                    },
                );
                for &shard in &want {
                    if let Some(from) = &resume[shard] {
                        batch.push(ShardId(shard as u16), OpKind::Scan, from, &params);
                    }
                }
                self.router.execute(batch).await;
                for &shard in &want {
                    if resume[shard].is_none() {
                        continue;
                    }
                    let (status, body) = batch.replies(ShardId(shard as u16)).get(0);
                    if status != Status::Ok {
                        return Err(status);
                    }
                    let page = decode_page(body).ok_or(Status::Internal)?;
                    resume[shard] = page.resume.map(<[u8]>::to_vec);
                    if rounds > 1 {
                        let copy = owned[shard].get_or_insert_with(Vec::new);
                        copy.clear();
                        copy.extend_from_slice(page.entries);
                    }
                    at[shard] = 0;
                }
                want.clear();
            }
            // The entries shard `s` has not yet handed to the merge.
            let rest = |s: usize| -> &[u8] {
                let entries = match &owned[s] {
                    Some(copy) => copy.as_slice(),
                    None => decode_page(first.replies(ShardId(s as u16)).get(0).1)
                        .map_or(&[][..], |p| p.entries),
                };
                &entries[at[s]..]
            };
            if emitted == limit {
                let more =
                    resume.iter().any(Option::is_some) || (0..n).any(|s| !rest(s).is_empty());
                if !more {
                    return Ok(None);
                }
                last.push(0);
                return Ok(Some(last));
            }
            let best = (0..n)
                .filter_map(|s| page_entries(rest(s)).next().map(|(k, v)| (s, k, v)))
                .min_by(|a, b| a.1.cmp(b.1));
            // A shard with nothing buffered but more in range may hold the
            // next key: its remaining keys start at its resume point.
            let mut bound: Option<&[u8]> = None;
            for (s, from) in resume.iter().enumerate() {
                if !rest(s).is_empty() {
                    continue;
                }
                if let Some(from) = from {
                    if best.is_none_or(|(_, k, _)| from.as_slice() <= k) {
                        want.push(s);
                        bound = Some(bound.map_or(from.as_slice(), |b| b.min(from.as_slice())));
                    }
                }
            }
            if let Some(bound) = bound {
                if rounds >= max_rounds {
                    // Everything below `bound` was returned.
                    return Ok(Some(bound.to_vec()));
                }
                // No shard can add more than the answer still lacks.
                amount = limit - emitted;
                continue;
            }
            let Some((s, k, v)) = best else {
                return Ok(None);
            };
            if !emit(k, v) {
                return Ok(Some(k.to_vec()));
            }
            emitted += 1;
            last.clear();
            last.extend_from_slice(k);
            at[s] += 8 + k.len() + v.len();
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
        crate::shard::lsm::compaction::compact(&self.router.state().lsm, 1)
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
