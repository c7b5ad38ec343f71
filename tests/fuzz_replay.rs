//! The fuzz targets' code on every `cargo test`: (1) every input kept in
//! fuzz/regressions/<target>/ (crashes and interesting inputs found by
//! `fuzz/run.sh`) is replayed; (2) valid encodings of every format are
//! mutated a few thousand times with a fixed seed (bit flips, truncations,
//! absurd lengths, splices) and decoded. Nothing may panic.

use std::path::Path;

use corekv::core::manifest_format::{encode_manifest, ManifestState, TableEntry};
use corekv::core::wal_format::{encode_record, Record};
use corekv::fuzzing;
use corekv::io::sim_disk::SimDisk;
use corekv::io::table_file::{table_file_name, TableWriter};
use corekv::io::wal_writer::{WalConfig, WalWriter};
use corekv::io::Disk;
use corekv::net::codec::{encode_request, Request};
use futures_lite::future::block_on;
use rand::{Rng, SeedableRng};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("frames", fuzzing::frames),
    ("wal", fuzzing::wal),
    ("table", fuzzing::table),
    ("recovery", fuzzing::recovery),
];

#[test]
fn regressions_found_by_fuzzing_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (name, f) in TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for e in entries.flatten().filter(|e| e.file_name() != ".gitkeep") {
            let bytes = std::fs::read(e.path()).expect("read regression input");
            f(&bytes);
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} regression inputs");
}

fn frames_seed() -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(&mut out, 1, &Request::Hello);
    encode_request(
        &mut out,
        2,
        &Request::Put {
            key: b"key",
            value: b"value",
        },
    );
    encode_request(&mut out, 3, &Request::Get { key: b"key" });
    encode_request(&mut out, 4, &Request::Delete { key: b"key" });
    out
}

fn wal_segment_seed() -> (SimDisk, Vec<u8>) {
    let disk = SimDisk::new(1);
    let dir = Path::new("/d/wal");
    let cfg = WalConfig {
        dir: dir.into(),
        shard_id: 0,
        shard_count: 1,
        segment_bytes: 1024 * 1024,
        prefill: false,
    };
    block_on(async {
        disk.create_dir_all(dir).await.unwrap();
        let mut w = WalWriter::open(disk.clone(), cfg, None, &[]).await.unwrap();
        let mut lsn = 1;
        for b in 0..3u64 {
            let mut payload = Vec::new();
            for i in 0..3u64 {
                let key = format!("k{b}{i}").into_bytes();
                encode_record(
                    &mut payload,
                    &Record::Put {
                        lsn: lsn + i,
                        key: &key,
                        value: b"v",
                    },
                );
            }
            w.append_batch(&payload, lsn, 3).await.unwrap();
            lsn += 3;
        }
    });
    let mut bytes = disk.contents(&dir.join("0000000000000001.wal")).unwrap();
    bytes.truncate(16 * 1024);
    (disk, bytes)
}

fn table_seed() -> Vec<u8> {
    let disk = SimDisk::new(2);
    let dir = Path::new("/d/tables");
    block_on(async {
        disk.create_dir_all(dir).await.unwrap();
        let mut w = TableWriter::create(&disk, dir, 1, 0).await.unwrap();
        for i in 0..200u32 {
            let v = (i % 5 != 0).then(|| vec![b'x'; (i as usize * 13) % 300]);
            w.add(format!("key{i:05}").as_bytes(), v.as_deref())
                .await
                .unwrap();
        }
        w.finish(9).await.unwrap();
    });
    disk.contents(&dir.join(table_file_name(1))).unwrap()
}

/// A data block's payload (no trailer), so that mutations reach the entry
/// decoder instead of stopping at the checksum.
fn data_block_payload() -> Vec<u8> {
    let mut b = corekv::core::block_format::DataBlockBuilder::default();
    for i in 0..40u32 {
        let v = (i % 7 != 0).then(|| vec![b'v'; (i as usize * 11) % 90]);
        b.add(format!("key{i:04}").as_bytes(), v.as_deref());
    }
    let mut out = Vec::new();
    b.finish_into(&mut out);
    out
}

fn manifest_seed() -> Vec<u8> {
    encode_manifest(
        0,
        &ManifestState {
            edition: 3,
            next_table_id: 5,
            wal_cutoff_lsn: 77,
            applied_lsn: 77,
            tables: vec![TableEntry {
                id: 1,
                level: 1,
                entries: 10,
                file_bytes: 8192,
                max_lsn: 77,
                smallest: b"a".to_vec(),
                largest: b"z".to_vec(),
            }],
        },
    )
}

fn mutate(rng: &mut impl Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.gen_range(1..6) {
        if v.is_empty() {
            v.push(rng.gen());
            continue;
        }
        let i = rng.gen_range(0..v.len());
        match rng.gen_range(0..6) {
            0 => v[i] ^= 1 << rng.gen_range(0..8),
            1 => v.truncate(i),
            2 => v[i] = rng.gen(),
            3 => {
                // An absurd little-endian length where one may be.
                let n: u32 = *[u32::MAX, 1 << 31, 65_536, 0]
                    .get(rng.gen_range(0..4))
                    .unwrap_or(&0);
                for (j, b) in n.to_le_bytes().iter().enumerate() {
                    if let Some(x) = v.get_mut(i + j) {
                        *x = *b;
                    }
                }
            }
            4 => {
                let j = rng.gen_range(0..v.len());
                let chunk: Vec<u8> = v[j..(j + 64).min(v.len())].to_vec();
                v.splice(i..i, chunk);
            }
            _ => v.insert(i, rng.gen()),
        }
    }
    v
}

#[test]
fn mutated_valid_inputs_never_panic() {
    let iterations: usize = std::env::var("COREKV_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let (_, segment) = wal_segment_seed();
    let table = table_seed();
    // The table's first data block, its footer, and the manifest as the
    // `table` target's seeds; a WAL segment, table and manifest together
    // (0xA5-separated) as the `recovery` target's.
    let footer = table[table.len() - 4096..].to_vec();
    let mut recovery_seed = segment.clone();
    recovery_seed.push(0xA5);
    recovery_seed.push(0xA5);
    recovery_seed.extend_from_slice(&manifest_seed());
    recovery_seed.push(0xA5);
    recovery_seed.extend_from_slice(&table);
    // (target, seeds, mutations per seed): recovery is the slow one.
    let seeds: Vec<(Target, Vec<Vec<u8>>, usize)> = vec![
        (fuzzing::frames, vec![frames_seed()], iterations),
        (
            fuzzing::wal,
            vec![segment[4096..].to_vec(), segment.clone()],
            iterations,
        ),
        (
            fuzzing::table,
            vec![
                data_block_payload(),
                table[..4096].to_vec(),
                footer,
                manifest_seed(),
            ],
            iterations,
        ),
        (fuzzing::recovery, vec![recovery_seed], iterations / 10),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
    let mut runs = 0;
    for (f, inputs, n) in &seeds {
        for input in inputs {
            f(input);
            for _ in 0..*n {
                f(&mutate(&mut rng, input));
                runs += 1;
            }
        }
    }
    eprintln!("{runs} mutated inputs decoded without a panic");
}
