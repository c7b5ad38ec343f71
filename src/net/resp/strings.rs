//! The string commands (GET, SET, MSET, INCR, APPEND, ...) and the key
//! commands that act on named keys (DEL, EXISTS, TYPE), each mapped onto
//! engine operations.
//!
//! Single-key reads and writes are one routed operation. MGET is one
//! consistent snapshot (the native MGET, sized against `reply_bytes_max`
//! before any value is copied). MSET and MSETNX are one corekv transaction,
//! so they are atomic across shards.
//!
//! Read-modify-write commands (INCR*, APPEND, SETRANGE, GETSET, GETDEL,
//! SETNX, SET NX/XX/GET) are one RMW op each (`core::rmw` programs run by
//! `shard::rmw` inside the key's owning shard): atomic there without a
//! retry, one WAL record; see docs/redis-compatibility.md.
//! It must never write without going through the router.

use crate::core::limits::{KEY_BYTES_MAX, MGET_KEYS_MAX};
use crate::core::rmw::{Program, Reply as RmwReply, ReplyRef, RmwError, SetCond};
use crate::core::status::Status;
use crate::core::txn_format::{encode_txn, Cond, TxnFormatError, TxnView, Write};
use crate::shard::metrics::OpClass;
use crate::shard::{OpKind, ShardContext};

use super::commands::{parse_i64, status_error, Outcome, Run, Session, NOT_INTEGER};
use super::expiry::now_ms;
use super::expiry_args::{parse_set, SetArgs};
use crate::net::outbound::{SendError, DIRECT_WRITE_BYTES};

/// Attempts of a MULTI/EXEC before it gives up with TXN_ABORTED (each
/// failed attempt means another client changed a watched key meanwhile).
pub(super) const RMW_ATTEMPTS_MAX: usize = 1000;

pub(super) const TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

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
                let program = Program::Set {
                    value: argv[2],
                    cond: SetCond::Nx,
                    get: false,
                    keep_ttl: false,
                    expires_at_ms: 0,
                };
                self.rmw(run, argv[1], &program, true).await
            }
            "mget" => self.mget(run).await,
            "mset" | "msetnx" => self.mset(run, name == "msetnx").await,
            "del" | "unlink" => self.multi_key(run, OpKind::Delete).await,
            "exists" | "touch" => self.multi_key(run, OpKind::ValueLen).await,
            "ttl" | "pttl" | "expiretime" | "pexpiretime" | "persist" | "setex" | "psetex"
            | "getex" | "expire" | "pexpire" | "expireat" | "pexpireat" => {
                self.expiry_command(name, run).await
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
        let SetArgs {
            nx,
            xx,
            get,
            keep_ttl,
            expires_at,
        } = match parse_set(argv, now_ms()) {
            Ok(a) => a,
            Err(e) => {
                run.reply(self.proto).error(&e);
                return Ok((OpClass::Put, Status::InvalidArgument));
            }
        };
        // Conditional, GET and KEEPTTL forms read the key: one RMW in the
        // owning shard, atomic with the write (and with its expiry).
        if nx || xx || get || keep_ttl {
            let cond = if nx {
                SetCond::Nx
            } else if xx {
                SetCond::Xx
            } else {
                SetCond::Always
            };
            let program = Program::Set {
                value,
                cond,
                get,
                keep_ttl,
                expires_at_ms: expires_at,
            };
            return self.rmw(run, key, &program, false).await;
        }
        let status = if expires_at != 0 {
            self.put_ex(run.ctx, key, value, expires_at).await
        } else {
            self.one(run.ctx, OpKind::Put, key, value).await.0
        };
        let mut r = run.reply(self.proto);
        match status {
            Status::Ok => r.simple("OK"),
            other => r.error(&status_error(other)),
        }
        Ok((OpClass::Put, status))
    }

    /// One consistent snapshot read of `keys` (the native MGET, sized
    /// against `reply_bytes_max` first), shared by MGET and EXEC: on success
    /// `self.detail` holds the page (count u32, then per key status u16 |
    /// len u32 | [expires_at u64 when `with_expiry`] | value); on failure
    /// the error text for the client and its status.
    pub(super) async fn snapshot_read(
        &mut self,
        run: &mut Run<'_, '_>,
        keys: &[&[u8]],
        with_expiry: bool,
    ) -> Result<(), (String, Status)> {
        // The native MGET's key list: `len u32 | key` items.
        self.scratch.clear();
        for k in keys {
            if k.len() > KEY_BYTES_MAX {
                return Err((status_error(Status::KeyTooLarge), Status::KeyTooLarge));
            }
            self.scratch
                .extend_from_slice(&(k.len() as u32).to_le_bytes());
            self.scratch.extend_from_slice(k);
        }
        let status = crate::net::request_batch::sized_snapshot_get(
            &mut self.probe,
            &self.scratch,
            keys.len() as u32,
            run.ctx,
            run.cfg,
            with_expiry,
            &mut self.detail,
        )
        .await;
        if status == Status::Ok {
            return Ok(());
        }
        let e = if status == Status::ReplyTooLarge {
            format!("REPLY_TOO_LARGE {}", String::from_utf8_lossy(&self.detail))
        } else {
            status_error(status)
        };
        Err((e, status))
    }

    async fn mget(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let keys = &run.argv[1..];
        if keys.len() > MGET_KEYS_MAX as usize {
            let e =
                format!("ERR MGET of more than {MGET_KEYS_MAX} keys: ask for fewer keys per MGET");
            run.reply(self.proto).error(&e);
            return Ok((OpClass::Get, Status::InvalidArgument));
        }
        let count = keys.len() as u32;
        let proto = self.proto;
        if let Err((e, status)) = self.snapshot_read(run, keys, false).await {
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
        let program = match name {
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
                Program::IncrBy(by)
            }
            "incrbyfloat" => {
                // "inf" parses: the shard refuses the sum, after checking
                // the value (Redis's order of errors).
                let Some(by) = parse_f64(argv[2]) else {
                    run.reply(self.proto).error(RmwError::NotFloat.redis_text());
                    return Ok((OpClass::Put, Status::InvalidArgument));
                };
                Program::IncrByFloat(by)
            }
            "append" => Program::Append(argv[2]),
            "setrange" => {
                let Some(offset) = parse_i64(argv[2]) else {
                    run.reply(self.proto).error(NOT_INTEGER);
                    return Ok((OpClass::Put, Status::InvalidArgument));
                };
                if offset < 0 {
                    run.reply(self.proto).error("ERR offset is out of range");
                    return Ok((OpClass::Put, Status::InvalidArgument));
                }
                Program::SetRange {
                    offset: offset as u64,
                    bytes: argv[3],
                }
            }
            "getset" => Program::GetSet(argv[2]),
            "getdel" => Program::GetDel,
            other => {
                // The table and the dispatch disagree: a bug, answered as one.
                tracing::error!(
                    command = other,
                    "RESP command in the table without a handler"
                );
                run.reply(self.proto).error(&status_error(Status::Internal));
                return Ok((OpClass::Other, Status::Internal));
            }
        };
        self.rmw(run, key, &program, false).await
    }

    /// One RMW op on the key's owning shard (`shard::rmw`): atomic there,
    /// one WAL record, no retry. `setnx`: SETNX's integer replies.
    pub(super) async fn rmw(
        &mut self,
        run: &mut Run<'_, '_>,
        key: &[u8],
        program: &Program<'_>,
        setnx: bool,
    ) -> Result<Outcome, SendError> {
        self.scratch.clear();
        program.encode(&mut self.scratch);
        self.batch.clear();
        let shard = run.ctx.router.shard_of(key);
        self.batch.push(shard, OpKind::Rmw, key, &self.scratch);
        run.ctx.router.execute(&mut self.batch).await;
        let (status, body) = self.batch.replies(shard).get(0);
        let mut r = super::codec::Reply {
            out: run.outb.buf(),
            proto: self.proto,
        };
        let status = rmw_reply(&mut r, status, body, setnx);
        Ok((OpClass::Put, status))
    }
}

/// Write the RESP reply of an RMW op's engine reply; returns the status
/// to count (an RMW error counts as INVALID_ARGUMENT).
pub(super) fn rmw_reply(
    r: &mut super::codec::Reply<'_>,
    status: Status,
    body: &[u8],
    setnx: bool,
) -> Status {
    match status {
        Status::Ok => match RmwReply::decode(body) {
            Some(ReplyRef::Ok) if setnx => r.int(1),
            Some(ReplyRef::Nil) if setnx => r.int(0),
            Some(ReplyRef::Ok) => r.simple("OK"),
            Some(ReplyRef::Int(n)) => r.int(n),
            Some(ReplyRef::Bulk(b)) => r.bulk(b),
            Some(ReplyRef::Nil) => r.nil(),
            None => {
                r.error(&status_error(Status::Internal));
                return Status::Internal;
            }
        },
        Status::InvalidArgument => match body.first().and_then(|&c| RmwError::from_code(c)) {
            Some(e) => r.error(e.redis_text()),
            None => r.error(&status_error(status)),
        },
        other => r.error(&status_error(other)),
    }
    status
}

pub(super) use crate::core::rmw::parse_f64;

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
    fn floats_parse_as_strtold_does() {
        for (text, want) in [
            ("1.5", Some(1.5)),
            ("0x10", Some(16.0)),
            ("-0X1.8p3", Some(-12.0)),
            ("0x.8", Some(0.5)),
            ("+0xAp-1", Some(5.0)),
            ("0x", None),
            ("0x1p", None),
            ("0xg", None),
            ("0x1.8.1", None),
            (" 0x1", None),
            ("nan", None),
        ] {
            assert_eq!(parse_f64(text.as_bytes()), want, "{text:?}");
        }
    }

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
