//! The engine as a library: no network, the same shards, WAL and routing.

use std::sync::mpsc;
use std::sync::Arc;

use corekv::core::config::EngineConfig;
use corekv::shard::{Engine, ShardContext, ShardExit};

/// Each shard's service writes keys owned by every shard, reads them back, and
/// reports; the test then stops the engine and reopens it.
fn run(dir: &std::path::Path, write: bool) -> Vec<(u16, usize, usize)> {
    let mut config = EngineConfig::new(dir);
    config.shards = Some(2);
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(std::sync::Mutex::new(tx));
    let engine = Engine::start(config, move |ctx: ShardContext| {
        let tx = tx.clone();
        async move {
            let me = ctx.shard().0;
            let mut found = 0;
            for i in 0..200u32 {
                let key = format!("s{me}-k{i}");
                if write {
                    ctx.put(key.as_bytes(), &i.to_le_bytes())
                        .await
                        .map_err(|s| s.name().to_string())?;
                }
                if ctx
                    .get(key.as_bytes())
                    .await
                    .map_err(|s| s.name().to_string())?
                    == Some(i.to_le_bytes().to_vec())
                {
                    found += 1;
                }
            }
            let remote = (0..200u32)
                .filter(|i| ctx.router.shard_of(format!("s{me}-k{i}").as_bytes()) != ctx.shard())
                .count();
            let _ = tx.lock().unwrap().send((me, found, remote));
            ctx.shutdown.wait().await;
            Ok(())
        }
    })
    .expect("engine starts");
    let mut reports: Vec<_> = (0..2).map(|_| rx.recv().unwrap()).collect();
    engine.request_stop();
    assert!(engine.wait().iter().all(|e| *e == ShardExit::Clean));
    reports.sort();
    reports
}

#[test]
fn embedded_engine_routes_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path(), true);
    for (shard, found, remote) in &first {
        assert_eq!(*found, 200, "shard {shard} read back its writes");
        assert!(
            *remote > 50,
            "shard {shard}: keys spread over both shards ({remote} remote)"
        );
    }
    // Reopen: everything was durable.
    let second = run(dir.path(), false);
    assert!(
        second.iter().all(|(_, found, _)| *found == 200),
        "{second:?}"
    );
}

/// `ShardContext::scan` over 3 shards merges every shard's part in key order
/// and stops at the limit, whatever the ranges and limits (compared with a
/// BTreeMap), with and without a pushed-down filter; pages are small enough
/// that shards must be asked again.
#[test]
fn embedded_scan_merges_shards_exactly() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.shards = Some(3);
    let (tx, rx) = mpsc::channel::<Result<usize, String>>();
    let tx = Arc::new(std::sync::Mutex::new(tx));
    let engine = Engine::start(config, move |ctx: ShardContext| {
        let tx = tx.clone();
        async move {
            if ctx.shard().0 != 0 {
                ctx.shutdown.wait().await;
                return Ok(());
            }
            let mut rng = rand::rngs::StdRng::seed_from_u64(9);
            let mut model = std::collections::BTreeMap::new();
            for i in 0..600u32 {
                let k = format!("k{:05}", rng.gen_range(0..5000)).into_bytes();
                let v = format!("v{i}").into_bytes();
                ctx.put(&k, &v).await.map_err(|s| s.name().to_string())?;
                model.insert(k, v);
            }
            let mut checked = 0;
            for round in 0..300 {
                let a = format!("k{:05}", rng.gen_range(0..5000)).into_bytes();
                let b = if round % 3 == 0 {
                    Vec::new()
                } else {
                    format!("k{:05}", rng.gen_range(0..5000)).into_bytes()
                };
                let limit = [1u32, 2, 3, 7, 10, 50, 100, 1000][round % 8];
                let got = ctx
                    .scan(&a, &b, limit)
                    .await
                    .map_err(|s| s.name().to_string())?;
                let expect: Vec<(Vec<u8>, Vec<u8>)> = model
                    .range(a.clone()..)
                    .filter(|(k, _)| b.is_empty() || **k < b)
                    .take(limit as usize)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if got != expect {
                    let _ = tx.lock().unwrap().send(Err(format!(
                        "scan {:?}..{:?} limit {limit}: got {} entries, expected {}",
                        String::from_utf8_lossy(&a),
                        String::from_utf8_lossy(&b),
                        got.len(),
                        expect.len()
                    )));
                    return Ok(());
                }
                checked += got.len();
            }
            let _ = tx.lock().unwrap().send(Ok(checked));
            ctx.shutdown.wait().await;
            Ok(())
        }
    })
    .expect("engine starts");
    let result = rx.recv().unwrap();
    engine.request_stop();
    engine.wait();
    let checked = result.unwrap_or_else(|e| panic!("{e}"));
    assert!(checked > 1000, "{checked} entries checked");
}

/// A cold scan reads the blocks it needs with one device request and no block
/// past its last entry; the same scan again reads nothing. (Before, it read
/// one block per request, ahead in a doubling window that ran past the end.)
#[test]
fn cold_scan_reads_its_blocks_in_one_request() {
    use corekv::shard::runtime::telemetry::StorageSnapshot;
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = EngineConfig::new(dir.path());
        c.shards = Some(1);
        c
    };
    let value = |i: u32| {
        let mut v = format!("{i:08}").into_bytes();
        v.resize(1000, b'x');
        v
    };
    // Load, then move everything into one level-1 table.
    let (loaded_tx, loaded) = mpsc::channel::<Result<(), String>>();
    let loaded_tx = Arc::new(std::sync::Mutex::new(loaded_tx));
    let engine = Engine::start(config(), move |ctx: ShardContext| {
        let loaded_tx = loaded_tx.clone();
        async move {
            let load = async {
                for i in 0..3000u32 {
                    ctx.put(format!("k{i:05}").as_bytes(), &value(i))
                        .await
                        .map_err(|s| s.name().to_string())?;
                }
                ctx.flush_local().await?;
                ctx.compact_local().await.map(|_| ())
            };
            let loaded = load.await;
            let _ = loaded_tx.lock().unwrap().send(loaded);
            ctx.shutdown.wait().await;
            Ok(())
        }
    })
    .expect("engine starts");
    loaded.recv().unwrap().expect("load");
    engine.request_stop();
    assert!(engine.wait().iter().all(|e| *e == ShardExit::Clean));

    // Reopen with a cold cache and scan.
    let (tx, rx) = mpsc::channel::<Result<Vec<(u64, u64)>, String>>();
    let tx = Arc::new(std::sync::Mutex::new(tx));
    let engine = Engine::start(config(), move |ctx: ShardContext| {
        let tx = tx.clone();
        async move {
            let counts = || {
                let s = StorageSnapshot::capture(ctx.router.state());
                (s.block_read_requests, s.cache.misses)
            };
            let mut seen = vec![counts()];
            for (start, limit) in [(1000u32, 60u32), (1000, 60), (2000, 1)] {
                let got = ctx
                    .scan(format!("k{start:05}").as_bytes(), b"", limit)
                    .await
                    .map_err(|s| s.name().to_string())?;
                let expect: Vec<_> = (start..start + limit)
                    .map(|i| (format!("k{i:05}").into_bytes(), value(i)))
                    .collect();
                if got != expect {
                    let _ = tx.lock().unwrap().send(Err(format!(
                        "scan from {start}: {} entries, not the {limit} expected",
                        got.len()
                    )));
                    return Ok(());
                }
                seen.push(counts());
            }
            let _ = tx.lock().unwrap().send(Ok(seen));
            ctx.shutdown.wait().await;
            Ok(())
        }
    })
    .expect("engine starts");
    let seen = rx.recv().unwrap().unwrap_or_else(|e| panic!("{e}"));
    engine.request_stop();
    engine.wait();
    let delta = |i: usize| (seen[i + 1].0 - seen[i].0, seen[i + 1].1 - seen[i].1);
    // 60 entries of ~1,010 bytes, 4 to a 4 KiB block: 15 or 16 blocks, plus
    // the one the estimate adds for where the start falls in its block.
    let (requests, blocks) = delta(0);
    assert_eq!(requests, 1, "cold scan: {requests} requests");
    assert!(
        (15..=17).contains(&blocks),
        "cold scan read {blocks} blocks"
    );
    assert_eq!(delta(1), (0, 0), "the same scan again is served from cache");
    let (requests, blocks) = delta(2);
    assert!(
        requests == 1 && blocks <= 2,
        "limit 1: {requests} requests, {blocks} blocks"
    );
}
