//! The byte format of a shard's manifest: which table files make up the shard's
//! data, at which level, and up to which LSN the WAL is covered by them.
//!
//! ```text
//! file   = [header 32 B] [body: body_bytes] [zeros to a multiple of 4 KiB]
//! header = magic "CKVMANIF" | version u32 | shard u32 | body_bytes u32 | reserved u32
//!          | body_crc u32 | header_crc u32          (little-endian)
//! body   = edition u64 | next_table_id u64 | wal_cutoff_lsn u64 | applied_lsn u64
//!          | table_count u32 | table*                 (version 2)
//! body v1 = the same without applied_lsn (read as the highest table max_lsn)
//! table  = id u64 | level u8 | entries u64 | file_bytes u64 | max_lsn u64
//!          | smallest_len u32 | smallest | largest_len u32 | largest
//! ```
//!
//! The manifest is rewritten whole (write new, fdatasync, rename, fsync the
//! directory), so a crash leaves either the old or the new one, both valid.
//! Pure: encodes to and decodes from bytes; every length is bounded before use.

use super::checksum::crc32c;
use super::limits::{align_up, KEY_BYTES_MAX};

pub const MANIFEST_MAGIC: [u8; 8] = *b"CKVMANIF";
/// Version 2 added `applied_lsn`; version 1 files are still read.
pub const MANIFEST_VERSION: u32 = 2;
const MANIFEST_VERSION_V1: u32 = 1;
const HEADER_BYTES: usize = 32;
/// No shard holds more tables than this; bounds decoding a corrupt count.
pub const TABLES_MAX: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableEntry {
    pub id: u64,
    pub level: u8,
    pub entries: u64,
    pub file_bytes: u64,
    /// Highest LSN of any record in the table.
    pub max_lsn: u64,
    pub smallest: Vec<u8>,
    pub largest: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestState {
    /// Bumped by every rewrite.
    pub edition: u64,
    pub next_table_id: u64,
    /// Every WAL record with an LSN at or below this is in the tables.
    pub wal_cutoff_lsn: u64,
    /// The highest LSN whose effects may be in the tables (the largest
    /// `max_lsn` of any flushed memtable; never below `wal_cutoff_lsn`).
    /// Records in `(wal_cutoff_lsn, applied_lsn]` may be in the tables
    /// already: replaying them is idempotent, and a TXN_RESOLVE among them
    /// whose prepare lies at or below the cutoff was applied before its
    /// prepare's pin was released (see docs/transactions.md, "What survives
    /// a flush").
    pub applied_lsn: u64,
    pub tables: Vec<TableEntry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("manifest corrupt: {0}")]
pub struct ManifestError(pub String);

pub fn encode_manifest(shard: u16, m: &ManifestState) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&m.edition.to_le_bytes());
    body.extend_from_slice(&m.next_table_id.to_le_bytes());
    body.extend_from_slice(&m.wal_cutoff_lsn.to_le_bytes());
    assert!(
        m.applied_lsn >= m.wal_cutoff_lsn,
        "applied LSN below the cutoff"
    );
    body.extend_from_slice(&m.applied_lsn.to_le_bytes());
    assert!(m.tables.len() <= TABLES_MAX);
    body.extend_from_slice(&(m.tables.len() as u32).to_le_bytes());
    for t in &m.tables {
        assert!(t.smallest.len() <= KEY_BYTES_MAX && t.largest.len() <= KEY_BYTES_MAX);
        body.extend_from_slice(&t.id.to_le_bytes());
        body.push(t.level);
        body.extend_from_slice(&t.entries.to_le_bytes());
        body.extend_from_slice(&t.file_bytes.to_le_bytes());
        body.extend_from_slice(&t.max_lsn.to_le_bytes());
        body.extend_from_slice(&(t.smallest.len() as u32).to_le_bytes());
        body.extend_from_slice(&t.smallest);
        body.extend_from_slice(&(t.largest.len() as u32).to_le_bytes());
        body.extend_from_slice(&t.largest);
    }
    let mut out = Vec::with_capacity(align_up(HEADER_BYTES + body.len()));
    out.extend_from_slice(&MANIFEST_MAGIC);
    out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
    out.extend_from_slice(&u32::from(shard).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&crc32c(&body).to_le_bytes());
    let header_crc = crc32c(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&body);
    out.resize(align_up(out.len()), 0);
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ManifestError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            ManifestError(format!("body ends at {} inside a field", self.bytes.len()))
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, ManifestError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into()
                .map_err(|_| ManifestError("short u64".into()))?,
        ))
    }
    fn u32(&mut self) -> Result<u32, ManifestError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(
            b.try_into()
                .map_err(|_| ManifestError("short u32".into()))?,
        ))
    }
    fn key(&mut self) -> Result<Vec<u8>, ManifestError> {
        let len = self.u32()? as usize;
        if len > KEY_BYTES_MAX {
            return Err(ManifestError(format!("key length {len} over the limit")));
        }
        Ok(self.take(len)?.to_vec())
    }
}

pub fn decode_manifest(bytes: &[u8], shard: u16) -> Result<ManifestState, ManifestError> {
    if bytes.len() < HEADER_BYTES {
        return Err(ManifestError(format!(
            "{} bytes, shorter than its header",
            bytes.len()
        )));
    }
    let h = &bytes[..HEADER_BYTES];
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if h[..8] != MANIFEST_MAGIC {
        return Err(ManifestError("bad magic".into()));
    }
    if crc32c(&h[..28]) != word(28) {
        return Err(ManifestError("header checksum mismatch".into()));
    }
    let version = word(8);
    if version != MANIFEST_VERSION && version != MANIFEST_VERSION_V1 {
        return Err(ManifestError(format!("format version {} unknown", word(8))));
    }
    if word(12) != u32::from(shard) {
        return Err(ManifestError(format!(
            "belongs to shard {}, not {shard}",
            word(12)
        )));
    }
    let body_len = word(16) as usize;
    let body = bytes
        .get(HEADER_BYTES..HEADER_BYTES.saturating_add(body_len))
        .ok_or_else(|| ManifestError(format!("body of {body_len} bytes runs past the file")))?;
    if crc32c(body) != word(24) {
        return Err(ManifestError("body checksum mismatch".into()));
    }
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    let edition = r.u64()?;
    let next_table_id = r.u64()?;
    let wal_cutoff_lsn = r.u64()?;
    let stored_applied = if version == MANIFEST_VERSION_V1 {
        None
    } else {
        Some(r.u64()?)
    };
    let count = r.u32()? as usize;
    if count > TABLES_MAX {
        return Err(ManifestError(format!("{count} tables")));
    }
    let mut tables = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let id = r.u64()?;
        let level = r.take(1)?[0];
        let entries = r.u64()?;
        let file_bytes = r.u64()?;
        let max_lsn = r.u64()?;
        let smallest = r.key()?;
        let largest = r.key()?;
        if id >= next_table_id {
            return Err(ManifestError(format!(
                "table {id} not below next_table_id {next_table_id}"
            )));
        }
        tables.push(TableEntry {
            id,
            level,
            entries,
            file_bytes,
            max_lsn,
            smallest,
            largest,
        });
    }
    if r.pos != body.len() {
        return Err(ManifestError(format!(
            "{} bytes left after the last table",
            body.len() - r.pos
        )));
    }
    // Version 1 did not record it: the tables' own highest LSN is the best
    // lower bound it left (what a flush wrote is in some table's max_lsn).
    let applied_lsn = stored_applied.unwrap_or_else(|| {
        tables
            .iter()
            .map(|t| t.max_lsn)
            .max()
            .unwrap_or(0)
            .max(wal_cutoff_lsn)
    });
    if applied_lsn < wal_cutoff_lsn {
        return Err(ManifestError(format!(
            "applied LSN {applied_lsn} below the WAL cutoff {wal_cutoff_lsn}"
        )));
    }
    Ok(ManifestState {
        edition,
        next_table_id,
        wal_cutoff_lsn,
        applied_lsn,
        tables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::limits::SECTOR_BYTES;

    fn sample() -> ManifestState {
        ManifestState {
            edition: 3,
            next_table_id: 10,
            wal_cutoff_lsn: 12345,
            applied_lsn: 12350,
            tables: vec![
                TableEntry {
                    id: 4,
                    level: 0,
                    entries: 10,
                    file_bytes: 8192,
                    max_lsn: 100,
                    smallest: b"a".to_vec(),
                    largest: b"m".to_vec(),
                },
                TableEntry {
                    id: 9,
                    level: 1,
                    entries: 1,
                    file_bytes: 12288,
                    max_lsn: 12345,
                    smallest: vec![],
                    largest: vec![0xff; 300],
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode_manifest(2, &sample());
        assert_eq!(bytes.len() % SECTOR_BYTES, 0);
        assert_eq!(decode_manifest(&bytes, 2), Ok(sample()));
        assert!(
            decode_manifest(&bytes, 3).is_err(),
            "another shard's manifest"
        );
    }

    #[test]
    fn every_bit_flip_in_header_and_body_is_detected() {
        let bytes = encode_manifest(0, &sample());
        let used = HEADER_BYTES + u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
        for i in 0..used {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    decode_manifest(&b, 0).is_err(),
                    "flip at byte {i} bit {bit} not detected"
                );
            }
        }
    }

    /// Directories written before `applied_lsn` existed still open: their
    /// tables' highest LSN stands in for it.
    #[test]
    fn version_1_files_are_read() {
        let m = sample();
        let mut body = Vec::new();
        body.extend_from_slice(&m.edition.to_le_bytes());
        body.extend_from_slice(&m.next_table_id.to_le_bytes());
        body.extend_from_slice(&m.wal_cutoff_lsn.to_le_bytes());
        let v2 = encode_manifest(0, &m);
        let v2_body_len = u32::from_le_bytes(v2[16..20].try_into().unwrap()) as usize;
        // The v2 body minus applied_lsn is the v1 body.
        body.extend_from_slice(&v2[HEADER_BYTES + 32..HEADER_BYTES + v2_body_len]);
        let mut out = Vec::new();
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION_V1.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&crc32c(&body).to_le_bytes());
        let header_crc = crc32c(&out);
        out.extend_from_slice(&header_crc.to_le_bytes());
        out.extend_from_slice(&body);
        let read = decode_manifest(&out, 0).expect("a version-1 manifest decodes");
        assert_eq!(read.tables, m.tables);
        assert_eq!(read.wal_cutoff_lsn, 12345);
        assert_eq!(read.applied_lsn, 12345, "highest table max_lsn");
    }

    #[test]
    fn truncation_is_detected() {
        let bytes = encode_manifest(0, &sample());
        for cut in 0..200 {
            assert!(decode_manifest(&bytes[..cut], 0).is_err());
        }
    }
}
