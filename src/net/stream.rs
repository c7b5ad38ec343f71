//! A connection's byte stream as the server sees it: a plain TCP stream, or
//! TLS over one. Every listener's connection code reads and writes this type,
//! so plaintext and TLS share one request path. The load generator
//! (`corekv bench`) uses the same type with a client-side TLS session
//! ([`ClientNetStream`]).
//!
//! It owns the choice between the two, the server's TLS handshake (bounded
//! by the frame timeout) and the orderly close (close_notify); it must never buffer or
//! allocate per read or write (the plaintext arm is a direct call into
//! glommio's stream; the TLS arm is boxed once per connection, at accept).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{future, AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// A server-side TLS session over a glommio TCP stream.
pub type TlsStream = futures_rustls::server::TlsStream<TcpStream>;
/// A client-side TLS session over a glommio TCP stream.
pub type ClientTlsStream = futures_rustls::client::TlsStream<TcpStream>;

/// Plain TCP or TLS session `S` over TCP.
pub enum MaybeTls<S> {
    Plain(TcpStream),
    /// Boxed: a TLS session is large, and the plaintext arm should not pay
    /// for its size.
    Tls(Box<S>),
}

/// A server's connection.
pub type NetStream = MaybeTls<TlsStream>;
/// A client's connection (the load generator's).
pub type ClientNetStream = MaybeTls<ClientTlsStream>;

impl<S> MaybeTls<S> {
    /// Whether written bytes may wait in a user-space buffer until flushed
    /// (TLS records are sealed and queued by rustls; a plain socket write
    /// goes straight to the kernel).
    #[inline]
    pub fn buffers_writes(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }
}

/// How long an orderly close may wait to hand its close_notify to the
/// kernel (a client that stopped reading must not hold the task).
const CLOSE_NOTIFY_WAIT: Duration = Duration::from_secs(1);

/// End a served connection. TLS: send close_notify first, so the client can
/// tell an orderly end (idle timeout, shutdown, its own QUIT) from a
/// truncation; bounded by [`CLOSE_NOTIFY_WAIT`], failures ignored (the peer
/// may be gone). Plaintext: just drop, as before.
pub async fn close(stream: NetStream) {
    if let MaybeTls::Tls(mut s) = stream {
        use futures_lite::AsyncWriteExt;
        let _ = future::or(
            async {
                let _ = s.close().await;
            },
            glommio::timer::sleep(CLOSE_NOTIFY_WAIT),
        )
        .await;
    }
}

impl NetStream {
    /// The subject CN of the client's certificate, when the client presented
    /// one (only with `tls_client_ca_file`, so it is verified by then).
    pub fn peer_certificate_name(&self) -> Option<String> {
        match self {
            MaybeTls::Plain(_) => None,
            MaybeTls::Tls(s) => {
                let cert = s.get_ref().1.peer_certificates()?.first()?;
                crate::core::cert_name::subject_common_name(cert.as_ref())
            }
        }
    }

    pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            NetStream::Plain(s) => s.peer_addr().map_err(std::io::Error::from),
            NetStream::Tls(s) => s.get_ref().0.peer_addr().map_err(std::io::Error::from),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            NetStream::Plain(s) => s.local_addr().map_err(std::io::Error::from),
            NetStream::Tls(s) => s.get_ref().0.local_addr().map_err(std::io::Error::from),
        }
    }

    /// The socket's descriptor (CLIENT KILL shuts it down from another core).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            NetStream::Plain(s) => s.as_raw_fd(),
            NetStream::Tls(s) => s.get_ref().0.as_raw_fd(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MaybeTls<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_close(cx),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}

/// The TLS handshake of one accepted connection, within `timeout` (the frame
/// timeout): a client that sends nothing, or sends plaintext, or offers only
/// TLS 1.1, is closed — never waited on. Failures are counted as protocol
/// errors and logged at debug (a port scanner must not flood the log).
/// Shared by the native and the RESP listener.
pub async fn handshake(
    acceptor: &futures_rustls::TlsAcceptor,
    stream: glommio::net::TcpStream,
    ctx: &crate::shard::ShardContext,
    timeout: Duration,
) -> Option<TlsStream> {
    let peer = stream.peer_addr().ok();
    // Ok: the handshake ended; Err(true): it timed out; Err(false): shutdown.
    let outcome = future::or(
        async { Ok(acceptor.accept(stream).await) },
        future::or(
            async {
                glommio::timer::sleep(timeout).await;
                Err(true)
            },
            async {
                ctx.shutdown.wait().await;
                Err(false)
            },
        ),
    )
    .await;
    match outcome {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            ctx.router.metrics().protocol_error();
            tracing::debug!(?peer, "TLS handshake failed: {e}");
            None
        }
        Err(true) => {
            ctx.router.metrics().protocol_error();
            tracing::debug!(?peer, "TLS handshake not done within {timeout:?}");
            None
        }
        // Shutting down: not the client's fault.
        Err(false) => None,
    }
}
