//! The RESP expiry commands: SETEX, PSETEX, EXPIRE, PEXPIRE, EXPIREAT,
//! PEXPIREAT (NX/XX/GT/LT), TTL, PTTL, EXPIRETIME, PEXPIRETIME and PERSIST,
//! each one routed engine operation (PUT_EX, EXPIRE, TTL), with Redis's
//! replies and error texts; and the parsing SET's EX/PX/EXAT/PXAT share.
//!
//! Times: relative arguments become absolute unix ms here, on this server's
//! wall clock (`core::expiry::absolute_ms`, Redis's overflow rules); the owning
//! shard judges expiry on the same clock. It must never write without going
//! through the router.

use crate::core::expiry::ExpireMode;
use crate::core::rmw::Program;
use crate::core::status::Status;
use crate::shard::metrics::OpClass;
use crate::shard::{OpKind, ShardContext};

use super::commands::{status_error, Outcome, Run, Session};
use super::expiry_args::{parse_expire, parse_getex, parse_setex, ttl_reply};
use crate::net::outbound::SendError;

/// The wall clock in unix ms, as the shards read it.
pub(super) fn now_ms() -> u64 {
    crate::shard::clock::wall_clock_ms()
}

impl Session {
    /// One routed op; its reply body is left in `self.detail` (a buffer the
    /// session reuses: no allocation per request once it has grown).
    pub(super) async fn one_raw(
        &mut self,
        ctx: &ShardContext,
        kind: OpKind,
        key: &[u8],
        value: &[u8],
    ) -> Status {
        self.batch.clear();
        let shard = ctx.router.shard_of(key);
        self.batch.push(shard, kind, key, value);
        ctx.router.execute(&mut self.batch).await;
        let (status, body) = self.batch.replies(shard).get(0);
        self.detail.clear();
        self.detail.extend_from_slice(body);
        status
    }

    /// PUT_EX of `value` at `expires_at` (unix ms; 0: never).
    pub(super) async fn put_ex(
        &mut self,
        ctx: &ShardContext,
        key: &[u8],
        value: &[u8],
        expires_at: u64,
    ) -> Status {
        // The session's scratch buffer, taken for the call and given back.
        let mut timed = std::mem::take(&mut self.scratch);
        timed.clear();
        timed.extend_from_slice(&expires_at.to_le_bytes());
        timed.extend_from_slice(value);
        let status = self.one_raw(ctx, OpKind::PutEx, key, &timed).await;
        self.scratch = timed;
        status
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
                let status = self
                    .one_raw(run.ctx, OpKind::Expire, run.argv[1], &arg)
                    .await;
                let mut r = run.reply(self.proto);
                match status {
                    Status::Ok => r.int(i64::from(self.detail.first() == Some(&1))),
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
        let change = match parse_getex(argv, now_ms()) {
            Ok(c) => c,
            Err(e) => {
                run.reply(self.proto).error(&e);
                return Ok((OpClass::Put, Status::InvalidArgument));
            }
        };
        self.rmw(run, argv[1], &Program::GetEx(change), false).await
    }

    async fn setex(&mut self, name: &str, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let at = match parse_setex(name, argv, now_ms()) {
            Ok(at) => at,
            Err(e) => {
                run.reply(self.proto).error(&e);
                return Ok((OpClass::Put, Status::InvalidArgument));
            }
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
        let (mode, at) = match parse_expire(name, argv, now_ms()) {
            Ok(parsed) => parsed,
            Err(e) => {
                run.reply(self.proto).error(&e);
                return Ok((OpClass::Put, Status::InvalidArgument));
            }
        };
        let mut arg = [0u8; 9];
        arg[0] = mode as u8;
        arg[1..].copy_from_slice(&at.to_le_bytes());
        let status = self.one_raw(run.ctx, OpKind::Expire, argv[1], &arg).await;
        let mut r = run.reply(self.proto);
        match status {
            Status::Ok => r.int(i64::from(self.detail.first() == Some(&1))),
            other => r.error(&status_error(other)),
        }
        Ok((OpClass::Put, status))
    }

    async fn ttl(&mut self, name: &str, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let status = self.one_raw(run.ctx, OpKind::Ttl, run.argv[1], b"").await;
        let now = now_ms();
        let mut r = run.reply(self.proto);
        match status {
            Status::NotFound => r.int(-2),
            Status::Ok => {
                let at = <[u8; 8]>::try_from(self.detail.as_slice()).map_or(0, u64::from_le_bytes);
                r.int(ttl_reply(name, at, now))
            }
            other => r.error(&status_error(other)),
        }
        Ok((OpClass::Get, status))
    }
}
