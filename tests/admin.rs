//! The admin endpoint tells the truth: /health and /metrics against a real
//! server, under load, and with a shard whose WAL failed (disk full).

use crate::common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Parse Prometheus text exposition into `name{labels}` → value, checking every
/// line is a comment or a well-formed sample.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed sample line {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line:?}");
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.insert(series.to_string(), v);
    }
    out
}

fn sum(metrics: &HashMap<String, f64>, prefix: &str, must_contain: &str) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && k.contains(must_contain))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn health_and_metrics_follow_load() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2"]);
    let (code, body) = http_get(server.admin, "/health");
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "serving");
    assert_eq!(health["shard_count"], 2);
    assert_eq!(health["durability"], "sync");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert!(health["data_dir"]
        .as_str()
        .unwrap()
        .ends_with(dir.path().file_name().unwrap().to_str().unwrap()));
    for s in health["shards"].as_array().unwrap() {
        assert_eq!(s["status"], "serving");
    }

    let mut c = server.client();
    for i in 0..100 {
        c.put(format!("key-{i}").as_bytes(), b"value").unwrap();
    }
    for i in 0..50 {
        assert!(c.get(format!("key-{i}").as_bytes()).unwrap().is_some());
    }
    assert!(c.get(&vec![b'k'; 70_000]).is_err(), "KEY_TOO_LARGE");
    // Shards publish a few times a second.
    std::thread::sleep(Duration::from_millis(700));
    let (code, text) = http_get(server.admin, "/metrics");
    assert_eq!(code, 200);
    let m = parse_metrics(&text);
    assert_eq!(
        sum(&m, "corekv_requests_total", "op=\"put\""),
        100.0,
        "{text}"
    );
    assert_eq!(sum(&m, "corekv_requests_total", "op=\"get\""), 50.0);
    assert_eq!(
        sum(&m, "corekv_errors_total", "error=\"KEY_TOO_LARGE\""),
        1.0
    );
    assert!(sum(&m, "corekv_wal_syncs_total", "") >= 1.0);
    assert_eq!(sum(&m, "corekv_wal_records_total", ""), 100.0);
    assert_eq!(sum(&m, "corekv_memtable_entries", "shard="), 100.0);
    assert_eq!(
        sum(&m, "corekv_request_latency_seconds_count", "op=\"put\""),
        100.0
    );
    // The +Inf bucket of a histogram equals its count.
    assert_eq!(
        sum(&m, "corekv_request_latency_seconds_bucket", "le=\"+Inf\""),
        sum(&m, "corekv_request_latency_seconds_count", "")
    );
    assert!(sum(&m, "corekv_wal_sync_latency_seconds_count", "") >= 1.0);
    assert!(
        m.get("corekv_process_resident_memory_bytes")
            .copied()
            .unwrap_or(0.0)
            > 1e6
    );
    let (code, _) = http_get(server.admin, "/nope");
    assert_eq!(code, 404);
}

/// Mount a small ext4 image so the WAL can run out of space; `None` where this
/// machine does not allow loop mounts (the test then says so and passes).
struct SmallFs {
    mount: tempfile::TempDir,
    _image_dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(bytes: u64) -> Option<SmallFs> {
        let image_dir = tempfile::tempdir().ok()?;
        let image = image_dir.path().join("fs.img");
        std::fs::File::create(&image).ok()?.set_len(bytes).ok()?;
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .status()
            .ok()?;
        let mount = tempfile::tempdir().ok()?;
        let mounted = mkfs.success()
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(mount.path())
                .status()
                .ok()?
                .success();
        mounted.then_some(SmallFs {
            mount,
            _image_dir: image_dir,
        })
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }

    /// Fill the filesystem until a write fails.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let chunk = vec![0xAAu8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount.path())
            .status();
    }
}

#[test]
fn full_disk_makes_the_shard_read_only_and_health_says_so() {
    let Some(fs) = SmallFs::new(24 << 20) else {
        eprintln!("SKIPPED: cannot mount a loop filesystem here (needs root and loop devices)");
        return;
    };
    let data = fs.path().join("data");
    let server = common::start_server(
        &data,
        &[
            "--shards",
            "1",
            "--wal-segment-bytes",
            "1048576",
            "--value-bytes-max",
            "65536",
        ],
    );
    let mut c = server.client();
    c.put(b"before", b"durable").unwrap();
    fs.fill();
    // Each segment rollover needs a fresh zero-filled spare, which no longer fits.
    let value = vec![7u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failed = None;
    let mut acked = Vec::new();
    for i in 0.. {
        assert!(
            Instant::now() < deadline,
            "the WAL never failed on a full disk"
        );
        let key = format!("fill-{i}");
        match c.put(key.as_bytes(), &value) {
            Ok(()) => acked.push(key),
            Err(e) => {
                failed = Some(e.name());
                break;
            }
        }
    }
    // The write in flight when the WAL failed is WAL_FAILED (maybe on disk);
    // a write refused after that says why: DISK_FULL, with the reason.
    assert!(
        matches!(failed, Some("WAL_FAILED" | "DISK_FULL")),
        "{failed:?}"
    );
    let refused = c.put(b"after", b"x").unwrap_err();
    assert_eq!(refused.name(), "DISK_FULL", "{refused}");
    assert!(refused.message().contains("bytes free"), "{refused}");
    assert_eq!(c.get(b"before").unwrap().as_deref(), Some(&b"durable"[..]));
    std::thread::sleep(Duration::from_millis(700));
    let (code, body) = http_get(server.admin, "/health");
    assert_eq!(code, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["shards"][0]["status"], "read_only");
    assert!(!health["shards"][0]["reason"].as_str().unwrap().is_empty());
    let m = parse_metrics(&http_get(server.admin, "/metrics").1);
    assert_eq!(m["corekv_shard_read_only{shard=\"0\"}"], 1.0);
    assert!(
        sum(&m, "corekv_errors_total", "WAL_FAILED") + sum(&m, "corekv_errors_total", "DISK_FULL")
            >= 2.0
    );
    let (code, stderr) = server.stop();
    assert_eq!(
        code,
        Some(3),
        "a shard that lost its WAL must not exit 0: {stderr}"
    );
    assert!(stderr.contains("WAL_FAILED"), "{stderr}");

    // Free the space and restart: every acknowledged write is there.
    std::fs::remove_file(fs.path().join("filler")).unwrap();
    let server = common::start_server(&data, &[]);
    let mut c = server.client();
    assert_eq!(c.get(b"before").unwrap().as_deref(), Some(&b"durable"[..]));
    for key in &acked {
        assert_eq!(
            c.get(key.as_bytes()).unwrap().as_deref(),
            Some(&value[..]),
            "{key} lost"
        );
    }
    assert_eq!(c.get(b"after").unwrap(), None);
}
