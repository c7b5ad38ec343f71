//! What a connection owes its client, and what all of a shard's connections
//! may hold in buffers together.
//!
//! `Outbound` is one connection's reply buffer and its writer. Replies are
//! written as they are composed, and writing waits for the client to take
//! them: a connection whose client does not read stops being read (its next
//! requests stay in the kernel's socket buffer), so unread replies cost a
//! bounded amount of memory. A large value is written straight from the reply
//! batch that holds it, never copied behind its header. A write that makes no
//! progress for the stall timeout closes the connection (counted, logged once).
//!
//! `BufferBudget` is a shard's budget for connection buffers (partial input
//! frames past each connection's base buffer, and replies in flight). Single
//! core: plain `Cell`s, no lock. It must never hand out more than it has: a
//! connection that cannot get room waits (counted as paused) until another
//! gives some back, under the deadline its caller sets.

use std::cell::Cell;
use std::time::Duration;

use futures_lite::{future, AsyncWriteExt};

use super::stream::NetStream;
use crate::shard::metrics::ShardMetrics;
use crate::shard::wake::WaitQueue;

/// Values at least this large are written from where they lie instead of
/// being copied into the reply buffer.
pub const DIRECT_WRITE_BYTES: usize = 64 * 1024;

/// Why replies could not be delivered.
pub enum SendError {
    /// The socket failed (the client went away).
    Io(std::io::Error),
    /// The client took no bytes for the stall timeout.
    Stalled,
}

pub struct Outbound {
    buf: Vec<u8>,
    /// Flush the buffer once it holds this much (the per-connection bound).
    flush_at: usize,
    stall: Duration,
}

impl Outbound {
    pub fn new(flush_at: usize, stall: Duration) -> Outbound {
        Outbound {
            buf: Vec::with_capacity(DIRECT_WRITE_BYTES),
            flush_at: flush_at.max(DIRECT_WRITE_BYTES),
            stall,
        }
    }

    /// The buffer to compose replies into.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Whether the buffer reached its bound and should be written out now.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= self.flush_at
    }

    /// Write everything buffered. Returns once the kernel took it all.
    pub async fn flush(&mut self, stream: &mut NetStream) -> Result<(), SendError> {
        let result = write_all_timed(stream, &self.buf, self.stall).await;
        self.buf.clear();
        if self.buf.capacity() > 2 * self.flush_at {
            // One oversized burst (a large non-value body) must not pin its
            // memory for the life of the connection.
            self.buf = Vec::with_capacity(DIRECT_WRITE_BYTES);
        }
        result
    }

    /// Write what is buffered, then `value` from where it lies.
    pub async fn send_direct(
        &mut self,
        stream: &mut NetStream,
        value: &[u8],
    ) -> Result<(), SendError> {
        self.flush(stream).await?;
        write_all_timed(stream, value, self.stall).await
    }
}

/// `write_all` that gives up when no byte is taken for `stall`.
async fn write_all_timed(
    stream: &mut NetStream,
    mut bytes: &[u8],
    stall: Duration,
) -> Result<(), SendError> {
    while !bytes.is_empty() {
        // A socket with room takes the bytes at once: no timer (a timer costs
        // an allocation, and the common case must not).
        let wrote = match future::poll_once(stream.write(bytes)).await {
            Some(done) => Some(done),
            None => {
                future::or(async { Some(stream.write(bytes).await) }, async {
                    glommio::timer::sleep(stall).await;
                    None
                })
                .await
            }
        };
        match wrote {
            None => return Err(SendError::Stalled),
            Some(Ok(0)) => {
                return Err(SendError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            Some(Ok(n)) => bytes = &bytes[n..],
            Some(Err(e)) => return Err(SendError::Io(e)),
        }
    }
    if stream.buffers_writes() {
        flush_timed(stream, stall).await?;
    }
    Ok(())
}

/// Push out what a TLS session sealed but the socket has not taken yet,
/// under the same stall rule as the writes (a TLS write may return once its
/// bytes are queued in rustls, before the kernel has them).
#[cold]
async fn flush_timed(stream: &mut NetStream, stall: Duration) -> Result<(), SendError> {
    let flushed = future::or(async { Some(stream.flush().await) }, async {
        glommio::timer::sleep(stall).await;
        None
    })
    .await;
    match flushed {
        None => Err(SendError::Stalled),
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(SendError::Io(e)),
    }
}

/// A shard's budget for connection buffers.
pub struct BufferBudget {
    limit: usize,
    used: Cell<usize>,
    released: WaitQueue,
}

impl BufferBudget {
    pub fn new(limit: usize) -> BufferBudget {
        BufferBudget {
            limit,
            used: Cell::new(0),
            released: WaitQueue::default(),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Take `bytes` if they fit.
    pub fn try_take(&self, bytes: usize, metrics: &ShardMetrics) -> bool {
        let used = self.used.get();
        if used + bytes > self.limit {
            return false;
        }
        self.used.set(used + bytes);
        metrics.set_conn_buffer_bytes(self.used.get());
        true
    }

    /// Take `bytes`, waiting for other connections to give some back.
    /// Counted once as a pause when it has to wait. Callers race this
    /// against their own deadline (a frame timeout, shutdown).
    pub async fn take(&self, bytes: usize, metrics: &ShardMetrics) {
        if self.try_take(bytes, metrics) {
            return;
        }
        metrics.connection_paused();
        self.released
            .until(|| self.try_take(bytes, metrics).then_some(()))
            .await;
    }

    /// Account `bytes` that are already allocated (a reply round that
    /// overshot its reservation): they count against everyone's next take.
    pub fn charge(&self, bytes: usize, metrics: &ShardMetrics) {
        self.used.set(self.used.get() + bytes);
        metrics.set_conn_buffer_bytes(self.used.get());
    }

    pub fn give_back(&self, bytes: usize, metrics: &ShardMetrics) {
        if bytes == 0 {
            return;
        }
        assert!(bytes <= self.used.get(), "buffer budget released twice");
        self.used.set(self.used.get() - bytes);
        metrics.set_conn_buffer_bytes(self.used.get());
        self.released.wake_all();
    }
}

/// What one connection holds of its shard's budget; given back on drop, so
/// a connection that ends on any path returns everything.
pub struct Held<'a> {
    budget: &'a BufferBudget,
    metrics: &'a ShardMetrics,
    bytes: Cell<usize>,
}

impl<'a> Held<'a> {
    pub fn new(budget: &'a BufferBudget, metrics: &'a ShardMetrics) -> Held<'a> {
        Held {
            budget,
            metrics,
            bytes: Cell::new(0),
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes.get()
    }

    pub fn try_take(&self, bytes: usize) -> bool {
        let ok = self.budget.try_take(bytes, self.metrics);
        if ok {
            self.bytes.set(self.bytes.get() + bytes);
        }
        ok
    }

    pub async fn take(&self, bytes: usize) {
        self.budget.take(bytes, self.metrics).await;
        self.bytes.set(self.bytes.get() + bytes);
    }

    pub fn charge(&self, bytes: usize) {
        self.budget.charge(bytes, self.metrics);
        self.bytes.set(self.bytes.get() + bytes);
    }

    pub fn give_back(&self, bytes: usize) {
        let bytes = bytes.min(self.bytes.get());
        self.budget.give_back(bytes, self.metrics);
        self.bytes.set(self.bytes.get() - bytes);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes.get(), self.metrics);
    }
}
