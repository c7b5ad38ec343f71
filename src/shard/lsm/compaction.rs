//! Compaction: merges every level-0 table, with the level-1 tables their keys
//! overlap, into new level-1 tables.
//!
//! Why two levels, and this rule: level 0 holds whole flushed memtables, so its
//! tables overlap and every read must consult each; merging them into the single
//! sorted run of level 1 bounds that to `l0_trigger` tables. Including every
//! overlapping level-1 table is what makes it safe to drop tombstones here: no
//! older version of a key can remain below the output. Write amplification is
//! about `level-1 bytes overlapped / level-0 bytes merged` per compaction (the
//! run is rewritten where new keys land); space amplification after compaction
//! is 1 (one version per key), and at most `l0_trigger` memtables' worth of
//! overwrites in between. docs/architecture.md discusses the trade-off.
//!
//! Runs on the shard's low-priority task queue; reads bypass the block cache.
//! A compaction that fails, or is cancelled by a clean stop
//! (`Lsm::cancel_compactions`, checked between entries), removes every output
//! file it created before returning, so neither a full disk nor a stop leaves
//! files no manifest names.
//!
//! It must never: delete an input before the manifest naming the outputs is
//! durable (`Lsm::install_compaction` does both, in that order), or delete a
//! file a manifest names (outputs are removed only before they are installed).

use std::rc::Rc;

use crate::io::table_file::{TableSummary, TableWriter};
use crate::io::Disk;

use crate::shard::lsm::merge::{Merge, Source, TableRun};
use crate::shard::lsm::{Lsm, LsmError, Table};

/// Compact if level 0 holds at least `min_l0` tables. Returns whether it did.
pub async fn compact<D: Disk>(lsm: &Lsm<D>, min_l0: usize) -> Result<bool, LsmError> {
    let _one_at_a_time = lsm.lock_compaction().await;
    let version = lsm.version();
    if version.l0.is_empty() || version.l0.len() < min_l0 {
        return Ok(false);
    }
    let l0 = version.l0.clone();
    let lo = l0
        .iter()
        .map(|t| t.meta.smallest.as_slice())
        .min()
        .unwrap_or_default()
        .to_vec();
    let hi = l0
        .iter()
        .map(|t| t.meta.largest.as_slice())
        .max()
        .unwrap_or_default()
        .to_vec();
    let l1: Vec<Rc<Table<D>>> = version
        .l1
        .iter()
        .filter(|t| t.meta.largest >= lo && t.meta.smallest <= hi)
        .cloned()
        .collect();
    let max_lsn = l0
        .iter()
        .chain(&l1)
        .map(|t| t.meta.max_lsn)
        .max()
        .unwrap_or(0);
    let read_bytes: u64 = l0.iter().chain(&l1).map(|t| t.meta.file_bytes).sum();
    let mut sources: Vec<Source<D>> = l0
        .iter()
        .map(|t| Source::Run(TableRun::uncached(vec![t.clone()])))
        .collect();
    if !l1.is_empty() {
        sources.push(Source::Run(TableRun::uncached(l1.clone())));
    }
    let mut written: Vec<TableSummary> = Vec::new();
    let mut created: Vec<u64> = Vec::new();
    let result = async {
        if !write_outputs(lsm, sources, max_lsn, &mut written, &mut created).await? {
            return Ok(None);
        }
        lsm.disk
            .sync_dir(lsm.tables_dir())
            .await
            .map_err(|e| LsmError::Table(e.into()))?;
        let mut outputs = Vec::with_capacity(written.len());
        for s in &written {
            outputs.push(lsm.open_table(s, 1).await?);
        }
        Ok(Some(outputs))
    }
    .await;
    let outputs = match result {
        Ok(Some(outputs)) => outputs,
        Ok(None) => {
            lsm.discard_tables(&created).await;
            tracing::info!(
                shard = lsm.shard,
                removed = created.len(),
                "compaction cancelled by shutdown; its partial output was removed"
            );
            return Ok(false);
        }
        Err(e) => {
            lsm.discard_tables(&created).await;
            return Err(e);
        }
    };
    let write_bytes: u64 = written.iter().map(|s| s.file_bytes).sum();
    let inputs: Vec<Rc<Table<D>>> = l0.into_iter().chain(l1).collect();
    if let Err(e) = lsm.install_compaction(&inputs, outputs).await {
        // Written in full, but the manifest naming them was not stored (a
        // full disk, say): nothing will ever read them. Kept if the new
        // manifest may be in place after all.
        if e.old_manifest_stands() {
            lsm.discard_tables(&created).await;
        }
        return Err(e);
    }
    let st = &lsm.stats;
    st.compaction_read_bytes
        .set(st.compaction_read_bytes.get() + read_bytes);
    st.compaction_write_bytes
        .set(st.compaction_write_bytes.get() + write_bytes);
    tracing::debug!(
        shard = lsm.shard,
        inputs = inputs.len(),
        outputs = written.len(),
        read_bytes,
        write_bytes,
        "compaction done"
    );
    Ok(true)
}

/// Write the merged outputs. `created` gets the id of every file created
/// (finished or not), so that the caller can remove them. `Ok(false)`: a clean
/// stop cancelled the compaction.
async fn write_outputs<D: Disk>(
    lsm: &Lsm<D>,
    sources: Vec<Source<D>>,
    max_lsn: u64,
    written: &mut Vec<TableSummary>,
    created: &mut Vec<u64>,
) -> Result<bool, LsmError> {
    let mut writer: Option<TableWriter<<D as Disk>::File>> = None;
    let result = merge_into(lsm, sources, max_lsn, written, created, &mut writer).await;
    if let Some(w) = writer.take() {
        // Failed or cancelled with a table half written: close it (the caller
        // removes it with the rest).
        w.abandon().await;
    }
    result
}

async fn merge_into<D: Disk>(
    lsm: &Lsm<D>,
    sources: Vec<Source<D>>,
    max_lsn: u64,
    written: &mut Vec<TableSummary>,
    created: &mut Vec<u64>,
    writer: &mut Option<TableWriter<<D as Disk>::File>>,
) -> Result<bool, LsmError> {
    let mut merge = Merge::new(lsm, sources, b"", b"").await?;
    // One instant for the whole merge: a key's fate does not depend on when
    // the merge reached it.
    let now_ms = crate::shard::clock::wall_clock_ms();
    let mut since_yield = 0u32;
    loop {
        if lsm.compactions_cancelled() {
            return Ok(false);
        }
        let Some((key, value, _, expires_at)) = merge.next(lsm).await? else {
            break;
        };
        // Every older version of this key is among the inputs: a tombstone has
        // nothing left to hide and is dropped. So is an expired value, for the
        // same reason: nothing older below it can resurrect. (Were compaction
        // ever partial, an expired value would have to become a tombstone.)
        let Some(value) = value else { continue };
        if crate::core::expiry::is_expired(expires_at, now_ms) {
            lsm.stats
                .expired_compaction
                .set(lsm.stats.expired_compaction.get() + 1);
            continue;
        }
        if writer.is_none() {
            let id = lsm.alloc_table_id();
            created.push(id);
            *writer = Some(TableWriter::create(&lsm.disk, lsm.tables_dir(), id, lsm.shard).await?);
        }
        if let Some(w) = writer.as_mut() {
            w.add_expiring(key, Some(value), expires_at).await?;
            if w.bytes_so_far() >= lsm.cfg.table_target_bytes {
                if let Some(w) = writer.take() {
                    written.push(w.finish(max_lsn).await?);
                }
            }
        }
        since_yield += 1;
        if since_yield == 256 {
            // Cached blocks never make us wait: give foreground work its turn.
            since_yield = 0;
            crate::shard::wake::yield_point().await;
        }
    }
    if let Some(w) = writer.take() {
        written.push(w.finish(max_lsn).await?);
    }
    Ok(true)
}
