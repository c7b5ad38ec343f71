//! Sorted tables on real files through a real server: a dataset many times the
//! block cache is written and read back within a memory bound, and damaged
//! table blocks (a flipped byte, a zeroed sector, a block copied to the wrong
//! place) are refused by reads with STORAGE_CORRUPT and named by `verify`.

use crate::common;

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use corekv::core::block_format::{open_block, BlockKind, DataBlock};
use corekv::core::status::Status;
use corekv::core::table_format::{access_index, Footer, FOOTER_EXTENT};
use corekv::io::table_file::{parse_table_file_name, FOOTER_BLOCK_NO};
use corekv::net::client::{Client, ClientError};
use corekv::net::codec::Request;

fn metric(admin: SocketAddr, name: &str) -> f64 {
    common::metric_samples(admin, name).iter().sum()
}

fn value_for(i: u32, len: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    while v.len() < len {
        v.push(b'a' + (i as usize + v.len()) as u8 % 26);
    }
    v
}

/// Put `keys` pipelined, 64 at a time; what the server answers OVERLOADED
/// (compaction behind: level 0 full) is sent again after a pause, as a
/// client should.
fn put_all(c: &mut Client, keys: &[(Vec<u8>, Vec<u8>)]) {
    for chunk in keys.chunks(64) {
        let mut todo: Vec<&(Vec<u8>, Vec<u8>)> = chunk.iter().collect();
        while !todo.is_empty() {
            for (k, v) in &todo {
                c.queue(&Request::Put { key: k, value: v });
            }
            c.flush().unwrap();
            let mut again = Vec::new();
            for kv in todo {
                let r = c.recv().unwrap();
                match r.status {
                    Status::Overloaded => again.push(kv),
                    s => assert!(s.is_ok(), "{s:?}"),
                }
            }
            if !again.is_empty() {
                std::thread::sleep(Duration::from_millis(2));
            }
            todo = again;
        }
    }
}

fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

const CACHE: u64 = 4 * 1024 * 1024;
/// What a server holds besides the block cache, with this test's settings, per
/// shard: the memtable (writes stop at 4x its 1 MiB) and a frozen one being
/// flushed (1 MiB), glommio's registered I/O memory (2 MiB), a flush's and a
/// compaction's staging buffers (1 MiB each) and bloom builders, pinned index
/// and bloom blocks; per process: the binary, thread stacks, the admin thread,
/// and the allocator's slack (freed memtable memory is not always returned).
/// Measured peaks: 26-42 MiB on the 2026-11-23 machine; 43-59 MiB over 26
/// runs on the 2026-12-06 one (the same code before and after that day's
/// change alike; the spread is the allocator's, the peak comes during the
/// writes), where the former 48 MiB failed one run in five. A cache that
/// ignored its budget would hold most of the 78 MiB written on top of this
/// (well over 100 MiB), so the bound still catches what the test is for.
/// docs/architecture.md lists it.
const FIXED_OVERHEAD: u64 = 64 * 1024 * 1024;

fn small_storage_flags() -> Vec<&'static str> {
    vec![
        "--shards",
        "2",
        "--cache-bytes",
        "4194304",
        "--memtable-bytes",
        "1048576",
        "--table-target-bytes",
        "8388608",
        "--wal-segment-bytes",
        "4194304",
        "--value-bytes-max",
        "65536",
    ]
}

#[test]
fn a_dataset_ten_times_the_cache_reads_back_within_the_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &small_storage_flags());
    let mut c = server.client();
    // 20,000 x 4 KiB = 78 MiB of values: almost 20x the 4 MiB cache, so a
    // cache that ignored its budget would blow the memory bound by far.
    let n = 20_000u32;
    let data: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| (format!("key-{i:08}").into_bytes(), value_for(i, 4096)))
        .collect();
    let total: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(total as u64 >= 10 * CACHE);
    put_all(&mut c, &data);
    let peak_after_writes = peak_rss(server.pid());
    // Read everything back in a different order, through multi-gets.
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| (i * 7919) % data.len());
    for chunk in order.chunks(100) {
        let keys: Vec<&[u8]> = chunk.iter().map(|&i| data[i].0.as_slice()).collect();
        let got = c.mget(&keys).unwrap();
        for (&i, v) in chunk.iter().zip(got) {
            assert_eq!(v.as_deref(), Some(data[i].1.as_slice()), "key {i}");
        }
    }
    let misses = metric(server.admin, "corekv_cache_misses");
    let tables =
        metric(server.admin, "corekv_l0_tables") + metric(server.admin, "corekv_l1_tables");
    assert!(tables >= 2.0, "data went to tables ({tables})");
    assert!(
        misses > 1000.0,
        "reads came from disk ({misses} block reads)"
    );
    let resident = metric(server.admin, "corekv_cache_resident_bytes");
    assert!(resident <= CACHE as f64, "cache holds {resident} bytes");
    let peak = peak_rss(server.pid());
    eprintln!(
        "wrote and read {} MiB; peak RSS {} MiB ({} MiB after the writes); {misses} block reads; {tables} tables",
        total >> 20,
        peak >> 20,
        peak_after_writes >> 20
    );
    assert!(
        peak <= CACHE + FIXED_OVERHEAD,
        "peak RSS {} MiB exceeds cache {} MiB + fixed overhead {} MiB",
        peak >> 20,
        CACHE >> 20,
        FIXED_OVERHEAD >> 20
    );
    // A range scan over table data, in order, after a restart.
    assert_eq!(server.stop().0, Some(0));
    let server = common::start_server(dir.path(), &small_storage_flags());
    let mut c = server.client();
    let page = c
        .scan_page(b"key-00005000", b"key-00005100", 1000, &Default::default())
        .unwrap();
    let keys: Vec<_> = page.entries.iter().map(|(k, _)| k.clone()).collect();
    let want: Vec<_> = (5000..5100)
        .map(|i| format!("key-{i:08}").into_bytes())
        .collect();
    assert_eq!(keys, want);
    assert_eq!(page.entries[17].1, value_for(5017, 4096));
}

/// Every table file of every shard.
fn table_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir).unwrap().flatten() {
        let tables = shard.path().join("tables");
        let Ok(entries) = std::fs::read_dir(&tables) else {
            continue;
        };
        for e in entries.flatten() {
            if let Some(id) = e.file_name().to_str().and_then(parse_table_file_name) {
                out.push((e.path(), id));
            }
        }
    }
    out.sort();
    out
}

/// (offset, extent, keys) of each data block of a table file, read with the
/// format's own decoders.
fn blocks_of(path: &Path, id: u64) -> Vec<(u64, usize, Vec<Vec<u8>>)> {
    let bytes = std::fs::read(path).unwrap();
    let footer_at = bytes.len() - FOOTER_EXTENT;
    let payload = open_block(&bytes[footer_at..], id, FOOTER_BLOCK_NO, BlockKind::Footer).unwrap();
    let footer = Footer::decode(payload, id, bytes.len() as u64).unwrap();
    let at = footer.index_offset.get() as usize;
    let raw = &bytes[at..at + footer.index_extent.get() as usize];
    let payload = open_block(raw, id, footer.index_block_no.get(), BlockKind::Index).unwrap();
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(payload);
    let index = access_index(&aligned).unwrap();
    index
        .blocks
        .iter()
        .map(|b| {
            let (off, ext) = (b.offset.to_native(), b.extent.to_native() as usize);
            let payload = open_block(
                &bytes[off as usize..off as usize + ext],
                id,
                b.block_no.to_native(),
                BlockKind::Data,
            )
            .unwrap();
            let block = DataBlock::parse(payload).unwrap();
            let mut keys = Vec::new();
            let mut cur = block.cursor();
            while let Some((k, _, _)) = cur.next().unwrap() {
                keys.push(k.to_vec());
            }
            (off, ext, keys)
        })
        .collect()
}

fn get_status(c: &mut Client, key: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    match c.get(key) {
        Ok(v) => Ok(v),
        Err(ClientError::Status { status, .. }) => Err(status),
        Err(e) => panic!("GET failed outside the protocol: {e}"),
    }
}

#[test]
fn damaged_table_blocks_are_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &small_storage_flags());
    let mut c = server.client();
    // Distinct keys written once: each lives in exactly one place.
    let data: Vec<(Vec<u8>, Vec<u8>)> = (0..3000u32)
        .map(|i| (format!("key-{i:08}").into_bytes(), value_for(i, 1000)))
        .collect();
    put_all(&mut c, &data);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(server.admin, "corekv_flushes") < 2.0 {
        assert!(Instant::now() < deadline, "no flush happened");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.stop().0, Some(0));

    let (path, id) = table_files(dir.path())
        .into_iter()
        .next()
        .expect("a table file");
    let blocks = blocks_of(&path, id);
    assert!(blocks.len() >= 8, "{} blocks", blocks.len());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // 1: one flipped byte in block 1.
    let (off1, _, keys1) = &blocks[1];
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, off1 + 100).unwrap();
    file.write_all_at(&[b[0] ^ 0x01], off1 + 100).unwrap();
    // 2: block 3's sector zeroed (small blocks never straddle a sector).
    let (off3, _, keys3) = &blocks[3];
    assert_eq!(off3 % 4096, 0);
    file.write_all_at(&[0u8; 4096], *off3).unwrap();
    // 3: a misdirected write: the sector holding block `a` written over the
    // sector of another block `b` of the same length, so what is read at b is
    // a perfectly valid block — with the wrong name.
    let (a, b) = (4..blocks.len())
        .flat_map(|a| (a + 2..blocks.len()).map(move |b| (a, b)))
        .find(|&(a, b)| {
            blocks[a].1 == blocks[b].1 && blocks[a].0 % 4096 == 0 && blocks[b].0 % 4096 == 0
        })
        .expect("two blocks of equal length");
    let mut copy = vec![0u8; 4096];
    file.read_exact_at(&mut copy, blocks[a].0).unwrap();
    file.write_all_at(&copy, blocks[b].0).unwrap();
    let (off5, _, keys5) = &blocks[b];
    file.sync_all().unwrap();
    drop(file);

    let server = common::start_server(dir.path(), &small_storage_flags());
    let mut c = server.client();
    for (what, keys) in [
        ("flipped byte", keys1),
        ("zeroed sector", keys3),
        ("misdirected block", keys5),
    ] {
        for k in [&keys[0], &keys[keys.len() / 2]] {
            assert_eq!(
                get_status(&mut c, k),
                Err(Status::StorageCorrupt),
                "{what}: {}",
                String::from_utf8_lossy(k)
            );
        }
    }
    // Intact blocks still serve, with the right bytes.
    for k in [&blocks[0].2[0], &blocks[2].2[0], &blocks[a].2[0]] {
        let i: u32 = String::from_utf8_lossy(&k[4..]).parse().unwrap();
        assert_eq!(get_status(&mut c, k), Ok(Some(value_for(i, 1000))));
    }
    // A scan over the damaged range fails instead of skipping the block,
    // also when it starts in an intact block and reads the damaged one in
    // the same device request (scans read neighbouring blocks together).
    for from in [&keys1[0], &blocks[0].2[0]] {
        let scanned = c.scan_page(from, b"", 1000, &Default::default());
        assert!(
            scanned.is_err(),
            "a scan over a corrupt block must not succeed"
        );
    }
    assert_eq!(server.stop().0, Some(0));

    let out = Command::new(common::corekv_bin())
        .arg("verify")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    for (block, off) in [(1, off1), (3, off3), (b, off5)] {
        assert!(
            report.lines().any(|l| l.contains("DAMAGE")
                && l.contains(&name)
                && l.contains(&format!("offset {off} (block {block})"))),
            "verify must name {name} block {block} at {off}:\n{report}"
        );
    }
    assert!(report.contains("checksum mismatch"), "{report}");
    assert!(report.contains("misplaced block"), "{report}");
}

/// Pure overwrites: once compaction settles (the shard compacts level 0 when
/// idle), the tables hold one version per key: space ≤ 1.5x the live data.
#[test]
fn space_settles_under_pure_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &small_storage_flags());
    let mut c = server.client();
    let keys = 2000u32;
    let mut live = 0usize;
    for round in 0..10u32 {
        let data: Vec<(Vec<u8>, Vec<u8>)> = (0..keys)
            .map(|i| {
                (
                    format!("key-{i:08}").into_bytes(),
                    value_for(i + round, 1000),
                )
            })
            .collect();
        live = data.iter().map(|(k, v)| k.len() + v.len()).sum();
        put_all(&mut c, &data);
    }
    let written = 10 * live;
    let flushes = metric(server.admin, "corekv_flushes");
    assert!(
        flushes >= 8.0,
        "overwrites went through tables ({flushes} flushes)"
    );
    // Idle: level 0 is compacted into level 1 within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let table_bytes = loop {
        let l0 = metric(server.admin, "corekv_l0_tables");
        let bytes =
            metric(server.admin, "corekv_l0_bytes") + metric(server.admin, "corekv_l1_bytes");
        if l0 == 0.0 {
            break bytes;
        }
        assert!(
            Instant::now() < deadline,
            "level 0 never settled ({l0} tables)"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let memtables = metric(server.admin, "corekv_memtable_bytes");
    let ratio = table_bytes / live as f64;
    eprintln!(
        "wrote {} MiB over {} MiB of live data; tables {:.1} MiB + memtables {:.1} MiB; ratio {ratio:.2}",
        written >> 20,
        live >> 20,
        table_bytes / 1048576.0,
        memtables / 1048576.0
    );
    assert!(ratio <= 1.5, "tables hold {ratio:.2}x the live data");
    // And the values are the last round's.
    for i in (0..keys).step_by(97) {
        assert_eq!(
            c.get(format!("key-{i:08}").as_bytes()).unwrap(),
            Some(value_for(i + 9, 1000))
        );
    }
}

/// The largest per-shard value of a gauge.
fn metric_max(admin: SocketAddr, name: &str) -> f64 {
    common::metric_samples(admin, name)
        .into_iter()
        .fold(0.0, f64::max)
}

/// Writes faster than compaction can merge them: level 0 stops growing at
/// 3 x `l0_trigger` tables (flushes wait, writers get OVERLOADED and retry),
/// instead of growing with the write rate, and every write is kept.
#[test]
fn level_0_stays_bounded_when_writes_outrun_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = small_storage_flags();
    flags.extend(["--l0-trigger", "2", "--durability", "async"]);
    let server = common::start_server(dir.path(), &flags);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (admin, stop) = (server.admin, stop.clone());
        std::thread::spawn(move || {
            let mut max = 0.0f64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(metric_max(admin, "corekv_l0_tables"));
                std::thread::sleep(Duration::from_millis(5));
            }
            max
        })
    };
    // 4 writers x 4,000 keys x 4 KiB = 64 MiB, keys scattered over the key
    // space so that every compaction rewrites most of level 1.
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let mut c = server.client();
            std::thread::spawn(move || {
                let data: Vec<(Vec<u8>, Vec<u8>)> = (0..4000u32)
                    .map(|i| (i * 7919 + w) % 16_000)
                    .map(|i| (format!("key-{i:08}").into_bytes(), value_for(i, 4096)))
                    .collect();
                put_all(&mut c, &data);
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let max_l0 = sampler.join().unwrap();
    let waits = metric(server.admin, "corekv_flush_waits");
    let stalls = metric(server.admin, "corekv_write_stalls");
    eprintln!("max level-0 tables on a shard {max_l0}; flushes that waited {waits}; writes refused OVERLOADED {stalls}");
    assert!(
        waits > 0.0,
        "compaction kept up, so this run did not test the bound"
    );
    assert!(max_l0 <= 6.0, "level 0 reached {max_l0} tables (limit 6)");
    let mut c = server.client();
    for i in (0..16_000u32).step_by(7) {
        let want = (0..4u32).any(|w| (0..4000u32).any(|j| (j * 7919 + w) % 16_000 == i));
        let got = c.get(format!("key-{i:08}").as_bytes()).unwrap();
        assert_eq!(got.is_some(), want, "key {i}");
        if want {
            assert_eq!(got, Some(value_for(i, 4096)), "key {i}");
        }
    }
}
