//! One batch of a connection's pipelined requests: parsed from the receive
//! buffer, routed to the owning shards as one `RoutedBatch`, and answered in
//! request order.
//!
//! It owns the mapping from requests to shard operations and back: a GET, PUT or
//! DELETE is one operation; an MGET is one GET per key (grouped per shard by the
//! router, so one message per shard); a SCAN is one scan operation per shard
//! whose pages are merged here. Every buffer is reused across batches.
//!
//! Replies are bounded (issue 17): every shard stops executing a batch's ops
//! once its replies hold the connection's reply buffer size, so a pipeline of
//! large GETs is answered in rounds: the replies that came back are written
//! out in order up to the first op that did not run, and the rest run in the
//! next round. No op ever runs twice: a shard whose replies are not all
//! written yet (they lie past that point) keeps them and sits the next round
//! out, so each shard holds at most one round. Each shard runs its ops in
//! order and only a suffix is ever deferred, so a connection's ops on one
//! shard keep their order; ops on different shards were never ordered within
//! a batch. MGET and SCAN replies are bounded by `reply_bytes_max`, decided
//! before values are copied.
//! It must never execute an operation itself; it writes only through the
//! connection's `Outbound`.

use std::ops::Range;

use crate::core::status::Status;
use crate::core::txn_format::TxnShape;
use crate::core::types::ShardId;
use crate::shard::metrics::{OpClass, ShardMetrics};
use crate::shard::{OpKind, RoutedBatch, ShardContext};

use crate::core::limits::{BATCH_BYTES_MAX, BATCH_REQUESTS_MAX};

use super::codec::{
    decode_request, encode_response, encode_response_header, encode_response_with, parse_frame,
    scan_fields, HelloInfo, Limits, Opcode, Parsed, Request, Side, HEADER_BYTES,
};
use super::outbound::{BufferBudget, Outbound, SendError, DIRECT_WRITE_BYTES};
use super::stream::NetStream;

pub struct ConnConfig {
    pub limits: Limits,
    /// A frame that has started arriving must complete within this time.
    pub frame_timeout: std::time::Duration,
    /// Close a connection on which no frame starts for this long (`None`: never).
    pub idle_timeout: Option<std::time::Duration>,
    /// Batches slower than this are logged with their ops (0: never).
    pub slow_op_nanos: u64,
    pub hello: HelloInfo,
    /// Reply bytes a connection holds per round (each shard stops executing
    /// its ops past this; the composed replies are written out at this size).
    pub reply_buffer_bytes: usize,
    /// Largest MGET or SCAN reply body; a larger MGET is refused with
    /// REPLY_TOO_LARGE, a SCAN page ends early.
    pub reply_bytes_max: usize,
    /// A connection whose client takes no reply bytes for this long is closed.
    pub reply_stall: std::time::Duration,
    /// This shard's budget for all its connections' buffers.
    pub buffers: BufferBudget,
    /// Users and the failed-login throttle; `None`: authentication is off
    /// and every connection may do everything.
    pub auth: Option<super::auth::ShardAuth>,
    /// The shards' published state, for RESP INFO (read only there).
    pub telemetry: Option<std::sync::Arc<crate::shard::runtime::telemetry::Telemetry>>,
}

/// What to answer for each request of a batch, in arrival order.
pub enum Entry {
    /// Answered from `shard`'s replies, in order.
    Routed {
        id: u64,
        opcode: u8,
        shard: ShardId,
        /// Where the key and value lie in the receive buffer, to send the op
        /// again if its shard deferred it.
        key: Range<u32>,
        value: Range<u32>,
    },
    /// A snapshot read of `count` keys (the MGET key list at `keys` in the
    /// receive buffer); answered from `serial_out`.
    Mget {
        id: u64,
        keys: Range<usize>,
        count: u32,
    },
    /// A TXN whose body is at `body` in the receive buffer, or an MPUT
    /// (`body: None`) already converted into a TXN body in `scratch`;
    /// `shape` is where the validated body splits (the codec's view, made
    /// again at run time without parsing); answered from `serial_status` /
    /// `serial_out`.
    Txn {
        id: u64,
        opcode: u8,
        body: Option<Range<usize>>,
        shape: TxnShape,
    },
    /// A SCAN whose body is at `body` in the receive buffer: pages from every
    /// shard, merged; answered from `serial_status` / `serial_out`.
    Scan {
        id: u64,
        body: Range<usize>,
    },
    Hello {
        id: u64,
    },
    /// Run after the routed operations; `outcome` is filled by `execute`.
    Backup {
        id: u64,
        target: Vec<u8>,
        outcome: Option<(Status, Vec<u8>)>,
    },
    Ping {
        id: u64,
        payload: Range<usize>,
    },
    /// Verified by `execute` off the executor; ends its batch, so the
    /// requests after it are checked against the session it establishes.
    Auth {
        id: u64,
        user: String,
        password: Vec<u8>,
        outcome: Option<(Status, Vec<u8>)>,
    },
    Error {
        id: u64,
        opcode: u8,
        status: Status,
        detail: String,
    },
}

/// How parsing the buffered bytes ended.
pub struct Filled {
    pub consumed: usize,
    /// A fatal error to answer before closing.
    pub close: Option<Entry>,
    /// The batch cap was hit: more complete frames may be buffered.
    pub full: bool,
}

pub struct RequestBatch {
    routed: RoutedBatch,
    /// Ops pushed to each shard this round (a shard that replied to fewer
    /// deferred the rest).
    pushed: Vec<usize>,
    /// Entries before this one are answered (written out).
    next: usize,
    /// Value lengths asked before an MGET (`OpKind::ValueLen`).
    probe: RoutedBatch,
    /// Shards that run in the next round (see `compose`).
    rerun: Vec<bool>,
    order: Vec<Entry>,
    scratch: Vec<u8>,
    cursors: Vec<usize>,
    serial_status: Status,
    serial_out: Vec<u8>,
    /// Who the connection is: every request is checked against it in `fill`.
    session: crate::core::auth::Session,
    /// The client's address, for the failed-AUTH throttle.
    peer: Option<std::net::IpAddr>,
}

impl RequestBatch {
    pub fn new(ctx: &ShardContext) -> RequestBatch {
        RequestBatch {
            routed: ctx.new_batch(),
            pushed: vec![0; usize::from(ctx.shard_count())],
            next: 0,
            probe: ctx.new_batch(),
            rerun: vec![false; usize::from(ctx.shard_count())],
            order: Vec::with_capacity(64),
            scratch: Vec::new(),
            cursors: vec![0; usize::from(ctx.shard_count())],
            serial_status: Status::Ok,
            serial_out: Vec::new(),
            // Fail closed: a connection that skipped `start_session` can do nothing.
            session: crate::core::auth::Session::new(true),
            peer: None,
        }
    }

    /// Set up the connection's session: unauthenticated when `cfg` has users.
    /// `certificate`: the subject CN of the client's verified certificate,
    /// which logs the connection in as that user when there is one.
    pub fn start_session(
        &mut self,
        cfg: &ConnConfig,
        peer: Option<std::net::IpAddr>,
        certificate: Option<&str>,
    ) {
        self.session = crate::core::auth::Session::new(cfg.auth.is_some());
        if let (Some(auth), Some(name)) = (&cfg.auth, certificate) {
            if let Some(session) = auth.session_for_certificate(name, peer) {
                self.session = session;
            }
        }
        self.peer = peer;
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Ready for the next batch. Reply memory past one round's worth is
    /// given back, so a burst of large values does not stay pinned.
    pub fn clear(&mut self, keep: usize) {
        self.routed.clear_and_trim(keep);
        self.pushed.iter_mut().for_each(|p| *p = 0);
        self.cursors.iter_mut().for_each(|c| *c = 0);
        self.next = 0;
        self.order.clear();
        if self.serial_out.capacity() > keep {
            self.serial_out = Vec::new();
        }
    }

    /// Whether the batch holds an op whose reply size is unknown until it
    /// runs (a GET, MGET or SCAN): such a batch reserves reply room first.
    pub fn reads_values(&self) -> bool {
        self.order.iter().any(|e| match e {
            Entry::Mget { .. } | Entry::Scan { .. } => true,
            // An RMW may answer the old value (GETSET, GETDEL, SET GET).
            Entry::Routed { opcode, .. } => {
                *opcode == Opcode::Get as u8 || *opcode == Opcode::Rmw as u8
            }
            _ => false,
        })
    }

    /// Whether the batch ends with a serial entry (TXN, MPUT, MGET, SCAN):
    /// derived from the entries rather than kept beside them, so the two
    /// cannot disagree.
    fn ends_serial(&self) -> bool {
        matches!(
            self.order.last(),
            Some(Entry::Mget { .. } | Entry::Txn { .. } | Entry::Scan { .. })
        )
    }

    /// Bytes of replies held by the last round.
    pub fn reply_bytes(&self) -> usize {
        self.routed.reply_bytes() + self.serial_out.len()
    }

    /// Parse complete frames from `data` into the batch.
    pub fn fill(
        &mut self,
        data: &[u8],
        ctx: &ShardContext,
        cfg: &ConnConfig,
        needed: &mut usize,
    ) -> Filled {
        let body_max = cfg.limits.body_bytes_max();
        let mut consumed = 0;
        *needed = HEADER_BYTES;
        while self.order.len() < BATCH_REQUESTS_MAX
            && consumed < BATCH_BYTES_MAX
            && !self.ends_serial()
        {
            match parse_frame(&data[consumed..], Side::Server, body_max) {
                Parsed::Incomplete { needed: n } => {
                    *needed = n;
                    return Filled {
                        consumed,
                        close: None,
                        full: false,
                    };
                }
                Parsed::Bad { request_id, error } => {
                    let close = Entry::Error {
                        id: request_id,
                        opcode: 0,
                        status: error.status,
                        detail: error.detail,
                    };
                    return Filled {
                        consumed,
                        close: Some(close),
                        full: false,
                    };
                }
                Parsed::Frame { header, body, len } => {
                    let id = header.request_id.get();
                    let body_start = consumed + HEADER_BYTES;
                    // The permission check, before the body is even decoded:
                    // an unauthenticated peer reaches no decoder but AUTH's.
                    let refused = Opcode::from_u8(header.opcode)
                        .and_then(|op| self.session.check(op.access()).err());
                    let decoded = match refused {
                        Some(status) => Err(refusal(status, header.opcode)),
                        None => decode_request(&header, body, &cfg.limits),
                    };
                    consumed += len;
                    match decoded {
                        // A backup's cut must not include requests sent after
                        // it, so it closes the batch.
                        Ok(request @ (Request::Backup { .. } | Request::Auth { .. })) => {
                            self.add(ctx, data, id, request, body_start..body_start + body.len());
                            return Filled {
                                consumed,
                                close: None,
                                full: true,
                            };
                        }
                        Ok(request) => {
                            self.add(ctx, data, id, request, body_start..body_start + body.len())
                        }
                        Err(e) => {
                            let entry = Entry::Error {
                                id,
                                opcode: header.opcode,
                                status: e.status,
                                detail: e.detail,
                            };
                            if e.fatal {
                                return Filled {
                                    consumed,
                                    close: Some(entry),
                                    full: false,
                                };
                            }
                            self.order.push(entry);
                        }
                    }
                }
            }
        }
        Filled {
            consumed,
            close: None,
            full: true,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        ctx: &ShardContext,
        data: &[u8],
        id: u64,
        opcode: Opcode,
        kind: OpKind,
        key: &[u8],
        value: &[u8],
    ) {
        let shard = ctx.router.shard_of(key);
        self.routed.push(shard, kind, key, value);
        self.pushed[shard.index()] += 1;
        self.order.push(Entry::Routed {
            id,
            opcode: opcode as u8,
            shard,
            key: span(data, key),
            value: span(data, value),
        });
    }

    fn add(
        &mut self,
        ctx: &ShardContext,
        data: &[u8],
        id: u64,
        request: Request<'_>,
        frame_body: Range<usize>,
    ) {
        let body_start = frame_body.start;
        match request {
            Request::Get { key } => self.route(ctx, data, id, Opcode::Get, OpKind::Get, key, b""),
            Request::Put { key, value } => {
                self.route(ctx, data, id, Opcode::Put, OpKind::Put, key, value)
            }
            Request::Delete { key } => {
                self.route(ctx, data, id, Opcode::Delete, OpKind::Delete, key, b"")
            }
            Request::PutEx { key, timed } => {
                self.route(ctx, data, id, Opcode::PutEx, OpKind::PutEx, key, timed)
            }
            Request::Expire { key, arg } => {
                self.route(ctx, data, id, Opcode::Expire, OpKind::Expire, key, arg)
            }
            Request::Ttl { key } => self.route(ctx, data, id, Opcode::Ttl, OpKind::Ttl, key, b""),
            Request::Rmw { key, program } => {
                self.route(ctx, data, id, Opcode::Rmw, OpKind::Rmw, key, program)
            }
            Request::Hello => self.order.push(Entry::Hello { id }),
            Request::Backup { target } => self.order.push(Entry::Backup {
                id,
                target: target.to_vec(),
                outcome: None,
            }),
            Request::Auth { user, password } => self.order.push(Entry::Auth {
                id,
                user: String::from_utf8_lossy(user).into_owned(),
                password: password.to_vec(),
                outcome: None,
            }),
            Request::Ping { payload } => self.order.push(Entry::Ping {
                id,
                payload: body_start..body_start + payload.len(),
            }),
            Request::Mget { count, keys } => {
                let at = body_start + 4;
                self.order.push(Entry::Mget {
                    id,
                    keys: at..at + keys.len(),
                    count,
                });
            }
            Request::Txn(view) => {
                self.order.push(Entry::Txn {
                    id,
                    opcode: Opcode::Txn as u8,
                    body: Some(body_start..body_start + view.body().len()),
                    shape: view.shape(),
                });
            }
            Request::Mput(mput) => {
                // Runs as a transaction: converted once, here, from the view
                // the codec validated; a serial entry ends its batch, so the
                // scratch buffer holds only this one.
                let shape = mput.write_as_txn(&mut self.scratch).shape();
                self.order.push(Entry::Txn {
                    id,
                    opcode: Opcode::Mput as u8,
                    body: None,
                    shape,
                });
            }
            Request::Scan(_) => {
                // A scan may need a second round of shard requests, which a
                // batch's single routed round cannot give it: it runs after
                // the batch's routed operations, like MGET.
                self.order.push(Entry::Scan {
                    id,
                    body: frame_body,
                });
            }
        }
    }

    /// Run one round: every routed op not yet answered (each shard stops once
    /// its replies hold `round_bytes`: the connection's room this round, at
    /// most `reply_buffer_bytes`), then, once no op was deferred, the backups
    /// and the closing TXN, MPUT, MGET or SCAN. `data` is the receive buffer
    /// `fill` parsed.
    pub async fn execute(
        &mut self,
        data: &[u8],
        ctx: &ShardContext,
        cfg: &ConnConfig,
        round_bytes: usize,
    ) {
        if !self.routed.is_empty() {
            self.routed.set_reply_budget(round_bytes);
            ctx.router.execute(&mut self.routed).await;
        }
        if self.deferred() {
            return;
        }
        for entry in &mut self.order {
            if let Entry::Backup {
                target, outcome, ..
            } = entry
            {
                *outcome = Some(match crate::shard::backup::run_backup(ctx, target).await {
                    Ok(summary) => (Status::Ok, summary),
                    Err(f) => (f.status, f.detail.into_bytes()),
                });
            }
            if let Entry::Auth {
                user,
                password,
                outcome: outcome @ None,
                ..
            } = entry
            {
                let password = std::mem::take(password);
                *outcome = Some(match &cfg.auth {
                    None => (
                        Status::InvalidArgument,
                        b"authentication is off on this server (no users_file)".to_vec(),
                    ),
                    Some(auth) => {
                        let done =
                            super::auth::authenticate(auth, self.peer, user.clone(), password)
                                .await;
                        if let Some(session) = done.session {
                            self.session = session;
                        }
                        (done.status, done.body)
                    }
                });
            }
        }
        // A TXN, MPUT, MGET or SCAN ends its batch (`fill` stops after one)
        // and runs after the batch's routed operations, so a connection's
        // requests take effect in the order sent.
        match self.order.last() {
            Some(Entry::Mget { keys, count, .. }) => {
                let keys = &data[keys.clone()];
                self.serial_status = sized_snapshot_get(
                    &mut self.probe,
                    keys,
                    *count,
                    ctx,
                    cfg,
                    false,
                    &mut self.serial_out,
                )
                .await;
            }
            Some(Entry::Txn { body, shape, .. }) => {
                let body = match body {
                    Some(range) => &data[range.clone()],
                    None => &self.scratch,
                };
                let view = shape.view(body);
                self.serial_status = ctx.router.transaction(&view, &mut self.serial_out).await;
            }
            Some(Entry::Scan { body, .. }) => {
                self.serial_status = run_scan(
                    ctx,
                    &data[body.clone()],
                    cfg.reply_bytes_max,
                    &mut self.serial_out,
                )
                .await;
            }
            // No serial entry: the routed round was the whole batch.
            _ => {}
        }
    }

    /// Whether a shard replied to fewer ops than it was sent this round.
    fn deferred(&self) -> bool {
        self.pushed
            .iter()
            .enumerate()
            .any(|(s, &n)| self.routed.replies(ShardId(s as u16)).len() < n)
    }

    /// Write every answer that is ready, in request order, through `outb`
    /// (large values straight from the reply batch). Returns whether the
    /// whole batch is answered; if not, the ops still owed are queued for
    /// the next round (`execute` again, then `compose` again).
    #[allow(clippy::too_many_arguments)]
    pub async fn compose(
        &mut self,
        data: &[u8],
        cfg: &ConnConfig,
        outb: &mut Outbound,
        stream: &mut NetStream,
        metrics: &ShardMetrics,
        nanos: u64,
    ) -> Result<bool, SendError> {
        let RequestBatch {
            routed,
            pushed,
            next,
            order,
            cursors,
            rerun,
            serial_status,
            serial_out,
            ..
        } = self;
        let mut cut: Option<usize> = None;
        let from = *next;
        for (i, entry) in order.iter_mut().enumerate().skip(from) {
            match entry {
                Entry::Routed {
                    id, opcode, shard, ..
                } => {
                    let class = match Opcode::from_u8(*opcode) {
                        Some(Opcode::Get) => OpClass::Get,
                        Some(Opcode::Put) | Some(Opcode::Rmw) => OpClass::Put,
                        Some(Opcode::Delete) => OpClass::Delete,
                        _ => OpClass::Other,
                    };
                    let c = &mut cursors[shard.index()];
                    let replies = routed.replies(*shard);
                    if *c >= replies.len() {
                        // Not run yet: everything from here waits for a round.
                        cut = Some(i);
                        break;
                    }
                    let (status, value) = replies.get(*c);
                    *c += 1;
                    metrics.record_request(class, status, nanos);
                    send(outb, stream, *opcode, *id, status, value).await?;
                }
                Entry::Mget { id, count, .. } => {
                    let status = *serial_status;
                    debug_assert!(!status.is_ok() || serial_out.starts_with(&count.to_le_bytes()));
                    metrics.record_request(OpClass::Get, status, nanos);
                    send(outb, stream, Opcode::Mget as u8, *id, status, serial_out).await?;
                }
                Entry::Txn { id, opcode, .. } => {
                    let status = *serial_status;
                    metrics.record_request(OpClass::Txn, status, nanos);
                    send(outb, stream, *opcode, *id, status, serial_out).await?;
                }
                Entry::Scan { id, .. } => {
                    let status = *serial_status;
                    let body: &[u8] = if status.is_ok() { serial_out } else { b"" };
                    metrics.record_request(OpClass::Other, status, nanos);
                    send(outb, stream, Opcode::Scan as u8, *id, status, body).await?;
                }
                Entry::Hello { id } => {
                    encode_response_with(outb.buf(), Opcode::Hello as u8, *id, Status::Ok, |o| {
                        cfg.hello.encode(o)
                    })
                }
                Entry::Backup { id, outcome, .. } => {
                    let (status, body) = match outcome {
                        Some((status, body)) => (*status, body.as_slice()),
                        None => (Status::Internal, &b"backup did not run"[..]),
                    };
                    metrics.record_request(OpClass::Other, status, nanos);
                    encode_response(outb.buf(), Opcode::Backup as u8, *id, status, body);
                }
                Entry::Auth { id, outcome, .. } => {
                    let (status, body) = match outcome {
                        Some((status, body)) => (*status, body.as_slice()),
                        None => (Status::Internal, &b"AUTH did not run"[..]),
                    };
                    metrics.record_request(OpClass::Other, status, nanos);
                    encode_response(outb.buf(), Opcode::Auth as u8, *id, status, body);
                }
                Entry::Ping { id, payload } => encode_response(
                    outb.buf(),
                    Opcode::Ping as u8,
                    *id,
                    Status::Ok,
                    &data[payload.clone()],
                ),
                Entry::Error {
                    id,
                    opcode,
                    status,
                    detail,
                } => {
                    metrics.record_request(OpClass::Other, *status, nanos);
                    encode_response(outb.buf(), *opcode, *id, *status, detail.as_bytes())
                }
            }
            *next = i + 1;
            if outb.is_full() {
                outb.flush(stream).await?;
            }
        }
        let Some(cut) = cut else {
            return Ok(true);
        };
        *next = cut;
        // The next round runs the shards whose replies were all written: a
        // shard still holding replies past the cut keeps them and sits this
        // round out (nothing runs twice; each shard holds one round). The
        // shard at the cut is always among those that run.
        routed.clear_ops();
        let n = pushed.len();
        rerun.iter_mut().for_each(|r| *r = false);
        for s in 0..n {
            let shard = ShardId(s as u16);
            if cursors[s] == routed.replies(shard).len() && pushed[s] > cursors[s] {
                rerun[s] = true;
                routed.clear_replies(shard);
                cursors[s] = 0;
                pushed[s] = 0;
            }
        }
        debug_assert!(
            matches!(&order[cut], Entry::Routed { shard, .. } if rerun[shard.index()]),
            "the shard at the cut runs next"
        );
        for entry in &order[cut..] {
            if let Entry::Routed {
                opcode,
                shard,
                key,
                value,
                ..
            } = entry
            {
                if !rerun[shard.index()] {
                    continue;
                }
                let kind = match Opcode::from_u8(*opcode) {
                    Some(Opcode::Get) => OpKind::Get,
                    Some(Opcode::Put) => OpKind::Put,
                    Some(Opcode::PutEx) => OpKind::PutEx,
                    Some(Opcode::Expire) => OpKind::Expire,
                    Some(Opcode::Ttl) => OpKind::Ttl,
                    Some(Opcode::Rmw) => OpKind::Rmw,
                    _ => OpKind::Delete,
                };
                let key = &data[key.start as usize..key.end as usize];
                let value = &data[value.start as usize..value.end as usize];
                routed.push(*shard, kind, key, value);
                pushed[shard.index()] += 1;
            }
        }
        Ok(false)
    }

    /// One warning line for a slow batch, naming its ops and owner shards.
    #[cold]
    pub fn log_slow(&self, ctx: &ShardContext, nanos: u64) {
        // AUTH is slow by design (argon2id, tens of ms off the executor): a
        // log line per login would drown the real slow batches.
        if self.order.iter().any(|e| matches!(e, Entry::Auth { .. })) {
            return;
        }
        let mut ops = [0usize; 4];
        let mut shards: Vec<u16> = Vec::new();
        for e in &self.order {
            match e {
                Entry::Routed { opcode, shard, .. } => {
                    let i = match Opcode::from_u8(*opcode) {
                        Some(Opcode::Get) => 0,
                        Some(Opcode::Put) => 1,
                        Some(Opcode::Delete) => 2,
                        _ => 3,
                    };
                    ops[i] += 1;
                    if !shards.contains(&shard.0) {
                        shards.push(shard.0);
                    }
                }
                Entry::Mget { count, .. } => ops[0] += *count as usize,
                _ => ops[3] += 1,
            }
        }
        tracing::warn!(
            shard = ctx.shard().0,
            latency_ms = nanos as f64 / 1e6,
            gets = ops[0],
            puts = ops[1],
            deletes = ops[2],
            other = ops[3],
            owner_shards = ?shards,
            "slow request batch"
        );
    }
}

/// Where `part` (a slice of `data`) lies in `data`.
/// The answer to an operation the session may not run (NOAUTH or
/// PERMISSION_DENIED): the connection stays open.
fn refusal(status: Status, opcode: u8) -> super::codec::WireError {
    let name = Opcode::from_u8(opcode).map_or("?", Opcode::name);
    super::codec::WireError {
        status,
        fatal: false,
        detail: match status {
            Status::NoAuth => format!("{name} needs authentication: send AUTH first"),
            _ => format!("{name} is not allowed for this user's role"),
        },
    }
}

fn span(data: &[u8], part: &[u8]) -> Range<u32> {
    if part.is_empty() {
        return 0..0;
    }
    let start = part.as_ptr() as usize - data.as_ptr() as usize;
    debug_assert!(
        start + part.len() <= data.len(),
        "not a slice of the buffer"
    );
    start as u32..(start + part.len()) as u32
}

/// One response; a large body is written from where it lies.
async fn send(
    outb: &mut Outbound,
    stream: &mut NetStream,
    opcode: u8,
    id: u64,
    status: Status,
    body: &[u8],
) -> Result<(), SendError> {
    if body.len() >= DIRECT_WRITE_BYTES {
        encode_response_header(outb.buf(), opcode, id, status, body.len());
        outb.send_direct(stream, body).await
    } else {
        encode_response(outb.buf(), opcode, id, status, body);
        Ok(())
    }
}

/// REPLY_TOO_LARGE, with a message naming the size and the limit in `out`.
fn too_large(out: &mut Vec<u8>, size: usize, cfg: &ConnConfig) -> Status {
    out.clear();
    use std::io::Write;
    let _ = write!(
        out,
        "the reply would be {size} bytes; the reply limit is {} bytes (reply_bytes_max): ask for fewer keys per MGET",
        cfg.reply_bytes_max
    );
    Status::ReplyTooLarge
}

/// A snapshot read of `keys` (MGET's body layout) whose reply is bounded:
/// sized first ([`mget_fits`]), read only if it fits, and refused if the
/// values grew past the limit between the two. On success `out` holds the
/// MGET reply body; on REPLY_TOO_LARGE, the message. The native MGET and the
/// RESP MGET and EXEC snapshots all read through here.
pub(crate) async fn sized_snapshot_get(
    probe: &mut RoutedBatch,
    keys: &[u8],
    count: u32,
    ctx: &ShardContext,
    cfg: &ConnConfig,
    with_expiry: bool,
    out: &mut Vec<u8>,
) -> Status {
    if let Err(status) = mget_fits(probe, keys, count, ctx, cfg, out).await {
        return status;
    }
    let status = ctx.router.snapshot_get(keys, count, with_expiry, out).await;
    if status.is_ok() && out.len() > cfg.reply_bytes_max {
        // Values grew between the sizing and the read.
        let size = out.len();
        too_large(out, size, cfg)
    } else {
        status
    }
}

/// Whether the MGET of `keys` fits the reply limit, decided from value sizes
/// before any value is copied. When even `count` largest values fit, nothing
/// is asked; otherwise each owner shard reports the lengths of its keys'
/// values (one message per shard). On refusal `out` holds the message.
pub(crate) async fn mget_fits(
    probe: &mut RoutedBatch,
    keys: &[u8],
    count: u32,
    ctx: &ShardContext,
    cfg: &ConnConfig,
    out: &mut Vec<u8>,
) -> Result<(), Status> {
    // count u32, then per key: status u16 | len u32 | value.
    let worst = 4 + count as usize * (6 + cfg.limits.value_bytes_max);
    if worst <= cfg.reply_bytes_max {
        return Ok(());
    }
    probe.clear();
    for k in crate::core::txn_format::sized_items(keys) {
        probe.push(ctx.router.shard_of(k), OpKind::ValueLen, k, b"");
    }
    ctx.router.execute(probe).await;
    let mut size = 4usize;
    for s in 0..ctx.shard_count() {
        let replies = probe.replies(ShardId(s));
        for i in 0..replies.len() {
            let (status, len) = replies.get(i);
            let len = match (status, len) {
                (Status::Ok, &[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]) as usize,
                // Absent keys cost their entry header; any failure is left
                // for the read itself to report.
                _ => 0,
            };
            size += 6 + len;
        }
    }
    probe.clear_and_trim(64 * 1024);
    if size > cfg.reply_bytes_max {
        return Err(too_large(out, size, cfg));
    }
    Ok(())
}

/// Run the SCAN whose (already checked) body is `body` and write the response
/// body into `out`: `count u32 | (key_len u32 | key | value_len u32 | value)* |
/// next_len u32 | next`. At most two rounds of shard requests: the first asks
/// each shard for its share, the second tops up a shard that fell short; a
/// page still short after that ends where the shards stopped, and `next` says
/// where to go on (a selective filter cannot hold a connection for long).
///
/// The page also ends before an entry that would take the body past
/// `reply_bytes_max` (one entry always fits: the limit is validated to hold
/// the largest key and value), and `next` then names that entry.
async fn run_scan(
    ctx: &ShardContext,
    body: &[u8],
    reply_bytes_max: usize,
    out: &mut Vec<u8>,
) -> Status {
    out.clear();
    let Some(request) = scan_fields(body) else {
        debug_assert!(false, "SCAN bodies are checked before they run");
        return Status::Internal;
    };
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut count = 0u32;
    let next = ctx
        .scan_merged(&request, 2, |k, v| {
            // 4 more bytes for `next_len`, and the next key of at most this size.
            if count > 0 && out.len() + 8 + k.len() + v.len() + 4 + k.len() > reply_bytes_max {
                return false;
            }
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
            count += 1;
            true
        })
        .await;
    match next {
        Ok(next) => {
            out[..4].copy_from_slice(&count.to_le_bytes());
            let next = next.unwrap_or_default();
            out.extend_from_slice(&(next.len() as u32).to_le_bytes());
            out.extend_from_slice(&next);
            Status::Ok
        }
        Err(status) => {
            out.clear();
            status
        }
    }
}
