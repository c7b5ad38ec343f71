//! The RESP listener of one shard and the loop that serves one RESP client.
//!
//! The listener is bound per shard on the same address (SO_REUSEPORT), like
//! the native one, and shares that shard's connection count, connection
//! limit, buffer budget and metrics with it: `serve_shard` (net/server.rs)
//! starts it beside the native listener.
//!
//! Loop: read what arrived; parse every complete command (up to the batch
//! caps) and answer each in order into the outbound buffer, which is written
//! out whenever it holds a round's worth (so a client that pipelines and never
//! reads holds one round, and is closed after the reply stall timeout); then
//! read again. Input buffer growth is taken from the shard's `BufferBudget`
//! as for the native protocol, a started command must complete within the
//! frame timeout, and an idle connection is closed after the idle timeout.
//! It must never execute an engine operation itself: commands.rs maps each
//! command onto the shard router.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::AsyncWriteExt;
use glommio::net::TcpListener;

use crate::net::admission::Refusal;
use crate::net::listener::{accept_until_shutdown, Listening, Protocol};
use crate::net::stream::NetStream;

use crate::core::limits::{BATCH_BYTES_MAX, BATCH_REQUESTS_MAX};
use crate::shard::metrics::{OpClass, ShardMetrics};
use crate::shard::ShardContext;

use super::codec::{parse_command, Parsed, Reply};
use super::commands::{count_command, Flow, Session};
use super::pipeline::{plain, plain_access, Io, Pipeline};
use crate::net::conn_buf::RecvBuf;
use crate::net::inbound::{read_more, ReadOutcome};
use crate::net::outbound::{Held, Outbound, SendError};
use crate::net::request_batch::ConnConfig;

/// Arguments a command may have and still be parsed without an allocation
/// (every string and key command but long MGET/MSET/DEL lists).
const ARGV_INLINE: usize = 16;

/// Accept RESP clients on `listener` until the engine stops. `shared` is the
/// native listener's: one connection count and limit for both protocols, the
/// process-wide per-source limit, and the same TLS configuration (set, this
/// listener too speaks only TLS: same certificate, client CAs, reload and
/// handshake deadline; docs/security.md says why there is no per-listener
/// switch). The accepting itself is net/listener.rs's.
/// `maxclients`: the limit all accepting shards add up to (INFO says it).
pub async fn serve_listener(listener: TcpListener, shared: Listening, maxclients: usize) {
    super::commands::STARTED.get_or_init(Instant::now);
    super::server::lastsave_init();
    accept_until_shutdown(
        listener,
        shared,
        Protocol {
            name: "resp",
            refusal: resp_refusal,
            serve: move |mut stream: NetStream, ctx: ShardContext, cfg: Rc<ConnConfig>| async move {
                serve_resp_connection(&mut stream, &ctx, &cfg, maxclients).await;
                stream
            },
        },
    )
    .await;
}

/// Redis's own text for its maxclients limit (clients match on it), with
/// corekv's reason after it for the per-source limit, which Redis does not
/// have.
fn resp_refusal(refused: Refusal) -> Vec<u8> {
    let reply: &'static [u8] = match refused {
        Refusal::ConnectionsPerSource => {
            b"-ERR max number of clients reached from this address (connections_per_source_max)\r\n"
        }
        _ => b"-ERR max number of clients reached\r\n",
    };
    reply.to_vec()
}

pub async fn serve_resp_connection(
    stream: &mut NetStream,
    ctx: &ShardContext,
    cfg: &ConnConfig,
    maxclients: usize,
) {
    let metrics = ctx.router.metrics();
    let peer: Option<SocketAddr> = stream.peer_addr().ok();
    let local: Option<SocketAddr> = stream.local_addr().ok();
    let ceiling = cfg.limits.body_bytes_max() + 64 * 1024;
    let bulk_max = cfg.limits.value_bytes_max.max(cfg.limits.key_bytes_max);
    let mut rbuf = RecvBuf::new(ceiling);
    let mut outb = Outbound::new(cfg.reply_buffer_bytes, cfg.reply_stall);
    let held_in = Held::new(&cfg.buffers, metrics);
    let held_out = Held::new(&cfg.buffers, metrics);
    let mut pipeline = Pipeline::new(ctx);
    let mut session = Session::new(
        ctx,
        peer,
        local,
        maxclients,
        cfg.auth.is_some(),
        stream.raw_fd(),
    );
    // A verified client certificate naming a user logs the connection in.
    if let (Some(auth), Some(name)) = (&cfg.auth, stream.peer_certificate_name()) {
        if let Some(s) = auth.session_for_certificate(&name, peer.map(|a| a.ip())) {
            session.auth = s;
        }
    }
    let mut args = Vec::new();
    loop {
        let mut consumed = 0;
        let mut count = 0;
        let mut close = false;
        let mut fatal = None;
        while count < BATCH_REQUESTS_MAX && consumed < BATCH_BYTES_MAX {
            let data = rbuf.data();
            match parse_command(&data[consumed..], bulk_max, ceiling, &mut args) {
                Parsed::Incomplete => break,
                Parsed::Bad(detail) => {
                    metrics.protocol_error();
                    tracing::debug!("closing a RESP connection after a protocol error: {detail}");
                    // Answered after the commands before it.
                    fatal = Some(detail);
                    close = true;
                    break;
                }
                Parsed::Command { len } => {
                    let base = consumed;
                    consumed += len;
                    count += 1;
                    if args.is_empty() {
                        continue;
                    }
                    // The arguments as slices of the read buffer: on the stack
                    // for the common short command, so a command costs no
                    // allocation; a longer one (MSET of many keys) collects.
                    let mut inline: [&[u8]; ARGV_INLINE] = [&[]; ARGV_INLINE];
                    let collected: Vec<&[u8]>;
                    let argv: &[&[u8]] = if args.len() <= ARGV_INLINE {
                        for (slot, r) in inline.iter_mut().zip(args.iter()) {
                            *slot = &data[base + r.start..base + r.end];
                        }
                        &inline[..args.len()]
                    } else {
                        collected = args
                            .iter()
                            .map(|r| &data[base + r.start..base + r.end])
                            .collect();
                        &collected
                    };
                    // A plain GET or SET joins a run only if the session,
                    // as it is now (after any AUTH earlier in this read,
                    // which `run` decided before this command was parsed),
                    // may run it; otherwise `run` refuses it in order.
                    // After MULTI nothing joins a run: every command is queued by `run`.
                    let plain = plain(argv)
                        .filter(|kind| !session.in_multi() && session.may(plain_access(*kind)));
                    if pipeline.kind().is_some() && pipeline.kind() != plain {
                        let mut io = Io {
                            ctx,
                            cfg,
                            outb: &mut outb,
                            stream,
                            held_out: &held_out,
                            metrics,
                            proto: session.proto,
                        };
                        if let Err(e) = pipeline.answer(data, &mut io).await {
                            return send_failed(e, metrics, cfg);
                        }
                    }
                    if let Some(kind) = plain {
                        let value = args.get(2).map_or(0..0, |r| base + r.start..base + r.end);
                        let key = base + args[1].start..base + args[1].end;
                        pipeline.push(ctx, data, kind, key, value);
                        count_command(ctx.shard());
                        session.note_activity();
                        continue;
                    }
                    let started = Instant::now();
                    let (flow, class, status) =
                        session.run(argv, ctx, cfg, &mut outb, stream).await;
                    let nanos = started.elapsed().as_nanos() as u64;
                    session.note_activity();
                    metrics.record_request(class, status, nanos);
                    if cfg.slow_op_nanos > 0 && nanos >= cfg.slow_op_nanos {
                        log_slow(ctx, argv, nanos);
                    }
                    match flow {
                        Flow::Continue => {}
                        Flow::Close => {
                            close = true;
                            break;
                        }
                        Flow::Failed(e) => return send_failed(e, metrics, cfg),
                    }
                    if outb.is_full() {
                        if let Err(e) = outb.flush(stream).await {
                            return send_failed(e, metrics, cfg);
                        }
                    }
                }
            }
        }
        let mut io = Io {
            ctx,
            cfg,
            outb: &mut outb,
            stream,
            held_out: &held_out,
            metrics,
            proto: session.proto,
        };
        if let Err(e) = pipeline.answer(rbuf.data(), &mut io).await {
            return send_failed(e, metrics, cfg);
        }
        if let Some(detail) = fatal {
            Reply {
                out: outb.buf(),
                proto: session.proto,
            }
            .error(&format!("ERR {detail}"));
        }
        if !outb.is_empty() {
            if let Err(e) = outb.flush(stream).await {
                return send_failed(e, metrics, cfg);
            }
        }
        rbuf.consume(consumed);
        if held_in.bytes() > rbuf.extra() {
            held_in.give_back(held_in.bytes() - rbuf.extra());
        }
        if close {
            let _ = stream.flush().await;
            return;
        }
        if count >= BATCH_REQUESTS_MAX || consumed >= BATCH_BYTES_MAX {
            continue;
        }
        if ctx.shutdown.is_set() {
            return;
        }
        match read_more(stream, &mut rbuf, 0, ctx, cfg, &held_in).await {
            ReadOutcome::Data(_) => {}
            ReadOutcome::Closed | ReadOutcome::Shutdown => return,
            ReadOutcome::Idle => return,
            ReadOutcome::TimedOut => {
                metrics.protocol_error();
                metrics.record_request(
                    OpClass::Other,
                    crate::core::status::Status::FrameTimeout,
                    0,
                );
                let detail = format!(
                    "ERR FRAME_TIMEOUT command incomplete after {:?}",
                    cfg.frame_timeout
                );
                Reply {
                    out: outb.buf(),
                    proto: session.proto,
                }
                .error(&detail);
                let _ = outb.flush(stream).await;
                return;
            }
            ReadOutcome::Failed(e) => {
                tracing::debug!("read from RESP client failed: {e}");
                return;
            }
        }
    }
}

#[cold]
fn log_slow(ctx: &ShardContext, argv: &[&[u8]], nanos: u64) {
    tracing::warn!(
        shard = ctx.shard().0,
        latency_ms = nanos as f64 / 1e6,
        command = %String::from_utf8_lossy(argv[0]),
        args = argv.len() - 1,
        "slow RESP command"
    );
}

#[cold]
fn send_failed(e: SendError, metrics: &ShardMetrics, cfg: &ConnConfig) {
    match e {
        SendError::Io(e) => tracing::debug!("write to RESP client failed: {e}"),
        SendError::Stalled => {
            metrics.connection_closed_by_limit();
            tracing::warn!(
                stall = ?cfg.reply_stall,
                "closing a RESP connection whose client took no reply bytes for the reply stall timeout (reply_stall_timeout_ms)"
            );
        }
    }
}
