//! Serves one client connection on the core that accepted it.
//!
//! Loop: read what arrived; parse every complete frame (up to a batch cap) into
//! one routed batch; execute it (one message per other shard involved); write all
//! responses, in request order, with one write; repeat. Pipelined requests are
//! thus answered in order and in batches. Buffers are reused across iterations,
//! so a steady stream of requests allocates nothing.
//!
//! A fatal protocol error is answered and the connection closed; nothing else on
//! the server is affected.

use std::ops::Range;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::core::status::Status;
use crate::core::types::ShardId;
use crate::shard::metrics::{OpClass, ShardMetrics};
use crate::shard::{OpKind, RoutedBatch, ShardContext};

use super::codec::{
    decode_request, encode_response, parse_frame, HelloInfo, Limits, Opcode, Parsed, Request, Side,
    HEADER_BYTES,
};
use super::conn_buf::RecvBuf;

/// At most this many requests go into one batch, so one connection cannot hold a
/// shard for long and responses start flowing early.
pub const BATCH_REQUESTS_MAX: usize = 1024;
/// Past this many request bytes, the batch is closed.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

pub struct ConnConfig {
    pub limits: Limits,
    /// A frame that has started arriving must complete within this time.
    pub frame_timeout: Duration,
    /// Batches slower than this are logged with their ops (0: never).
    pub slow_op_nanos: u64,
    pub hello: HelloInfo,
}

/// What to answer for each request of a batch, in arrival order.
enum Entry {
    /// Answered from `shard`'s replies, in order.
    Routed {
        id: u64,
        opcode: u8,
        shard: ShardId,
    },
    Hello {
        id: u64,
    },
    Ping {
        id: u64,
        payload: Range<usize>,
    },
    Error {
        id: u64,
        opcode: u8,
        status: Status,
        detail: String,
    },
}

/// Why the read loop ended.
enum ReadOutcome {
    Data(usize),
    Closed,
    Shutdown,
    TimedOut,
    Failed(std::io::Error),
}

pub async fn serve_connection(mut stream: TcpStream, ctx: &ShardContext, cfg: &ConnConfig) {
    let metrics = ctx.router.metrics();
    let body_max = cfg.limits.body_bytes_max();
    let mut rbuf = RecvBuf::new(HEADER_BYTES + body_max);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut batch = ctx.new_batch();
    let mut order: Vec<Entry> = Vec::with_capacity(64);
    let mut cursors: Vec<usize> = vec![0; usize::from(ctx.shard_count())];
    let mut needed = HEADER_BYTES;
    loop {
        let (consumed, close, full) = fill_batch(
            rbuf.data(),
            ctx,
            cfg,
            body_max,
            &mut batch,
            &mut order,
            &mut needed,
        );
        if !order.is_empty() {
            let started = Instant::now();
            if !batch.is_empty() {
                ctx.router.execute(&mut batch).await;
            }
            let nanos = started.elapsed().as_nanos() as u64;
            if cfg.slow_op_nanos > 0 && nanos >= cfg.slow_op_nanos {
                log_slow(&order, ctx, nanos);
            }
            compose(
                &order,
                &batch,
                rbuf.data(),
                cfg,
                &mut cursors,
                &mut out,
                metrics,
                nanos,
            );
        }
        let closing = close.is_some();
        if let Some(Entry::Error {
            id,
            opcode,
            status,
            detail,
        }) = close
        {
            ShardMetrics::incr(&metrics.protocol_errors);
            metrics.record_request(OpClass::Other, status, 0);
            tracing::debug!(
                status = status.name(),
                "closing connection after a protocol error: {detail}"
            );
            encode_response(&mut out, opcode, id, status, detail.as_bytes());
        }
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out).await {
                tracing::debug!("write to client failed: {e}");
                return;
            }
            out.clear();
        }
        batch.clear();
        order.clear();
        rbuf.consume(consumed);
        if closing {
            let _ = stream.flush().await;
            return;
        }
        if full {
            // More complete frames may already be buffered.
            continue;
        }
        if ctx.shutdown.is_set() {
            return;
        }
        match read_more(&mut stream, &mut rbuf, needed, ctx, cfg.frame_timeout).await {
            ReadOutcome::Data(_) => {}
            ReadOutcome::Closed | ReadOutcome::Shutdown => return,
            ReadOutcome::TimedOut => {
                ShardMetrics::incr(&metrics.protocol_errors);
                metrics.record_request(OpClass::Other, Status::FrameTimeout, 0);
                let detail = format!("frame incomplete after {:?}", cfg.frame_timeout);
                encode_response(&mut out, 0, 0, Status::FrameTimeout, detail.as_bytes());
                let _ = stream.write_all(&out).await;
                return;
            }
            ReadOutcome::Failed(e) => {
                tracing::debug!("read from client failed: {e}");
                return;
            }
        }
    }
}

/// Parse complete frames from `data` into the batch. Returns the bytes consumed,
/// the error to close with (if any), and whether the batch cap was hit.
fn fill_batch(
    data: &[u8],
    ctx: &ShardContext,
    cfg: &ConnConfig,
    body_max: usize,
    batch: &mut RoutedBatch,
    order: &mut Vec<Entry>,
    needed: &mut usize,
) -> (usize, Option<Entry>, bool) {
    let mut consumed = 0;
    *needed = HEADER_BYTES;
    while order.len() < BATCH_REQUESTS_MAX && consumed < BATCH_BYTES_MAX {
        match parse_frame(&data[consumed..], Side::Server, body_max) {
            Parsed::Incomplete { needed: n } => {
                *needed = n;
                return (consumed, None, false);
            }
            Parsed::Bad { request_id, error } => {
                let close = Entry::Error {
                    id: request_id,
                    opcode: 0,
                    status: error.status,
                    detail: error.detail,
                };
                return (consumed, Some(close), false);
            }
            Parsed::Frame { header, body, len } => {
                let id = header.request_id.get();
                let body_start = consumed + HEADER_BYTES;
                consumed += len;
                match decode_request(&header, body, &cfg.limits) {
                    Ok(Request::Get { key }) => {
                        route(ctx, batch, order, id, Opcode::Get, OpKind::Get, key, b"")
                    }
                    Ok(Request::Put { key, value }) => {
                        route(ctx, batch, order, id, Opcode::Put, OpKind::Put, key, value)
                    }
                    Ok(Request::Delete { key }) => route(
                        ctx,
                        batch,
                        order,
                        id,
                        Opcode::Delete,
                        OpKind::Delete,
                        key,
                        b"",
                    ),
                    Ok(Request::Hello) => order.push(Entry::Hello { id }),
                    Ok(Request::Ping { payload }) => order.push(Entry::Ping {
                        id,
                        payload: body_start..body_start + payload.len(),
                    }),
                    Err(e) if e.fatal => {
                        let close = Entry::Error {
                            id,
                            opcode: header.opcode,
                            status: e.status,
                            detail: e.detail,
                        };
                        return (consumed, Some(close), false);
                    }
                    Err(e) => order.push(Entry::Error {
                        id,
                        opcode: header.opcode,
                        status: e.status,
                        detail: e.detail,
                    }),
                }
            }
        }
    }
    (consumed, None, true)
}

#[allow(clippy::too_many_arguments)]
fn route(
    ctx: &ShardContext,
    batch: &mut RoutedBatch,
    order: &mut Vec<Entry>,
    id: u64,
    opcode: Opcode,
    kind: OpKind,
    key: &[u8],
    value: &[u8],
) {
    let shard = ctx.router.shard_of(key);
    batch.push(shard, kind, key, value);
    order.push(Entry::Routed {
        id,
        opcode: opcode as u8,
        shard,
    });
}

#[allow(clippy::too_many_arguments)]
fn compose(
    order: &[Entry],
    batch: &RoutedBatch,
    data: &[u8],
    cfg: &ConnConfig,
    cursors: &mut [usize],
    out: &mut Vec<u8>,
    metrics: &ShardMetrics,
    nanos: u64,
) {
    cursors.iter_mut().for_each(|c| *c = 0);
    for entry in order {
        match entry {
            Entry::Routed { id, opcode, shard } => {
                let i = &mut cursors[shard.index()];
                let (status, value) = batch.replies(*shard).get(*i);
                *i += 1;
                let class = match Opcode::from_u8(*opcode) {
                    Some(Opcode::Get) => OpClass::Get,
                    Some(Opcode::Put) => OpClass::Put,
                    Some(Opcode::Delete) => OpClass::Delete,
                    _ => OpClass::Other,
                };
                metrics.record_request(class, status, nanos);
                encode_response(out, *opcode, *id, status, value);
            }
            Entry::Hello { id } => {
                super::codec::encode_response_with(out, Opcode::Hello as u8, *id, Status::Ok, |o| {
                    cfg.hello.encode(o)
                })
            }
            Entry::Ping { id, payload } => encode_response(
                out,
                Opcode::Ping as u8,
                *id,
                Status::Ok,
                &data[payload.clone()],
            ),
            Entry::Error {
                id,
                opcode,
                status,
                detail,
            } => {
                metrics.record_request(OpClass::Other, *status, nanos);
                encode_response(out, *opcode, *id, *status, detail.as_bytes())
            }
        }
    }
}

async fn read_more(
    stream: &mut TcpStream,
    rbuf: &mut RecvBuf,
    needed: usize,
    ctx: &ShardContext,
    frame_timeout: Duration,
) -> ReadOutcome {
    let partial = !rbuf.is_empty();
    let spare = rbuf.spare(needed);
    let read = async {
        match stream.read(spare).await {
            Ok(0) => ReadOutcome::Closed,
            Ok(n) => ReadOutcome::Data(n),
            Err(e) => ReadOutcome::Failed(e),
        }
    };
    let shutdown = async {
        ctx.shutdown.wait().await;
        ReadOutcome::Shutdown
    };
    let outcome = if partial {
        // A half-sent frame must complete in time; an idle connection may wait forever.
        let timeout = async {
            glommio::timer::sleep(frame_timeout).await;
            ReadOutcome::TimedOut
        };
        future::or(read, future::or(shutdown, timeout)).await
    } else {
        future::or(read, shutdown).await
    };
    if let ReadOutcome::Data(n) = outcome {
        rbuf.advance(n);
    }
    outcome
}

/// One warning line per slow batch, naming its ops and the shards they went to.
#[cold]
fn log_slow(order: &[Entry], ctx: &ShardContext, nanos: u64) {
    let mut ops = [0usize; 4];
    let mut shards: Vec<u16> = Vec::new();
    for e in order {
        if let Entry::Routed { opcode, shard, .. } = e {
            let i = match Opcode::from_u8(*opcode) {
                Some(Opcode::Get) => 0,
                Some(Opcode::Put) => 1,
                Some(Opcode::Delete) => 2,
                _ => 3,
            };
            ops[i] += 1;
            if !shards.contains(&shard.0) {
                shards.push(shard.0);
            }
        } else {
            ops[3] += 1;
        }
    }
    tracing::warn!(
        shard = ctx.shard().0,
        latency_ms = nanos as f64 / 1e6,
        gets = ops[0],
        puts = ops[1],
        deletes = ops[2],
        other = ops[3],
        owner_shards = ?shards,
        "slow request batch"
    );
}
