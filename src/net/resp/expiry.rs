//! The RESP expiry commands: SETEX, PSETEX, EXPIRE, PEXPIRE, EXPIREAT,
//! PEXPIREAT (NX/XX/GT/LT), TTL, PTTL, EXPIRETIME, PEXPIRETIME and PERSIST,
//! each one routed engine operation (PUT_EX, EXPIRE, TTL), with Redis's
//! replies and error texts; and the parsing SET's EX/PX/EXAT/PXAT share.
//!
//! Times: relative arguments become absolute unix ms here, on this server's
//! wall clock (`core::expiry::absolute_ms`, Redis's overflow rules); the owning
//! shard judges expiry on the same clock. It must never write without going
//! through the router.

use crate::core::expiry::{absolute_ms, ExpireMode, ExpiryArg};
use crate::core::rmw::{GetExChange, Program};
use crate::core::status::Status;
use crate::shard::metrics::OpClass;
use crate::shard::{OpKind, ShardContext};

use super::commands::{parse_i64, status_error, Outcome, Run, Session, NOT_INTEGER, SYNTAX};
use crate::net::outbound::SendError;

/// Redis's text for an expiry argument out of range.
pub(super) fn invalid_expire(cmd: &str) -> String {
    format!("ERR invalid expire time in '{cmd}' command")
}

/// The wall clock in unix ms, as the shards read it.
pub(super) fn now_ms() -> u64 {
    crate::shard::clock::wall_clock_ms()
}

impl Session {
    /// One routed op with its raw reply body.
    pub(super) async fn one_raw(
        &mut self,
        ctx: &ShardContext,
        kind: OpKind,
        key: &[u8],
        value: &[u8],
    ) -> (Status, Vec<u8>) {
        self.batch.clear();
        let shard = ctx.router.shard_of(key);
        self.batch.push(shard, kind, key, value);
        ctx.router.execute(&mut self.batch).await;
        let (status, body) = self.batch.replies(shard).get(0);
        (status, body.to_vec())
    }

    /// PUT_EX of `value` at `expires_at` (unix ms; 0: never).
    pub(super) async fn put_ex(
        &mut self,
        ctx: &ShardContext,
        key: &[u8],
        value: &[u8],
        expires_at: u64,
    ) -> Status {
        let mut timed = Vec::with_capacity(8 + value.len());
        timed.extend_from_slice(&expires_at.to_le_bytes());
        timed.extend_from_slice(value);
        self.one_raw(ctx, OpKind::PutEx, key, &timed).await.0
    }

    pub(super) async fn expiry_command(
        &mut self,
        name: &str,
        run: &mut Run<'_, '_>,
    ) -> Result<Outcome, SendError> {
        match name {
            "setex" | "psetex" => self.setex(name, run).await,
            "getex" => self.getex(run).await,
            "expire" | "pexpire" | "expireat" | "pexpireat" => self.expire(name, run).await,
            "ttl" | "pttl" | "expiretime" | "pexpiretime" => self.ttl(name, run).await,
            "persist" => {
                let mut arg = [0u8; 9];
                arg[0] = ExpireMode::Persist as u8;
                let (status, body) = self
                    .one_raw(run.ctx, OpKind::Expire, run.argv[1], &arg)
                    .await;
                let mut r = run.reply(self.proto);
                match status {
                    Status::Ok => r.int(i64::from(body.first() == Some(&1))),
                    other => r.error(&status_error(other)),
                }
                Ok((OpClass::Put, status))
            }
            other => {
                // The dispatch and this match disagree: a bug, answered as one.
                tracing::error!(command = other, "expiry command without a handler");
                run.reply(self.proto).error(&status_error(Status::Internal));
                Ok((OpClass::Other, Status::Internal))
            }
        }
    }

    /// GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST]: one RMW in the
    /// owning shard (the value read and the expiry changed atomically).
    async fn getex(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        // Redis's getexCommand: at most one option, PERSIST alone or a unit
        // with its number; anything else is a syntax error.
        let change = match &argv[2..] {
            [] => Ok(None),
            [opt] if opt.eq_ignore_ascii_case(b"PERSIST") => Ok(Some(GetExChange::Persist)),
            [opt, n] => {
                let unit = match opt.to_ascii_uppercase().as_slice() {
                    b"EX" => Some(ExpiryArg::Seconds),
                    b"PX" => Some(ExpiryArg::Millis),
                    b"EXAT" => Some(ExpiryArg::UnixSeconds),
                    b"PXAT" => Some(ExpiryArg::UnixMillis),
                    _ => None,
                };
                match (unit, parse_i64(n)) {
                    (None, _) => Err(SYNTAX.to_string()),
                    (Some(_), None) => Err(NOT_INTEGER.to_string()),
                    (Some(unit), Some(n)) => match absolute_ms(n, unit, now_ms(), true) {
                        Ok(at) => Ok(Some(GetExChange::At(at))),
                        Err(_) => Err(invalid_expire("getex")),
                    },
                }
            }
            _ => Err(SYNTAX.to_string()),
        };
        let change = match change {
            Ok(c) => c.unwrap_or(GetExChange::None),
            Err(e) => {
                run.reply(self.proto).error(&e);
                return Ok((OpClass::Put, Status::InvalidArgument));
            }
        };
        self.rmw(run, argv[1], &Program::GetEx(change), false).await
    }

    async fn setex(&mut self, name: &str, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let unit = if name == "setex" {
            ExpiryArg::Seconds
        } else {
            ExpiryArg::Millis
        };
        let Some(n) = parse_i64(argv[2]) else {
            run.reply(self.proto).error(NOT_INTEGER);
            return Ok((OpClass::Put, Status::InvalidArgument));
        };
        let Ok(at) = absolute_ms(n, unit, now_ms(), true) else {
            run.reply(self.proto).error(&invalid_expire(name));
            return Ok((OpClass::Put, Status::InvalidArgument));
        };
        let status = self.put_ex(run.ctx, argv[1], argv[3], at).await;
        let mut r = run.reply(self.proto);
        match status {
            Status::Ok => r.simple("OK"),
            other => r.error(&status_error(other)),
        }
        Ok((OpClass::Put, status))
    }

    async fn expire(&mut self, name: &str, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        // Redis parses the options first, then the time.
        let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
        for opt in &argv[3..] {
            match opt.to_ascii_uppercase().as_slice() {
                b"NX" => nx = true,
                b"XX" => xx = true,
                b"GT" => gt = true,
                b"LT" => lt = true,
                _ => {
                    let e = format!("ERR Unsupported option {}", String::from_utf8_lossy(opt));
                    run.reply(self.proto).error(&e);
                    return Ok((OpClass::Put, Status::InvalidArgument));
                }
            }
        }
        if nx && (xx || gt || lt) {
            run.reply(self.proto)
                .error("ERR NX and XX, GT or LT options at the same time are not compatible");
            return Ok((OpClass::Put, Status::InvalidArgument));
        }
        if gt && lt {
            run.reply(self.proto)
                .error("ERR GT and LT options at the same time are not compatible");
            return Ok((OpClass::Put, Status::InvalidArgument));
        }
        let Some(n) = parse_i64(argv[2]) else {
            run.reply(self.proto).error(NOT_INTEGER);
            return Ok((OpClass::Put, Status::InvalidArgument));
        };
        let unit = match name {
            "expire" => ExpiryArg::Seconds,
            "pexpire" => ExpiryArg::Millis,
            "expireat" => ExpiryArg::UnixSeconds,
            _ => ExpiryArg::UnixMillis,
        };
        let Ok(at) = absolute_ms(n, unit, now_ms(), false) else {
            run.reply(self.proto).error(&invalid_expire(name));
            return Ok((OpClass::Put, Status::InvalidArgument));
        };
        let mode = if nx {
            ExpireMode::Nx
        } else if xx {
            // XX combines with GT/LT in Redis: XX GT means "has an expiry and
            // it is greater", which GT alone already says for a key with
            // one; with none, XX fails and GT (infinite) fails too. XX LT:
            // LT alone would apply to a key without expiry, XX forbids it.
            if lt {
                ExpireMode::XxLt
            } else {
                ExpireMode::Xx
            }
        } else if gt {
            ExpireMode::Gt
        } else if lt {
            ExpireMode::Lt
        } else {
            ExpireMode::Always
        };
        let mode = if xx && gt { ExpireMode::Gt } else { mode };
        let mut arg = [0u8; 9];
        arg[0] = mode as u8;
        arg[1..].copy_from_slice(&at.to_le_bytes());
        let (status, body) = self.one_raw(run.ctx, OpKind::Expire, argv[1], &arg).await;
        let mut r = run.reply(self.proto);
        match status {
            Status::Ok => r.int(i64::from(body.first() == Some(&1))),
            other => r.error(&status_error(other)),
        }
        Ok((OpClass::Put, status))
    }

    async fn ttl(&mut self, name: &str, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let (status, body) = self.one_raw(run.ctx, OpKind::Ttl, run.argv[1], b"").await;
        let now = now_ms();
        let mut r = run.reply(self.proto);
        match status {
            Status::NotFound => r.int(-2),
            Status::Ok => {
                let at = <[u8; 8]>::try_from(body.as_slice()).map_or(0, u64::from_le_bytes);
                if at == 0 {
                    r.int(-1)
                } else {
                    // Redis: TTL rounds to the nearest second, EXPIRETIME
                    // truncates; a key the shard saw live is at least 0 left.
                    let left = at.saturating_sub(now) as i64;
                    let at = i64::try_from(at).unwrap_or(i64::MAX);
                    r.int(match name {
                        "ttl" => (left + 500) / 1000,
                        "pttl" => left,
                        "expiretime" => at / 1000,
                        _ => at,
                    })
                }
            }
            other => r.error(&status_error(other)),
        }
        Ok((OpClass::Get, status))
    }
}
