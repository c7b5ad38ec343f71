//! The wire format: frame header, request and response bodies (docs/protocol.md
//! is the specification; this file must match it byte for byte).
//!
//! Pure functions over byte slices: no I/O, no allocation except appending to a
//! caller's buffer. Every length read from the wire is bounded before it is used
//! to index or allocate.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::core::auth::{Access, PASSWORD_BYTES_MAX, USER_NAME_BYTES_MAX};
use crate::core::expiry::ExpireMode;
use crate::core::limits::{
    BACKUP_PATH_BYTES_MAX, KEY_BYTES_MAX, MGET_KEYS_MAX, SCAN_LIMIT_MAX, TXN_OPS_MAX,
};
use crate::core::scan_format::ScanRequest;
use crate::core::status::Status;

pub const MAGIC: [u8; 2] = *b"CK";
pub const PROTOCOL_VERSION: u8 = 1;
pub const HEADER_BYTES: usize = 20;

/// Every frame, in both directions, starts with this header (little-endian).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct FrameHeader {
    pub magic: [u8; 2],
    pub version: u8,
    pub opcode: u8,
    pub flags: U16,
    pub status: U16,
    pub request_id: U64,
    pub body_len: U32,
}

const _: () = assert!(std::mem::size_of::<FrameHeader>() == HEADER_BYTES);

macro_rules! opcodes {
    ($($variant:ident = $code:literal, $name:literal, $access:ident;)*) => {
        #[derive(Copy, Clone, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Opcode { $($variant = $code,)* }

        impl Opcode {
            pub const ALL: &'static [Opcode] = &[$(Opcode::$variant,)*];

            pub fn from_u8(v: u8) -> Option<Opcode> {
                match v { $($code => Some(Opcode::$variant),)* _ => None }
            }

            pub fn name(self) -> &'static str {
                match self { $(Opcode::$variant => $name,)* }
            }

            /// What a connection needs to run it (`core::auth::permits`).
            pub fn access(self) -> Access {
                match self { $(Opcode::$variant => Access::$access,)* }
            }
        }
    };
}

// Each opcode's last column is the access it needs (the role table is
// `core::auth::GRANTS`): a new opcode must choose one.
opcodes! {
    Hello = 1, "HELLO", Open;
    Ping = 2, "PING", Open;
    Get = 3, "GET", Read;
    Put = 4, "PUT", Write;
    Delete = 5, "DELETE", Write;
    Scan = 6, "SCAN", Read;
    Mget = 7, "MGET", Read;
    Txn = 8, "TXN", Write;
    Mput = 9, "MPUT", Write;
    Auth = 10, "AUTH", Open;
    PutEx = 11, "PUT_EX", Write;
    Expire = 12, "EXPIRE", Write;
    Ttl = 13, "TTL", Read;
    Backup = 16, "BACKUP", Admin;
    Rmw = 17, "RMW", Write;
}

/// Bounds the decoder enforces; derived from the server's configuration.
#[derive(Copy, Clone, Debug)]
pub struct Limits {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
}

impl Limits {
    pub fn new(value_bytes_max: usize) -> Limits {
        Limits {
            key_bytes_max: KEY_BYTES_MAX,
            value_bytes_max,
        }
    }

    /// The largest body any request may declare: a PUT_EX of the largest key
    /// and value, or an RMW of them (its program header is a few bytes more).
    pub fn body_bytes_max(&self) -> usize {
        4 + self.key_bytes_max
            + self.value_bytes_max
            + 8usize.max(crate::core::rmw::PROGRAM_HEADER_BYTES_MAX)
    }
}

/// A protocol error: the status to answer with, and whether the connection must
/// close because the byte stream can no longer be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    pub status: Status,
    pub fatal: bool,
    pub detail: String,
}

impl WireError {
    fn fatal(status: Status, detail: String) -> WireError {
        WireError {
            status,
            fatal: true,
            detail,
        }
    }
    fn soft(status: Status, detail: String) -> WireError {
        WireError {
            status,
            fatal: false,
            detail,
        }
    }
}

/// The result of looking at the front of a receive buffer.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A whole frame: its header, its body, and how many bytes it spans.
    Frame {
        header: FrameHeader,
        body: &'a [u8],
        len: usize,
    },
    /// The frame is incomplete; at least this many bytes are needed in total.
    Incomplete { needed: usize },
    /// The header is unacceptable; `request_id` is its id if one could be read.
    Bad { request_id: u64, error: WireError },
}

/// Which side is reading: requests must have status 0; responses may carry any
/// status this library knows.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Side {
    Server,
    Client,
}

/// Parse the frame at the front of `buf` without copying.
pub fn parse_frame(buf: &[u8], side: Side, body_bytes_max: usize) -> Parsed<'_> {
    let Ok((header, _)) = FrameHeader::read_from_prefix(buf) else {
        return Parsed::Incomplete {
            needed: HEADER_BYTES,
        };
    };
    let request_id = header.request_id.get();
    if let Err(error) = check_header(&header, side, body_bytes_max) {
        return Parsed::Bad {
            request_id: if header.magic == MAGIC { request_id } else { 0 },
            error,
        };
    }
    // Bounded above: body_len <= body_bytes_max, which fits in usize.
    let len = HEADER_BYTES + header.body_len.get() as usize;
    if buf.len() < len {
        return Parsed::Incomplete { needed: len };
    }
    Parsed::Frame {
        header,
        body: &buf[HEADER_BYTES..len],
        len,
    }
}

fn check_header(h: &FrameHeader, side: Side, body_bytes_max: usize) -> Result<(), WireError> {
    if h.magic != MAGIC {
        return Err(WireError::fatal(
            Status::BadFrame,
            format!(
                "bad magic {:02x}{:02x}, expected 434b (\"CK\")",
                h.magic[0], h.magic[1]
            ),
        ));
    }
    if h.version != PROTOCOL_VERSION {
        return Err(WireError::fatal(
            Status::UnsupportedVersion,
            format!(
                "protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}",
                h.version
            ),
        ));
    }
    if h.flags.get() != 0 {
        return Err(WireError::fatal(
            Status::BadFrame,
            format!("reserved flags set: {:#06x}", h.flags.get()),
        ));
    }
    match side {
        Side::Server if h.status.get() != 0 => {
            return Err(WireError::fatal(
                Status::BadFrame,
                format!("request carries status {}", h.status.get()),
            ));
        }
        Side::Client if Status::from_code(h.status.get()).is_none() => {
            return Err(WireError::fatal(
                Status::BadFrame,
                format!("unknown status code {}", h.status.get()),
            ));
        }
        _ => {}
    }
    let body_len = h.body_len.get() as u64;
    if body_len > body_bytes_max as u64 {
        return Err(WireError::fatal(
            Status::FrameTooLarge,
            format!("body of {body_len} bytes declared; the limit is {body_bytes_max}"),
        ));
    }
    Ok(())
}

/// A decoded request, borrowing from the receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Hello,
    Ping {
        payload: &'a [u8],
    },
    Get {
        key: &'a [u8],
    },
    Put {
        key: &'a [u8],
        value: &'a [u8],
    },
    Delete {
        key: &'a [u8],
    },
    Scan(ScanRequest<'a>),
    /// `keys`: `count` entries of `key_len u32 | key`, already validated.
    Mget {
        count: u32,
        keys: &'a [u8],
    },
    /// A whole TXN body, validated by its view.
    Txn(crate::core::txn_format::TxnView<'a>),
    /// A whole MPUT body, validated by its view.
    Mput(crate::core::txn_format::MputView<'a>),
    /// An absolute directory path on the server host.
    Backup {
        target: &'a [u8],
    },
    /// `user_len u32 | user | password`: the user name is checked for its
    /// length only (an unknown name is AUTH_FAILED, like a wrong password).
    Auth {
        user: &'a [u8],
        password: &'a [u8],
    },
    /// PUT with an expiry. `timed`: `expires_at_ms u64 LE | value` (checked
    /// to hold the 8 bytes), the shard op's value as it is on the wire.
    PutEx {
        key: &'a [u8],
        timed: &'a [u8],
    },
    /// `arg`: `mode u8 | expires_at_ms u64 LE` (mode checked).
    Expire {
        key: &'a [u8],
        arg: &'a [u8],
    },
    Ttl {
        key: &'a [u8],
    },
    /// A read-modify-write of `key`: `program` is a validated
    /// `core::rmw::Program` encoding.
    Rmw {
        key: &'a [u8],
        program: &'a [u8],
    },
}

impl<'a> Request<'a> {
    /// A PUT_EX of `value` expiring at `expires_at_ms`, written into `buf`
    /// (the request borrows it).
    pub fn put_ex(
        key: &'a [u8],
        expires_at_ms: u64,
        value: &[u8],
        buf: &'a mut Vec<u8>,
    ) -> Request<'a> {
        buf.clear();
        buf.extend_from_slice(&expires_at_ms.to_le_bytes());
        buf.extend_from_slice(value);
        Request::PutEx { key, timed: buf }
    }
}

/// Split `len u32 | bytes` off the front of `b`.
fn take_sized(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (n, rest) = b.split_first_chunk::<4>()?;
    let n = u64::from(u32::from_le_bytes(*n));
    (n <= rest.len() as u64).then(|| rest.split_at(n as usize))
}

/// The keys of a validated MGET body.
pub fn mget_keys(mut keys: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (k, rest) = take_sized(keys)?;
        keys = rest;
        Some(k)
    })
}

/// Decode the body of a complete request frame.
pub fn decode_request<'a>(
    header: &FrameHeader,
    body: &'a [u8],
    limits: &Limits,
) -> Result<Request<'a>, WireError> {
    let Some(opcode) = Opcode::from_u8(header.opcode) else {
        return Err(WireError::soft(
            Status::UnknownOpcode,
            format!("opcode {} is not defined", header.opcode),
        ));
    };
    match opcode {
        Opcode::Hello => {
            if !body.is_empty() {
                return Err(WireError::fatal(
                    Status::MalformedBody,
                    "HELLO takes no body".into(),
                ));
            }
            Ok(Request::Hello)
        }
        Opcode::Ping => {
            if body.len() > limits.key_bytes_max {
                return Err(WireError::soft(
                    Status::KeyTooLarge,
                    "PING payload over 64 KiB".into(),
                ));
            }
            Ok(Request::Ping { payload: body })
        }
        Opcode::Get => check_key(limits, body).map(|()| Request::Get { key: body }),
        Opcode::Delete => check_key(limits, body).map(|()| Request::Delete { key: body }),
        Opcode::Put => {
            decode_keyed(body, limits, 0).map(|(key, value)| Request::Put { key, value })
        }
        Opcode::Scan => decode_scan(body, limits),
        Opcode::Mget => decode_mget(body, limits),
        Opcode::Txn => {
            let view = crate::core::txn_format::TxnView::parse(body, false)
                .map_err(|e| txn_body_error("TXN", e))?;
            let ops = u64::from(view.cond_count()) + u64::from(view.write_count());
            check_txn_size(
                ops,
                view.writes().map(|w| w.value().map_or(0, <[u8]>::len)),
                view.writes()
                    .map(|w| crate::core::txn_format::write_bytes(&w)),
                limits,
            )?;
            Ok(Request::Txn(view))
        }
        Opcode::Mput => {
            let mput = crate::core::txn_format::MputView::parse(body)
                .map_err(|e| txn_body_error("MPUT", e))?;
            check_txn_size(
                u64::from(mput.count()),
                mput.pairs().map(|(_, v)| v.len()),
                mput.pairs().map(|(k, v)| 9 + k.len() + v.len()),
                limits,
            )?;
            Ok(Request::Mput(mput))
        }
        Opcode::Backup => {
            if body.is_empty() || body.len() > BACKUP_PATH_BYTES_MAX || body.contains(&0) {
                return Err(WireError::soft(
                    Status::InvalidArgument,
                    format!(
                        "BACKUP takes a directory path of 1 to {BACKUP_PATH_BYTES_MAX} bytes without NUL"
                    ),
                ));
            }
            Ok(Request::Backup { target: body })
        }
        Opcode::Auth => decode_auth(body),
        Opcode::PutEx => {
            decode_keyed(body, limits, 8).map(|(key, timed)| Request::PutEx { key, timed })
        }
        Opcode::Expire => {
            let (key, arg) = decode_keyed(body, limits, 0)?;
            let mode_ok = arg.first().and_then(|m| ExpireMode::from_u8(*m)).is_some();
            if arg.len() != 9 || !mode_ok {
                return Err(WireError::soft(
                    Status::MalformedBody,
                    "EXPIRE body must end with mode u8 (0..=6) and expires_at_ms u64".into(),
                ));
            }
            Ok(Request::Expire { key, arg })
        }
        Opcode::Ttl => check_key(limits, body).map(|()| Request::Ttl { key: body }),
        Opcode::Rmw => decode_rmw(body, limits),
    }
}

/// The RMW arm of [`decode_request`]: `key_len u32 | key | program`.
fn decode_rmw<'a>(body: &'a [u8], limits: &Limits) -> Result<Request<'a>, WireError> {
    let Some((key, program)) = take_sized(body) else {
        return Err(WireError::fatal(
            Status::MalformedBody,
            "RMW key length points past the body".into(),
        ));
    };
    check_key(limits, key)?;
    // The frame is intact: a program that does not decode is a bad
    // argument, not a broken stream.
    let decoded = crate::core::rmw::Program::decode(program)
        .map_err(|e| WireError::soft(Status::InvalidArgument, format!("RMW program: {e}")))?;
    let value_len = match decoded {
        crate::core::rmw::Program::Append(b)
        | crate::core::rmw::Program::GetSet(b)
        | crate::core::rmw::Program::SetRange { bytes: b, .. }
        | crate::core::rmw::Program::Set { value: b, .. } => b.len(),
        _ => 0,
    };
    if value_len > limits.value_bytes_max {
        return Err(WireError::soft(
            Status::ValueTooLarge,
            format!(
                "RMW value of {value_len} bytes; the limit is {}",
                limits.value_bytes_max
            ),
        ));
    }
    Ok(Request::Rmw { key, program })
}

/// A key over the configured limit is refused softly (the connection stays).
fn check_key(limits: &Limits, key: &[u8]) -> Result<(), WireError> {
    if key.len() > limits.key_bytes_max {
        Err(WireError::soft(
            Status::KeyTooLarge,
            format!(
                "key of {} bytes; the limit is {}",
                key.len(),
                limits.key_bytes_max
            ),
        ))
    } else {
        Ok(())
    }
}

/// The PUT arm of [`decode_request`] (key and the rest; and PUT_EX's and EXPIRE's, whose
/// bodies share its `key_len | key | rest` shape): `prefix` bytes of the rest
/// (PUT_EX's expiry) are not value and must be there.
fn decode_keyed<'a>(
    body: &'a [u8],
    limits: &Limits,
    prefix: usize,
) -> Result<(&'a [u8], &'a [u8]), WireError> {
    let Some((len_bytes, rest)) = body.split_first_chunk::<4>() else {
        return Err(WireError::fatal(
            Status::MalformedBody,
            "PUT body shorter than its key length".into(),
        ));
    };
    let key_len = u64::from(u32::from_le_bytes(*len_bytes));
    if key_len > rest.len() as u64 {
        return Err(WireError::fatal(
            Status::MalformedBody,
            format!(
                "PUT key length {key_len} points past the body ({} bytes)",
                rest.len()
            ),
        ));
    }
    let (key, value) = rest.split_at(key_len as usize);
    check_key(limits, key)?;
    if value.len() < prefix {
        return Err(WireError::fatal(
            Status::MalformedBody,
            format!("body ends before its {prefix}-byte expiry"),
        ));
    }
    if value.len() - prefix > limits.value_bytes_max {
        return Err(WireError::soft(
            Status::ValueTooLarge,
            format!(
                "value of {} bytes; the limit is {}",
                value.len() - prefix,
                limits.value_bytes_max
            ),
        ));
    }
    Ok((key, value))
}

/// The SCAN arm of [`decode_request`].
fn decode_scan<'a>(body: &'a [u8], limits: &Limits) -> Result<Request<'a>, WireError> {
    let malformed = || {
        WireError::fatal(
            Status::MalformedBody,
            "SCAN body does not match its layout".into(),
        )
    };
    let scan = scan_fields(body).ok_or_else(malformed)?;
    let ScanRequest {
        start,
        end,
        limit,
        filter_kind,
        filter_arg,
    } = scan;
    // A page's `next` is its last key plus a 0 byte, one byte longer
    // than any key can be: a start may be that long.
    if start.len() > limits.key_bytes_max + 1 {
        return Err(WireError::soft(
            Status::KeyTooLarge,
            format!(
                "SCAN start key of {} bytes; the limit is {} (the key limit plus \
                 one, for a page's `next`)",
                start.len(),
                limits.key_bytes_max + 1
            ),
        ));
    }
    check_key(limits, end)?;
    if limit == 0 || limit > SCAN_LIMIT_MAX {
        return Err(WireError::soft(
            Status::InvalidArgument,
            format!(
                "SCAN limit {limit}: must be between 1 and {}",
                SCAN_LIMIT_MAX
            ),
        ));
    }
    if let Err(e) = crate::core::filter::Filter::compile(filter_kind, filter_arg) {
        return Err(WireError::soft(Status::InvalidArgument, e.to_string()));
    }
    Ok(Request::Scan(scan))
}

/// The MGET arm of [`decode_request`].
fn decode_mget<'a>(body: &'a [u8], limits: &Limits) -> Result<Request<'a>, WireError> {
    let malformed = || {
        WireError::fatal(
            Status::MalformedBody,
            "MGET body does not match its layout".into(),
        )
    };
    let (count, mut rest) = body.split_first_chunk::<4>().ok_or_else(malformed)?;
    let count = u32::from_le_bytes(*count);
    let keys = rest;
    let mut too_large = None;
    // Walk every key before trusting the count: lengths must tile the body.
    for _ in 0..count.min(MGET_KEYS_MAX + 1) {
        let (k, r) = take_sized(rest).ok_or_else(malformed)?;
        if k.len() > limits.key_bytes_max {
            too_large = Some(k.len());
        }
        rest = r;
    }
    if count > MGET_KEYS_MAX {
        return Err(WireError::soft(
            Status::InvalidArgument,
            format!("MGET of {count} keys; the limit is {MGET_KEYS_MAX}"),
        ));
    }
    if !rest.is_empty() {
        return Err(malformed());
    }
    if let Some(len) = too_large {
        return Err(WireError::soft(
            Status::KeyTooLarge,
            format!("key of {len} bytes; the limit is {}", limits.key_bytes_max),
        ));
    }
    Ok(Request::Mget { count, keys })
}

/// The AUTH arm of [`decode_request`].
fn decode_auth(body: &[u8]) -> Result<Request<'_>, WireError> {
    let (user, password) = take_sized(body).ok_or_else(|| {
        WireError::fatal(
            Status::MalformedBody,
            "AUTH user length points past the body".into(),
        )
    })?;
    // The detail never echoes what was sent: it may be a password.
    if user.is_empty() || user.len() > USER_NAME_BYTES_MAX || password.len() > PASSWORD_BYTES_MAX {
        return Err(WireError::soft(
            Status::InvalidArgument,
            format!(
                "AUTH takes a user name of 1 to {USER_NAME_BYTES_MAX} bytes and a password of at most {PASSWORD_BYTES_MAX}"
            ),
        ));
    }
    Ok(Request::Auth { user, password })
}

/// Split a SCAN body into its fields (`None`: it does not match the layout).
/// [`decode_request`] checks them; the server reads them again from the
/// receive buffer when the scan runs.
pub fn scan_fields(body: &[u8]) -> Option<ScanRequest<'_>> {
    let (start, rest) = take_sized(body)?;
    let (end, rest) = take_sized(rest)?;
    let (limit, rest) = rest.split_first_chunk::<4>()?;
    let (&filter_kind, rest) = rest.split_first()?;
    let (filter_arg, rest) = take_sized(rest)?;
    rest.is_empty().then_some(ScanRequest {
        start,
        end,
        limit: u32::from_le_bytes(*limit),
        filter_kind,
        filter_arg,
    })
}

fn txn_body_error(op: &str, e: crate::core::txn_format::TxnFormatError) -> WireError {
    use crate::core::txn_format::TxnFormatError;
    match e {
        TxnFormatError::KeyTooLarge(n) => WireError::soft(
            Status::KeyTooLarge,
            format!("key of {n} bytes; the limit is {KEY_BYTES_MAX}"),
        ),
        e => WireError::fatal(
            Status::MalformedBody,
            format!("{op} body does not match its layout: {e}"),
        ),
    }
}

/// A transaction's writes become one WAL record: bound it like the largest PUT.
fn check_txn_size(
    ops: u64,
    values: impl Iterator<Item = usize>,
    write_bytes: impl Iterator<Item = usize>,
    limits: &Limits,
) -> Result<(), WireError> {
    if ops > u64::from(TXN_OPS_MAX) {
        return Err(WireError::soft(
            Status::InvalidArgument,
            format!("{ops} conditions and writes; the limit is {TXN_OPS_MAX}"),
        ));
    }
    let mut largest = 0;
    for v in values {
        largest = largest.max(v);
    }
    if largest > limits.value_bytes_max {
        return Err(WireError::soft(
            Status::ValueTooLarge,
            format!(
                "value of {largest} bytes; the limit is {}",
                limits.value_bytes_max
            ),
        ));
    }
    // Record header and participant list are a few KiB at most, well inside the
    // key-sized headroom a largest PUT record has over the value limit.
    let total: usize = write_bytes.sum();
    if total > limits.value_bytes_max {
        return Err(WireError::soft(
            Status::ValueTooLarge,
            format!(
                "transaction writes of {total} bytes in all; the limit is the value limit, {}",
                limits.value_bytes_max
            ),
        ));
    }
    Ok(())
}

/// The HELLO response body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloInfo {
    pub protocol_version: u16,
    pub shard_count: u16,
    pub key_bytes_max: u32,
    pub value_bytes_max: u32,
    pub server_version: String,
    /// The shard serving this connection: a client that routes by key
    /// (`core::hash::shard_for_key`) keeps one connection per shard and sends
    /// each single-key request to its owner's, sparing the cross-core hop.
    pub shard: u16,
}

impl HelloInfo {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.protocol_version.to_le_bytes());
        out.extend_from_slice(&self.shard_count.to_le_bytes());
        out.extend_from_slice(&self.key_bytes_max.to_le_bytes());
        out.extend_from_slice(&self.value_bytes_max.to_le_bytes());
        let v = self.server_version.as_bytes();
        let v = &v[..v.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(v);
        out.extend_from_slice(&self.shard.to_le_bytes());
    }

    pub fn decode(body: &[u8]) -> Option<HelloInfo> {
        let (fixed, rest) = body.split_first_chunk::<14>()?;
        let u16_at = |i: usize| u16::from_le_bytes([fixed[i], fixed[i + 1]]);
        let u32_at =
            |i: usize| u32::from_le_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
        let vlen = usize::from(u16_at(12));
        if rest.len() != vlen + 2 {
            return None;
        }
        let (version, shard) = rest.split_at(vlen);
        Some(HelloInfo {
            protocol_version: u16_at(0),
            shard_count: u16_at(2),
            key_bytes_max: u32_at(4),
            value_bytes_max: u32_at(8),
            server_version: String::from_utf8_lossy(version).into_owned(),
            shard: u16::from_le_bytes([shard[0], shard[1]]),
        })
    }
}

fn put_header(out: &mut Vec<u8>, opcode: u8, status: u16, request_id: u64, body_len: usize) {
    assert!(body_len <= u32::MAX as usize, "frame body over 4 GiB");
    let header = FrameHeader {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        opcode,
        flags: U16::new(0),
        status: U16::new(status),
        request_id: U64::new(request_id),
        body_len: U32::new(body_len as u32),
    };
    out.extend_from_slice(header.as_bytes());
}

/// Append a response frame.
pub fn encode_response(
    out: &mut Vec<u8>,
    opcode: u8,
    request_id: u64,
    status: Status,
    body: &[u8],
) {
    put_header(out, opcode, status.code(), request_id, body.len());
    out.extend_from_slice(body);
}

/// Append only the header of a response whose `body_len` body bytes the
/// caller sends next, from wherever they lie (a large value is written from
/// its reply buffer, not copied behind the header).
pub fn encode_response_header(
    out: &mut Vec<u8>,
    opcode: u8,
    request_id: u64,
    status: Status,
    body_len: usize,
) {
    put_header(out, opcode, status.code(), request_id, body_len);
}

/// Append a response frame whose body is written by `fill` in place.
pub fn encode_response_with(
    out: &mut Vec<u8>,
    opcode: u8,
    request_id: u64,
    status: Status,
    fill: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    put_header(out, opcode, status.code(), request_id, 0);
    fill(out);
    let body_len = out.len() - start - HEADER_BYTES;
    assert!(body_len <= u32::MAX as usize, "frame body over 4 GiB");
    out[start + 16..start + 20].copy_from_slice(&(body_len as u32).to_le_bytes());
}

/// A request whose body is one byte string, all of it.
fn put_whole(out: &mut Vec<u8>, opcode: Opcode, request_id: u64, body: &[u8]) {
    put_header(out, opcode as u8, 0, request_id, body.len());
    out.extend_from_slice(body);
}

/// Append a request frame.
pub fn encode_request(out: &mut Vec<u8>, request_id: u64, request: &Request<'_>) {
    match *request {
        Request::Hello => put_header(out, Opcode::Hello as u8, 0, request_id, 0),
        Request::Ping { payload } => put_whole(out, Opcode::Ping, request_id, payload),
        Request::Get { key } => put_whole(out, Opcode::Get, request_id, key),
        Request::Delete { key } => put_whole(out, Opcode::Delete, request_id, key),
        Request::Scan(ScanRequest {
            start,
            end,
            limit,
            filter_kind,
            filter_arg,
        }) => {
            put_header(
                out,
                Opcode::Scan as u8,
                0,
                request_id,
                4 + start.len() + 4 + end.len() + 4 + 1 + 4 + filter_arg.len(),
            );
            out.extend_from_slice(&(start.len() as u32).to_le_bytes());
            out.extend_from_slice(start);
            out.extend_from_slice(&(end.len() as u32).to_le_bytes());
            out.extend_from_slice(end);
            out.extend_from_slice(&limit.to_le_bytes());
            out.push(filter_kind);
            out.extend_from_slice(&(filter_arg.len() as u32).to_le_bytes());
            out.extend_from_slice(filter_arg);
        }
        Request::Mget { count, keys } => {
            put_header(out, Opcode::Mget as u8, 0, request_id, 4 + keys.len());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(keys);
        }
        Request::Txn(view) => put_whole(out, Opcode::Txn, request_id, view.body()),
        Request::Mput(mput) => put_whole(out, Opcode::Mput, request_id, mput.body()),
        Request::Backup { target } => put_whole(out, Opcode::Backup, request_id, target),
        Request::Auth { user, password } => {
            put_header(
                out,
                Opcode::Auth as u8,
                0,
                request_id,
                4 + user.len() + password.len(),
            );
            out.extend_from_slice(&(user.len() as u32).to_le_bytes());
            out.extend_from_slice(user);
            out.extend_from_slice(password);
        }
        Request::Put { key, value } => put_keyed(out, Opcode::Put, request_id, key, value),
        Request::PutEx { key, timed } => put_keyed(out, Opcode::PutEx, request_id, key, timed),
        Request::Expire { key, arg } => put_keyed(out, Opcode::Expire, request_id, key, arg),
        Request::Ttl { key } => put_whole(out, Opcode::Ttl, request_id, key),
        Request::Rmw { key, program } => put_keyed(out, Opcode::Rmw, request_id, key, program),
    }
}

/// A `key_len u32 | key | rest` request (PUT, PUT_EX, EXPIRE).
fn put_keyed(out: &mut Vec<u8>, opcode: Opcode, request_id: u64, key: &[u8], rest: &[u8]) {
    assert!(key.len() <= u32::MAX as usize);
    put_header(out, opcode as u8, 0, request_id, 4 + key.len() + rest.len());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests;
