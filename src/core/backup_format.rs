//! The backup manifest, `BACKUP.json`: what an online backup holds (every file
//! with its size and CRC32C), where each shard's consistent cut is, and a
//! checksum of the manifest itself.
//!
//! It owns the manifest's encoding and the rules a decoded manifest must meet
//! before anyone trusts it (its checksum, its format version, file paths that
//! stay inside the backup directory). Pure: bytes in, bytes out; it must never
//! read or write a file (`io::backup_files` does that).
//!
//! The file is JSON so that an operator can read it at 3 a.m. The checksum
//! covers the compact serialization of `body` as decoded, not the bytes on
//! disk: whitespace changes nothing, any change to a value is caught.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::checksum::crc32c;

pub const BACKUP_MANIFEST_FILE: &str = "BACKUP.json";
pub const BACKUP_FORMAT_VERSION: u32 = 1;

/// One file of the backup, relative to the backup directory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BackupFileEntry {
    pub path: String,
    pub bytes: u64,
    pub crc32c: u32,
}

/// Where one shard was cut.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BackupShardEntry {
    pub shard: u16,
    /// Every record at or below this LSN is in the backup; nothing above it is.
    pub cut_lsn: u64,
    /// The WAL cutoff of the manifest the backup holds (records at or below
    /// it are in the tables).
    pub wal_cutoff_lsn: u64,
    /// The WAL segment and byte offset where the cut ends.
    pub wal_cut_segment: u64,
    pub wal_cut_offset: u64,
    pub tables: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BackupBody {
    pub format_version: u32,
    pub corekv_version: String,
    pub created_unix_ms: u64,
    pub shard_count: u16,
    /// How long writes waited while every shard was paused.
    pub pause_micros: u64,
    pub shards: Vec<BackupShardEntry>,
    pub files: Vec<BackupFileEntry>,
}

impl BackupBody {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

#[derive(Serialize, Deserialize)]
struct BackupManifestFile {
    /// CRC32C of the compact JSON serialization of `body`.
    body_crc32c: u32,
    body: BackupBody,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{BACKUP_MANIFEST_FILE}: {0}")]
pub struct BackupFormatError(pub String);

fn body_crc(body: &BackupBody) -> u32 {
    // Serializing plain structs of integers and strings cannot fail.
    crc32c(&serde_json::to_vec(body).unwrap_or_default())
}

/// The manifest file's bytes.
pub fn encode_backup_manifest(body: &BackupBody) -> Vec<u8> {
    let file = BackupManifestFile {
        body_crc32c: body_crc(body),
        body: body.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Decode a manifest and check everything that can be checked without the
/// files: checksum, version, shard entries, and that every path stays inside
/// the backup (a damaged manifest must not make restore write elsewhere).
pub fn decode_backup_manifest(bytes: &[u8]) -> Result<BackupBody, BackupFormatError> {
    let bad = |s: String| BackupFormatError(s);
    let file: BackupManifestFile =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a backup manifest ({e})")))?;
    let computed = body_crc(&file.body);
    if computed != file.body_crc32c {
        return Err(bad(format!(
            "checksum mismatch (stored {:#010x}, computed {computed:#010x}): the manifest was changed or damaged",
            file.body_crc32c
        )));
    }
    let body = file.body;
    if body.format_version != BACKUP_FORMAT_VERSION {
        return Err(bad(format!(
            "format version {} is not supported (this build reads {BACKUP_FORMAT_VERSION})",
            body.format_version
        )));
    }
    if body.shard_count == 0 || body.shards.len() != usize::from(body.shard_count) {
        return Err(bad(format!(
            "{} shard entries for a shard count of {}",
            body.shards.len(),
            body.shard_count
        )));
    }
    for (i, s) in body.shards.iter().enumerate() {
        if usize::from(s.shard) != i {
            return Err(bad(format!("shard entry {i} names shard {}", s.shard)));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in &body.files {
        if !is_plain_relative(&f.path) {
            return Err(bad(format!(
                "file path {:?} is not a plain relative path",
                f.path
            )));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(bad(format!("file {:?} is listed twice", f.path)));
        }
    }
    Ok(body)
}

/// Only `name/name/...`: no root, no `..`, no `.`, nothing empty.
fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> BackupBody {
        BackupBody {
            format_version: BACKUP_FORMAT_VERSION,
            corekv_version: "0.1.0".into(),
            created_unix_ms: 1,
            shard_count: 1,
            pause_micros: 5,
            shards: vec![BackupShardEntry {
                shard: 0,
                cut_lsn: 10,
                wal_cutoff_lsn: 4,
                wal_cut_segment: 2,
                wal_cut_offset: 8192,
                tables: 1,
            }],
            files: vec![BackupFileEntry {
                path: "shard-000/MANIFEST".into(),
                bytes: 4096,
                crc32c: 7,
            }],
        }
    }

    #[test]
    fn round_trip_and_any_changed_value_is_caught() {
        let bytes = encode_backup_manifest(&body());
        assert_eq!(decode_backup_manifest(&bytes), Ok(body()));
        let text = String::from_utf8(bytes).unwrap();
        for (from, to) in [("\"cut_lsn\": 10", "\"cut_lsn\": 11"), ("4096", "4097")] {
            let changed = text.replacen(from, to, 1);
            assert_ne!(changed, text);
            let e = decode_backup_manifest(changed.as_bytes()).unwrap_err();
            assert!(e.0.contains("checksum mismatch"), "{e}");
        }
        // Whitespace is not content.
        let spaced = text.replace("  ", "    ");
        assert_eq!(decode_backup_manifest(spaced.as_bytes()), Ok(body()));
        assert!(decode_backup_manifest(b"{").is_err());
    }

    #[test]
    fn paths_must_stay_inside_the_backup() {
        for p in ["../x", "/etc/passwd", "a/../../b", "", "./a"] {
            let mut b = body();
            b.files[0].path = p.into();
            let e = decode_backup_manifest(&encode_backup_manifest(&b)).unwrap_err();
            assert!(e.0.contains("plain relative"), "{p}: {e}");
        }
    }
}
