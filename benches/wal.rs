//! WAL append: encoding records into the group-commit batch (pure CPU), and one
//! batch written with O_DIRECT + fdatasync on a real file (what a group commit
//! costs), for batches of 1, 16 and 128 records of 256-byte values.

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use corekv::core::types::Durability;
use corekv::core::wal_format::{encode_record, Record};
use corekv::io::wal_writer::{WalConfig, WalWriter};
use corekv::io::DmaDisk;
use corekv::shard::group_commit::Commit;

fn encode(c: &mut Criterion) {
    let key = [b'k'; 16];
    let value = [b'v'; 256];
    let mut g = c.benchmark_group("wal_encode");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(1 << 20);
    let mut lsn = 1;
    g.bench_function("encode_put_256", |b| {
        b.iter(|| {
            if buf.len() > 1 << 19 {
                buf.clear();
            }
            encode_record(
                &mut buf,
                black_box(&Record::Put {
                    lsn,
                    key: &key,
                    value: &value,
                }),
            );
            lsn += 1;
        })
    });
    // Through the group-commit front door (LSN assignment, open batch). A fresh
    // Commit every 10,000 appends stands in for the flusher taking the batch.
    g.bench_function("commit_append_put_256", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(10_000);
                let commit = Commit::new(
                    Durability::Sync,
                    Duration::from_millis(10),
                    usize::MAX,
                    usize::MAX,
                    1,
                );
                let started = Instant::now();
                for _ in 0..n {
                    black_box(
                        commit
                            .append(|lsn| Record::Put {
                                lsn,
                                key: &key,
                                value: &value,
                            })
                            .is_ok(),
                    );
                }
                took += started.elapsed();
                left -= n;
            }
            took
        })
    });
    g.finish();
}

fn append_sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_append_fdatasync");
    g.sample_size(20);
    for records in [1usize, 16, 128] {
        g.throughput(Throughput::Elements(records as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(records),
            &records,
            |b, &records| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let path = dir.path().to_path_buf();
                    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                        .make()
                        .expect("executor");
                    ex.run(async move {
                        let probe = path.join("probe");
                        std::fs::write(&probe, vec![1u8; 4096]).expect("probe");
                        DmaDisk.prime_device_probe(&probe).await.expect("prime");
                        let cfg = WalConfig {
                            dir: path.join("wal"),
                            shard_id: 0,
                            shard_count: 1,
                            segment_bytes: 64 << 20,
                            prefill: true,
                        };
                        let mut w = WalWriter::open(DmaDisk, cfg, None, &[])
                            .await
                            .expect("open wal");
                        // Let the spare segment's zero-fill finish so it does not compete.
                        while w.background_step().await.expect("prefill") {}
                        let mut payload = Vec::new();
                        let mut lsn = 1u64;
                        let started = Instant::now();
                        for _ in 0..iters {
                            payload.clear();
                            for i in 0..records {
                                encode_record(
                                    &mut payload,
                                    &Record::Put {
                                        lsn: lsn + i as u64,
                                        key: b"key-0000000000000",
                                        value: &[7u8; 256],
                                    },
                                );
                            }
                            w.append_batch(&payload, lsn, records as u32)
                                .await
                                .expect("append");
                            lsn += records as u64;
                        }
                        let took = started.elapsed();
                        w.close().await.expect("close");
                        took
                    })
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, encode, append_sync);
criterion_main!(benches);
