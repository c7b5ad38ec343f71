//! How many heap allocations a request costs on a shard in steady state, for
//! reads that cross cores and reads that do not, measured with a counting
//! allocator in-process (the server runs embedded, on its own shard threads).
//!
//! Only allocations made on shard threads are counted; the client's are not.
//!
//! Measured 2026-11-23 (2 shards, 16-deep pipeline): PING 0.38 allocations per
//! request, GET 2.4 (half the keys cross cores). Sampled backtraces put them
//! inside glommio's reactor, once or twice per reactor turn: `Source::new` from
//! `prepare_latency_preemption_timer` / `link_rings_and_sleep` (496 B) and
//! `Timers::process_timers` (456 B); none was in corekv's request path. The
//! cross-core round trip costs more reactor turns (both shards wake, and glommio
//! spins on its shared channels), hence GET's higher figure.
//!
//! RESP (2026-12-06, same shape: 2 shards, 16 pipelined): PING 0.33, GET 1.75,
//! SET 3.86, INCR 4.73 allocations per request; before the argument list moved
//! to the stack and the command lookup stopped lower-casing into a String,
//! 2.36 / 2.71 / 4.87 / 5.54 (the test failed on PING then). SET and INCR add
//! the memtable's owned copy of each key and value (the engine's write path,
//! not the connection's).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corekv::core::config::EngineConfig;
use corekv::net::client::Client;
use corekv::net::codec::Request;
use corekv::net::server::{serve_shard, ServerConfig};
use corekv::shard::Engine;

struct Counting;

thread_local! {
    static ON_SHARD: Cell<bool> = const { Cell::new(false) };
}
static SHARD_ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; the counter is a plain atomic and
// the thread-local is const-initialised (touching it never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ON_SHARD.with(Cell::get) {
            SHARD_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        if ON_SHARD.with(Cell::get) {
            SHARD_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counters are process-wide: one test measures at a time.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// An embedded 2-shard server (async durability) with the native listener on
/// `port` and, if `resp`, a RESP listener on the returned port; its shard
/// threads count their allocations once `counting` is set.
fn start_counting_server(
    dir: &std::path::Path,
    counting: Arc<AtomicBool>,
    resp: bool,
) -> (Engine, std::net::SocketAddr, Option<std::net::SocketAddr>) {
    let mut config = EngineConfig::new(dir);
    config.shards = Some(2);
    config.durability = corekv::core::types::Durability::Async;
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let port = free();
    let resp_port = resp.then(free);
    let server = Arc::new(ServerConfig {
        listen: port,
        resp_listen: resp_port,
        value_bytes_max: 1 << 20,
        connections_per_shard_max: 100,
        frame_timeout: Duration::from_secs(30),
        idle_timeout: Duration::ZERO,
        slow_op: Duration::ZERO,
        ..ServerConfig::with_defaults(port, 1 << 20)
    });
    let listening = Arc::new(AtomicUsize::new(0));
    let engine = {
        let listening = listening.clone();
        Engine::start(config, move |ctx| {
            let (server, listening, counting) =
                (server.clone(), listening.clone(), counting.clone());
            async move {
                // Mark this shard thread once serving; the flag is read per allocation.
                glommio::spawn_local(async move {
                    while !counting.load(Ordering::Relaxed) {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                    ON_SHARD.with(|f| f.set(true));
                })
                .detach();
                serve_shard(ctx, server, listening).await
            }
        })
        .unwrap()
    };
    while listening.load(Ordering::SeqCst) < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    (engine, port, resp_port)
}

#[test]
fn steady_state_requests_do_not_allocate_in_the_request_path() {
    let _alone = ALONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let counting = Arc::new(AtomicBool::new(false));
    let (engine, port, _) = start_counting_server(dir.path(), counting.clone(), false);
    let mut c = Client::connect(port).unwrap();
    let keys: Vec<Vec<u8>> = (0..64).map(|i| format!("key-{i}").into_bytes()).collect();
    for k in &keys {
        c.put(k, &[7u8; 100]).unwrap();
    }
    let round = |c: &mut Client, n: usize, ping: bool| {
        for i in 0..n {
            for j in 0..16 {
                if ping {
                    c.queue(&Request::Ping { payload: b"" });
                } else {
                    c.queue(&Request::Get {
                        key: &keys[(i * 16 + j) % keys.len()],
                    });
                }
            }
            c.flush().unwrap();
            for _ in 0..16 {
                c.recv_with(|r| assert!(r.status.is_ok())).unwrap();
            }
        }
    };
    round(&mut c, 500, false); // warm every buffer up
    round(&mut c, 500, true);
    counting.store(true, Ordering::SeqCst);
    round(&mut c, 200, false);
    std::thread::sleep(Duration::from_millis(50));
    let requests = 2000 * 16;
    let mut measure = |ping: bool| {
        let before = SHARD_ALLOCS.load(Ordering::SeqCst);
        round(&mut c, 2000, ping);
        (SHARD_ALLOCS.load(Ordering::SeqCst) - before) as f64 / requests as f64
    };
    let ping = measure(true);
    let get = measure(false);
    eprintln!("allocations per request on shard threads: PING {ping:.3}, GET {get:.3} ({requests} pipelined requests each)");
    engine.request_stop();
    drop(c);
    engine.wait();
    // PING runs the whole connection path (read, parse, batch, compose, write)
    // without routing: one allocation per request there would make it >= 1.
    // GET adds the cross-core round trip, whose reactor turns on two shards
    // allocate inside glommio (see the module doc); it is reported, and only
    // bounded loosely, because the number of reactor turns depends on timing.
    assert!(
        ping < 1.0,
        "the connection path allocates {ping:.3} times per request"
    );
    assert!(get < 6.0, "GET allocates {get:.3} times per request");
}

/// The same for the RESP listener: pipelined PING (the whole command path:
/// parse, look up, check access, answer) and runs of plain GETs, SETs and
/// INCRs (the batched path), 16 per round trip.
#[test]
fn steady_state_resp_commands_do_not_allocate_in_the_request_path() {
    use std::io::{BufRead, BufReader, Write};
    let _alone = ALONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let counting = Arc::new(AtomicBool::new(false));
    let (engine, _, resp) = start_counting_server(dir.path(), counting.clone(), true);
    let stream = std::net::TcpStream::connect(resp.expect("a RESP port")).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let frame = |args: &[&[u8]]| -> Vec<u8> {
        let mut f = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            f.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            f.extend_from_slice(a);
            f.extend_from_slice(b"\r\n");
        }
        f
    };
    let keys: Vec<Vec<u8>> = (0..64).map(|i| format!("key-{i}").into_bytes()).collect();
    // Each kind: 16 pipelined commands' bytes, sent as one write, and the
    // replies read back (one line each: +PONG, $100 + value, +OK, :n).
    let batch = |kind: &str, i: usize| -> Vec<u8> {
        let mut out = Vec::new();
        for j in 0..16 {
            let k = &keys[(i * 16 + j) % keys.len()];
            out.extend(match kind {
                "ping" => frame(&[b"PING"]),
                "get" => frame(&[b"GET", k]),
                "set" => frame(&[b"SET", k, &[b'v'; 100]]),
                _ => frame(&[b"INCR", b"counter"]),
            });
        }
        out
    };
    let mut line = String::new();
    let mut round = |kind: &str, n: usize| {
        for i in 0..n {
            w.write_all(&batch(kind, i)).unwrap();
            for _ in 0..16 {
                line.clear();
                r.read_line(&mut line).unwrap();
                assert!(!line.starts_with('-'), "{kind}: {line}");
                if line.starts_with('$') {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                }
            }
        }
    };
    for kind in ["set", "get", "ping", "incr"] {
        round(kind, 500); // warm every buffer up
    }
    counting.store(true, Ordering::SeqCst);
    round("get", 200);
    std::thread::sleep(Duration::from_millis(50));
    let requests = 2000 * 16;
    let mut per_request = Vec::new();
    for kind in ["ping", "get", "set", "incr"] {
        let before = SHARD_ALLOCS.load(Ordering::SeqCst);
        round(kind, 2000);
        let n = (SHARD_ALLOCS.load(Ordering::SeqCst) - before) as f64 / requests as f64;
        per_request.push((kind, n));
    }
    eprintln!("RESP allocations per request on shard threads: {per_request:?} ({requests} pipelined each)");
    engine.request_stop();
    drop(w);
    drop(r);
    engine.wait();
    // As for the native protocol: PING has no cross-core hop, so one
    // allocation per request in the command path would make it >= 1; the
    // routed kinds add glommio's reactor turns (module doc).
    for (kind, n) in per_request {
        let limit = if kind == "ping" { 1.0 } else { 6.0 };
        assert!(n < limit, "RESP {kind} allocates {n:.3} times per request");
    }
}
