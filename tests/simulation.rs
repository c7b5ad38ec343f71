//! Deterministic simulation of one shard: its real code (recovery, group commit
//! and the WAL writer, the memtable, flushes, compaction, reads and scans) over
//! the simulated disk (`SimDisk`, with every I/O yielding to the scheduler so
//! that concurrent operations complete in any order) and a simulated clock,
//! driven by a seeded scheduler that picks which ready task runs next. Each
//! seed runs several epochs; an epoch ends in a crash at a random scheduler
//! step, followed by a power loss (unsynced writes survive, vanish or tear) or
//! a process death (they all survive). Faults (failed reads, writes, fsyncs,
//! full disk) are injected after recovery, where the shard must stop writing
//! and a restart must recover. Every read and scan is checked against a model
//! as it completes; after every restart every key is checked against the
//! acknowledged history.
//!
//! The schedule, the workload, the disk's randomness and the faults all come
//! from the seed: a failing seed is printed and `COREKV_SIM_SEED=n` replays
//! it; the same seed run twice gives the same trace hash (checked).
//! `COREKV_SIM_SEEDS` sets how many seeds the default test runs (5,000).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use corekv::core::config::EngineConfig;
use corekv::core::scan_format::{decode_page, encode_params, page_entries, ScanParams};
use corekv::core::status::Status;
use corekv::core::types::ShardId;
use corekv::io::sim_disk::{Fault, FaultKind, SimDisk};
use corekv::shard::clock::SimClock;
use corekv::shard::maintenance::{compact_now, run_flushes};
use corekv::shard::ops::{OpBatch, OpKind, ReplyBatch};
use corekv::shard::recovery::{recover, Recovered};
use corekv::shard::state::ShardState;
use corekv::shard::wake::Event;
use corekv::sim::Sched;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Where the recovery task leaves the recovered shard.
type RecoverySlot = Rc<RefCell<Option<Result<Recovered<SimDisk>, String>>>>;

/// What the model knows: acknowledged values, and writes whose outcome is
/// unknown (in flight at a crash, or failed by the WAL) that may have landed.
#[derive(Default)]
struct Model {
    acked: BTreeMap<Vec<u8>, Vec<u8>>,
    maybe: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    failure: Option<String>,
    events: Vec<u64>,
    stats: Stats,
}

/// What a run exercised (summed over seeds and printed, so a run that
/// silently does nothing shows).
#[derive(Default, Clone, Copy, Debug)]
struct Stats {
    acked_writes: u64,
    failed_writes: u64,
    checked_reads: u64,
    failed_reads: u64,
    checked_scans: u64,
    restart_checks: u64,
    flushes: u64,
    compactions: u64,
    crashes: u64,
    steps: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.acked_writes += o.acked_writes;
        self.failed_writes += o.failed_writes;
        self.checked_reads += o.checked_reads;
        self.failed_reads += o.failed_reads;
        self.checked_scans += o.checked_scans;
        self.restart_checks += o.restart_checks;
        self.flushes += o.flushes;
        self.compactions += o.compactions;
        self.crashes += o.crashes;
        self.steps += o.steps;
    }
}

const KEYS: u64 = 24;

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:03}").into_bytes()
}

fn config() -> EngineConfig {
    let mut c = EngineConfig::new("/data");
    c.wal_segment_bytes = 1024 * 1024;
    c.memtable_bytes = 3 * 1024;
    c.cache_bytes = 64 * 1024;
    c.table_target_bytes = 16 * 1024;
    c.l0_trigger = 2;
    c
}

async fn one(state: &ShardState<SimDisk>, kind: OpKind, k: &[u8], v: &[u8]) -> (Status, Vec<u8>) {
    let mut ops = OpBatch::default();
    ops.push(kind, k, v);
    let mut out = ReplyBatch::default();
    state.execute(&ops, &mut out).await;
    state.settle(&mut out).await;
    let (s, body) = out.get(0);
    (s, body.to_vec())
}

/// The client of one epoch: check every key against the history, then run
/// `ops` random operations, checking each read as it completes.
async fn client(
    state: Rc<ShardState<SimDisk>>,
    model: Rc<RefCell<Model>>,
    seed: u64,
    ops: u32,
    fault: Option<(SimDisk, Fault)>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let fail = |m: &mut Model, what: String| {
        if m.failure.is_none() {
            m.failure = Some(what);
        }
    };
    // After a restart: each key holds its acknowledged value or one of the
    // writes that may have landed; from now on that is the history.
    for i in 0..KEYS {
        let k = key(i);
        let (s, v) = one(&state, OpKind::Get, &k, b"").await;
        let got = match s {
            Status::Ok => Some(v),
            Status::NotFound => None,
            other => {
                return fail(
                    &mut model.borrow_mut(),
                    format!("restart read of key {i}: {}", other.name()),
                );
            }
        };
        let mut m = model.borrow_mut();
        let acked = m.acked.get(&k).cloned();
        let possible = got == acked || m.maybe.iter().any(|(mk, mv)| *mk == k && *mv == got);
        if !possible {
            let msg = format!("after restart key {i} = {got:?}, acknowledged {acked:?}");
            return fail(&mut m, msg);
        }
        m.stats.restart_checks += 1;
        match got {
            Some(v) => m.acked.insert(k, v),
            None => m.acked.remove(&k),
        };
    }
    model.borrow_mut().maybe.clear();
    // Faults only now, after the restart check: recovery must always succeed.
    if let Some((disk, mut f)) = fault {
        f.nth += disk.op_count(f.kind);
        disk.add_fault(f);
    }
    for n in 0..ops {
        let k = key(rng.gen_range(0..KEYS));
        let roll = rng.gen_range(0..100);
        if roll < 45 || (roll < 60) {
            let value = (roll < 45).then(|| format!("s{seed}-{n}").into_bytes());
            model.borrow_mut().maybe.push((k.clone(), value.clone()));
            let (s, _) = match &value {
                Some(v) => one(&state, OpKind::Put, &k, v).await,
                None => one(&state, OpKind::Delete, &k, b"").await,
            };
            let mut m = model.borrow_mut();
            m.events.push(u64::from(s.code()));
            match s {
                Status::Ok => {
                    m.maybe.pop();
                    m.stats.acked_writes += 1;
                    match value {
                        Some(v) => m.acked.insert(k, v),
                        None => m.acked.remove(&k),
                    };
                }
                // Refused before logging (a DELETE's lookup can meet a read
                // fault): certainly not applied.
                Status::StorageFailed | Status::DiskFull | Status::Overloaded | Status::IoError => {
                    m.maybe.pop();
                    m.stats.failed_writes += 1;
                }
                // The WAL failed: it may or may not be on disk.
                Status::WalFailed => m.stats.failed_writes += 1,
                other => return fail(&mut m, format!("write answered {}", other.name())),
            }
        } else if roll < 85 {
            let (s, v) = one(&state, OpKind::Get, &k, b"").await;
            let mut m = model.borrow_mut();
            m.events.push(u64::from(s.code()));
            let expect = m.acked.get(&k).cloned();
            let got = match s {
                Status::Ok => Some(v),
                Status::NotFound => None,
                // Injected read faults surface as errors, never as data.
                Status::IoError | Status::StorageCorrupt => {
                    m.stats.failed_reads += 1;
                    continue;
                }
                other => return fail(&mut m, format!("read answered {}", other.name())),
            };
            m.stats.checked_reads += 1;
            // A write the WAL failed may be visible until restart only if it
            // was staged; the model allows the acknowledged value or a maybe.
            if got != expect && !m.maybe.iter().any(|(mk, mv)| *mk == k && *mv == got) {
                let msg = format!(
                    "read of {:?} gave {got:?}, model {expect:?}",
                    String::from_utf8_lossy(&k)
                );
                return fail(&mut m, msg);
            }
        } else if roll < 93 {
            let mut params = Vec::new();
            encode_params(
                &mut params,
                &ScanParams {
                    end: b"",
                    limit: 1000,
                    filter_kind: 0,
                    filter_arg: b"",
                },
            );
            let (s, page) = one(&state, OpKind::Scan, b"", &params).await;
            let mut m = model.borrow_mut();
            m.events.push(u64::from(s.code()));
            if matches!(s, Status::IoError | Status::StorageCorrupt) {
                continue;
            }
            let Some(page) = decode_page(&page).filter(|_| s == Status::Ok) else {
                return fail(&mut m, format!("scan answered {}", s.name()));
            };
            let got: Vec<(Vec<u8>, Vec<u8>)> = page_entries(page.entries)
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            let expect: Vec<(Vec<u8>, Vec<u8>)> = m
                .acked
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if m.maybe.is_empty() {
                m.stats.checked_scans += 1;
                if got != expect {
                    return fail(
                        &mut m,
                        format!("scan gave {} entries, model {}", got.len(), expect.len()),
                    );
                }
            }
        } else if roll < 97 {
            state.lsm.freeze_now();
        } else {
            compact_now(&state).await;
        }
    }
}

/// Run one seed; `Err` names the first divergence. Returns the trace hash.
fn run_seed(seed: u64) -> Result<u64, String> {
    run_seed_stats(seed).map(|(t, _)| t)
}

fn run_seed_stats(seed: u64) -> Result<(u64, Stats), String> {
    let disk = SimDisk::new(seed);
    disk.set_interleave(true);
    let cfg = config();
    let model = Rc::new(RefCell::new(Model::default()));
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut trace = 0u64;
    for epoch in 0..4u64 {
        let clock = SimClock::default();
        let mut sched = Sched::new(seed.wrapping_mul(31).wrapping_add(epoch), clock.clone());
        let recovered: RecoverySlot = Rc::default();
        {
            let (disk, cfg, slot) = (disk.clone(), cfg.clone(), recovered.clone());
            let id = sched.spawn(async move {
                let r = recover(disk, &cfg, ShardId(0), 1)
                    .await
                    .map_err(|e| e.to_string());
                *slot.borrow_mut() = Some(r);
            });
            while !sched.done(id) {
                if !sched.step() {
                    return Err(format!("seed {seed} epoch {epoch}: recovery stalled"));
                }
            }
        }
        let Some(Ok(Recovered { state, mut wal, .. })) = recovered.borrow_mut().take() else {
            return Err(format!(
                "seed {seed} epoch {epoch}: recovery failed: {:?}",
                recovered
                    .borrow()
                    .as_ref()
                    .map(|r| r.as_ref().err().cloned())
            ));
        };
        // Faults after the restart check, where a restart can still recover.
        let fault = rng.gen_bool(0.3).then(|| {
            let kind = [
                FaultKind::ReadEio,
                FaultKind::WriteEio,
                FaultKind::WriteEnospc,
                FaultKind::SyncEio,
            ][rng.gen_range(0..4)];
            let f = Fault {
                kind,
                nth: rng.gen_range(1..60),
                sticky: rng.gen_bool(0.5),
            };
            (disk.clone(), f)
        });
        let stop = Rc::new(Event::default());
        {
            let state = state.clone();
            let c = clock.clone();
            sched.spawn(async move {
                state.run_wal_flusher(&mut wal, &c).await;
            });
        }
        sched.spawn(run_flushes(state.clone(), stop.clone()));
        let client_id = sched.spawn(client(
            state.clone(),
            model.clone(),
            seed * 16 + epoch,
            40,
            fault,
        ));
        // The last epoch runs to completion; the others crash at a random step.
        let crash_at = (epoch < 3).then(|| rng.gen_range(20..3000u64));
        while !sched.done(client_id) {
            if crash_at.is_some_and(|c| sched.steps >= c) {
                break;
            }
            if !sched.step() {
                return Err(format!(
                    "seed {seed} epoch {epoch}: the shard stalled (no task can run)"
                ));
            }
            if model.borrow().failure.is_some() {
                break;
            }
        }
        trace ^= sched.trace.rotate_left(epoch as u32);
        {
            let mut m = model.borrow_mut();
            m.stats.steps += sched.steps;
            m.stats.flushes += state.lsm.stats.flushes.get();
            m.stats.compactions += state.lsm.stats.compactions.get();
            m.stats.crashes += u64::from(epoch < 3);
        }
        if let Some(f) = model.borrow_mut().failure.take() {
            return Err(format!("seed {seed} epoch {epoch}: {f}"));
        }
        // Crash: every task is dropped mid-flight, then the machine loses
        // power or only the process dies.
        drop(sched);
        drop(state);
        if rng.gen_bool(0.7) {
            disk.power_loss();
        } else {
            disk.power_loss_keeping_writes();
        }
    }
    let m = model.borrow();
    for e in &m.events {
        trace = (trace ^ e).wrapping_mul(0x0100_0000_01b3);
    }
    Ok((trace, m.stats))
}

#[test]
fn shard_simulation_over_many_seeds() {
    let all = corekv::sim::seeds("COREKV_SIM_SEEDS", 5_000);
    let (failures, stats) = corekv::sim::run_seeds(
        &all,
        |seed| run_seed_stats(seed).map(|(_, s)| s),
        |t: &mut Stats, s| t.add(s),
    );
    assert!(
        failures.is_empty(),
        "{}",
        corekv::sim::failure_report(&failures, all.len())
    );
    eprintln!("{} seeds, 0 divergences; {stats:?}", all.len());
    if all.len() >= 1000 {
        assert!(stats.crashes >= 3 * all.len() as u64 - 10, "{stats:?}");
        assert!(
            stats.flushes > all.len() as u64 && stats.compactions > 100,
            "{stats:?}"
        );
        assert!(
            stats.failed_writes > 100 && stats.failed_reads > 10,
            "faults were hit: {stats:?}"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    corekv::shard::wake::set_simulated(true);
    for seed in [3, 77, 1234] {
        let a = run_seed(seed).expect("seed runs");
        let b = run_seed(seed).expect("seed runs");
        assert_eq!(a, b, "seed {seed} is not deterministic");
    }
    let distinct: BTreeSet<u64> = (1..20).map(|s| run_seed(s).expect("seed runs")).collect();
    assert!(
        distinct.len() > 15,
        "different seeds explore different schedules"
    );
}
