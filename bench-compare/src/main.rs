//! YCSB A, B, C, E and F against embedded corekv and RocksDB, one after the
//! other in the same run, on the same machine, with the same data set, the same
//! block cache budget and the same durability (every write synced before it is
//! acknowledged, group commit allowed). Prints throughput and p99 per engine and
//! workload, and the corekv/RocksDB ratios.
//!
//! Run (see docs/benchmarks.md):
//!   ROCKSDB_LIB_DIR=/usr/lib/x86_64-linux-gnu cargo run --release -- \
//!       [--records N] [--value-size B] [--cache-mib M] [--seconds S] [--clients C] [--dir DIR]
//!       [--spin-us U]   (corekv: an idle shard spins U µs before sleeping; default 0)
//!       [--distribution uniform|zipfian|latest]   (default: each workload's own)
//!       [--workloads A,B,C,E,F] [--engines corekv,rocksdb]
//!
//! Both engines bypass the OS page cache (corekv always; RocksDB with
//! use_direct_reads and direct I/O for flush and compaction), so the cache
//! budget is the only data cache for both. Compression is off for RocksDB
//! (corekv does not compress).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use corekv::bench::keygen::key_for;
use corekv::bench::workload::{workload, Distribution, OpType, Workload};
use corekv::core::config::EngineConfig;
use corekv::core::status::Status;
use corekv::core::types::Durability;
use corekv::shard::{Engine, OpKind, ShardContext};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
struct Args {
    records: u64,
    value_size: usize,
    cache_bytes: usize,
    spin_us: u64,
    seconds: u64,
    clients: usize,
    dir: std::path::PathBuf,
    workloads: Vec<String>,
    engines: Vec<String>,
    /// Overrides each workload's key distribution (e.g. uniform for cold reads).
    distribution: Option<Distribution>,
}

fn parse_args() -> Args {
    let mut a = Args {
        records: 400_000,
        value_size: 1000,
        cache_bytes: 32 << 20,
        spin_us: 0,
        seconds: 10,
        clients: 16,
        dir: std::env::temp_dir(),
        workloads: WORKLOADS.iter().map(|w| w.to_string()).collect(),
        engines: vec!["corekv".into(), "rocksdb".into()],
        distribution: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() {
        let v = &argv[i + 1];
        let n = || {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("{}: not a number: {v}", argv[i]))
        };
        match argv[i].as_str() {
            "--records" => a.records = n(),
            "--value-size" => a.value_size = n() as usize,
            "--cache-mib" => a.cache_bytes = (n() as usize) << 20,
            "--spin-us" => a.spin_us = n(),
            "--seconds" => a.seconds = n(),
            "--clients" => a.clients = n() as usize,
            "--dir" => a.dir = v.into(),
            "--workloads" => a.workloads = v.split(',').map(str::to_string).collect(),
            "--engines" => a.engines = v.split(',').map(str::to_string).collect(),
            "--distribution" => {
                a.distribution = Some(v.parse().unwrap_or_else(|e: String| panic!("{e}")))
            }
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    a
}

const WORKLOADS: [&str; 5] = ["A", "B", "C", "E", "F"];

#[derive(Default)]
struct Result1 {
    ops: u64,
    hist: Option<Histogram<u64>>,
}

impl Result1 {
    /// Add another client's operations and latencies to this total.
    fn absorb(&mut self, r: &Result1) {
        self.ops += r.ops;
        if let (Some(h), Some(rh)) = (self.hist.as_mut(), r.hist.as_ref()) {
            let _ = h.add(rh);
        }
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds")
}

fn value_for(rng: &mut impl Rng, len: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend((0..len).map(|_| rng.gen_range(b'a'..=b'z')));
}

// ---------------------------------------------------------------- RocksDB

fn rocks_open(path: &std::path::Path, a: &Args) -> (rocksdb::DB, rocksdb::Options) {
    let mut o = rocksdb::Options::default();
    o.enable_statistics();
    o.create_if_missing(true);
    o.set_compression_type(rocksdb::DBCompressionType::None);
    o.set_use_direct_reads(true);
    o.set_use_direct_io_for_flush_and_compaction(true);
    o.set_write_buffer_size(64 << 20);
    o.set_max_background_jobs(2);
    let mut t = rocksdb::BlockBasedOptions::default();
    t.set_block_size(4096);
    t.set_bloom_filter(10.0, false);
    let cache = rocksdb::Cache::new_lru_cache(a.cache_bytes).expect("block cache");
    t.set_block_cache(&cache);
    o.set_block_based_table_factory(&t);
    (rocksdb::DB::open(&o, path).expect("open rocksdb"), o)
}

fn rocks_run(a: &Args) -> Vec<(String, Result1)> {
    let dir = tempfile::tempdir_in(&a.dir).expect("tempdir");
    let (db, opts) = rocks_open(dir.path(), a);
    let db = Arc::new(db);
    // Load without per-write sync (both engines load the same way), then flush.
    let t = Instant::now();
    let mut nosync = rocksdb::WriteOptions::default();
    nosync.set_sync(false);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (mut k, mut v) = (Vec::new(), Vec::new());
    for i in 0..a.records {
        key_for(i, &mut k);
        value_for(&mut rng, a.value_size, &mut v);
        db.put_opt(&k, &v, &nosync).expect("load");
    }
    db.flush().expect("flush");
    db.compact_range::<&[u8], &[u8]>(None, None);
    eprintln!(
        "rocksdb: loaded {} records in {:.1?}",
        a.records,
        t.elapsed()
    );
    let inserted = Arc::new(AtomicU64::new(a.records));
    a.workloads
        .iter()
        .map(|name| {
            let w = workload(name, None, a.distribution, 0.99, a.records).expect("workload");
            let stop = Arc::new(AtomicBool::new(false));
            let threads: Vec<_> = (0..a.clients)
                .map(|c| {
                    let (db, w, stop, inserted) =
                        (db.clone(), w.clone(), stop.clone(), inserted.clone());
                    let value_size = a.value_size;
                    std::thread::spawn(move || {
                        let mut sync = rocksdb::WriteOptions::default();
                        sync.set_sync(true);
                        let mut rng = rand::rngs::StdRng::seed_from_u64(100 + c as u64);
                        let mut r = Result1 {
                            ops: 0,
                            hist: Some(hist()),
                        };
                        let (mut k, mut v) = (Vec::new(), Vec::new());
                        while !stop.load(Ordering::Relaxed) {
                            let op = w.mix.pick(&mut rng);
                            let started = Instant::now();
                            match op {
                                OpType::Read => {
                                    key_for(
                                        w.chooser.next(&mut rng, inserted.load(Ordering::Relaxed)),
                                        &mut k,
                                    );
                                    let _ = db.get_pinned(&k).expect("get");
                                }
                                OpType::Update | OpType::ReadModifyWrite => {
                                    key_for(
                                        w.chooser.next(&mut rng, inserted.load(Ordering::Relaxed)),
                                        &mut k,
                                    );
                                    if op == OpType::ReadModifyWrite {
                                        let _ = db.get_pinned(&k).expect("get");
                                    }
                                    value_for(&mut rng, value_size, &mut v);
                                    db.put_opt(&k, &v, &sync).expect("put");
                                }
                                OpType::Insert => {
                                    key_for(inserted.fetch_add(1, Ordering::Relaxed), &mut k);
                                    value_for(&mut rng, value_size, &mut v);
                                    db.put_opt(&k, &v, &sync).expect("insert");
                                }
                                OpType::Scan => {
                                    key_for(
                                        w.chooser.next(&mut rng, inserted.load(Ordering::Relaxed)),
                                        &mut k,
                                    );
                                    let n = rng.gen_range(1..=w.scan_max) as usize;
                                    let it = db.iterator(rocksdb::IteratorMode::From(
                                        &k,
                                        rocksdb::Direction::Forward,
                                    ));
                                    let mut got = 0usize;
                                    for e in it.take(n) {
                                        let (k, v) = e.expect("scan");
                                        got += k.len() + v.len();
                                    }
                                    std::hint::black_box(got);
                                }
                                // Not in the YCSB mixes this tool runs.
                                OpType::Delete | OpType::Ping | OpType::Txn1 | OpType::Txn2 => {}
                            }
                            if let Some(h) = r.hist.as_mut() {
                                let _ = h.record(started.elapsed().as_nanos() as u64);
                            }
                            r.ops += 1;
                        }
                        r
                    })
                })
                .collect();
            let before = rocks_cache_counts(&opts);
            std::thread::sleep(Duration::from_secs(a.seconds));
            stop.store(true, Ordering::Relaxed);
            let after = rocks_cache_counts(&opts);
            eprintln!(
                "rocksdb {name}: data block cache hits {}, misses {}",
                after.0 - before.0,
                after.1 - before.1
            );
            let mut total = Result1 {
                ops: 0,
                hist: Some(hist()),
            };
            for t in threads {
                let r = t.join().expect("client thread");
                total.absorb(&r);
            }
            (name.to_string(), total)
        })
        .collect()
}

/// RocksDB's data-block cache (hits, misses) so far, from its statistics.
fn rocks_cache_counts(o: &rocksdb::Options) -> (u64, u64) {
    let stats = o.get_statistics().unwrap_or_default();
    let count = |name: &str| {
        stats
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (
        count("rocksdb.block.cache.data.hit "),
        count("rocksdb.block.cache.data.miss "),
    )
}

// ---------------------------------------------------------------- corekv

fn corekv_engine(dir: &std::path::Path, a: &Args, durability: Durability) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.durability = durability;
    c.cache_bytes = a.cache_bytes;
    c.spin_before_park = Duration::from_micros(a.spin_us);
    c
}

fn corekv_run(a: &Args) -> Vec<(String, Result1)> {
    let dir = tempfile::tempdir_in(&a.dir).expect("tempdir");
    // Load (async durability, like RocksDB's unsynced load), flush, compact.
    let t = Instant::now();
    let load_args = a.clone();
    run_engine(
        corekv_engine(dir.path(), a, Durability::Async),
        move |ctx, shard_count| {
            let a = load_args.clone();
            Box::pin(async move {
                let me = u64::from(ctx.shard().0);
                let mut rng = rand::rngs::StdRng::seed_from_u64(1 + me);
                let (mut k, mut v) = (Vec::new(), Vec::new());
                let mut i = me;
                while i < a.records {
                    key_for(i, &mut k);
                    value_for(&mut rng, a.value_size, &mut v);
                    loop {
                        match ctx.put(&k, &v).await {
                            Ok(()) => break,
                            Err(corekv::core::status::Status::Overloaded) => {
                                glommio::timer::sleep(Duration::from_millis(1)).await
                            }
                            Err(e) => panic!("load: {}", e.name()),
                        }
                    }
                    i += u64::from(shard_count);
                }
                Result1::default()
            })
        },
    );
    // Every shard's data into tables, as RocksDB's flush + compact_range.
    run_engine(corekv_engine(dir.path(), a, Durability::Sync), |ctx, _| {
        Box::pin(async move {
            ctx.flush_local().await.expect("flush");
            ctx.compact_local().await.expect("compact");
            Result1::default()
        })
    });
    eprintln!(
        "corekv: loaded {} records in {:.1?}",
        a.records,
        t.elapsed()
    );
    let inserted = Arc::new(AtomicU64::new(a.records));
    a.workloads
        .iter()
        .map(|name| {
            let w = workload(name, None, a.distribution, 0.99, a.records).expect("workload");
            let (a2, inserted) = (a.clone(), inserted.clone());
            let results = run_engine(
                corekv_engine(dir.path(), a, Durability::Sync),
                move |ctx, shard_count| {
                    let (w, a, inserted) = (w.clone(), a2.clone(), inserted.clone());
                    Box::pin(async move { corekv_clients(ctx, shard_count, w, a, inserted).await })
                },
            );
            let mut total = Result1 {
                ops: 0,
                hist: Some(hist()),
            };
            for r in results {
                total.absorb(&r);
            }
            (name.to_string(), total)
        })
        .collect()
}

/// `clients / shards` closed-loop clients on this shard for `seconds`.
async fn corekv_clients(
    ctx: ShardContext,
    shard_count: u16,
    w: Workload,
    a: Args,
    inserted: Arc<AtomicU64>,
) -> Result1 {
    let per_shard = (a.clients / usize::from(shard_count)).max(1);
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let tasks: Vec<_> = (0..per_shard)
        .map(|c| {
            let (ctx, w, a, inserted) = (ctx.clone(), w.clone(), a.clone(), inserted.clone());
            glommio::spawn_local(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(
                    1000 + (u64::from(ctx.shard().0) << 16) + c as u64,
                );
                let mut r = Result1 {
                    ops: 0,
                    hist: Some(hist()),
                };
                let (mut k, mut v) = (Vec::new(), Vec::new());
                // The allocation-free path: one routed batch per client, reused.
                let mut batch = ctx.new_batch();
                let one =
                    |batch: &mut corekv::shard::RoutedBatch, kind: OpKind, k: &[u8], v: &[u8]| {
                        batch.clear();
                        let shard = ctx.router.shard_of(k);
                        batch.push(shard, kind, k, v);
                        shard
                    };
                while Instant::now() < deadline {
                    let op = w.mix.pick(&mut rng);
                    let started = Instant::now();
                    let ok = match op {
                        OpType::Read => {
                            key_for(
                                w.chooser.next(&mut rng, inserted.load(Ordering::Relaxed)),
                                &mut k,
                            );
                            let s = one(&mut batch, OpKind::Get, &k, b"");
                            ctx.router.execute(&mut batch).await;
                            matches!(batch.replies(s).get(0).0, Status::Ok | Status::NotFound)
                        }
                        OpType::Update | OpType::ReadModifyWrite | OpType::Insert => {
                            if op == OpType::Insert {
                                key_for(inserted.fetch_add(1, Ordering::Relaxed), &mut k);
                            } else {
                                key_for(
                                    w.chooser.next(&mut rng, inserted.load(Ordering::Relaxed)),
                                    &mut k,
                                );
                            }
                            let mut read_ok = true;
                            if op == OpType::ReadModifyWrite {
                                let s = one(&mut batch, OpKind::Get, &k, b"");
                                ctx.router.execute(&mut batch).await;
                                read_ok = matches!(
                                    batch.replies(s).get(0).0,
                                    Status::Ok | Status::NotFound
                                );
                            }
                            value_for(&mut rng, a.value_size, &mut v);
                            let s = one(&mut batch, OpKind::Put, &k, &v);
                            ctx.router.execute(&mut batch).await;
                            read_ok && batch.replies(s).get(0).0 == Status::Ok
                        }
                        OpType::Scan => {
                            key_for(
                                w.chooser.next(&mut rng, inserted.load(Ordering::Relaxed)),
                                &mut k,
                            );
                            let n = rng.gen_range(1..=w.scan_max);
                            ctx.scan(&k, b"", n).await.is_ok()
                        }
                        OpType::Delete | OpType::Ping | OpType::Txn1 | OpType::Txn2 => true,
                    };
                    assert!(ok, "corekv {op:?} failed");
                    if let Some(h) = r.hist.as_mut() {
                        let _ = h.record(started.elapsed().as_nanos() as u64);
                    }
                    r.ops += 1;
                }
                r
            })
        })
        .collect();
    let mut total = Result1 {
        ops: 0,
        hist: Some(hist()),
    };
    let counts = || {
        let lsm = &ctx.router.state().lsm;
        let p = lsm.pool_stats();
        let requests = lsm.stats.block_read_requests.get();
        [p.hits, p.prefetch_used, p.misses, requests]
    };
    let before = counts();
    for t in tasks {
        let r = t.await;
        total.absorb(&r);
    }
    let after = counts();
    let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    // Every shard serves every shard's scans: per-operation figures are per
    // operation of this shard's clients, a rough guide.
    eprintln!(
        "corekv shard {}: {} ops; cache hits {}, first uses of read-ahead blocks {}, blocks read {}, read requests {}",
        ctx.shard().0,
        total.ops,
        d[0],
        d[1],
        d[2],
        d[3]
    );
    total
}

/// Start an engine, run `job` once on every shard, collect the results, stop.
fn run_engine<F>(config: EngineConfig, job: F) -> Vec<Result1>
where
    F: Fn(ShardContext, u16) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result1>>>
        + Send
        + Sync
        + 'static,
{
    let (tx, rx) = mpsc::channel::<Result1>();
    let tx = Arc::new(Mutex::new(tx));
    let job = Arc::new(job);
    let engine = Engine::start(config, move |ctx: ShardContext| {
        let (tx, job) = (tx.clone(), job.clone());
        async move {
            let n = ctx.shard_count();
            let r = job(ctx.clone(), n).await;
            let _ = tx.lock().map(|t| t.send(r));
            ctx.shutdown.wait().await;
            Ok(())
        }
    })
    .expect("engine starts");
    let n = engine.info().shard_count;
    let results: Vec<Result1> = (0..n).map(|_| rx.recv().expect("shard result")).collect();
    engine.request_stop();
    engine.wait();
    results
}

fn main() {
    let a = parse_args();
    eprintln!("{a:?}");
    let rocks = if a.engines.iter().any(|e| e == "rocksdb") {
        rocks_run(&a)
    } else {
        Vec::new()
    };
    let core = if a.engines.iter().any(|e| e == "corekv") {
        corekv_run(&a)
    } else {
        Vec::new()
    };
    for (name, r) in core.iter().chain(&rocks) {
        eprintln!("{name}: {} ops", r.ops);
    }
    println!(
        "records {} x {} B values, cache {} MiB, {} clients, {} s per workload, sync writes, corekv spin {} µs",
        a.records,
        a.value_size,
        a.cache_bytes >> 20,
        a.clients,
        a.seconds,
        a.spin_us
    );
    println!(
        "workload | corekv ops/s | corekv p99 µs | rocksdb ops/s | rocksdb p99 µs | ratio ops/s"
    );
    for ((name, c), (_, r)) in core.iter().zip(&rocks) {
        let rate = |x: &Result1| x.ops as f64 / a.seconds as f64;
        let p99 = |x: &Result1| {
            x.hist
                .as_ref()
                .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0)
        };
        println!(
            "{name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}",
            rate(c),
            p99(c),
            rate(r),
            p99(r),
            rate(c) / rate(r).max(1.0)
        );
    }
}
