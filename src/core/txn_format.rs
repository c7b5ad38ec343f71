//! Byte layouts of transactions: the TXN/MPUT request body, the per-shard part
//! of a transaction that travels between cores, and the three WAL record bodies
//! two-phase commit writes.
//!
//! ```text
//! txn body     = [cond_count u32] [cond]* [write_count u32] [write]*
//! cond         = [index u32, shard form only] [kind u8] [key_len u32] [key]
//!                ([value_len u32] [value] when kind = EQUALS)
//!                ([expires_at u64] [value_len u32] [value] when kind = EQUALS_EXPIRING)
//! write        = [kind u8] [key_len u32] [key] ([value_len u32] [value] when kind = PUT)
//! mput body    = [count u32] ([key_len u32] [key] [value_len u32] [value])*
//!
//! TXN_COMMIT   = [coordinator u16] [seq u64] [participant_count u16] [participant u16]*
//!                [write_count u32] [write]*        decision (+ the coordinator's own writes)
//! TXN_PREPARE  = [coordinator u16] [seq u64] [write_count u32] [write]*
//! TXN_RESOLVE  = [coordinator u16] [seq u64] [commit u8]
//! ```
//!
//! Every parser here bounds each length by the bytes that remain before it is
//! used, so no length field can make a reader allocate or index past the input.
//! This module is pure: it encodes into and decodes from byte slices.

use super::limits::KEY_BYTES_MAX;

pub const COND_EQUALS: u8 = 1;
pub const COND_ABSENT: u8 = 2;
pub const COND_PRESENT: u8 = 3;
/// The key holds this value with exactly this expiry (unix ms; 0: none):
/// what a transaction that moves or keeps an expiry (RESP's EXEC, RENAME,
/// COPY) reads, so a concurrent EXPIRE or PERSIST fails it.
pub const COND_EQUALS_EXPIRING: u8 = 4;
pub const WRITE_PUT: u8 = 1;
pub const WRITE_DELETE: u8 = 2;
/// A PUT whose value expires: `[kind][key_len u32][key][expires_at u64][value_len u32][value]`
/// (WAL format 2; never in a version 1 segment).
pub const WRITE_PUT_EXPIRING: u8 = 3;

/// A transaction's identity: the shard that coordinates it and a sequence number
/// that coordinator never hands out twice (it starts above the clock and above
/// every id its recovered log shows).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId {
    pub coordinator: u16,
    pub seq: u64,
}

impl std::fmt::Display for TxnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "txn {}:{}", self.coordinator, self.seq)
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Cond<'a> {
    Equals(&'a [u8], &'a [u8]),
    Absent(&'a [u8]),
    Present(&'a [u8]),
    /// Key, value, expiry (unix ms, 0: none); both must match.
    EqualsExpiring(&'a [u8], &'a [u8], u64),
}

impl<'a> Cond<'a> {
    pub fn key(&self) -> &'a [u8] {
        match self {
            Cond::Equals(k, _)
            | Cond::Absent(k)
            | Cond::Present(k)
            | Cond::EqualsExpiring(k, _, _) => k,
        }
    }

    /// Whether the condition holds for the key's current value and its
    /// expiry (0: none, or no value; an expired value is no value).
    pub fn holds(&self, current: Option<&[u8]>, expires_at: u64) -> bool {
        match self {
            Cond::Equals(_, v) => current == Some(*v),
            Cond::EqualsExpiring(_, v, e) => current == Some(*v) && expires_at == *e,
            Cond::Absent(_) => current.is_none(),
            Cond::Present(_) => current.is_some(),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Write<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
    /// Key, value, expiry (unix ms, never 0: a write without one is `Put`).
    PutExpiring(&'a [u8], &'a [u8], u64),
}

impl<'a> Write<'a> {
    pub fn key(&self) -> &'a [u8] {
        match self {
            Write::Put(k, _) | Write::Delete(k) | Write::PutExpiring(k, _, _) => k,
        }
    }

    pub fn value(&self) -> Option<&'a [u8]> {
        match self {
            Write::Put(_, v) | Write::PutExpiring(_, v, _) => Some(v),
            Write::Delete(_) => None,
        }
    }

    /// The written value's expiry (unix ms, 0: never).
    pub fn expires_at(&self) -> u64 {
        match self {
            Write::PutExpiring(_, _, e) => *e,
            Write::Put(..) | Write::Delete(_) => 0,
        }
    }

    /// A PUT of `value` expiring at `expires_at` (0: never), as the kind
    /// that carries it.
    pub fn put(key: &'a [u8], value: &'a [u8], expires_at: u64) -> Write<'a> {
        if expires_at == 0 {
            Write::Put(key, value)
        } else {
            Write::PutExpiring(key, value, expires_at)
        }
    }
}

/// Why a body failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnFormatError {
    #[error("transaction body is truncated or a length points past its end")]
    Truncated,
    #[error("transaction body has {0} bytes left over after its last entry")]
    TrailingBytes(usize),
    #[error("unknown condition kind {0}")]
    CondKind(u8),
    #[error("unknown write kind {0}")]
    WriteKind(u8),
    #[error("key of {0} bytes; the limit is {KEY_BYTES_MAX}")]
    KeyTooLarge(usize),
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, TxnFormatError> {
        let (v, rest) = self.b.split_first().ok_or(TxnFormatError::Truncated)?;
        self.b = rest;
        Ok(*v)
    }
    fn u16(&mut self) -> Result<u16, TxnFormatError> {
        let (v, rest) = self
            .b
            .split_first_chunk::<2>()
            .ok_or(TxnFormatError::Truncated)?;
        self.b = rest;
        Ok(u16::from_le_bytes(*v))
    }
    fn u32(&mut self) -> Result<u32, TxnFormatError> {
        let (v, rest) = self
            .b
            .split_first_chunk::<4>()
            .ok_or(TxnFormatError::Truncated)?;
        self.b = rest;
        Ok(u32::from_le_bytes(*v))
    }
    fn u64(&mut self) -> Result<u64, TxnFormatError> {
        let (v, rest) = self
            .b
            .split_first_chunk::<8>()
            .ok_or(TxnFormatError::Truncated)?;
        self.b = rest;
        Ok(u64::from_le_bytes(*v))
    }
    fn sized(&mut self) -> Result<&'a [u8], TxnFormatError> {
        let n = self.u32()? as usize;
        if n > self.b.len() {
            return Err(TxnFormatError::Truncated);
        }
        let (v, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(v)
    }
    fn key(&mut self) -> Result<&'a [u8], TxnFormatError> {
        let k = self.sized()?;
        if k.len() > KEY_BYTES_MAX {
            return Err(TxnFormatError::KeyTooLarge(k.len()));
        }
        Ok(k)
    }
    fn cond(&mut self, indexed: bool) -> Result<(u32, Cond<'a>), TxnFormatError> {
        let index = if indexed { self.u32()? } else { 0 };
        let kind = self.u8()?;
        let key = self.key()?;
        let cond = match kind {
            COND_EQUALS => Cond::Equals(key, self.sized()?),
            COND_ABSENT => Cond::Absent(key),
            COND_PRESENT => Cond::Present(key),
            COND_EQUALS_EXPIRING => {
                let at = self.u64()?;
                Cond::EqualsExpiring(key, self.sized()?, at)
            }
            k => return Err(TxnFormatError::CondKind(k)),
        };
        Ok((index, cond))
    }
    fn write(&mut self) -> Result<Write<'a>, TxnFormatError> {
        let kind = self.u8()?;
        let key = self.key()?;
        match kind {
            WRITE_PUT => Ok(Write::Put(key, self.sized()?)),
            WRITE_DELETE => Ok(Write::Delete(key)),
            WRITE_PUT_EXPIRING => {
                let at = self.u64()?;
                if at == 0 {
                    // A write without an expiry has one encoding: WRITE_PUT.
                    return Err(TxnFormatError::WriteKind(WRITE_PUT_EXPIRING));
                }
                Ok(Write::PutExpiring(key, self.sized()?, at))
            }
            k => Err(TxnFormatError::WriteKind(k)),
        }
    }
    /// A count of entries at least `min_bytes` long each, bounded by what is left.
    fn count(&mut self, min_bytes: usize) -> Result<u32, TxnFormatError> {
        let n = self.u32()?;
        if (n as usize).saturating_mul(min_bytes) > self.b.len() {
            return Err(TxnFormatError::Truncated);
        }
        Ok(n)
    }
}

const COND_MIN_BYTES: usize = 5;
const WRITE_MIN_BYTES: usize = 5;

/// A validated transaction body: conditions then writes. Made by
/// [`TxnView::parse`], or from bytes that are valid by construction
/// ([`TxnPart::encode`], [`MputView::write_as_txn`], [`TxnShape::view`]), so
/// its conditions and writes read back without another check.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TxnView<'a> {
    body: &'a [u8],
    conds: &'a [u8],
    cond_count: u32,
    writes: &'a [u8],
    write_count: u32,
    indexed: bool,
}

impl<'a> TxnView<'a> {
    /// Parse and validate a body. `indexed`: the shard form, where every
    /// condition carries its index in the client's transaction.
    pub fn parse(body: &'a [u8], indexed: bool) -> Result<TxnView<'a>, TxnFormatError> {
        let mut r = Reader { b: body };
        let cond_count = r.count(COND_MIN_BYTES)?;
        let conds = r.b;
        for _ in 0..cond_count {
            r.cond(indexed)?;
        }
        let conds = &conds[..conds.len() - r.b.len()];
        let write_count = r.count(WRITE_MIN_BYTES)?;
        let writes = r.b;
        for _ in 0..write_count {
            r.write()?;
        }
        if !r.b.is_empty() {
            return Err(TxnFormatError::TrailingBytes(r.b.len()));
        }
        Ok(TxnView {
            body,
            conds,
            cond_count,
            writes,
            write_count,
            indexed,
        })
    }

    /// The body as received (to send it on).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Where this body splits, to make the view again later from the same
    /// bytes without checking them again (see [`TxnShape`]).
    pub fn shape(&self) -> TxnShape {
        TxnShape {
            body_len: self.body.len(),
            conds_len: self.conds.len(),
            cond_count: self.cond_count,
            write_count: self.write_count,
            indexed: self.indexed,
        }
    }

    pub fn cond_count(&self) -> u32 {
        self.cond_count
    }

    pub fn write_count(&self) -> u32 {
        self.write_count
    }

    /// Conditions with their index in the client's transaction.
    pub fn conds(&self) -> impl Iterator<Item = (u32, Cond<'a>)> + 'a {
        let mut r = Reader { b: self.conds };
        let indexed = self.indexed;
        let mut i = 0u32;
        std::iter::from_fn(move || {
            let (index, c) = r.cond(indexed).ok()?;
            let index = if indexed { index } else { i };
            i += 1;
            Some((index, c))
        })
    }

    pub fn writes(&self) -> WriteIter<'a> {
        WriteIter {
            r: Reader { b: self.writes },
        }
    }
}

/// Where a validated transaction body splits, without its borrow: for a
/// holder that keeps the bytes somewhere a borrow cannot reach across (a
/// request batch keeps ranges into its receive buffer, and runs a TXN after
/// its routed operations). Only a [`TxnView`] makes one; [`TxnShape::view`]
/// turns it back into the view of the same bytes without parsing them again.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TxnShape {
    body_len: usize,
    conds_len: usize,
    cond_count: u32,
    write_count: u32,
    indexed: bool,
}

impl TxnShape {
    /// The view of `body`, which must be the bytes this shape was taken from.
    pub fn view(self, body: &[u8]) -> TxnView<'_> {
        // Other bytes would be read as a transaction nobody sent: writes that
        // corrupt data. A length check is cheap and catches a wrong range.
        assert_eq!(
            body.len(),
            self.body_len,
            "a transaction shape applied to other bytes"
        );
        let writes_at = 4 + self.conds_len + 4;
        TxnView {
            body,
            conds: &body[4..4 + self.conds_len],
            cond_count: self.cond_count,
            writes: &body[writes_at..],
            write_count: self.write_count,
            indexed: self.indexed,
        }
    }
}

/// One shard's part of a transaction while a coordinator splits a validated
/// one: conditions (with their index in the client's transaction) and writes
/// taken from a [`TxnView`]. The shard-form body it encodes is valid by
/// construction, so it is handed on as a view instead of being parsed again.
#[derive(Default, Debug)]
pub struct TxnPart {
    conds: Vec<u8>,
    cond_count: u32,
    writes: Vec<u8>,
    write_count: u32,
}

impl TxnPart {
    /// Add condition `index` (its number in the client's transaction).
    pub fn push_cond(&mut self, index: u32, cond: &Cond<'_>) {
        // What a parser would refuse must not pass for valid.
        assert!(cond.key().len() <= KEY_BYTES_MAX, "an unchecked key");
        encode_cond(&mut self.conds, Some(index), cond);
        self.cond_count += 1;
    }

    pub fn push_write(&mut self, write: &Write<'_>) {
        assert!(write.key().len() <= KEY_BYTES_MAX, "an unchecked key");
        encode_write(&mut self.writes, write);
        self.write_count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.cond_count == 0 && self.write_count == 0
    }

    /// The shard form of this part, into `out` (cleared first).
    pub fn encode<'a>(&self, out: &'a mut Vec<u8>) -> TxnView<'a> {
        out.clear();
        let at = begin_list(out);
        out.extend_from_slice(&self.conds);
        end_list(out, at, self.cond_count);
        let at = begin_list(out);
        out.extend_from_slice(&self.writes);
        end_list(out, at, self.write_count);
        let body: &'a [u8] = out;
        TxnView {
            body,
            conds: &body[4..4 + self.conds.len()],
            cond_count: self.cond_count,
            writes: &body[at + 4..],
            write_count: self.write_count,
            indexed: true,
        }
    }
}

/// The writes of a validated body (parsing stops at the first malformed entry,
/// which validation rules out).
pub struct WriteIter<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for WriteIter<'a> {
    type Item = Write<'a>;
    fn next(&mut self) -> Option<Write<'a>> {
        if self.r.b.is_empty() {
            return None;
        }
        self.r.write().ok()
    }
}

/// Validate `count` writes in `bytes` (and nothing after them).
fn validate_writes(bytes: &[u8], count: u32) -> Result<(), TxnFormatError> {
    let mut r = Reader { b: bytes };
    for _ in 0..count {
        r.write()?;
    }
    if !r.b.is_empty() {
        return Err(TxnFormatError::TrailingBytes(r.b.len()));
    }
    Ok(())
}

/// The `len u32 | bytes` items of a list already validated by its parser (an
/// MGET key list); stops at the first item that does not fit.
pub fn sized_items(mut b: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let mut r = Reader { b };
        let item = r.sized().ok()?;
        b = r.b;
        Some(item)
    })
}

/// Starts a counted list; pass the result to [`end_list`] with the count.
pub fn begin_list(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    at
}

pub fn end_list(out: &mut [u8], at: usize, count: u32) {
    out[at..at + 4].copy_from_slice(&count.to_le_bytes());
}

fn put_sized(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

pub fn encode_cond(out: &mut Vec<u8>, index: Option<u32>, cond: &Cond<'_>) {
    if let Some(i) = index {
        out.extend_from_slice(&i.to_le_bytes());
    }
    match cond {
        Cond::Equals(k, v) => {
            out.push(COND_EQUALS);
            put_sized(out, k);
            put_sized(out, v);
        }
        Cond::Absent(k) => {
            out.push(COND_ABSENT);
            put_sized(out, k);
        }
        Cond::Present(k) => {
            out.push(COND_PRESENT);
            put_sized(out, k);
        }
        Cond::EqualsExpiring(k, v, e) => {
            out.push(COND_EQUALS_EXPIRING);
            put_sized(out, k);
            out.extend_from_slice(&e.to_le_bytes());
            put_sized(out, v);
        }
    }
}

pub fn encode_write(out: &mut Vec<u8>, write: &Write<'_>) {
    match write {
        Write::Put(k, v) => {
            out.push(WRITE_PUT);
            put_sized(out, k);
            put_sized(out, v);
        }
        Write::Delete(k) => {
            out.push(WRITE_DELETE);
            put_sized(out, k);
        }
        Write::PutExpiring(k, v, at) => {
            out.push(WRITE_PUT_EXPIRING);
            put_sized(out, k);
            out.extend_from_slice(&at.to_le_bytes());
            put_sized(out, v);
        }
    }
}

/// Bytes [`encode_write`] appends.
pub fn write_bytes(write: &Write<'_>) -> usize {
    match write {
        Write::Put(k, v) => 9 + k.len() + v.len(),
        Write::Delete(k) => 5 + k.len(),
        Write::PutExpiring(k, v, _) => 17 + k.len() + v.len(),
    }
}

/// Encode a whole client transaction (the TXN request body).
pub fn encode_txn(out: &mut Vec<u8>, conds: &[Cond<'_>], writes: &[Write<'_>]) {
    out.extend_from_slice(&(conds.len() as u32).to_le_bytes());
    for c in conds {
        encode_cond(out, None, c);
    }
    out.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for w in writes {
        encode_write(out, w);
    }
}

/// One key and its value, borrowed from a body.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// The pairs of an MPUT body, validated.
/// An MPUT body (`count u32 | (key | value)*`, each `len u32 | bytes`)
/// checked once by [`MputView::parse`]: its pairs can then be read and
/// converted without another check. The decoder hands requests on as this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MputView<'a> {
    body: &'a [u8],
    count: u32,
}

impl<'a> MputView<'a> {
    /// Check every pair (keys within the key limit) and that nothing trails.
    pub fn parse(body: &'a [u8]) -> Result<MputView<'a>, TxnFormatError> {
        let mut r = Reader { b: body };
        let count = r.count(8)?;
        for _ in 0..count {
            r.key()?;
            r.sized()?;
        }
        if !r.b.is_empty() {
            return Err(TxnFormatError::TrailingBytes(r.b.len()));
        }
        Ok(MputView { body, count })
    }

    /// The body as received (to send it on).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The `(key, value)` pairs, in order.
    pub fn pairs(&self) -> impl Iterator<Item = Pair<'a>> + 'a {
        let mut items = sized_items(self.body.get(4..).unwrap_or_default());
        std::iter::from_fn(move || Some((items.next()?, items.next()?)))
    }

    /// The TXN body with the same writes and no conditions (MPUT runs as a
    /// transaction), into `out` (cleared first), viewed.
    pub fn write_as_txn<'b>(&self, out: &'b mut Vec<u8>) -> TxnView<'b> {
        out.clear();
        let at = begin_list(out);
        end_list(out, at, 0);
        let at = begin_list(out);
        for (k, v) in self.pairs() {
            encode_write(out, &Write::Put(k, v));
        }
        end_list(out, at, self.count);
        let body: &'b [u8] = out;
        TxnView {
            body,
            conds: &body[4..4],
            cond_count: 0,
            writes: &body[at + 4..],
            write_count: self.count,
            indexed: false,
        }
    }
}

pub fn encode_mput(out: &mut Vec<u8>, pairs: &[(&[u8], &[u8])]) {
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        put_sized(out, k);
        put_sized(out, v);
    }
}

/// A TXN_COMMIT record body, well formed by construction: made only by
/// [`parse_commit_record`] (a logged body, checked once) or by
/// [`CommitRecord::encode`] (from a validated transaction part), so its
/// writes and participants read back without another check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitRecord<'a> {
    pub id: TxnId,
    body: &'a [u8],
    participants: &'a [u8],
    writes: &'a [u8],
}

impl<'a> CommitRecord<'a> {
    /// Encode the decision for `id` (naming `participants`) with `view`'s
    /// writes into `out` (cleared first), and view what was written.
    pub fn encode(
        out: &'a mut Vec<u8>,
        id: TxnId,
        participants: &[u16],
        view: &TxnView<'_>,
    ) -> CommitRecord<'a> {
        out.clear();
        let at = begin_commit_record(out, id, participants);
        for w in view.writes() {
            encode_write(out, &w);
        }
        end_list(out, at, view.write_count());
        let body: &'a [u8] = out;
        // The layout `begin_commit_record` wrote: id, count, participants, the list.
        let participants_at = at - 2 * participants.len();
        CommitRecord {
            id,
            body,
            participants: &body[participants_at..at],
            writes: &body[at + 4..],
        }
    }

    /// The record body, as logged.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    pub fn participants(&self) -> impl Iterator<Item = u16> + 'a {
        self.participants
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    }
    pub fn has_participants(&self) -> bool {
        !self.participants.is_empty()
    }
    pub fn writes(&self) -> WriteIter<'a> {
        WriteIter {
            r: Reader { b: self.writes },
        }
    }
}

/// A TXN_PREPARE record body, well formed by construction (made by
/// [`parse_prepare_record`] or by [`ValidPrepare::record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareRecord<'a> {
    pub id: TxnId,
    body: &'a [u8],
    writes: &'a [u8],
    write_count: u32,
}

impl<'a> PrepareRecord<'a> {
    /// The record body, as logged.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    pub fn write_count(&self) -> u32 {
        self.write_count
    }

    pub fn writes(&self) -> WriteIter<'a> {
        WriteIter {
            r: Reader { b: self.writes },
        }
    }
}

/// A decoded TXN_RESOLVE record body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolveRecord {
    pub id: TxnId,
    pub commit: bool,
}

/// Bytes of a TXN_RESOLVE body.
pub const RESOLVE_RECORD_BYTES: usize = 11;

impl ResolveRecord {
    /// Append the record body (`RESOLVE_RECORD_BYTES` bytes).
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_resolve_record(out, self.id, self.commit);
    }
}

/// A transaction record of the WAL, its body validated: what the WAL decoder
/// hands to recovery and the state machine (so that they never split the
/// bytes again), and what the participant hands to the WAL writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnRecord<'a> {
    Commit(CommitRecord<'a>),
    Prepare(PrepareRecord<'a>),
    Resolve(ResolveRecord),
}

impl TxnRecord<'_> {
    /// The transaction the record belongs to.
    pub fn id(&self) -> TxnId {
        match self {
            TxnRecord::Commit(c) => c.id,
            TxnRecord::Prepare(p) => p.id,
            TxnRecord::Resolve(r) => r.id,
        }
    }

    /// Bytes of the record body.
    pub fn body_len(&self) -> usize {
        match self {
            TxnRecord::Commit(c) => c.body.len(),
            TxnRecord::Prepare(p) => p.body.len(),
            TxnRecord::Resolve(_) => RESOLVE_RECORD_BYTES,
        }
    }

    /// Append the record body to `out`.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            TxnRecord::Commit(c) => out.extend_from_slice(c.body),
            TxnRecord::Prepare(p) => out.extend_from_slice(p.body),
            TxnRecord::Resolve(r) => r.encode(out),
        }
    }
}

/// A transaction id as the 10 bytes that name it in shard messages.
pub fn id_bytes(id: TxnId) -> [u8; 10] {
    let mut b = [0u8; 10];
    b[..2].copy_from_slice(&id.coordinator.to_le_bytes());
    b[2..].copy_from_slice(&id.seq.to_le_bytes());
    b
}

pub fn id_from_bytes(b: &[u8]) -> Option<TxnId> {
    read_id(&mut Reader { b }).ok()
}

fn read_id(r: &mut Reader<'_>) -> Result<TxnId, TxnFormatError> {
    Ok(TxnId {
        coordinator: r.u16()?,
        seq: r.u64()?,
    })
}

fn put_id(out: &mut Vec<u8>, id: TxnId) {
    out.extend_from_slice(&id.coordinator.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
}

/// Start a TXN_COMMIT body; append writes with [`encode_write`] and finish with
/// [`end_list`] on the returned position.
pub fn begin_commit_record(out: &mut Vec<u8>, id: TxnId, participants: &[u16]) -> usize {
    put_id(out, id);
    out.extend_from_slice(&(participants.len() as u16).to_le_bytes());
    for p in participants {
        out.extend_from_slice(&p.to_le_bytes());
    }
    begin_list(out)
}

/// Start a TXN_PREPARE body; append writes and finish with [`end_list`].
pub fn begin_prepare_record(out: &mut Vec<u8>, id: TxnId) -> usize {
    put_id(out, id);
    begin_list(out)
}

/// A TXN_PREPARE record body that is well formed by construction: made only
/// by encoding a parsed transaction part ([`ValidPrepare::encode`]) or by
/// parsing a logged body ([`ValidPrepare::parse`]), so reading its writes
/// again cannot fail. A participant keeps one per prepared transaction
/// from prepare to resolve, instead of re-parsing bytes it once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidPrepare {
    body: Vec<u8>,
    id: TxnId,
    /// Where the writes start in `body` (after the id and the count).
    writes_at: usize,
    write_count: u32,
}

impl ValidPrepare {
    /// Encode the prepare record of `view`'s writes for transaction `id`.
    pub fn encode(id: TxnId, view: &TxnView<'_>) -> ValidPrepare {
        let mut body = Vec::new();
        let at = begin_prepare_record(&mut body, id);
        for w in view.writes() {
            encode_write(&mut body, &w);
        }
        let write_count = view.write_count();
        end_list(&mut body, at, write_count);
        ValidPrepare {
            body,
            id,
            writes_at: at + 4,
            write_count,
        }
    }

    /// Check a logged TXN_PREPARE body once.
    pub fn parse(body: &[u8]) -> Result<ValidPrepare, TxnFormatError> {
        parse_prepare_record(body).map(ValidPrepare::from_record)
    }

    /// Keep a prepare record the WAL decoder validated (copies its body).
    pub fn from_record(p: PrepareRecord<'_>) -> ValidPrepare {
        ValidPrepare {
            id: p.id,
            writes_at: p.body.len() - p.writes.len(),
            write_count: p.write_count,
            body: p.body.to_vec(),
        }
    }

    /// The record body, as logged.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn record(&self) -> PrepareRecord<'_> {
        PrepareRecord {
            id: self.id,
            body: &self.body,
            writes: &self.body[self.writes_at..],
            write_count: self.write_count,
        }
    }
}

pub fn encode_resolve_record(out: &mut Vec<u8>, id: TxnId, commit: bool) {
    put_id(out, id);
    out.push(u8::from(commit));
}

pub fn parse_commit_record(body: &[u8]) -> Result<CommitRecord<'_>, TxnFormatError> {
    let mut r = Reader { b: body };
    let id = read_id(&mut r)?;
    let n = usize::from(r.u16()?);
    if n * 2 > r.b.len() {
        return Err(TxnFormatError::Truncated);
    }
    let (participants, rest) = r.b.split_at(n * 2);
    r.b = rest;
    let count = r.count(WRITE_MIN_BYTES)?;
    validate_writes(r.b, count)?;
    Ok(CommitRecord {
        id,
        body,
        participants,
        writes: r.b,
    })
}

pub fn parse_prepare_record(body: &[u8]) -> Result<PrepareRecord<'_>, TxnFormatError> {
    let mut r = Reader { b: body };
    let id = read_id(&mut r)?;
    let write_count = r.count(WRITE_MIN_BYTES)?;
    validate_writes(r.b, write_count)?;
    Ok(PrepareRecord {
        id,
        body,
        writes: r.b,
        write_count,
    })
}

pub fn parse_resolve_record(body: &[u8]) -> Result<ResolveRecord, TxnFormatError> {
    let mut r = Reader { b: body };
    let id = read_id(&mut r)?;
    let commit = match r.u8()? {
        0 => false,
        1 => true,
        k => return Err(TxnFormatError::WriteKind(k)),
    };
    if !r.b.is_empty() {
        return Err(TxnFormatError::TrailingBytes(r.b.len()));
    }
    Ok(ResolveRecord { id, commit })
}

#[cfg(test)]
mod tests;
