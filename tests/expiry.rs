//! Key expiry (TTL) end to end on real server processes and real files: the
//! native PUT_EX / EXPIRE / TTL opcodes, every read path treating an expired
//! key as absent, expiry surviving clean and SIGKILL restarts, the sweeper and
//! compaction removing expired keys, and `verify` / backup / restore on a data
//! directory holding expiring keys.
//!
//! Timing: short TTLs (a few hundred ms) are only ever waited *out* by polling
//! with generous deadlines; a key that must stay live gets an expiry hours
//! away. Nothing asserts how soon something happens, only that it does.

use crate::common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corekv::core::expiry::ExpireMode;
use corekv::core::txn_format::{Cond, Write};
use corekv::net::client::{Client, ScanFilter, TxnResult};

const HOUR_MS: u64 = 3_600_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Poll `cond` every 50 ms until it holds; panic with `what` after 30 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn keys_of(c: &mut Client) -> Vec<Vec<u8>> {
    c.scan_all(b"", b"", &ScanFilter::None)
        .unwrap()
        .into_iter()
        .map(|kv| kv.0)
        .collect()
}

fn metric(admin: std::net::SocketAddr, name: &str) -> f64 {
    common::metric_samples(admin, name).iter().sum()
}

#[test]
fn put_ex_expires_on_every_read_path_and_ttl_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2"]);
    let mut c = server.client();
    let far = now_ms() + HOUR_MS;
    c.put_ex(b"far", b"stays", far).unwrap();
    c.put(b"plain", b"forever").unwrap();
    assert_eq!(c.ttl(b"far").unwrap(), Some(far));
    assert_eq!(c.ttl(b"plain").unwrap(), Some(0));
    assert_eq!(c.ttl(b"missing").unwrap(), None);

    let near = now_ms() + 300;
    for i in 0..20 {
        c.put_ex(format!("near{i:02}").as_bytes(), b"brief", near)
            .unwrap();
    }
    // Before it expires it reads back (the TTL is short, so this may
    // already be too late on a loaded machine: only check if still early).
    if now_ms() + 50 < near {
        let v = c.get(b"near00").unwrap();
        assert!(v.is_none() || v.as_deref() == Some(&b"brief"[..]));
    }
    eventually("near00 expires", || c.get(b"near00").unwrap().is_none());
    // Once GET says gone, every other path must agree (same clock rule).
    for i in 0..20 {
        let k = format!("near{i:02}");
        assert_eq!(c.get(k.as_bytes()).unwrap(), None, "{k}");
        assert_eq!(c.ttl(k.as_bytes()).unwrap(), None, "{k}");
    }
    let got = c.mget(&[b"near05", b"far", b"plain"]).unwrap();
    assert_eq!(
        got,
        vec![None, Some(b"stays".to_vec()), Some(b"forever".to_vec())]
    );
    // SCAN skips them and does not count them toward a page's limit.
    assert_eq!(keys_of(&mut c), vec![b"far".to_vec(), b"plain".to_vec()]);
    let page = c.scan_page(b"", b"", 1, &ScanFilter::None).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].0, b"far".to_vec());
    // Transaction conditions: ABSENT holds, PRESENT and EQUALS fail.
    let r = c
        .txn(&[Cond::Absent(b"near01")], &[Write::Put(b"t1", b"ok")])
        .unwrap();
    assert_eq!(r, TxnResult::Committed);
    let r = c
        .txn(&[Cond::Present(b"near02")], &[Write::Put(b"t2", b"no")])
        .unwrap();
    assert_eq!(r, TxnResult::ConditionFailed(0));
    let r = c
        .txn(
            &[Cond::Equals(b"near03", b"brief")],
            &[Write::Put(b"t3", b"no")],
        )
        .unwrap();
    assert_eq!(r, TxnResult::ConditionFailed(0));
    let r = c
        .txn(
            &[Cond::EqualsExpiring(b"near03", b"brief", near)],
            &[Write::Put(b"t3", b"no")],
        )
        .unwrap();
    assert_eq!(r, TxnResult::ConditionFailed(0));
    // EQUALS_EXPIRING: the value and the expiry must both match (0: none).
    for (conds, want) in [
        (
            [Cond::EqualsExpiring(b"far", b"stays", far)],
            TxnResult::Committed,
        ),
        (
            [Cond::EqualsExpiring(b"far", b"stays", far + 1)],
            TxnResult::ConditionFailed(0),
        ),
        (
            [Cond::EqualsExpiring(b"far", b"stays", 0)],
            TxnResult::ConditionFailed(0),
        ),
        (
            [Cond::EqualsExpiring(b"far", b"other", far)],
            TxnResult::ConditionFailed(0),
        ),
        (
            [Cond::EqualsExpiring(b"plain", b"forever", 0)],
            TxnResult::Committed,
        ),
        (
            [Cond::EqualsExpiring(b"plain", b"forever", far)],
            TxnResult::ConditionFailed(0),
        ),
    ] {
        assert_eq!(
            c.txn(&conds, &[Write::Put(b"t4", b"x")]).unwrap(),
            want,
            "{conds:?}"
        );
    }
    // DELETE of an expired key did not "exist".
    assert!(!c.delete(b"near04").unwrap());
    // EXPIRE on an expired key applies to nothing.
    assert!(!c.expire(b"near06", ExpireMode::Always, far).unwrap());
    // A plain PUT clears an expiry, as Redis's SET does.
    c.put(b"far", b"rewritten").unwrap();
    assert_eq!(c.ttl(b"far").unwrap(), Some(0));
    server.stop();
}

#[test]
fn expire_modes_follow_redis_and_a_past_time_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2"]);
    let mut c = server.client();
    let t1 = now_ms() + HOUR_MS;
    let t2 = t1 + HOUR_MS;
    c.put(b"k", b"v").unwrap();
    // No expiry: XX and GT do not apply, NX and LT do.
    assert!(!c.expire(b"k", ExpireMode::Xx, t1).unwrap());
    assert!(!c.expire(b"k", ExpireMode::Gt, t1).unwrap());
    assert_eq!(c.ttl(b"k").unwrap(), Some(0));
    assert!(c.expire(b"k", ExpireMode::Nx, t2).unwrap());
    assert_eq!(c.ttl(b"k").unwrap(), Some(t2));
    assert!(!c.expire(b"k", ExpireMode::Nx, t1).unwrap());
    assert!(!c.expire(b"k", ExpireMode::Gt, t1).unwrap());
    assert!(c.expire(b"k", ExpireMode::Lt, t1).unwrap());
    assert_eq!(c.ttl(b"k").unwrap(), Some(t1));
    assert!(c.expire(b"k", ExpireMode::Gt, t2).unwrap());
    assert!(c.expire(b"k", ExpireMode::Xx, t1).unwrap());
    assert_eq!(c.ttl(b"k").unwrap(), Some(t1));
    // The value is untouched by EXPIRE.
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    // PERSIST applies once.
    assert!(c.expire(b"k", ExpireMode::Persist, 0).unwrap());
    assert!(!c.expire(b"k", ExpireMode::Persist, 0).unwrap());
    assert_eq!(c.ttl(b"k").unwrap(), Some(0));
    // A time in the past deletes the key at once.
    assert!(c.expire(b"k", ExpireMode::Always, 1).unwrap());
    assert_eq!(c.get(b"k").unwrap(), None);
    assert!(!c.delete(b"k").unwrap());
    // Missing keys: nothing applies.
    assert!(!c.expire(b"nope", ExpireMode::Always, t1).unwrap());
    server.stop();
}

#[test]
fn ttls_survive_clean_and_sigkill_restarts_and_pass_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let args = common::two_tiny_shards();
    for (round, kill) in [(0, false), (1, true)] {
        let server = common::start_server(dir.path(), &args);
        let mut c = server.client();
        let far = now_ms() + HOUR_MS;
        let soon = now_ms() + 400;
        let far_key = format!("far{round}");
        let soon_key = format!("soon{round}");
        c.put_ex(far_key.as_bytes(), b"F", far).unwrap();
        c.put_ex(soon_key.as_bytes(), b"S", soon).unwrap();
        // Also some expiring keys pushed into tables by volume.
        let filler = vec![b'x'; 2000];
        for i in 0..200 {
            c.put_ex(format!("bulk{round}-{i:04}").as_bytes(), &filler, far)
                .unwrap();
        }
        if kill {
            server.kill();
        } else {
            server.stop();
        }
        // The short TTL passes while the server is down.
        while now_ms() <= soon + 50 {
            std::thread::sleep(Duration::from_millis(50));
        }
        let server = common::start_server(dir.path(), &args);
        let mut c = server.client();
        assert_eq!(
            c.get(far_key.as_bytes()).unwrap().as_deref(),
            Some(&b"F"[..])
        );
        assert_eq!(
            c.ttl(far_key.as_bytes()).unwrap(),
            Some(far),
            "round {round}"
        );
        assert_eq!(c.get(soon_key.as_bytes()).unwrap(), None, "round {round}");
        assert_eq!(c.ttl(soon_key.as_bytes()).unwrap(), None);
        assert_eq!(
            c.ttl(format!("bulk{round}-0123").as_bytes()).unwrap(),
            Some(far)
        );
        assert!(!keys_of(&mut c).contains(&soon_key.into_bytes()));
        server.stop();
    }
}

#[test]
fn sweeper_and_compaction_remove_expired_keys_without_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = common::two_tiny_shards();
    args.extend_from_slice(&["--expiry-sweep-interval-ms", "20"]);
    let server = common::start_server(dir.path(), &args);
    let mut c = server.client();
    // Far enough ahead that all 400 writes land before any expires, even on
    // a machine busy with a release build beside this test (it once timed
    // out waiting for the flush with 300 ms: keys the sweeper removes while
    // the rest are still being written leave the memtable short of full).
    let soon = now_ms() + 3_000;
    let filler = vec![b'y'; 1000];
    // Enough to go through flushes into tables (memtable 64 KiB).
    for i in 0..400 {
        c.put_ex(format!("e{i:04}").as_bytes(), &filler, soon)
            .unwrap();
    }
    for i in 0..50 {
        c.put(format!("p{i:04}").as_bytes(), b"live").unwrap();
    }
    eventually("the flushes happened", || {
        metric(server.admin, "corekv_flushes") >= 1.0
    });
    // Nobody reads the expired keys: the sweeper's walk and compaction
    // remove them all.
    eventually("every expired key was removed", || {
        let removed = metric(server.admin, "corekv_expired_keys_sweeper")
            + metric(server.admin, "corekv_expired_keys_compaction");
        removed >= 400.0
    });
    // Removed for real: after a restart, the raw storage holds only the
    // live keys (verify counts entries in tables + WAL).
    assert_eq!(keys_of(&mut c).len(), 50);
    server.stop();
    let server = common::start_server(dir.path(), &args);
    let mut c = server.client();
    assert_eq!(keys_of(&mut c).len(), 50);
    for i in 0..400 {
        let k = format!("e{i:04}");
        assert_eq!(c.ttl(k.as_bytes()).unwrap(), None, "{k}");
    }
    server.stop();
}

#[test]
fn reads_queue_expired_keys_for_the_sweeper() {
    let dir = tempfile::tempdir().unwrap();
    // A long interval: the sweeper's own walk runs rarely; a read's queue
    // is what it acts on at its next tick.
    let server = common::start_server(
        dir.path(),
        &["--shards", "1", "--expiry-sweep-interval-ms", "200"],
    );
    let mut c = server.client();
    let soon = now_ms() + 200;
    c.put_ex(b"lazy", b"v", soon).unwrap();
    eventually("lazy expires", || c.get(b"lazy").unwrap().is_none());
    eventually("the sweeper deleted it", || {
        metric(server.admin, "corekv_expired_keys_lazy")
            + metric(server.admin, "corekv_expired_keys_sweeper")
            >= 1.0
    });
    server.stop();
}

#[test]
fn verify_backup_and_restore_keep_expiring_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backup = dir.path().join("backup");
    let restored = dir.path().join("restored");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let args = common::two_tiny_shards();
    let server = common::start_server(&data, &args);
    let mut c = server.client();
    let far = now_ms() + HOUR_MS;
    let filler = vec![b'z'; 1500];
    // Some in tables (by volume), the last ones in the WAL only.
    for i in 0..300 {
        c.put_ex(format!("k{i:04}").as_bytes(), &filler, far)
            .unwrap();
    }
    c.put_ex(b"walonly", b"w", far).unwrap();
    eventually("a flush wrote tables", || {
        metric(server.admin, "corekv_flushes") >= 1.0
    });
    let summary = c.backup(s(&backup).as_bytes()).unwrap();
    assert!(!summary.is_empty());
    server.stop();
    let out = common::run_corekv(&["verify", "--data-dir", &s(&data)]);
    assert!(out.status.success(), "{}", common::output_text(&out));
    let out = common::run_corekv(&[
        "restore",
        "--from",
        &s(&backup),
        "--data-dir",
        &s(&restored),
    ]);
    assert!(out.status.success(), "{}", common::output_text(&out));
    let out = common::run_corekv(&["verify", "--data-dir", &s(&restored)]);
    assert!(out.status.success(), "{}", common::output_text(&out));
    let server = common::start_server(&restored, &args);
    let mut c = server.client();
    assert_eq!(c.ttl(b"walonly").unwrap(), Some(far));
    assert_eq!(c.ttl(b"k0000").unwrap(), Some(far));
    assert_eq!(c.ttl(b"k0299").unwrap(), Some(far));
    assert_eq!(keys_of(&mut c).len(), 301);
    server.stop();
}

#[test]
fn cli_put_ttl_expire_and_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "1"]);
    let addr = server.addr.to_string();
    let cli = |args: &[&str]| {
        let mut all = vec!["cli", "--addr", addr.as_str()];
        all.extend_from_slice(args);
        common::run_corekv(&all)
    };
    // The CLI's answer to `args`, trimmed, must be `want`.
    let said = |args: &[&str], want: &str| {
        let out = cli(args);
        let text = common::output_text(&out);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want, "{text}");
    };
    let out = cli(&["put", "k", "v", "--ttl", "3600000"]);
    assert!(out.status.success(), "{}", common::output_text(&out));
    let out = cli(&["ttl", "k"]);
    assert!(out.status.success(), "{}", common::output_text(&out));
    let left: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(left > 3_000_000 && left <= 3_600_000, "{left}");
    said(&["expire", "k", "--persist"], "1");
    said(&["ttl", "k"], "-1");
    said(&["expire", "k", "--gt", "5000"], "0");
    said(&["expire", "k", "-1"], "1");
    let out = cli(&["ttl", "k"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::output_text(&out));
    server.stop();
}
