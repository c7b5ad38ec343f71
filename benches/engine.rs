//! Hot paths outside the codec and the WAL: key hashing and routing, memtable
//! operations, and the benchmark's own zipfian generator (which must be far
//! cheaper than a request, or the harness would measure itself).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rand::SeedableRng;

use corekv::bench::keygen::{key_for, KeyChooser, Zipfian};
use corekv::core::hash::{key_hash, shard_for_key};
use corekv::shard::lsm::memtable::Memtable;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    let key = b"user00000000001234567890";
    g.bench_function("xxh3_key_hash_24B", |b| {
        b.iter(|| black_box(key_hash(black_box(key))))
    });
    g.bench_function("shard_for_key_24B_8_shards", |b| {
        b.iter(|| black_box(shard_for_key(black_box(key), 8)))
    });

    let mut m = Memtable::default();
    let mut k = Vec::new();
    for i in 0..100_000u64 {
        key_for(i, &mut k);
        m.apply(k.clone(), Some(vec![7u8; 256]), i + 1);
    }
    let mut i = 0u64;
    g.bench_function("memtable_get_hit_100k", |b| {
        b.iter(|| {
            key_for(i % 100_000, &mut k);
            i += 7919;
            black_box(m.get(&k));
        })
    });
    let mut lsn = 200_000u64;
    g.bench_function("memtable_overwrite_256B_100k", |b| {
        b.iter(|| {
            key_for(lsn % 100_000, &mut k);
            lsn += 1;
            m.apply(k.clone(), Some(vec![1u8; 256]), lsn);
        })
    });
    g.bench_function("memtable_scan_100_entries", |b| {
        b.iter(|| black_box(m.range(b"user0000", b"").take(100).count()))
    });

    let z = Zipfian::new(1_000_000, 0.99);
    let chooser = KeyChooser::Zipfian(z.clone());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    g.bench_function("zipfian_next_1M", |b| {
        b.iter(|| black_box(z.next(&mut rng)))
    });
    g.bench_function("zipfian_scrambled_key_1M", |b| {
        b.iter(|| {
            key_for(chooser.next(&mut rng, 1_000_000), &mut k);
            black_box(k.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
