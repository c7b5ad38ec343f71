//! The admin HTTP endpoint: `GET /health` (JSON) and `GET /metrics` (Prometheus
//! text format), on its own OS thread, unpinned from the shards' cores.
//! With users configured, every path but /health (unless
//! `health_requires_auth`) needs HTTP basic auth as an admin user
//! (`net::auth::AdminAuth`). With the server's TLS configured
//! (`tls_cert_file`), it speaks only HTTPS, with the same certificate,
//! client CAs and reload as the other listeners.
//!
//! It reads only the telemetry snapshots the shards publish (see
//! `shard::runtime::telemetry`), so a slow or hostile scraper can never stall a shard. It
//! must never touch live shard state or take part in request handling.
//!
//! Plaintext HTTP is served by tiny_http. HTTPS is not: tiny_http's TLS
//! support is built on an older rustls with no client-certificate check and
//! no reload, so the HTTPS side terminates TLS with the server's own rustls
//! configuration and reads the one GET request a connection carries with a
//! bounded reader (`https`). Both sides route through [`answer`], so a path,
//! its authentication and its body are decided in one place.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::shard::metrics::OpClass;
use crate::shard::runtime::telemetry::{Health, Telemetry, TelemetryView};

use super::admission::{Refusal, Refusals};
use super::auth::{AdminAuth, AdminRefusal};
use super::server::NetError;
use super::tls::TlsHandle;

/// A running admin endpoint; stops when the flag is set.
pub struct AdminServer {
    pub addr: SocketAddr,
    thread: std::thread::JoinHandle<()>,
}

/// HTTPS: the endpoint's TLS configuration and how long a connection may
/// take to complete its handshake and send its request (the server's
/// `frame_timeout`).
pub struct AdminTls {
    pub handle: Arc<TlsHandle>,
    pub deadline: Duration,
}

impl AdminServer {
    /// Bind `addr` and serve from a new thread until `stop` is set; HTTPS
    /// only when `tls` is set.
    pub fn start(
        addr: &str,
        telemetry: Arc<Telemetry>,
        stop: Arc<AtomicBool>,
        auth: AdminAuth,
        refusals: Arc<Refusals>,
        tls: Option<AdminTls>,
    ) -> Result<AdminServer, NetError> {
        let auth = Arc::new(Mutex::new(auth));
        let (bound, run): (SocketAddr, Box<dyn FnOnce() + Send>) = match tls {
            None => {
                // Like the protocol port: wait out the sockets of a process
                // killed a moment ago (see `server::BIND_RETRY_WINDOW`).
                let server = super::server::bind_retrying(addr, || {
                    tiny_http::Server::http(addr).map_err(|e| {
                        std::io::Error::new(
                            if e.to_string().contains("in use") {
                                std::io::ErrorKind::AddrInUse
                            } else {
                                std::io::ErrorKind::Other
                            },
                            format!("admin endpoint (--admin-listen): {e}"),
                        )
                    })
                })?;
                let bound = server
                    .server_addr()
                    .to_ip()
                    .ok_or_else(|| NetError::BadAddress {
                        addr: addr.into(),
                        detail: "not an IP address".into(),
                    })?;
                (
                    bound,
                    Box::new(move || serve(server, telemetry, stop, auth, refusals)),
                )
            }
            Some(tls) => {
                let listen_err = |source| NetError::Listen {
                    addr: addr.into(),
                    source,
                };
                let listener = super::server::bind_retrying(addr, || StdListener::bind(addr))?;
                // Non-blocking, so the loop notices `stop` between accepts.
                listener.set_nonblocking(true).map_err(listen_err)?;
                let bound = listener.local_addr().map_err(listen_err)?;
                (
                    bound,
                    Box::new(move || https::serve(listener, tls, telemetry, stop, auth, refusals)),
                )
            }
        };
        let thread = std::thread::Builder::new()
            .name("corekv-admin".into())
            .spawn(run)
            .map_err(|source| NetError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        Ok(AdminServer {
            addr: bound,
            thread,
        })
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// What the endpoint answers one request with.
struct Answer {
    code: u16,
    content_type: &'static str,
    body: String,
    /// 401: add the basic-auth challenge.
    challenge: bool,
}

/// The one routing decision for both HTTP and HTTPS: authenticate, then
/// /health, /metrics or 404.
fn answer(
    is_get: bool,
    path: &str,
    authorization: Option<&str>,
    peer: Option<IpAddr>,
    telemetry: &Telemetry,
    auth: &Mutex<AdminAuth>,
    refusals: &Refusals,
) -> Answer {
    // A poisoned lock still holds a usable gate (its throttle table).
    let admitted = match auth.lock() {
        Ok(mut a) => a.admit(path, authorization, peer),
        Err(poisoned) => poisoned.into_inner().admit(path, authorization, peer),
    };
    if let Err(refusal) = admitted {
        // `admit` logged it (one line per request: each admin thread serves
        // one request at a time, so that is its own rate limit).
        refusals.count(match refusal {
            AdminRefusal::Unauthorized => Refusal::AdminUnauthorized,
            AdminRefusal::Forbidden => Refusal::AdminForbidden,
            AdminRefusal::Throttled => Refusal::AdminThrottled,
        });
        let (code, body) = match refusal {
            AdminRefusal::Unauthorized => (
                401,
                "authentication required: HTTP basic auth as a user with the admin role\n",
            ),
            AdminRefusal::Forbidden => (403, "this user's role is not admin\n"),
            AdminRefusal::Throttled => (
                429,
                "too many failed authentications from this address; retry later\n",
            ),
        };
        return Answer {
            code,
            content_type: "text/plain",
            body: body.into(),
            challenge: code == 401,
        };
    }
    let (code, content_type, body) = match (is_get, path) {
        (true, "/health") => {
            let (code, body) = health(&telemetry.view());
            (code, "application/json", body)
        }
        (true, "/metrics") => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics(&telemetry.view(), refusals),
        ),
        _ => (
            404,
            "text/plain",
            "not found: try /health or /metrics\n".to_string(),
        ),
    };
    Answer {
        code,
        content_type,
        body,
        challenge: false,
    }
}

const CHALLENGE: &str = "Basic realm=\"corekv\", charset=\"UTF-8\"";

fn serve(
    server: tiny_http::Server,
    telemetry: Arc<Telemetry>,
    stop: Arc<AtomicBool>,
    auth: Arc<Mutex<AdminAuth>>,
    refusals: Arc<Refusals>,
) {
    while !stop.load(Ordering::SeqCst) {
        let request = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("admin endpoint: accept failed: {e}");
                continue;
            }
        };
        let path = request.url().split('?').next().unwrap_or("").to_string();
        let authorization = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .map(|h| h.value.as_str().to_string());
        let peer = request.remote_addr().map(|a| a.ip());
        let a = answer(
            *request.method() == tiny_http::Method::Get,
            &path,
            authorization.as_deref(),
            peer,
            &telemetry,
            &auth,
            &refusals,
        );
        let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], a.content_type.as_bytes())
            .expect("static header is valid");
        let mut response = tiny_http::Response::from_string(a.body)
            .with_status_code(a.code)
            .with_header(header);
        if a.challenge {
            response = response.with_header(
                tiny_http::Header::from_bytes(&b"WWW-Authenticate"[..], CHALLENGE.as_bytes())
                    .expect("static header is valid"),
            );
        }
        if let Err(e) = request.respond(response) {
            tracing::debug!("admin endpoint: response failed: {e}");
        }
    }
}

/// The HTTPS side: one thread per connection (at most
/// [`https::CONNECTIONS_MAX`] at once), one request per connection.
mod https {
    use super::*;

    /// HTTPS connections served at once; more are closed at accept. A
    /// scraper and a load balancer need one or two; the cap keeps silent
    /// clients from costing a thread each without bound.
    pub const CONNECTIONS_MAX: usize = 16;
    /// The longest request head (request line and headers) read.
    const HEAD_BYTES_MAX: usize = 16 * 1024;

    pub fn serve(
        listener: StdListener,
        tls: AdminTls,
        telemetry: Arc<Telemetry>,
        stop: Arc<AtomicBool>,
        auth: Arc<Mutex<AdminAuth>>,
        refusals: Arc<Refusals>,
    ) {
        let busy = Arc::new(AtomicUsize::new(0));
        while !stop.load(Ordering::SeqCst) {
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    wait_readable(&listener, 100);
                    continue;
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("admin endpoint: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            if busy.load(Ordering::SeqCst) >= CONNECTIONS_MAX {
                tracing::debug!(
                    "admin endpoint: {CONNECTIONS_MAX} HTTPS connections busy; closing one more"
                );
                continue;
            }
            busy.fetch_add(1, Ordering::SeqCst);
            // The configuration current at accept (a reload applies to the
            // connections accepted after it).
            let config = tls.handle.current();
            let deadline = Instant::now() + tls.deadline;
            let (telemetry, auth, refusals, busy2) = (
                telemetry.clone(),
                auth.clone(),
                refusals.clone(),
                busy.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name("corekv-admin-tls".into())
                .spawn(move || {
                    if let Err(e) =
                        connection(stream, config, deadline, &telemetry, &auth, &refusals)
                    {
                        tracing::debug!("admin endpoint (HTTPS): connection closed: {e}");
                    }
                    busy2.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                busy.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("admin endpoint: cannot start a connection thread: {e}");
            }
        }
    }

    /// Up to `ms` for a connection to wait at `listener` (poll(2)), so the
    /// loop neither spins nor misses `stop` for long.
    fn wait_readable(listener: &StdListener, ms: i32) {
        use std::os::unix::io::AsRawFd;
        let mut fds = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut fds, 1, ms) };
    }

    /// The time left before `deadline` as a socket timeout (never zero,
    /// which would mean "no timeout").
    fn left(deadline: Instant) -> std::io::Result<Duration> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "handshake and request not done within frame_timeout",
            ));
        }
        Ok(left)
    }

    /// Handshake, read one request head, answer it, close with close_notify.
    /// The handshake and the request together must arrive before `deadline`:
    /// a silent client or a plaintext one is closed, never waited on.
    fn connection(
        tcp: TcpStream,
        config: Arc<rustls::ServerConfig>,
        deadline: Instant,
        telemetry: &Telemetry,
        auth: &Mutex<AdminAuth>,
        refusals: &Refusals,
    ) -> std::io::Result<()> {
        tcp.set_nonblocking(false)?;
        let peer = tcp.peer_addr().ok().map(|a| a.ip());
        let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.sock.set_read_timeout(Some(left(deadline)?))?;
            tls.sock.set_write_timeout(Some(left(deadline)?))?;
            tls.conn.complete_io(&mut tls.sock)?;
        }
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        let end = loop {
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if head.len() > HEAD_BYTES_MAX {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "request head too long",
                ));
            }
            tls.sock.set_read_timeout(Some(left(deadline)?))?;
            let n = tls.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&chunk[..n]);
        };
        let a = match parse_head(&head[..end]) {
            Some((is_get, path, authorization)) => answer(
                is_get,
                &path,
                authorization.as_deref(),
                peer,
                telemetry,
                auth,
                refusals,
            ),
            None => Answer {
                code: 400,
                content_type: "text/plain",
                body: "bad request\n".into(),
                challenge: false,
            },
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            a.code,
            reason(a.code),
            a.content_type,
            a.body.len()
        );
        if a.challenge {
            out.push_str(&format!("WWW-Authenticate: {CHALLENGE}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&a.body);
        tls.sock
            .set_write_timeout(Some(left(deadline)?.max(Duration::from_secs(5))))?;
        tls.write_all(out.as_bytes())?;
        // An orderly end: the client can tell it from a truncation.
        tls.conn.send_close_notify();
        tls.flush()?;
        let _ = tls.sock.shutdown(std::net::Shutdown::Write);
        Ok(())
    }

    /// (is GET, path without the query, Authorization value) of a request
    /// head; `None` when the request line is malformed.
    pub(super) fn parse_head(head: &[u8]) -> Option<(bool, String, Option<String>)> {
        let text = std::str::from_utf8(head).ok()?;
        let mut lines = text.split("\r\n");
        let mut request = lines.next()?.split(' ');
        let (method, target, version) = (request.next()?, request.next()?, request.next()?);
        if !version.starts_with("HTTP/1.") || request.next().is_some() {
            return None;
        }
        let path = target.split('?').next().unwrap_or("").to_string();
        let authorization = lines.find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("authorization")
                .then(|| value.trim().to_string())
        });
        Some((method == "GET", path, authorization))
    }

    fn reason(code: u16) -> &'static str {
        match code {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            429 => "Too Many Requests",
            503 => "Service Unavailable",
            _ => "",
        }
    }
}

/// Overall status: `serving` when every shard serves; `degraded` when some shard
/// is read-only; `failed` when a shard stopped; `starting` during recovery.
/// HTTP 200 only for `serving`.
pub fn health(view: &TelemetryView) -> (u16, String) {
    let status = view.status();
    let shards: Vec<_> = view
        .shards
        .iter()
        .map(|s| {
            serde_json::json!({
                "shard": s.shard,
                "cpu": s.cpu,
                "status": s.health.name(),
                "reason": match &s.health { Health::ReadOnly { reason } => Some(reason.as_str()), _ => None },
                "durable_lsn": s.durable_lsn,
                "memtable_entries": s.storage.memtable_entries,
                "tables": s.storage.l0_tables + s.storage.l1_tables,
                "connections": s.connections_open,
            })
        })
        .collect();
    let body = serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": view.uptime.as_secs_f64(),
        "data_dir": view.data_dir.as_ref().map(|p| p.display().to_string()),
        "durability": view.durability.map(|d| d.name()),
        "shard_count": view.shards.len(),
        "shards": shards,
    });
    let code = if status == "serving" { 200 } else { 503 };
    (code, format!("{body:#}\n"))
}

/// The Prometheus exposition of every shard's snapshot plus process memory
/// and the process-wide refusal counters.
pub fn metrics(view: &TelemetryView, refusals: &Refusals) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(
        view.clone(),
        refusals.snapshot(),
    )));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!("metrics encoding failed: {e}");
    }
    out
}

/// Exposes a telemetry view and the refusal counts (reason, count) through
/// prometheus-client's encoder.
#[derive(Debug)]
struct SnapshotCollector(TelemetryView, Vec<(&'static str, u64)>);

/// A value already computed: counters and gauges read from a snapshot.
struct Fixed {
    kind: MetricType,
    value: f64,
}

impl EncodeMetric for Fixed {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self.kind {
            MetricType::Counter => encoder.encode_counter::<(), _, f64>(&self.value, None),
            _ => encoder.encode_gauge(&self.value),
        }
    }
    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// A histogram from an HdrHistogram of nanoseconds, in seconds.
struct HdrSeconds<'a>(&'a hdrhistogram::Histogram<u64>);

/// Bucket bounds in seconds: 10 µs .. 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0, 10.0,
];

impl EncodeMetric for HdrSeconds<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = self.0;
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        let mut below_prev = 0u64;
        for bound in LATENCY_BUCKETS {
            let nanos = (bound * 1e9) as u64;
            let below: u64 = h
                .iter_recorded()
                .filter(|v| v.value_iterated_to() <= nanos)
                .map(|v| v.count_at_value())
                .sum();
            buckets.push((bound, below - below_prev));
            below_prev = below;
        }
        // prometheus-client renders an upper bound of f64::MAX as le="+Inf".
        buckets.push((f64::MAX, h.len() - below_prev));
        let sum = h.mean() * h.len() as f64 / 1e9;
        encoder.encode_histogram::<()>(sum, h.len(), &buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A metric read from each shard's snapshot: one value per shard.
type Pick = fn(&crate::shard::runtime::telemetry::ShardSnapshot) -> f64;

/// Every per-shard metric with one value per shard, in the order /metrics
/// lists them (docs/monitoring.md names each; tests/alerts.rs checks it).
/// Requests, errors and the histograms have more labels and are written
/// by `SnapshotCollector::encode` itself.
const PER_SHARD: &[(&str, &str, MetricType, Pick)] = &[
    (
        "corekv_shard_serving",
        "1 when the shard serves reads and writes; 0 when starting, read-only or stopped.",
        MetricType::Gauge,
        |s| f64::from(u8::from(matches!(s.health, Health::Serving))),
    ),
    (
        "corekv_shard_read_only",
        "1 when the shard's WAL failed and it refuses writes.",
        MetricType::Gauge,
        |s| f64::from(u8::from(matches!(s.health, Health::ReadOnly { .. }))),
    ),
    (
        "corekv_connections_open",
        "Open client connections.",
        MetricType::Gauge,
        |s| s.connections_open as f64,
    ),
    (
        "corekv_connections_accepted",
        "Client connections accepted.",
        MetricType::Counter,
        |s| s.connections_total as f64,
    ),
    (
        "corekv_connections_rejected",
        "Connections refused with TOO_MANY_CONNECTIONS, by this shard (either limit: corekv_refusals_total says which).",
        MetricType::Counter,
        |s| s.connections_rejected as f64,
    ),
    (
        "corekv_conn_buffer_bytes",
        "Bytes of connection buffers held: partial input frames past each connection's base buffer, plus replies being sent (bounded by --conn-buffer-budget-bytes).",
        MetricType::Gauge,
        |s| s.conn_buffer_bytes as f64,
    ),
    (
        "corekv_connections_paused",
        "Times a connection was not read because the shard's connection buffer budget was spent.",
        MetricType::Counter,
        |s| s.connections_paused as f64,
    ),
    (
        "corekv_connections_closed_by_limit",
        "Connections closed because their replies stayed unread past --reply-stall-timeout-ms.",
        MetricType::Counter,
        |s| s.connections_closed_by_limit as f64,
    ),
    (
        "corekv_protocol_errors",
        "Connections closed for a protocol error.",
        MetricType::Counter,
        |s| s.protocol_errors as f64,
    ),
    (
        "corekv_forwarded_batches_out",
        "Operation batches sent to other shards.",
        MetricType::Counter,
        |s| s.forwarded_batches_out as f64,
    ),
    (
        "corekv_forwarded_batches_in",
        "Operation batches executed for other shards.",
        MetricType::Counter,
        |s| s.forwarded_batches_in as f64,
    ),
    (
        "corekv_wal_syncs",
        "WAL group commits (one write + one fdatasync each).",
        MetricType::Counter,
        |s| s.wal_batches as f64,
    ),
    (
        "corekv_wal_records",
        "WAL records made durable.",
        MetricType::Counter,
        |s| s.wal_records as f64,
    ),
    (
        "corekv_wal_bytes",
        "WAL bytes written.",
        MetricType::Counter,
        |s| s.wal_bytes as f64,
    ),
    (
        "corekv_wal_largest_group_records",
        "Most records in one group commit.",
        MetricType::Gauge,
        |s| s.wal_largest_batch_records as f64,
    ),
    (
        "corekv_runtime_parks",
        "Times the shard's executor went to sleep in the kernel (each costs a wake-up later).",
        MetricType::Counter,
        |s| s.runtime_parks as f64,
    ),
    (
        "corekv_runtime_spin_seconds",
        "Seconds the shard's executor polled for work before sleeping (spin_before_park_us / park_policy).",
        MetricType::Counter,
        |s| s.runtime_spin_seconds,
    ),
    (
        "corekv_runtime_busy_seconds",
        "Seconds the shard's executor ran tasks (not spinning, not sleeping).",
        MetricType::Counter,
        |s| s.runtime_busy_seconds,
    ),
    (
        "corekv_durable_lsn",
        "Last durable log sequence number.",
        MetricType::Gauge,
        |s| s.durable_lsn as f64,
    ),

            (
                "corekv_memtable_entries",
                "Entries in the active memtable.",
                MetricType::Gauge,
                |s| s.storage.memtable_entries as f64,
            ),
            (
                "corekv_memtable_bytes",
                "Bytes in the active memtable.",
                MetricType::Gauge,
                |s| s.storage.memtable_bytes as f64,
            ),
            (
                "corekv_memtable_frozen_bytes",
                "Bytes in the memtable being flushed.",
                MetricType::Gauge,
                |s| s.storage.frozen_bytes as f64,
            ),
            ("corekv_l0_tables", "Tables in level 0.", MetricType::Gauge, |s| {
                s.storage.l0_tables as f64
            }),
            ("corekv_l1_tables", "Tables in level 1.", MetricType::Gauge, |s| {
                s.storage.l1_tables as f64
            }),
            ("corekv_l0_bytes", "Bytes of level-0 tables.", MetricType::Gauge, |s| {
                s.storage.l0_bytes as f64
            }),
            ("corekv_l1_bytes", "Bytes of level-1 tables.", MetricType::Gauge, |s| {
                s.storage.l1_bytes as f64
            }),
            (
                "corekv_compaction_debt_bytes",
                "Bytes of level-0 tables waiting to be compacted into level 1.",
                MetricType::Gauge,
                |s| s.storage.l0_bytes as f64,
            ),
            (
                "corekv_table_pinned_bytes",
                "Memory held by table indexes (with their block fences) and bloom filters.",
                MetricType::Gauge,
                |s| s.storage.pinned_bytes as f64,
            ),
            (
                "corekv_cache_capacity_bytes",
                "Block cache budget of the shard.",
                MetricType::Gauge,
                |s| s.storage.cache_capacity_bytes as f64,
            ),
            (
                "corekv_cache_resident_bytes",
                "Bytes of blocks in the cache.",
                MetricType::Gauge,
                |s| s.storage.cache.resident_bytes as f64,
            ),
            ("corekv_cache_hits", "Block cache hits.", MetricType::Counter, |s| {
                s.storage.cache.hits as f64
            }),
            (
                "corekv_cache_misses",
                "Block cache misses (block reads).",
                MetricType::Counter,
                |s| s.storage.cache.misses as f64,
            ),
            (
                "corekv_cache_prefetch_used",
                "First uses of blocks read ahead by scans (their reads counted as misses).",
                MetricType::Counter,
                |s| s.storage.cache.prefetch_used as f64,
            ),
            (
                "corekv_expired_keys_lazy",
                "Expired keys deleted by the sweeper after a read met them (docs/expiry.md).",
                MetricType::Counter,
                |s| s.storage.expired_lazy as f64,
            ),
            (
                "corekv_expired_keys_sweeper",
                "Expired keys the sweeper's walk found and deleted.",
                MetricType::Counter,
                |s| s.storage.expired_sweeper as f64,
            ),
            (
                "corekv_expired_keys_compaction",
                "Expired values dropped by compactions.",
                MetricType::Counter,
                |s| s.storage.expired_compaction as f64,
            ),
            (
                "corekv_block_read_requests",
                "Device read requests for table blocks; a scan reads neighbouring missing blocks with one.",
                MetricType::Counter,
                |s| s.storage.block_read_requests as f64,
            ),
            (
                "corekv_cache_coalesced",
                "Misses that waited for another request's read of the same block.",
                MetricType::Counter,
                |s| s.storage.cache.coalesced as f64,
            ),
            (
                "corekv_cache_evictions",
                "Blocks evicted from the cache.",
                MetricType::Counter,
                |s| s.storage.cache.evictions as f64,
            ),
            ("corekv_flushes", "Memtables flushed to tables.", MetricType::Counter, |s| {
                s.storage.flushes as f64
            }),
            ("corekv_flush_bytes", "Bytes written by flushes.", MetricType::Counter, |s| {
                s.storage.flush_bytes as f64
            }),
            ("corekv_compactions", "Compactions completed.", MetricType::Counter, |s| {
                s.storage.compactions as f64
            }),
            (
                "corekv_compaction_read_bytes",
                "Table bytes read by compactions.",
                MetricType::Counter,
                |s| s.storage.compaction_read_bytes as f64,
            ),
            (
                "corekv_compaction_write_bytes",
                "Table bytes written by compactions.",
                MetricType::Counter,
                |s| s.storage.compaction_write_bytes as f64,
            ),
            (
                "corekv_write_stalls",
                "Writes refused with OVERLOADED because the memtables were full.",
                MetricType::Counter,
                |s| s.storage.write_stalls as f64,
            ),
            (
                "corekv_flush_waits",
                "Flushes that waited for compaction because level 0 was full.",
                MetricType::Counter,
                |s| s.storage.flush_waits as f64,
            ),
            (
                "corekv_wal_segments_recycled",
                "WAL segments deleted because tables cover them.",
                MetricType::Counter,
                |s| s.storage.wal_segments_recycled as f64,
            ),
    (
        "corekv_pending_writes",
        "Writes waiting for their fdatasync.",
        MetricType::Gauge,
        |s| s.pending_writes as f64,
    ),
    (
        "corekv_txn_locks_held",
        "Keys locked by transactions and snapshot MGETs right now (a steady non-zero value \
             with no load: an in-doubt transaction, see TXN_IN_DOUBT).",
        MetricType::Gauge,
        |s| s.txn_locks_held as f64,
    ),
    (
        "corekv_txn_prepared",
        "Transactions prepared on this shard, waiting for their coordinator's decision.",
        MetricType::Gauge,
        |s| s.txn_prepared as f64,
    ),
];

impl prometheus_client::collector::Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shards = &self.0.shards;
        let shard_label = |s: u16| vec![("shard".to_string(), s.to_string())];
        let mut family =
            |name: &str, help: &str, kind: MetricType, rows: Vec<(Vec<(String, String)>, f64)>| {
                let mut m = encoder.encode_descriptor(name, help, None, kind)?;
                for (labels, value) in rows {
                    if labels.is_empty() {
                        // A process-wide value: no `{}` after the name.
                        return Fixed { kind, value }.encode(m);
                    }
                    Fixed { kind, value }.encode(m.encode_family(&labels)?)?;
                }
                Ok::<(), std::fmt::Error>(())
            };
        let per_shard = |f: &dyn Fn(&crate::shard::runtime::telemetry::ShardSnapshot) -> f64| {
            shards
                .iter()
                .map(|s| (shard_label(s.shard), f(s)))
                .collect::<Vec<_>>()
        };
        let mut requests = Vec::new();
        for s in shards {
            for op in OpClass::ALL {
                let mut l = shard_label(s.shard);
                l.push(("op".into(), op.name().into()));
                requests.push((l, s.requests[op as usize] as f64));
            }
        }
        family(
            "corekv_requests",
            "Requests answered, by op, on the shard that owns the connection.",
            MetricType::Counter,
            requests,
        )?;
        let mut errors = Vec::new();
        for s in shards {
            for (status, n) in &s.errors {
                let mut l = shard_label(s.shard);
                l.push(("error".into(), status.name().into()));
                let class = if status.is_client_outcome() {
                    "client"
                } else {
                    "server"
                };
                l.push(("class".into(), class.into()));
                errors.push((l, *n as f64));
            }
        }
        family(
            "corekv_errors",
            "Non-OK responses, by error name (docs/errors.md) and class: client (an outcome of the request: NOT_FOUND, CONDITION_FAILED, bad requests, contention) or server.",
            MetricType::Counter,
            errors,
        )?;
        for &(name, help, kind, pick) in PER_SHARD {
            family(name, help, kind, per_shard(&pick))?;
        }
        family(
            "corekv_refusals",
            "Connections and authentications refused, by reason (process-wide): connections_per_source, connections_per_shard, auth_failed, auth_throttled (native and RESP AUTH), admin_unauthorized (401), admin_forbidden (403), admin_throttled (429).",
            MetricType::Counter,
            self.1
                .iter()
                .map(|(reason, n)| (vec![("reason".to_string(), reason.to_string())], *n as f64))
                .collect(),
        )?;
        family(
            "corekv_uptime_seconds",
            "Seconds since the process started.",
            MetricType::Gauge,
            vec![(vec![], self.0.uptime.as_secs_f64())],
        )?;
        family(
            "corekv_process_resident_memory_bytes",
            "Resident set size of the process.",
            MetricType::Gauge,
            vec![(vec![], process_rss_bytes() as f64)],
        )?;

        let mut m = encoder.encode_descriptor(
            "corekv_request_latency_seconds",
            "Request latency from parse to response, by op.",
            None,
            MetricType::Histogram,
        )?;
        for s in shards {
            for op in OpClass::ALL {
                let mut l = shard_label(s.shard);
                l.push(("op".into(), op.name().into()));
                HdrSeconds(&s.latency[op as usize]).encode(m.encode_family(&l)?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "corekv_wal_sync_latency_seconds",
            "Time of one WAL group commit: write + fdatasync.",
            None,
            MetricType::Histogram,
        )?;
        for s in shards {
            HdrSeconds(&s.wal_sync_latency).encode(m.encode_family(&shard_label(s.shard))?)?;
        }
        Ok(())
    }
}

/// Resident set size of this process, from /proc (0 where unavailable).
pub fn process_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::https::parse_head;

    #[test]
    fn a_request_head_yields_method_path_and_authorization() {
        let head = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nauthorization: Basic eDp5";
        assert_eq!(
            parse_head(head),
            Some((true, "/metrics".into(), Some("Basic eDp5".into())))
        );
        assert_eq!(
            parse_head(b"POST /health HTTP/1.0"),
            Some((false, "/health".into(), None))
        );
        // Not HTTP: refused, never routed.
        assert_eq!(parse_head(b"\x16\x03\x01 hello"), None);
        assert_eq!(parse_head(b"GET /health"), None);
    }
}
