//! Accepts client connections on one of a shard's listeners, for either
//! protocol: admission (the shard's connection limit and the per-source
//! limit, one count shared by both protocols), the refusal a plaintext client
//! is told, `TCP_NODELAY`, the TLS handshake, the open-connection count and
//! its metrics; then each connection's loop runs on a task of its own.
//!
//! It must never read a request: what is said on a connection is its
//! protocol's (net/connection.rs, net/resp/connection.rs). Both listeners
//! took the same steps in two copies before; one copy keeps a fix to one
//! from missing the other.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{future, AsyncWriteExt};
use glommio::net::TcpListener;

use crate::shard::wake::WaitQueue;
use crate::shard::ShardContext;

use super::admission::{Gate, Refusal};
use super::request_batch::ConnConfig;
use super::stream::NetStream;
use super::tls::TlsHandle;

/// What one shard's listeners share: the connection count (both protocols
/// count against one limit) and what a connection's loop needs.
#[derive(Clone)]
pub struct Listening {
    pub ctx: ShardContext,
    pub cfg: Rc<ConnConfig>,
    pub gate: Gate,
    /// Connections open on this shard, both protocols.
    pub open: Rc<Cell<usize>>,
    /// Woken whenever one closes (the shard's stop waits for `open == 0`).
    pub closed: Rc<WaitQueue>,
    pub tls: Option<Arc<TlsHandle>>,
}

/// What differs between the protocols' listeners.
pub struct Protocol<F> {
    /// The label of admission's log lines and of this loop's warnings.
    pub name: &'static str,
    /// What a refused plaintext client is sent before the close, in its own
    /// protocol (a TLS client is closed without a word: plaintext means
    /// nothing to it).
    pub refusal: fn(Refusal) -> Vec<u8>,
    /// The connection's loop; gives the stream back for its close.
    pub serve: F,
}

/// Accept on `listener` until the shard stops. Returns when the listener is
/// done; the connections it started may still be open (`Listening::closed`
/// says when they close).
pub async fn accept_until_shutdown<F, Fut>(
    listener: TcpListener,
    shared: Listening,
    protocol: Protocol<F>,
) where
    F: Fn(NetStream, ShardContext, Rc<ConnConfig>) -> Fut + Clone + 'static,
    Fut: Future<Output = NetStream> + 'static,
{
    let Listening {
        ctx,
        cfg,
        gate,
        open,
        closed,
        tls,
    } = shared;
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            ctx.shutdown.wait().await;
            None
        })
        .await;
        let Some(accepted) = accepted else { break };
        let mut stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(
                    shard = ctx.shard().0,
                    "{} accept failed: {e}",
                    protocol.name
                );
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let metrics = ctx.router.metrics();
        let peer = stream.peer_addr().ok().map(|a| a.ip());
        let slot = match gate.admit(ctx.shard().0, open.get(), peer, protocol.name) {
            Ok(slot) => slot,
            Err(refused) => {
                metrics.connection_rejected();
                if tls.is_some() {
                    continue;
                }
                let reply = (protocol.refusal)(refused);
                glommio::spawn_local(async move {
                    let _ = stream.write_all(&reply).await;
                })
                .detach();
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        open.set(open.get() + 1);
        metrics.connection_opened(open.get());
        // The configuration current at accept: a reload (SIGHUP) applies to
        // the connections accepted after it.
        let acceptor = tls
            .as_ref()
            .map(|t| futures_rustls::TlsAcceptor::from(t.current()));
        let (ctx, cfg, open, closed) = (ctx.clone(), cfg.clone(), open.clone(), closed.clone());
        let serve = protocol.serve.clone();
        glommio::spawn_local(async move {
            let stream = match acceptor {
                None => Some(NetStream::Plain(stream)),
                Some(acceptor) => {
                    super::stream::handshake(&acceptor, stream, &ctx, cfg.frame_timeout)
                        .await
                        .map(|s| NetStream::Tls(Box::new(s)))
                }
            };
            if let Some(stream) = stream {
                let stream = serve(stream, ctx.clone(), cfg).await;
                super::stream::close(stream).await;
            }
            // The source's place goes back with the shard's.
            drop(slot);
            open.set(open.get() - 1);
            ctx.router.metrics().connection_closed(open.get());
            closed.wake_all();
        })
        .detach();
    }
}
