//! The coordinator side of transactions and snapshot reads: the connection's
//! shard splits a request by owning shard and drives the owners by message.
//!
//! - One owning shard: a single `Txn` / `SnapRead` op on it; one WAL record, no
//!   extra messages.
//! - Several: two-phase commit. Owners are visited in ascending shard order
//!   (the deadlock-freedom argument is in `locks`); each locks its keys and
//!   checks its conditions, and a remote one logs TXN_PREPARE durably before
//!   saying yes. The coordinator's own keys need no prepare record: its
//!   TXN_COMMIT decision carries its writes, and is the commit point. Only once
//!   the decision is durable is the client answered and phase two (apply,
//!   release) sent to the participants, in the background; until a participant
//!   applies, its keys stay locked, so nobody can read around the commit.
//! - A refusal (false condition, lock timeout, failure) before the decision
//!   aborts everywhere: participants drop their prepared state (presumed abort:
//!   no record needed).
//!
//! It must never: answer OK before the decision is durable, send an abort after
//! a decision record was handed to the WAL (a failed fsync leaves the outcome
//! in doubt, to be settled by recovery), or lock shards out of order.

use std::rc::Rc;

use crate::core::status::Status;
use crate::core::txn_format::{id_bytes, sized_items, TxnId, TxnPart, TxnView};
use crate::core::types::ShardId;

use crate::shard::locks::LockSet;
use crate::shard::ops::{OpBatch, OpKind, ReplyBatch};
use crate::shard::route::router::Router;
use crate::shard::txn::participant::{CommitError, Refusal};

impl Router {
    /// Run a client transaction (TXN body in wire form, validated by the codec).
    /// Returns the status to answer and writes its body (the failed condition's
    /// index, or a reason) into `detail`.
    pub async fn transaction(self: &Rc<Self>, view: &TxnView<'_>, detail: &mut Vec<u8>) -> Status {
        detail.clear();
        let mut keys: Vec<&[u8]> = view.writes().map(|w| w.key()).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            detail.extend_from_slice(b"a transaction may write each key at most once");
            return Status::InvalidArgument;
        }
        let mut parts: Vec<TxnPart> = (0..self.shard_count).map(|_| TxnPart::default()).collect();
        for (index, cond) in view.conds() {
            parts[self.shard_of(cond.key()).index()].push_cond(index, &cond);
        }
        for w in view.writes() {
            parts[self.shard_of(w.key()).index()].push_write(&w);
        }
        let owners: Vec<u16> = (0..self.shard_count)
            .filter(|s| !parts[usize::from(*s)].is_empty())
            .collect();
        let mut scratch = Vec::new();
        match owners.as_slice() {
            [] => Status::Ok,
            [only] => {
                parts[usize::from(*only)].encode(&mut scratch);
                let (status, reply) = self
                    .call_one(ShardId(*only), OpKind::Txn, b"", &scratch)
                    .await;
                detail.extend_from_slice(&reply);
                status
            }
            _ => self.two_phase(&parts, &owners, detail).await,
        }
    }

    async fn call_one(
        &self,
        shard: ShardId,
        kind: OpKind,
        key: &[u8],
        value: &[u8],
    ) -> (Status, Vec<u8>) {
        let mut ops = OpBatch::default();
        ops.push(kind, key, value);
        let (_, replies) = self.call(shard, ops, ReplyBatch::default()).await;
        if replies.is_empty() {
            return (Status::Internal, b"no reply from shard".to_vec());
        }
        let (status, body) = replies.get(0);
        (status, body.to_vec())
    }

    async fn two_phase(
        self: &Rc<Self>,
        parts: &[TxnPart],
        owners: &[u16],
        detail: &mut Vec<u8>,
    ) -> Status {
        let state = self.state().clone();
        let id = state.next_txn_id();
        let me = self.id.0;
        let mut own_body = Vec::new();
        let own_view = parts[usize::from(me)].encode(&mut own_body);
        let mut own_locks = LockSet::default();
        let mut own_locked = false;
        let mut prepared: Vec<u16> = Vec::with_capacity(owners.len());
        let mut scratch = Vec::new();
        let deadline = state.lock_deadline();
        for (pos, &s) in owners.iter().enumerate() {
            let refused = if s == me {
                match state
                    .lock_and_check(&own_view, &mut own_locks, deadline, true)
                    .await
                {
                    Ok(()) => {
                        own_locked = true;
                        None
                    }
                    Err(r) => {
                        own_locked = matches!(r, Refusal::Condition(_));
                        Some(refusal_reply(&r))
                    }
                }
            } else {
                parts[usize::from(s)].encode(&mut scratch);
                let (status, reply) = self
                    .call_one(ShardId(s), OpKind::TxnPrepare, &id_bytes(id), &scratch)
                    .await;
                if status == Status::Ok {
                    prepared.push(s);
                    None
                } else {
                    Some((status, reply))
                }
            };
            let Some((mut status, mut reply)) = refused else {
                continue;
            };
            let mut held: Vec<u16> = Vec::new();
            if status == Status::ConditionFailed {
                if s != me {
                    held.push(s);
                }
                // Later shards may hold lower-numbered conditions: check them
                // while everything checked so far stays locked.
                let (st, rep) = self
                    .lowest_false_condition(
                        id,
                        parts,
                        &owners[pos + 1..],
                        &own_view,
                        &mut own_locks,
                        &mut own_locked,
                        &mut held,
                        reply,
                    )
                    .await;
                status = st;
                reply = rep;
            }
            if own_locked {
                state.release_locks(&own_locks);
            }
            for h in held {
                self.call_one(ShardId(h), OpKind::SnapRelease, &id_bytes(id), b"")
                    .await;
            }
            self.decide_all(id, &prepared, false).await;
            detail.extend_from_slice(&reply);
            return status;
        }
        if !own_locked {
            // The coordinator owns none of the keys: its decision has no writes.
            own_locks.clear();
        }
        let gate = state.backup.enter_write().await;
        let logged = state.log_commit(id, &prepared, &own_view, true);
        drop(gate);
        let decided = match logged {
            Ok(lsn) => {
                if state.sync_mode() && own_locked {
                    // Staged: readers of these keys now wait for the decision's fsync.
                    state.release_locks(&own_locks);
                    own_locked = false;
                }
                state
                    .finish_commit(&own_view, lsn, true)
                    .await
                    .map(|()| lsn)
            }
            Err(e) => Err(e),
        };
        match decided {
            Ok(lsn) => {
                crate::failpoint!("txn-after-decision");
                if own_locked {
                    state.release_locks(&own_locks);
                }
                let router = self.clone();
                glommio::spawn_local(async move {
                    if router.decide_all(id, &prepared, true).await {
                        router.state().unpin(lsn);
                    }
                })
                .detach();
                Status::Ok
            }
            Err(CommitError::NotLogged(status)) => {
                if own_locked {
                    state.release_locks(&own_locks);
                }
                self.decide_all(id, &prepared, false).await;
                status
            }
            Err(CommitError::InDoubt) => {
                // The decision may be on disk. Keep every key locked until
                // restart (staged writes were dropped with the WAL): recovery settles it.
                if !own_locked {
                    state.poison_locks(&own_locks);
                }
                tracing::error!(
                    shard = me,
                    %id,
                    "the WAL failed while logging a transaction decision; its outcome is \
                     settled at the next start (TXN_IN_DOUBT)"
                );
                detail.extend_from_slice(
                    b"the coordinating shard's WAL failed while logging the decision",
                );
                Status::TxnInDoubt
            }
        }
    }

    /// A condition of index `first` (in `reply`) was false on an earlier shard,
    /// whose locks are still held. Lock and check the `rest` of the owners that
    /// have a lower-numbered condition, keeping their locks (`held`, or the
    /// coordinator's own), so the answer names the first false condition of
    /// one state. A lock timeout here makes the whole answer TXN_ABORTED.
    #[allow(clippy::too_many_arguments)]
    async fn lowest_false_condition(
        &self,
        id: TxnId,
        parts: &[TxnPart],
        rest: &[u16],
        own_view: &TxnView<'_>,
        own_locks: &mut LockSet,
        own_locked: &mut bool,
        held: &mut Vec<u16>,
        reply: Vec<u8>,
    ) -> (Status, Vec<u8>) {
        let index_of = |r: &[u8]| r.first_chunk::<4>().map_or(0, |b| u32::from_le_bytes(*b));
        let mut lowest = index_of(&reply);
        let mut scratch = Vec::new();
        for &t in rest {
            let part = &parts[usize::from(t)];
            let view = part.encode(&mut scratch);
            if !view.conds().any(|(i, _)| i < lowest) {
                continue;
            }
            let (status, r) = if t == self.id.0 {
                let deadline = self.state().lock_deadline();
                match self
                    .state()
                    .lock_and_check(own_view, own_locks, deadline, true)
                    .await
                {
                    Ok(()) => {
                        *own_locked = true;
                        (Status::Ok, Vec::new())
                    }
                    Err(r) => {
                        *own_locked = matches!(r, Refusal::Condition(_));
                        refusal_reply(&r)
                    }
                }
            } else {
                let (status, r) = self
                    .call_one(ShardId(t), OpKind::TxnCheck, &id_bytes(id), &scratch)
                    .await;
                if matches!(status, Status::Ok | Status::ConditionFailed) {
                    held.push(t);
                }
                (status, r)
            };
            match status {
                Status::Ok => {}
                Status::ConditionFailed => lowest = lowest.min(index_of(&r)),
                _ => return (status, r),
            }
        }
        (Status::ConditionFailed, lowest.to_le_bytes().to_vec())
    }

    /// Send the decision to every shard in `shards`; true if all applied it.
    async fn decide_all(&self, id: TxnId, shards: &[u16], commit: bool) -> bool {
        let mut all = true;
        for &s in shards {
            let (status, _) = self
                .call_one(
                    ShardId(s),
                    OpKind::TxnDecide,
                    &id_bytes(id),
                    &[u8::from(commit)],
                )
                .await;
            if status != Status::Ok {
                tracing::warn!(
                    shard = s,
                    %id,
                    commit,
                    status = status.name(),
                    "a participant could not apply a transaction decision; recovery will"
                );
                all = false;
            }
        }
        all
    }

    /// One consistent snapshot of several keys (an MGET key list of `count`
    /// keys). Writes the MGET response body into `out`: `count u32`, then per
    /// key `status u16 | len u32 | value`, or with `with_expiry`
    /// `status u16 | len u32 | expires_at u64 | value` (0: never), which is
    /// what a RESP transaction needs to move or keep a TTL.
    pub async fn snapshot_get(
        self: &Rc<Self>,
        keys: &[u8],
        count: u32,
        with_expiry: bool,
        out: &mut Vec<u8>,
    ) -> Status {
        let n = usize::from(self.shard_count);
        let mut per_shard: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut order: Vec<u16> = Vec::with_capacity(count as usize);
        for k in sized_items(keys) {
            let s = self.shard_of(k).0;
            let list = &mut per_shard[usize::from(s)];
            list.extend_from_slice(&(k.len() as u32).to_le_bytes());
            list.extend_from_slice(k);
            order.push(s);
        }
        let owners: Vec<u16> = (0..self.shard_count)
            .filter(|s| !per_shard[usize::from(*s)].is_empty())
            .collect();
        let mut pages: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut status = Status::Ok;
        if let [only] = owners.as_slice() {
            let (s, page) = self
                .call_one(
                    ShardId(*only),
                    OpKind::SnapRead,
                    b"",
                    &per_shard[usize::from(*only)],
                )
                .await;
            status = s;
            pages[usize::from(*only)] = page;
        } else if !owners.is_empty() {
            let id = self.state().next_txn_id();
            let mut held = Vec::with_capacity(owners.len());
            for &s in &owners {
                let (st, page) = self
                    .call_one(
                        ShardId(s),
                        OpKind::SnapRead,
                        &id_bytes(id),
                        &per_shard[usize::from(s)],
                    )
                    .await;
                if st != Status::Ok {
                    status = st;
                    break;
                }
                held.push(s);
                pages[usize::from(s)] = page;
            }
            for s in held {
                self.call_one(ShardId(s), OpKind::SnapRelease, &id_bytes(id), b"")
                    .await;
            }
        }
        out.clear();
        if status != Status::Ok {
            return status;
        }
        out.extend_from_slice(&count.to_le_bytes());
        let mut cursors = vec![0usize; n];
        for s in order {
            let page = &pages[usize::from(s)];
            let at = cursors[usize::from(s)];
            let Some(len) = page
                .get(at + 2..at + 6)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            else {
                out.clear();
                return Status::Internal;
            };
            let end = at + 14 + len;
            let Some(entry) = page.get(at..end) else {
                out.clear();
                return Status::Internal;
            };
            if with_expiry {
                out.extend_from_slice(entry);
            } else {
                out.extend_from_slice(&entry[..6]);
                out.extend_from_slice(&entry[14..]);
            }
            cursors[usize::from(s)] = end;
        }
        Status::Ok
    }
}

fn refusal_reply(r: &Refusal) -> (Status, Vec<u8>) {
    let mut replies = ReplyBatch::default();
    r.push(&mut replies);
    let (status, body) = replies.get(0);
    (status, body.to_vec())
}
