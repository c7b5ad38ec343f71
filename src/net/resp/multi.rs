//! MULTI/EXEC/DISCARD/WATCH/UNWATCH on corekv's atomic cross-shard
//! transactions, and the commands that run through the same machinery
//! outside MULTI (the bit commands, LCS, OBJECT ENCODING).
//!
//! A queued transaction runs as one optimistic unit: one consistent snapshot
//! (`snapshot_get`, the native MGET) of every key the queue reads and every
//! watched key; the queue evaluated in memory over that snapshot (each
//! command's reply into a buffer, errors in their slot as Redis has them);
//! then one corekv transaction carrying every write (the last value of each
//! key) and, as conditions, "each key read still has the value the snapshot
//! showed" (or is still absent). The transaction is all-or-nothing across
//! shards and its conditions are checked under the keys' locks, so the queue
//! is serializable: if another client changed a key in between, nothing is
//! written and the queue runs again from a new snapshot. WATCH remembers a
//! 128-bit hash of each watched value; when a snapshot shows a different
//! value (or presence), EXEC answers a nil array without writing.
//!
//! It must never write except through one router transaction per EXEC, and
//! never keep unbounded state: the queue, its bytes and the watched keys are
//! bounded (core::limits), and the replies by `reply_bytes_max`.

use crate::core::limits::{
    KEY_BYTES_MAX, MGET_KEYS_MAX, RESP_MULTI_BYTES_MAX, RESP_MULTI_COMMANDS_MAX,
    RESP_WATCH_KEYS_MAX, TXN_OPS_MAX,
};
use crate::core::status::Status;
use crate::core::txn_format::{Cond, Write};
use crate::shard::metrics::OpClass;

use super::bits;
use super::codec::Reply;
use super::commands::{
    lookup, parse_i64, status_error, Outcome, Run, Session, NOT_INTEGER, SYNTAX,
};
use super::expiry_args::{parse_expire, parse_getex, parse_set, parse_setex, ttl_reply};
use super::strings::{parse_f64, substr, RMW_ATTEMPTS_MAX, TOO_BIG};
use super::txn_state::{fingerprint, Overlay, Queue, Slot, Watched};
use crate::core::rmw::GetExChange;
use crate::net::outbound::SendError;

/// The commands a MULTI may queue: those the in-memory evaluator below
/// knows (every string and key command that names its keys). Anything
/// else is refused while queuing and the transaction is discarded at EXEC,
/// as Redis does for a command it rejects while queuing.
const QUEUEABLE: &[&str] = &[
    "get",
    "set",
    "setnx",
    "getset",
    "getdel",
    "mget",
    "mset",
    "msetnx",
    "append",
    "strlen",
    "getrange",
    "substr",
    "setrange",
    "incr",
    "decr",
    "incrby",
    "decrby",
    "incrbyfloat",
    "del",
    "unlink",
    "exists",
    "touch",
    "type",
    "ping",
    "echo",
    "time",
    "unwatch",
    "setbit",
    "getbit",
    "bitcount",
    "bitpos",
    "bitop",
    "lcs",
    "object",
    "setex",
    "psetex",
    "getex",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "ttl",
    "pttl",
    "expiretime",
    "pexpiretime",
    "persist",
    "rename",
    "renamenx",
    "copy",
];

/// The keys a command reads (the snapshot must hold them): the table's key
/// positions, except blind writes (plain SET, MSET), which read nothing.
fn read_keys<'a>(argv: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let name = String::from_utf8_lossy(argv[0]).to_ascii_lowercase();
    if (name == "set" && argv.len() == 3) || name == "mset" {
        return Vec::new();
    }
    if name == "object" {
        return argv.get(2).copied().into_iter().collect();
    }
    let Some(cmd) = lookup(&name) else {
        return Vec::new();
    };
    let (first, last, step) = cmd.keys;
    if first <= 0 || step <= 0 {
        return Vec::new();
    }
    let n = argv.len() as i32;
    let last = if last < 0 { n + last } else { last.min(n - 1) };
    (first..=last)
        .step_by(step as usize)
        .filter_map(|i| argv.get(i as usize).copied())
        .collect()
}

/// What running a queue came to.
enum Ran {
    /// Every reply, concatenated.
    Done(Vec<u8>),
    /// A watched key changed: a nil reply, nothing written.
    WatchFailed,
    /// The transaction as a whole failed: this error line.
    Failed(String, Status),
}

impl Session {
    pub(super) fn in_multi(&self) -> bool {
        self.multi.is_some()
    }

    /// A command was rejected while MULTI queues: EXEC will abort.
    pub(super) fn flag_multi(&mut self) {
        if let Some(q) = &mut self.multi {
            q.dirty = true;
        }
    }

    /// RESET and the like: forget the queue and the watched keys.
    pub(super) fn multi_reset(&mut self) {
        self.multi = None;
        self.watched.clear();
    }

    /// Queue a command after MULTI (it passed the name, arity and access
    /// checks): `+QUEUED`, or an error that dooms the EXEC.
    pub(super) fn queue(&mut self, name: &str, run: &mut Run<'_, '_>) -> Outcome {
        let argv = run.argv;
        let bytes: usize = argv.iter().map(|a| a.len() + 16).sum();
        let refusal = if !QUEUEABLE.contains(&name) {
            Some(format!(
                "ERR '{name}' inside MULTI is not supported by corekv (see docs/redis-compatibility.md)"
            ))
        } else if read_keys(argv).iter().any(|k| k.len() > KEY_BYTES_MAX) {
            Some(status_error(Status::KeyTooLarge))
        } else {
            let q = self
                .multi
                .as_ref()
                .map_or((0, 0), |q| (q.cmds.len(), q.bytes));
            (q.0 >= RESP_MULTI_COMMANDS_MAX || q.1 + bytes > RESP_MULTI_BYTES_MAX).then(|| {
                format!(
                    "ERR MULTI queue is full: at most {RESP_MULTI_COMMANDS_MAX} commands and {RESP_MULTI_BYTES_MAX} bytes per transaction (RESP_MULTI_COMMANDS_MAX, RESP_MULTI_BYTES_MAX)"
                )
            })
        };
        let Some(q) = &mut self.multi else {
            return (OpClass::Other, Status::Internal);
        };
        if let Some(e) = refusal {
            q.dirty = true;
            run.reply(self.proto).error(&e);
            return (OpClass::Other, Status::InvalidArgument);
        }
        q.cmds.push(argv.iter().map(|a| a.to_vec()).collect());
        q.bytes += bytes;
        run.reply(self.proto).simple("QUEUED");
        (OpClass::Other, Status::Ok)
    }

    /// MULTI, EXEC, DISCARD, WATCH and UNWATCH (outside MULTI; inside it
    /// UNWATCH is queued, as in Redis).
    pub(super) async fn transaction_command(
        &mut self,
        name: &str,
        run: &mut Run<'_, '_>,
    ) -> Result<Outcome, SendError> {
        let proto = self.proto;
        match name {
            "multi" => {
                if self.in_multi() {
                    run.reply(proto).error("ERR MULTI calls can not be nested");
                } else {
                    self.multi = Some(Queue::default());
                    run.reply(proto).simple("OK");
                }
                Ok((OpClass::Other, Status::Ok))
            }
            "discard" => {
                if self.in_multi() {
                    self.multi_reset();
                    run.reply(proto).simple("OK");
                } else {
                    run.reply(proto).error("ERR DISCARD without MULTI");
                }
                Ok((OpClass::Other, Status::Ok))
            }
            "unwatch" => {
                self.watched.clear();
                run.reply(proto).simple("OK");
                Ok((OpClass::Other, Status::Ok))
            }
            "watch" => self.watch(run).await,
            _ => self.exec(run).await,
        }
    }

    async fn watch(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let proto = self.proto;
        if self.in_multi() {
            run.reply(proto)
                .error("ERR WATCH inside MULTI is not allowed");
            return Ok((OpClass::Other, Status::Ok));
        }
        let keys: Vec<&[u8]> = run.argv[1..].to_vec();
        if keys.iter().any(|k| k.len() > KEY_BYTES_MAX) {
            run.reply(proto).error(&status_error(Status::KeyTooLarge));
            return Ok((OpClass::Other, Status::KeyTooLarge));
        }
        if self.watched.len() + keys.len() > RESP_WATCH_KEYS_MAX {
            let e = format!(
                "ERR WATCH of more than {RESP_WATCH_KEYS_MAX} keys per connection (RESP_WATCH_KEYS_MAX)"
            );
            run.reply(proto).error(&e);
            return Ok((OpClass::Other, Status::InvalidArgument));
        }
        let values = match self.snapshot(run, &keys).await {
            Ok(v) => v,
            Err((e, s)) => {
                run.reply(proto).error(&e);
                return Ok((OpClass::Get, s));
            }
        };
        for (k, v) in keys.iter().zip(values) {
            // A key watched twice keeps what the first WATCH saw (Redis:
            // the first WATCH's moment counts).
            if !self.watched.iter().any(|w| w.key == *k) {
                self.watched.push(Watched {
                    key: k.to_vec(),
                    seen: fingerprint(v.as_ref().map(|(v, _)| v.as_slice())),
                });
            }
        }
        run.reply(proto).simple("OK");
        Ok((OpClass::Get, Status::Ok))
    }

    async fn exec(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let proto = self.proto;
        let Some(queue) = self.multi.take() else {
            run.reply(proto).error("ERR EXEC without MULTI");
            return Ok((OpClass::Other, Status::Ok));
        };
        // EXEC always ends the WATCH, whatever it answers (as Redis).
        let watched = std::mem::take(&mut self.watched);
        if queue.dirty {
            run.reply(proto)
                .error("EXECABORT Transaction discarded because of previous errors.");
            return Ok((OpClass::Txn, Status::InvalidArgument));
        }
        let cmds: Vec<Vec<&[u8]>> = queue
            .cmds
            .iter()
            .map(|c| c.iter().map(Vec::as_slice).collect())
            .collect();
        let status = match self.run_queue(run, &cmds, &watched).await {
            Ran::Done(replies) => {
                let mut r = run.reply(proto);
                r.array(cmds.len());
                r.out.extend_from_slice(&replies);
                Status::Ok
            }
            Ran::WatchFailed => {
                run.reply(proto).nil_array();
                Status::ConditionFailed
            }
            Ran::Failed(e, s) => {
                run.reply(proto).error(&e);
                s
            }
        };
        Ok((OpClass::Txn, status))
    }

    /// One of `EVALUATED` outside MULTI: a one-command transaction.
    pub(super) async fn evaluated(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv: Vec<&[u8]> = run.argv.to_vec();
        if read_keys(&argv).iter().any(|k| k.len() > KEY_BYTES_MAX) {
            run.reply(self.proto)
                .error(&status_error(Status::KeyTooLarge));
            return Ok((OpClass::Other, Status::KeyTooLarge));
        }
        let writes = matches!(
            String::from_utf8_lossy(argv[0])
                .to_ascii_lowercase()
                .as_str(),
            "setbit" | "bitop" | "rename" | "renamenx" | "copy"
        );
        let class = if writes { OpClass::Txn } else { OpClass::Get };
        let proto = self.proto;
        match self.run_queue(run, &[argv], &[]).await {
            Ran::Done(reply) => {
                run.reply(proto).out.extend_from_slice(&reply);
                Ok((class, Status::Ok))
            }
            Ran::WatchFailed => {
                // Nothing is watched here; a bug if reached.
                run.reply(proto).error(&status_error(Status::Internal));
                Ok((class, Status::Internal))
            }
            Ran::Failed(e, s) => {
                run.reply(proto).error(&e);
                Ok((class, s))
            }
        }
    }

    /// Run a queue as one serializable unit (see the module comment).
    async fn run_queue(
        &mut self,
        run: &mut Run<'_, '_>,
        cmds: &[Vec<&[u8]>],
        watched: &[Watched],
    ) -> Ran {
        let mut keys: Vec<&[u8]> = Vec::new();
        {
            let mut seen = std::collections::HashSet::new();
            for k in cmds
                .iter()
                .flat_map(|c| read_keys(c))
                .chain(watched.iter().map(|w| w.key.as_slice()))
            {
                if seen.insert(k) {
                    keys.push(k);
                }
            }
        }
        if keys.len() > MGET_KEYS_MAX as usize {
            return Ran::Failed(
                format!("ERR EXEC: the transaction reads more than {MGET_KEYS_MAX} keys (MGET_KEYS_MAX)"),
                Status::InvalidArgument,
            );
        }
        let max = run.cfg.limits.value_bytes_max;
        let reply_max = run.cfg.reply_bytes_max;
        let proto = self.proto;
        for _ in 0..RMW_ATTEMPTS_MAX {
            let values = match self.snapshot(run, &keys).await {
                Ok(v) => v,
                Err((e, s)) => return Ran::Failed(e, s),
            };
            let mut ov = Overlay {
                now_ms: super::expiry::now_ms(),
                ..Overlay::default()
            };
            for (k, v) in keys.iter().zip(&values) {
                ov.keys.insert(
                    k.to_vec(),
                    Slot {
                        value: v.as_ref().map(|(v, _)| v.clone()),
                        expires_at: v.as_ref().map_or(0, |(_, e)| *e),
                        written: false,
                    },
                );
            }
            if watched.iter().any(|w| {
                let at = keys.iter().position(|k| *k == w.key.as_slice());
                fingerprint(at.and_then(|i| values[i].as_ref().map(|(v, _)| v.as_slice())))
                    != w.seen
            }) {
                return Ran::WatchFailed;
            }
            let mut out = Vec::new();
            for c in cmds {
                eval(
                    c,
                    &mut ov,
                    &mut Reply {
                        out: &mut out,
                        proto,
                    },
                    max,
                );
                if out.len() > reply_max {
                    return Ran::Failed(
                        format!("REPLY_TOO_LARGE the transaction's replies exceed reply_bytes_max ({reply_max} bytes)"),
                        Status::ReplyTooLarge,
                    );
                }
            }
            let writes: Vec<Write<'_>> = ov
                .keys
                .iter()
                .filter(|(_, slot)| slot.written)
                .map(|(k, slot)| match &slot.value {
                    Some(v) => Write::put(k, v, slot.expires_at),
                    None => Write::Delete(k),
                })
                .collect();
            if writes.is_empty() {
                // Only reads: the snapshot is the answer.
                return Ran::Done(out);
            }
            if keys.len() + writes.len() > TXN_OPS_MAX as usize {
                return Ran::Failed(
                    format!("ERR EXEC: the transaction has more than {TXN_OPS_MAX} conditions and writes (TXN_OPS_MAX)"),
                    Status::InvalidArgument,
                );
            }
            // Every key read (and watched) must still be what the snapshot
            // showed when the writes apply.
            let conds: Vec<Cond<'_>> = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| match v {
                    Some((v, e)) => Cond::EqualsExpiring(k, v, *e),
                    None => Cond::Absent(k),
                })
                .collect();
            let status = self.txn(run.ctx, &conds, &writes).await;
            match status {
                Status::Ok => return Ran::Done(out),
                // Another client changed a key the queue read: again.
                Status::ConditionFailed => continue,
                other => return Ran::Failed(status_error(other), other),
            }
        }
        Ran::Failed(status_error(Status::TxnAborted), Status::TxnAborted)
    }
}

impl Session {
    /// One consistent snapshot of `keys` (the native MGET: sized against
    /// `reply_bytes_max` first), in order: each live key's value and expiry
    /// (unix ms, 0: never).
    #[allow(clippy::type_complexity)]
    async fn snapshot(
        &mut self,
        run: &mut Run<'_, '_>,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<(Vec<u8>, u64)>>, (String, Status)> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let count = keys.len() as u32;
        self.snapshot_read(run, keys, true).await?;
        // count u32, then per key: status u16 | len u32 | expires_at u64 | value.
        let body = &self.detail;
        let mut at = 4;
        let mut out = Vec::with_capacity(keys.len());
        for _ in 0..count {
            let Some(h) = body.get(at..at + 14) else {
                return Err((status_error(Status::Internal), Status::Internal));
            };
            let st = u16::from_le_bytes([h[0], h[1]]);
            let len = u32::from_le_bytes([h[2], h[3], h[4], h[5]]) as usize;
            let mut e = [0u8; 8];
            e.copy_from_slice(&h[6..14]);
            let Some(value) = body.get(at + 14..at + 14 + len) else {
                return Err((status_error(Status::Internal), Status::Internal));
            };
            at += 14 + len;
            if st == Status::Ok.code() {
                out.push(Some((value.to_vec(), u64::from_le_bytes(e))));
            } else if st == Status::NotFound.code() {
                out.push(None);
            } else {
                let s = Status::from_code(st).unwrap_or(Status::Internal);
                return Err((status_error(s), s));
            }
        }
        Ok(out)
    }
}

/// Run one queued command over the overlay, its reply into `r`: the same
/// semantics and texts as the command outside MULTI (strings.rs), so a
/// queue's replies are the ones the commands would have given one by one.
fn eval(argv: &[&[u8]], ov: &mut Overlay, r: &mut Reply<'_>, max: usize) {
    let name = String::from_utf8_lossy(argv[0]).to_ascii_lowercase();
    let key = argv.get(1).copied().unwrap_or_default();
    let int_arg = |i: usize| argv.get(i).and_then(|a| parse_i64(a));
    match name.as_str() {
        "get" => match ov.get(key) {
            Some(v) => r.bulk(v),
            None => r.nil(),
        },
        "set" => {
            let a = match parse_set(argv, ov.now_ms) {
                Ok(a) => a,
                Err(e) => return r.error(&e),
            };
            let (nx, xx, get) = (a.nx, a.xx, a.get);
            let old = if nx || xx || get {
                ov.get(key).map(<[u8]>::to_vec)
            } else {
                None
            };
            let skip = (nx && old.is_some()) || (xx && old.is_none());
            if !skip {
                let at = if a.keep_ttl {
                    ov.expiry(key)
                } else {
                    a.expires_at
                };
                ov.put_expiring(key, Some(argv[2].to_vec()), at);
            }
            match (get, old, skip) {
                (true, Some(o), _) => r.bulk(&o),
                (true, None, _) => r.nil(),
                (false, _, true) => r.nil(),
                (false, _, false) => r.simple("OK"),
            }
        }
        "setnx" => {
            if ov.get(key).is_some() {
                r.int(0);
            } else {
                ov.put(key, Some(argv[2].to_vec()));
                r.int(1);
            }
        }
        "getset" => {
            match ov.get(key) {
                Some(o) => r.bulk(o),
                None => r.nil(),
            }
            ov.put(key, Some(argv[2].to_vec()));
        }
        "getdel" => match ov.get(key).map(<[u8]>::to_vec) {
            Some(o) => {
                r.bulk(&o);
                ov.put(key, None);
            }
            None => r.nil(),
        },
        "mget" => {
            r.array(argv.len() - 1);
            for k in &argv[1..] {
                match ov.get(k) {
                    Some(v) => r.bulk(v),
                    None => r.nil(),
                }
            }
        }
        "mset" | "msetnx" => {
            if argv.len() % 2 == 0 {
                return r.error(&format!(
                    "ERR wrong number of arguments for '{name}' command"
                ));
            }
            let pairs = argv[1..].chunks(2);
            if name == "msetnx" && argv[1..].chunks(2).any(|p| ov.get(p[0]).is_some()) {
                return r.int(0);
            }
            for p in pairs {
                ov.put(p[0], Some(p[1].to_vec()));
            }
            if name == "msetnx" {
                r.int(1);
            } else {
                r.simple("OK");
            }
        }
        "append" => {
            let old = ov.get(key).unwrap_or_default();
            if old.len() + argv[2].len() > max {
                return r.error(TOO_BIG);
            }
            let mut v = old.to_vec();
            v.extend_from_slice(argv[2]);
            r.int(v.len() as i64);
            ov.update(key, v);
        }
        "strlen" => r.int(ov.get(key).map_or(0, <[u8]>::len) as i64),
        "type" => r.simple(if ov.get(key).is_some() {
            "string"
        } else {
            "none"
        }),
        "getrange" | "substr" => match (int_arg(2), int_arg(3)) {
            (Some(s), Some(e)) => r.bulk(substr(ov.get(key).unwrap_or_default(), s, e)),
            _ => r.error(NOT_INTEGER),
        },
        "setrange" => {
            let Some(offset) = int_arg(2) else {
                return r.error(NOT_INTEGER);
            };
            if offset < 0 {
                return r.error("ERR offset is out of range");
            }
            let part = argv[3];
            let old = ov.get(key);
            if part.is_empty() {
                return r.int(old.map_or(0, <[u8]>::len) as i64);
            }
            if offset as u64 + part.len() as u64 > max as u64 {
                return r.error(TOO_BIG);
            }
            let offset = offset as usize;
            let mut v = old.unwrap_or_default().to_vec();
            if v.len() < offset + part.len() {
                v.resize(offset + part.len(), 0);
            }
            v[offset..offset + part.len()].copy_from_slice(part);
            r.int(v.len() as i64);
            ov.update(key, v);
        }
        "incr" | "decr" | "incrby" | "decrby" => {
            let by = match name.as_str() {
                "incr" => Some(1),
                "decr" => Some(-1),
                "incrby" => int_arg(2),
                _ => int_arg(2).and_then(i64::checked_neg),
            };
            let Some(by) = by else {
                return r.error(if name == "decrby" && int_arg(2) == Some(i64::MIN) {
                    "ERR decrement would overflow"
                } else {
                    NOT_INTEGER
                });
            };
            let cur = match ov.get(key) {
                None => 0,
                Some(v) => match parse_i64(v) {
                    Some(n) => n,
                    None => return r.error(NOT_INTEGER),
                },
            };
            let Some(new) = cur.checked_add(by) else {
                return r.error("ERR increment or decrement would overflow");
            };
            ov.update(key, new.to_string().into_bytes());
            r.int(new);
        }
        "incrbyfloat" => {
            let Some(by) = parse_f64(argv[2]) else {
                return r.error("ERR value is not a valid float");
            };
            let cur = match ov.get(key) {
                None => 0.0,
                Some(v) => match parse_f64(v) {
                    Some(n) => n,
                    None => return r.error("ERR value is not a valid float"),
                },
            };
            let new = cur + by;
            if !new.is_finite() {
                return r.error("ERR increment would produce NaN or Infinity");
            }
            let text = crate::core::rmw::format_float(new).into_bytes();
            r.bulk(&text);
            ov.update(key, text);
        }
        "del" | "unlink" => {
            let mut n = 0;
            for k in &argv[1..] {
                if ov.get(k).is_some() {
                    ov.put(k, None);
                    n += 1;
                }
            }
            r.int(n);
        }
        "exists" | "touch" => {
            let n = argv[1..].iter().filter(|k| ov.get(k).is_some()).count();
            r.int(n as i64);
        }
        "ping" => match argv.len() {
            1 => r.simple("PONG"),
            2 => r.bulk(argv[1]),
            _ => r.error("ERR wrong number of arguments for 'ping' command"),
        },
        "echo" => r.bulk(argv[1]),
        "time" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            r.array(2);
            r.bulk(now.as_secs().to_string().as_bytes());
            r.bulk(now.subsec_micros().to_string().as_bytes());
        }
        "unwatch" => r.simple("OK"),
        "setex" | "psetex" => match parse_setex(&name, argv, ov.now_ms) {
            Ok(at) => {
                ov.put_expiring(key, Some(argv[3].to_vec()), at);
                r.simple("OK");
            }
            Err(e) => r.error(&e),
        },
        "getex" => {
            let change = match parse_getex(argv, ov.now_ms) {
                Ok(c) => c,
                Err(e) => return r.error(&e),
            };
            let Some(v) = ov.get(key).map(<[u8]>::to_vec) else {
                return r.nil();
            };
            r.bulk(&v);
            match change {
                GetExChange::None => {}
                GetExChange::Persist => {
                    if ov.expiry(key) != 0 {
                        ov.set_expiry(key, 0);
                    }
                }
                GetExChange::At(at) => ov.set_expiry(key, at),
            }
        }
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            let (mode, at) = match parse_expire(&name, argv, ov.now_ms) {
                Ok(p) => p,
                Err(e) => return r.error(&e),
            };
            if ov.get(key).is_none() || !mode.applies(ov.expiry(key), at) {
                return r.int(0);
            }
            ov.set_expiry(key, at);
            r.int(1);
        }
        "persist" => {
            if ov.get(key).is_some() && ov.expiry(key) != 0 {
                ov.set_expiry(key, 0);
                r.int(1);
            } else {
                r.int(0);
            }
        }
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => match ov.get(key) {
            None => r.int(-2),
            Some(_) => r.int(ttl_reply(&name, ov.expiry(key), ov.now_ms)),
        },
        "rename" | "renamenx" => {
            let (src, dst) = (argv[1], argv[2]);
            let Some(v) = ov.get(src).map(<[u8]>::to_vec) else {
                return r.error("ERR no such key");
            };
            if name == "renamenx" && ov.get(dst).is_some() {
                return r.int(0);
            }
            if src != dst {
                let at = ov.expiry(src);
                ov.put(src, None);
                ov.put_expiring(dst, Some(v), at);
            }
            if name == "renamenx" {
                r.int(1);
            } else {
                r.simple("OK");
            }
        }
        "copy" => copy(argv, ov, r),
        _ => bits::eval(&name, argv, ov, r, max),
    }
}

/// COPY source destination [DB 0] [REPLACE]: the value and its expiry.
/// corekv has one database, so `DB` other than 0 is refused as SELECT
/// refuses it.
fn copy(argv: &[&[u8]], ov: &mut Overlay, r: &mut Reply<'_>) {
    let (src, dst) = (argv[1], argv[2]);
    let mut replace = false;
    let mut i = 3;
    while i < argv.len() {
        let opt = argv[i].to_ascii_uppercase();
        match opt.as_slice() {
            b"REPLACE" => replace = true,
            b"DB" if i + 1 < argv.len() => {
                match parse_i64(argv[i + 1]) {
                    None => return r.error(NOT_INTEGER),
                    Some(0) => {}
                    Some(_) => return r.error("ERR DB index is out of range"),
                }
                i += 1;
            }
            _ => return r.error(SYNTAX),
        }
        i += 1;
    }
    if src == dst {
        return r.error("ERR source and destination objects are the same");
    }
    let Some(v) = ov.get(src).map(<[u8]>::to_vec) else {
        return r.int(0);
    };
    if ov.get(dst).is_some() && !replace {
        return r.int(0);
    }
    let at = ov.expiry(src);
    ov.put_expiring(dst, Some(v), at);
    r.int(1);
}
