//! Routes operations to the shard that owns their keys.
//!
//! Local operations run in place; operations for other shards travel as one
//! message per (batch, target shard) over a dedicated single-producer channel per
//! ordered pair of shards, and come back as one reply message. A batch's buffers
//! travel with it and come back cleared, so steady-state routing allocates nothing.
//!
//! Deadlock freedom: a shard's receiving task never blocks on its own work; each
//! incoming batch runs in a task of its own, and replies go back on the reverse
//! channel, whose receiver only fills a slot and wakes its owner.

use std::cell::RefCell;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

use crate::core::hash::shard_for_key;
use crate::core::types::ShardId;

use crate::shard::metrics::ShardMetrics;
use crate::shard::ops::{OpBatch, OpKind, ReplyBatch};
use crate::shard::state::ShardState;

/// A message between shards. Owns its bytes.
pub enum ShardMsg {
    Exec {
        token: u32,
        ops: OpBatch,
        replies: ReplyBatch,
    },
    Done {
        token: u32,
        ops: OpBatch,
        replies: ReplyBatch,
    },
}

/// Capacity of each shard-to-shard channel, in messages.
pub const LINK_CAPACITY: usize = 1024;

/// One shard's unconnected channel ends, made on the control thread.
pub struct ShardLinks {
    /// `to[j]`: sends to shard j (`None` for self).
    pub to: Vec<Option<SharedSender<ShardMsg>>>,
    /// `from[j]`: receives from shard j (`None` for self).
    pub from: Vec<Option<SharedReceiver<ShardMsg>>>,
}

/// Channels for every ordered pair of `n` shards; element i belongs to shard i.
pub fn make_links(n: usize) -> Vec<ShardLinks> {
    let mut links: Vec<ShardLinks> = (0..n)
        .map(|_| ShardLinks {
            to: (0..n).map(|_| None).collect(),
            from: (0..n).map(|_| None).collect(),
        })
        .collect();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let (tx, rx) = shared_channel::new_bounded(LINK_CAPACITY);
                links[i].to[j] = Some(tx);
                links[j].from[i] = Some(rx);
            }
        }
    }
    links
}

/// The operations of one request batch, grouped by shard, and their replies.
pub struct RoutedBatch {
    ops: Vec<OpBatch>,
    replies: Vec<ReplyBatch>,
    /// Reply slot of each shard's batch while it is away.
    tokens: Vec<Option<u32>>,
}

impl RoutedBatch {
    pub fn new(shard_count: u16) -> RoutedBatch {
        let n = usize::from(shard_count);
        RoutedBatch {
            ops: (0..n).map(|_| OpBatch::default()).collect(),
            replies: (0..n).map(|_| ReplyBatch::default()).collect(),
            tokens: vec![None; n],
        }
    }

    pub fn push(&mut self, shard: ShardId, kind: OpKind, key: &[u8], value: &[u8]) {
        self.ops[shard.index()].push(kind, key, value);
    }

    pub fn replies(&self, shard: ShardId) -> &ReplyBatch {
        &self.replies[shard.index()]
    }

    pub fn is_empty(&self) -> bool {
        self.ops.iter().all(OpBatch::is_empty)
    }

    /// Every shard stops executing this batch's ops once its replies hold
    /// `bytes` (see `OpBatch::reply_budget`). Set after pushing; `clear` resets.
    pub fn set_reply_budget(&mut self, bytes: usize) {
        self.ops.iter_mut().for_each(|o| o.set_reply_budget(bytes));
    }

    /// Bytes of reply values held, all shards.
    pub fn reply_bytes(&self) -> usize {
        self.replies.iter().map(ReplyBatch::value_bytes).sum()
    }

    /// Drop every shard's ops (executed or not) but keep the replies: a
    /// round that runs only some shards must not run the others' old ops.
    pub fn clear_ops(&mut self) {
        self.ops.iter_mut().for_each(OpBatch::clear);
    }

    /// Drop one shard's replies, before it runs again.
    pub fn clear_replies(&mut self, shard: ShardId) {
        self.replies[shard.index()].clear();
    }

    /// Clear, and release reply memory past `keep` bytes per shard.
    pub fn clear_and_trim(&mut self, keep: usize) {
        self.ops.iter_mut().for_each(OpBatch::clear);
        self.replies.iter_mut().for_each(|r| r.clear_and_trim(keep));
    }

    pub fn clear(&mut self) {
        self.ops.iter_mut().for_each(OpBatch::clear);
        self.replies.iter_mut().for_each(ReplyBatch::clear);
    }
}

/// One forwarded batch's return address. Its waker is the one task that
/// waits for it: a reply wakes that task alone, not every task of the shard
/// that has a batch away (with 25 connections waiting on a peer, a shared
/// wait queue polled ~12 tasks for nothing per reply).
#[derive(Default)]
struct Slot {
    in_use: bool,
    done: Option<(OpBatch, ReplyBatch)>,
    waiter: Option<Waker>,
}

pub struct Router {
    pub id: ShardId,
    pub shard_count: u16,
    state: Rc<ShardState>,
    to: Vec<Option<ConnectedSender<ShardMsg>>>,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
}

impl Router {
    /// Connect this shard's channel ends (every peer must do the same concurrently)
    /// and start the receiving tasks.
    pub async fn connect(state: Rc<ShardState>, links: ShardLinks) -> Rc<Router> {
        let id = state.id;
        let shard_count = state.shard_count;
        let senders: Vec<_> = links
            .to
            .into_iter()
            .map(|tx| tx.map(|tx| glommio::spawn_local(async move { tx.connect().await })))
            .collect();
        let receivers: Vec<_> = links
            .from
            .into_iter()
            .map(|rx| rx.map(|rx| glommio::spawn_local(async move { rx.connect().await })))
            .collect();
        let mut to = Vec::with_capacity(senders.len());
        for s in senders {
            to.push(match s {
                Some(task) => Some(task.await),
                None => None,
            });
        }
        let router = Rc::new(Router {
            id,
            shard_count,
            state,
            to,
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
        });
        for (peer, r) in receivers.into_iter().enumerate() {
            if let Some(task) = r {
                let rx = task.await;
                let router = router.clone();
                glommio::spawn_local(async move { router.receive_from(peer as u16, rx).await })
                    .detach();
            }
        }
        router
    }

    pub fn state(&self) -> &Rc<ShardState> {
        &self.state
    }

    pub fn metrics(&self) -> &ShardMetrics {
        &self.state.metrics
    }

    pub fn shard_of(&self, key: &[u8]) -> ShardId {
        shard_for_key(key, self.shard_count)
    }

    /// Execute every operation of `batch` on its shard; on return each shard's
    /// replies are final (durable where durability requires it).
    pub async fn execute(&self, batch: &mut RoutedBatch) {
        let me = self.id.index();
        for peer in 0..batch.ops.len() {
            if peer == me || batch.ops[peer].is_empty() {
                continue;
            }
            let ops = std::mem::take(&mut batch.ops[peer]);
            let replies = std::mem::take(&mut batch.replies[peer]);
            batch.tokens[peer] = Some(self.send_exec(peer, ops, replies).await);
        }
        if !batch.ops[me].is_empty() {
            self.state
                .execute(&batch.ops[me], &mut batch.replies[me])
                .await;
            self.state.settle(&mut batch.replies[me]).await;
        }
        for peer in 0..batch.tokens.len() {
            let Some(token) = batch.tokens[peer].take() else {
                continue;
            };
            let (ops, replies) = self.wait_slot(token).await;
            batch.ops[peer] = ops;
            batch.replies[peer] = replies;
        }
    }

    /// Execute `ops` on one shard (in place if it is this one) and return the
    /// batch, cleared, with its replies.
    pub async fn call(
        &self,
        shard: ShardId,
        mut ops: OpBatch,
        mut replies: ReplyBatch,
    ) -> (OpBatch, ReplyBatch) {
        replies.clear();
        if shard == self.id {
            self.state.execute(&ops, &mut replies).await;
            self.state.settle(&mut replies).await;
            ops.clear();
            return (ops, replies);
        }
        let token = self.send_exec(shard.index(), ops, replies).await;
        self.wait_slot(token).await
    }

    /// Send `ops` to `peer`; its replies arrive in the returned slot.
    async fn send_exec(&self, peer: usize, ops: OpBatch, replies: ReplyBatch) -> u32 {
        let token = self.alloc_slot();
        ShardMetrics::incr(&self.state.metrics.forwarded_batches_out);
        let tx = self.to[peer]
            .as_ref()
            .expect("a sender for every other shard");
        if let Err(e) = tx
            .send(ShardMsg::Exec {
                token,
                ops,
                replies,
            })
            .await
        {
            // The only way a send fails is a closed channel: the peer is gone
            // (shutdown). Answer its ops here so the slot does not wait forever.
            let glommio::GlommioError::Closed(glommio::ResourceType::Channel(msg)) = e else {
                panic!("shard channel send failed unexpectedly: {e}");
            };
            // We sent an Exec; both kinds carry the batches to answer with.
            let (ShardMsg::Exec {
                ops, mut replies, ..
            }
            | ShardMsg::Done {
                ops, mut replies, ..
            }) = msg;
            for _ in 0..ops.len() {
                replies.push(crate::core::status::Status::ShuttingDown, b"", 0);
            }
            self.fill_slot(token, ops, replies);
        }
        token
    }

    fn alloc_slot(&self) -> u32 {
        if let Some(t) = self.free.borrow_mut().pop() {
            let mut slots = self.slots.borrow_mut();
            let slot = &mut slots[t as usize];
            assert!(!slot.in_use);
            slot.in_use = true;
            return t;
        }
        let mut slots = self.slots.borrow_mut();
        slots.push(Slot {
            in_use: true,
            done: None,
            waiter: None,
        });
        (slots.len() - 1) as u32
    }

    fn fill_slot(&self, token: u32, ops: OpBatch, replies: ReplyBatch) {
        let waiter = {
            let mut slots = self.slots.borrow_mut();
            let slot = &mut slots[token as usize];
            assert!(
                slot.in_use && slot.done.is_none(),
                "reply for a slot that is not waiting"
            );
            slot.done = Some((ops, replies));
            slot.waiter.take()
        };
        // Woken outside the borrow: waking only schedules the task, but a
        // waker is foreign code.
        if let Some(w) = waiter {
            w.wake();
        }
    }

    async fn wait_slot(&self, token: u32) -> (OpBatch, ReplyBatch) {
        let done = std::future::poll_fn(|cx| {
            let mut slots = self.slots.borrow_mut();
            let slot = &mut slots[token as usize];
            if let Some(done) = slot.done.take() {
                slot.waiter = None;
                return Poll::Ready(done);
            }
            match &mut slot.waiter {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await;
        self.slots.borrow_mut()[token as usize].in_use = false;
        self.free.borrow_mut().push(token);
        let (mut ops, replies) = done;
        ops.clear();
        (ops, replies)
    }

    async fn receive_from(self: Rc<Self>, peer: u16, rx: ConnectedReceiver<ShardMsg>) {
        while let Some(msg) = rx.recv().await {
            match msg {
                ShardMsg::Exec {
                    token,
                    ops,
                    replies,
                } => {
                    let router = self.clone();
                    glommio::spawn_local(async move {
                        router.serve_remote(peer, token, ops, replies).await
                    })
                    .detach();
                }
                ShardMsg::Done {
                    token,
                    ops,
                    replies,
                } => self.fill_slot(token, ops, replies),
            }
        }
    }

    async fn serve_remote(&self, peer: u16, token: u32, ops: OpBatch, mut replies: ReplyBatch) {
        ShardMetrics::incr(&self.state.metrics.forwarded_batches_in);
        replies.clear();
        self.state.execute(&ops, &mut replies).await;
        self.state.settle(&mut replies).await;
        if let Some(tx) = &self.to[usize::from(peer)] {
            // If the peer is gone it no longer waits for this reply.
            let _ = tx
                .send(ShardMsg::Done {
                    token,
                    ops,
                    replies,
                })
                .await;
        }
    }
}
