//! `corekv verify` on real data directories: clean after a run, refuses while a
//! server holds the directory, and names file and offset of a flipped bit.

mod common;

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
