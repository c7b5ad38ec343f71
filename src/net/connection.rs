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

use std::time::Instant;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::core::status::Status;
use crate::shard::metrics::{OpClass, ShardMetrics};
use crate::shard::ShardContext;

use super::codec::{encode_response, HEADER_BYTES};
use super::conn_buf::RecvBuf;
pub use super::request_batch::ConnConfig;
use super::request_batch::{Entry, Filled, RequestBatch};

/// Why the read loop ended.
enum ReadOutcome {
    Data(usize),
    Closed,
    Shutdown,
    TimedOut,
    /// No frame started within the idle timeout.
    Idle,
    Failed(std::io::Error),
}

pub async fn serve_connection(mut stream: TcpStream, ctx: &ShardContext, cfg: &ConnConfig) {
    let metrics = ctx.router.metrics();
    let body_max = cfg.limits.body_bytes_max();
    let mut rbuf = RecvBuf::new(HEADER_BYTES + body_max);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut batch = RequestBatch::new(ctx);
    let mut needed = HEADER_BYTES;
    loop {
        let Filled {
            consumed,
            close,
            full,
        } = batch.fill(rbuf.data(), ctx, cfg, &mut needed);
        if !batch.is_empty() {
            let started = Instant::now();
            batch.execute(rbuf.data(), ctx).await;
            let nanos = started.elapsed().as_nanos() as u64;
            if cfg.slow_op_nanos > 0 && nanos >= cfg.slow_op_nanos {
                batch.log_slow(ctx, nanos);
            }
            batch.compose(rbuf.data(), cfg, &mut out, metrics, nanos);
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
        match read_more(&mut stream, &mut rbuf, needed, ctx, cfg).await {
            ReadOutcome::Data(_) => {}
            ReadOutcome::Closed | ReadOutcome::Shutdown => return,
            ReadOutcome::Idle => {
                tracing::debug!("closing a connection idle for {:?}", cfg.idle_timeout);
                return;
            }
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

async fn read_more(
    stream: &mut TcpStream,
    rbuf: &mut RecvBuf,
    needed: usize,
    ctx: &ShardContext,
    cfg: &ConnConfig,
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
        // A half-sent frame must complete in time.
        let timeout = async {
            glommio::timer::sleep(cfg.frame_timeout).await;
            ReadOutcome::TimedOut
        };
        future::or(read, future::or(shutdown, timeout)).await
    } else if let Some(idle) = cfg.idle_timeout {
        let timeout = async {
            glommio::timer::sleep(idle).await;
            ReadOutcome::Idle
        };
        future::or(read, future::or(shutdown, timeout)).await
    } else {
        // Without an idle timeout a connection between frames may wait forever,
        // and waiting costs no timer.
        future::or(read, shutdown).await
    };
    if let ReadOutcome::Data(n) = outcome {
        rbuf.advance(n);
    }
    outcome
}
