//! The WAL's byte format: segment header, batch header, record framing.
//!
//! ```text
//! segment file  = [SegmentHeader, zero-padded to 4 KiB] [batch]* [zeros]
//! batch         = [BatchHeader 32 B] [record]{record_count} [zero padding to 4 KiB]
//! record        = [RecordHeader 20 B] [body: body_bytes]
//! body (PUT)    = [key_bytes: u32] [key] [value]
//! body (DELETE) = [key]
//! body (PUT_EXPIRING, format 2) = [key_bytes: u32] [key] [expires_at_unix_ms: u64] [value]
//! ```
//!
//! Versions: this build writes segments of format 2 and reads 1 and 2. Format 2
//! added the PUT_EXPIRING record kind (and the transaction write kind
//! `WRITE_PUT_EXPIRING`); a version 1 segment never holds either, so it reads
//! unchanged. An older build refuses a version 2 segment by its header ("format
//! version 2 is not supported"), never mistaking it for corruption.
//!
//! All integers are little-endian. A batch is what one group commit writes with one
//! write + one fdatasync; it always starts on a 4 KiB boundary, so a torn write can
//! only damage the last batch, and a valid batch header found *after* a damaged
//! batch proves the damage is corruption, not a torn tail (the writer never starts a
//! batch before the previous one is durable).
//!
//! Checksums: `SegmentHeader.crc` and `BatchHeader.crc` cover every header byte
//! before them; `RecordHeader.crc` covers the rest of the record header (from
//! `body_bytes`) and the body. Every batch names its segment's sequence number, so
//! stale batches in a reused file never pass for live ones.
//!
//! LSNs (log sequence numbers, the `lsn: u64` fields everywhere): the position
//! of a record in one shard's WAL. They start at 1 and grow by one per record,
//! forever, across segments; 0 means "nothing". (A `Lsn` newtype existed and
//! was never adopted; it was deleted rather than left to mislead.)
//!
//! This module is pure: it encodes into and decodes from byte slices.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::checksum::{crc32c, crc32c_append};
use super::limits::{KEY_BYTES_MAX, SECTOR_BYTES, VALUE_BYTES_CEILING};
use super::txn_format::{
    parse_commit_record, parse_prepare_record, parse_resolve_record, TxnRecord,
};

pub const SEGMENT_MAGIC: [u8; 8] = *b"CKVWAL\0\x01";
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"CKVB");
pub const WAL_FORMAT_VERSION: u32 = 2;
/// The oldest segment format this build reads.
pub const WAL_FORMAT_VERSION_MIN: u32 = 1;

/// The largest record body any reader accepts; bounds every allocation made while
/// decoding, whatever a corrupt length field says.
pub const RECORD_BODY_BYTES_MAX: usize = 4 + KEY_BYTES_MAX + 8 + VALUE_BYTES_CEILING;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SegmentHeader {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub shard_id: U32,
    pub shard_count: U32,
    pub block_bytes: U32,
    pub segment_seq: U64,
    /// LSN of the first record this segment holds (or will hold).
    pub first_lsn: U64,
    pub created_unix_ms: U64,
    pub reserved: [u8; 12],
    pub crc: U32,
}

pub const SEGMENT_HEADER_BYTES: usize = std::mem::size_of::<SegmentHeader>();
const _: () = assert!(SEGMENT_HEADER_BYTES == 64);
const _: () = assert!(SEGMENT_HEADER_BYTES <= SECTOR_BYTES);

impl SegmentHeader {
    pub fn new(
        shard_id: u32,
        shard_count: u32,
        segment_seq: u64,
        first_lsn: u64,
        now_ms: u64,
    ) -> Self {
        let mut h = SegmentHeader {
            magic: SEGMENT_MAGIC,
            format_version: WAL_FORMAT_VERSION.into(),
            shard_id: shard_id.into(),
            shard_count: shard_count.into(),
            block_bytes: (SECTOR_BYTES as u32).into(),
            segment_seq: segment_seq.into(),
            first_lsn: first_lsn.into(),
            created_unix_ms: now_ms.into(),
            reserved: [0; 12],
            crc: 0.into(),
        };
        h.crc = crc32c(&h.as_bytes()[..SEGMENT_HEADER_BYTES - 4]).into();
        h
    }

    /// Parse and check magic, version and checksum.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, SegmentHeaderError> {
        let (h, _) =
            SegmentHeader::read_from_prefix(bytes).map_err(|_| SegmentHeaderError::Short)?;
        if h.magic != SEGMENT_MAGIC {
            return Err(SegmentHeaderError::BadMagic);
        }
        let expected = crc32c(&bytes[..SEGMENT_HEADER_BYTES - 4]);
        if h.crc.get() != expected {
            return Err(SegmentHeaderError::BadChecksum);
        }
        if !(WAL_FORMAT_VERSION_MIN..=WAL_FORMAT_VERSION).contains(&h.format_version.get()) {
            return Err(SegmentHeaderError::UnsupportedVersion(
                h.format_version.get(),
            ));
        }
        if h.block_bytes.get() as usize != SECTOR_BYTES {
            return Err(SegmentHeaderError::BlockSize(h.block_bytes.get()));
        }
        Ok(h)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegmentHeaderError {
    #[error("segment header is shorter than {SEGMENT_HEADER_BYTES} bytes")]
    Short,
    #[error("segment header has the wrong magic (not a corekv WAL segment)")]
    BadMagic,
    #[error("segment header checksum mismatch")]
    BadChecksum,
    #[error("segment format version {0} is not supported (this build reads {WAL_FORMAT_VERSION_MIN} to {WAL_FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    #[error("segment block size {0} is not supported (this build uses {SECTOR_BYTES})")]
    BlockSize(u32),
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BatchHeader {
    pub magic: U32,
    pub record_count: U32,
    pub segment_seq: U64,
    pub first_lsn: U64,
    /// Bytes of records after this header (excluding padding).
    pub payload_bytes: U32,
    pub crc: U32,
}

pub const BATCH_HEADER_BYTES: usize = std::mem::size_of::<BatchHeader>();
const _: () = assert!(BATCH_HEADER_BYTES == 32);

impl BatchHeader {
    pub fn new(segment_seq: u64, first_lsn: u64, record_count: u32, payload_bytes: u32) -> Self {
        let mut h = BatchHeader {
            magic: BATCH_MAGIC.into(),
            record_count: record_count.into(),
            segment_seq: segment_seq.into(),
            first_lsn: first_lsn.into(),
            payload_bytes: payload_bytes.into(),
            crc: 0.into(),
        };
        h.crc = crc32c(&h.as_bytes()[..BATCH_HEADER_BYTES - 4]).into();
        h
    }

    /// A batch header is *present* at `bytes` if its magic, checksum and segment
    /// sequence all match. Anything else (zeros, stale data, garbage) is "no batch".
    pub fn decode(bytes: &[u8], segment_seq: u64) -> Option<BatchHeader> {
        let (h, _) = BatchHeader::read_from_prefix(bytes).ok()?;
        if h.magic.get() != BATCH_MAGIC || h.segment_seq.get() != segment_seq {
            return None;
        }
        if h.crc.get() != crc32c(&bytes[..BATCH_HEADER_BYTES - 4]) {
            return None;
        }
        Some(h)
    }

    /// Bytes this batch occupies on disk, padding included.
    pub fn extent_bytes(&self) -> u64 {
        crate::core::limits::align_up_u64(
            BATCH_HEADER_BYTES as u64 + u64::from(self.payload_bytes.get()),
        )
    }
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RecordHeader {
    pub crc: U32,
    pub body_bytes: U32,
    pub lsn: U64,
    pub kind: u8,
    pub flags: u8,
    pub reserved: [u8; 2],
}

pub const RECORD_HEADER_BYTES: usize = std::mem::size_of::<RecordHeader>();
const _: () = assert!(RECORD_HEADER_BYTES == 20);

/// What a record does. Codes are part of the on-disk format.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    Put = 1,
    Delete = 2,
    /// A transaction's commit decision, with the coordinator's own writes (also
    /// the whole of a single-shard transaction). Body: `core::txn_format`.
    TxnCommit = 3,
    /// A participant's prepared writes, not applied until resolved.
    TxnPrepare = 4,
    /// A participant's resolution of a prepared transaction.
    TxnResolve = 5,
    /// A PUT whose value expires (format 2).
    PutExpiring = 6,
}

impl RecordKind {
    pub fn from_u8(v: u8) -> Option<RecordKind> {
        match v {
            1 => Some(RecordKind::Put),
            2 => Some(RecordKind::Delete),
            3 => Some(RecordKind::TxnCommit),
            4 => Some(RecordKind::TxnPrepare),
            5 => Some(RecordKind::TxnResolve),
            6 => Some(RecordKind::PutExpiring),
            _ => None,
        }
    }
}

/// One decoded record, borrowing from the batch bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    Put {
        lsn: u64,
        key: &'a [u8],
        value: &'a [u8],
    },
    Delete {
        lsn: u64,
        key: &'a [u8],
    },
    /// A transaction record, its body validated against its kind's layout in
    /// `core::txn_format` (by the decoder, or by construction for a writer).
    Txn {
        lsn: u64,
        txn: TxnRecord<'a>,
    },
    /// A PUT with an expiry (unix ms, never 0: a PUT without one is `Put`).
    PutExpiring {
        lsn: u64,
        key: &'a [u8],
        expires_at: u64,
        value: &'a [u8],
    },
}

impl<'a> Record<'a> {
    pub fn lsn(&self) -> u64 {
        match self {
            Record::Put { lsn, .. }
            | Record::Delete { lsn, .. }
            | Record::Txn { lsn, .. }
            | Record::PutExpiring { lsn, .. } => *lsn,
        }
    }

    /// A PUT of `value` with expiry `expires_at` (0: never), as the record
    /// kind that carries it.
    pub fn put(lsn: u64, key: &'a [u8], value: &'a [u8], expires_at: u64) -> Record<'a> {
        if expires_at == crate::core::expiry::NEVER {
            Record::Put { lsn, key, value }
        } else {
            Record::PutExpiring {
                lsn,
                key,
                expires_at,
                value,
            }
        }
    }

    /// The key a single-key record writes; `None` for transaction records.
    pub fn key(&self) -> Option<&'a [u8]> {
        match self {
            Record::Put { key, .. }
            | Record::Delete { key, .. }
            | Record::PutExpiring { key, .. } => Some(key),
            Record::Txn { .. } => None,
        }
    }
}

/// The on-disk kind of a transaction record.
fn txn_kind(txn: &TxnRecord<'_>) -> RecordKind {
    match txn {
        TxnRecord::Commit(_) => RecordKind::TxnCommit,
        TxnRecord::Prepare(_) => RecordKind::TxnPrepare,
        TxnRecord::Resolve(_) => RecordKind::TxnResolve,
    }
}

/// Bytes a PUT record of this key and value occupies.
pub fn put_record_bytes(key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER_BYTES + 4 + key_len + value_len
}

impl Record<'_> {
    /// Bytes `encode_record` appends for this record.
    pub fn encoded_len(&self) -> usize {
        match self {
            Record::Put { key, value, .. } => put_record_bytes(key.len(), value.len()),
            Record::Delete { key, .. } => RECORD_HEADER_BYTES + key.len(),
            Record::Txn { txn, .. } => RECORD_HEADER_BYTES + txn.body_len(),
            Record::PutExpiring { key, value, .. } => put_record_bytes(key.len(), value.len()) + 8,
        }
    }
}

/// Append one record to `out`. The caller bounds key and value sizes first.
pub fn encode_record(out: &mut Vec<u8>, record: &Record<'_>) {
    let start = out.len();
    let (kind, body_bytes) = match record {
        Record::Put { key, value, .. } => (RecordKind::Put, 4 + key.len() + value.len()),
        Record::Delete { key, .. } => (RecordKind::Delete, key.len()),
        Record::Txn { txn, .. } => (txn_kind(txn), txn.body_len()),
        Record::PutExpiring { key, value, .. } => {
            (RecordKind::PutExpiring, 4 + key.len() + 8 + value.len())
        }
    };
    assert!(
        body_bytes <= RECORD_BODY_BYTES_MAX,
        "record body of {body_bytes} bytes passed the size checks"
    );
    let header = RecordHeader {
        crc: 0.into(),
        body_bytes: (body_bytes as u32).into(),
        lsn: record.lsn().into(),
        kind: kind as u8,
        flags: 0,
        reserved: [0; 2],
    };
    out.extend_from_slice(header.as_bytes());
    match record {
        Record::Put { key, value, .. } => {
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(value);
        }
        Record::Delete { key, .. } => out.extend_from_slice(key),
        Record::Txn { txn, .. } => txn.encode_body(out),
        Record::PutExpiring {
            key,
            expires_at,
            value,
            ..
        } => {
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&expires_at.to_le_bytes());
            out.extend_from_slice(value);
        }
    }
    let crc = crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Why a record failed to decode. Offsets are relative to the slice given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record header truncated at offset {offset}")]
    TruncatedHeader { offset: usize },
    #[error("record at offset {offset} declares {body_bytes} body bytes, past the limit or the batch end")]
    BadLength { offset: usize, body_bytes: u32 },
    #[error("record at offset {offset} failed its checksum (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        offset: usize,
        stored: u32,
        computed: u32,
    },
    #[error("record at offset {offset} has LSN {found}, expected {expected}")]
    Sequence {
        offset: usize,
        found: u64,
        expected: u64,
    },
    #[error("record at offset {offset} has unknown kind {kind}")]
    UnknownKind { offset: usize, kind: u8 },
    #[error("record at offset {offset} has a malformed body")]
    MalformedBody { offset: usize },
}

/// Decode the record at the start of `bytes`, checking its checksum and that its
/// LSN is `expected_lsn`. Returns the record and its total length.
pub fn decode_record(bytes: &[u8], expected_lsn: u64) -> Result<(Record<'_>, usize), RecordError> {
    let offset = 0;
    let (header, rest) = RecordHeader::read_from_prefix(bytes)
        .map_err(|_| RecordError::TruncatedHeader { offset })?;
    let body_bytes = header.body_bytes.get();
    if body_bytes as usize > RECORD_BODY_BYTES_MAX || body_bytes as usize > rest.len() {
        return Err(RecordError::BadLength { offset, body_bytes });
    }
    let total = RECORD_HEADER_BYTES + body_bytes as usize;
    let computed = crc32c_append(
        crc32c(&bytes[4..RECORD_HEADER_BYTES]),
        &rest[..body_bytes as usize],
    );
    if computed != header.crc.get() {
        return Err(RecordError::Checksum {
            offset,
            stored: header.crc.get(),
            computed,
        });
    }
    let lsn = header.lsn.get();
    if lsn != expected_lsn {
        return Err(RecordError::Sequence {
            offset,
            found: lsn,
            expected: expected_lsn,
        });
    }
    let body = &rest[..body_bytes as usize];
    let record = match RecordKind::from_u8(header.kind) {
        Some(RecordKind::Put) => {
            let key_len = body
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or(RecordError::MalformedBody { offset })?;
            if key_len > KEY_BYTES_MAX || 4 + key_len > body.len() {
                return Err(RecordError::MalformedBody { offset });
            }
            Record::Put {
                lsn,
                key: &body[4..4 + key_len],
                value: &body[4 + key_len..],
            }
        }
        Some(RecordKind::PutExpiring) => {
            let key_len = body
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or(RecordError::MalformedBody { offset })?;
            if key_len > KEY_BYTES_MAX || 4 + key_len + 8 > body.len() {
                return Err(RecordError::MalformedBody { offset });
            }
            let at = &body[4 + key_len..4 + key_len + 8];
            let expires_at = u64::from_le_bytes(at.try_into().unwrap_or([0; 8]));
            if expires_at == crate::core::expiry::NEVER {
                // Writers use PUT for that; accepting it would give one
                // write two encodings.
                return Err(RecordError::MalformedBody { offset });
            }
            Record::PutExpiring {
                lsn,
                key: &body[4..4 + key_len],
                expires_at,
                value: &body[4 + key_len + 8..],
            }
        }
        Some(RecordKind::Delete) => {
            if body.len() > KEY_BYTES_MAX {
                return Err(RecordError::MalformedBody { offset });
            }
            Record::Delete { lsn, key: body }
        }
        // Parsed here, once: recovery and the state machine take the typed
        // record and never split these bytes again.
        Some(RecordKind::TxnCommit) => Record::Txn {
            lsn,
            txn: TxnRecord::Commit(
                parse_commit_record(body).map_err(|_| RecordError::MalformedBody { offset })?,
            ),
        },
        Some(RecordKind::TxnPrepare) => Record::Txn {
            lsn,
            txn: TxnRecord::Prepare(
                parse_prepare_record(body).map_err(|_| RecordError::MalformedBody { offset })?,
            ),
        },
        Some(RecordKind::TxnResolve) => Record::Txn {
            lsn,
            txn: TxnRecord::Resolve(
                parse_resolve_record(body).map_err(|_| RecordError::MalformedBody { offset })?,
            ),
        },
        None => {
            return Err(RecordError::UnknownKind {
                offset,
                kind: header.kind,
            })
        }
    };
    Ok((record, total))
}

/// Iterate the records of a batch payload, checking count and sequence.
/// `on_record` sees each record in order; the first error stops the walk and is
/// returned with its offset relative to `payload`.
pub fn decode_batch_payload<'a>(
    payload: &'a [u8],
    first_lsn: u64,
    record_count: u32,
    mut on_record: impl FnMut(Record<'a>),
) -> Result<(), RecordError> {
    let mut offset = 0usize;
    for i in 0..u64::from(record_count) {
        let (record, len) =
            decode_record(&payload[offset..], first_lsn + i).map_err(|e| shift(e, offset))?;
        on_record(record);
        offset += len;
    }
    if offset != payload.len() {
        return Err(RecordError::BadLength {
            offset,
            body_bytes: (payload.len() - offset) as u32,
        });
    }
    Ok(())
}

fn shift(e: RecordError, by: usize) -> RecordError {
    match e {
        RecordError::TruncatedHeader { offset } => RecordError::TruncatedHeader {
            offset: offset + by,
        },
        RecordError::BadLength { offset, body_bytes } => RecordError::BadLength {
            offset: offset + by,
            body_bytes,
        },
        RecordError::Checksum {
            offset,
            stored,
            computed,
        } => RecordError::Checksum {
            offset: offset + by,
            stored,
            computed,
        },
        RecordError::Sequence {
            offset,
            found,
            expected,
        } => RecordError::Sequence {
            offset: offset + by,
            found,
            expected,
        },
        RecordError::UnknownKind { offset, kind } => RecordError::UnknownKind {
            offset: offset + by,
            kind,
        },
        RecordError::MalformedBody { offset } => RecordError::MalformedBody {
            offset: offset + by,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(
            &mut out,
            &Record::Put {
                lsn: 7,
                key: b"alpha",
                value: b"one",
            },
        );
        encode_record(
            &mut out,
            &Record::Delete {
                lsn: 8,
                key: b"beta",
            },
        );
        encode_record(
            &mut out,
            &Record::Put {
                lsn: 9,
                key: b"",
                value: &[0u8; 300],
            },
        );
        out
    }

    #[test]
    fn encoded_len_is_exact() {
        for r in [
            Record::Put {
                lsn: 1,
                key: b"key",
                value: b"value",
            },
            Record::Delete {
                lsn: 2,
                key: b"gone",
            },
        ] {
            let mut out = Vec::new();
            encode_record(&mut out, &r);
            assert_eq!(out.len(), r.encoded_len());
        }
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let mut seen = Vec::new();
        decode_batch_payload(&bytes, 7, 3, |r| seen.push(r)).unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(
            seen[0],
            Record::Put {
                lsn: 7,
                key: b"alpha",
                value: b"one"
            }
        );
        assert_eq!(
            seen[1],
            Record::Delete {
                lsn: 8,
                key: b"beta"
            }
        );
        assert_eq!(seen[2].key(), Some(&b""[..]));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = sample();
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let result = decode_batch_payload(&damaged, 7, 3, |_| {});
            assert!(result.is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert!(
                decode_batch_payload(&bytes[..cut], 7, 3, |_| {}).is_err(),
                "cut at {cut}"
            );
        }
    }

    /// Transaction records come out of the decoder typed and validated (the
    /// same records a writer put in), and a body that does not parse as its
    /// kind is a `MalformedBody` error, even under a valid checksum.
    #[test]
    fn transaction_records_decode_typed_and_malformed_bodies_are_errors() {
        use crate::core::txn_format::{
            begin_list, encode_write, end_list, CommitRecord, ResolveRecord, TxnId, TxnView,
            ValidPrepare, Write,
        };
        let id = TxnId {
            coordinator: 2,
            seq: 40,
        };
        let mut part = Vec::new();
        let at = begin_list(&mut part);
        end_list(&mut part, at, 0);
        let at = begin_list(&mut part);
        encode_write(&mut part, &Write::Put(b"k", b"v"));
        encode_write(&mut part, &Write::Delete(b"gone"));
        end_list(&mut part, at, 2);
        let view = TxnView::parse(&part, true).unwrap();
        let mut commit_body = Vec::new();
        let commit = CommitRecord::encode(&mut commit_body, id, &[1, 3], &view);
        let prepare = ValidPrepare::encode(id, &view);
        let written = [
            TxnRecord::Commit(commit),
            TxnRecord::Prepare(prepare.record()),
            TxnRecord::Resolve(ResolveRecord { id, commit: true }),
        ];
        let mut out = Vec::new();
        for (i, txn) in written.iter().enumerate() {
            let r = Record::Txn {
                lsn: 5 + i as u64,
                txn: *txn,
            };
            encode_record(&mut out, &r);
        }
        let mut seen = Vec::new();
        decode_batch_payload(&out, 5, 3, |r| seen.push(r)).unwrap();
        assert_eq!(seen.len(), 3);
        for (i, (r, txn)) in seen.iter().zip(&written).enumerate() {
            assert_eq!(
                *r,
                Record::Txn {
                    lsn: 5 + i as u64,
                    txn: *txn
                }
            );
        }
        let Record::Txn {
            txn: TxnRecord::Commit(c),
            ..
        } = seen[0]
        else {
            panic!("a commit record decodes as one: {:?}", seen[0]);
        };
        assert_eq!(c.participants().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(
            c.writes().collect::<Vec<_>>(),
            vec![Write::Put(b"k", b"v"), Write::Delete(b"gone")]
        );

        // Every transaction kind over a body that is not its layout, with a
        // checksum that matches: the decoder says so, typed.
        for kind in [
            RecordKind::TxnCommit,
            RecordKind::TxnPrepare,
            RecordKind::TxnResolve,
        ] {
            let mut bad = Vec::new();
            encode_record(
                &mut bad,
                &Record::Delete {
                    lsn: 9,
                    key: b"\x01\x00not a transaction body",
                },
            );
            bad[16] = kind as u8;
            let crc = crc32c(&bad[4..]);
            bad[..4].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(
                decode_record(&bad, 9),
                Err(RecordError::MalformedBody { offset: 0 }),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn expiring_puts_round_trip_and_their_malformed_bodies_are_errors() {
        let written = [
            Record::put(3, b"k", b"v", 1_700_000_000_123),
            Record::put(4, b"", b"", u64::MAX),
            Record::put(5, b"plain", b"x", 0),
        ];
        assert!(matches!(written[2], Record::Put { .. }), "no expiry: a PUT");
        let mut out = Vec::new();
        for r in &written {
            let at = out.len();
            encode_record(&mut out, r);
            assert_eq!(out.len() - at, r.encoded_len());
        }
        let mut seen = Vec::new();
        decode_batch_payload(&out, 3, 3, |r| seen.push(r)).unwrap();
        assert_eq!(seen, written);
        // Bodies shorter than key + expiry, and a stored expiry of 0, are
        // malformed even under a valid checksum.
        for body in [
            &b"\x01\x00\x00\x00k\x01\x02"[..],
            &b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00v"[..],
            &b"\xff\xff\x00\x00"[..],
        ] {
            let mut bad = Vec::new();
            encode_record(&mut bad, &Record::Delete { lsn: 9, key: body });
            bad[16] = RecordKind::PutExpiring as u8;
            let crc = crc32c(&bad[4..]);
            bad[..4].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(
                decode_record(&bad, 9),
                Err(RecordError::MalformedBody { offset: 0 }),
                "{body:?}"
            );
        }
    }

    #[test]
    fn segments_of_version_1_still_read_and_version_3_is_refused_by_name() {
        for (version, ok) in [(1u32, true), (2, true), (3, false), (0, false)] {
            let mut sh = SegmentHeader::new(1, 2, 3, 4, 5);
            sh.format_version = version.into();
            sh.crc = crc32c(&sh.as_bytes()[..SEGMENT_HEADER_BYTES - 4]).into();
            let got = SegmentHeader::decode(sh.as_bytes());
            assert_eq!(got.is_ok(), ok, "version {version}");
            if !ok {
                assert_eq!(
                    got.unwrap_err(),
                    SegmentHeaderError::UnsupportedVersion(version)
                );
            }
        }
    }

    #[test]
    fn wrong_sequence_is_detected() {
        let bytes = sample();
        let err = decode_batch_payload(&bytes, 8, 3, |_| {}).unwrap_err();
        assert!(matches!(
            err,
            RecordError::Sequence {
                offset: 0,
                found: 7,
                expected: 8
            }
        ));
    }

    #[test]
    fn absurd_length_is_rejected_before_use() {
        let mut bytes = sample();
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_record(&bytes, 7),
            Err(RecordError::BadLength { .. })
        ));
    }

    #[test]
    fn headers_round_trip_and_reject_damage() {
        let sh = SegmentHeader::new(1, 2, 3, 4, 5);
        let mut block = vec![0u8; SECTOR_BYTES];
        block[..SEGMENT_HEADER_BYTES].copy_from_slice(sh.as_bytes());
        let back = SegmentHeader::decode(&block).unwrap();
        assert_eq!(back.segment_seq.get(), 3);
        block[20] ^= 1;
        assert_eq!(
            SegmentHeader::decode(&block).unwrap_err(),
            SegmentHeaderError::BadChecksum
        );

        let bh = BatchHeader::new(3, 100, 2, 50);
        let bytes = bh.as_bytes().to_vec();
        assert!(BatchHeader::decode(&bytes, 3).is_some());
        assert!(
            BatchHeader::decode(&bytes, 4).is_none(),
            "stale segment sequence must not pass"
        );
        assert!(
            BatchHeader::decode(&[0u8; 32], 0).is_none(),
            "zeros are not a batch"
        );
        assert_eq!(bh.extent_bytes(), SECTOR_BYTES as u64);
    }
}
