//! One batch of a connection's pipelined requests: parsed from the receive
//! buffer, routed to the owning shards as one `RoutedBatch`, and answered in
//! request order.
//!
//! It owns the mapping from requests to shard operations and back: a GET, PUT or
//! DELETE is one operation; an MGET is one GET per key (grouped per shard by the
//! router, so one message per shard); a SCAN is one scan operation per shard
//! whose pages are merged here. Every buffer is reused across batches.
//! It must never execute an operation itself or touch the socket.

use std::ops::Range;

use crate::core::status::Status;
use crate::core::types::ShardId;
use crate::shard::metrics::{OpClass, ShardMetrics};
use crate::shard::{OpKind, RoutedBatch, ShardContext};

use super::codec::{
    decode_request, encode_response, encode_response_with, parse_frame, scan_fields, HelloInfo,
    Limits, Opcode, Parsed, Request, Side, HEADER_BYTES,
};

/// At most this many requests go into one batch, so one connection cannot hold a
/// shard for long and responses start flowing early.
pub const BATCH_REQUESTS_MAX: usize = 1024;
/// Past this many request bytes, the batch is closed.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

pub struct ConnConfig {
    pub limits: Limits,
    /// A frame that has started arriving must complete within this time.
    pub frame_timeout: std::time::Duration,
    /// Close a connection on which no frame starts for this long (`None`: never).
    pub idle_timeout: Option<std::time::Duration>,
    /// Batches slower than this are logged with their ops (0: never).
    pub slow_op_nanos: u64,
    pub hello: HelloInfo,
}

/// What to answer for each request of a batch, in arrival order.
pub enum Entry {
    /// Answered from `shard`'s replies, in order.
    Routed {
        id: u64,
        opcode: u8,
        shard: ShardId,
    },
    /// A snapshot read of `count` keys (the MGET key list at `keys` in the
    /// receive buffer); answered from `serial_out`.
    Mget {
        id: u64,
        keys: Range<usize>,
        count: u32,
    },
    /// A TXN (or MPUT) whose body is at `body` in the receive buffer; answered
    /// from `serial_status` / `serial_out`.
    Txn {
        id: u64,
        opcode: u8,
        body: Range<usize>,
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
    order: Vec<Entry>,
    scratch: Vec<u8>,
    cursors: Vec<usize>,
    /// A TXN, MPUT or MGET ends its batch and runs after the batch's routed
    /// operations, so a connection's requests take effect in the order sent.
    serial: bool,
    serial_status: Status,
    serial_out: Vec<u8>,
}

impl RequestBatch {
    pub fn new(ctx: &ShardContext) -> RequestBatch {
        RequestBatch {
            routed: ctx.new_batch(),
            order: Vec::with_capacity(64),
            scratch: Vec::new(),
            cursors: vec![0; usize::from(ctx.shard_count())],
            serial: false,
            serial_status: Status::Ok,
            serial_out: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn clear(&mut self) {
        self.routed.clear();
        self.order.clear();
        self.serial = false;
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
        while self.order.len() < BATCH_REQUESTS_MAX && consumed < BATCH_BYTES_MAX && !self.serial {
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
                    consumed += len;
                    match decode_request(&header, body, &cfg.limits) {
                        // A backup's cut must not include requests sent after
                        // it, so it closes the batch.
                        Ok(request @ Request::Backup { .. }) => {
                            self.add(ctx, id, request, body_start..body_start + body.len());
                            return Filled {
                                consumed,
                                close: None,
                                full: true,
                            };
                        }
                        Ok(request) => {
                            self.add(ctx, id, request, body_start..body_start + body.len())
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

    fn route(
        &mut self,
        ctx: &ShardContext,
        id: u64,
        opcode: Opcode,
        kind: OpKind,
        key: &[u8],
        value: &[u8],
    ) {
        let shard = ctx.router.shard_of(key);
        self.routed.push(shard, kind, key, value);
        self.order.push(Entry::Routed {
            id,
            opcode: opcode as u8,
            shard,
        });
    }

    fn add(&mut self, ctx: &ShardContext, id: u64, request: Request<'_>, frame_body: Range<usize>) {
        let body_start = frame_body.start;
        match request {
            Request::Get { key } => self.route(ctx, id, Opcode::Get, OpKind::Get, key, b""),
            Request::Put { key, value } => {
                self.route(ctx, id, Opcode::Put, OpKind::Put, key, value)
            }
            Request::Delete { key } => {
                self.route(ctx, id, Opcode::Delete, OpKind::Delete, key, b"")
            }
            Request::Hello => self.order.push(Entry::Hello { id }),
            Request::Backup { target } => self.order.push(Entry::Backup {
                id,
                target: target.to_vec(),
                outcome: None,
            }),
            Request::Ping { payload } => self.order.push(Entry::Ping {
                id,
                payload: body_start..body_start + payload.len(),
            }),
            Request::Mget { count, keys } => {
                let at = body_start + 4;
                self.serial = true;
                self.order.push(Entry::Mget {
                    id,
                    keys: at..at + keys.len(),
                    count,
                });
            }
            Request::Txn { body } | Request::Mput { body } => {
                let opcode = match request {
                    Request::Txn { .. } => Opcode::Txn,
                    _ => Opcode::Mput,
                };
                self.serial = true;
                self.order.push(Entry::Txn {
                    id,
                    opcode: opcode as u8,
                    body: body_start..body_start + body.len(),
                });
            }
            Request::Scan(_) => {
                // A scan may need a second round of shard requests, which a
                // batch's single routed round cannot give it: it runs after
                // the batch's routed operations, like MGET.
                self.serial = true;
                self.order.push(Entry::Scan {
                    id,
                    body: frame_body,
                });
            }
        }
    }

    /// Run every routed operation on its shard, then the closing TXN, MPUT or
    /// MGET if there is one. `data` is the receive buffer `fill` parsed.
    pub async fn execute(&mut self, data: &[u8], ctx: &ShardContext) {
        if !self.routed.is_empty() {
            ctx.router.execute(&mut self.routed).await;
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
        }
        if !self.serial {
            return;
        }
        match self.order.last() {
            Some(Entry::Mget { keys, count, .. }) => {
                self.serial_status = ctx
                    .router
                    .snapshot_get(&data[keys.clone()], *count, &mut self.serial_out)
                    .await;
            }
            Some(Entry::Txn { opcode, body, .. }) => {
                let mut body = &data[body.clone()];
                if *opcode == Opcode::Mput as u8 {
                    mput_as_txn(body, &mut self.scratch);
                    body = &self.scratch;
                }
                self.serial_status = ctx.router.transaction(body, &mut self.serial_out).await;
            }
            Some(Entry::Scan { body, .. }) => {
                self.serial_status = run_scan(ctx, &data[body.clone()], &mut self.serial_out).await;
            }
            _ => unreachable!("a serial batch ends with its serial entry"),
        }
    }

    /// Append every response, in request order, to `out`.
    pub fn compose(
        &mut self,
        data: &[u8],
        cfg: &ConnConfig,
        out: &mut Vec<u8>,
        metrics: &ShardMetrics,
        nanos: u64,
    ) {
        self.cursors.iter_mut().for_each(|c| *c = 0);
        for entry in &self.order {
            match entry {
                Entry::Routed { id, opcode, shard } => {
                    let (status, value) = next_reply(&self.routed, &mut self.cursors, *shard);
                    let class = match Opcode::from_u8(*opcode) {
                        Some(Opcode::Get) => OpClass::Get,
                        Some(Opcode::Put) => OpClass::Put,
                        Some(Opcode::Delete) => OpClass::Delete,
                        _ => OpClass::Other,
                    };
                    metrics.record_request(class, status, nanos);
                    encode_response(out, *opcode, *id, status, value);
                }
                Entry::Mget { id, count, .. } => {
                    let status = self.serial_status;
                    let body: &[u8] = if status.is_ok() {
                        &self.serial_out
                    } else {
                        b""
                    };
                    debug_assert!(!status.is_ok() || body.starts_with(&count.to_le_bytes()));
                    encode_response(out, Opcode::Mget as u8, *id, status, body);
                    metrics.record_request(OpClass::Get, status, nanos);
                }
                Entry::Txn { id, opcode, .. } => {
                    let status = self.serial_status;
                    encode_response(out, *opcode, *id, status, &self.serial_out);
                    metrics.record_request(OpClass::Txn, status, nanos);
                }
                Entry::Scan { id, .. } => {
                    let status = self.serial_status;
                    let body: &[u8] = if status.is_ok() {
                        &self.serial_out
                    } else {
                        b""
                    };
                    encode_response(out, Opcode::Scan as u8, *id, status, body);
                    metrics.record_request(OpClass::Other, status, nanos);
                }
                Entry::Hello { id } => {
                    encode_response_with(out, Opcode::Hello as u8, *id, Status::Ok, |o| {
                        cfg.hello.encode(o)
                    })
                }
                Entry::Backup { id, outcome, .. } => {
                    let (status, body) = match outcome {
                        Some((status, body)) => (*status, body.as_slice()),
                        None => (Status::Internal, &b"backup did not run"[..]),
                    };
                    metrics.record_request(OpClass::Other, status, nanos);
                    encode_response(out, Opcode::Backup as u8, *id, status, body);
                }
                Entry::Ping { id, payload } => encode_response(
                    out,
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
                    encode_response(out, *opcode, *id, *status, detail.as_bytes())
                }
            }
        }
    }

    /// One warning line for a slow batch, naming its ops and owner shards.
    #[cold]
    pub fn log_slow(&self, ctx: &ShardContext, nanos: u64) {
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

/// An MPUT body as the TXN body with the same writes and no conditions.
fn mput_as_txn(mput: &[u8], out: &mut Vec<u8>) {
    use crate::core::txn_format::{encode_write, sized_items, Write};
    out.clear();
    out.extend_from_slice(&0u32.to_le_bytes());
    let Some((count, pairs)) = mput.split_first_chunk::<4>() else {
        unreachable!("the codec validated this MPUT body")
    };
    out.extend_from_slice(count);
    let mut items = sized_items(pairs);
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        encode_write(out, &Write::Put(k, v));
    }
}

fn next_reply<'a>(
    routed: &'a RoutedBatch,
    cursors: &mut [usize],
    shard: ShardId,
) -> (Status, &'a [u8]) {
    let i = &mut cursors[shard.index()];
    let reply = routed.replies(shard).get(*i);
    *i += 1;
    reply
}

/// Run the SCAN whose (already checked) body is `body` and write the response
/// body into `out`: `count u32 | (key_len u32 | key | value_len u32 | value)* |
/// next_len u32 | next`. At most two rounds of shard requests: the first asks
/// each shard for its share, the second tops up a shard that fell short; a
/// page still short after that ends where the shards stopped, and `next` says
/// where to go on (a selective filter cannot hold a connection for long).
async fn run_scan(ctx: &ShardContext, body: &[u8], out: &mut Vec<u8>) -> Status {
    out.clear();
    let Some(request) = scan_fields(body) else {
        debug_assert!(false, "SCAN bodies are checked before they run");
        return Status::Internal;
    };
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut count = 0u32;
    let next = ctx
        .scan_merged(&request, 2, |k, v| {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
            count += 1;
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
