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
