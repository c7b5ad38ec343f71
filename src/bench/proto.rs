//! The two protocols the benchmark speaks: corekv's native frames and RESP2
//! (the Redis protocol), so the same workload runs against corekv and against
//! redis-server or any RESP server. Encoding appends to a reused buffer;
//! parsing borrows the receive buffer: no allocation per request.

use std::io::Write;

use crate::core::scan_format::ScanRequest;
use crate::core::status::Status;
use crate::net::codec::{encode_request, parse_frame, Parsed, Request, Side};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    Native,
    Resp,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(Protocol::Native),
            "resp" => Ok(Protocol::Resp),
            other => Err(format!("unknown protocol {other:?} (native, resp)")),
        }
    }
}

#[derive(Copy, Clone, Debug)]
pub enum BenchRequest<'a> {
    Get(&'a [u8]),
    Set(&'a [u8], &'a [u8]),
    Del(&'a [u8]),
    /// Up to `count` entries from `start`.
    Scan(&'a [u8], u32),
    Ping,
    /// Both keys set to the value atomically (MPUT / MSET).
    Mput2(&'a [u8], &'a [u8], &'a [u8]),
}

/// Append one request. `Err` if the protocol cannot express it.
pub fn encode(
    proto: Protocol,
    out: &mut Vec<u8>,
    id: u64,
    req: BenchRequest<'_>,
) -> Result<(), &'static str> {
    match proto {
        Protocol::Native => {
            let mut body = Vec::new();
            if let BenchRequest::Mput2(a, b, v) = req {
                crate::core::txn_format::encode_mput(&mut body, &[(a, v), (b, v)]);
            }
            let r = match req {
                BenchRequest::Mput2(..) => Request::Mput(
                    crate::core::txn_format::MputView::parse(&body)
                        .map_err(|_| "an MPUT key is over the key limit")?,
                ),
                BenchRequest::Get(key) => Request::Get { key },
                BenchRequest::Set(key, value) => Request::Put { key, value },
                BenchRequest::Del(key) => Request::Delete { key },
                BenchRequest::Ping => Request::Ping { payload: b"" },
                BenchRequest::Scan(start, limit) => Request::Scan(ScanRequest {
                    start,
                    end: b"",
                    limit,
                    filter_kind: 0,
                    filter_arg: b"",
                }),
            };
            encode_request(out, id, &r);
        }
        Protocol::Resp => {
            let mut bulk = |parts: &[&[u8]]| {
                let _ = write!(out, "*{}\r\n", parts.len());
                for p in parts {
                    let _ = write!(out, "${}\r\n", p.len());
                    out.extend_from_slice(p);
                    out.extend_from_slice(b"\r\n");
                }
            };
            match req {
                BenchRequest::Get(key) => bulk(&[b"GET", key]),
                BenchRequest::Set(key, value) => bulk(&[b"SET", key, value]),
                BenchRequest::Del(key) => bulk(&[b"DEL", key]),
                BenchRequest::Ping => bulk(&[b"PING"]),
                BenchRequest::Mput2(a, b, v) => bulk(&[b"MSET", a, v, b, v]),
                BenchRequest::Scan(..) => return Err(
                    "RESP has no ordered range scan; workload E runs on the native protocol only",
                ),
            }
        }
    }
    Ok(())
}

/// A response at the front of the receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `len` bytes; `ok` unless the server reported an error.
    Complete {
        len: usize,
        ok: bool,
    },
    /// `len` bytes of OVERLOADED: the server asks for the request again later.
    Busy {
        len: usize,
    },
    Incomplete,
    Invalid(String),
}

pub fn parse(proto: Protocol, buf: &[u8]) -> Reply {
    match proto {
        Protocol::Native => match parse_frame(buf, Side::Client, u32::MAX as usize) {
            Parsed::Frame { header, len, .. } => {
                let status = Status::from_code(header.status.get());
                if status == Some(Status::Overloaded) {
                    return Reply::Busy { len };
                }
                Reply::Complete {
                    len,
                    ok: matches!(status, Some(Status::Ok | Status::NotFound)),
                }
            }
            Parsed::Incomplete { .. } => Reply::Incomplete,
            Parsed::Bad { error, .. } => Reply::Invalid(error.detail),
        },
        Protocol::Resp => match resp_value(buf, 0) {
            Ok(Some((len, ok))) => Reply::Complete { len, ok },
            Ok(None) => Reply::Incomplete,
            Err(e) => Reply::Invalid(e),
        },
    }
}

/// An error reply (a complete one, as [`parse`] found it), described for a
/// person: the status name and the server's detail, or the RESP error line.
/// Called once per run at most, so it may allocate.
pub fn describe_error(proto: Protocol, reply: &[u8]) -> String {
    match proto {
        Protocol::Native => match parse_frame(reply, Side::Client, u32::MAX as usize) {
            Parsed::Frame { header, body, .. } => {
                let name = Status::from_code(header.status.get()).map_or_else(
                    || format!("status {}", header.status.get()),
                    |s| s.name().into(),
                );
                let detail = String::from_utf8_lossy(&body[..body.len().min(300)]);
                if detail.is_empty() {
                    name
                } else {
                    format!("{name}: {detail}")
                }
            }
            _ => "an unparsable reply".into(),
        },
        Protocol::Resp => String::from_utf8_lossy(&reply[..reply.len().min(300)])
            .trim_start_matches('-')
            .trim_end()
            .to_string(),
    }
}

/// Length of the RESP value at `at` and whether it is not an error.
fn resp_value(buf: &[u8], at: usize) -> Result<Option<(usize, bool)>, String> {
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some(eol) = memchr::memmem::find(&buf[at..], b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[at + 1..at + eol];
    let after = at + eol + 2;
    let number = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad RESP length {line:?}"))
    };
    match tag {
        b'+' | b':' => Ok(Some((after - at, true))),
        b'-' => Ok(Some((after - at, false))),
        b'$' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((after - at, true)));
            }
            let end = after + n as usize + 2;
            Ok((buf.len() >= end).then_some((end - at, true)))
        }
        b'*' => {
            let n = number()?;
            let mut pos = after;
            for _ in 0..n.max(0) {
                match resp_value(buf, pos)? {
                    Some((len, _)) => pos += len,
                    None => return Ok(None),
                }
            }
            Ok(Some((pos - at, true)))
        }
        other => Err(format!("unexpected RESP type byte {other:#x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_replies_parse() {
        assert_eq!(
            parse(Protocol::Resp, b"+OK\r\n"),
            Reply::Complete { len: 5, ok: true }
        );
        assert_eq!(
            parse(Protocol::Resp, b"$-1\r\n"),
            Reply::Complete { len: 5, ok: true }
        );
        assert_eq!(
            parse(Protocol::Resp, b"$3\r\nabc\r\n+OK"),
            Reply::Complete { len: 9, ok: true }
        );
        assert_eq!(parse(Protocol::Resp, b"$3\r\nab"), Reply::Incomplete);
        assert_eq!(
            parse(Protocol::Resp, b"-ERR x\r\n"),
            Reply::Complete { len: 8, ok: false }
        );
        assert_eq!(
            parse(Protocol::Resp, b"*2\r\n$1\r\na\r\n:5\r\n"),
            Reply::Complete { len: 15, ok: true }
        );
        assert!(matches!(
            parse(Protocol::Resp, b"?"),
            Reply::Incomplete | Reply::Invalid(_)
        ));
        let mut out = Vec::new();
        encode(Protocol::Resp, &mut out, 0, BenchRequest::Set(b"k", b"vv")).unwrap();
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n");
    }
}
