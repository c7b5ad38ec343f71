//! Startup of one shard: replay its WAL into a fresh store, repair a torn tail,
//! and open the WAL writer where the log ends.

use std::rc::Rc;

use crate::core::config::EngineConfig;
use crate::core::types::ShardId;
use crate::io::data_dir::wal_dir;
use crate::io::wal_reader::{self, ScanOptions, ScanReport};
use crate::io::wal_writer::{WalConfig, WalError, WalWriter};
use crate::io::Disk;

use super::state::{replay_record, ShardState};
use super::store::Store;

#[derive(Debug, thiserror::Error)]
#[error("{shard}: {source}")]
pub struct RecoveryError {
    pub shard: ShardId,
    #[source]
    pub source: WalError,
}

impl RecoveryError {
    pub fn name(&self) -> &'static str {
        match self.source {
            WalError::Corrupt { .. } => "WAL_CORRUPT",
            WalError::Io(_) | WalError::Latched { .. } => "WAL_IO",
        }
    }
}

pub struct Recovered<D: Disk> {
    pub state: Rc<ShardState>,
    pub wal: WalWriter<D>,
    pub report: ScanReport,
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
    let err = |source: WalError| RecoveryError { shard, source };
    let wal_cfg = wal_config(config, shard, shard_count);
    disk.create_dir_all(&wal_cfg.dir)
        .await
        .map_err(|e| err(e.into()))?;
    let mut store = Store::default();
    let opts = ScanOptions {
        shard_id: shard.0,
        repair: true,
        truncate_corruption: config.recover_truncate,
    };
    let report = wal_reader::scan(&disk, &wal_cfg.dir, &opts, |r| replay_record(&mut store, r))
        .await
        .map_err(err)?;
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
    let wal = WalWriter::open(disk, wal_cfg, report.resume.clone())
        .await
        .map_err(err)?;
    let state = Rc::new(ShardState::new(
        shard,
        shard_count,
        config,
        store,
        report.last_lsn + 1,
    ));
    Ok(Recovered { state, wal, report })
}
