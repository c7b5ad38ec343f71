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

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{}: {detail}", status.name())]
    Status { status: Status, detail: String },
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The stable name printed by `corekv cli` (docs/errors.md).
    pub fn name(&self) -> &'static str {
        match self {
            ClientError::Connect { .. } => "CONNECT_FAILED",
            ClientError::Io(_) => "CONNECTION_LOST",
            ClientError::Status { status, .. } => status.name(),
            ClientError::Protocol(_) => "PROTOCOL_VIOLATION",
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

pub struct Client {
    stream: TcpStream,
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
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            wbuf: Vec::with_capacity(64 * 1024),
            rbuf: Vec::with_capacity(64 * 1024),
            rpos: 0,
            next_id: 1,
            in_flight: 0,
        })
    }

    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream.set_read_timeout(timeout)?;
        self.stream.set_write_timeout(timeout)?;
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
                Parsed::Bad { error, .. } => return Err(ClientError::Protocol(error.detail)),
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
        let n = self.stream.read(&mut self.rbuf[have..])?;
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
        self.flush()?;
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

    pub fn ping(&mut self) -> Result<(), ClientError> {
        self.call(&Request::Ping { payload: b"" })?
            .into_result()
            .map(drop)
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

    /// Returns whether the key existed.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, ClientError> {
        let body = self.call(&Request::Delete { key })?.into_result()?;
        Ok(body.first() == Some(&1))
    }
}
