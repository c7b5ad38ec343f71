//! Reads and atomically replaces one shard's manifest file.
//!
//! Replacement is write-new + fdatasync + rename + directory fsync: after a crash
//! at any step the directory holds the old manifest or the new one, never a mix.
//! It must never leave a half-written `MANIFEST` in place, or return a manifest
//! that failed its checksum.

use std::path::{Path, PathBuf};

use crate::core::manifest_format::{
    decode_manifest, encode_manifest, ManifestError, ManifestState,
};

use super::disk::{Disk, DiskFile, OpenMode};
use super::error::{IoError, IoOp};

pub const MANIFEST_FILE: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";

#[derive(Debug, thiserror::Error)]
pub enum ManifestIoError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
}

impl ManifestIoError {
    /// Whether [`store_manifest`] failed before its rename, so that the old
    /// manifest is certainly still the one a restart reads: files only the
    /// new one named are then referenced by nothing and may be removed. A
    /// failed rename or directory sync may have left the new one in place.
    pub fn old_manifest_stands(&self) -> bool {
        match self {
            ManifestIoError::Io(e) => !matches!(e.op, IoOp::Rename | IoOp::SyncDir),
            ManifestIoError::Corrupt { .. } => false,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ManifestIoError::Io(_) => "MANIFEST_IO",
            ManifestIoError::Corrupt { .. } => "MANIFEST_CORRUPT",
        }
    }
}

/// The shard's manifest, or `None` if it has none yet.
pub async fn load_manifest<D: Disk>(
    disk: &D,
    dir: &Path,
    shard: u16,
) -> Result<Option<ManifestState>, ManifestIoError> {
    let path = dir.join(MANIFEST_FILE);
    let names = match disk.list_dir(dir).await {
        Ok(n) => n,
        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !names.iter().any(|n| n == MANIFEST_FILE) {
        return Ok(None);
    }
    let file = disk.open(&path, OpenMode::ReadOnly).await?;
    let size = file.size().await?;
    let align = file.alignment() as u64;
    let len = size.div_ceil(align) * align;
    let bytes = file.read_at(0, len as usize).await?;
    let decoded = decode_manifest(&bytes, shard);
    file.close().await?;
    decoded
        .map(Some)
        .map_err(|source| ManifestIoError::Corrupt { path, source })
}

/// Replace the shard's manifest with `state`, durably.
pub async fn store_manifest<D: Disk>(
    disk: &D,
    dir: &Path,
    shard: u16,
    state: &ManifestState,
) -> Result<(), ManifestIoError> {
    let tmp = dir.join(MANIFEST_TMP);
    if disk.list_dir(dir).await?.iter().any(|n| n == MANIFEST_TMP) {
        // Left by a crash mid-replacement; never referenced.
        disk.remove(&tmp).await?;
    }
    let bytes = encode_manifest(shard, state);
    let file = disk.open(&tmp, OpenMode::CreateNew).await?;
    let mut buf = file.alloc_buf(bytes.len());
    buf.as_mut().copy_from_slice(&bytes);
    let written = async {
        file.write_at(buf, 0).await?;
        file.fdatasync().await
    }
    .await;
    let closed = file.close().await;
    written?;
    closed?;
    disk.rename(&tmp, &dir.join(MANIFEST_FILE)).await?;
    disk.sync_dir(dir).await?;
    Ok(())
}
