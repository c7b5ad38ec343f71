//! `corekv verify` on real data directories: clean after a run, refuses while a
//! server holds the directory, and names file and offset of a flipped bit.

use crate::common;

use std::os::unix::fs::FileExt;
use std::process::Command;

fn verify(dir: &std::path::Path) -> (Option<i32>, String, String) {
    let o = Command::new(common::corekv_bin())
        .arg("verify")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn verify_finds_damage_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2"]);
    let mut c = server.client();
    // Sequential synced writes: one batch each, so there is a batch to damage
    // with valid batches after it.
    for i in 0..40 {
        c.put(format!("k{i}").as_bytes(), &[b'v'; 200]).unwrap();
    }
    let (code, _, stderr) = verify(dir.path());
    assert_eq!(code, Some(2), "a running server's directory is locked");
    assert!(stderr.contains("DATA_DIR_LOCKED"), "{stderr}");
    assert_eq!(server.stop().0, Some(0));

    let (code, stdout, stderr) = verify(dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("ok     shard 0") && stdout.contains("ok     shard 1"),
        "{stdout}"
    );
    assert!(stdout.contains("no damage"));

    // Flip one bit inside the first batch of shard 0's first segment.
    let segment = dir.path().join("shard-000/wal/0000000000000001.wal");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, 4096 + 40).unwrap();
    f.write_all_at(&[byte[0] ^ 0x01], 4096 + 40).unwrap();
    f.sync_all().unwrap();
    let (code, stdout, _) = verify(dir.path());
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("DAMAGE shard 0"), "{stdout}");
    assert!(
        stdout.contains("0000000000000001.wal") && stdout.contains("offset 4096"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok     shard 1"),
        "the other shard is still clean: {stdout}"
    );
    // verify must not have repaired anything: the damage is still there.
    let (code, _, _) = verify(dir.path());
    assert_eq!(code, Some(1));
}

/// The server's recovery and `verify` run one set of log checks: a refusal at
/// start is the same status with the same words in verify; salvage
/// (`--recover-truncate`) starts, names the lost LSN range, and leaves a
/// directory that both then accept.
#[test]
fn verify_and_recovery_agree_on_a_broken_log() {
    let dir = tempfile::tempdir().unwrap();
    // Big memtable, small segments: nothing is flushed (cutoff 0) and the log
    // spans several segments.
    let flags = [
        "--shards",
        "1",
        "--memtable-bytes",
        "16777216",
        "--wal-segment-bytes",
        "1048576",
        "--value-bytes-max",
        "65536",
    ];
    let server = common::start_server(dir.path(), &flags);
    let mut c = server.client();
    let value = vec![b'v'; 12_000];
    for i in 0..30 {
        for j in 0..8 {
            c.put(format!("k{i}-{j}").as_bytes(), &value).unwrap();
        }
    }
    assert_eq!(server.stop().0, Some(0));
    let wal = dir.path().join("shard-000/wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    // Lose the oldest segment: records the tables never held.
    std::fs::remove_file(&segments[0]).unwrap();

    let (code, stdout, _) = verify(dir.path());
    assert_eq!(code, Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("DAMAGE shard 0"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let detail = line
        .split_once("WAL_CORRUPT: ")
        .unwrap_or_else(|| panic!("{line}"))
        .1;
    assert!(detail.contains("the log starts at LSN"), "{detail}");

    let refused = common::try_start_server(dir.path(), &flags)
        .err()
        .expect("the server refuses the same log");
    assert!(
        refused.contains("WAL_CORRUPT") && refused.contains(detail),
        "verify said {detail:?}; the server said {refused}"
    );

    // Salvage: starts, says what it gave up, and the loss is recorded.
    let mut salvage = flags.to_vec();
    salvage.push("--recover-truncate");
    let server = common::start_server(dir.path(), &salvage);
    let mut c = server.client();
    assert_eq!(
        c.get(b"k29-7").unwrap().as_deref(),
        Some(&[b'v'; 12_000][..]),
        "records after the gap are kept"
    );
    let (code, stderr) = server.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("are missing (neither in the tables nor in the log)"),
        "{stderr}"
    );
    let (code, stdout, _) = verify(dir.path());
    assert_eq!(
        code,
        Some(0),
        "salvage left a consistent directory: {stdout}"
    );
    let server = common::start_server(dir.path(), &flags);
    assert_eq!(server.stop().0, Some(0));
}

/// Read-only bind mount of `src` at a new temp dir; `None` where this
/// environment does not allow mounts (then the caller skips, saying so).
struct RoMount(tempfile::TempDir);

impl RoMount {
    fn new(src: &std::path::Path) -> Option<RoMount> {
        let dir = tempfile::tempdir().unwrap();
        let ok = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let (s, d) = (src.to_str().unwrap(), dir.path().to_str().unwrap());
        if !ok(&["--bind", s, d]) {
            return None;
        }
        if !ok(&["-o", "remount,bind,ro", d]) {
            let _ = Command::new("umount").arg(d).status();
            return None;
        }
        Some(RoMount(dir))
    }
}

impl Drop for RoMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// `verify` checks a data directory or a backup without writing anything: it
/// works on read-only media and leaves no LOCK file in a backup.
#[test]
fn verify_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::start_server(&data, &["--shards", "2"]);
    let mut c = server.client();
    for i in 0..50 {
        c.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    let backup = dir.path().join("backup");
    let o = Command::new(common::corekv_bin())
        .args(["backup", "--addr", &server.addr.to_string(), "--to"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(server.stop().0, Some(0));

    let o = Command::new(common::corekv_bin())
        .arg("verify")
        .arg("--backup")
        .arg(&backup)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        !backup.join("LOCK").exists(),
        "verify left a LOCK file in the backup"
    );

    let Some(ro) = RoMount::new(&data) else {
        eprintln!("SKIPPED the read-only half: mounts are not permitted here");
        return;
    };
    let (code, stdout, stderr) = verify(ro.0.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("no damage"), "{stdout}");
}
