//! The string commands (GET, SET, MSET, INCR, APPEND, ...) and the key
//! commands that act on named keys (DEL, EXISTS, TYPE), each mapped onto
//! engine operations.
//!
//! Single-key reads and writes are one routed operation. MGET is one
//! consistent snapshot (the native MGET, sized against `reply_bytes_max`
//! before any value is copied). MSET and MSETNX are one corekv transaction,
//! so they are atomic across shards. Conditional writes (SET NX/XX, SETNX)
//! are a transaction with an ABSENT/PRESENT condition.
//!
//! Read-modify-write commands (INCR*, APPEND, SETRANGE, GETSET, SET GET,
//! GETDEL) are a compare-and-set: read the value, compute, then a transaction
//! whose condition is "the value is still what was read" (or "still absent"),
//! retried when the condition fails. The transaction's condition is checked
//! under the key's lock on the owning shard, and plain writes consult that
//! lock, so no write can slip in between: each command is atomic. This needs
//! no new engine operation (no record or shard change), at the price of a
//! retry under contention on one key; see docs/redis-compatibility.md.
//! It must never write without going through the router.

use crate::core::limits::{KEY_BYTES_MAX, MGET_KEYS_MAX};
use crate::core::status::Status;
use crate::core::txn_format::{encode_txn, Cond, TxnFormatError, TxnView, Write};
use crate::shard::metrics::OpClass;
use crate::shard::{OpKind, ShardContext};

use super::commands::{parse_i64, status_error, Outcome, Run, Session, NOT_INTEGER, SYNTAX};
use crate::net::outbound::{SendError, DIRECT_WRITE_BYTES};

/// Attempts of one read-modify-write before it gives up with TXN_ABORTED
/// (each failed attempt means another client changed the key meanwhile).
pub(super) const RMW_ATTEMPTS_MAX: usize = 1000;

pub(super) const TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// What a read-modify-write does with the key.
enum Change {
    Keep,
    Put(Vec<u8>),
    Delete,
}

/// The reply a read-modify-write computed.
enum Answer {
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Error(String),
}

impl Session {
    pub(super) async fn string_command(
        &mut self,
        name: &str,
        run: &mut Run<'_, '_>,
    ) -> Result<Outcome, SendError> {
        let argv = run.argv;
        if let Some(&key) = argv.get(1) {
            if key.len() > KEY_BYTES_MAX && name != "del" && name != "exists" && name != "unlink" {
                run.reply(self.proto)
                    .error(&status_error(Status::KeyTooLarge));
                return Ok((OpClass::Other, Status::KeyTooLarge));
            }
        }
        match name {
            "get" => self.get(run).await,
            "set" => self.set(run).await,
            "setnx" => {
                let s = self
                    .txn(
                        run.ctx,
                        &[Cond::Absent(argv[1])],
                        &[Write::Put(argv[1], argv[2])],
                    )
                    .await;
                let mut r = run.reply(self.proto);
                match s {
                    Status::Ok => r.int(1),
                    Status::ConditionFailed => r.int(0),
                    other => r.error(&status_error(other)),
                }
                Ok((OpClass::Put, s))
            }
            "mget" => self.mget(run).await,
            "mset" | "msetnx" => self.mset(run, name == "msetnx").await,
            "del" | "unlink" => self.multi_key(run, OpKind::Delete).await,
            "exists" | "touch" => self.multi_key(run, OpKind::ValueLen).await,
            "ttl" | "pttl" | "expiretime" | "pexpiretime" | "persist" => {
                // No key expires: -1 ("no timeout") for a key that exists,
                // -2 for one that does not; PERSIST removes nothing (0).
                let (status, _) = self.one(run.ctx, OpKind::ValueLen, argv[1], b"").await;
                let mut r = run.reply(self.proto);
                match (status, name) {
                    (Status::Ok | Status::NotFound, "persist") => r.int(0),
                    (Status::Ok, _) => r.int(-1),
                    (Status::NotFound, _) => r.int(-2),
                    (other, _) => r.error(&status_error(other)),
                }
                Ok((OpClass::Get, status))
            }
            "strlen" | "type" => {
                let (status, len) = self.one(run.ctx, OpKind::ValueLen, argv[1], b"").await;
                let mut r = run.reply(self.proto);
                match (status, name) {
                    (Status::Ok, "strlen") => r.int(i64::from(len)),
                    (Status::NotFound, "strlen") => r.int(0),
                    (Status::Ok, _) => r.simple("string"),
                    (Status::NotFound, _) => r.simple("none"),
                    (other, _) => r.error(&status_error(other)),
                }
                Ok((OpClass::Get, status))
            }
            "getrange" | "substr" => self.getrange(run).await,
            _ => self.rmw_command(name, run).await,
        }
    }

    /// One routed op; returns its status and, for ValueLen, the length.
    async fn one(
        &mut self,
        ctx: &ShardContext,
        kind: OpKind,
        key: &[u8],
        value: &[u8],
    ) -> (Status, u32) {
        self.batch.clear();
        let shard = ctx.router.shard_of(key);
        self.batch.push(shard, kind, key, value);
        ctx.router.execute(&mut self.batch).await;
        let (status, body) = self.batch.replies(shard).get(0);
        let n = match body {
            [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]),
            [x, ..] => u32::from(*x),
            [] => 0,
        };
        (status, n)
    }

    async fn get(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let key = run.argv[1];
        self.batch.clear();
        let shard = run.ctx.router.shard_of(key);
        self.batch.push(shard, OpKind::Get, key, b"");
        run.ctx.router.execute(&mut self.batch).await;
        let (status, value) = self.batch.replies(shard).get(0);
        let mut r = super::codec::Reply {
            out: run.outb.buf(),
            proto: self.proto,
        };
        match status {
            Status::Ok if value.len() >= DIRECT_WRITE_BYTES => {
                // A large value goes out from where it lies, not copied.
                r.bulk_header(value.len());
                run.outb.send_direct(run.stream, value).await?;
                run.outb.buf().extend_from_slice(b"\r\n");
            }
            Status::Ok => r.bulk(value),
            Status::NotFound => r.nil(),
            other => r.error(&status_error(other)),
        }
        Ok((OpClass::Get, status))
    }

    /// A client transaction of `conds` and `writes`.
    pub(super) async fn txn(
        &mut self,
        ctx: &ShardContext,
        conds: &[Cond<'_>],
        writes: &[Write<'_>],
    ) -> Status {
        self.scratch.clear();
        encode_txn(&mut self.scratch, conds, writes);
        // The router takes a validated view; the body was built here from
        // checked keys, so a failure is a key over the limit.
        let view = match TxnView::parse(&self.scratch, false) {
            Ok(view) => view,
            Err(TxnFormatError::KeyTooLarge(_)) => return Status::KeyTooLarge,
            Err(_) => return Status::MalformedBody,
        };
        ctx.router.transaction(&view, &mut self.detail).await
    }

    async fn set(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let (key, value) = (argv[1], argv[2]);
        let (mut nx, mut xx, mut get) = (false, false, false);
        let mut expiry: Option<String> = None;
        let mut i = 3;
        while i < argv.len() {
            let opt = argv[i].to_ascii_uppercase();
            match opt.as_slice() {
                b"NX" if !xx => nx = true,
                b"XX" if !nx => xx = true,
                b"GET" => get = true,
                b"KEEPTTL" if expiry.is_none() => expiry = Some("KEEPTTL".into()),
                b"EX" | b"PX" | b"EXAT" | b"PXAT" if expiry.is_none() && i + 1 < argv.len() => {
                    expiry = Some(String::from_utf8_lossy(&opt).into_owned());
                    i += 1;
                }
                _ => {
                    run.reply(self.proto).error(SYNTAX);
                    return Ok((OpClass::Put, Status::InvalidArgument));
                }
            }
            i += 1;
        }
        if let Some(opt) = expiry {
            let e = format!(
                "ERR SET {opt}: key expiry is not supported by corekv yet (see docs/redis-compatibility.md)"
            );
            run.reply(self.proto).error(&e);
            return Ok((OpClass::Put, Status::InvalidArgument));
        }
        if get {
            let v = value.to_vec();
            return self
                .rmw(run, key, move |old| {
                    let answer = old.map_or(Answer::Nil, |o| Answer::Bulk(o.to_vec()));
                    let skip = (nx && old.is_some()) || (xx && old.is_none());
                    let change = if skip {
                        Change::Keep
                    } else {
                        Change::Put(v.clone())
                    };
                    Ok((change, answer))
                })
                .await;
        }
        let status = if nx {
            self.txn(run.ctx, &[Cond::Absent(key)], &[Write::Put(key, value)])
                .await
        } else if xx {
            self.txn(run.ctx, &[Cond::Present(key)], &[Write::Put(key, value)])
                .await
        } else {
            self.one(run.ctx, OpKind::Put, key, value).await.0
        };
        let mut r = run.reply(self.proto);
        match status {
            Status::Ok => r.simple("OK"),
            Status::ConditionFailed => r.nil(),
            other => r.error(&status_error(other)),
        }
        Ok((OpClass::Put, status))
    }

    async fn mget(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let keys = &run.argv[1..];
        if keys.len() > MGET_KEYS_MAX as usize {
            let e =
                format!("ERR MGET of more than {MGET_KEYS_MAX} keys: ask for fewer keys per MGET");
            run.reply(self.proto).error(&e);
            return Ok((OpClass::Get, Status::InvalidArgument));
        }
        // The native MGET's key list: `len u32 | key` items.
        self.scratch.clear();
        for k in keys {
            if k.len() > KEY_BYTES_MAX {
                run.reply(self.proto)
                    .error(&status_error(Status::KeyTooLarge));
                return Ok((OpClass::Get, Status::KeyTooLarge));
            }
            self.scratch
                .extend_from_slice(&(k.len() as u32).to_le_bytes());
            self.scratch.extend_from_slice(k);
        }
        let count = keys.len() as u32;
        let ctx = run.ctx;
        let status = crate::net::request_batch::sized_snapshot_get(
            &mut self.probe,
            &self.scratch,
            count,
            ctx,
            run.cfg,
            &mut self.detail,
        )
        .await;
        let proto = self.proto;
        if status != Status::Ok {
            let e = if status == Status::ReplyTooLarge {
                format!("REPLY_TOO_LARGE {}", String::from_utf8_lossy(&self.detail))
            } else {
                status_error(status)
            };
            run.reply(proto).error(&e);
            return Ok((OpClass::Get, status));
        }
        // count u32, then per key: status u16 | len u32 | value.
        run.reply(proto).array(keys.len());
        let mut at = 4;
        let body = &self.detail;
        for _ in 0..count {
            let Some(h) = body.get(at..at + 6) else {
                break;
            };
            let st = u16::from_le_bytes([h[0], h[1]]);
            let len = u32::from_le_bytes([h[2], h[3], h[4], h[5]]) as usize;
            let value = body.get(at + 6..at + 6 + len).unwrap_or_default();
            at += 6 + len;
            let mut r = run.reply(proto);
            if st == Status::Ok.code() {
                r.bulk(value);
            } else {
                r.nil();
            }
            if run.outb.is_full() {
                run.outb.flush(run.stream).await?;
            }
        }
        Ok((OpClass::Get, Status::Ok))
    }

    async fn mset(&mut self, run: &mut Run<'_, '_>, nx: bool) -> Result<Outcome, SendError> {
        let argv = run.argv;
        if argv.len() % 2 == 0 {
            let e = format!(
                "ERR wrong number of arguments for '{}' command",
                if nx { "msetnx" } else { "mset" }
            );
            run.reply(self.proto).error(&e);
            return Ok((OpClass::Txn, Status::InvalidArgument));
        }
        // A transaction carries at most TXN_OPS_MAX conditions and writes;
        // MSETNX has one of each per key.
        let ops = crate::core::limits::TXN_OPS_MAX as usize;
        if (argv.len() - 1) / 2 > if nx { ops / 2 } else { ops } {
            let e = "ERR MSET/MSETNX of more keys than one transaction may write (TXN_OPS_MAX)";
            run.reply(self.proto).error(e);
            return Ok((OpClass::Txn, Status::InvalidArgument));
        }
        // The last value of a key wins, as in Redis; a transaction writes
        // each key once.
        let mut writes: Vec<Write<'_>> = Vec::with_capacity(argv.len() / 2);
        let mut seen = std::collections::HashSet::with_capacity(argv.len() / 2);
        for pair in argv[1..].chunks(2).rev() {
            if pair[0].len() > KEY_BYTES_MAX {
                run.reply(self.proto)
                    .error(&status_error(Status::KeyTooLarge));
                return Ok((OpClass::Txn, Status::KeyTooLarge));
            }
            if seen.insert(pair[0]) {
                writes.push(Write::Put(pair[0], pair[1]));
            }
        }
        let conds: Vec<Cond<'_>> = if nx {
            writes.iter().map(|w| Cond::Absent(w.key())).collect()
        } else {
            Vec::new()
        };
        let status = self.txn(run.ctx, &conds, &writes).await;
        let mut r = run.reply(self.proto);
        match (status, nx) {
            (Status::Ok, false) => r.simple("OK"),
            (Status::Ok, true) => r.int(1),
            (Status::ConditionFailed, true) => r.int(0),
            (other, _) => r.error(&status_error(other)),
        }
        Ok((OpClass::Txn, status))
    }

    /// DEL/UNLINK (kind Delete: count the keys that existed) and EXISTS
    /// (kind ValueLen: count the keys that exist, duplicates counted).
    /// One routed batch: one message per owner shard, each shard's keys in
    /// order (so `DEL a a` deletes once and counts 1, as Redis does).
    async fn multi_key(
        &mut self,
        run: &mut Run<'_, '_>,
        kind: OpKind,
    ) -> Result<Outcome, SendError> {
        let ctx = run.ctx;
        self.batch.clear();
        let mut pushed = vec![0usize; usize::from(ctx.shard_count())];
        for k in &run.argv[1..] {
            // A key past the limit cannot exist.
            if k.len() <= KEY_BYTES_MAX {
                let s = ctx.router.shard_of(k);
                self.batch.push(s, kind, k, b"");
                pushed[s.index()] += 1;
            }
        }
        ctx.router.execute(&mut self.batch).await;
        let mut n = 0i64;
        let mut failed = None;
        for (s, &count) in pushed.iter().enumerate() {
            let replies = self.batch.replies(crate::core::types::ShardId(s as u16));
            for i in 0..count.min(replies.len()) {
                let (status, body) = replies.get(i);
                match (status, kind) {
                    (Status::Ok, OpKind::Delete) => n += i64::from(body.first() == Some(&1)),
                    (Status::Ok, _) => n += 1,
                    (Status::NotFound, _) => {}
                    (other, _) => failed = Some(other),
                }
            }
        }
        let class = if kind == OpKind::Delete {
            OpClass::Delete
        } else {
            OpClass::Get
        };
        let mut r = run.reply(self.proto);
        match failed {
            Some(s) => {
                r.error(&status_error(s));
                Ok((class, s))
            }
            None => {
                r.int(n);
                Ok((class, Status::Ok))
            }
        }
    }

    async fn getrange(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let (Some(start), Some(end)) = (parse_i64(argv[2]), parse_i64(argv[3])) else {
            run.reply(self.proto).error(NOT_INTEGER);
            return Ok((OpClass::Get, Status::InvalidArgument));
        };
        let value = match run.ctx.get(argv[1]).await {
            Ok(v) => v.unwrap_or_default(),
            Err(s) => {
                run.reply(self.proto).error(&status_error(s));
                return Ok((OpClass::Get, s));
            }
        };
        let part = substr(&value, start, end);
        run.reply(self.proto).bulk(part);
        Ok((OpClass::Get, Status::Ok))
    }

    async fn rmw_command(
        &mut self,
        name: &str,
        run: &mut Run<'_, '_>,
    ) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let key = argv[1];
        let max = run.cfg.limits.value_bytes_max;
        match name {
            "incr" | "decr" | "incrby" | "decrby" => {
                let by = match name {
                    "incr" => Some(1),
                    "decr" => Some(-1),
                    "incrby" => parse_i64(argv[2]),
                    _ => parse_i64(argv[2]).and_then(i64::checked_neg),
                };
                let Some(by) = by else {
                    let e = if name == "decrby" && parse_i64(argv[2]) == Some(i64::MIN) {
                        "ERR decrement would overflow"
                    } else {
                        NOT_INTEGER
                    };
                    run.reply(self.proto).error(e);
                    return Ok((OpClass::Put, Status::InvalidArgument));
                };
                self.rmw(run, key, move |old| {
                    let cur = match old {
                        None => 0,
                        Some(v) => parse_i64(v).ok_or(NOT_INTEGER)?,
                    };
                    let new = cur
                        .checked_add(by)
                        .ok_or("ERR increment or decrement would overflow")?;
                    Ok((Change::Put(new.to_string().into_bytes()), Answer::Int(new)))
                })
                .await
            }
            "incrbyfloat" => {
                let Some(by) = parse_f64(argv[2]) else {
                    run.reply(self.proto)
                        .error("ERR value is not a valid float");
                    return Ok((OpClass::Put, Status::InvalidArgument));
                };
                self.rmw(run, key, move |old| {
                    let cur = match old {
                        None => 0.0,
                        Some(v) => parse_f64(v).ok_or("ERR value is not a valid float")?,
                    };
                    let new = cur + by;
                    if !new.is_finite() {
                        return Err("ERR increment would produce NaN or Infinity");
                    }
                    let text = format!("{new}").into_bytes();
                    Ok((Change::Put(text.clone()), Answer::Bulk(text)))
                })
                .await
            }
            "append" => {
                let tail = argv[2].to_vec();
                self.rmw(run, key, move |old| {
                    let old = old.unwrap_or_default();
                    if old.len() + tail.len() > max {
                        return Err(TOO_BIG);
                    }
                    let mut v = Vec::with_capacity(old.len() + tail.len());
                    v.extend_from_slice(old);
                    v.extend_from_slice(&tail);
                    let n = v.len() as i64;
                    Ok((Change::Put(v), Answer::Int(n)))
                })
                .await
            }
            "setrange" => {
                let Some(offset) = parse_i64(argv[2]) else {
                    run.reply(self.proto).error(NOT_INTEGER);
                    return Ok((OpClass::Put, Status::InvalidArgument));
                };
                if offset < 0 {
                    run.reply(self.proto).error("ERR offset is out of range");
                    return Ok((OpClass::Put, Status::InvalidArgument));
                }
                let offset = offset as u64;
                let part = argv[3].to_vec();
                self.rmw(run, key, move |old| {
                    let old_len = old.map_or(0, <[u8]>::len) as i64;
                    if part.is_empty() {
                        return Ok((Change::Keep, Answer::Int(old_len)));
                    }
                    if offset + part.len() as u64 > max as u64 {
                        return Err(TOO_BIG);
                    }
                    let offset = offset as usize;
                    let mut v = old.unwrap_or_default().to_vec();
                    if v.len() < offset + part.len() {
                        v.resize(offset + part.len(), 0);
                    }
                    v[offset..offset + part.len()].copy_from_slice(&part);
                    let n = v.len() as i64;
                    Ok((Change::Put(v), Answer::Int(n)))
                })
                .await
            }
            "getset" => {
                let v = argv[2].to_vec();
                self.rmw(run, key, move |old| {
                    let answer = old.map_or(Answer::Nil, |o| Answer::Bulk(o.to_vec()));
                    Ok((Change::Put(v.clone()), answer))
                })
                .await
            }
            "getdel" => {
                self.rmw(run, key, |old| match old {
                    None => Ok((Change::Keep, Answer::Nil)),
                    Some(o) => Ok((Change::Delete, Answer::Bulk(o.to_vec()))),
                })
                .await
            }
            other => {
                // The table and the dispatch disagree: a bug, answered as one.
                tracing::error!(
                    command = other,
                    "RESP command in the table without a handler"
                );
                run.reply(self.proto).error(&status_error(Status::Internal));
                Ok((OpClass::Other, Status::Internal))
            }
        }
    }

    /// A compare-and-set loop (see the module comment): `f` gets the current
    /// value and says what to write and what to answer, or which error.
    async fn rmw(
        &mut self,
        run: &mut Run<'_, '_>,
        key: &[u8],
        mut f: impl FnMut(Option<&[u8]>) -> Result<(Change, Answer), &'static str>,
    ) -> Result<Outcome, SendError> {
        let ctx = run.ctx;
        let mut outcome: Result<Answer, Status> = Err(Status::TxnAborted);
        for _ in 0..RMW_ATTEMPTS_MAX {
            let old = match ctx.get(key).await {
                Ok(v) => v,
                Err(s) => {
                    outcome = Err(s);
                    break;
                }
            };
            let (change, answer) = match f(old.as_deref()) {
                Ok(x) => x,
                Err(e) => {
                    outcome = Ok(Answer::Error(e.into()));
                    break;
                }
            };
            let cond = match &old {
                Some(v) => Cond::Equals(key, v),
                None => Cond::Absent(key),
            };
            let status = match &change {
                Change::Keep => Status::Ok,
                Change::Put(v) => self.txn(ctx, &[cond], &[Write::Put(key, v)]).await,
                Change::Delete => self.txn(ctx, &[cond], &[Write::Delete(key)]).await,
            };
            match status {
                Status::Ok => {
                    outcome = Ok(answer);
                    break;
                }
                // Another client changed the key between the read and the
                // write: read again.
                Status::ConditionFailed => continue,
                other => {
                    outcome = Err(other);
                    break;
                }
            }
        }
        let mut r = run.reply(self.proto);
        let status = match outcome {
            Ok(Answer::Int(n)) => {
                r.int(n);
                Status::Ok
            }
            Ok(Answer::Bulk(b)) => {
                r.bulk(&b);
                Status::Ok
            }
            Ok(Answer::Nil) => {
                r.nil();
                Status::Ok
            }
            Ok(Answer::Error(e)) => {
                r.error(&e);
                Status::InvalidArgument
            }
            Err(s) => {
                r.error(&status_error(s));
                s
            }
        };
        Ok((OpClass::Txn, status))
    }
}

/// Redis's float syntax for INCRBYFLOAT (strtold, no leading space, no NaN).
pub(super) fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    (!v.is_nan()).then_some(v)
}

/// GETRANGE's rules: negative offsets count from the end, both ends
/// inclusive and clamped; an empty range is "".
pub fn substr(v: &[u8], start: i64, end: i64) -> &[u8] {
    let len = v.len() as i64;
    if (start < 0 && end < 0 && start > end) || len == 0 {
        return b"";
    }
    let mut s = if start < 0 { start + len } else { start };
    let mut e = if end < 0 { end + len } else { end };
    s = s.max(0);
    e = e.max(0);
    if e >= len {
        e = len - 1;
    }
    if s > e {
        return b"";
    }
    &v[s as usize..=e as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_matches_redis_rules() {
        let v = b"This is a string";
        assert_eq!(substr(v, 0, 3), b"This");
        assert_eq!(substr(v, -3, -1), b"ing");
        assert_eq!(substr(v, 0, -1), v);
        assert_eq!(substr(v, 10, 100), b"string");
        assert_eq!(substr(v, 5, 3), b"");
        assert_eq!(substr(v, -1, -5), b"");
        assert_eq!(substr(b"", 0, 0), b"");
    }
}
