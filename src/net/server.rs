//! The network server: one listener per shard on the same address (SO_REUSEPORT,
//! so the kernel spreads connections over cores), one task per connection.
//! With `connection_shards` set, only those shards listen; the rest serve
//! what other shards forward to them.
//!
//! It owns the listening sockets and the per-shard connection limit, and
//! checks both through `admission::Gate` at accept. It must
//! never execute an operation itself: everything goes through the shard router.

use std::cell::Cell;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::net::TcpListener;

use crate::core::limits::{
    CONNECTIONS_PER_SOURCE_MAX_DEFAULT, CONN_BUFFER_BUDGET_DEFAULT, KEY_BYTES_MAX,
    REPLY_BUFFER_BYTES_DEFAULT, REPLY_BYTES_MAX_DEFAULT, REPLY_STALL_TIMEOUT_MS_DEFAULT,
};
use crate::core::status::Status;
use crate::shard::wake::WaitQueue;
use crate::shard::ShardContext;

use super::admission::{Gate, Refusal, Refusals, SourceLimits};
use super::codec::{encode_response, HelloInfo, Limits, PROTOCOL_VERSION};
use super::connection::{serve_connection, ConnConfig};
use super::listener::{accept_until_shutdown, Listening, Protocol};
use super::outbound::BufferBudget;
use super::stream::NetStream;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where the RESP (Redis protocol) listener binds on every shard
    /// (`None`: no RESP listener).
    pub resp_listen: Option<SocketAddr>,
    pub value_bytes_max: usize,
    /// Connections each shard serves at once; more are answered
    /// TOO_MANY_CONNECTIONS and closed.
    pub connections_per_shard_max: usize,
    /// Connections per source address across every shard and both client
    /// listeners (process-wide; its `max` 0: no limit). More are answered
    /// TOO_MANY_CONNECTIONS (RESP: `-ERR max number of clients reached`).
    pub connections_per_source: Arc<SourceLimits>,
    /// Refusals by reason, shared with the admin endpoint's /metrics.
    pub refusals: Arc<Refusals>,
    pub frame_timeout: Duration,
    /// Connections with no frame for this long are closed (zero: never).
    pub idle_timeout: Duration,
    /// Request batches slower than this are logged (zero: never).
    pub slow_op: Duration,
    /// Reply bytes one connection holds per round (its outbound buffer).
    pub reply_buffer_bytes: usize,
    /// Largest MGET reply / SCAN page body.
    pub reply_bytes_max: usize,
    /// A connection whose client takes no reply bytes for this long is closed.
    pub reply_stall_timeout: Duration,
    /// Per shard: bytes all its connections' buffers may hold together.
    pub conn_buffer_budget: usize,
    /// The users connections authenticate as (`None`: authentication is off).
    pub users: Option<Arc<super::auth::UsersHandle>>,
    /// Set: the listener speaks only TLS (loaded on the main thread, shared
    /// by every shard, replaced on SIGHUP). `None`: plaintext.
    pub tls: Option<Arc<super::tls::TlsHandle>>,
    /// What the shards publish (health, memory, WAL): RESP INFO's memory
    /// and persistence sections read it (`None`: those sections say only
    /// what the listener knows).
    pub telemetry: Option<Arc<crate::shard::runtime::telemetry::Telemetry>>,
    /// The shards that accept client connections, both listeners (`None`:
    /// every shard). The others bind no listener and serve only what other
    /// shards forward to them: on a machine where a client or interrupts
    /// share some cores, keeping connections' socket work off those cores
    /// leaves them more CPU (docs/tuning.md, "Connection shards").
    pub connection_shards: Option<Vec<u16>>,
}

impl ServerConfig {
    /// A configuration with every connection limit at its default.
    pub fn with_defaults(listen: SocketAddr, value_bytes_max: usize) -> ServerConfig {
        ServerConfig {
            listen,
            resp_listen: None,
            value_bytes_max,
            connections_per_shard_max: 10_000,
            connections_per_source: SourceLimits::new(CONNECTIONS_PER_SOURCE_MAX_DEFAULT),
            refusals: Refusals::new(),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Duration::ZERO,
            slow_op: Duration::ZERO,
            reply_buffer_bytes: REPLY_BUFFER_BYTES_DEFAULT,
            reply_bytes_max: REPLY_BYTES_MAX_DEFAULT,
            reply_stall_timeout: Duration::from_millis(REPLY_STALL_TIMEOUT_MS_DEFAULT),
            conn_buffer_budget: CONN_BUFFER_BUDGET_DEFAULT,
            users: None,
            tls: None,
            telemetry: None,
            connection_shards: None,
        }
    }

    /// Whether `shard` of `shard_count` accepts client connections, or why
    /// the setting cannot apply to this many shards. `serve` checks first,
    /// before the start; this is for embedders that skip that check.
    pub fn accepts_on(&self, shard: u16, shard_count: u16) -> Result<bool, String> {
        let Some(list) = &self.connection_shards else {
            return Ok(true);
        };
        match connection_shards_problem(list, Some(shard_count)) {
            Some(why) => Err(format!("connection_shards = {list:?}: {why}")),
            None => Ok(list.contains(&shard)),
        }
    }

    /// How many of `shard_count` shards accept connections: what the
    /// per-shard connection limit adds up to (Redis's `maxclients`).
    pub fn accepting_shards(&self, shard_count: u16) -> usize {
        self.connection_shards
            .as_ref()
            .map_or(usize::from(shard_count), Vec::len)
    }
}

/// What is wrong with a `connection_shards` list, given the shard count when
/// it is known (`--shards`, or the data directory's once it is open): the
/// server must accept connections somewhere, and a number naming no shard is
/// a typo that would otherwise leave that intent silently unmet.
pub fn connection_shards_problem(list: &[u16], shards: Option<u16>) -> Option<String> {
    if list.is_empty() {
        return Some("the list is empty: no shard would accept a connection".into());
    }
    let mut seen = list.to_vec();
    seen.sort_unstable();
    if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
        return Some(format!("shard {} is named twice", w[0]));
    }
    let limit = shards.map_or(crate::core::limits::SHARDS_MAX, usize::from);
    let beyond: Vec<u16> = list
        .iter()
        .copied()
        .filter(|&s| usize::from(s) >= limit)
        .collect();
    if beyond.is_empty() {
        return None;
    }
    Some(match shards {
        Some(n) => format!(
            "shard(s) {beyond:?} do not exist (shard count {n}: shards 0 to {})",
            n.saturating_sub(1)
        ),
        None => format!("shard(s) {beyond:?} are beyond the largest shard count"),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot resolve listen address {addr:?}: {detail}")]
    BadAddress { addr: String, detail: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

impl NetError {
    pub fn name(&self) -> &'static str {
        match self {
            NetError::BadAddress { .. } => "LISTEN_ADDRESS_INVALID",
            NetError::Listen { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
                "ADDRESS_IN_USE"
            }
            NetError::Listen { .. } => "LISTEN_FAILED",
        }
    }

    pub fn fix(&self) -> &'static str {
        match self.name() {
            "ADDRESS_IN_USE" => "another process listens there (find it with `ss -ltnp`); stop it, or choose another port with the flag named above (--listen for the protocol, --resp-listen for the Redis protocol, --admin-listen for the admin endpoint)",
            "LISTEN_ADDRESS_INVALID" => "pass --listen HOST:PORT, e.g. 127.0.0.1:7070",
            _ => "check the address belongs to this machine and that the port is allowed (ports < 1024 need privileges)",
        }
    }
}

/// How long a start waits for a port held by listening sockets that are on
/// their way out. A process killed with SIGKILL releases its io_uring (and so
/// the listening sockets it holds) asynchronously, some milliseconds after it
/// died: a restart right after kill -9 would otherwise fail with
/// ADDRESS_IN_USE (seen: 3 of 6 immediate restarts). A real listener is still
/// there after the window and refused as before.
pub const BIND_RETRY_WINDOW: Duration = Duration::from_secs(2);

/// Bind with `bind`, retrying on EADDRINUSE for [`BIND_RETRY_WINDOW`] (one log
/// line while it waits).
pub fn bind_retrying<T>(
    addr: &str,
    mut bind: impl FnMut() -> std::io::Result<T>,
) -> Result<T, NetError> {
    let deadline = std::time::Instant::now() + BIND_RETRY_WINDOW;
    let mut said = false;
    loop {
        match bind() {
            Ok(l) => return Ok(l),
            Err(source)
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                if !said {
                    tracing::info!(
                        addr,
                        "address in use; waiting up to {} ms for a previous process's sockets to close",
                        BIND_RETRY_WINDOW.as_millis()
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(NetError::Listen {
                    addr: addr.into(),
                    source,
                })
            }
        }
    }
}

/// Resolve `addr` and make sure nobody else listens there.
///
/// The shards bind with SO_REUSEPORT, which would silently share a port with
/// another process doing the same; a plain bind first detects that. Port 0 is
/// resolved to a concrete free port, which every shard then uses.
pub fn resolve_listen(addr: &str) -> Result<SocketAddr, NetError> {
    let resolved = addr
        .to_socket_addrs()
        .map_err(|e| NetError::BadAddress {
            addr: addr.into(),
            detail: e.to_string(),
        })?
        .next()
        .ok_or_else(|| NetError::BadAddress {
            addr: addr.into(),
            detail: "resolves to no address".into(),
        })?;
    let probe = bind_retrying(addr, || StdListener::bind(resolved))?;
    probe.local_addr().map_err(|source| NetError::Listen {
        addr: addr.into(),
        source,
    })
}

/// A listen address resolved to a concrete port and held until every shard
/// listens on it.
///
/// Port 0 is answered by the kernel from its ephemeral range, the same range
/// outgoing connections draw their local ports from. Resolving it with a probe
/// socket that is then closed left the port free during recovery (seconds):
/// any process's outgoing connection could take it meanwhile and every shard's
/// bind then failed with "Address already in use" (seen in CI). The
/// reservation is a bound, never-listening socket with SO_REUSEPORT and
/// SO_REUSEADDR: the shards' listeners (same flags, same user) bind beside it,
/// nobody else can, and it receives no connections. Drop it once the shards
/// listen.
pub struct ListenReservation {
    pub addr: SocketAddr,
    _socket: socket2::Socket,
}

/// [`resolve_listen`], then hold the port (see [`ListenReservation`]).
pub fn reserve_listen(addr: &str) -> Result<ListenReservation, NetError> {
    let resolved = resolve_listen(addr)?;
    let listen_err = |source| NetError::Listen {
        addr: addr.into(),
        source,
    };
    let socket = bind_retrying(addr, || reusable_socket(resolved))?;
    let bound = socket
        .local_addr()
        .map_err(listen_err)?
        .as_socket()
        .ok_or_else(|| listen_err(std::io::Error::other("not an inet address")))?;
    Ok(ListenReservation {
        addr: bound,
        _socket: socket,
    })
}

/// A socket bound to `addr` with SO_REUSEADDR and SO_REUSEPORT, not
/// listening: the reservation as it is, a shard's listener once it listens.
fn reusable_socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sk = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_address(true)?;
    sk.set_reuse_port(true)?;
    sk.bind(&addr.into())?;
    Ok(sk)
}

/// This shard's listener: SO_REUSEPORT (every shard listens on the address and
/// the kernel spreads connections) and SO_REUSEADDR. The latter is inherited
/// by accepted sockets and so by their TIME_WAIT remains after a crash; without
/// it those remains make the plain-bind probe of a restart on the same port
/// fail with ADDRESS_IN_USE for a minute (glommio's own `bind` sets only
/// SO_REUSEPORT).
fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::unix::io::{FromRawFd, IntoRawFd};
    let sk = bind_listener_socket(addr)?;
    // SAFETY: a bound, listening TCP socket whose ownership moves to glommio.
    Ok(unsafe { TcpListener::from_raw_fd(sk.into_raw_fd()) })
}

fn bind_listener_socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let sk = reusable_socket(addr)?;
    sk.listen(1024)?;
    Ok(sk)
}

/// A refused native client's one response before the close.
fn native_refusal(refused: Refusal) -> Vec<u8> {
    let body: &'static [u8] = match refused {
        Refusal::ConnectionsPerSource => {
            b"connection limit reached for this source address (connections_per_source_max)"
        }
        _ => b"connection limit reached",
    };
    let mut out = Vec::new();
    encode_response(&mut out, 0, 0, Status::TooManyConnections, body);
    out
}

/// Run the server on one shard until the engine stops: stop accepting, let every
/// connection finish its current batch, return.
pub async fn serve_shard(
    ctx: ShardContext,
    cfg: Arc<ServerConfig>,
    listening: Arc<AtomicUsize>,
) -> Result<(), String> {
    if !cfg.accepts_on(ctx.shard().0, ctx.shard_count())? {
        // No listener: this shard's CPU is left to forwarded requests and to
        // whatever else runs there. It counts as ready like the others.
        listening.fetch_add(1, Ordering::SeqCst);
        ctx.shutdown.wait().await;
        return Ok(());
    }
    let listener = bind_listener(cfg.listen).map_err(|e| format!("bind {}: {e}", cfg.listen))?;
    let resp_listener = match cfg.resp_listen {
        Some(addr) => Some(bind_listener(addr).map_err(|e| format!("bind RESP {addr}: {e}"))?),
        None => None,
    };
    listening.fetch_add(1, Ordering::SeqCst);
    let conn_cfg = Rc::new(ConnConfig {
        limits: Limits::new(cfg.value_bytes_max),
        frame_timeout: cfg.frame_timeout,
        idle_timeout: (!cfg.idle_timeout.is_zero()).then_some(cfg.idle_timeout),
        slow_op_nanos: cfg.slow_op.as_nanos() as u64,
        hello: HelloInfo {
            protocol_version: u16::from(PROTOCOL_VERSION),
            shard_count: ctx.shard_count(),
            key_bytes_max: KEY_BYTES_MAX as u32,
            value_bytes_max: cfg.value_bytes_max as u32,
            server_version: env!("CARGO_PKG_VERSION").into(),
            shard: ctx.shard().0,
        },
        reply_buffer_bytes: cfg.reply_buffer_bytes,
        reply_bytes_max: cfg.reply_bytes_max,
        reply_stall: cfg.reply_stall_timeout,
        buffers: BufferBudget::new(cfg.conn_buffer_budget),
        auth: cfg
            .users
            .clone()
            .map(|users| super::auth::ShardAuth::new(users, cfg.refusals.clone())),
        telemetry: cfg.telemetry.clone(),
    });
    let shared = Listening {
        ctx: ctx.clone(),
        cfg: conn_cfg,
        gate: Gate {
            connections_per_shard_max: cfg.connections_per_shard_max,
            sources: cfg.connections_per_source.clone(),
            refusals: cfg.refusals.clone(),
        },
        open: Rc::new(Cell::new(0usize)),
        closed: Rc::new(WaitQueue::default()),
        tls: cfg.tls.clone(),
    };
    let (open, closed) = (shared.open.clone(), shared.closed.clone());
    // The RESP listener shares this shard's connection count and limit.
    let resp = resp_listener.map(|l| {
        let maxclients = cfg.connections_per_shard_max * cfg.accepting_shards(ctx.shard_count());
        glommio::spawn_local(super::resp::connection::serve_listener(
            l,
            shared.clone(),
            maxclients,
        ))
    });
    accept_until_shutdown(
        listener,
        shared,
        Protocol {
            name: "native",
            refusal: native_refusal,
            serve: |mut stream: NetStream, ctx: ShardContext, cfg: Rc<ConnConfig>| async move {
                serve_connection(&mut stream, &ctx, &cfg).await;
                stream
            },
        },
    )
    .await;
    if let Some(resp) = resp {
        resp.await;
    }
    closed.until(|| (open.get() == 0).then_some(())).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reservation keeps port 0's answer from anyone else (a plain bind,
    /// as an outgoing connection's port would be, fails) while the shards'
    /// SO_REUSEPORT listeners still bind beside it; dropped, the port is free.
    #[test]
    fn a_reserved_port_admits_the_shards_and_no_one_else() {
        let reservation = reserve_listen("127.0.0.1:0").expect("reserve");
        let addr = reservation.addr;
        assert_ne!(addr.port(), 0);
        // A socket with no reuse flags, as an outgoing connection's local
        // port is (connect's port choice also skips any explicitly bound port).
        let plain = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let taken = plain.bind(&addr.into());
        assert!(taken.is_err(), "someone else bound the reserved {addr}");
        let first = bind_listener_socket(addr).expect("shard 0 binds beside it");
        let second = bind_listener_socket(addr).expect("shard 1 binds beside it");
        drop((reservation, first, second));
        StdListener::bind(addr).expect("free once dropped");
    }
}
