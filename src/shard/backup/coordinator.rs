//! The coordinator of one BACKUP request, run on the connection's shard: it
//! sends the phases (`backup::phases`) to every shard through the router, in
//! the order that makes the cut consistent, and seals the backup.
//!
//! It must never: resume a shard before every shard is paused, or seal a
//! backup one of whose shards failed (every failure aborts all shards).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::core::backup_format::{
    BackupBody, BackupFileEntry, BackupShardEntry, BACKUP_FORMAT_VERSION,
};
use crate::core::status::Status;
use crate::core::types::ShardId;
use crate::io::backup_files::prepare_backup_target;
use crate::shard::backup::phases::{
    file_work, off_executor, BackupFailure, Seal, PHASE_ABORT, PHASE_FINISH, PHASE_PAUSE,
    PHASE_RESUME,
};
use crate::shard::ops::OpKind;
use crate::shard::route::context::ShardContext;
use crate::shard::route::router::RoutedBatch;

/// Send one phase to one shard and wait for its answer.
async fn phase(
    ctx: &ShardContext,
    batch: &mut RoutedBatch,
    shard: u16,
    id: u64,
    phase: u8,
    arg: &[u8],
) -> Result<Vec<u8>, BackupFailure> {
    batch.clear();
    let mut value = Vec::with_capacity(1 + arg.len());
    value.push(phase);
    value.extend_from_slice(arg);
    batch.push(ShardId(shard), OpKind::Backup, &id.to_le_bytes(), &value);
    ctx.router.execute(batch).await;
    let (status, body) = batch.replies(ShardId(shard)).get(0);
    reply_result(shard, status, body)
}

fn reply_result(shard: u16, status: Status, body: &[u8]) -> Result<Vec<u8>, BackupFailure> {
    let detail = String::from_utf8_lossy(body).into_owned();
    match status {
        Status::Ok => Ok(body.to_vec()),
        Status::BackupFailed | Status::BackupTargetInvalid | Status::BackupInProgress => {
            Err(BackupFailure { status, detail })
        }
        other => Err(BackupFailure::failed(format!(
            "shard {shard}: {}: {detail}",
            other.name()
        ))),
    }
}

async fn abort_all(ctx: &ShardContext, batch: &mut RoutedBatch, id: u64) {
    for s in 0..ctx.shard_count() {
        // Abort undoes only what this backup holds; a shard that never paused
        // has nothing to undo, and one that stopped cannot hold anything.
        let _ = phase(ctx, batch, s, id, PHASE_ABORT, b"").await;
    }
}

/// Coordinate one BACKUP request from the connection's shard: pause every
/// shard in ascending order (each takes its cut and links its tables), resume
/// them all, let every shard copy its WAL tail, then seal the backup with its
/// manifest. Returns a JSON summary for the client.
pub async fn run_backup(ctx: &ShardContext, target: &[u8]) -> Result<Vec<u8>, BackupFailure> {
    let started = Instant::now();
    let target = PathBuf::from(OsStr::from_bytes(target));
    let data_dir = ctx
        .router
        .state()
        .lsm
        .dir()
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| BackupFailure::failed("the shard directory has no parent".into()))?;
    {
        let (t, d) = (target.clone(), data_dir.clone());
        off_executor("prepare the backup directory", move || {
            prepare_backup_target(&t, &d)
        })
        .await??;
    }
    let id = rand::random::<u64>();
    let n = ctx.shard_count();
    let mut batch = ctx.new_batch();
    let arg = target.as_os_str().as_bytes().to_vec();
    let paused_at = Instant::now();
    let mut shards = Vec::with_capacity(usize::from(n));
    for s in 0..n {
        let cut = phase(ctx, &mut batch, s, id, PHASE_PAUSE, &arg)
            .await
            .and_then(|body| {
                serde_json::from_slice::<BackupShardEntry>(&body)
                    .map_err(|e| BackupFailure::failed(format!("shard {s}: bad cut: {e}")))
            });
        match cut {
            Ok(c) => shards.push(c),
            Err(f) => {
                abort_all(ctx, &mut batch, id).await;
                return Err(f);
            }
        }
    }
    let mut resume_failure = None;
    for s in 0..n {
        if let Err(f) = phase(ctx, &mut batch, s, id, PHASE_RESUME, b"").await {
            resume_failure.get_or_insert(f);
        }
    }
    let pause_micros = paused_at.elapsed().as_micros() as u64;
    if let Some(f) = resume_failure {
        abort_all(ctx, &mut batch, id).await;
        return Err(f);
    }
    // Every shard copies its WAL tail at once: one message each.
    batch.clear();
    for s in 0..n {
        batch.push(
            ShardId(s),
            OpKind::Backup,
            &id.to_le_bytes(),
            &[PHASE_FINISH],
        );
    }
    ctx.router.execute(&mut batch).await;
    let mut files = Vec::new();
    let mut failure = None;
    for s in 0..n {
        let (status, body) = batch.replies(ShardId(s)).get(0);
        let listed = reply_result(s, status, body).and_then(|body| {
            serde_json::from_slice::<Vec<BackupFileEntry>>(&body)
                .map_err(|e| BackupFailure::failed(format!("shard {s}: bad file list: {e}")))
        });
        match listed {
            Ok(f) => files.extend(f),
            Err(f) => {
                failure.get_or_insert(f);
            }
        }
    }
    if let Some(f) = failure {
        abort_all(ctx, &mut batch, id).await;
        return Err(f);
    }
    let body = BackupBody {
        format_version: BACKUP_FORMAT_VERSION,
        corekv_version: env!("CARGO_PKG_VERSION").into(),
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        shard_count: n,
        pause_micros,
        shards,
        files,
    };
    let job = Seal {
        target: target.clone(),
        data_dir,
        body,
    };
    let body = file_work(
        &ctx.router.state().lsm.disk,
        "write the backup manifest",
        job,
    )
    .await?;
    let elapsed = started.elapsed();
    tracing::info!(
        target = %target.display(),
        files = body.files.len(),
        bytes = body.total_bytes(),
        pause_micros,
        elapsed_ms = elapsed.as_millis() as u64,
        "backup written"
    );
    let summary = serde_json::json!({
        "path": target.display().to_string(),
        "files": body.files.len(),
        "bytes": body.total_bytes(),
        "pause_micros": pause_micros,
        "elapsed_micros": elapsed.as_micros() as u64,
        "cut_lsns": body.shards.iter().map(|s| s.cut_lsn).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&summary).map_err(|e| BackupFailure::failed(e.to_string()))
}
