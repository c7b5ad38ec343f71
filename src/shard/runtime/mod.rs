//! Starts one pinned glommio executor per shard, recovers every shard before any
//! serves, runs the caller's service on each core, and stops them in order.
//!
//! Startup is all-or-nothing: every shard replays its WAL first, and only if all
//! succeed does any shard start serving; otherwise the first error is returned
//! with its stable name. Shutdown: the service on every core returns, then (once
//! every core's service is done, so no forwarded request can still arrive) each
//! shard flushes and syncs its open WAL batch and closes the WAL.
//!
//! The control thread talks to the shards through a few atomics and a condition
//! variable, at startup and shutdown only; none of that is on the request path.

pub mod telemetry;

use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::core::config::EngineConfig;
use crate::core::types::{Durability, ShardId};
use crate::io::data_dir::{DataDir, DataDirError};
use crate::io::DmaDisk;

use crate::shard::clock::GlommioClock;
use crate::shard::maintenance::{run_compactions, run_flushes};
use crate::shard::recovery::{recover, RecoveryError};
use crate::shard::route::context::ShardContext;
use crate::shard::route::router::{make_links, Router, ShardLinks};
use crate::shard::runtime::telemetry::{Health, ShardSnapshot, Telemetry};
use crate::shard::state::ShardState;
use crate::shard::txn::recovery::{settle_in_doubt, TxnOutcomes, TxnReplay};
use crate::shard::wake::Event;

/// Why the engine could not start. Each variant has a stable name (docs/errors.md).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("recovery failed on {0}")]
    Recovery(#[from] RecoveryError),
    #[error("could not start the executor for shard {shard} on CPU {cpu}: {detail}")]
    Executor {
        shard: u16,
        cpu: usize,
        detail: String,
    },
}

impl StartError {
    pub fn name(&self) -> &'static str {
        match self {
            StartError::Config(_) => "CONFIG_INVALID",
            StartError::DataDir(e) => e.name(),
            StartError::Recovery(e) => e.name(),
            StartError::Executor { .. } => "EXECUTOR_FAILED",
        }
    }

    pub fn fix(&self) -> String {
        match self {
            StartError::Config(_) => "correct the settings named above".into(),
            StartError::DataDir(e) => e.fix(),
            StartError::Recovery(e) => match e.name() {
                "WAL_CORRUPT" => "restore the data directory from a backup, or restart with --recover-truncate \
                                  to drop the corrupt record and everything after it in that shard's log"
                    .into(),
                "DISK_FULL" => format!(
                    "free space ({}): each shard needs at least two WAL segments \
                     (wal_segment_bytes each: the active one and the spare being prepared) plus \
                     room for its memtable to be flushed and compacted; see docs/errors.md#disk_full",
                    e.io_path()
                        .map(crate::io::disk_space::describe_free)
                        .unwrap_or_else(|| "free space unknown".into())
                ),
                _ => "check the disk (dmesg, free space, permissions) and restart".into(),
            },
            StartError::Executor { .. } => {
                "check that the CPUs in --cpus exist and are allowed (taskset, cgroup cpuset), and that \
                 io_uring is available (kernel >= 5.8, not disabled by sysctl kernel.io_uring_disabled)"
                    .into()
            }
        }
    }
}

/// What a started engine is.
#[derive(Clone, Debug)]
pub struct EngineInfo {
    pub data_dir: PathBuf,
    pub shard_count: u16,
    pub durability: Durability,
    /// The CPU each shard is pinned to.
    pub cpus: Vec<usize>,
    /// True when this start created the data directory.
    pub created: bool,
}

/// How one shard ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardExit {
    /// Stopped cleanly; every acknowledged write is in a synced WAL.
    Clean,
    /// The WAL failed while serving (the shard had gone read-only).
    WalFailed { shard: u16, reason: String },
    /// The shard's storage (flush or compaction) failed while it ran: it was
    /// read-only from then on (STORAGE_FAILED or DISK_FULL).
    StorageFailed { shard: u16, reason: String },
    /// The shard's thread panicked or its service failed.
    Crashed { shard: u16, detail: String },
}

/// How often each shard publishes its telemetry snapshot.
pub const TELEMETRY_INTERVAL: Duration = Duration::from_millis(250);

/// How often each shard looks at the engine's stop flag.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Flags shared between the control thread and the shards; never touched per request.
struct Control {
    stop: Arc<AtomicBool>,
    telemetry: Arc<Telemetry>,
    services_done: AtomicUsize,
    /// Shards that have settled their in-doubt transactions at startup.
    settled: AtomicUsize,
    /// `None` until every shard reported its recovery; then whether to serve.
    go: Mutex<Option<bool>>,
    /// Every shard's transaction decisions, gathered before `go` is set.
    txn_outcomes: Mutex<TxnOutcomes>,
    go_changed: Condvar,
}

/// A running engine: `shard_count` pinned executors, each running one service.
pub struct Engine {
    info: EngineInfo,
    control: Arc<Control>,
    threads: Vec<glommio::ExecutorJoinHandle<ShardExit>>,
    _data_dir: DataDir,
}

/// The CPUs this process may run on, in order.
pub fn usable_cpus() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ids.into_iter().map(|c| c.id).collect(),
        _ => vec![0],
    }
}

/// The shard count a start with `config` would serve with, read without
/// locking or creating anything: the data directory's recorded count, else
/// `config.shards`, else one shard per allowed CPU. `None` when the recorded
/// metadata cannot be read; the start itself then reports why. For checks of
/// settings that depend on the count (`connection_shards`) before a start
/// that would fix a new directory's count.
pub fn planned_shard_count(config: &EngineConfig) -> Option<u16> {
    match crate::io::data_dir::recorded_shard_count(&config.data_dir) {
        Ok(Some(recorded)) => Some(recorded),
        Ok(None) => Some(
            config
                .shards
                .unwrap_or_else(|| default_shard_count(&allowed_cpus(config))),
        ),
        Err(_) => None,
    }
}

/// The CPUs the shards may run on: `config.cpus`, else every usable one.
fn allowed_cpus(config: &EngineConfig) -> Vec<usize> {
    config.cpus.clone().unwrap_or_else(usable_cpus)
}

/// A new directory's shard count when none is asked for: one per CPU the
/// shards may run on.
fn default_shard_count(cpus_allowed: &[usize]) -> u16 {
    cpus_allowed.len().clamp(1, usize::from(u16::MAX)) as u16
}

impl Engine {
    /// Recover every shard of `config.data_dir`, then run `service` once on every
    /// shard's core. Returns after every shard recovered (and started serving) or
    /// with the first startup error.
    pub fn start<S, F>(config: EngineConfig, service: S) -> Result<Engine, StartError>
    where
        S: Fn(ShardContext) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), String>> + 'static,
    {
        Engine::start_with_telemetry(config, Telemetry::new(), service)
    }

    /// Like [`Self::start`], publishing health and metrics into `telemetry`, which
    /// an observer (the admin endpoint) may already be reading.
    pub fn start_with_telemetry<S, F>(
        config: EngineConfig,
        telemetry: Arc<Telemetry>,
        service: S,
    ) -> Result<Engine, StartError>
    where
        S: Fn(ShardContext) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), String>> + 'static,
    {
        config.validate().map_err(StartError::Config)?;
        // The storage layer needs absolute paths (see DmaDisk::sync_dir); an
        // embedding program may hand us a relative one.
        let mut config = config;
        if let Ok(abs) = std::path::absolute(&config.data_dir) {
            config.data_dir = abs;
        }
        // Before the data directory is touched: a start that could only fail
        // later (EXECUTOR_FAILED) must not first fix the shard count of a new
        // directory in corekv.meta (issue 22, finding 8).
        if let Some(cpus) = &config.cpus {
            let usable = usable_cpus();
            let bad: Vec<usize> = cpus
                .iter()
                .copied()
                .filter(|c| !usable.contains(c))
                .collect();
            if !bad.is_empty() {
                return Err(StartError::Config(vec![format!(
                    "cpus: CPU(s) {bad:?} are not available to this process (usable: {usable:?}); \
                     fix --cpus / COREKV_CPUS / `cpus` in the config file"
                )]));
            }
        }
        let cpus_allowed = allowed_cpus(&config);
        let data_dir = DataDir::open(
            &config.data_dir,
            config.shards,
            default_shard_count(&cpus_allowed),
        )?;
        // A first start that fails before serving removes the metadata and
        // shard directories it wrote (DataDir::discard_unserved): a directory
        // that never served must not have its shard count fixed by a failure.
        let discard = |data_dir: DataDir, e: StartError| {
            data_dir.discard_unserved();
            e
        };
        let n = data_dir.shard_count;
        let cpus: Vec<usize> = (0..usize::from(n))
            .map(|i| cpus_allowed[i % cpus_allowed.len()])
            .collect();
        let info = EngineInfo {
            data_dir: data_dir.path.clone(),
            shard_count: n,
            durability: config.durability,
            cpus: cpus.clone(),
            created: data_dir.created,
        };
        telemetry.init(info.data_dir.clone(), config.durability, &cpus);
        let control = Arc::new(Control {
            stop: Arc::new(AtomicBool::new(false)),
            telemetry,
            services_done: AtomicUsize::new(0),
            settled: AtomicUsize::new(0),
            go: Mutex::new(None),
            txn_outcomes: Mutex::new(TxnOutcomes::default()),
            go_changed: Condvar::new(),
        });
        let service = Arc::new(service);
        let (report_tx, report_rx) = mpsc::channel::<Result<TxnReplay, RecoveryError>>();
        let mut threads = Vec::with_capacity(usize::from(n));
        let meta_path = data_dir.meta_path();
        for (i, links) in make_links(usize::from(n)).into_iter().enumerate() {
            let shard = ShardId(i as u16);
            let shard_config = config.clone();
            let shard_control = control.clone();
            let service = service.clone();
            let report_tx = report_tx.clone();
            let meta_path = meta_path.clone();
            let cpu = cpus[i];
            let builder = LocalExecutorBuilder::new(Placement::Fixed(cpus[i]))
                .name(&format!("shard-{i:03}"))
                .io_memory(config.io_memory_bytes)
                .spin_before_park(config.spin_before_park);
            let spawned = builder.spawn(move || async move {
                run_shard(
                    (shard, cpu),
                    n,
                    shard_config,
                    links,
                    shard_control,
                    meta_path,
                    report_tx,
                    service,
                )
                .await
            });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    release(&control, false);
                    join_all(threads);
                    let e = StartError::Executor {
                        shard: i as u16,
                        cpu: cpus[i],
                        detail: e.to_string(),
                    };
                    return Err(discard(data_dir, e));
                }
            }
        }
        drop(report_tx);
        let mut first_error = None;
        let mut outcomes = TxnOutcomes::default();
        for _ in 0..n {
            match report_rx.recv() {
                Ok(Ok(replay)) => outcomes.gather(&replay),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                // A shard thread died before reporting; its join reports why.
                Err(_) => break,
            }
        }
        let all_reported = first_error.is_none() && threads.len() == usize::from(n);
        if let Some(e) = first_error {
            release(&control, false);
            join_all(threads);
            return Err(discard(data_dir, e.into()));
        }
        if !all_reported {
            release(&control, false);
            let exits = join_all(threads);
            let detail = format!("{exits:?}");
            let e = StartError::Executor {
                shard: 0,
                cpu: cpus[0],
                detail,
            };
            return Err(discard(data_dir, e));
        }
        *control
            .txn_outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = outcomes;
        release(&control, true);
        Ok(Engine {
            info,
            control,
            threads,
            _data_dir: data_dir,
        })
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// Health and metrics snapshots, refreshed by every shard a few times a second.
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.control.telemetry.clone()
    }

    /// Ask every shard to stop. Safe from any thread, including signal handlers'
    /// helper threads; returns at once.
    pub fn request_stop(&self) {
        self.control.stop.store(true, Ordering::SeqCst);
    }

    /// The flag that stops the engine when set; hand it to signal-hook so that
    /// SIGINT/SIGTERM stop the engine gracefully.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.control.stop.clone()
    }

    pub fn is_stopping(&self) -> bool {
        self.control.stop.load(Ordering::SeqCst)
    }

    /// Wait for every shard to stop (after [`Self::request_stop`], a signal, or a
    /// failed service) and report how each ended.
    pub fn wait(self) -> Vec<ShardExit> {
        join_all(self.threads)
    }
}

fn release(control: &Control, go: bool) {
    let mut g = control.go.lock().unwrap_or_else(|p| p.into_inner());
    *g = Some(go);
    control.go_changed.notify_all();
}

fn join_all(threads: Vec<glommio::ExecutorJoinHandle<ShardExit>>) -> Vec<ShardExit> {
    threads
        .into_iter()
        .enumerate()
        .map(|(i, t)| match t.join() {
            Ok(exit) => exit,
            Err(e) => ShardExit::Crashed {
                shard: i as u16,
                detail: e.to_string(),
            },
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn run_shard<S, F>(
    (shard, config_cpu): (ShardId, usize),
    shard_count: u16,
    config: EngineConfig,
    links: ShardLinks,
    control: Arc<Control>,
    meta_path: PathBuf,
    report: mpsc::Sender<Result<TxnReplay, RecoveryError>>,
    service: Arc<S>,
) -> ShardExit
where
    S: Fn(ShardContext) -> F,
    F: Future<Output = Result<(), String>>,
{
    let (recovered, in_doubt) =
        match recover_and_report(shard, shard_count, &config, &meta_path, &report).await {
            Ok(r) => r,
            Err(exit) => return exit,
        };
    let state = recovered.state;
    let wal = recovered.wal;
    if !wait_for_go(&control) {
        let _ = wal.close().await;
        return ShardExit::Clean;
    }
    let flusher = spawn_wal_flusher(state.clone(), wal);
    settle_then_wait_for_all(&state, in_doubt, &control, shard_count).await;

    let storage_stop = Rc::new(Event::default());
    let (flushes, compactions) = spawn_storage_tasks(&state, &storage_stop);
    let router = Router::connect(state.clone(), links).await;
    let shutdown = Rc::new(Event::default());
    let watcher = {
        let shutdown = shutdown.clone();
        let control = control.clone();
        glommio::spawn_local(async move {
            // Polled, not signalled: the stop flag is set by a signal handler
            // on another thread. Every poll wakes an idle shard (and, with a
            // park policy that spins, spins it again), so poll rarely: a
            // stop may wait this long, an idle server pays for it 10 times a
            // second instead of 50 (docs/tuning.md, idle CPU).
            while !control.stop.load(Ordering::SeqCst) {
                glommio::timer::sleep(STOP_POLL_INTERVAL).await;
            }
            shutdown.set();
        })
    };
    let publisher = spawn_publisher(state.clone(), control.clone(), config_cpu);
    let sweeper = glommio::spawn_local(crate::shard::expiry_sweeper::run_expiry_sweeper(
        state.clone(),
        shutdown.clone(),
        config.expiry_sweep_interval,
    ));
    let ctx = ShardContext {
        router,
        shutdown: shutdown.clone(),
        durability: config.durability,
    };
    let served = service(ctx).await;
    if let Err(detail) = &served {
        tracing::error!(
            shard = shard.0,
            "service failed, stopping the engine: {detail}"
        );
        control.stop.store(true, Ordering::SeqCst);
    }
    watcher.await;
    sweeper.await;
    // Other shards may still forward requests to us until their services are done.
    control.services_done.fetch_add(1, Ordering::SeqCst);
    while control.services_done.load(Ordering::SeqCst) < usize::from(shard_count) {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    storage_stop.set();
    state.lsm.work.wake_all();
    // A compaction may be long: it stops at its next entry and removes its
    // partial output, so a clean stop leaves no file the manifest does not
    // name. A flush in progress completes.
    state.lsm.cancel_compactions();
    compactions.await;
    flushes.await;
    state.commit.request_stop();
    let wal_failure = flusher.await;
    publisher.await;
    control
        .telemetry
        .publish(ShardSnapshot::capture(&state, config_cpu));
    control.telemetry.set_health(shard.0, Health::Stopped);
    exit_of(shard, &state, served, wal_failure)
}

type InDoubt = std::collections::BTreeMap<
    crate::core::txn_format::TxnId,
    (u64, crate::core::txn_format::ValidPrepare),
>;

/// Recover this shard and send the control thread what its replay found about
/// transactions (or the error). `Err`: the shard's exit, already reported.
async fn recover_and_report(
    shard: ShardId,
    shard_count: u16,
    config: &EngineConfig,
    meta_path: &std::path::Path,
    report: &mpsc::Sender<Result<TxnReplay, RecoveryError>>,
) -> Result<(crate::shard::recovery::Recovered<DmaDisk>, InDoubt), ShardExit> {
    let disk = DmaDisk;
    if let Err(e) = disk.prime_device_probe(meta_path).await {
        let _ = report.send(Err(RecoveryError {
            shard,
            source: e.into(),
        }));
        return Err(ShardExit::Crashed {
            shard: shard.0,
            detail: "device probe failed".into(),
        });
    }
    let mut recovered = match recover(disk, config, shard, shard_count).await {
        Ok(r) => r,
        Err(e) => {
            let detail = e.to_string();
            let _ = report.send(Err(e));
            return Err(ShardExit::Crashed {
                shard: shard.0,
                detail,
            });
        }
    };
    tracing::info!(
        shard = shard.0,
        records = recovered.report.records,
        last_lsn = recovered.report.last_lsn,
        memtable_entries = recovered.state.lsm.memtable().borrow().len(),
        tables = recovered.state.lsm.version().tables().count(),
        "shard recovered"
    );
    let in_doubt = std::mem::take(&mut recovered.txns.in_doubt);
    let summary = TxnReplay {
        decisions: std::mem::take(&mut recovered.txns.decisions),
        max_seq: std::mem::take(&mut recovered.txns.max_seq),
        ..TxnReplay::default()
    };
    let _ = report.send(Ok(summary));
    Ok((recovered, in_doubt))
}

/// Wait for the control thread's word: serve (`true`) or stop (every shard
/// recovered, or one failed). Blocking is fine: nothing else runs on this
/// executor yet.
fn wait_for_go(control: &Control) -> bool {
    let mut g = control.go.lock().unwrap_or_else(|p| p.into_inner());
    while g.is_none() {
        g = control
            .go_changed
            .wait(g)
            .unwrap_or_else(|p| p.into_inner());
    }
    g.unwrap_or(false)
}

/// The WAL group-commit flusher; yields why the WAL failed, if it did
/// (including a failed close).
fn spawn_wal_flusher(
    state: Rc<ShardState<DmaDisk>>,
    mut wal: crate::io::wal_writer::WalWriter<DmaDisk>,
) -> glommio::Task<Option<String>> {
    glommio::spawn_local(async move {
        let clock = GlommioClock::default();
        let mut reason = state.run_wal_flusher(&mut wal, &clock).await;
        if let Some(why) = &reason {
            tracing::error!(
                shard = state.id.0,
                error = "WAL_FAILED",
                "WAL write or fdatasync failed; the shard refuses writes from now on and serves \
                 reads only. Acknowledged writes are safe; unacknowledged ones are lost. {why}"
            );
        }
        if reason.is_none() {
            if let Err(e) = wal.close().await {
                reason = Some(e.to_string());
            }
        }
        reason
    })
}

/// Settle what a crash left prepared before this shard (or, through the
/// router, any other) serves: every shard connects its router only after.
/// Then wait until every shard has settled.
async fn settle_then_wait_for_all(
    state: &Rc<ShardState<DmaDisk>>,
    in_doubt: InDoubt,
    control: &Control,
    shard_count: u16,
) {
    let outcomes = control
        .txn_outcomes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    settle_in_doubt(state, in_doubt, &outcomes).await;
    drop(outcomes);
    // No shard flushes before every shard has settled: a coordinator's
    // decision found by replay is not pinned, and a flush here could retire it
    // while a participant elsewhere still needs it to settle (if that
    // participant then crashed, its next start would presume abort).
    control.settled.fetch_add(1, Ordering::SeqCst);
    while control.settled.load(Ordering::SeqCst) < usize::from(shard_count)
        && !control.stop.load(Ordering::SeqCst)
    {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// Memtable flushes and compactions, each in its own task queue.
fn spawn_storage_tasks(
    state: &Rc<ShardState<DmaDisk>>,
    storage_stop: &Rc<Event>,
) -> (glommio::Task<()>, glommio::Task<()>) {
    {
        let ex = glommio::executor();
        // Flushes free memory writers wait for; compaction only bounds read cost.
        let flush_q = ex.create_task_queue(
            glommio::Shares::Static(500),
            glommio::Latency::NotImportant,
            "flush",
        );
        let compact_q = ex.create_task_queue(
            glommio::Shares::Static(100),
            glommio::Latency::NotImportant,
            "compaction",
        );
        let spawn = |fut, q| glommio::spawn_local_into(fut, q);
        let flushes = spawn(
            Box::pin(run_flushes(state.clone(), storage_stop.clone()))
                as std::pin::Pin<Box<dyn Future<Output = ()>>>,
            flush_q,
        );
        let compactions = spawn(
            Box::pin(run_compactions(state.clone(), storage_stop.clone())),
            compact_q,
        );
        match (flushes, compactions) {
            (Ok(f), Ok(c)) => (f, c),
            (Err(e), _) | (_, Err(e)) => {
                panic!("spawning storage tasks on fresh task queues failed: {e}")
            }
        }
    }
}

/// Publishes this shard's telemetry until the engine stops (once more after).
fn spawn_publisher(
    state: Rc<ShardState<DmaDisk>>,
    control: Arc<Control>,
    cpu: usize,
) -> glommio::Task<()> {
    glommio::spawn_local(async move {
        loop {
            // Taken, not read: glommio resets its counters on each call.
            let runtime = glommio::executor().executor_stats();
            state.metrics.add_runtime(
                runtime.parks(),
                runtime.spin_time(),
                runtime.executor_runtime(),
            );
            control
                .telemetry
                .publish(ShardSnapshot::capture(&state, cpu));
            if control.stop.load(Ordering::SeqCst) {
                break;
            }
            glommio::timer::sleep(TELEMETRY_INTERVAL).await;
        }
    })
}

/// How a shard that served ended.
fn exit_of(
    shard: ShardId,
    state: &ShardState<DmaDisk>,
    served: Result<(), String>,
    wal_failure: Option<String>,
) -> ShardExit {
    match (served, wal_failure) {
        (Err(detail), _) => ShardExit::Crashed {
            shard: shard.0,
            detail,
        },
        (Ok(()), Some(reason)) => ShardExit::WalFailed {
            shard: shard.0,
            reason,
        },
        (Ok(()), None) if state.lsm.failure().is_some() => ShardExit::StorageFailed {
            shard: shard.0,
            reason: state.lsm.failure().unwrap_or_default(),
        },
        (Ok(()), None) => {
            tracing::info!(
                shard = shard.0,
                durable_lsn = state.commit.durable_lsn(),
                "shard stopped cleanly"
            );
            ShardExit::Clean
        }
    }
}
