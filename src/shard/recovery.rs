//! Startup of one shard: open its tables (manifest), replay the WAL records the
//! tables do not cover into the memtable, repair a torn tail, and open the WAL
//! writer where the log ends.

use std::rc::Rc;

use crate::core::config::EngineConfig;
use crate::core::types::ShardId;
use crate::io::data_dir::{shard_dir, wal_dir};
use crate::io::wal_reader::{self, ScanOptions, ScanReport};
use crate::io::wal_writer::{WalConfig, WalError, WalWriter};
use crate::io::Disk;

use crate::core::wal_format::Record;
use crate::shard::log_check::{check_log, Salvaged};
use crate::shard::lsm::{Lsm, LsmConfig, LsmError};
use crate::shard::state::{apply_txn_writes, replay_record, ShardState};
use crate::shard::txn::recovery::TxnReplay;

#[derive(Debug, thiserror::Error)]
pub enum RecoverySource {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Storage(#[from] LsmError),
}

impl From<crate::io::IoError> for RecoverySource {
    fn from(e: crate::io::IoError) -> Self {
        RecoverySource::Wal(e.into())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{shard}: {source}")]
pub struct RecoveryError {
    pub shard: ShardId,
    #[source]
    pub source: RecoverySource,
}

impl RecoveryError {
    pub fn name(&self) -> &'static str {
        match &self.source {
            RecoverySource::Wal(e) if e.is_disk_full() => "DISK_FULL",
            RecoverySource::Storage(e) if e.is_disk_full() => "DISK_FULL",
            RecoverySource::Wal(WalError::Corrupt { .. }) => "WAL_CORRUPT",
            RecoverySource::Wal(WalError::Io(_) | WalError::Latched { .. }) => "WAL_IO",
            RecoverySource::Storage(e) => e.name(),
        }
    }
}

impl RecoveryError {
    /// Where a failed I/O was, for a disk-full message.
    pub fn io_path(&self) -> Option<&std::path::Path> {
        match &self.source {
            RecoverySource::Wal(WalError::Io(e)) => Some(&e.path),
            RecoverySource::Storage(e) => e.io_path(),
            _ => None,
        }
    }
}

/// This shard's storage sizes, from the server-wide configuration.
pub fn lsm_config(config: &EngineConfig, shard_count: u16) -> LsmConfig {
    LsmConfig {
        memtable_bytes: config.memtable_bytes,
        cache_bytes: config.cache_bytes / usize::from(shard_count.max(1)),
        table_target_bytes: config.table_target_bytes,
        l0_trigger: config.l0_trigger,
    }
}

pub struct Recovered<D: Disk> {
    pub state: Rc<ShardState<D>>,
    pub wal: WalWriter<D>,
    pub report: ScanReport,
    /// Transactions found in the log; the in-doubt ones are pinned in `state`
    /// and must be settled (`txn_recovery::settle_in_doubt`) before serving.
    pub txns: TxnReplay,
}

pub fn wal_config(config: &EngineConfig, shard: ShardId, shard_count: u16) -> WalConfig {
    WalConfig {
        dir: wal_dir(&config.data_dir, shard.0),
        shard_id: shard.0,
        shard_count,
        segment_bytes: config.wal_segment_bytes,
        prefill: true,
    }
}

pub async fn recover<D: Disk>(
    disk: D,
    config: &EngineConfig,
    shard: ShardId,
    shard_count: u16,
) -> Result<Recovered<D>, RecoveryError> {
    let err = |source: RecoverySource| RecoveryError { shard, source };
    let wal_cfg = wal_config(config, shard, shard_count);
    disk.create_dir_all(&wal_cfg.dir)
        .await
        .map_err(|e| err(e.into()))?;
    let lsm = Lsm::open(
        disk.clone(),
        &shard_dir(&config.data_dir, shard.0),
        shard.0,
        lsm_config(config, shard_count),
    )
    .await
    .map_err(|e| err(e.into()))?;
    let cutoff = lsm.wal_cutoff();
    let opts = ScanOptions {
        shard_id: shard.0,
        repair: true,
        truncate_corruption: config.recover_truncate,
    };
    let mut txns = TxnReplay::new(cutoff, lsm.applied_lsn());
    let report = wal_reader::replay_log(&disk, &wal_cfg.dir, &opts, |r| {
        if r.lsn() > cutoff {
            match r {
                Record::Txn { lsn, txn } => {
                    txns.replay(txn, lsn, &mut |writes, lsn| {
                        apply_txn_writes(&lsm, writes, lsn)
                    });
                    // A memtable that freezes during replay must not record a
                    // cutoff past a prepare still unresolved here.
                    lsm.set_wal_floor(txns.floor());
                }
                other => replay_record(&lsm, other),
            }
        }
    })
    .await
    .map_err(|e| err(e.into()))?;
    let salvaged = check_log(&wal_cfg.dir, &report, &txns, config.recover_truncate)
        .map_err(|e| err(e.into()))?;
    for s in &salvaged {
        tracing::warn!(
            shard = shard.0,
            dropped = %s,
            "--recover-truncate: the log and the tables disagree; starting without what is missing"
        );
    }
    if !salvaged.is_empty() {
        let (mut new_cutoff, mut new_applied) = (cutoff, 0);
        for s in &salvaged {
            match s {
                Salvaged::MissingRange { last, .. } => new_cutoff = new_cutoff.max(*last),
                Salvaged::OrphanResolve { lsn, .. } => new_applied = new_applied.max(*lsn),
            }
        }
        lsm.accept_loss(new_cutoff, new_applied)
            .await
            .map_err(|e| err(e.into()))?;
    }
    if txns.already_applied > 0 {
        tracing::debug!(
            shard = shard.0,
            resolves = txns.already_applied,
            "resolves above the cutoff whose writes the tables already hold"
        );
    }
    if let Some(torn) = &report.torn {
        tracing::warn!(
            shard = shard.0,
            segment = %torn.path.display(),
            offset = torn.offset,
            bytes = torn.bytes,
            "WAL ended in a torn write that was never acknowledged: discarded {} bytes",
            torn.bytes
        );
    }
    if let Some(t) = &report.truncated {
        tracing::warn!(
            shard = shard.0,
            segment = %t.path.display(),
            offset = t.offset,
            records_dropped = t.records_dropped,
            "--recover-truncate: WAL was corrupt ({}); truncated there, dropping {} records that followed",
            t.detail,
            t.records_dropped
        );
    }
    let wal = WalWriter::open(disk, wal_cfg, report.resume.clone(), &report.segment_starts)
        .await
        .map_err(|e| err(e.into()))?;
    let state = Rc::new(ShardState::new(
        shard,
        shard_count,
        config,
        lsm,
        report.last_lsn.max(cutoff) + 1,
        0,
    ));
    for (lsn, _) in txns.in_doubt.values() {
        state.pin(*lsn);
    }
    // Segments the tables already cover go as soon as the flusher runs.
    state.commit.request_recycle(cutoff);
    Ok(Recovered {
        state,
        wal,
        report,
        txns,
    })
}
