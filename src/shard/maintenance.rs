//! One shard's background storage work: flushing frozen memtables and
//! compacting, each in its own task on a low-priority task queue so that
//! foreground requests keep their latency while it runs.
//!
//! A failed flush or compaction latches the storage (`Lsm::fail`): the shard
//! refuses writes with STORAGE_FAILED from then on. Nothing is retried: the
//! acknowledged writes are safe in the WAL and a restart replays them, while a
//! retry after a failed fdatasync could build on bytes the disk has dropped.

use std::rc::Rc;
use std::time::Duration;

use crate::io::Disk;

use crate::shard::lsm::compaction::compact;
use crate::shard::lsm::LsmError;
use crate::shard::state::ShardState;
use crate::shard::wake::Event;

/// With no writes for this long, level 0 is compacted even below its trigger,
/// so that space and read cost settle.
const IDLE_COMPACTION_AFTER: Duration = Duration::from_secs(1);

fn fail<D: Disk>(state: &ShardState<D>, what: &str, e: &LsmError) {
    let shard = state.id.0;
    if e.is_disk_full() {
        let free = e
            .io_path()
            .map(crate::io::disk_space::describe_free)
            .unwrap_or_default();
        let reason = format!("shard {shard}: {what} failed: {e}; {free}");
        tracing::error!(
            shard,
            error = "DISK_FULL",
            "{reason}; the shard refuses writes until restarted (acknowledged writes are safe in \
             the WAL); free space, then restart"
        );
        return state.lsm.fail_disk_full(reason);
    }
    let reason = format!("shard {shard}: {what} failed: {e}");
    tracing::error!(
        shard,
        error = "STORAGE_FAILED",
        "{reason}; the shard refuses writes until restarted (acknowledged writes are safe in the WAL)"
    );
    state.lsm.fail(reason);
}

/// Compact level 0 into level 1 now (tools and the simulator); a failure
/// latches the shard read-only like a background one. Returns whether it ran.
pub async fn compact_now<D: Disk>(state: &ShardState<D>) -> bool {
    match compact(&state.lsm, 1).await {
        Ok(ran) => ran,
        Err(e) => {
            fail(state, "compaction", &e);
            false
        }
    }
}

/// Flush frozen memtables until `stop` is set (a flush in progress completes).
pub async fn run_flushes<D: Disk>(state: Rc<ShardState<D>>, stop: Rc<Event>) {
    let lsm = &state.lsm;
    loop {
        lsm.maybe_freeze();
        if lsm.frozen().is_some() && lsm.l0_full() {
            // Compaction is behind: hold the flush, so that level 0 (read
            // probes, disk space) stays bounded; writers meet OVERLOADED once
            // the memtables fill, instead of the disk filling.
            lsm.stats.flush_waits.set(lsm.stats.flush_waits.get() + 1);
            tracing::warn!(
                shard = state.id.0,
                l0_tables = lsm.version().l0.len(),
                "level 0 is full: flushes wait for compaction (writes may get OVERLOADED)"
            );
            lsm.work
                .until(|| (!lsm.l0_full() || stop.is_set()).then_some(()))
                .await;
            if stop.is_set() {
                return;
            }
        }
        if let Some(imm) = lsm.frozen() {
            // The manifest will say the WAL is no longer needed up to here: in
            // async mode the WAL must first have it all.
            let max_lsn = imm.borrow().max_lsn();
            if state.commit.wait_durable(max_lsn).await.is_err() {
                return;
            }
            match lsm.flush_frozen().await {
                Ok(_) => state.commit.request_recycle(lsm.wal_cutoff()),
                Err(e) => return fail(&state, "memtable flush", &e),
            }
            continue;
        }
        if stop.is_set() {
            return;
        }
        lsm.work
            .until(|| (lsm.frozen().is_some() || stop.is_set()).then_some(()))
            .await;
    }
}

/// Compact whenever level 0 reaches its trigger, or holds anything while the
/// shard is idle, until cancelled.
pub async fn run_compactions<D: Disk>(state: Rc<ShardState<D>>, stop: Rc<Event>) {
    let lsm = &state.lsm;
    let mut last_lsn = state.commit.next_lsn();
    while !stop.is_set() && lsm.failure().is_none() {
        match compact(lsm, lsm.cfg.l0_trigger).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => return fail(&state, "compaction", &e),
        }
        let due = lsm.work.until(|| {
            (lsm.version().l0.len() >= lsm.cfg.l0_trigger || stop.is_set()).then_some(())
        });
        futures_lite::future::or(due, glommio::timer::sleep(IDLE_COMPACTION_AFTER)).await;
        let now = state.commit.next_lsn();
        let idle = now == last_lsn && lsm.frozen().is_none();
        last_lsn = now;
        if idle && !stop.is_set() {
            if let Err(e) = compact(lsm, 1).await {
                return fail(&state, "compaction", &e);
            }
        }
    }
}
