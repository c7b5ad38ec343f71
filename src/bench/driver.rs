//! Drives the load: one pinned glommio executor per client core, many
//! connections per executor, a pipeline of requests per connection.
//!
//! Closed loop: a connection sends its next request as soon as a slot in its
//! pipeline frees up (maximum throughput). Open loop (`rate`): each connection
//! has a fixed schedule of intended send times; a request's latency is measured
//! from its *intended* time, so a stall is charged to every request it delayed
//! (coordinated omission corrected, as wrk2 does).
//!
//! Failures end the run: a connection that fails (the server closed it, sent
//! bytes that are not the protocol, or left a request unanswered for
//! `reply_timeout`) stops every connection and the run returns its error,
//! naming the first error reply the connection saw (the server usually
//! explains itself before it closes). Nothing waits forever on a reply.
//!
//! It owns client-side sockets and histograms. It must never share a histogram
//! or counter between cores on the per-request path.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::net::stream::ClientNetStream;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use crate::core::hash::shard_for_key;
use crate::net::codec::{encode_request, parse_frame, HelloInfo, Parsed, Request, Side};

use super::keygen::{companion_key, key_for};
use super::proto::{describe_error, encode, parse, BenchRequest, Protocol, Reply};
use super::workload::{OpType, ValueSize, Workload};

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub client_cores: Vec<usize>,
    pub connections: usize,
    pub pipeline: usize,
    pub workload: Workload,
    pub keys: u64,
    pub value_size: ValueSize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Open loop at this many ops/s in total; `None`: closed loop.
    pub rate: Option<f64>,
    pub seed: u64,
    pub progress: bool,
    /// How long an idle client executor spins before sleeping.
    pub spin: Duration,
    /// The server's shard count (HELLO), to place the second key of txn1/txn2.
    pub shards: u16,
    /// Connection i is served by shard i % shards and asks only for its keys.
    pub shard_aware: bool,
    /// A connection with requests in flight that hears nothing for this long
    /// fails the run (a server that stopped answering must not hang it).
    pub reply_timeout: Duration,
    /// Native protocol: AUTH as this user (and password) on every connection
    /// before anything else (a server with a users file refuses the rest).
    pub auth: Option<(String, Vec<u8>)>,
    /// Set: every connection speaks TLS (built once by `corekv bench` from
    /// `TlsOptions::rustls`, the Rust client's own configuration).
    pub tls: Option<BenchTls>,
}

/// The client side of TLS for a run: whom to trust (and the client
/// certificate), and the name the server's certificate must carry.
#[derive(Clone, Debug)]
pub struct BenchTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// The default of `BenchConfig::reply_timeout`: generous, since a loaded
/// server may stall for seconds (flush, compaction) and still be healthy.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What one connection sent, for routing checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnStats {
    pub conn: usize,
    /// The shard serving the connection (HELLO); `None` on RESP.
    pub shard: Option<u16>,
    /// Requests sent (load inserts and timed requests).
    pub requests: u64,
    /// Single-key requests whose key another shard owns: the server forwards
    /// each to its owner (the cross-core hop a shard-aware client avoids).
    /// Scans span every shard and are not counted.
    pub foreign: u64,
}

/// Connect; on the native protocol ask HELLO which shard serves the
/// connection, and with `want` reconnect until it is that shard (the kernel
/// spreads connections over the shards' listeners at random). Gives up after
/// `SHARD_CONNECT_ATTEMPTS`.
async fn connect(
    cfg: &BenchConfig,
    want: Option<u16>,
) -> Result<(ClientNetStream, Option<u16>), String> {
    for _ in 0..SHARD_CONNECT_ATTEMPTS {
        let tcp = TcpStream::connect(cfg.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", cfg.addr))?;
        let _ = tcp.set_nodelay(true);
        let mut stream = match &cfg.tls {
            None => ClientNetStream::Plain(tcp),
            Some(tls) => {
                let connector = futures_rustls::TlsConnector::from(tls.config.clone());
                let handshake =
                    async { Some(connector.connect(tls.server_name.clone(), tcp).await) };
                let s = future::or(handshake, async {
                    glommio::timer::sleep(cfg.reply_timeout).await;
                    None
                })
                .await
                .ok_or_else(|| format!("no TLS handshake within {:?}", cfg.reply_timeout))?
                .map_err(|e| format!("TLS_FAILED: handshake with {}: {e}", cfg.addr))?;
                ClientNetStream::Tls(Box::new(s))
            }
        };
        if cfg.protocol != Protocol::Native {
            return Ok((stream, None));
        }
        let mut frame = Vec::new();
        if let Some((user, password)) = &cfg.auth {
            encode_request(
                &mut frame,
                0,
                &Request::Auth {
                    user: user.as_bytes(),
                    password,
                },
            );
        }
        encode_request(&mut frame, 0, &Request::Hello);
        send(&mut stream, &frame)
            .await
            .map_err(|e| format!("send HELLO: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        let hello = loop {
            match parse_frame(&buf, Side::Client, 4096) {
                // The AUTH reply comes first; anything but OK ends the run.
                Parsed::Frame {
                    header, body, len, ..
                } if header.opcode == crate::net::codec::Opcode::Auth as u8 => {
                    let status = header.status.get();
                    if status != 0 {
                        return Err(format!(
                            "AUTH: {} {}",
                            crate::core::status::Status::from_code(status)
                                .map_or("?", |s| s.name()),
                            String::from_utf8_lossy(body)
                        ));
                    }
                    buf.drain(..len);
                    continue;
                }
                Parsed::Frame { body, .. } => break HelloInfo::decode(body),
                Parsed::Incomplete { .. } => {}
                Parsed::Bad { error, .. } => return Err(format!("HELLO: {}", error.detail)),
            }
            let n = future::or(async { Some(stream.read(&mut chunk).await) }, async {
                glommio::timer::sleep(cfg.reply_timeout).await;
                None
            })
            .await
            .ok_or_else(|| format!("no HELLO reply within {:?}", cfg.reply_timeout))?
            .map_err(|e| format!("receive HELLO: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection after HELLO".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let Some(want) = want else {
            // Only for counting cross-shard requests: a server whose HELLO
            // names no shard is served all the same.
            return Ok((stream, hello.map(|h| h.shard)));
        };
        let hello = hello.ok_or("malformed HELLO response")?;
        if hello.shard == want {
            return Ok((stream, Some(hello.shard)));
        }
    }
    Err(format!(
        "no connection to shard {want:?} after {SHARD_CONNECT_ATTEMPTS} attempts (--shard-aware needs every shard to accept connections: is the server's connection_shards set?)"
    ))
}

const SHARD_CONNECT_ATTEMPTS: usize = 200;

/// Draw ordinals until one's key lives on `shard` (bounded: a key elsewhere
/// after that many draws is used anyway, it is merely forwarded).
fn ordinal_on(
    shard: Option<u16>,
    shards: u16,
    key: &mut Vec<u8>,
    mut draw: impl FnMut() -> u64,
) -> u64 {
    let mut ordinal = draw();
    if let Some(shard) = shard {
        for _ in 0..64 {
            key_for(ordinal, key);
            if shard_for_key(key, shards).0 == shard {
                break;
            }
            ordinal = draw();
        }
    }
    ordinal
}

/// Latency histogram in nanoseconds: 1 ns .. 100 s, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds are valid")
}

/// What one executor (or the whole run, once merged) measured.
#[derive(Clone)]
pub struct Measured {
    pub hists: Vec<Histogram<u64>>,
    pub errors: Vec<u64>,
    /// Load inserts answered OVERLOADED and sent again (the load must leave
    /// every record in place, so they are not errors).
    pub resent: u64,
    /// Seconds of the measured window.
    pub seconds: f64,
    /// The first error reply, described (status name and detail).
    pub first_error: Option<String>,
    /// One entry per connection, in connection order once merged.
    pub connections: Vec<ConnStats>,
}

impl Measured {
    fn new() -> Measured {
        Measured {
            hists: OpType::ALL.iter().map(|_| new_hist()).collect(),
            errors: vec![0; OpType::ALL.len()],
            resent: 0,
            seconds: 0.0,
            first_error: None,
            connections: Vec::new(),
        }
    }

    pub fn merge(&mut self, other: &Measured) {
        for (a, b) in self.hists.iter_mut().zip(&other.hists) {
            let _ = a.add(b);
        }
        for (a, b) in self.errors.iter_mut().zip(&other.errors) {
            *a += b;
        }
        self.resent += other.resent;
        self.seconds = self.seconds.max(other.seconds);
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.connections.extend(other.connections.iter().cloned());
        self.connections.sort_by_key(|c| c.conn);
    }

    /// Requests that failed, over every op type.
    pub fn error_count(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// State shared by every client core: set once, read rarely.
struct Shared {
    stop: AtomicBool,
    /// Records inserted so far (D and E insert new ordinals past `keys`).
    inserted: AtomicU64,
    completed: Vec<AtomicU64>,
    /// The first connection failure; set together with `stop` and `abort`.
    failure: Mutex<Option<String>>,
    /// A connection failed: the others stop at once, without draining.
    abort: AtomicBool,
}

impl Shared {
    fn fail(&self, e: &str) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert_with(|| e.to_string());
        self.abort.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Run the timed phase (after `warmup`) and return the merged measurements.
pub fn run(cfg: &BenchConfig) -> Result<Measured, String> {
    drive(cfg, false)
}

/// Insert records `0..keys` (the load phase), as fast as the pipeline allows.
pub fn load(cfg: &BenchConfig) -> Result<Measured, String> {
    drive(cfg, true)
}

fn drive(cfg: &BenchConfig, loading: bool) -> Result<Measured, String> {
    if cfg.client_cores.is_empty() || cfg.connections == 0 || cfg.pipeline == 0 {
        return Err("need at least one client core, one connection and a pipeline of 1".into());
    }
    let cores = cfg.client_cores.len().min(cfg.connections);
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        inserted: AtomicU64::new(cfg.keys),
        completed: (0..cores).map(|_| AtomicU64::new(0)).collect(),
        failure: Mutex::new(None),
        abort: AtomicBool::new(false),
    });
    // Everyone starts measuring from the same instant, a little in the future.
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + if loading { Duration::ZERO } else { cfg.warmup };
    let mut handles = Vec::new();
    for (i, core) in cfg.client_cores.iter().take(cores).enumerate() {
        let conns: Vec<usize> = (0..cfg.connections).filter(|c| c % cores == i).collect();
        let (cfg, shared) = (cfg.clone(), shared.clone());
        let h = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(*core))
            .name(&format!("bench-{i}"))
            .spin_before_park(cfg.spin)
            .spawn(move || async move {
                let tasks: Vec<_> = conns
                    .into_iter()
                    .map(|c| {
                        let (cfg, shared) = (cfg.clone(), shared.clone());
                        glommio::spawn_local(async move {
                            let r =
                                connection(&cfg, &shared, i, c, start, measure_from, loading).await;
                            if let Err(e) = &r {
                                shared.fail(e);
                            }
                            r
                        })
                    })
                    .collect();
                let mut m = Measured::new();
                let mut first_error = None;
                for t in tasks {
                    match t.await {
                        Ok(part) => m.merge(&part),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                match first_error {
                    Some(e) => Err(e),
                    None => Ok(m),
                }
            })
            .map_err(|e| format!("cannot start a client executor on CPU {core}: {e}"))?;
        handles.push(h);
    }
    let deadline = measure_from
        + if loading {
            Duration::from_secs(3600)
        } else {
            cfg.duration
        };
    let mut last = (Instant::now(), 0u64);
    while Instant::now() < deadline && !shared.abort.load(Ordering::SeqCst) {
        let done_loading = loading
            && shared
                .completed
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum::<u64>()
                >= cfg.keys;
        if done_loading {
            break;
        }
        std::thread::sleep(
            Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())),
        );
        if cfg.progress && last.0.elapsed() >= Duration::from_secs(1) {
            let total: u64 = shared
                .completed
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum();
            let rate = (total - last.1) as f64 / last.0.elapsed().as_secs_f64();
            let phase = if loading {
                "load"
            } else if Instant::now() < measure_from {
                "warmup"
            } else {
                "run"
            };
            #[allow(
                clippy::print_stderr,
                reason = "--progress is a once-a-second ticker for the person at the \
                          terminal, beside the report on stdout; not a log event"
            )]
            {
                eprintln!("[{phase}] {total} ops, {rate:.0} ops/s");
            }
            last = (Instant::now(), total);
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    let mut merged = Measured::new();
    let mut joined = Ok(());
    for h in handles {
        match h.join() {
            Ok(Ok(part)) => merged.merge(&part),
            Ok(Err(e)) => joined = joined.and(Err(e)),
            Err(e) => joined = joined.and(Err(format!("client executor failed: {e}"))),
        }
    }
    // The first failure in time, not in executor order.
    if let Some(e) = shared
        .failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(e);
    }
    joined?;
    merged.seconds = if loading {
        start.elapsed().as_secs_f64()
    } else {
        cfg.duration.as_secs_f64()
    };
    Ok(merged)
}

/// What a request in flight is for.
#[derive(Copy, Clone)]
enum Pending {
    Op {
        op: OpType,
        t0: Instant,
    },
    /// The read half of a read-modify-write; the write follows with the same t0.
    RmwRead {
        t0: Instant,
        ordinal: u64,
    },
    /// A load insert: sent again if the server answers OVERLOADED.
    Load {
        t0: Instant,
        ordinal: u64,
    },
}

/// How long a connection waits before re-sending load inserts the server
/// answered OVERLOADED (it is flushing or compacting behind the write rate).
const LOAD_BACKOFF: Duration = Duration::from_millis(2);

#[allow(clippy::too_many_arguments)]
async fn connection(
    cfg: &BenchConfig,
    shared: &Shared,
    core_index: usize,
    conn: usize,
    start: Instant,
    measure_from: Instant,
    loading: bool,
) -> Result<Measured, String> {
    let my_shard = (cfg.shard_aware && !loading && cfg.shards > 1)
        .then(|| (conn % usize::from(cfg.shards)) as u16);
    let (mut stream, served_by) = connect(cfg, my_shard).await?;
    let mut stats = ConnStats {
        conn,
        shard: served_by,
        requests: 0,
        foreign: 0,
    };
    // Requests in flight must hear back within `reply_timeout` of the last
    // byte received (or of the pipeline becoming busy).
    let mut last_heard = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        cfg.seed ^ (conn as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut m = Measured::new();
    let mut wbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut rbuf: Vec<u8> = vec![0; 64 * 1024];
    let (mut rstart, mut rend) = (0usize, 0usize);
    let mut inflight: VecDeque<Pending> = VecDeque::with_capacity(cfg.pipeline);
    let mut key = Vec::with_capacity(32);
    let mut key2 = Vec::with_capacity(40);
    let value_buf = vec![b'v'; cfg.value_size.max];
    let mut next_id = 1u64;
    // Open loop: this connection's share of the rate, as a fixed interval.
    let interval = cfg
        .rate
        .map(|r| Duration::from_secs_f64(cfg.connections as f64 / r));
    let mut next_due = start;
    // Load phase: this connection inserts every `connections`-th ordinal.
    let mut load_next = conn as u64;
    let mut load_again: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut load_paused_until = start;
    let mut rmw_writes: VecDeque<(Instant, u64)> = VecDeque::new();
    glommio::timer::sleep(start.saturating_duration_since(Instant::now())).await;
    loop {
        let stopping = shared.stop.load(Ordering::Relaxed);
        // Fill the pipeline.
        while inflight.len() < cfg.pipeline && !stopping {
            // Writes owed before new work: the write half of a read-modify-write
            // (with its read's t0), then load inserts the server answered
            // OVERLOADED, once their pause is over (nothing new goes out meanwhile).
            let owed = match rmw_writes.pop_front() {
                Some((t0, ordinal)) => Some((
                    Pending::Op {
                        op: OpType::ReadModifyWrite,
                        t0,
                    },
                    ordinal,
                )),
                None if load_again.is_empty() => None,
                None if Instant::now() < load_paused_until => break,
                None => load_again
                    .pop_front()
                    .map(|(t0, ordinal)| (Pending::Load { t0, ordinal }, ordinal)),
            };
            if let Some((pending, ordinal)) = owed {
                key_for(ordinal, &mut key);
                count_request(&mut stats, &key, cfg.shards);
                let len = cfg.value_size.pick(&mut rng);
                encode(
                    cfg.protocol,
                    &mut wbuf,
                    next_id,
                    BenchRequest::Set(&key, &value_buf[..len]),
                )?;
                next_id += 1;
                if inflight.is_empty() {
                    last_heard = Instant::now();
                }
                inflight.push_back(pending);
                continue;
            }
            let t0 = match interval {
                Some(_) if Instant::now() < next_due => break,
                Some(iv) => {
                    let due = next_due;
                    next_due += iv;
                    due
                }
                None => Instant::now(),
            };
            let (op, ordinal) = if loading {
                if load_next >= cfg.keys {
                    break;
                }
                load_next += cfg.connections as u64;
                (OpType::Insert, load_next - cfg.connections as u64)
            } else {
                let op = cfg.workload.mix.pick(&mut rng);
                let ordinal = match op {
                    OpType::Insert => shared.inserted.fetch_add(1, Ordering::Relaxed),
                    // A scan spans every shard; its start key may live anywhere.
                    OpType::Scan => cfg
                        .workload
                        .chooser
                        .next(&mut rng, shared.inserted.load(Ordering::Relaxed)),
                    _ => ordinal_on(my_shard, cfg.shards, &mut key, || {
                        cfg.workload
                            .chooser
                            .next(&mut rng, shared.inserted.load(Ordering::Relaxed))
                    }),
                };
                (op, ordinal)
            };
            key_for(ordinal, &mut key);
            let request = match op {
                OpType::Read | OpType::ReadModifyWrite => BenchRequest::Get(&key),
                OpType::Update | OpType::Insert => {
                    BenchRequest::Set(&key, &value_buf[..cfg.value_size.pick(&mut rng)])
                }
                OpType::Delete => BenchRequest::Del(&key),
                OpType::Scan => BenchRequest::Scan(&key, rng.gen_range(1..=cfg.workload.scan_max)),
                OpType::Ping => BenchRequest::Ping,
                OpType::Txn1 | OpType::Txn2 => {
                    companion_key(&key, cfg.shards, op == OpType::Txn1, &mut key2);
                    BenchRequest::Mput2(&key, &key2, &value_buf[..cfg.value_size.pick(&mut rng)])
                }
            };
            encode(cfg.protocol, &mut wbuf, next_id, request)?;
            if op == OpType::Scan || op == OpType::Ping {
                stats.requests += 1;
            } else {
                count_request(&mut stats, &key, cfg.shards);
            }
            next_id += 1;
            if inflight.is_empty() {
                last_heard = Instant::now();
            }
            inflight.push_back(match op {
                OpType::ReadModifyWrite => Pending::RmwRead { t0, ordinal },
                OpType::Insert if loading => Pending::Load { t0, ordinal },
                op => Pending::Op { op, t0 },
            });
        }
        if !wbuf.is_empty() {
            // A server that stopped reading must not hang the run either.
            let sent = future::or(async { Some(send(&mut stream, &wbuf).await) }, async {
                glommio::timer::sleep(cfg.reply_timeout).await;
                None
            })
            .await;
            match sent {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    // The server may have said why before it closed (e.g.
                    // FRAME_TOO_LARGE): read what it sent, briefly.
                    let mut why = m.first_error.clone();
                    if why.is_none() {
                        why = last_words(&mut stream, cfg.protocol, &mut rbuf[rend..]).await;
                    }
                    return Err(match why {
                        Some(first) => format!("send: {e} (after the server answered {first})"),
                        None => format!(
                            "send: {e} (the server closed the connection without saying why)"
                        ),
                    });
                }
                None => {
                    return Err(format!(
                        "the server accepted no bytes for {:?}",
                        cfg.reply_timeout
                    ))
                }
            }
            wbuf.clear();
        }
        if shared.abort.load(Ordering::Relaxed) {
            // Another connection failed: the run is over, its error reported.
            break;
        }
        if inflight.is_empty() {
            if stopping || (loading && load_next >= cfg.keys && load_again.is_empty()) {
                break;
            }
            if !load_again.is_empty() {
                glommio::timer::sleep(load_paused_until.saturating_duration_since(Instant::now()))
                    .await;
                continue;
            }
            if interval.is_some() {
                glommio::timer::sleep(next_due.saturating_duration_since(Instant::now())).await;
            }
            continue;
        }
        // Receive at least one response (or wake for the next due send).
        if rstart == rend {
            rstart = 0;
            rend = 0;
        } else if rend == rbuf.len() {
            if rstart > 0 {
                rbuf.copy_within(rstart..rend, 0);
                rend -= rstart;
                rstart = 0;
            } else {
                rbuf.resize(rbuf.len() * 2, 0);
            }
        }
        // Wake for whichever comes first: bytes, the next open-loop send, a
        // check for another connection's failure, or the reply deadline.
        let now = Instant::now();
        let reply_deadline = last_heard + cfg.reply_timeout;
        let mut wake = reply_deadline.min(now + ABORT_POLL);
        if interval.is_some() && inflight.len() < cfg.pipeline {
            wake = wake.min(next_due);
        }
        let read = async { Some(stream.read(&mut rbuf[rend..]).await) };
        let n = future::or(read, async {
            glommio::timer::sleep(wake.saturating_duration_since(now)).await;
            None
        })
        .await;
        let after = |what: &str| match &m.first_error {
            Some(e) => format!("{what} (after answering {e})"),
            None => what.to_string(),
        };
        match n {
            None if Instant::now() >= reply_deadline => {
                return Err(after(&format!(
                    "no reply from the server for {:?} with {} requests in flight",
                    cfg.reply_timeout,
                    inflight.len()
                )))
            }
            None => continue,
            Some(Ok(0)) => {
                return Err(after(&format!(
                    "the server closed the connection with {} requests unanswered",
                    inflight.len()
                )))
            }
            Some(Ok(n)) => {
                rend += n;
                last_heard = Instant::now();
            }
            Some(Err(e)) => return Err(after(&format!("receive: {e}"))),
        }
        loop {
            match parse(cfg.protocol, &rbuf[rstart..rend]) {
                Reply::Complete { len, ok } => {
                    if !ok && m.first_error.is_none() {
                        m.first_error =
                            Some(describe_error(cfg.protocol, &rbuf[rstart..rstart + len]));
                    }
                    rstart += len;
                    let Some(p) = inflight.pop_front() else {
                        return Err("a response nobody asked for".into());
                    };
                    let now = Instant::now();
                    match p {
                        Pending::RmwRead { t0, ordinal } => {
                            if !ok {
                                record(
                                    &mut m,
                                    OpType::ReadModifyWrite,
                                    t0,
                                    now,
                                    measure_from,
                                    false,
                                );
                            } else {
                                rmw_writes.push_back((t0, ordinal));
                            }
                        }
                        Pending::Op { op, t0 } => {
                            record(&mut m, op, t0, now, measure_from, ok);
                            shared.completed[core_index].fetch_add(1, Ordering::Relaxed);
                        }
                        Pending::Load { t0, .. } => {
                            record(&mut m, OpType::Insert, t0, now, measure_from, ok);
                            shared.completed[core_index].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Reply::Busy { len } => {
                    rstart += len;
                    let Some(p) = inflight.pop_front() else {
                        return Err("a response nobody asked for".into());
                    };
                    match p {
                        Pending::Load { t0, ordinal } => {
                            m.resent += 1;
                            load_again.push_back((t0, ordinal));
                            load_paused_until = Instant::now() + LOAD_BACKOFF;
                        }
                        Pending::RmwRead { t0, .. } => {
                            let now = Instant::now();
                            record(
                                &mut m,
                                OpType::ReadModifyWrite,
                                t0,
                                now,
                                measure_from,
                                false,
                            );
                        }
                        Pending::Op { op, t0 } => {
                            record(&mut m, op, t0, Instant::now(), measure_from, false);
                            shared.completed[core_index].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Reply::Incomplete => break,
                Reply::Invalid(e) => return Err(format!("protocol error from the server: {e}")),
            }
        }
    }
    m.connections.push(stats);
    Ok(m)
}

/// After a failed send: the first error reply the server left in the socket
/// before it closed, if any arrives within a moment.
/// Write `bytes` out to the socket: under TLS, rustls may hold sealed
/// records until flushed, and the server must see the request now.
async fn send(stream: &mut ClientNetStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    if stream.buffers_writes() {
        stream.flush().await?;
    }
    Ok(())
}

async fn last_words(
    stream: &mut ClientNetStream,
    proto: Protocol,
    buf: &mut [u8],
) -> Option<String> {
    let mut have = 0;
    while have < buf.len() {
        let read = async { stream.read(&mut buf[have..]).await.ok() };
        let n = future::or(read, async {
            glommio::timer::sleep(Duration::from_millis(500)).await;
            None
        })
        .await?;
        if n == 0 {
            return None;
        }
        have += n;
        let mut at = 0;
        loop {
            match parse(proto, &buf[at..have]) {
                Reply::Complete { ok: false, len } => {
                    return Some(describe_error(proto, &buf[at..at + len]))
                }
                Reply::Complete { len, .. } | Reply::Busy { len } => at += len,
                Reply::Incomplete => break,
                Reply::Invalid(_) => return None,
            }
        }
    }
    None
}

/// How often a connection waiting for replies looks whether another
/// connection failed (the run then ends without waiting for its replies).
const ABORT_POLL: Duration = Duration::from_millis(100);

/// Count one single-key request, and whether another shard owns its key.
fn count_request(stats: &mut ConnStats, key: &[u8], shards: u16) {
    stats.requests += 1;
    if let Some(shard) = stats.shard {
        if shards > 1 && shard_for_key(key, shards).0 != shard {
            stats.foreign += 1;
        }
    }
}

fn record(
    m: &mut Measured,
    op: OpType,
    t0: Instant,
    now: Instant,
    measure_from: Instant,
    ok: bool,
) {
    if t0 < measure_from {
        return;
    }
    if ok {
        m.hists[op.index()].saturating_record(now.saturating_duration_since(t0).as_nanos() as u64);
    } else {
        m.errors[op.index()] += 1;
    }
}
