//! A blocking Rust client with pipelining.
//!
//! Simple calls (`get`, `put`, …) send one request and wait for its answer.
//! Pipelining: `queue` any number of requests, `flush` once, then `recv` the
//! responses, which arrive in the order the requests were queued.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::core::status::Status;

use super::codec::{encode_request, parse_frame, HelloInfo, Parsed, Request, Side};
use crate::core::scan_format::ScanRequest;
use crate::core::txn_format::{encode_mput, encode_txn, Cond, Write as TxnWrite};

/// How a TXN ended, when the server answered it definitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnResult {
    Committed,
    /// Condition number `i` (from 0) was false; nothing was written.
    ConditionFailed(u32),
}

/// Interpret a TXN/MPUT response.
pub fn txn_result(resp: Response) -> Result<TxnResult, ClientError> {
    match resp.status {
        Status::Ok => Ok(TxnResult::Committed),
        Status::ConditionFailed => match resp.body.first_chunk::<4>() {
            Some(i) => Ok(TxnResult::ConditionFailed(u32::from_le_bytes(*i))),
            None => Err(ClientError::Protocol(
                "CONDITION_FAILED without a condition index".into(),
            )),
        },
        _ => resp.into_result().map(|_| TxnResult::Committed),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{}: {}", status.name(), status_text(*status, detail))]
    Status { status: Status, detail: String },
    /// TLS could not be set up: a client file, the server name, or the
    /// handshake (the server's certificate was not trusted, or ours refused).
    #[error("TLS: {0}")]
    Tls(String),
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    #[error(
        "no reply within {after_ms} ms (the server is overloaded, stalled, or not a corekv server)"
    )]
    Timeout { after_ms: u64 },
}

/// The value of an RMW reply that is a bulk value or nil.
fn bulk_or_nil(reply: crate::core::rmw::Reply) -> Result<Option<Vec<u8>>, ClientError> {
    match reply {
        crate::core::rmw::Reply::Bulk(b) => Ok(Some(b)),
        crate::core::rmw::Reply::Nil => Ok(None),
        other => Err(ClientError::Protocol(format!(
            "expected a value or nil, got {other:?}"
        ))),
    }
}

/// A status's message: the server's detail, or the status's own description
/// when the server sent none (never an empty message).
fn status_text(status: Status, detail: &str) -> String {
    if detail.is_empty() {
        status.describe().to_string()
    } else {
        detail.to_string()
    }
}

/// A hint naming what the peer probably is, from the first bytes it sent
/// where a corekv frame (`CK`) was expected.
fn likely_peer(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"HTTP/") {
        "; the peer answered HTTP: this is probably corekv's admin port (default 9070), \
         not its protocol port (default 7070)"
    } else if matches!(bytes.first(), Some(b'-' | b'+' | b'$' | b'*' | b':')) {
        "; the peer answered in RESP: this is probably a Redis server, not corekv"
    } else if bytes.len() >= 2 && (bytes[0] == 0x15 || bytes[0] == 0x16) && bytes[1] == 0x03 {
        "; the peer speaks TLS (connect with --tls-ca-file)"
    } else if bytes.starts_with(b"SSH-") {
        "; the peer is an SSH server"
    } else {
        "; the peer does not speak the corekv protocol (check the address and port)"
    }
}

impl ClientError {
    /// What happened, without the name (`corekv cli` prints `NAME: message`,
    /// so a message must not repeat the name).
    pub fn message(&self) -> String {
        match self {
            ClientError::Status { status, detail } => status_text(*status, detail),
            other => other.to_string(),
        }
    }

    /// The stable name printed by `corekv cli` (docs/errors.md).
    pub fn name(&self) -> &'static str {
        match self {
            ClientError::Connect { .. } => "CONNECT_FAILED",
            ClientError::Io(_) => "CONNECTION_LOST",
            ClientError::Status { status, .. } => status.name(),
            ClientError::Protocol(_) => "PROTOCOL_VIOLATION",
            ClientError::Tls(_) => "TLS_FAILED",
            ClientError::Timeout { .. } => "REPLY_TIMEOUT",
        }
    }
}

/// One response, borrowing its body from the client's receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct ResponseRef<'a> {
    pub request_id: u64,
    pub opcode: u8,
    pub status: Status,
    pub body: &'a [u8],
}

/// One response, owning its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub request_id: u64,
    pub opcode: u8,
    pub status: Status,
    pub body: Vec<u8>,
}

impl Response {
    /// `Ok(body)` for OK, the status as an error otherwise (NOT_FOUND included).
    pub fn into_result(self) -> Result<Vec<u8>, ClientError> {
        if self.status.is_ok() {
            Ok(self.body)
        } else {
            Err(ClientError::Status {
                status: self.status,
                detail: String::from_utf8_lossy(&self.body).into_owned(),
            })
        }
    }
}

/// The client's byte stream: plain TCP, or TLS over it.
enum ClientStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl ClientStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(s) => &s.sock,
        }
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read(buf),
            ClientStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.write(buf),
            ClientStream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush(),
            ClientStream::Tls(s) => s.flush(),
        }
    }
}

/// How a client speaks TLS: whom it trusts, the name it expects on the
/// server's certificate, and its own certificate for mutual TLS.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    pub ca_file: std::path::PathBuf,
    /// Checked against the server's certificate (DNS name or IP address).
    pub server_name: String,
    /// (certificate chain file, key file), sent when the server asks.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl TlsOptions {
    /// The rustls client configuration and the server name these options
    /// make: what [`Client::connect_tls`] uses, and what `corekv bench`
    /// hands to its asynchronous connections (one place reads the files).
    pub fn rustls(
        &self,
    ) -> Result<
        (
            std::sync::Arc<rustls::ClientConfig>,
            rustls::pki_types::ServerName<'static>,
        ),
        ClientError,
    > {
        let cert = self
            .client_cert
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        let config = super::tls::client_config(&self.ca_file, cert)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let name = super::tls::server_name(&self.server_name).map_err(ClientError::Tls)?;
        Ok((config, name))
    }
}

/// The first address of `addr` that accepts a connection within `timeout`.
fn connect_any(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
    let connect_err = |source| ClientError::Connect {
        addr: addr.to_string(),
        source,
    };
    let mut last = None;
    for a in addr.to_socket_addrs().map_err(connect_err)? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(connect_err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "resolves to no address")
    })))
}

pub struct Client {
    stream: ClientStream,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    /// Start of unparsed bytes in `rbuf`.
    rpos: usize,
    next_id: u64,
    in_flight: usize,
}

impl Client {
    pub fn connect(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<Client, ClientError> {
        let name = format!("{addr:?}");
        let stream = TcpStream::connect(addr)
            .map_err(|source| ClientError::Connect { addr: name, source })?;
        Client::over(stream)
    }

    /// Connect over TLS (see [`TlsOptions`]); the handshake completes (or
    /// fails: wrong CA, wrong name, certificate refused) before this returns.
    pub fn connect_tls(addr: &str, tls: &TlsOptions) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr).map_err(|source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        })?;
        Client::over_tls(stream, tls)
    }

    /// [`Client::connect_timeout`] over TLS.
    pub fn connect_tls_timeout(
        addr: &str,
        tls: &TlsOptions,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let stream = connect_any(addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Client::over_tls(stream, tls)
    }

    fn over_tls(stream: TcpStream, tls: &TlsOptions) -> Result<Client, ClientError> {
        let (config, name) = tls.rustls()?;
        let conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut tls_stream = rustls::StreamOwned::new(conn, stream);
        // Complete the handshake now, so that a refused certificate is an
        // error of the connect, not of the first request.
        while tls_stream.conn.is_handshaking() {
            tls_stream
                .conn
                .complete_io(&mut tls_stream.sock)
                .map_err(|e| ClientError::Tls(format!("TLS handshake failed: {e}")))?;
        }
        Client::over_stream(ClientStream::Tls(Box::new(tls_stream)))
    }

    fn over(stream: TcpStream) -> Result<Client, ClientError> {
        Client::over_stream(ClientStream::Plain(stream))
    }

    fn over_stream(stream: ClientStream) -> Result<Client, ClientError> {
        stream.tcp().set_nodelay(true)?;
        Ok(Client {
            stream,
            wbuf: Vec::with_capacity(64 * 1024),
            rbuf: Vec::with_capacity(64 * 1024),
            rpos: 0,
            next_id: 1,
            in_flight: 0,
        })
    }

    /// Connect within `timeout`, and give every later send and reply the
    /// same `timeout` (`corekv cli`: a peer that never answers is an error,
    /// not a hang).
    pub fn connect_timeout(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let c = Client::over(connect_any(addr, timeout)?)?;
        c.set_timeout(Some(timeout))?;
        Ok(c)
    }

    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream.tcp().set_read_timeout(timeout)?;
        self.stream.tcp().set_write_timeout(timeout)?;
        Ok(())
    }

    /// Queue a request without sending it; returns its request id.
    pub fn queue(&mut self, request: &Request<'_>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        encode_request(&mut self.wbuf, id, request);
        self.in_flight += 1;
        id
    }

    /// Queue raw bytes (for tests that send malformed frames).
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.stream.write_all(&self.wbuf)?;
        self.wbuf.clear();
        Ok(())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Receive the next response, letting `f` look at it without copying.
    pub fn recv_with<T>(&mut self, f: impl FnOnce(ResponseRef<'_>) -> T) -> Result<T, ClientError> {
        loop {
            match parse_frame(&self.rbuf[self.rpos..], Side::Client, u32::MAX as usize) {
                Parsed::Frame { header, body, len } => {
                    let status = Status::from_code(header.status.get()).ok_or_else(|| {
                        ClientError::Protocol(format!("unknown status {}", header.status.get()))
                    })?;
                    let out = f(ResponseRef {
                        request_id: header.request_id.get(),
                        opcode: header.opcode,
                        status,
                        body,
                    });
                    self.rpos += len;
                    self.in_flight = self.in_flight.saturating_sub(1);
                    return Ok(out);
                }
                Parsed::Bad { error, .. } => {
                    let peer = &self.rbuf[self.rpos..];
                    return Err(ClientError::Protocol(format!(
                        "{}{}",
                        error.detail,
                        likely_peer(peer)
                    )));
                }
                Parsed::Incomplete { needed } => self.fill(needed)?,
            }
        }
    }

    pub fn recv(&mut self) -> Result<Response, ClientError> {
        self.recv_with(|r| Response {
            request_id: r.request_id,
            opcode: r.opcode,
            status: r.status,
            body: r.body.to_vec(),
        })
    }

    fn fill(&mut self, needed: usize) -> Result<(), ClientError> {
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        let have = self.rbuf.len();
        let want = needed.max(have + 1).max(16 * 1024);
        self.rbuf
            .resize(have.max(want).min(have + (64 << 20)).max(needed), 0);
        let n = match self.stream.read(&mut self.rbuf[have..]) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                self.rbuf.truncate(have);
                let after_ms = self
                    .stream
                    .tcp()
                    .read_timeout()
                    .ok()
                    .flatten()
                    .map_or(0, |d| d.as_millis() as u64);
                return Err(ClientError::Timeout { after_ms });
            }
            Err(e) => {
                self.rbuf.truncate(have);
                return Err(e.into());
            }
        };
        self.rbuf.truncate(have + n);
        if n == 0 {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )));
        }
        Ok(())
    }

    fn call(&mut self, request: &Request<'_>) -> Result<Response, ClientError> {
        let id = self.queue(request);
        if let Err(e) = self.flush() {
            // The server may have said why before closing (it answers a
            // connection over its limit with TOO_MANY_CONNECTIONS, then
            // closes): that answer beats "Broken pipe".
            if let Ok(r) = self.recv() {
                r.into_result()?;
            }
            return Err(e);
        }
        let resp = self.recv()?;
        if resp.request_id != id && resp.status.is_ok() {
            return Err(ClientError::Protocol(format!(
                "response id {} for request {id}",
                resp.request_id
            )));
        }
        Ok(resp)
    }

    pub fn hello(&mut self) -> Result<HelloInfo, ClientError> {
        let body = self.call(&Request::Hello)?.into_result()?;
        HelloInfo::decode(&body)
            .ok_or_else(|| ClientError::Protocol("malformed HELLO response".into()))
    }

    /// Authenticate this connection as `user` (servers with a users file
    /// refuse everything but HELLO, PING and AUTH before it). Returns the
    /// user's role: `read`, `write` or `admin`.
    pub fn auth(&mut self, user: &str, password: &[u8]) -> Result<String, ClientError> {
        let body = self
            .call(&Request::Auth {
                user: user.as_bytes(),
                password,
            })?
            .into_result()?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    pub fn ping(&mut self) -> Result<(), ClientError> {
        self.call(&Request::Ping { payload: b"" })?
            .into_result()
            .map(drop)
    }

    /// Ask the server to write an online backup into `target`, a directory
    /// path on the server host. Returns the server's JSON summary. Takes as
    /// long as copying the WAL does: set a generous timeout.
    pub fn backup(&mut self, target: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.call(&Request::Backup { target })?.into_result()
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let resp = self.call(&Request::Get { key })?;
        if resp.status == Status::NotFound {
            return Ok(None);
        }
        resp.into_result().map(Some)
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        self.call(&Request::Put { key, value })?
            .into_result()
            .map(drop)
    }

    /// PUT whose value expires at `expires_at_ms` (unix ms on the server's
    /// wall clock; 0: never, like `put`).
    pub fn put_ex(
        &mut self,
        key: &[u8],
        value: &[u8],
        expires_at_ms: u64,
    ) -> Result<(), ClientError> {
        let mut buf = Vec::with_capacity(8 + value.len());
        self.call(&Request::put_ex(key, expires_at_ms, value, &mut buf))?
            .into_result()
            .map(drop)
    }

    /// Change a key's expiry (`mode`: Redis's EXPIRE conditions, or PERSIST,
    /// whose time is ignored). Returns whether it applied (false: no such
    /// key, or the condition was false). A time at or before now deletes.
    pub fn expire(
        &mut self,
        key: &[u8],
        mode: crate::core::expiry::ExpireMode,
        expires_at_ms: u64,
    ) -> Result<bool, ClientError> {
        let mut arg = [0u8; 9];
        arg[0] = mode as u8;
        arg[1..].copy_from_slice(&expires_at_ms.to_le_bytes());
        let body = self
            .call(&Request::Expire { key, arg: &arg })?
            .into_result()?;
        Ok(body.first() == Some(&1))
    }

    /// A key's expiry: `None` if the key does not exist (or expired),
    /// `Some(0)` if it never expires, else the unix ms it expires at.
    pub fn ttl(&mut self, key: &[u8]) -> Result<Option<u64>, ClientError> {
        let resp = self.call(&Request::Ttl { key })?;
        if resp.status == Status::NotFound {
            return Ok(None);
        }
        let body = resp.into_result()?;
        let at: [u8; 8] = body.as_slice().try_into().map_err(|_| {
            ClientError::Protocol(format!("TTL reply of {} bytes, expected 8", body.len()))
        })?;
        Ok(Some(u64::from_le_bytes(at)))
    }

    /// Returns whether the key existed.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, ClientError> {
        let body = self.call(&Request::Delete { key })?.into_result()?;
        Ok(body.first() == Some(&1))
    }

    /// Run a read-modify-write program on `key` in its owning shard
    /// (atomic there): the program's reply. A program the value refuses
    /// (not an integer, overflow, ...) is INVALID_ARGUMENT whose detail is
    /// the reason (docs/protocol.md "RMW body").
    pub fn rmw(
        &mut self,
        key: &[u8],
        program: &crate::core::rmw::Program<'_>,
    ) -> Result<crate::core::rmw::Reply, ClientError> {
        use crate::core::rmw::{Reply, ReplyRef, RmwError};
        let mut bytes = Vec::new();
        program.encode(&mut bytes);
        let resp = self.call(&Request::Rmw {
            key,
            program: &bytes,
        })?;
        if !resp.status.is_ok() {
            // `[RmwError code u8] | text`: the detail is the text.
            let detail = match resp.body.split_first() {
                Some((&c, text)) if RmwError::from_code(c).is_some() => {
                    String::from_utf8_lossy(text).into_owned()
                }
                _ => String::from_utf8_lossy(&resp.body).into_owned(),
            };
            return Err(ClientError::Status {
                status: resp.status,
                detail,
            });
        }
        match Reply::decode(&resp.body) {
            Some(ReplyRef::Ok) => Ok(Reply::Ok),
            Some(ReplyRef::Int(n)) => Ok(Reply::Int(n)),
            Some(ReplyRef::Bulk(b)) => Ok(Reply::Bulk(b.to_vec())),
            Some(ReplyRef::Nil) => Ok(Reply::Nil),
            None => Err(ClientError::Protocol(format!(
                "RMW reply body of {} bytes is not a reply",
                resp.body.len()
            ))),
        }
    }

    /// Add `by` to the key's integer value (absent: 0); the new value.
    pub fn incr_by(&mut self, key: &[u8], by: i64) -> Result<i64, ClientError> {
        match self.rmw(key, &crate::core::rmw::Program::IncrBy(by))? {
            crate::core::rmw::Reply::Int(n) => Ok(n),
            other => Err(ClientError::Protocol(format!("INCRBY answered {other:?}"))),
        }
    }

    /// Append to the key's value (absent: empty); the new length.
    pub fn append(&mut self, key: &[u8], tail: &[u8]) -> Result<i64, ClientError> {
        match self.rmw(key, &crate::core::rmw::Program::Append(tail))? {
            crate::core::rmw::Reply::Int(n) => Ok(n),
            other => Err(ClientError::Protocol(format!("APPEND answered {other:?}"))),
        }
    }

    /// Set the key's value; the old value.
    pub fn get_set(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        bulk_or_nil(self.rmw(key, &crate::core::rmw::Program::GetSet(value))?)
    }

    /// Delete the key; the value it had.
    pub fn get_del(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        bulk_or_nil(self.rmw(key, &crate::core::rmw::Program::GetDel)?)
    }

    /// One page of a range scan: entries in key order and the key to continue
    /// from (`None` when the range is exhausted).
    pub fn scan_page(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        filter: &ScanFilter,
    ) -> Result<ScanPage, ClientError> {
        let (kind, arg) = filter.wire();
        let body = self
            .call(&Request::Scan(ScanRequest {
                start,
                end,
                limit,
                filter_kind: kind,
                filter_arg: &arg,
            }))?
            .into_result()?;
        decode_scan_page(&body)
            .ok_or_else(|| ClientError::Protocol("malformed SCAN response".into()))
    }

    /// Every entry of `[start, end)` that passes `filter`, following pages.
    pub fn scan_all(
        &mut self,
        start: &[u8],
        end: &[u8],
        filter: &ScanFilter,
    ) -> Result<Vec<KeyValue>, ClientError> {
        let mut out = Vec::new();
        let mut from = start.to_vec();
        loop {
            let page = self.scan_page(&from, end, crate::core::limits::SCAN_LIMIT_MAX, filter)?;
            out.extend(page.entries);
            match page.next {
                Some(next) => from = next,
                None => return Ok(out),
            }
        }
    }

    /// Values of `keys`, in order (`None`: missing).
    /// Apply `writes` atomically if every condition holds. `Ok(Committed)`:
    /// applied and durable; `Ok(ConditionFailed(i))`: condition `i` was false
    /// and nothing was applied. Errors include TXN_ABORTED (retry it).
    pub fn txn(
        &mut self,
        conds: &[Cond<'_>],
        writes: &[TxnWrite<'_>],
    ) -> Result<TxnResult, ClientError> {
        let mut body = Vec::new();
        encode_txn(&mut body, conds, writes);
        // Checked here as the server will check it (a key over the limit).
        let view = crate::core::txn_format::TxnView::parse(&body, false).map_err(|e| {
            ClientError::Status {
                status: Status::KeyTooLarge,
                detail: format!("TXN: {e}"),
            }
        })?;
        txn_result(self.call(&Request::Txn(view))?)
    }

    /// Write every pair atomically (all or none), durable on return.
    pub fn mput(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<(), ClientError> {
        let mut body = Vec::new();
        encode_mput(&mut body, pairs);
        // Checked here as the server will check it: a key over the limit is
        // refused before anything is sent.
        let mput =
            crate::core::txn_format::MputView::parse(&body).map_err(|e| ClientError::Status {
                status: Status::KeyTooLarge,
                detail: format!("MPUT: {e}"),
            })?;
        self.call(&Request::Mput(mput))?.into_result()?;
        Ok(())
    }

    /// Read every key at one instant: no transaction is seen half-applied.
    pub fn mget(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
        let mut body = Vec::new();
        for k in keys {
            body.extend_from_slice(&(k.len() as u32).to_le_bytes());
            body.extend_from_slice(k);
        }
        let resp = self
            .call(&Request::Mget {
                count: keys.len() as u32,
                keys: &body,
            })?
            .into_result()?;
        let bad = || ClientError::Protocol("malformed MGET response".into());
        let (count, mut rest) = resp.split_first_chunk::<4>().ok_or_else(bad)?;
        if u32::from_le_bytes(*count) as usize != keys.len() {
            return Err(bad());
        }
        let mut values = Vec::with_capacity(keys.len());
        for _ in 0..keys.len() {
            let (code, r) = rest.split_first_chunk::<2>().ok_or_else(bad)?;
            let (len, r) = r.split_first_chunk::<4>().ok_or_else(bad)?;
            let len = u32::from_le_bytes(*len) as usize;
            if len > r.len() {
                return Err(bad());
            }
            let (value, r) = r.split_at(len);
            rest = r;
            match Status::from_code(u16::from_le_bytes(*code)) {
                Some(Status::Ok) => values.push(Some(value.to_vec())),
                Some(Status::NotFound) => values.push(None),
                Some(status) => {
                    return Err(ClientError::Status {
                        status,
                        detail: String::from_utf8_lossy(value).into_owned(),
                    })
                }
                None => return Err(bad()),
            }
        }
        Ok(values)
    }
}

/// An owned key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A filter evaluated inside the shards during a scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ScanFilter {
    #[default]
    None,
    KeyPrefix(Vec<u8>),
    ValueContains(Vec<u8>),
    /// Dot-separated field path and the expected value as JSON text.
    JsonEq {
        path: String,
        value_json: String,
    },
}

impl ScanFilter {
    fn wire(&self) -> (u8, Vec<u8>) {
        use crate::core::filter::*;
        match self {
            ScanFilter::None => (FILTER_NONE, Vec::new()),
            ScanFilter::KeyPrefix(p) => (FILTER_KEY_PREFIX, p.clone()),
            ScanFilter::ValueContains(n) => (FILTER_VALUE_CONTAINS, n.clone()),
            ScanFilter::JsonEq { path, value_json } => {
                (FILTER_JSON_EQ, json_eq_arg(path, value_json))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub entries: Vec<KeyValue>,
    pub next: Option<Vec<u8>>,
}

fn decode_scan_page(body: &[u8]) -> Option<ScanPage> {
    let take = |b: &[u8]| -> Option<(Vec<u8>, usize)> {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        Some((b.get(4..4 + n)?.to_vec(), 4 + n))
    };
    let count = u32::from_le_bytes(body.get(..4)?.try_into().ok()?);
    let mut pos = 4;
    let mut entries = Vec::with_capacity(count.min(10_000) as usize);
    for _ in 0..count {
        let (k, n) = take(&body[pos..])?;
        pos += n;
        let (v, n) = take(&body[pos..])?;
        pos += n;
        entries.push((k, v));
    }
    let (next, n) = take(&body[pos..])?;
    (pos + n == body.len()).then_some(ScanPage {
        entries,
        next: (!next.is_empty()).then_some(next),
    })
}
