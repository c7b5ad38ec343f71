//! Read-modify-write programs: what an RMW operation does to one key's
//! value (INCRBY, INCRBYFLOAT, APPEND, SETRANGE, GETSET, GETDEL, SET with
//! NX/XX/GET), their byte encoding (the value bytes of an `OpKind::Rmw` op
//! and of the native RMW request), the encoding of their replies, and
//! [`apply`], which computes the new value and the reply from the current
//! one by Redis's rules.
//!
//! The owning shard runs `apply` between its read of the key and its write,
//! with no other operation on the key in between (`shard::rmw`): that is
//! what makes each program atomic without a retry loop. Everything here is
//! pure: no I/O, no clock (the caller passes `now_ms`), no allocation
//! beyond the new value and the reply.
//!
//! It must never: accept bytes it cannot fully account for (decoding is
//! bounded and exact: trailing bytes are an error), or produce a value over
//! the caller's value limit.

use std::fmt;

/// Program bytes before the program's value: the tag and, at most, a u64
/// offset or a few flags. A frame may be this much larger than a PUT of the
/// largest key and value.
pub const PROGRAM_HEADER_BYTES_MAX: usize = 16;

/// What SET does when the key exists (or not).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SetCond {
    Always = 0,
    /// Only if the key does not exist.
    Nx = 1,
    /// Only if the key exists.
    Xx = 2,
}

/// One read-modify-write of one key.
#[derive(Clone, Debug, PartialEq)]
pub enum Program<'a> {
    /// Add to the key's integer value (absent: 0). Reply: the new value.
    IncrBy(i64),
    /// Add to the key's float value (absent: 0). Reply: the new value as
    /// text. Not NaN; may be infinite (the sum is then refused).
    IncrByFloat(f64),
    /// Append bytes (absent: ""). Reply: the new length.
    Append(&'a [u8]),
    /// Overwrite at `offset`, padding with zero bytes. Reply: the new length.
    SetRange { offset: u64, bytes: &'a [u8] },
    /// Set, reply the old value (or nil). Clears the key's expiry.
    GetSet(&'a [u8]),
    /// Delete, reply the old value (or nil).
    GetDel,
    /// SET with a condition; reply the old value when `get`, else OK (nil
    /// when the condition kept the write from happening). Clears the
    /// key's expiry unless `keep_ttl`.
    Set {
        value: &'a [u8],
        cond: SetCond,
        get: bool,
        keep_ttl: bool,
        /// The new value's expiry (unix ms; 0: none), SET EX/PX/EXAT/PXAT.
        /// Never together with `keep_ttl`.
        expires_at_ms: u64,
    },
    /// GETEX: reply the value (or nil) and change its expiry.
    GetEx(GetExChange),
}

/// What GETEX does to the key's expiry.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GetExChange {
    /// Nothing: GETEX without options is a GET.
    None,
    /// Expire at this unix ms (at or before now: the key is deleted, as
    /// Redis does for a time in the past).
    At(u64),
    /// PERSIST: the key no longer expires.
    Persist,
}

const TAG_INCR_BY: u8 = 1;
const TAG_INCR_BY_FLOAT: u8 = 2;
const TAG_APPEND: u8 = 3;
const TAG_SET_RANGE: u8 = 4;
const TAG_GET_SET: u8 = 5;
const TAG_GET_DEL: u8 = 6;
const TAG_SET: u8 = 7;
const TAG_GET_EX: u8 = 8;

const SET_GET: u8 = 1;
const SET_KEEP_TTL: u8 = 2;
/// An 8-byte expiry (unix ms) follows the flags, before the value.
const SET_EXPIRES: u8 = 4;

/// Why program bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramError(pub String);

impl fmt::Display for ProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'a> Program<'a> {
    /// Append the encoding (`[tag u8][args]`, docs/protocol.md "RMW body").
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Program::IncrBy(by) => {
                out.push(TAG_INCR_BY);
                out.extend_from_slice(&by.to_le_bytes());
            }
            Program::IncrByFloat(by) => {
                out.push(TAG_INCR_BY_FLOAT);
                out.extend_from_slice(&by.to_bits().to_le_bytes());
            }
            Program::Append(b) => {
                out.push(TAG_APPEND);
                out.extend_from_slice(b);
            }
            Program::SetRange { offset, bytes } => {
                out.push(TAG_SET_RANGE);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Program::GetSet(v) => {
                out.push(TAG_GET_SET);
                out.extend_from_slice(v);
            }
            Program::GetDel => out.push(TAG_GET_DEL),
            Program::Set {
                value,
                cond,
                get,
                keep_ttl,
                expires_at_ms,
            } => {
                out.push(TAG_SET);
                out.push(*cond as u8);
                let mut flags = 0;
                if *get {
                    flags |= SET_GET;
                }
                if *keep_ttl {
                    flags |= SET_KEEP_TTL;
                }
                if *expires_at_ms != 0 {
                    flags |= SET_EXPIRES;
                }
                out.push(flags);
                if *expires_at_ms != 0 {
                    out.extend_from_slice(&expires_at_ms.to_le_bytes());
                }
                out.extend_from_slice(value);
            }
            Program::GetEx(change) => {
                out.push(TAG_GET_EX);
                match change {
                    GetExChange::None => out.push(0),
                    GetExChange::At(at) => {
                        out.push(1);
                        out.extend_from_slice(&at.to_le_bytes());
                    }
                    GetExChange::Persist => out.push(2),
                }
            }
        }
    }

    /// Decode program bytes; every byte must be accounted for.
    pub fn decode(b: &'a [u8]) -> Result<Program<'a>, ProgramError> {
        let bad = |what: &str| Err(ProgramError(what.to_string()));
        let Some((&tag, rest)) = b.split_first() else {
            return bad("empty RMW program");
        };
        let exact8 = |rest: &[u8], name: &str| -> Result<[u8; 8], ProgramError> {
            <[u8; 8]>::try_from(rest)
                .map_err(|_| ProgramError(format!("{name} takes exactly 8 argument bytes")))
        };
        match tag {
            TAG_INCR_BY => Ok(Program::IncrBy(i64::from_le_bytes(exact8(rest, "INCRBY")?))),
            TAG_INCR_BY_FLOAT => {
                let by = f64::from_bits(u64::from_le_bytes(exact8(rest, "INCRBYFLOAT")?));
                // An infinite increment is allowed, as Redis parses "inf":
                // the value is checked first, then the sum is refused.
                if by.is_nan() {
                    return bad("INCRBYFLOAT increment is NaN");
                }
                Ok(Program::IncrByFloat(by))
            }
            TAG_APPEND => Ok(Program::Append(rest)),
            TAG_SET_RANGE => {
                let Some((offset, bytes)) = rest.split_first_chunk::<8>() else {
                    return bad("SETRANGE program shorter than its offset");
                };
                Ok(Program::SetRange {
                    offset: u64::from_le_bytes(*offset),
                    bytes,
                })
            }
            TAG_GET_SET => Ok(Program::GetSet(rest)),
            TAG_GET_DEL if rest.is_empty() => Ok(Program::GetDel),
            TAG_GET_DEL => bad("GETDEL takes no argument bytes"),
            TAG_SET => {
                let Some(([cond, flags], value)) = rest.split_first_chunk::<2>() else {
                    return bad("SET program shorter than its condition and flags");
                };
                let cond = match cond {
                    0 => SetCond::Always,
                    1 => SetCond::Nx,
                    2 => SetCond::Xx,
                    c => return bad(&format!("SET condition {c} is not defined")),
                };
                if flags & !(SET_GET | SET_KEEP_TTL | SET_EXPIRES) != 0 {
                    return bad(&format!("SET flags {flags:#04x} has undefined bits"));
                }
                let (expires_at_ms, value) = if flags & SET_EXPIRES != 0 {
                    let Some((at, value)) = value.split_first_chunk::<8>() else {
                        return bad("SET program shorter than its expiry");
                    };
                    let at = u64::from_le_bytes(*at);
                    if at == 0 || flags & SET_KEEP_TTL != 0 {
                        return bad("SET expiry must be non-zero and without KEEPTTL");
                    }
                    (at, value)
                } else {
                    (0, value)
                };
                Ok(Program::Set {
                    value,
                    cond,
                    get: flags & SET_GET != 0,
                    keep_ttl: flags & SET_KEEP_TTL != 0,
                    expires_at_ms,
                })
            }
            TAG_GET_EX => match rest {
                [0] => Ok(Program::GetEx(GetExChange::None)),
                [2] => Ok(Program::GetEx(GetExChange::Persist)),
                [1, at @ ..] => Ok(Program::GetEx(GetExChange::At(u64::from_le_bytes(exact8(
                    at, "GETEX",
                )?)))),
                _ => bad("GETEX program: mode 0, 2, or 1 with 8 bytes"),
            },
            t => bad(&format!("RMW program {t} is not defined")),
        }
    }

    /// The command the program implements, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Program::IncrBy(_) => "INCRBY",
            Program::IncrByFloat(_) => "INCRBYFLOAT",
            Program::Append(_) => "APPEND",
            Program::SetRange { .. } => "SETRANGE",
            Program::GetSet(_) => "GETSET",
            Program::GetDel => "GETDEL",
            Program::Set { .. } => "SET",
            Program::GetEx(_) => "GETEX",
        }
    }
}

/// The key's value as the shard holds it when the program runs.
#[derive(Copy, Clone, Debug)]
pub struct Current<'a> {
    pub value: &'a [u8],
    /// Absolute expiry in Unix milliseconds; 0: none.
    pub expires_at_ms: u64,
}

/// What happens to the key's expiry when a program writes it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The key keeps the expiry it had (INCR, APPEND, SETRANGE, SET KEEPTTL).
    Keep,
    /// The key no longer expires (GETSET, SET).
    Clear,
    /// The key expires at this unix ms (SET EX.., GETEX EX..).
    At(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    NoWrite,
    Put { value: Vec<u8>, expiry: Expiry },
    Delete,
}

/// What a program answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
}

const REPLY_OK: u8 = 0;
const REPLY_INT: u8 = 1;
const REPLY_BULK: u8 = 2;
const REPLY_NIL: u8 = 3;

impl Reply {
    /// Append the reply body (`[kind u8][i64 LE | bytes]`, docs/protocol.md).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Ok => out.push(REPLY_OK),
            Reply::Int(n) => {
                out.push(REPLY_INT);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Reply::Bulk(b) => {
                out.push(REPLY_BULK);
                out.extend_from_slice(b);
            }
            Reply::Nil => out.push(REPLY_NIL),
        }
    }

    /// Decode a reply body; None if it is not one.
    pub fn decode(b: &[u8]) -> Option<ReplyRef<'_>> {
        let (&kind, rest) = b.split_first()?;
        match kind {
            REPLY_OK if rest.is_empty() => Some(ReplyRef::Ok),
            REPLY_INT => Some(ReplyRef::Int(i64::from_le_bytes(rest.try_into().ok()?))),
            REPLY_BULK => Some(ReplyRef::Bulk(rest)),
            REPLY_NIL if rest.is_empty() => Some(ReplyRef::Nil),
            _ => None,
        }
    }
}

/// A decoded reply body, borrowing its bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReplyRef<'a> {
    Ok,
    Int(i64),
    Bulk(&'a [u8]),
    Nil,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effect {
    pub write: Write,
    pub reply: Reply,
}

/// Why a program refused to run; nothing was written. Each has Redis's
/// error text, and a code the wire carries (docs/protocol.md "RMW body").
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RmwError {
    /// The value is not a decimal integer in i64 range.
    NotInteger = 1,
    /// The sum leaves i64.
    Overflow = 2,
    /// The value is not a float.
    NotFloat = 3,
    /// The sum is NaN or infinite.
    NanOrInfinity = 4,
    /// APPEND/SETRANGE would make the value longer than the value limit.
    TooBig = 5,
    /// GETSET/SET of a value longer than the value limit.
    ValueTooLarge = 6,
}

impl RmwError {
    pub const ALL: [RmwError; 6] = [
        RmwError::NotInteger,
        RmwError::Overflow,
        RmwError::NotFloat,
        RmwError::NanOrInfinity,
        RmwError::TooBig,
        RmwError::ValueTooLarge,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(c: u8) -> Option<RmwError> {
        RmwError::ALL.into_iter().find(|e| e.code() == c)
    }

    /// Redis's reply text for this error.
    pub fn redis_text(self) -> &'static str {
        match self {
            RmwError::NotInteger => "ERR value is not an integer or out of range",
            RmwError::Overflow => "ERR increment or decrement would overflow",
            RmwError::NotFloat => "ERR value is not a valid float",
            RmwError::NanOrInfinity => "ERR increment would produce NaN or Infinity",
            RmwError::TooBig => "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
            RmwError::ValueTooLarge => "ERR value is longer than the value limit",
        }
    }
}

impl fmt::Display for RmwError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.redis_text().trim_start_matches("ERR "))
    }
}

/// Run `program` against the key's current value (None: absent). A value
/// whose expiry is at or before `now_ms` counts as absent. The new value
/// never exceeds `value_bytes_max`.
pub fn apply(
    program: &Program<'_>,
    current: Option<Current<'_>>,
    now_ms: u64,
    value_bytes_max: usize,
) -> Result<Effect, RmwError> {
    let current = current.filter(|c| c.expires_at_ms == 0 || c.expires_at_ms > now_ms);
    let old = current.map(|c| c.value);
    let put = |value: Vec<u8>, expiry: Expiry| Write::Put { value, expiry };
    Ok(match program {
        Program::IncrBy(by) => {
            let cur = match old {
                None => 0,
                Some(v) => parse_i64(v).ok_or(RmwError::NotInteger)?,
            };
            let new = cur.checked_add(*by).ok_or(RmwError::Overflow)?;
            Effect {
                write: put(new.to_string().into_bytes(), Expiry::Keep),
                reply: Reply::Int(new),
            }
        }
        Program::IncrByFloat(by) => {
            let cur = match old {
                None => 0.0,
                Some(v) => parse_f64(v).ok_or(RmwError::NotFloat)?,
            };
            let new = cur + by;
            if !new.is_finite() {
                return Err(RmwError::NanOrInfinity);
            }
            let text = format_float(new).into_bytes();
            Effect {
                write: put(text.clone(), Expiry::Keep),
                reply: Reply::Bulk(text),
            }
        }
        Program::Append(tail) => {
            let old = old.unwrap_or_default();
            if old.len() as u64 + tail.len() as u64 > value_bytes_max as u64 {
                return Err(RmwError::TooBig);
            }
            let mut v = Vec::with_capacity(old.len() + tail.len());
            v.extend_from_slice(old);
            v.extend_from_slice(tail);
            let n = v.len() as i64;
            Effect {
                write: put(v, Expiry::Keep),
                reply: Reply::Int(n),
            }
        }
        Program::SetRange { offset, bytes } => {
            let old_len = old.map_or(0, <[u8]>::len);
            // Redis: an empty part changes nothing and creates no key.
            if bytes.is_empty() {
                return Ok(Effect {
                    write: Write::NoWrite,
                    reply: Reply::Int(old_len as i64),
                });
            }
            let end = offset
                .checked_add(bytes.len() as u64)
                .filter(|&end| end <= value_bytes_max as u64)
                .ok_or(RmwError::TooBig)?;
            // Bounded by value_bytes_max, a usize.
            let (offset, end) = (*offset as usize, end as usize);
            let mut v = Vec::with_capacity(old_len.max(end));
            v.extend_from_slice(old.unwrap_or_default());
            if v.len() < end {
                v.resize(end, 0);
            }
            v[offset..end].copy_from_slice(bytes);
            let n = v.len() as i64;
            Effect {
                write: put(v, Expiry::Keep),
                reply: Reply::Int(n),
            }
        }
        Program::GetSet(value) => {
            if value.len() > value_bytes_max {
                return Err(RmwError::ValueTooLarge);
            }
            Effect {
                write: put(value.to_vec(), Expiry::Clear),
                reply: old.map_or(Reply::Nil, |o| Reply::Bulk(o.to_vec())),
            }
        }
        Program::GetDel => match old {
            None => Effect {
                write: Write::NoWrite,
                reply: Reply::Nil,
            },
            Some(o) => Effect {
                write: Write::Delete,
                reply: Reply::Bulk(o.to_vec()),
            },
        },
        Program::GetEx(change) => match current {
            None => Effect {
                write: Write::NoWrite,
                reply: Reply::Nil,
            },
            Some(c) => Effect {
                write: match change {
                    GetExChange::None => Write::NoWrite,
                    GetExChange::At(at) if *at <= now_ms => Write::Delete,
                    GetExChange::At(at) => put(c.value.to_vec(), Expiry::At(*at)),
                    GetExChange::Persist if c.expires_at_ms == 0 => Write::NoWrite,
                    GetExChange::Persist => put(c.value.to_vec(), Expiry::Clear),
                },
                reply: Reply::Bulk(c.value.to_vec()),
            },
        },
        Program::Set {
            value,
            cond,
            get,
            keep_ttl,
            expires_at_ms,
        } => {
            if value.len() > value_bytes_max {
                return Err(RmwError::ValueTooLarge);
            }
            let skip = match cond {
                SetCond::Always => false,
                SetCond::Nx => old.is_some(),
                SetCond::Xx => old.is_none(),
            };
            let reply = match (get, skip) {
                (true, _) => old.map_or(Reply::Nil, |o| Reply::Bulk(o.to_vec())),
                (false, true) => Reply::Nil,
                (false, false) => Reply::Ok,
            };
            let expiry = if *expires_at_ms != 0 {
                Expiry::At(*expires_at_ms)
            } else if *keep_ttl {
                Expiry::Keep
            } else {
                Expiry::Clear
            };
            Effect {
                write: if skip {
                    Write::NoWrite
                } else {
                    put(value.to_vec(), expiry)
                },
                reply,
            }
        }
    })
}

/// Redis's integer syntax (`string2ll`): optional '-', no '+', no leading
/// zeros, no "-0", no spaces, within i64.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits[0] == b'0' && (digits.len() > 1 || b[0] == b'-') {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Redis's float syntax for INCRBYFLOAT (strtold: no leading or trailing
/// space, no NaN).
pub fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    let v: f64 = match s.parse() {
        Ok(v) => v,
        Err(_) => parse_hex_f64(s)?,
    };
    (!v.is_nan()).then_some(v)
}

/// C's strtold, which Redis's INCRBYFLOAT parses with, also reads
/// hexadecimal floats (`0x10`, `-0x1.8p3`); Rust's `parse` does not, and a
/// client sending one must get Redis's result, not `not a valid float`.
fn parse_hex_f64(s: &str) -> Option<f64> {
    let (neg, rest) = match (s.strip_prefix('-'), s.strip_prefix('+')) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => (false, s),
    };
    let rest = rest
        .strip_prefix("0x")
        .or_else(|| rest.strip_prefix("0X"))?;
    let (mantissa, exp) = match rest.split_once(['p', 'P']) {
        // strtold needs digits after `p` (an optional sign first).
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v = 0f64;
    for c in int.chars() {
        v = v * 16.0 + f64::from(c.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for c in frac.chars() {
        v += f64::from(c.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    let v = v * 2f64.powi(exp);
    Some(if neg { -v } else { v })
}

/// Redis's INCRBYFLOAT text (`ld2string` in "human" mode: `%.17Lf`, then
/// trailing zeros and a trailing '.' trimmed, "-0" as "0"): never an
/// exponent, at most 17 decimals. The shortest text that reads back as the
/// same f64 is used when it has no more than 17 decimals (so 10.5 + 0.1 is
/// "10.6", as in Redis, not the f64's exact "10.59999999999999964").
pub fn format_float(v: f64) -> String {
    // Display never uses an exponent and is the shortest round trip.
    let mut s = format!("{v}");
    let decimals = s.find('.').map_or(0, |dot| s.len() - dot - 1);
    if decimals > 17 {
        s = format!("{v:.17}");
        if s.contains('.') {
            let trimmed = s.trim_end_matches('0').trim_end_matches('.').len();
            s.truncate(trimmed);
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn run(p: Program<'_>, cur: Option<&[u8]>) -> Result<Effect, RmwError> {
        let cur = cur.map(|value| Current {
            value,
            expires_at_ms: 0,
        });
        apply(&p, cur, 1_000, MAX)
    }

    fn put(v: &[u8], expiry: Expiry) -> Write {
        Write::Put {
            value: v.to_vec(),
            expiry,
        }
    }

    #[test]
    fn programs_round_trip_and_reject_stray_bytes() {
        let all = [
            Program::IncrBy(-7),
            Program::IncrBy(i64::MIN),
            Program::IncrByFloat(2.5),
            Program::Append(b"tail"),
            Program::Append(b""),
            Program::SetRange {
                offset: 9,
                bytes: b"x",
            },
            Program::GetSet(b"v"),
            Program::GetDel,
            Program::Set {
                value: b"v",
                cond: SetCond::Nx,
                get: true,
                keep_ttl: false,
                expires_at_ms: 0,
            },
            Program::Set {
                value: b"",
                cond: SetCond::Xx,
                get: false,
                keep_ttl: true,
                expires_at_ms: 0,
            },
        ];
        for p in all {
            let mut b = Vec::new();
            p.encode(&mut b);
            assert!(b.len() <= PROGRAM_HEADER_BYTES_MAX + 4, "{p:?}");
            assert_eq!(Program::decode(&b), Ok(p.clone()));
            // Every prefix of a fixed-size program is refused or a
            // different, shorter program: never a read past the end.
            for cut in 0..b.len() {
                let _ = Program::decode(&b[..cut]);
            }
        }
        for bad in [
            &[][..],
            &[0],
            &[99],
            &[TAG_INCR_BY, 1, 2, 3],
            &[TAG_INCR_BY, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[TAG_GET_DEL, 0],
            &[TAG_SET, 3, 0],
            &[TAG_SET, 0, 4],
            &[TAG_SET, 0],
            &[TAG_SET_RANGE, 1, 2],
        ] {
            assert!(Program::decode(bad).is_err(), "{bad:?}");
        }
        let mut nan = vec![TAG_INCR_BY_FLOAT];
        nan.extend_from_slice(&f64::NAN.to_bits().to_le_bytes());
        assert!(Program::decode(&nan).is_err());
    }

    #[test]
    fn replies_round_trip() {
        for (r, want) in [
            (Reply::Ok, ReplyRef::Ok),
            (Reply::Int(-3), ReplyRef::Int(-3)),
            (Reply::Bulk(b"ab".to_vec()), ReplyRef::Bulk(b"ab")),
            (Reply::Bulk(vec![]), ReplyRef::Bulk(b"")),
            (Reply::Nil, ReplyRef::Nil),
        ] {
            let mut b = Vec::new();
            r.encode(&mut b);
            assert_eq!(Reply::decode(&b), Some(want));
        }
        assert_eq!(Reply::decode(&[]), None);
        assert_eq!(Reply::decode(&[REPLY_INT, 1]), None);
        assert_eq!(Reply::decode(&[REPLY_NIL, 1]), None);
        assert_eq!(Reply::decode(&[9]), None);
        for e in RmwError::ALL {
            assert_eq!(RmwError::from_code(e.code()), Some(e));
        }
        assert_eq!(RmwError::from_code(0), None);
    }

    #[test]
    fn incr_follows_redis_integer_rules() {
        let e = run(Program::IncrBy(1), None).unwrap();
        assert_eq!(e.write, put(b"1", Expiry::Keep));
        assert_eq!(e.reply, Reply::Int(1));
        assert_eq!(
            run(Program::IncrBy(-5), Some(b"-9223372036854775803"))
                .unwrap()
                .reply,
            Reply::Int(i64::MIN)
        );
        assert_eq!(
            run(Program::IncrBy(i64::MAX), Some(b"0")).unwrap().reply,
            Reply::Int(i64::MAX)
        );
        for bad in [
            &b"10.5"[..],
            b"+1",
            b" 1",
            b"1 ",
            b"-0",
            b"01",
            b"",
            b"-",
            b"abc",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"123456789012345678901",
        ] {
            assert_eq!(
                run(Program::IncrBy(1), Some(bad)),
                Err(RmwError::NotInteger),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            run(Program::IncrBy(1), Some(b"9223372036854775807")),
            Err(RmwError::Overflow)
        );
        assert_eq!(
            run(Program::IncrBy(-1), Some(b"-9223372036854775808")),
            Err(RmwError::Overflow)
        );
        assert_eq!(
            run(Program::IncrBy(i64::MIN), Some(b"-1")),
            Err(RmwError::Overflow)
        );
        assert_eq!(
            run(Program::IncrBy(0), Some(b"0")).unwrap().reply,
            Reply::Int(0)
        );
    }

    #[test]
    fn incrbyfloat_formats_like_redis() {
        let f = |by: f64, cur: Option<&[u8]>| match run(Program::IncrByFloat(by), cur) {
            Ok(Effect {
                reply: Reply::Bulk(b),
                write,
            }) => {
                assert_eq!(write, put(&b, Expiry::Keep));
                Ok(String::from_utf8(b).unwrap())
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(f(10.5, None).unwrap(), "10.5");
        assert_eq!(f(0.1, Some(b"10.50")).unwrap(), "10.6");
        assert_eq!(f(-20.0, Some(b"10.75")).unwrap(), "-9.25");
        assert_eq!(f(5.0e3, Some(b"3.0e3")).unwrap(), "8000");
        assert_eq!(f(1.0, Some(b"-1")).unwrap(), "0");
        assert_eq!(f(-0.0, Some(b"-0")).unwrap(), "0", "never -0");
        assert_eq!(f(1e20, None).unwrap(), "100000000000000000000");
        // More than 17 decimals: rounded to 17, zeros trimmed (%.17Lf).
        assert_eq!(f(1e-20, None).unwrap(), "0");
        assert_eq!(f(1.5e-10, None).unwrap(), "0.00000000015");
        assert_eq!(f(1.0, Some(b"1")).unwrap(), "2");
        for bad in [&b"abc"[..], b" 1", b"1 ", b"", b"nan", b"1.5.5"] {
            assert_eq!(f(1.0, Some(bad)), Err(RmwError::NotFloat), "{bad:?}");
        }
        assert_eq!(f(1.0, Some(b"inf")), Err(RmwError::NanOrInfinity));
        // Redis checks the value before the sum: "abc" + inf is NotFloat.
        assert_eq!(f(f64::INFINITY, Some(b"abc")), Err(RmwError::NotFloat));
        assert_eq!(f(f64::INFINITY, Some(b"1")), Err(RmwError::NanOrInfinity));
        assert_eq!(f(f64::MAX, Some(b"1.7e308")), Err(RmwError::NanOrInfinity));
        // An integer value is a float too.
        assert_eq!(f(0.5, Some(b"7")).unwrap(), "7.5");
    }

    #[test]
    fn append_and_setrange_pad_and_bound() {
        let e = run(Program::Append(b"ab"), None).unwrap();
        assert_eq!(
            (e.write, e.reply),
            (put(b"ab", Expiry::Keep), Reply::Int(2))
        );
        let e = run(Program::Append(b"cd"), Some(b"ab")).unwrap();
        assert_eq!(
            (e.write, e.reply),
            (put(b"abcd", Expiry::Keep), Reply::Int(4))
        );
        let e = run(Program::Append(b""), None).unwrap();
        assert_eq!((e.write, e.reply), (put(b"", Expiry::Keep), Reply::Int(0)));
        let full = vec![b'x'; MAX];
        assert_eq!(
            run(Program::Append(b"y"), Some(&full)),
            Err(RmwError::TooBig)
        );
        assert!(run(Program::Append(b""), Some(&full)).is_ok());

        let sr = |offset, bytes| Program::SetRange { offset, bytes };
        let e = run(sr(3, b"ab"), None).unwrap();
        assert_eq!(
            (e.write, e.reply),
            (put(b"\0\0\0ab", Expiry::Keep), Reply::Int(5))
        );
        let e = run(sr(1, b"XY"), Some(b"hello")).unwrap();
        assert_eq!(e.write, put(b"hXYlo", Expiry::Keep));
        assert_eq!(e.reply, Reply::Int(5));
        let e = run(sr(4, b"XY"), Some(b"hello")).unwrap();
        assert_eq!(e.write, put(b"hellXY", Expiry::Keep));
        // An empty part writes nothing, creates nothing, even past the limit.
        let e = run(sr(u64::MAX, b""), Some(b"hello")).unwrap();
        assert_eq!((e.write, e.reply), (Write::NoWrite, Reply::Int(5)));
        let e = run(sr(7, b""), None).unwrap();
        assert_eq!((e.write, e.reply), (Write::NoWrite, Reply::Int(0)));
        assert_eq!(run(sr(MAX as u64, b"a"), None), Err(RmwError::TooBig));
        assert_eq!(run(sr(u64::MAX, b"a"), None), Err(RmwError::TooBig));
        assert!(run(sr(MAX as u64 - 1, b"a"), None).is_ok());
    }

    #[test]
    fn getset_getdel_and_set_conditions() {
        let e = run(Program::GetSet(b"new"), Some(b"old")).unwrap();
        assert_eq!(e.write, put(b"new", Expiry::Clear));
        assert_eq!(e.reply, Reply::Bulk(b"old".to_vec()));
        assert_eq!(run(Program::GetSet(b"n"), None).unwrap().reply, Reply::Nil);
        assert_eq!(
            run(Program::GetSet(&vec![0; MAX + 1]), None),
            Err(RmwError::ValueTooLarge)
        );

        let e = run(Program::GetDel, Some(b"v")).unwrap();
        assert_eq!(
            (e.write, e.reply),
            (Write::Delete, Reply::Bulk(b"v".to_vec()))
        );
        let e = run(Program::GetDel, None).unwrap();
        assert_eq!((e.write, e.reply), (Write::NoWrite, Reply::Nil));

        let set = |cond, get| Program::Set {
            value: b"v",
            cond,
            get,
            keep_ttl: false,
            expires_at_ms: 0,
        };
        // (condition, GET, old value, writes, reply)
        type Case<'a> = (SetCond, bool, Option<&'a [u8]>, bool, Reply);
        let cases: [Case<'_>; 10] = [
            (SetCond::Always, false, None, true, Reply::Ok),
            (
                SetCond::Always,
                true,
                Some(b"o"),
                true,
                Reply::Bulk(b"o".to_vec()),
            ),
            (SetCond::Nx, false, None, true, Reply::Ok),
            (SetCond::Nx, false, Some(b"o"), false, Reply::Nil),
            (
                SetCond::Nx,
                true,
                Some(b"o"),
                false,
                Reply::Bulk(b"o".to_vec()),
            ),
            (SetCond::Nx, true, None, true, Reply::Nil),
            (SetCond::Xx, false, None, false, Reply::Nil),
            (SetCond::Xx, false, Some(b"o"), true, Reply::Ok),
            (
                SetCond::Xx,
                true,
                Some(b"o"),
                true,
                Reply::Bulk(b"o".to_vec()),
            ),
            (SetCond::Xx, true, None, false, Reply::Nil),
        ];
        for (cond, get, cur, writes, reply) in cases {
            let e = run(set(cond, get), cur).unwrap();
            let want = if writes {
                put(b"v", Expiry::Clear)
            } else {
                Write::NoWrite
            };
            assert_eq!((e.write, e.reply), (want, reply), "{cond:?} {get} {cur:?}");
        }
        let keep = Program::Set {
            value: b"v",
            cond: SetCond::Always,
            get: false,
            keep_ttl: true,
            expires_at_ms: 0,
        };
        assert_eq!(run(keep, None).unwrap().write, put(b"v", Expiry::Keep));
    }

    #[test]
    fn an_expired_value_counts_as_absent() {
        let expired = Current {
            value: b"41",
            expires_at_ms: 1_000,
        };
        let live = Current {
            value: b"41",
            expires_at_ms: 1_001,
        };
        let incr = Program::IncrBy(1);
        assert_eq!(
            apply(&incr, Some(expired), 1_000, MAX).unwrap().reply,
            Reply::Int(1)
        );
        assert_eq!(
            apply(&incr, Some(live), 1_000, MAX).unwrap().reply,
            Reply::Int(42)
        );
        let e = apply(&Program::GetDel, Some(expired), 5_000, MAX).unwrap();
        assert_eq!((e.write, e.reply), (Write::NoWrite, Reply::Nil));
    }
}
