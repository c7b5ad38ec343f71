//! The alert rules and the monitoring docs against a running server (issue
//! 22, findings 4 and 9): every metric named in docs/monitoring.md,
//! docs/errors.md, docs/operations.md, docs/deployment.md, docs/tuning.md and
//! docs/alerts/corekv-rules.yml is exported; every /health field
//! monitoring.md names is there; monitoring.md quotes the rules file verbatim;
//! and, where promtool is installed (CI installs it), the rules check and their
//! unit tests pass.

use crate::common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}

fn doc(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// Every `corekv_…` metric name in `text`, with `{a,b}` alternatives expanded
/// (`corekv_cache_{hits,misses}_total`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("corekv_") {
        let start = i + at;
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        let head = &text[start..end];
        if end < b.len() && b[end] == b'{' && head.ends_with('_') {
            if let Some(close) = text[end..].find('}') {
                let alts = &text[end + 1..end + close];
                if alts
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == ',' || c == '_')
                {
                    let mut tail_end = end + close + 1;
                    while tail_end < b.len()
                        && (b[tail_end].is_ascii_lowercase() || b[tail_end] == b'_')
                    {
                        tail_end += 1;
                    }
                    let tail = &text[end + close + 1..tail_end];
                    for a in alts.split(',') {
                        out.insert(format!("{head}{a}{tail}"));
                    }
                    i = tail_end;
                    continue;
                }
            }
        }
        let name = head.trim_end_matches('_');
        // `corekv_…` also prefixes log targets and module paths: metric names
        // only (no `::`).
        if !text[end..].starts_with("::") && name.len() > "corekv_".len() {
            out.insert(name.to_string());
        }
        i = end;
    }
    out
}

#[test]
fn every_documented_metric_and_health_field_exists() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2"]);
    // Some traffic, including a client outcome and a server-side error name.
    let mut c = server.client();
    c.put(b"k", b"v").unwrap();
    use corekv::core::txn_format::{Cond, Write};
    let r = c
        .txn(&[Cond::Equals(b"k", b"not v")], &[Write::Put(b"k", b"x")])
        .unwrap();
    assert!(matches!(
        r,
        corekv::net::client::TxnResult::ConditionFailed(_)
    ));
    std::thread::sleep(std::time::Duration::from_millis(600));
    let metrics = http_get(server.admin, "/metrics");
    let mut exported = BTreeSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            exported.insert(rest.split_whitespace().next().unwrap_or("").to_string());
        } else if line.starts_with("corekv_") {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            exported.insert(name.to_string());
        }
    }
    let known = |n: &str| {
        exported.contains(n)
            || ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| n.strip_suffix(suffix).is_some_and(|b| exported.contains(b)))
    };
    let mut missing = Vec::new();
    for file in [
        "docs/monitoring.md",
        "docs/errors.md",
        "docs/operations.md",
        "docs/deployment.md",
        "docs/tuning.md",
        "docs/alerts/corekv-rules.yml",
    ] {
        for name in metric_names(&doc(file)) {
            if !known(&name) {
                missing.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named in the docs, not exported: {missing:?}"
    );
    assert!(
        metrics.contains("class=\"client\"") && metrics.contains("error=\"CONDITION_FAILED\""),
        "errors carry their class"
    );

    let health: serde_json::Value =
        serde_json::from_str(&http_get(server.admin, "/health")).unwrap();
    let monitoring = doc("docs/monitoring.md");
    let fields = monitoring
        .split("Each shard reports")
        .nth(1)
        .and_then(|t| t.split('.').next())
        .expect("monitoring.md lists the per-shard /health fields");
    let shard = &health["shards"][0];
    for f in fields.split('`').skip(1).step_by(2) {
        assert!(
            !shard[f].is_null() || f == "reason",
            "/health has no per-shard `{f}`: {shard}"
        );
        assert!(
            shard.get(f).is_some(),
            "/health has no per-shard `{f}`: {shard}"
        );
    }
    server.stop();
}

#[test]
fn monitoring_md_quotes_the_rules_file() {
    let rules = doc("docs/alerts/corekv-rules.yml");
    assert!(
        doc("docs/monitoring.md").contains(&rules),
        "docs/monitoring.md must quote docs/alerts/corekv-rules.yml verbatim"
    );
}

#[test]
fn alert_rules_pass_promtool() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/alerts");
    let Ok(o) = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg("corekv-rules.yml")
        .current_dir(&dir)
        .output()
    else {
        eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus); the metric-name check still ran");
        return;
    };
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new("promtool")
        .args(["test", "rules", "corekv-rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_name_scanner_expands_alternatives() {
    let n = metric_names("`corekv_cache_{hits,misses}_total` and corekv_l0_tables, corekv::shard");
    assert!(n.contains("corekv_cache_hits_total") && n.contains("corekv_cache_misses_total"));
    assert!(n.contains("corekv_l0_tables"));
    assert!(!n.iter().any(|x| x.contains("shard")), "{n:?}");
}
