//! Entry points for the fuzz targets (fuzz/) and for the test that replays
//! what fuzzing found and mutates valid inputs on every run
//! (tests/fuzz_replay.rs). Each takes arbitrary bytes and must return without
//! panicking, whatever the bytes: every decoder bounds every length before use.
//!
//! Not part of the engine's API; kept in the library so that the fuzzers and
//! the ordinary tests exercise exactly the same code.

use std::path::Path;

use crate::core::block_format::{open_block, BlockKind, DataBlock};
use crate::core::manifest_format::decode_manifest;
use crate::core::table_format::{access_index, find_block, BlockFinder, Bloom, Footer};
use crate::core::wal_format::{decode_batch_payload, decode_record, BatchHeader, SegmentHeader};
use crate::io::sim_disk::SimDisk;
use crate::io::{Disk, DiskFile, OpenMode};
use crate::net::codec::{decode_request, mget_keys, parse_frame, HelloInfo, Limits, Parsed, Side};

fn u64_at(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (j, x) in b.iter_mut().enumerate() {
        *x = data.get(i + j).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

/// A receive buffer full of frames, as a server and as a client read it.
pub fn frames(data: &[u8]) {
    let limits = Limits::new(64 * 1024);
    for side in [Side::Server, Side::Client] {
        let mut buf = data;
        while !buf.is_empty() {
            match parse_frame(buf, side, limits.body_bytes_max()) {
                Parsed::Frame { header, body, len } => {
                    assert!(
                        len > 0 && len <= buf.len(),
                        "frame length out of the buffer"
                    );
                    if side == Side::Server {
                        if let Ok(crate::net::codec::Request::Mget { keys, .. }) =
                            decode_request(&header, body, &limits)
                        {
                            mget_keys(keys).for_each(drop);
                        }
                    } else {
                        let _ = HelloInfo::decode(body);
                    }
                    buf = &buf[len..];
                }
                Parsed::Incomplete { needed } => {
                    assert!(needed > buf.len(), "incomplete, yet enough bytes");
                    break;
                }
                Parsed::Bad { .. } => break,
            }
        }
    }
}

/// WAL bytes: segment and batch headers, records, batch payloads.
pub fn wal(data: &[u8]) {
    let _ = SegmentHeader::decode(data);
    let _ = BatchHeader::decode(data, u64_at(data, 8));
    let mut at = 0;
    let mut lsn = u64_at(data, 0).max(1);
    while at < data.len() {
        match decode_record(&data[at..], lsn) {
            Ok((_, n)) if n > 0 => {
                at += n;
                lsn += 1;
            }
            _ => break,
        }
    }
    let count = (u64_at(data, 0) % 64) as u32;
    let _ = decode_batch_payload(data, 1, count, |_| {});
}

/// Table and manifest bytes: sealed blocks, data blocks, footer, index, bloom.
pub fn table(data: &[u8]) {
    let id = u64_at(data, 0) % 4;
    let no = (u64_at(data, 8) % 4) as u32;
    for kind in [
        BlockKind::Data,
        BlockKind::Index,
        BlockKind::Bloom,
        BlockKind::Footer,
    ] {
        if let Ok(payload) = open_block(data, id, no, kind) {
            let _ = DataBlock::parse(payload);
        }
    }
    if let Ok(block) = DataBlock::parse(data) {
        let mut c = block.cursor();
        let mut last: Option<Vec<u8>> = None;
        while let Ok(Some((k, _, _))) = c.next() {
            last = Some(k.to_vec());
        }
        let probe = last.unwrap_or_default();
        let _ = block.get(&probe);
        let _ = block.seek(&probe);
        let _ = block.seek(b"");
    }
    let _ = Footer::decode(data, id, data.len() as u64 + 4096);
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(data);
    if let Ok(index) = access_index(&aligned) {
        // A finder exists only for an ascending index; then it must agree.
        if let Ok(finder) = BlockFinder::new(index) {
            for probe in [&b"key"[..], b"", &data[..data.len().min(24)]] {
                assert_eq!(finder.find(index, probe), find_block(index, probe));
            }
        }
        for b in index.blocks.iter() {
            let _ = b.last_key.as_slice().len();
        }
    }
    if let Ok(bloom) = Bloom::parse(data) {
        let _ = bloom.may_contain(b"key");
    }
    let _ = decode_manifest(data, 0);
}

/// Recovery over an arbitrary shard directory: the bytes become WAL segments,
/// a manifest and a table file on a simulated disk; reading them back must
/// end in data or a named error, never a panic.
pub fn recovery(data: &[u8]) {
    let disk = SimDisk::new(u64_at(data, 0));
    let shard = Path::new("/d/shard-000");
    let wal_dir = shard.join("wal");
    let tables = shard.join("tables");
    let parts: Vec<&[u8]> = data.splitn(4, |&b| b == 0xA5).collect();
    futures_lite::future::block_on(async {
        let _ = disk.create_dir_all(&wal_dir).await;
        let _ = disk.create_dir_all(&tables).await;
        let files = [
            wal_dir.join("0000000000000001.wal"),
            wal_dir.join("0000000000000002.wal"),
            shard.join("MANIFEST"),
            tables.join(crate::io::table_file::table_file_name(1)),
        ];
        for (path, bytes) in files.iter().zip(parts.iter()) {
            if let Ok(f) = disk.open(path, OpenMode::CreateNew).await {
                let len = bytes.len().div_ceil(4096) * 4096;
                if len > 0 {
                    let mut buf = f.alloc_buf(len);
                    buf.as_mut()[..bytes.len()].copy_from_slice(bytes);
                    let _ = f.write_at(buf, 0).await;
                    let _ = f.fdatasync().await;
                }
            }
        }
        for repair in [false, true] {
            let opts = crate::io::wal_reader::ScanOptions {
                shard_id: 0,
                repair,
                truncate_corruption: repair,
            };
            let _ = crate::io::wal_reader::replay_log(&disk, &wal_dir, &opts, |_| {}).await;
        }
        let _ = crate::io::manifest::load_manifest(&disk, shard, 0).await;
        let _ = crate::io::table_file::check_table(&disk, &tables, 1).await;
        // Neighbouring blocks read with one request (scans): any range.
        if let Ok(t) = crate::io::table_file::TableFile::open(&disk, &tables, 1).await {
            let n = t.index().blocks.len();
            let _ = t.read_blocks(0..n.min(40)).await;
            let _ = t.read_blocks(n / 2..n).await;
            let _ = t.read_blocks(n..n + 3).await;
            // One block past the index: a typed error, not a panic.
            let _ = t.read_block(n).await;
        }
    });
}
