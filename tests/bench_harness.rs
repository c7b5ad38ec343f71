//! The benchmark harness measures honestly: open loop charges a stall to every
//! request it delayed while closed loop hides it; outputs are complete; the RESP
//! side works against a real redis-server.

mod common;

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
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
            "--memtable-size",
            "1048576",
            "--table-size",
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

/// HELLO names the shard serving the connection; a shard-aware run (each
/// connection reconnects until HELLO names its shard, then asks only for that
/// shard's keys) forwards nothing between shards, where a plain run forwards
/// about half of its GETs.
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
    let forwarded = || -> f64 {
        common::metric_samples(server.admin, "corekv_forwarded_batches_out")
            .iter()
            .sum()
    };
    let before = forwarded();
    let out = bench(&[&run[..], &["--shard-aware"]].concat());
    let aware = forwarded() - before;
    assert!(out.contains("read"), "{out}");
    let before = forwarded();
    bench(&run);
    let plain = forwarded() - before;
    eprintln!("forwarded batches: shard-aware {aware}, plain {plain}");
    assert_eq!(aware, 0.0, "a shard-aware run forwarded {aware} batches");
    assert!(plain > 100.0, "a plain run forwards (got {plain})");
}
