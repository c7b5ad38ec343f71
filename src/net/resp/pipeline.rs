//! Runs of plain pipelined GETs, SETs or INCRs, executed as one routed batch.
//!
//! A client that pipelines plain `SET k v` (redis-cli --pipe, redis-benchmark
//! -P) must not pay one WAL sync per command: consecutive plain SETs go to
//! the shards as one batch (one message per shard, one group commit), and
//! consecutive plain GETs likewise (one message per shard), and consecutive
//! `INCR k` (RMW ops, each atomic in its shard; a shard runs its ops in
//! order, so two INCRs of one key in a run see each other). Any other
//! command, or a switch between kinds, first answers the run, so replies
//! keep the order of the commands.
//!
//! A GET run's replies are bounded like the native protocol's: each shard
//! stops once its replies hold the round's room (the connection's reply
//! buffer, taken from the shard's buffer budget, or the base allowance when
//! the budget is spent); what came back is written out in order up to the
//! first GET that did not run, and the rest run again in the next round.
//! Only reads are re-run, never writes: a SET run has no reply values and is
//! never cut, nor is an INCR run. It must never run anything but GET, PUT
//! and the INCR program.

use std::ops::Range;
use std::time::Instant;

use crate::net::stream::NetStream;

use crate::core::limits::{KEY_BYTES_MAX, REPLY_BASE_BYTES};
use crate::core::status::Status;
use crate::core::types::ShardId;
use crate::shard::metrics::{OpClass, ShardMetrics};
use crate::shard::{OpKind, RoutedBatch, ShardContext};

use super::codec::Reply;
use super::commands::{lookup, status_error};
use super::strings::rmw_reply;
use crate::core::auth::Access;
use crate::core::rmw::Program;
use crate::net::outbound::{Held, Outbound, SendError, DIRECT_WRITE_BYTES};
use crate::net::request_batch::ConnConfig;

struct Entry {
    shard: ShardId,
    key: Range<usize>,
}

pub struct Pipeline {
    batch: RoutedBatch,
    kind: Option<OpKind>,
    entries: Vec<Entry>,
    /// Per shard: replies of this round already written.
    cursors: Vec<usize>,
}

/// The run kind of a plain `GET k`, `SET k v` (no options) or `INCR k`, if
/// it is one.
pub fn plain(argv: &[&[u8]]) -> Option<OpKind> {
    if argv.get(1).is_none_or(|k| k.len() > KEY_BYTES_MAX) {
        return None;
    }
    match argv.len() {
        2 if argv[0].eq_ignore_ascii_case(b"get") => Some(OpKind::Get),
        2 if argv[0].eq_ignore_ascii_case(b"incr") => Some(OpKind::Rmw),
        3 if argv[0].eq_ignore_ascii_case(b"set") => Some(OpKind::Put),
        _ => None,
    }
}

/// INCR's program (`core::rmw::Program::IncrBy(1)` encoded).
/// Encoded once per process: a run of INCRs costs no allocation for it.
fn incr_program() -> &'static [u8] {
    static PROGRAM: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(|| {
        let mut b = Vec::with_capacity(9);
        Program::IncrBy(1).encode(&mut b);
        b
    })
}

/// The access a plain GET, SET or INCR needs: the command table's, so the
/// run and the single command are checked alike.
pub fn plain_access(kind: OpKind) -> Access {
    let name = match kind {
        OpKind::Get => "get",
        OpKind::Rmw => "incr",
        _ => "set",
    };
    // Both are in the table (a unit test says so); failing closed if not.
    lookup(name).map_or(Access::Admin, |c| c.access)
}

/// What `Pipeline::answer` needs from the connection.
pub struct Io<'a> {
    pub ctx: &'a ShardContext,
    pub cfg: &'a ConnConfig,
    pub outb: &'a mut Outbound,
    pub stream: &'a mut NetStream,
    pub held_out: &'a Held<'a>,
    pub metrics: &'a ShardMetrics,
    pub proto: u8,
}

impl Pipeline {
    pub fn new(ctx: &ShardContext) -> Pipeline {
        Pipeline {
            batch: ctx.new_batch(),
            kind: None,
            entries: Vec::new(),
            cursors: vec![0; usize::from(ctx.shard_count())],
        }
    }

    pub fn kind(&self) -> Option<OpKind> {
        self.kind
    }

    /// Queue a plain GET (`value` empty), SET or INCR (`value` empty); `key`
    /// and `value` are ranges of `data`, the receive buffer.
    pub fn push(
        &mut self,
        ctx: &ShardContext,
        data: &[u8],
        kind: OpKind,
        key: Range<usize>,
        value: Range<usize>,
    ) {
        debug_assert!(self.kind.is_none_or(|k| k == kind), "a run has one kind");
        self.kind = Some(kind);
        let shard = ctx.router.shard_of(&data[key.clone()]);
        if kind == OpKind::Rmw {
            self.batch
                .push(shard, kind, &data[key.clone()], incr_program());
        } else {
            self.batch
                .push(shard, kind, &data[key.clone()], &data[value]);
        }
        self.entries.push(Entry { shard, key });
    }

    /// Execute the run and write its replies in order; leaves it empty.
    pub async fn answer(&mut self, data: &[u8], io: &mut Io<'_>) -> Result<(), SendError> {
        let Some(kind) = self.kind else {
            return Ok(());
        };
        let class = if kind == OpKind::Get {
            OpClass::Get
        } else {
            OpClass::Put
        };
        let mut from = 0;
        while from < self.entries.len() {
            let mut round = 0;
            if kind == OpKind::Get {
                let room = io.cfg.reply_buffer_bytes.min(io.cfg.buffers.limit());
                round = if io.held_out.try_take(room) {
                    room.max(REPLY_BASE_BYTES)
                } else {
                    io.metrics.connection_paused();
                    REPLY_BASE_BYTES
                };
                self.batch.set_reply_budget(round);
            }
            let started = Instant::now();
            io.ctx.router.execute(&mut self.batch).await;
            let nanos = started.elapsed().as_nanos() as u64;
            let holding = self.batch.reply_bytes();
            if round > 0 && holding > io.held_out.bytes() {
                io.held_out.charge(holding - io.held_out.bytes());
            }
            self.cursors.iter_mut().for_each(|c| *c = 0);
            let mut cut = self.entries.len();
            for (i, e) in self.entries.iter().enumerate().skip(from) {
                let c = &mut self.cursors[e.shard.index()];
                let replies = self.batch.replies(e.shard);
                if *c >= replies.len() {
                    cut = i;
                    break;
                }
                let (status, value) = replies.get(*c);
                *c += 1;
                io.metrics.record_request(class, status, nanos);
                let mut r = Reply {
                    out: io.outb.buf(),
                    proto: io.proto,
                };
                match (status, kind) {
                    (Status::Ok, OpKind::Put) => r.simple("OK"),
                    (_, OpKind::Rmw) => {
                        rmw_reply(&mut r, status, value, false);
                    }
                    (Status::Ok, _) if value.len() >= DIRECT_WRITE_BYTES => {
                        r.bulk_header(value.len());
                        io.outb.send_direct(io.stream, value).await?;
                        io.outb.buf().extend_from_slice(b"\r\n");
                    }
                    (Status::Ok, _) => r.bulk(value),
                    (Status::NotFound, OpKind::Get) => r.nil(),
                    (other, _) => r.error(&status_error(other)),
                }
                if io.outb.is_full() {
                    io.outb.flush(io.stream).await?;
                }
            }
            // The rest of a cut GET run runs again: reads only, so running
            // one twice (its reply was dropped) changes nothing.
            self.batch.clear();
            for e in &self.entries[cut..] {
                self.batch
                    .push(e.shard, OpKind::Get, &data[e.key.clone()], b"");
            }
            from = cut;
            if from < self.entries.len() {
                // What was composed goes out before the next round runs: the
                // client's reading paces the rounds.
                io.outb.flush(io.stream).await?;
            }
            io.held_out.give_back(io.held_out.bytes());
        }
        self.batch.clear_and_trim(io.cfg.reply_buffer_bytes);
        self.entries.clear();
        self.kind = None;
        Ok(())
    }
}
