//! The WAL on real files (glommio DMA, O_DIRECT): framing round trip across
//! segment rollovers; a torn write at every byte offset of the last batch's
//! records is discarded as a torn tail; a flipped bit before the tail is
//! corruption, reported with its file and offset, or truncated on request.

use std::future::Future;
use std::path::{Path, PathBuf};

use corekv::core::wal_format::{encode_record, Record};
use corekv::io::wal_reader::{replay_log, ScanOptions, ScanReport};
use corekv::io::wal_writer::{segment_file_name, ResumePoint, WalConfig, WalError, WalWriter};
use corekv::io::DmaDisk;

fn on_glommio<T: 'static>(f: impl Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("executor")
        .run(f)
}

/// glommio must see a non-empty file on the device before any other DMA file.
async fn prime(dir: &Path) {
    let p = dir.join("probe");
    std::fs::write(&p, vec![1u8; 4096]).unwrap();
    DmaDisk.prime_device_probe(&p).await.unwrap();
}

fn config(dir: &Path, segment_bytes: u64) -> WalConfig {
    WalConfig {
        dir: dir.to_path_buf(),
        shard_id: 0,
        shard_count: 1,
        segment_bytes,
        prefill: true,
    }
}

type Rec = (u64, Vec<u8>, Option<Vec<u8>>);

/// Records of batch `b`: `n` puts and a delete, LSNs from `first_lsn`.
fn batch(b: usize, n: usize, first_lsn: u64, value_bytes: usize) -> (Vec<u8>, Vec<Rec>) {
    let mut payload = Vec::new();
    let mut recs = Vec::new();
    for i in 0..n {
        let lsn = first_lsn + i as u64;
        let key = format!("b{b}-k{i}").into_bytes();
        if i + 1 == n {
            encode_record(&mut payload, &Record::Delete { lsn, key: &key });
            recs.push((lsn, key, None));
        } else {
            let value = vec![(b * 31 + i) as u8; value_bytes];
            encode_record(
                &mut payload,
                &Record::Put {
                    lsn,
                    key: &key,
                    value: &value,
                },
            );
            recs.push((lsn, key, Some(value)));
        }
    }
    (payload, recs)
}

struct Written {
    recs_per_batch: Vec<Vec<Rec>>,
    /// Position before and after each batch, and its payload length.
    spans: Vec<(ResumePoint, ResumePoint, usize)>,
}

async fn write_log(
    dir: &Path,
    batches: usize,
    per_batch: usize,
    value_bytes: usize,
    segment_bytes: u64,
) -> Written {
    let mut w = WalWriter::open(DmaDisk, config(dir, segment_bytes), None, &[])
        .await
        .unwrap();
    let mut lsn = 1;
    let mut out = Written {
        recs_per_batch: Vec::new(),
        spans: Vec::new(),
    };
    for b in 0..batches {
        let (payload, recs) = batch(b, per_batch, lsn, value_bytes);
        let before = w.position();
        w.append_batch(&payload, lsn, recs.len() as u32)
            .await
            .unwrap();
        let after = w.position();
        lsn += recs.len() as u64;
        out.spans.push((before, after, payload.len()));
        out.recs_per_batch.push(recs);
    }
    w.close().await.unwrap();
    out
}

async fn read_log(
    dir: &Path,
    repair: bool,
    truncate: bool,
) -> (Result<ScanReport, WalError>, Vec<Rec>) {
    let mut got = Vec::new();
    let opts = ScanOptions {
        shard_id: 0,
        repair,
        truncate_corruption: truncate,
    };
    let report = replay_log(&DmaDisk, dir, &opts, |r| match r {
        Record::Put { lsn, key, value } => got.push((lsn, key.to_vec(), Some(value.to_vec()))),
        Record::Delete { lsn, key } => got.push((lsn, key.to_vec(), None)),
        Record::Txn { .. } => panic!("these logs hold no transaction records"),
        Record::PutExpiring { .. } => panic!("these logs hold no expiring puts"),
    })
    .await;
    (report, got)
}

fn copy_wal(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".wal") {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

fn segment(dir: &Path, seq: u64) -> PathBuf {
    dir.join(segment_file_name(seq))
}

#[test]
fn round_trip_across_segment_rollovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    on_glommio(async move {
        prime(&dir).await;
        let wal = dir.join("wal");
        // ~120 KiB batches in 1 MiB segments: several rollovers.
        let written = write_log(&wal, 30, 30, 4000, 1 << 20).await;
        let rolled = written
            .spans
            .iter()
            .filter(|(b, a, _)| a.seq != b.seq)
            .count();
        assert!(
            rolled >= 3,
            "expected several segment rollovers, saw {rolled}"
        );
        let (report, got) = read_log(&wal, false, false).await;
        let report = report.unwrap();
        let want: Vec<Rec> = written.recs_per_batch.concat();
        assert_eq!(got, want);
        assert_eq!(report.last_lsn, want.len() as u64);
        assert!(report.torn.is_none());
        assert_eq!(report.resume, Some(written.spans.last().unwrap().1.clone()));
    });
}

#[test]
fn torn_tail_at_every_offset_of_the_last_batch_is_discarded() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    on_glommio(async move {
        prime(&root).await;
        let original = root.join("original");
        let written = write_log(&original, 3, 4, 20, 1 << 20).await;
        let (before, after, payload_len) = written.spans[2].clone();
        assert_eq!(before.seq, after.seq);
        let seg_seq = before.seq;
        let batch_start = before.offset;
        // The batch header (32 bytes) and its records; past them is padding.
        let used_end = batch_start + 32 + payload_len as u64;
        let earlier: Vec<Rec> = written.recs_per_batch[..2].concat();
        let all: Vec<Rec> = written.recs_per_batch.concat();
        let mut checked = 0;
        for cut in batch_start..used_end + 64 {
            for garbage in [false, true] {
                if garbage && (cut - batch_start) % 7 != 0 {
                    continue;
                }
                let dir = root.join(format!("cut-{cut}-{garbage}"));
                copy_wal(&original, &dir);
                // What a torn O_DIRECT write leaves: the old bytes (zeros in a
                // pre-filled segment), or arbitrary bytes, from the tear onward.
                let len = (after.offset - cut) as usize;
                let fill = if garbage {
                    vec![0xA5u8; len]
                } else {
                    vec![0u8; len]
                };
                overwrite(&segment(&dir, seg_seq), cut, &fill);
                let (report, got) = read_log(&dir, true, false).await;
                let report =
                    report.unwrap_or_else(|e| panic!("cut at {cut} (garbage {garbage}): {e}"));
                let intact = cut >= used_end && !garbage;
                if intact {
                    assert_eq!(
                        got, all,
                        "cut at {cut} in the padding must not lose the batch"
                    );
                } else if cut == batch_start && !garbage {
                    // Nothing of the batch reached the disk: a clean end, no tear.
                    assert_eq!(got, earlier);
                    assert!(report.torn.is_none());
                } else {
                    assert_eq!(got, earlier, "cut at {cut}, garbage {garbage}");
                    let torn = report
                        .torn
                        .as_ref()
                        .unwrap_or_else(|| panic!("cut at {cut}: no torn tail reported"));
                    assert_eq!(
                        torn.offset, batch_start,
                        "the torn batch starts where the last batch did"
                    );
                    assert!(torn.bytes > 0);
                    // Repaired: a second scan is clean and the same.
                    let (again, got2) = read_log(&dir, true, false).await;
                    let again = again.unwrap();
                    assert!(
                        again.torn.is_none(),
                        "cut at {cut}: repair left a torn tail"
                    );
                    assert_eq!(got2, earlier);
                }
                std::fs::remove_dir_all(&dir).unwrap();
                checked += 1;
            }
        }
        assert!(checked > 200, "only {checked} tear points checked");
    });
}

#[test]
fn flipped_bit_before_the_tail_is_corruption_with_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    on_glommio(async move {
        prime(&root).await;
        let original = root.join("original");
        let written = write_log(&original, 3, 5, 40, 1 << 20).await;
        let (before, _, _) = written.spans[0].clone();
        // The first batch starts after the 4 KiB segment header block.
        let batch0 = if before.offset == 0 {
            4096
        } else {
            before.offset
        };
        for (i, victim) in [batch0 + 5, batch0 + 40, batch0 + 100]
            .into_iter()
            .enumerate()
        {
            let dir = root.join(format!("flip-{i}"));
            copy_wal(&original, &dir);
            let path = segment(&dir, before.seq);
            let mut byte = [0u8; 1];
            {
                use std::os::unix::fs::FileExt;
                std::fs::File::open(&path)
                    .unwrap()
                    .read_exact_at(&mut byte, victim)
                    .unwrap();
            }
            overwrite(&path, victim, &[byte[0] ^ 0x10]);
            let (report, _) = read_log(&dir, true, false).await;
            match report {
                Err(WalError::Corrupt {
                    path: p,
                    offset,
                    detail,
                }) => {
                    assert_eq!(p, path, "names the segment file");
                    assert_eq!(
                        offset, batch0,
                        "names the damaged batch's offset ({detail})"
                    );
                }
                other => panic!("flip at {victim}: expected corruption, got {other:?}"),
            }
            // --recover-truncate: cut there, say how many records were dropped.
            let (report, got) = read_log(&dir, true, true).await;
            let report = report.unwrap();
            let t = report.truncated.expect("truncation reported");
            let later: usize = written.recs_per_batch[1..].iter().map(Vec::len).sum();
            assert_eq!(t.records_dropped, later as u64);
            assert!(got.is_empty(), "nothing before the damaged first batch");
        }
    });
}

/// Regression: while a flush is in flight (or a rollover zero-fills the next
/// segment) the open batch keeps growing; it must be sealed into batches that fit
/// a segment, never handed to the WAL as one batch larger than a segment.
#[test]
fn a_backlog_larger_than_a_segment_is_split_into_batches() {
    use corekv::core::types::Durability;
    use corekv::shard::clock::GlommioClock;
    use corekv::shard::group_commit::Commit;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    on_glommio(async move {
        prime(&dir).await;
        let wal_dir = dir.join("wal");
        let segment = 1u64 << 20;
        let commit = Commit::new(
            Durability::Async,
            Duration::from_millis(1),
            usize::MAX,
            (segment / 4) as usize,
            1,
        );
        let value = vec![9u8; 1000];
        // ~3 MiB of records before the flusher ever runs: three segments' worth.
        for i in 0..3300u32 {
            let key = i.to_be_bytes();
            commit
                .append(|lsn| Record::Put {
                    lsn,
                    key: &key,
                    value: &value,
                })
                .unwrap();
        }
        assert!(commit.open_bytes() > 3 * segment as usize);
        let mut wal = WalWriter::open(DmaDisk, config(&wal_dir, segment), None, &[])
            .await
            .unwrap();
        commit.request_stop();
        let mut failed = None;
        commit
            .run_flusher(
                &mut wal,
                &GlommioClock::default(),
                |_, _, _| {},
                |why| failed = Some(why.to_string()),
            )
            .await;
        assert_eq!(failed, None);
        assert_eq!(commit.durable_lsn(), 3300);
        assert!(
            commit.stats.batches.get() >= 12,
            "{} batches",
            commit.stats.batches.get()
        );
        wal.close().await.unwrap();
        let (report, got) = read_log(&wal_dir, false, false).await;
        assert_eq!(report.unwrap().last_lsn, 3300);
        assert_eq!(got.len(), 3300);
    });
}
