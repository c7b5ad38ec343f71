//! The benchmark harness measures honestly: open loop charges a stall to every
//! request it delayed while closed loop hides it; outputs are complete; the RESP
//! side works against a real redis-server.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv::bench::driver::{self, BenchConfig};
use corekv::bench::proto::Protocol;
use corekv::bench::workload::{workload, OpType, ValueSize};
use corekv::core::status::Status;
use corekv::net::codec::{encode_response, parse_frame, Parsed, Side};

/// A native-protocol server that answers every request at once, except that
/// the whole server stalls for `stall` once, `stall_at` after it starts.
fn stalling_server(stall_at: Duration, stall: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Instant::now();
    let stalled = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let stalled = stalled.clone();
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if started.elapsed() >= stall_at && !stalled.swap(true, Ordering::SeqCst) {
                        std::thread::sleep(stall);
                    }
                    // Every connection waits out the stall while it lasts.
                    while stalled.load(Ordering::SeqCst) && started.elapsed() < stall_at + stall {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let mut out = Vec::new();
                    let mut at = 0;
                    while let Parsed::Frame { header, len, .. } =
                        parse_frame(&buf[at..], Side::Server, 1 << 20)
                    {
                        encode_response(
                            &mut out,
                            header.opcode,
                            header.request_id.get(),
                            Status::Ok,
                            b"",
                        );
                        at += len;
                    }
                    buf.drain(..at);
                    if s.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn config(addr: SocketAddr, rate: Option<f64>) -> BenchConfig {
    BenchConfig {
        addr,
        protocol: Protocol::Native,
        client_cores: vec![0],
        connections: 4,
        pipeline: 1,
        workload: workload("ping", None, None, 0.99, 1000).unwrap(),
        keys: 1000,
        value_size: ValueSize { min: 16, max: 16 },
        warmup: Duration::ZERO,
        duration: Duration::from_secs(5),
        rate,
        seed: 1,
        progress: false,
        spin: Duration::ZERO,
        shards: 1,
        shard_aware: false,
        reply_timeout: driver::REPLY_TIMEOUT,
        auth: None,
        tls: None,
    }
}

#[test]
fn open_loop_shows_a_stall_that_closed_loop_hides() {
    let stall = Duration::from_millis(200);
    let open = driver::run(&config(
        stalling_server(Duration::from_secs(2), stall),
        Some(1000.0),
    ))
    .unwrap();
    let closed = driver::run(&config(
        stalling_server(Duration::from_secs(2), stall),
        None,
    ))
    .unwrap();
    let p999 =
        |m: &driver::Measured| m.hists[OpType::Ping.index()].value_at_percentile(99.9) as f64 / 1e6;
    let (open_ms, closed_ms) = (p999(&open), p999(&closed));
    eprintln!("p99.9 open loop {open_ms:.1} ms, closed loop {closed_ms:.1} ms");
    // At 1000 ops/s a 200 ms stall delays ~200 of ~5000 requests (4%): it owns the tail.
    assert!(
        open_ms >= 100.0,
        "open loop hid the stall: p99.9 = {open_ms} ms"
    );
    // Closed loop only sends 4 requests during the stall: invisible at p99.9.
    assert!(closed_ms < 100.0, "closed loop p99.9 = {closed_ms} ms");
    let count = open.hists[OpType::Ping.index()].len();
    assert!(
        (4000..=5500).contains(&count),
        "open loop kept its rate: {count} requests in 5 s"
    );
}

#[test]
fn json_hdr_log_and_plot_are_complete() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(
        &dir.path().join("data"),
        &["--shards", "2", "--durability", "async"],
    );
    let out = dir.path();
    let o = std::process::Command::new(common::corekv_bin())
        .args([
            "bench",
            "--addr",
            &server.addr.to_string(),
            "--keys",
            "2000",
            "--load",
            "--workload",
            "F",
        ])
        .args([
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--connections",
            "4",
            "--quiet",
            "--label",
            "corekv",
        ])
        .arg("--json")
        .arg(out.join("r.json"))
        .arg("--hdr-log")
        .arg(out.join("r.hlog"))
        .arg("--plot")
        .arg(out.join("r.svg"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("read") && stdout.contains("rmw") && stdout.contains("p99.9"),
        "{stdout}"
    );

    // The JSON document has every field docs/bench-result.schema.json requires.
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("r.json")).unwrap()).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../docs/bench-result.schema.json"))
            .expect("the schema is JSON");
    check_required(&schema, &doc, "$");
    assert_eq!(doc["workload"]["name"], "F");
    for op in ["read", "rmw"] {
        let o = &doc["results"]["ops"][op];
        assert!(o["count"].as_u64().unwrap() > 0, "{op}");
        assert!(o["p50_us"].as_f64().unwrap() <= o["p99_9_us"].as_f64().unwrap());
    }
    // The interval log has one tagged histogram per op type.
    let log = std::fs::read_to_string(out.join("r.hlog")).unwrap();
    assert!(
        log.contains("Tag=read,") && log.contains("Tag=rmw,"),
        "{log}"
    );
    // The SVG has one series per op type, named in the legend.
    let svg = std::fs::read_to_string(out.join("r.svg")).unwrap();
    // plotters writes each legend label as the text of its own element, on its own line.
    assert!(
        svg.contains("\nread\n") && svg.contains("\nrmw\n"),
        "legend lacks a series"
    );
    assert!(svg.matches("<polyline").count() >= 2, "a line per series");
}

/// Every `required` property of the schema exists in the document (recursively).
fn check_required(schema: &serde_json::Value, doc: &serde_json::Value, path: &str) {
    if let Some(req) = schema["required"].as_array() {
        for r in req {
            let k = r.as_str().unwrap();
            assert!(
                doc.get(k).is_some(),
                "{path}.{k} missing from the result document"
            );
            check_required(&schema["properties"][k], &doc[k], &format!("{path}.{k}"));
        }
    }
}

#[test]
fn resp_client_against_redis_server() {
    let Ok(redis) = which("redis-server") else {
        eprintln!("SKIPPED: redis-server is not installed (CI installs it)");
        return;
    };
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(redis)
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cfg = config(addr, None);
    cfg.protocol = Protocol::Resp;
    cfg.workload = workload("A", None, None, 0.99, 1000).unwrap();
    cfg.duration = Duration::from_secs(1);
    cfg.pipeline = 4;
    let loaded = driver::load(&cfg).unwrap();
    assert_eq!(loaded.hists[OpType::Insert.index()].len(), 1000);
    let m = driver::run(&cfg).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(m.hists[OpType::Read.index()].len() > 100);
    assert!(m.hists[OpType::Update.index()].len() > 100);
    assert_eq!(m.errors.iter().sum::<u64>(), 0);
}

fn which(bin: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(bin))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

/// A load into a server whose compaction is behind (1 MiB memtables, level 0
/// full at 6 tables) meets OVERLOADED; the load sends those inserts again, so
/// every record is in place and none counts as an error.
#[test]
fn load_resends_what_the_server_refused_as_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(
        dir.path(),
        &[
            "--shards",
            "2",
            "--durability",
            "async",
            "--memtable-bytes",
            "1048576",
            "--table-target-bytes",
            "8388608",
            "--l0-trigger",
            "2",
        ],
    );
    let keys = 16_000u64;
    let o = std::process::Command::new(common::corekv_bin())
        .args(["bench", "--addr", &server.addr.to_string()])
        .args(["--keys", &keys.to_string(), "--value-size", "4096"])
        .args(["--load-only", "--connections", "8", "--pipeline", "16"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("loaded"))
        .unwrap_or_else(|| panic!("no load summary in {err}"));
    let number_before = |word: &str| -> u64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words.iter().position(|w| w.starts_with(word)).unwrap();
        words[i - 1]
            .trim_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .unwrap()
    };
    eprintln!("{line}");
    assert_eq!(number_before("records"), keys, "{line}");
    assert_eq!(number_before("errors"), 0, "{line}");
    assert!(
        number_before("re-sent") > 0,
        "the server never refused a write, so this run did not test re-sending: {line}"
    );
    let mut c = server.client();
    let mut key = Vec::new();
    for ordinal in (0..keys).step_by(13) {
        corekv::bench::keygen::key_for(ordinal, &mut key);
        let v = c.get(&key).unwrap();
        assert_eq!(v.map(|v| v.len()), Some(4096), "record {ordinal}");
    }
}

/// A connection to `server` that HELLO says shard `shard` serves.
fn client_on_shard(server: &common::Server, shard: u16) -> corekv::net::client::Client {
    for _ in 0..500 {
        let mut c = server.client();
        if c.hello().unwrap().shard == shard {
            return c;
        }
    }
    panic!("no connection landed on shard {shard} in 500 attempts");
}

/// Wait until every shard's published metrics include everything that
/// happened before this call. Metrics are snapshots each shard publishes a few
/// times a second, so a read right after a bench may miss its last batches
/// (that is how a load's forwarded batches once leaked into the next
/// measurement). The marker: one DELETE per shard, of a key that shard owns,
/// sent on a connection it serves (so never forwarded); once a shard's
/// published DELETE count includes it, its snapshot postdates everything
/// before. Returns the summed `name` from those snapshots.
fn settled_metric(server: &common::Server, name: &str, markers_sent: &mut f64) -> f64 {
    *markers_sent += 1.0;
    for shard in 0..2u16 {
        let mut c = client_on_shard(server, shard);
        let key = (0u32..)
            .map(|i| format!("marker-{i}").into_bytes())
            .find(|k| corekv::core::hash::shard_for_key(k, 2).0 == shard)
            .unwrap();
        c.delete(&key).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = metrics_text(server.admin);
        let deletes: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("corekv_requests") && l.contains("op=\"delete\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        if deletes.len() == 2 && deletes.iter().all(|d| *d >= *markers_sent) {
            return text
                .lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ', '_']))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
        }
        assert!(
            Instant::now() < deadline,
            "the shards did not publish the marker DELETEs: {deletes:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metrics_text(admin: SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(admin).expect("admin endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// HELLO names the shard serving the connection; a shard-aware run (each
/// connection reconnects until HELLO names its shard, then asks only for that
/// shard's keys) sends no connection a key of another shard (counted per
/// connection by the bench) and the server forwards nothing between shards
/// during it (its counter read at settled points before and after, so the
/// load's last batches cannot leak in), where a plain run forwards about half
/// of its GETs.
#[test]
fn shard_aware_connections_skip_the_cross_core_hop() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2", "--durability", "async"]);
    let mut seen = [false; 2];
    for _ in 0..200 {
        let h = server.client().hello().unwrap();
        assert_eq!(h.shard_count, 2);
        assert!(h.shard < 2, "{h:?}");
        seen[usize::from(h.shard)] = true;
        if seen == [true, true] {
            break;
        }
    }
    assert_eq!(seen, [true, true], "connections land on every shard");
    let addr = server.addr.to_string();
    let bench = |extra: &[&str]| {
        let o = std::process::Command::new(common::corekv_bin())
            .args(["bench", "--addr", &addr, "--keys", "2000", "--quiet"])
            .args(["--connections", "4", "--pipeline", "4"])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    bench(&["--load-only"]);
    let run = ["--workload", "C", "--duration", "1", "--warmup", "0"];
    let mut markers = 0.0;
    let forwarded = "corekv_forwarded_batches_out";
    let before = settled_metric(&server, forwarded, &mut markers);
    let out = bench(&[&run[..], &["--shard-aware"]].concat());
    let aware = settled_metric(&server, forwarded, &mut markers) - before;
    assert!(out.contains("read"), "{out}");
    // Per connection: "routing: F of R requests ...; per connection C@S:F/R ...".
    let routing = out
        .lines()
        .find(|l| l.starts_with("routing:"))
        .unwrap_or_else(|| panic!("no routing line in {out}"));
    let per_conn: Vec<(u16, u64, u64)> = routing
        .split_once("per connection")
        .unwrap()
        .1
        .split_whitespace()
        .map(|c| {
            let (_, rest) = c.split_once('@').unwrap();
            let (shard, counts) = rest.split_once(':').unwrap();
            let (f, r) = counts.split_once('/').unwrap();
            (
                shard.parse().unwrap(),
                f.parse().unwrap(),
                r.parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(per_conn.len(), 4, "{routing}");
    for (i, (shard, foreign, requests)) in per_conn.iter().enumerate() {
        assert_eq!(usize::from(*shard), i % 2, "connection {i}: {routing}");
        assert!(*requests > 0, "connection {i} sent nothing: {routing}");
        assert_eq!(
            *foreign, 0,
            "connection {i} asked another shard's keys: {routing}"
        );
    }
    let before = settled_metric(&server, forwarded, &mut markers);
    bench(&run);
    let plain = settled_metric(&server, forwarded, &mut markers) - before;
    eprintln!("forwarded batches: shard-aware {aware}, plain {plain}; {routing}");
    assert_eq!(aware, 0.0, "a shard-aware run forwarded {aware} batches");
    assert!(plain > 100.0, "a plain run forwards (got {plain})");
}

/// Run `corekv bench ARGS`, failing the test (not hanging it) if it has not
/// ended within two minutes. Returns (exit code, stdout, stderr).
fn bench_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = std::process::Command::new(common::corekv_bin())
        .arg("bench")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "corekv bench {args:?} did not end within 120 s: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The bank at its defaults (50 connections) against a real 2-shard server
/// with sync durability: transfers and snapshot checks contend for the same
/// locks; aborted and stale transfers are retried and counted, the checks
/// retry until they get through, and the invariant holds. Before retries, the
/// first aborted snapshot read ended the run with BENCH_FAILED.
#[test]
fn bank_at_default_connections_holds_under_contention() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(&dir.path().join("data"), &["--shards", "2"]);
    let json = dir.path().join("bank.json");
    let addr = server.addr.to_string();
    let (code, out, err) = bench_cli(&[
        "--addr",
        &addr,
        "--workload",
        "bank",
        "--keys",
        "1000",
        "--load",
        "--duration",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("invariant held"), "{out}");
    assert!(out.contains("with 50 connections"), "{out}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../docs/bench-result.schema.json")).unwrap();
    check_required(&schema, &doc, "$");
    let bank = &doc["results"]["bank"];
    eprintln!("{out}{bank:#}");
    assert!(bank["committed"].as_u64().unwrap() > 0, "{bank}");
    assert!(bank["checks"].as_u64().unwrap() >= 2, "{bank}");
    for rate in ["committed_per_sec", "retries_per_sec", "aborts_per_sec"] {
        assert!(bank[rate].as_f64().is_some(), "{rate} missing: {bank}");
    }
    assert_eq!(doc["config"]["connections"], 50);
    assert_eq!(
        doc["results"]["ops"]["transfer"]["count"], bank["committed"],
        "{doc}"
    );
}

/// A bank run whose --keys differs from the loaded accounts is refused as a
/// usage error (BENCH_FAILED, exit 2), not reported as BANK_VIOLATION (which
/// means lost data): fewer keys would see only part of the money, more would
/// see missing accounts.
#[test]
fn bank_refuses_a_key_count_that_does_not_match_the_loaded_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2", "--durability", "async"]);
    let addr = server.addr.to_string();
    let bank = |keys: &str, extra: &[&str]| {
        let args = [
            &["--addr", &addr, "--workload", "bank", "--keys", keys][..],
            &["--connections", "4", "--duration", "0.5"],
            extra,
        ]
        .concat();
        bench_cli(&args)
    };
    let (code, out, err) = bank("1000", &["--load"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for keys in ["500", "2000"] {
        let (code, _, err) = bank(keys, &[]);
        assert_eq!(code, Some(2), "--keys {keys}: {err}");
        assert!(!err.contains("BANK_VIOLATION"), "--keys {keys}: {err}");
        assert!(
            err.contains("BENCH_FAILED")
                && err.contains(&format!("--keys {keys} does not match"))
                && err.contains("1000 accounts"),
            "--keys {keys}: {err}"
        );
    }
    // The right count still passes.
    let (code, out, err) = bank("1000", &[]);
    assert_eq!(code, Some(0), "{out}{err}");
}

/// Values over the server's limit end the load with a named error and exit 2:
/// the CLI refuses them up front from HELLO; the driver itself (no check up
/// front) ends with the server's own reason when the server closes the
/// connection on the oversize frame (it used to wait forever for the
/// records that connection never loaded), and counts soft refusals.
#[test]
fn oversize_values_end_the_load_with_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(
        dir.path(),
        &["--shards", "2", "--value-bytes-max", "1048576"],
    );
    let addr = server.addr.to_string();
    let (code, out, err) = bench_cli(&[
        "--addr",
        &addr,
        "--workload",
        "c",
        "--keys",
        "50",
        "--value-size",
        "2000000",
        "--load-only",
    ]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("BENCH_FAILED") && err.contains("VALUE_TOO_LARGE") && err.contains("1048576"),
        "{err}"
    );

    let load = |value: usize| {
        let mut cfg = config(server.addr, None);
        cfg.workload = workload("C", None, None, 0.99, 50).unwrap();
        cfg.keys = 50;
        cfg.shards = 2;
        cfg.value_size = ValueSize {
            min: value,
            max: value,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(driver::load(&cfg)));
        rx.recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("a load of {value}-byte values did not end"))
    };
    // Past the frame limit: the server answers FRAME_TOO_LARGE and closes.
    let e = load(2_000_000).err().expect("the load fails");
    eprintln!("a load of 2000000-byte values: {e}");
    // The server's reason when it arrives before the reset (it usually does);
    // either way the load ends, with an error.
    assert!(
        (e.contains("FRAME_TOO_LARGE") && e.contains("limit"))
            || e.contains("closed the connection"),
        "{e}"
    );
    // Within the frame limit, over the value limit: refused, connection kept.
    let m = load(1_048_577).expect("the connections survive soft refusals");
    assert_eq!(m.error_count(), 50);
    let first = m.first_error.unwrap_or_default();
    assert!(first.contains("VALUE_TOO_LARGE"), "first error: {first}");
}

/// A native server that answers HELLO like corekv (2 shards, the given
/// shard round-robin) and every other request with what `answer` says for
/// the nth request of that opcode: `Some(status)` or `None` (never answer).
fn scripted_server(answer: fn(u8, u64) -> Option<Status>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(mut s) = conn else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                loop {
                    let Ok(n) = s.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let mut out = Vec::new();
                    let mut at = 0;
                    while let Parsed::Frame { header, len, .. } =
                        parse_frame(&buf[at..], Side::Server, 1 << 24)
                    {
                        let id = header.request_id.get();
                        at += len;
                        if header.opcode == 1 {
                            let mut body = Vec::new();
                            corekv::net::codec::HelloInfo {
                                protocol_version: 1,
                                shard_count: 2,
                                key_bytes_max: 1 << 16,
                                value_bytes_max: 1 << 20,
                                server_version: "scripted".into(),
                                shard: (i % 2) as u16,
                            }
                            .encode(&mut body);
                            encode_response(&mut out, 1, id, Status::Ok, &body);
                            continue;
                        }
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        if let Some(status) = answer(header.opcode, n) {
                            encode_response(&mut out, header.opcode, id, status, b"scripted");
                        }
                    }
                    buf.drain(..at);
                    if s.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A load some of whose inserts the server refused exits 2 naming the first
/// refusal; it used to print the error count and exit 0.
#[test]
fn a_load_with_refused_inserts_exits_non_zero() {
    let addr = scripted_server(|_, n| {
        Some(if n % 2 == 0 {
            Status::Ok
        } else {
            Status::WalFailed
        })
    });
    let (code, out, err) = bench_cli(&[
        "--addr",
        &addr.to_string(),
        "--keys",
        "200",
        "--connections",
        "4",
        "--load-only",
        "--quiet",
    ]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("BENCH_FAILED")
            && err.contains("the load failed")
            && err.contains("WAL_FAILED"),
        "{err}"
    );
}

/// A server that stops answering fails the run after --reply-timeout instead
/// of hanging it.
#[test]
fn a_server_that_stops_answering_fails_the_run() {
    let addr = scripted_server(|_, n| (n < 20).then_some(Status::Ok));
    let (code, out, err) = bench_cli(&[
        "--addr",
        &addr.to_string(),
        "--keys",
        "100",
        "--workload",
        "C",
        "--connections",
        "2",
        "--duration",
        "60",
        "--warmup",
        "0",
        "--reply-timeout",
        "1",
        "--quiet",
    ]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("BENCH_FAILED") && err.contains("no reply from the server"),
        "{err}"
    );
}
