//! Reads more of one client's input, for either protocol: grows the
//! connection's receive buffer only within the shard's buffer budget (a
//! connection that cannot get room is not read until another gives some
//! back), then waits for bytes, the shard's stop, or a deadline: the frame
//! timeout while a frame is under way, else the idle timeout.
//!
//! It must never parse what it reads: the bytes are the protocol's
//! (net/connection.rs, net/resp/connection.rs).

use futures_lite::{future, AsyncReadExt};

use crate::shard::ShardContext;

use super::conn_buf::RecvBuf;
use super::outbound::Held;
use super::request_batch::ConnConfig;
use super::stream::NetStream;

/// Why a read ended.
pub enum ReadOutcome {
    /// This many bytes arrived (the buffer has advanced past them).
    Data(usize),
    Closed,
    Shutdown,
    /// A frame under way did not complete within the frame timeout.
    TimedOut,
    /// No frame started within the idle timeout.
    Idle,
    Failed(std::io::Error),
}

/// Read what arrives into `rbuf`, making room for `needed` more bytes (0:
/// whatever the buffer's next growth step is).
pub async fn read_more(
    stream: &mut NetStream,
    rbuf: &mut RecvBuf,
    needed: usize,
    ctx: &ShardContext,
    cfg: &ConnConfig,
    held_in: &Held<'_>,
) -> ReadOutcome {
    let partial = !rbuf.is_empty();
    let grow = rbuf.growth(needed);
    if grow > 0 && !held_in.try_take(grow) {
        // The shard's buffer budget is spent: stop reading this connection
        // until another gives room back. A frame is under way (the buffer
        // is full), so its deadline still runs.
        let outcome = future::or(
            async {
                held_in.take(grow).await;
                None
            },
            future::or(
                async {
                    ctx.shutdown.wait().await;
                    Some(ReadOutcome::Shutdown)
                },
                async {
                    glommio::timer::sleep(cfg.frame_timeout).await;
                    Some(ReadOutcome::TimedOut)
                },
            ),
        )
        .await;
        if let Some(outcome) = outcome {
            return outcome;
        }
    }
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
