//! Pushed-down scan filters over cached table blocks, end to end inside one
//! shard: the merge over the LSM's layers, block decoding, and the filter, for
//! a filter that matches nothing (so the figure is the cost of examining, not of
//! returning). Reports GB/s of table bytes scanned per core.
//!
//! Run: `cargo bench --bench scan_filter` (COREKV_BENCH_ENTRIES to resize).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use corekv::core::config::EngineConfig;
use corekv::core::filter::{FILTER_JSON_EQ, FILTER_KEY_PREFIX, FILTER_VALUE_CONTAINS};
use corekv::core::types::Durability;
use corekv::shard::{Engine, ShardContext};

fn main() {
    let entries: u32 = std::env::var("COREKV_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = EngineConfig::new(dir.path());
    config.shards = Some(1);
    config.durability = Durability::Async;
    config.cache_bytes = 1 << 30;
    let (tx, rx) = mpsc::channel::<String>();
    let engine = Engine::start(config, move |ctx: ShardContext| {
        let tx = tx.clone();
        async move {
            let report = run(&ctx, entries).await;
            let _ = tx.send(report);
            ctx.shutdown.wait().await;
            Ok(())
        }
    })
    .expect("engine starts");
    let report = rx
        .recv_timeout(Duration::from_secs(1800))
        .expect("bench finishes");
    println!("{report}");
    engine.request_stop();
    engine.wait();
}

async fn run(ctx: &ShardContext, entries: u32) -> String {
    for i in 0..entries {
        let key = format!(
            "user{:010}",
            u64::from(i).wrapping_mul(2_654_435_761) % 10_000_000_000
        );
        let value = format!(
            "{{\"id\":{i},\"name\":\"user-{i}\",\"country\":\"c{}\",\"balance\":{},\"note\":\"{}\"}}",
            i % 200,
            i * 7 % 100_000,
            "x".repeat(100 + (i % 64) as usize)
        );
        // OVERLOADED is back-pressure (the WAL or a flush is behind): wait, retry.
        loop {
            match ctx.put(key.as_bytes(), value.as_bytes()).await {
                Ok(()) => break,
                Err(corekv::core::status::Status::Overloaded) => {
                    glommio::timer::sleep(Duration::from_millis(1)).await
                }
                Err(e) => panic!("put: {}", e.name()),
            }
        }
    }
    ctx.flush_local().await.expect("flush");
    ctx.compact_local().await.expect("compact");
    let lsm = &ctx.router.state().lsm;
    let (l0, l1) = lsm.table_bytes();
    let table_bytes = (l0 + l1) as f64;
    // Warm the cache with one unfiltered pass.
    let all = ctx.scan(b"", b"", u32::MAX).await.expect("scan");
    assert_eq!(all.len(), entries as usize);
    drop(all);
    let mut out = format!(
        "{entries} entries, {:.1} MiB of tables, cache resident {:.1} MiB\n\
         filter                    | median GB/s | runs (s)\n",
        table_bytes / 1048576.0,
        lsm.pool_stats().resident_bytes as f64 / 1048576.0
    );
    let mut json_arg = 7u32.to_le_bytes().to_vec();
    json_arg.extend_from_slice(b"country\"zz\"");
    // A literal that occurs in many records ("c7", "c70".."c79", balances):
    // most must be parsed, the pre-check's worst case.
    let mut json_c7 = 7u32.to_le_bytes().to_vec();
    json_c7.extend_from_slice(b"country\"c7\"");
    let c7 = (0..entries).filter(|i| i % 200 == 7).count();
    let cases: [(&str, u8, &[u8], usize); 4] = [
        ("key prefix, no match", FILTER_KEY_PREFIX, b"nobody", 0),
        (
            "value contains, no match",
            FILTER_VALUE_CONTAINS,
            b"needle-absent",
            0,
        ),
        ("json country=\"zz\", none", FILTER_JSON_EQ, &json_arg, 0),
        ("json country=\"c7\", 0.5%", FILTER_JSON_EQ, &json_c7, c7),
    ];
    for (name, kind, arg, want) in cases {
        let mut runs = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let got = ctx
                .scan_filtered(b"", b"", u32::MAX, kind, arg)
                .await
                .expect("scan");
            assert_eq!(got.len(), want, "{name}");
            runs.push(t.elapsed().as_secs_f64());
        }
        runs.sort_by(f64::total_cmp);
        let median = runs[runs.len() / 2];
        let gbps = table_bytes / median / 1e9;
        out.push_str(&format!(
            "{name:<25} | {gbps:>11.2} | {}\n",
            runs.iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    out
}
