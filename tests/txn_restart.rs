//! Cross-shard transactions, memtable flushes, compactions and WAL segment
//! retirement all at once, across restarts of the real server. Each of these
//! was tested on its own before; together they broke (corekv issue 16: a flush
//! recorded a WAL cutoff between a participant's TXN_PREPARE and its
//! TXN_RESOLVE, and the next start refused the data directory with
//! WAL_CORRUPT).
//!
//! The workload: bank transfers (snapshot-read two balances, then a TXN
//! conditioned on both; about half of them span the two shards) from several
//! connections, and filler PUTs of 8 KiB values from others into 64 KiB
//! memtables and 1 MiB WAL segments, so that every second of load flushes,
//! compacts and retires segments many times while prepares are pinned.
//!
//! After every restart: the server starts; one snapshot of every account holds
//! the bank total with no negative balance; every filler key holds its last
//! acknowledged value, byte for byte (for the one write per connection whose
//! reply the stop cut off: that value or the one before). The /metrics of the
//! run must show flushes, compactions and retired segments, so the tests cannot
//! silently stop covering them.
//!
//! - `stop_and_kill_cycles_…`: SIGTERM and SIGKILL alternately after 0.5–1.5 s
//!   of load, 20 of each by default; `COREKV_RESTART_CYCLES=n` runs n of each
//!   (e.g. 500 for a soak).
//! - `crash_at_…`: the process aborts at a failpoint (debug builds, see
//!   `src/failpoint.rs`) between two disk steps of the transaction and flush
//!   path, with transfers and flushes in flight; recovery, a further load and
//!   stop, and a second recovery are checked.

use crate::common;

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    metric_samples, start_server, try_metric_samples, try_start_server, try_start_server_env,
    Server,
};
use corekv::bench::bank;
use corekv::core::status::Status;
use corekv::net::client::{Client, ClientError};
use rand::{Rng, SeedableRng};

/// Bank accounts (spread over both shards by the key hash).
const ACCOUNTS: u64 = 64;
/// Connections running transfers.
const MOVERS: u64 = 4;
/// Connections writing filler values, each to its own keys.
const WRITERS: u32 = 2;
/// Keys per filler connection.
const WRITER_KEYS: usize = 64;
/// Filler value size: eight of them fill a 64 KiB memtable.
const FILL_BYTES: usize = 8192;

fn server_args() -> Vec<&'static str> {
    let mut args = vec!["--shards", "2", "--lock-timeout-ms", "300"];
    args.extend_from_slice(common::TINY_STORAGE);
    args
}

fn fill_key(writer: u32, i: usize) -> Vec<u8> {
    format!("fill-{writer}-{i:03}").into_bytes()
}

/// The value of write `seq` to key `i` of `writer`: its identity, then a pad
/// that differs between neighbouring writes, so that a value from another
/// write or a torn one cannot pass.
fn fill_value(writer: u32, i: usize, seq: u64) -> Vec<u8> {
    let mut v = format!("{writer}/{i}/{seq}/").into_bytes();
    v.resize(FILL_BYTES, b'a' + (seq % 26) as u8);
    v
}

/// What the test knows of one filler key.
#[derive(Clone, Copy, Debug, Default)]
struct Known {
    /// The last acknowledged write (its sequence number).
    acked: Option<u64>,
    /// A later write whose reply never came (the server was stopped): it may
    /// or may not have been applied.
    unsure: Option<u64>,
}

/// One filler connection's keys and what the server acknowledged of them.
struct Writer {
    id: u32,
    keys: Vec<Known>,
    next_seq: u64,
    acked: u64,
}

impl Writer {
    fn new(id: u32) -> Writer {
        Writer {
            id,
            keys: vec![Known::default(); WRITER_KEYS],
            next_seq: 1,
            acked: 0,
        }
    }

    /// PUT random keys until the connection fails (the server stopped).
    /// OVERLOADED (memtables full while compaction catches up) applied
    /// nothing: back off and go on.
    fn run(mut self, addr: SocketAddr, seed: u64) -> Writer {
        let Ok(mut c) = Client::connect(addr) else {
            return self;
        };
        let _ = c.set_timeout(Some(Duration::from_secs(30)));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        loop {
            let i = rng.gen_range(0..WRITER_KEYS);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.keys[i].unsure = Some(seq);
            match c.put(&fill_key(self.id, i), &fill_value(self.id, i, seq)) {
                Ok(()) => {
                    self.keys[i] = Known {
                        acked: Some(seq),
                        unsure: None,
                    };
                    self.acked += 1;
                }
                Err(ClientError::Status {
                    status: Status::Overloaded,
                    ..
                }) => {
                    self.keys[i].unsure = None;
                    std::thread::sleep(Duration::from_millis(2));
                }
                // Anything else: the reply is lost with the server; the write
                // stays unsure.
                Err(_) => return self,
            }
        }
    }

    /// Every key holds its acknowledged value or its unsure one; afterwards the
    /// model is what the server holds (nothing unsure).
    fn check(&mut self, c: &mut Client, what: &str) {
        let keys: Vec<Vec<u8>> = (0..WRITER_KEYS).map(|i| fill_key(self.id, i)).collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let got = retry(what, || c.mget(&refs));
        for (i, (value, known)) in got.iter().zip(self.keys.iter_mut()).enumerate() {
            let key = String::from_utf8_lossy(&keys[i]);
            let seq = match value {
                None => None,
                Some(v) => {
                    let seq = std::str::from_utf8(&v[..v.len().min(32)])
                        .ok()
                        .and_then(|s| s.split('/').nth(2)?.parse::<u64>().ok());
                    let Some(seq) = seq.filter(|&s| *v == fill_value(self.id, i, s)) else {
                        panic!(
                            "{what}: {key} holds {} bytes that no write of it sent: {:?}…",
                            v.len(),
                            String::from_utf8_lossy(&v[..v.len().min(40)])
                        );
                    };
                    Some(seq)
                }
            };
            assert!(
                seq == known.acked || (seq.is_some() && seq == known.unsure),
                "{what}: {key} holds write {seq:?}; acknowledged: {:?}, unacknowledged \
                 in flight at the stop: {:?}",
                known.acked,
                known.unsure
            );
            *known = Known {
                acked: seq,
                unsure: None,
            };
        }
    }
}

/// `f` until it does not fail with a retryable status (TXN_ABORTED while a
/// recovered transaction's locks are settled, OVERLOADED); at most a minute.
fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T, ClientError>) -> T {
    let started = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(ClientError::Status { status, .. })
                if status.retryable() && started.elapsed() < Duration::from_secs(60) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// One snapshot of every account: the total holds, no balance is negative.
fn check_bank(c: &mut Client, what: &str) {
    let keys = bank::account_keys(ACCOUNTS);
    let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let values = retry(what, || c.mget(&refs));
    if let Err(v) = bank::check_values(&keys, &values) {
        panic!("{what}: bank invariant: {v}");
    }
}

/// Transfers until the connection fails; returns how many committed.
fn move_money(addr: SocketAddr, seed: u64) -> u64 {
    let Ok(mut c) = Client::connect(addr) else {
        return 0;
    };
    let _ = c.set_timeout(Some(Duration::from_secs(30)));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut report = bank::BankReport::default();
    loop {
        match bank::transfer(&mut c, &mut rng, ACCOUNTS, &mut report) {
            Ok(()) => {}
            Err(ClientError::Status {
                status: Status::Overloaded,
                ..
            }) => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => return report.transfers,
        }
    }
}

/// The load of one run: movers and filler writers, each until the server stops.
struct Load {
    movers: Vec<JoinHandle<u64>>,
    writers: Vec<JoinHandle<Writer>>,
}

impl Load {
    fn start(addr: SocketAddr, writers: Vec<Writer>, seed: u64) -> Load {
        Load {
            movers: (0..MOVERS)
                .map(|m| std::thread::spawn(move || move_money(addr, seed * 100 + m)))
                .collect(),
            writers: writers
                .into_iter()
                .map(|w| {
                    let s = seed * 100 + 50 + u64::from(w.id);
                    std::thread::spawn(move || w.run(addr, s))
                })
                .collect(),
        }
    }

    /// Wait for every connection to end (the server has been stopped).
    fn join(self) -> (u64, Vec<Writer>) {
        let transfers = self
            .movers
            .into_iter()
            .map(|m| m.join().expect("mover"))
            .sum();
        let writers = self
            .writers
            .into_iter()
            .map(|w| w.join().expect("writer"))
            .collect();
        (transfers, writers)
    }
}

/// What the runs did, from the servers' /metrics (each process counts from 0).
#[derive(Debug, Default)]
struct Coverage {
    flushes: f64,
    compactions: f64,
    segments_retired: f64,
    transfers: u64,
    fills: u64,
}

impl Coverage {
    /// Add the server's counters; call just before stopping it.
    fn sample(&mut self, server: &Server) {
        let sum = |name| metric_samples(server.admin, name).iter().sum::<f64>();
        self.flushes += sum("corekv_flushes");
        self.compactions += sum("corekv_compactions");
        self.segments_retired += sum("corekv_wal_segments_recycled");
    }

    fn assert_covered(&self, what: &str) {
        eprintln!("{what}: {self:?}");
        assert!(self.flushes >= 10.0, "{what}: too few flushes: {self:?}");
        assert!(
            self.compactions >= 3.0,
            "{what}: too few compactions: {self:?}"
        );
        assert!(
            self.segments_retired >= 2.0,
            "{what}: too few WAL segments retired: {self:?}"
        );
        assert!(self.transfers >= 20, "{what}: too few transfers: {self:?}");
        assert!(self.fills >= 100, "{what}: too few filler writes: {self:?}");
    }
}

/// Start the server; a refusal fails the test with the server's reason.
fn restart(dir: &Path, what: &str) -> Server {
    try_start_server(dir, &server_args())
        .unwrap_or_else(|stderr| panic!("{what}: the server refused to start:\n{stderr}"))
}

/// Check the bank and every filler key.
fn check_all(server: &Server, writers: &mut [Writer], what: &str) {
    let mut c = server.client();
    check_bank(&mut c, what);
    for w in writers.iter_mut() {
        w.check(&mut c, what);
    }
}

/// A fresh data directory with the accounts loaded (the server is stopped).
fn fresh_bank() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(dir.path(), &server_args());
    bank::load(&mut server.client(), ACCOUNTS).expect("load accounts");
    let (code, stderr) = server
        .stop_within(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the first server did not stop:\n{e}"));
    assert_eq!(code, Some(0), "clean stop after loading:\n{stderr}");
    dir
}

/// SIGTERM: a clean stop, exit code 0, within a minute, that leaves nothing
/// for `verify` to clean up: a compaction the stop interrupted removes its
/// partial output (issue 16, finding 4).
fn stop_cleanly(server: Server, what: &str) {
    let dir = server.data_dir.clone();
    match server.stop_within(Duration::from_secs(60)) {
        Ok((Some(0), _)) => {}
        Ok((code, stderr)) => panic!("{what}: SIGTERM: exit {code:?}:\n{stderr}"),
        Err(stderr) => panic!("{what}: SIGTERM: still running after a minute:\n{stderr}"),
    }
    let o = std::process::Command::new(common::corekv_bin())
        .arg("verify")
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .expect("run verify");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && !stdout.contains("no manifest names"),
        "{what}: verify after a clean stop:\n{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn stop_and_kill_cycles_keep_transactions_and_acknowledged_writes() {
    let per_kind: u64 = std::env::var("COREKV_RESTART_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = fresh_bank();
    let mut writers: Vec<Writer> = (0..WRITERS).map(Writer::new).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut cov = Coverage::default();
    let mut last = "the load of the accounts and a SIGTERM".to_string();
    let started = Instant::now();
    for cycle in 0..2 * per_kind {
        let what = format!("cycle {cycle}, after {last}");
        let server = restart(dir.path(), &what);
        check_all(&server, &mut writers, &what);
        let load = Load::start(server.addr, writers, cycle);
        std::thread::sleep(Duration::from_millis(rng.gen_range(500..1500)));
        cov.sample(&server);
        let kill = cycle % 2 == 1;
        if kill {
            server.kill();
        } else {
            stop_cleanly(server, &format!("cycle {cycle}"));
        }
        let (transfers, w) = load.join();
        writers = w;
        let fills: u64 = writers.iter().map(|w| w.acked).sum();
        cov.transfers += transfers;
        last = format!(
            "{} during load (run total: {} transfers, {fills} filler writes acknowledged)",
            if kill { "SIGKILL" } else { "SIGTERM" },
            cov.transfers
        );
        cov.fills = fills;
    }
    let what = format!("the final start, after {last}");
    let server = restart(dir.path(), &what);
    check_all(&server, &mut writers, &what);
    stop_cleanly(server, "the final stop");
    cov.assert_covered(&format!(
        "{} cycles ({per_kind} SIGTERM, {per_kind} SIGKILL) in {:?}",
        2 * per_kind,
        started.elapsed()
    ));
}

/// The checks can fail: an acknowledged write the server lacks, a value no
/// write sent, an older value than the acknowledged one, and a broken bank
/// total are each reported.
#[test]
fn the_checker_catches_lost_foreign_and_stale_values() {
    let dir = fresh_bank();
    let server = restart(dir.path(), "checker test");
    let mut c = server.client();
    let caught =
        |f: &mut dyn FnMut()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
    // Lost: acknowledged, never written.
    let mut w = Writer::new(0);
    w.keys[3].acked = Some(7);
    assert!(
        caught(&mut || w.check(&mut c, "lost")),
        "a lost write passed"
    );
    // Foreign: bytes no write of the key sent (another key's value).
    c.put(&fill_key(0, 1), &fill_value(0, 2, 1)).expect("put");
    let mut w = Writer::new(0);
    w.keys[1].acked = Some(1);
    assert!(
        caught(&mut || w.check(&mut c, "foreign")),
        "a foreign value passed"
    );
    // Stale: an older write than the acknowledged one.
    c.put(&fill_key(0, 1), &fill_value(0, 1, 1)).expect("put");
    let mut w = Writer::new(0);
    w.keys[1].acked = Some(2);
    assert!(
        caught(&mut || w.check(&mut c, "stale")),
        "a stale value passed"
    );
    // The same value is accepted when the later write was only in flight.
    let mut w = Writer::new(0);
    w.keys[1] = Known {
        acked: Some(0),
        unsure: Some(1),
    };
    w.check(&mut c, "unsure write applied");
    // Bank: money created.
    c.put(&bank::account_key(5), b"1001").expect("put");
    assert!(
        caught(&mut || check_bank(&mut c, "bank")),
        "a broken total passed"
    );
    drop(c);
    stop_cleanly(server, "checker test");
}

/// Start with `point@at` armed and the load running until the process aborts
/// there; then recover and check, load again, stop, recover and check again.
fn crash_at(point: &str, at: u32) {
    let dir = fresh_bank();
    let mut writers: Vec<Writer> = (0..WRITERS).map(Writer::new).collect();
    let armed = format!("{point}@{at}");
    let mut cov = Coverage::default();
    let mut server = try_start_server_env(
        dir.path(),
        &server_args(),
        &[("COREKV_FAILPOINT", armed.as_str())],
    )
    .unwrap_or_else(|e| panic!("{armed}: the server did not start:\n{e}"));
    let load = Load::start(server.addr, writers, u64::from(at));
    // Poll for the abort: the workload must reach the point, or the test covers
    // nothing.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait for the server") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{armed}: the workload never reached the failpoint"
        );
        // The counters of the run, as late as possible before the crash.
        let sum = |name| Some(try_metric_samples(server.admin, name)?.iter().sum::<f64>());
        if let (Some(f), Some(c), Some(r)) = (
            sum("corekv_flushes"),
            sum("corekv_compactions"),
            sum("corekv_wal_segments_recycled"),
        ) {
            cov.flushes = cov.flushes.max(f);
            cov.compactions = cov.compactions.max(c);
            cov.segments_retired = cov.segments_retired.max(r);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = server.kill();
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "{armed}: the server exited otherwise: {status:?}\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("failpoint {point} reached")),
        "{armed}: aborted elsewhere:\n{stderr}"
    );
    let (transfers, w) = load.join();
    writers = w;
    cov.transfers += transfers;
    let what = format!("after the crash at {armed}");
    let server = restart(dir.path(), &what);
    check_all(&server, &mut writers, &what);
    // The recovered directory goes on working: more flushes over what recovery
    // rebuilt, a clean stop, and a second recovery.
    let load = Load::start(server.addr, writers, 1000 + u64::from(at));
    std::thread::sleep(Duration::from_millis(800));
    cov.sample(&server);
    stop_cleanly(server, &format!("{what}, a second run"));
    let (transfers, w) = load.join();
    writers = w;
    cov.transfers += transfers;
    let what = format!("{what}, a second run and a SIGTERM");
    let server = restart(dir.path(), &what);
    check_all(&server, &mut writers, &what);
    stop_cleanly(server, &what);
    cov.fills = writers.iter().map(|w| w.acked).sum();
    cov.assert_covered(&armed);
}

// The transaction steps (existing failpoints), reached late enough that
// flushes, compactions and retired segments happened before.

#[test]
fn crash_at_participant_prepared_with_flushes_in_flight() {
    crash_at("txn-after-prepare", 300);
}

#[test]
fn crash_at_decision_logged_with_flushes_in_flight() {
    crash_at("txn-after-decision", 200);
}

#[test]
fn crash_at_resolve_applied_with_flushes_in_flight() {
    crash_at("txn-after-partial-apply", 200);
}

// The flush and retirement steps (src/shard/lsm/mod.rs, src/shard/group_commit.rs),
// with transactions prepared and resolving around them.

#[test]
fn crash_at_flush_table_written_manifest_not() {
    crash_at("flush-after-table", 40);
}

#[test]
fn crash_at_flush_manifest_stored() {
    crash_at("flush-after-manifest", 40);
}

#[test]
fn crash_at_compaction_manifest_stored_inputs_not_deleted() {
    crash_at("compaction-after-manifest", 10);
}

#[test]
fn crash_at_wal_segments_retired() {
    crash_at("wal-after-recycle", 4);
}
