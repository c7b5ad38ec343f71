//! Turns measurements into the human table and the JSON document
//! (schema: docs/bench-result.schema.json, explained in docs/benchmarking.md).

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::bank::BankReport;
use super::driver::{BenchConfig, Measured};
use super::workload::OpType;

pub const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
];

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// One line per op type that ran, plus a total.
pub fn table(m: &Measured, cpu_percent: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>10} {:>12} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "op",
        "count",
        "ops/s",
        "errors",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "p99.99",
        "max µs"
    );
    let mut total = 0u64;
    for op in OpType::ALL {
        let h = &m.hists[op.index()];
        let errors = m.errors[op.index()];
        if h.is_empty() && errors == 0 {
            continue;
        }
        total += h.len();
        let _ = write!(
            out,
            "{:<8} {:>10} {:>12.0} {:>7}",
            op.name(),
            h.len(),
            h.len() as f64 / m.seconds,
            errors
        );
        for (_, p) in PERCENTILES {
            let _ = write!(out, " {:>9.1}", us(h.value_at_percentile(p)));
        }
        let _ = writeln!(out, " {:>9.1}", us(h.max()));
    }
    let _ = writeln!(
        out,
        "total    {:>10} {:>12.0} ops/s over {:.1} s; client CPU {:.0}% of one core",
        total,
        total as f64 / m.seconds,
        m.seconds,
        cpu_percent
    );
    out
}

/// Per connection: the shard serving it and how many of its single-key
/// requests were for keys another shard owns (each is a forwarded batch on the
/// server: the cross-core hop a shard-aware client avoids).
pub fn routing(m: &Measured) -> String {
    let foreign: u64 = m.connections.iter().map(|c| c.foreign).sum();
    let requests: u64 = m.connections.iter().map(|c| c.requests).sum();
    let mut out = format!(
        "routing: {foreign} of {requests} requests were for another shard's keys; per connection"
    );
    for c in &m.connections {
        let shard = c.shard.map_or("?".into(), |s| s.to_string());
        let _ = write!(out, " {}@{shard}:{}/{}", c.conn, c.foreign, c.requests);
    }
    out.push('\n');
    out
}

/// Ratios of every target against the first: throughput (higher is better for
/// the target) and p50/p99/p99.9 latency (lower is better).
pub fn ratios(runs: &[(&str, &Measured)]) -> String {
    let mut out = String::new();
    let Some((base_label, base)) = runs.first() else {
        return out;
    };
    let _ = writeln!(out, "ratios against {base_label} (target / {base_label}):");
    let _ = writeln!(
        out,
        "{:<16} {:<8} {:>11} {:>9} {:>9} {:>9}",
        "target", "op", "throughput", "p50", "p99", "p99.9"
    );
    for (label, m) in &runs[1..] {
        for op in OpType::ALL {
            let (a, b) = (&m.hists[op.index()], &base.hists[op.index()]);
            if a.is_empty() || b.is_empty() {
                continue;
            }
            let tput = (a.len() as f64 / m.seconds) / (b.len() as f64 / base.seconds);
            let r =
                |p: f64| a.value_at_percentile(p) as f64 / b.value_at_percentile(p).max(1) as f64;
            let _ = writeln!(
                out,
                "{:<16} {:<8} {:>10.2}x {:>8.2}x {:>8.2}x {:>8.2}x",
                label,
                op.name(),
                tput,
                r(50.0),
                r(99.0),
                r(99.9)
            );
        }
    }
    out
}

fn op_json(h: &Histogram<u64>, errors: u64, seconds: f64) -> serde_json::Value {
    let mut o = serde_json::json!({
        "count": h.len(),
        "errors": errors,
        "ops_per_sec": h.len() as f64 / seconds,
        "mean_us": us(h.mean() as u64),
        "max_us": us(h.max()),
    });
    for (name, p) in PERCENTILES {
        o[format!("{}_us", name.replace('.', "_"))] =
            serde_json::json!(us(h.value_at_percentile(p)));
    }
    o
}

/// The result document.
pub fn json(
    cfg: &BenchConfig,
    m: &Measured,
    cpu_percent: f64,
    target_label: &str,
) -> serde_json::Value {
    let mut ops = serde_json::Map::new();
    let mut total = 0u64;
    for op in OpType::ALL {
        let h = &m.hists[op.index()];
        if h.is_empty() && m.errors[op.index()] == 0 {
            continue;
        }
        total += h.len();
        ops.insert(
            op.name().into(),
            op_json(h, m.errors[op.index()], m.seconds),
        );
    }
    serde_json::json!({
        "schema": "corekv-bench-result/1",
        "target": { "label": target_label, "addr": cfg.addr.to_string(), "protocol": format!("{:?}", cfg.protocol).to_lowercase() },
        "workload": {
            "name": cfg.workload.name,
            "mix": cfg.workload.mix.0.iter().map(|(op, p)| serde_json::json!({"op": op.name(), "fraction": p})).collect::<Vec<_>>(),
            "distribution": format!("{:?}", cfg.workload.chooser).split(['(', ' ', '{']).next().unwrap_or("").to_lowercase(),
            "keys": cfg.keys,
            "value_size_min": cfg.value_size.min,
            "value_size_max": cfg.value_size.max,
        },
        "config": {
            "connections": cfg.connections,
            "pipeline": cfg.pipeline,
            "client_cores": cfg.client_cores,
            "warmup_s": cfg.warmup.as_secs_f64(),
            "duration_s": cfg.duration.as_secs_f64(),
            "mode": if cfg.rate.is_some() { "open" } else { "closed" },
            "rate_ops_per_sec": cfg.rate,
        },
        "machine": machine(),
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "results": {
            "seconds": m.seconds,
            "throughput_ops_per_sec": total as f64 / m.seconds,
            "client_cpu_percent": cpu_percent,
            "ops": ops,
        },
    })
}

/// The result document of `--workload bank`: the same envelope as [`json`]
/// (one op, `transfer`: committed transfers, timed from the first read to the
/// commit, retries included; its `errors` are transfers abandoned) plus
/// `results.bank` with the retry and abort rates.
pub fn bank_json(
    addr: std::net::SocketAddr,
    target_label: &str,
    connections: usize,
    accounts: u64,
    r: &BankReport,
    cpu_percent: f64,
) -> serde_json::Value {
    let balance_max = (accounts * super::bank::INITIAL_BALANCE).to_string().len();
    serde_json::json!({
        "schema": "corekv-bench-result/1",
        "target": { "label": target_label, "addr": addr.to_string(), "protocol": "native" },
        "workload": {
            "name": "BANK",
            "mix": [{"op": "transfer", "fraction": 1.0}],
            "distribution": "uniform",
            "keys": accounts,
            "value_size_min": 1,
            "value_size_max": balance_max,
        },
        "config": {
            "connections": connections,
            "pipeline": 1,
            "client_cores": Vec::<usize>::new(),
            "warmup_s": 0.0,
            "duration_s": r.seconds,
            "mode": "closed",
            "rate_ops_per_sec": null,
        },
        "machine": machine(),
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "results": {
            "seconds": r.seconds,
            "throughput_ops_per_sec": r.rate(r.transfers),
            "client_cpu_percent": cpu_percent,
            "ops": { "transfer": op_json(&r.latency, r.gave_up, r.seconds) },
            "bank": {
                "committed": r.transfers,
                "committed_per_sec": r.rate(r.transfers),
                "retries": r.retries,
                "retries_per_sec": r.rate(r.retries),
                "aborts": r.aborts,
                "aborts_per_sec": r.rate(r.aborts),
                "stale_reads": r.conflicts,
                "abandoned": r.gave_up,
                "checks": r.checks,
                "check_reads": r.check_attempts,
                "checks_that_paused_transfers": r.paused_checks,
            },
        },
    })
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "kernel": kernel,
    })
}

/// CPU seconds this process has used (user + system).
pub fn cpu_seconds() -> f64 {
    // SAFETY: rusage is a plain C struct of integers; all-zero bytes are valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into the struct we pass by unique reference.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Write an HdrHistogram interval log (readable by HdrHistogram's log tools),
/// one histogram per op type tagged with its name, in microseconds.
pub fn write_hdr_log(path: &std::path::Path, m: &Measured) -> std::io::Result<()> {
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    use hdrhistogram::serialization::V2DeflateSerializer;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut serializer = V2DeflateSerializer::new();
    let now = std::time::SystemTime::now();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .with_start_time(now)
        .with_base_time(now)
        .with_max_value_divisor(1000.0);
    let mut log = builder.begin_log_with(&mut file, &mut serializer)?;
    for op in OpType::ALL {
        let h = &m.hists[op.index()];
        if h.is_empty() {
            continue;
        }
        log.write_histogram(
            h,
            std::time::Duration::ZERO,
            std::time::Duration::from_secs_f64(m.seconds),
            Tag::new(op.name()),
        )
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    }
    drop(log);
    std::io::Write::flush(&mut file)
}
