//! A connection's byte stream as the server sees it: a plain TCP stream, or
//! TLS over one. Every listener's connection code reads and writes this type,
//! so plaintext and TLS share one request path.
//!
//! It owns only the choice between the two; it must never buffer or
//! allocate per read or write (the plaintext arm is a direct call into
//! glommio's stream; the TLS arm is boxed once per connection, at accept).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// A server-side TLS session over a glommio TCP stream.
pub type TlsStream = futures_rustls::server::TlsStream<TcpStream>;

pub enum NetStream {
    Plain(TcpStream),
    /// Boxed: a TLS session is large, and the plaintext arm should not pay
    /// for its size.
    Tls(Box<TlsStream>),
}

impl NetStream {
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

    /// Whether written bytes may wait in a user-space buffer until flushed
    /// (TLS records are sealed and queued by rustls; a plain socket write
    /// goes straight to the kernel).
    #[inline]
    pub fn buffers_writes(&self) -> bool {
        matches!(self, NetStream::Tls(_))
    }
}

impl AsyncRead for NetStream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NetStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NetStream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NetStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_flush(cx),
            NetStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_close(cx),
            NetStream::Tls(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}
