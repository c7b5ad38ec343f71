//! Sorted table files on disk: written once, sequentially, with O_DIRECT; then
//! read block by block, every block checked before its bytes are used.
//!
//! It owns: the order of a table's writes (data blocks, index, bloom, footer,
//! fdatasync), opening a table (footer, index and bloom verified and kept in
//! memory), reading one data block verified by checksum *and* by name, and the
//! offline check of a whole file. It must never: return a block that failed its
//! checks, write a table in place, or decide which tables exist (the manifest
//! does).

use std::path::{Path, PathBuf};

use rkyv::util::AlignedVec;
use zerocopy::IntoBytes;

use crate::core::block_format::{
    open_block, seal_block, seal_block_padded, BlockError, BlockKind, DataBlock, DataBlockBuilder,
    TRAILER_BYTES,
};
use crate::core::limits::SECTOR_BYTES;
use crate::core::table_format::{
    access_index, encode_index, place_block, ArchivedTableIndex, BlockFinder, Bloom, BloomBuilder,
    Footer, IndexEntry, OwnedBloom, TableIndex, DATA_BLOCK_PAYLOAD_TARGET, FOOTER_EXTENT,
    TABLE_FORMAT_VERSION, TABLE_MAGIC,
};

use super::disk::{Disk, DiskFile, OpenMode};
use super::error::IoError;

/// The footer's block number, fixed so it can be checked before it is parsed.
pub const FOOTER_BLOCK_NO: u32 = u32::MAX;
/// Sealed blocks are written in chunks of about this size.
const WRITE_CHUNK_BYTES: usize = 1024 * 1024;

pub fn table_file_name(id: u64) -> String {
    format!("{id:016x}.sst")
}

pub fn parse_table_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".sst")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("table {path} corrupt at offset {offset} (block {block}): {detail}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        block: String,
        detail: BlockError,
    },
}

impl TableError {
    pub fn name(&self) -> &'static str {
        match self {
            TableError::Io(_) => "IO_ERROR",
            TableError::Corrupt { .. } => "STORAGE_CORRUPT",
        }
    }
}

/// What a finished table is, for the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSummary {
    pub id: u64,
    pub entries: u64,
    pub file_bytes: u64,
    pub max_lsn: u64,
    pub smallest: Vec<u8>,
    pub largest: Vec<u8>,
}

/// Writes one table. Keys must arrive in strictly increasing order.
pub struct TableWriter<F: DiskFile> {
    file: F,
    id: u64,
    shard: u16,
    staged: Vec<u8>,
    staged_at: u64,
    block: DataBlockBuilder,
    payload: Vec<u8>,
    index: TableIndex,
    bloom: BloomBuilder,
    entries: u64,
    smallest: Option<Vec<u8>>,
}

impl<F: DiskFile> TableWriter<F> {
    pub async fn create<D: Disk<File = F>>(
        disk: &D,
        dir: &Path,
        id: u64,
        shard: u16,
    ) -> Result<Self, TableError> {
        let file = disk
            .open(&dir.join(table_file_name(id)), OpenMode::CreateNew)
            .await?;
        Ok(TableWriter {
            file,
            id,
            shard,
            staged: Vec::with_capacity(WRITE_CHUNK_BYTES + SECTOR_BYTES),
            staged_at: 0,
            block: DataBlockBuilder::default(),
            payload: Vec::with_capacity(SECTOR_BYTES),
            index: TableIndex::default(),
            bloom: BloomBuilder::default(),
            entries: 0,
            smallest: None,
        })
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The table's id (its file name).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes the table will take if finished now (roughly).
    pub fn bytes_so_far(&self) -> u64 {
        self.staged_at + self.staged.len() as u64 + self.block.payload_len() as u64
    }

    /// Add one entry (`None`: a tombstone).
    pub async fn add(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), TableError> {
        self.add_expiring(key, value, 0).await
    }

    /// Add one entry (`None`: a tombstone) with its expiry (unix ms, 0: never).
    pub async fn add_expiring(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        expires_at: u64,
    ) -> Result<(), TableError> {
        // Reads binary-search blocks and keys: one key out of order would
        // make every key after it unreachable. Cheap: the previous key is
        // the open block's last, or the last sealed block's.
        let prev = if self.block.is_empty() {
            self.index.blocks.last().map(|b| b.last_key.as_slice())
        } else {
            Some(self.block.last_key())
        };
        assert!(
            prev.is_none_or(|p| key > p),
            "table {}: keys must be added in strictly increasing order",
            self.id
        );
        let value_len = value.map_or(0, <[u8]>::len);
        if !self.block.is_empty()
            && self.block_full(self.block.payload_len_with(key.len(), value_len))
        {
            self.seal_data_block();
            if self.staged.len() >= WRITE_CHUNK_BYTES {
                self.write_staged().await?;
            }
        }
        if self.smallest.is_none() {
            self.smallest = Some(key.to_vec());
        }
        self.block.add_expiring(key, value, expires_at);
        self.bloom.add(key);
        self.entries += 1;
        Ok(())
    }

    /// Whether to seal the current block before an entry that would make its
    /// payload `with` bytes: blocks hold about 4 KiB; an entry larger than that
    /// gets a block of its own.
    fn block_full(&self, with: usize) -> bool {
        with > DATA_BLOCK_PAYLOAD_TARGET
    }

    /// Seal `payload` as the next block where the placement rule puts it;
    /// returns (offset, length).
    fn place_and_seal(&mut self, payload: &[u8], block_no: u32, kind: BlockKind) -> (u64, usize) {
        let pos = self.staged_at + self.staged.len() as u64;
        let at = place_block(pos, payload.len() + TRAILER_BYTES);
        self.staged
            .resize(self.staged.len() + (at - pos) as usize, 0);
        let len = seal_block(&mut self.staged, payload, self.id, block_no, kind);
        (at, len)
    }

    fn next_block_no(&self) -> u32 {
        self.index.blocks.len() as u32
    }

    fn seal_data_block(&mut self) {
        let last_key = self.block.last_key().to_vec();
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        self.block.finish_into(&mut payload);
        let block_no = self.next_block_no();
        let (offset, extent) = self.place_and_seal(&payload, block_no, BlockKind::Data);
        self.payload = payload;
        self.index.blocks.push(IndexEntry {
            last_key,
            offset,
            extent: extent as u32,
            block_no,
        });
    }

    /// Write the whole sectors staged so far; a partial last sector stays
    /// staged (O_DIRECT writes whole sectors) and is rewritten with the next.
    async fn write_staged(&mut self) -> Result<(), TableError> {
        let whole = self.staged.len() / SECTOR_BYTES * SECTOR_BYTES;
        if whole == 0 {
            return Ok(());
        }
        let mut buf = self.file.alloc_buf(whole);
        buf.as_mut().copy_from_slice(&self.staged[..whole]);
        self.file.write_at(buf, self.staged_at).await?;
        self.staged_at += whole as u64;
        self.staged.drain(..whole);
        Ok(())
    }

    /// Write the index, bloom and footer, make the file durable and close it.
    /// The caller makes its name durable (directory fsync) before using it.
    pub async fn finish(mut self, max_lsn: u64) -> Result<TableSummary, TableError> {
        assert!(self.entries > 0, "an empty table is never written");
        if !self.block.is_empty() {
            self.seal_data_block();
        }
        let largest = self
            .index
            .blocks
            .last()
            .map(|b| b.last_key.clone())
            .unwrap_or_default();
        let data_blocks = self.index.blocks.len() as u32;
        let index_bytes = encode_index(&self.index);
        let (index_offset, index_extent) =
            self.place_and_seal(&index_bytes, data_blocks, BlockKind::Index);
        let bloom_bytes = self.bloom.finish();
        let (bloom_offset, bloom_extent) =
            self.place_and_seal(&bloom_bytes, data_blocks + 1, BlockKind::Bloom);
        // The footer fills the last sector, so the file ends sector-aligned.
        let end = self.staged.len().div_ceil(SECTOR_BYTES) * SECTOR_BYTES;
        self.staged.resize(end, 0);
        let footer = Footer {
            magic: TABLE_MAGIC,
            format_version: TABLE_FORMAT_VERSION.into(),
            shard: u32::from(self.shard).into(),
            table_id: self.id.into(),
            entries: self.entries.into(),
            max_lsn: max_lsn.into(),
            data_blocks: data_blocks.into(),
            index_block_no: data_blocks.into(),
            index_offset: index_offset.into(),
            index_extent: (index_extent as u32).into(),
            bloom_block_no: (data_blocks + 1).into(),
            bloom_offset: bloom_offset.into(),
            bloom_extent: (bloom_extent as u32).into(),
            reserved: 0.into(),
        };
        seal_block_padded(
            &mut self.staged,
            footer.as_bytes(),
            self.id,
            FOOTER_BLOCK_NO,
            BlockKind::Footer,
            FOOTER_EXTENT,
        );
        self.write_staged().await?;
        assert!(
            self.staged.is_empty(),
            "the footer ends on a sector boundary"
        );
        self.file.fdatasync().await?;
        let file_bytes = self.staged_at;
        self.file.close().await?;
        Ok(TableSummary {
            id: self.id,
            entries: self.entries,
            file_bytes,
            max_lsn,
            smallest: self.smallest.unwrap_or_default(),
            largest,
        })
    }

    /// Give up on this table (the caller removes the file).
    pub async fn abandon(self) {
        let _ = self.file.close().await;
    }
}

/// A table index archive that [`access_index`] accepted: made only by
/// [`ValidIndex::check`], so reading it back skips rkyv's validation without
/// a second look (the bytes are never modified afterwards).
struct ValidIndex {
    bytes: AlignedVec<16>,
}

impl ValidIndex {
    fn check(payload: &[u8]) -> Result<ValidIndex, BlockError> {
        let mut bytes = AlignedVec::<16>::with_capacity(payload.len());
        bytes.extend_from_slice(payload);
        access_index(&bytes)?;
        Ok(ValidIndex { bytes })
    }

    fn get(&self) -> &ArchivedTableIndex {
        // SAFETY: `check`, the only constructor, validated these exact bytes
        // with `access_index`, and they are never modified afterwards.
        unsafe { rkyv::access_unchecked::<ArchivedTableIndex>(&self.bytes) }
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// An open table: its file, and its verified footer, index and bloom filter.
pub struct TableFile<F: DiskFile> {
    file: F,
    pub id: u64,
    pub footer: Footer,
    pub file_bytes: u64,
    index: ValidIndex,
    finder: BlockFinder,
    bloom: OwnedBloom,
}

impl<F: DiskFile> TableFile<F> {
    pub async fn open<D: Disk<File = F>>(
        disk: &D,
        dir: &Path,
        id: u64,
    ) -> Result<Self, TableError> {
        let path = dir.join(table_file_name(id));
        let file = disk.open(&path, OpenMode::ReadOnly).await?;
        let file_bytes = file.size().await?;
        let corrupt = |offset: u64, block: &str, detail: BlockError| TableError::Corrupt {
            path: path.clone(),
            offset,
            block: block.to_string(),
            detail,
        };
        if file_bytes < FOOTER_EXTENT as u64 || file_bytes % SECTOR_BYTES as u64 != 0 {
            return Err(corrupt(
                file_bytes,
                "footer",
                BlockError::Malformed("file size is not a whole number of blocks"),
            ));
        }
        let footer_at = file_bytes - FOOTER_EXTENT as u64;
        let raw = read_exact(&file, footer_at, FOOTER_EXTENT).await?;
        let payload = open_block(&raw, id, FOOTER_BLOCK_NO, BlockKind::Footer)
            .map_err(|e| corrupt(footer_at, "footer", e))?;
        let footer =
            Footer::decode(payload, id, file_bytes).map_err(|e| corrupt(footer_at, "footer", e))?;

        let (at, ext) = (
            footer.index_offset.get(),
            footer.index_extent.get() as usize,
        );
        let raw = read_exact(&file, at, ext).await?;
        let payload = open_block(&raw, id, footer.index_block_no.get(), BlockKind::Index)
            .map_err(|e| corrupt(at, "index", e))?;
        let index = ValidIndex::check(payload).map_err(|e| corrupt(at, "index", e))?;
        let checked = index.get();
        if checked.blocks.len() != footer.data_blocks.get() as usize
            || checked.blocks.last().is_some_and(|b| {
                b.offset.to_native() + u64::from(b.extent.to_native()) > footer.index_offset.get()
            })
        {
            return Err(corrupt(
                at,
                "index",
                BlockError::Malformed("index disagrees with the footer"),
            ));
        }
        let finder = BlockFinder::new(checked).map_err(|e| corrupt(at, "index", e))?;

        let (at, ext) = (
            footer.bloom_offset.get(),
            footer.bloom_extent.get() as usize,
        );
        let raw = read_exact(&file, at, ext).await?;
        let payload = open_block(&raw, id, footer.bloom_block_no.get(), BlockKind::Bloom)
            .map_err(|e| corrupt(at, "bloom", e))?;
        let bloom = OwnedBloom::parse(payload).map_err(|e| corrupt(at, "bloom", e))?;
        Ok(TableFile {
            file,
            id,
            footer,
            file_bytes,
            index,
            finder,
            bloom,
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn index(&self) -> &ArchivedTableIndex {
        self.index.get()
    }

    /// The first data block that may hold `key` (its last key is >= key).
    pub fn find_block(&self, key: &[u8]) -> Option<usize> {
        self.finder.find(self.index(), key)
    }

    pub fn bloom(&self) -> Bloom<'_> {
        self.bloom.filter()
    }

    /// Bytes held in memory for this table (index, its fences and bloom).
    pub fn pinned_bytes(&self) -> usize {
        self.index.len() + self.finder.heap_bytes() + self.bloom.len()
    }

    /// Read data block `i` and return its verified payload.
    pub async fn read_block(&self, i: usize) -> Result<Vec<u8>, TableError> {
        let Some(entry) = self.index().blocks.get(i) else {
            // Callers take `i` from this index; say so rather than panic.
            return Err(self.corrupt_block(
                self.footer.index_offset.get(),
                i as u32,
                BlockError::Malformed("block number past the end of the index"),
            ));
        };
        let (at, ext, no) = (
            entry.offset.to_native(),
            entry.extent.to_native() as usize,
            entry.block_no.to_native(),
        );
        let mut raw = read_exact(&self.file, at, ext).await?;
        let payload_len = match open_block(&raw, self.id, no, BlockKind::Data) {
            Ok(payload) => {
                DataBlock::parse(payload).map_err(|e| self.corrupt_block(at, no, e))?;
                payload.len()
            }
            Err(e) => return Err(self.corrupt_block(at, no, e)),
        };
        // The payload is the block's prefix: keep it in place, no second copy.
        raw.truncate(payload_len);
        Ok(raw)
    }

    /// Read data blocks `blocks` with one device request (they lie one after
    /// another in the file) and verify each on its own: a scan that needs ten
    /// neighbouring blocks pays one I/O, not ten, and a bad block fails alone.
    /// The outer error is the read itself failing.
    pub async fn read_blocks(
        &self,
        blocks: std::ops::Range<usize>,
    ) -> Result<Vec<Result<Vec<u8>, TableError>>, TableError> {
        let index = self.index();
        let (Some(first), Some(last)) = (
            index.blocks.get(blocks.start),
            blocks.end.checked_sub(1).and_then(|i| index.blocks.get(i)),
        ) else {
            return Ok(Vec::new());
        };
        let start = first.offset.to_native();
        let end = last.offset.to_native() + u64::from(last.extent.to_native());
        // The index passed its checksum, but its offsets are still checked
        // before they cut the span: a bad one fails its block, never panics.
        let span_len = end
            .checked_sub(start)
            .filter(|&n| n > 0 && n <= u32::MAX as u64);
        let Some(span_len) = span_len else {
            return Err(self.corrupt_block(
                start,
                first.block_no.to_native(),
                BlockError::Malformed("index offsets do not ascend"),
            ));
        };
        let span = read_exact_buf(&self.file, start, span_len as usize).await?;
        let out = blocks
            .map(|i| {
                let entry = &index.blocks[i];
                let (at, ext, no) = (
                    entry.offset.to_native(),
                    entry.extent.to_native() as usize,
                    entry.block_no.to_native(),
                );
                let from = at.checked_sub(start).map(|f| f as usize);
                let Some(raw) = from.and_then(|f| span.get(f..f.checked_add(ext)?)) else {
                    return Err(self.corrupt_block(
                        at,
                        no,
                        BlockError::Malformed("index offsets do not ascend"),
                    ));
                };
                let payload = open_block(raw, self.id, no, BlockKind::Data)
                    .map_err(|e| self.corrupt_block(at, no, e))?;
                DataBlock::parse(payload).map_err(|e| self.corrupt_block(at, no, e))?;
                Ok(payload.to_vec())
            })
            .collect();
        Ok(out)
    }

    fn corrupt_block(&self, offset: u64, block_no: u32, detail: BlockError) -> TableError {
        TableError::Corrupt {
            path: self.file.path().to_path_buf(),
            offset,
            block: block_no.to_string(),
            detail,
        }
    }

    pub async fn close(self) {
        let _ = self.file.close().await;
    }
}

/// Read `len` bytes at any `offset`: O_DIRECT reads whole sectors, so read the
/// sectors that cover the range and cut it out.
async fn read_exact<F: DiskFile>(file: &F, offset: u64, len: usize) -> Result<Vec<u8>, TableError> {
    let buf = read_exact_buf(file, offset, len).await?;
    Ok(buf.to_vec())
}

/// [`read_exact`] without the copy: the device's buffer, cut to the range.
/// Reads the device's logical blocks that cover the range, no more.
async fn read_exact_buf<F: DiskFile>(
    file: &F,
    offset: u64,
    len: usize,
) -> Result<SubBuf<F::ReadBuf>, TableError> {
    let sector = file.read_alignment() as u64;
    let start = offset / sector * sector;
    let end = (offset + len as u64).div_ceil(sector) * sector;
    let got = file.read_at(start, (end - start) as usize).await?;
    let skip = (offset - start) as usize;
    if got.len() < skip + len {
        return Err(TableError::Corrupt {
            path: file.path().to_path_buf(),
            offset,
            block: "?".into(),
            detail: BlockError::Malformed("file ends inside the block"),
        });
    }
    Ok(SubBuf {
        buf: got,
        range: skip..skip + len,
    })
}

/// Part of a read buffer.
struct SubBuf<B> {
    buf: B,
    range: std::ops::Range<usize>,
}

impl<B: std::ops::Deref<Target = [u8]>> std::ops::Deref for SubBuf<B> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

/// What an offline check of one table found.
#[derive(Debug, Default)]
pub struct TableCheck {
    pub blocks: u64,
    pub entries: u64,
    pub problems: Vec<String>,
}

/// Read every block of a table and check checksums, names, key order, the index
/// against the blocks, and the bloom filter against every key.
pub async fn check_table<D: Disk>(disk: &D, dir: &Path, id: u64) -> TableCheck {
    let mut check = TableCheck::default();
    let table = match TableFile::open(disk, dir, id).await {
        Ok(t) => t,
        Err(e) => {
            check.problems.push(e.to_string());
            return check;
        }
    };
    let mut prev_last: Option<Vec<u8>> = None;
    let n = table.index().blocks.len();
    for i in 0..n {
        check.blocks += 1;
        let payload = match table.read_block(i).await {
            Ok(p) => p,
            Err(e) => {
                check.problems.push(e.to_string());
                continue;
            }
        };
        let entry = &table.index().blocks[i];
        let at = entry.offset.to_native();
        let problem = |what: &str| {
            format!(
                "table {} at offset {at} (block {i}): {what}",
                table.path().display()
            )
        };
        let Ok(block) = DataBlock::parse(&payload) else {
            continue; // read_block already parsed it
        };
        let mut cursor = block.cursor();
        let mut last: Option<Vec<u8>> = None;
        loop {
            match cursor.next() {
                Ok(Some((k, _, _))) => {
                    if last
                        .as_deref()
                        .or(prev_last.as_deref())
                        .is_some_and(|p| p >= k)
                    {
                        check.problems.push(problem("keys out of order"));
                        break;
                    }
                    if !table.bloom().may_contain(k) {
                        check
                            .problems
                            .push(problem("bloom filter misses a key the table holds"));
                    }
                    check.entries += 1;
                    last = Some(k.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    check.problems.push(problem(&e.to_string()));
                    break;
                }
            }
        }
        if last.as_deref() != Some(entry.last_key.as_slice()) {
            check
                .problems
                .push(problem("index names a different last key"));
        }
        prev_last = last.or(prev_last);
    }
    if check.problems.is_empty() && check.entries != table.footer.entries.get() {
        check.problems.push(format!(
            "table {}: footer counts {} entries, blocks hold {}",
            table.path().display(),
            table.footer.entries.get(),
            check.entries
        ));
    }
    table.close().await;
    check
}
