//! Serves one client connection on the core that accepted it.
//!
//! Loop: read what arrived; parse every complete frame (up to a batch cap) into
//! one routed batch; execute it (one message per other shard involved); write all
//! responses, in request order; repeat. Pipelined requests are thus answered in
//! order and in batches. Buffers are reused across iterations, so a steady
//! stream of requests allocates nothing.
//!
//! Memory is bounded whatever the client does (issue 17). Nothing more is read
//! while replies are being written, and a batch's replies are produced in
//! rounds of at most `reply_buffer_bytes` per shard (see `request_batch`), so
//! a client that pipelines large GETs and never reads holds one round. Input
//! buffer growth and reply rounds are taken from the shard's `BufferBudget`;
//! a connection that cannot get room is paused (not read) until others give
//! some back. A client that takes no reply bytes for `reply_stall` is
//! disconnected.
//!
//! A fatal protocol error is answered and the connection closed; nothing else on
//! the server is affected.

use std::time::Instant;

use futures_lite::AsyncWriteExt;

use crate::core::limits::REPLY_BASE_BYTES;
use crate::core::status::Status;
use crate::shard::metrics::{OpClass, ShardMetrics};
use crate::shard::ShardContext;

use super::codec::{encode_response, HEADER_BYTES};
use super::conn_buf::RecvBuf;
use super::inbound::{read_more, ReadOutcome};
use super::outbound::{Held, Outbound, SendError};
pub use super::request_batch::ConnConfig;
use super::request_batch::{Entry, Filled, RequestBatch};
use super::stream::NetStream;

pub async fn serve_connection(stream: &mut NetStream, ctx: &ShardContext, cfg: &ConnConfig) {
    let metrics = ctx.router.metrics();
    let body_max = cfg.limits.body_bytes_max();
    let mut rbuf = RecvBuf::new(HEADER_BYTES + body_max);
    let mut outb = Outbound::new(cfg.reply_buffer_bytes, cfg.reply_stall);
    // Replies of up to this much per round need no share of the budget (like
    // the base receive buffer): small requests always make progress.
    let mut batch = RequestBatch::new(ctx);
    batch.start_session(
        cfg,
        stream.peer_addr().ok().map(|a| a.ip()),
        stream.peer_certificate_name().as_deref(),
    );
    let mut needed = HEADER_BYTES;
    // This connection's share of the shard's buffer budget, given back on
    // every exit path (drop).
    let held_in = Held::new(&cfg.buffers, metrics);
    let held_out = Held::new(&cfg.buffers, metrics);
    loop {
        let Filled {
            consumed,
            close,
            full,
        } = batch.fill(rbuf.data(), ctx, cfg, &mut needed);
        if !batch.is_empty() {
            // Room for one round of replies, before any value is read. When
            // the shard's budget is spent (hostile clients hold it), the
            // connection does not wait for it: a client asking for a small
            // value must not queue behind clients that hoard frames or leave
            // replies unread. Its rounds shrink to the base allowance every
            // connection has (one op at a time past it, charged as it goes).
            let mut round = REPLY_BASE_BYTES;
            if batch.reads_values() {
                let room = cfg.reply_buffer_bytes.min(cfg.buffers.limit());
                if held_out.try_take(room) {
                    round = room.max(REPLY_BASE_BYTES);
                } else {
                    metrics.connection_paused();
                }
            }
            loop {
                let started = Instant::now();
                batch.execute(rbuf.data(), ctx, cfg, round).await;
                let nanos = started.elapsed().as_nanos() as u64;
                if cfg.slow_op_nanos > 0 && nanos >= cfg.slow_op_nanos {
                    batch.log_slow(ctx, nanos);
                }
                // A round may overshoot its room by one value per shard: it
                // is held, so it counts.
                let holding = batch.reply_bytes();
                if holding > held_out.bytes() {
                    held_out.charge(holding - held_out.bytes());
                }
                let sent = batch
                    .compose(rbuf.data(), cfg, &mut outb, stream, metrics, nanos)
                    .await;
                let sent = match sent {
                    // Everything owed before the deferred ops goes out before
                    // they run: the client's reading paces the rounds.
                    Ok(false) => outb.flush(stream).await.map(|()| false),
                    other => other,
                };
                match sent {
                    Ok(true) => break,
                    Ok(false) => continue,
                    Err(e) => return send_failed(e, metrics, cfg),
                }
            }
        }
        let closing = close.is_some();
        if let Some(Entry::Error {
            id,
            opcode,
            status,
            detail,
        }) = close
        {
            metrics.protocol_error();
            metrics.record_request(OpClass::Other, status, 0);
            tracing::debug!(
                status = status.name(),
                "closing connection after a protocol error: {detail}"
            );
            encode_response(outb.buf(), opcode, id, status, detail.as_bytes());
        }
        if !outb.is_empty() {
            if let Err(e) = outb.flush(stream).await {
                return send_failed(e, metrics, cfg);
            }
        }
        batch.clear(cfg.reply_buffer_bytes);
        held_out.give_back(held_out.bytes());
        rbuf.consume(consumed);
        if held_in.bytes() > rbuf.extra() {
            held_in.give_back(held_in.bytes() - rbuf.extra());
        }
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
        match read_more(stream, &mut rbuf, needed, ctx, cfg, &held_in).await {
            ReadOutcome::Data(_) => {}
            ReadOutcome::Closed | ReadOutcome::Shutdown => return,
            ReadOutcome::Idle => {
                tracing::debug!("closing a connection idle for {:?}", cfg.idle_timeout);
                return;
            }
            ReadOutcome::TimedOut => {
                metrics.protocol_error();
                metrics.record_request(OpClass::Other, Status::FrameTimeout, 0);
                let detail = format!("frame incomplete after {:?}", cfg.frame_timeout);
                encode_response(outb.buf(), 0, 0, Status::FrameTimeout, detail.as_bytes());
                // Best effort: the client may not be reading either.
                let _ = outb.flush(stream).await;
                return;
            }
            ReadOutcome::Failed(e) => {
                tracing::debug!("read from client failed: {e}");
                return;
            }
        }
    }
}

/// The connection ends because its replies could not be delivered.
#[cold]
fn send_failed(e: SendError, metrics: &ShardMetrics, cfg: &ConnConfig) {
    match e {
        SendError::Io(e) => tracing::debug!("write to client failed: {e}"),
        SendError::Stalled => {
            metrics.connection_closed_by_limit();
            // One line per connection: it is closed right after.
            tracing::warn!(
                stall = ?cfg.reply_stall,
                "closing a connection whose client took no reply bytes for the reply stall timeout (reply_stall_timeout_ms)"
            );
        }
    }
}
