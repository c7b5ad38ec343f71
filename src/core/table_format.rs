//! The byte format of a sorted table file, apart from the blocks themselves
//! (see `block_format`): the block index, the bloom filter and the footer.
//!
//! ```text
//! table  = data block* | index block | bloom block | footer block (4 KiB, last)
//! index  = rkyv archive of TableIndex: per data block its last key, offset,
//!          extent and block number; read zero-copy after validation
//! bloom  = bits u64 | k u32 | reserved u32 | bit array
//! footer = Footer (fixed layout, zerocopy), sealed like every other block
//! ```
//!
//! Block numbers run 0.. in file order, data blocks first, so that a block
//! written to the wrong place is caught by its trailer. Blocks are packed
//! without padding, except that a block which would touch more 4 KiB pages than
//! its length needs starts at the next page: a small block is one page read, a
//! 4.1 KiB block (one 4 KiB value) is two, and no space goes to padding. The
//! footer fills the file's last 4 KiB; its magic and version say what the rest is.
//!
//! Pure: builds and parses bytes; every length comes from a checksummed block
//! and is bounded again before use.

use rkyv::rancor;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::block_format::{BlockError, TRAILER_BYTES};
use super::limits::SECTOR_BYTES;

pub const TABLE_MAGIC: [u8; 8] = *b"CKVTABLE";
/// The version this build writes. 2 added expiring entries (`block_format`);
/// version 1 tables decode with the same rule (they never hold one).
pub const TABLE_FORMAT_VERSION: u32 = 2;
/// The oldest version this build reads.
pub const TABLE_FORMAT_VERSION_MIN: u32 = 1;
/// The footer block's extent; always the last bytes of the file.
pub const FOOTER_EXTENT: usize = SECTOR_BYTES;
/// Target payload of one data block: one 4 KiB extent with its trailer.
pub const DATA_BLOCK_PAYLOAD_TARGET: usize = SECTOR_BYTES - super::block_format::TRAILER_BYTES;
/// Bloom bits per key: with the optimal 7 hashes, about 0.8% false positives.
pub const BLOOM_BITS_PER_KEY: usize = 10;
const BLOOM_HASHES: u32 = 7;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Footer {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub shard: U32,
    pub table_id: U64,
    pub entries: U64,
    pub max_lsn: U64,
    pub data_blocks: U32,
    pub index_block_no: U32,
    pub index_offset: U64,
    pub index_extent: U32,
    pub bloom_block_no: U32,
    pub bloom_offset: U64,
    pub bloom_extent: U32,
    pub reserved: U32,
}

pub const FOOTER_BYTES: usize = std::mem::size_of::<Footer>();
const _: () = assert!(FOOTER_BYTES == 80);

impl Footer {
    pub fn decode(payload: &[u8], table_id: u64, file_bytes: u64) -> Result<Footer, BlockError> {
        let footer = Footer::read_from_bytes(payload)
            .map_err(|_| BlockError::Malformed("footer has the wrong length"))?;
        if footer.magic != TABLE_MAGIC {
            return Err(BlockError::Malformed("footer magic is not CKVTABLE"));
        }
        if !(TABLE_FORMAT_VERSION_MIN..=TABLE_FORMAT_VERSION).contains(&footer.format_version.get())
        {
            return Err(BlockError::Malformed("unsupported table format version"));
        }
        if footer.table_id.get() != table_id {
            return Err(BlockError::Malformed("footer names another table"));
        }
        let body_end = file_bytes.saturating_sub(FOOTER_EXTENT as u64);
        for (off, ext) in [
            (footer.index_offset.get(), footer.index_extent.get()),
            (footer.bloom_offset.get(), footer.bloom_extent.get()),
        ] {
            if (ext as usize) < TRAILER_BYTES
                || off.checked_add(u64::from(ext)).is_none_or(|e| e > body_end)
            {
                return Err(BlockError::Malformed(
                    "index or bloom extent outside the file",
                ));
            }
        }
        Ok(footer)
    }
}

/// Where a block of `len` bytes starts when the file so far is `pos` bytes
/// long: at `pos`, unless that makes it touch more 4 KiB pages than its length
/// needs; then at the next page boundary.
pub fn place_block(pos: u64, len: usize) -> u64 {
    let page = SECTOR_BYTES as u64;
    let len = len as u64;
    let needed = len.div_ceil(page);
    let touched = (pos % page + len).div_ceil(page);
    if touched > needed {
        pos.div_ceil(page) * page
    } else {
        pos
    }
}

/// Where one data block lives, and the last key in it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub last_key: Vec<u8>,
    pub offset: u64,
    pub extent: u32,
    pub block_no: u32,
}

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Default, PartialEq, Eq,
)]
pub struct TableIndex {
    pub blocks: Vec<IndexEntry>,
}

pub fn encode_index(index: &TableIndex) -> Vec<u8> {
    match rkyv::to_bytes::<rancor::Error>(index) {
        Ok(bytes) => bytes.to_vec(),
        // Serializing owned vectors into memory cannot fail short of OOM.
        Err(e) => panic!("index serialization failed: {e}"),
    }
}

/// Validate an index payload (which must be 16-byte aligned) and view it in place.
pub fn access_index(payload: &[u8]) -> Result<&ArchivedTableIndex, BlockError> {
    let index = rkyv::access::<ArchivedTableIndex, rancor::Error>(payload)
        .map_err(|_| BlockError::Malformed("index archive failed validation"))?;
    let mut prev_end = 0u64;
    for (i, b) in index.blocks.iter().enumerate() {
        let (off, ext) = (b.offset.to_native(), b.extent.to_native());
        if off < prev_end || (ext as usize) < TRAILER_BYTES || b.block_no.to_native() as usize != i
        {
            return Err(BlockError::Malformed("index entries out of order"));
        }
        // A corrupt offset near u64::MAX must not wrap into a valid-looking end
        // (found by fuzzing: fuzz/regressions/table/).
        prev_end = off
            .checked_add(u64::from(ext))
            .ok_or(BlockError::Malformed("index entry ends past any file"))?;
    }
    Ok(index)
}

/// The first block that may hold `key` (its last key is >= key), if any.
pub fn find_block(index: &ArchivedTableIndex, key: &[u8]) -> Option<usize> {
    let i = index
        .blocks
        .as_slice()
        .partition_point(|b| b.last_key.as_slice() < key);
    (i < index.blocks.len()).then_some(i)
}

/// An in-memory search aid over one table's index: for each block, the 8 bytes
/// of its last key that follow the prefix every last key shares, as a
/// big-endian integer. A point read's binary search then runs over one dense
/// array of integers (0.8 MB for 100,000 blocks) instead of chasing a relative
/// pointer and calling `memcmp` per probe across the archived index; with a
/// table much larger than the CPU cache the plain search was ~17 % of a cold
/// read's CPU. Keys whose 8 bytes tie are settled by the full comparison, so
/// the answer is always `find_block`'s.
///
/// Why it is exact: with keys padded by zero bytes, `fence(x) < fence(y)`
/// implies `x < y` (the first differing byte is a real byte of `y`), and the
/// same for `>`; only equal fences need the full keys.
#[derive(Debug, Default)]
pub struct BlockFinder {
    /// Length of the prefix every block's last key shares.
    shared: usize,
    fences: Vec<u64>,
}

impl BlockFinder {
    /// Fails if the last keys do not strictly ascend: the search (and the
    /// shared-prefix shortcut) would give wrong blocks, silently.
    pub fn new(index: &ArchivedTableIndex) -> Result<BlockFinder, BlockError> {
        let keys = index.blocks.as_slice();
        if keys
            .windows(2)
            .any(|w| w[0].last_key.as_slice() >= w[1].last_key.as_slice())
        {
            return Err(BlockError::Malformed("index keys do not ascend"));
        }
        let shared = match (keys.first(), keys.last()) {
            // Sorted keys: the first and last share what all of them share.
            (Some(a), Some(b)) => common_prefix(a.last_key.as_slice(), b.last_key.as_slice()),
            _ => 0,
        };
        let fences = keys
            .iter()
            .map(|b| fence(b.last_key.as_slice(), shared))
            .collect();
        Ok(BlockFinder { shared, fences })
    }

    /// Memory the fences take (reported with the table's pinned bytes).
    pub fn heap_bytes(&self) -> usize {
        self.fences.capacity() * std::mem::size_of::<u64>()
    }

    /// The first block that may hold `key`: exactly [`find_block`]'s answer.
    pub fn find(&self, index: &ArchivedTableIndex, key: &[u8]) -> Option<usize> {
        let blocks = index.blocks.as_slice();
        assert_eq!(
            blocks.len(),
            self.fences.len(),
            "finder built for another index"
        );
        let first = blocks.first()?;
        let prefix = &first.last_key.as_slice()[..self.shared];
        let (lo, hi) = match key.get(..self.shared) {
            Some(p) if p == prefix => {
                let f = fence(key, self.shared);
                let lo = self.fences.partition_point(|&x| x < f);
                let ties = self.fences[lo..].partition_point(|&x| x == f);
                (lo, lo + ties)
            }
            // Outside the shared prefix: before every block or after all.
            _ if key < prefix => return Some(0),
            _ => return None,
        };
        let i = lo + blocks[lo..hi].partition_point(|b| b.last_key.as_slice() < key);
        debug_assert_eq!(
            Some(i).filter(|&i| i < blocks.len()),
            find_block(index, key)
        );
        (i < blocks.len()).then_some(i)
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The 8 bytes of `key` after `skip`, zero-padded, as a big-endian integer.
fn fence(key: &[u8], skip: usize) -> u64 {
    let mut bytes = [0u8; 8];
    let tail = key.get(skip..).unwrap_or_default();
    let n = tail.len().min(8);
    bytes[..n].copy_from_slice(&tail[..n]);
    u64::from_be_bytes(bytes)
}

fn bloom_hashes(key: &[u8]) -> (u64, u64) {
    let h = xxhash_rust::xxh3::xxh3_64(key);
    // Kirsch–Mitzenmacher: two hashes stand in for k.
    (h, h.rotate_left(32) | 1)
}

/// Builds a bloom filter from every key of a table.
#[derive(Default)]
pub struct BloomBuilder {
    hashes: Vec<(u64, u64)>,
}

impl BloomBuilder {
    pub fn add(&mut self, key: &[u8]) {
        self.hashes.push(bloom_hashes(key));
    }

    pub fn finish(&self) -> Vec<u8> {
        let bits = (self.hashes.len() * BLOOM_BITS_PER_KEY).max(64) as u64;
        let mut out = Vec::with_capacity(16 + bits.div_ceil(8) as usize);
        out.extend_from_slice(&bits.to_le_bytes());
        out.extend_from_slice(&BLOOM_HASHES.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.resize(16 + bits.div_ceil(8) as usize, 0);
        let array = &mut out[16..];
        for &(h1, h2) in &self.hashes {
            for i in 0..u64::from(BLOOM_HASHES) {
                let bit = h1.wrapping_add(i.wrapping_mul(h2)) % bits;
                array[(bit / 8) as usize] |= 1 << (bit % 8);
            }
        }
        out
    }
}

/// A checked view of a bloom block's payload.
#[derive(Clone, Copy)]
pub struct Bloom<'a> {
    bits: u64,
    k: u32,
    array: &'a [u8],
}

impl<'a> Bloom<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Bloom<'a>, BlockError> {
        if payload.len() < 16 {
            return Err(BlockError::Malformed("bloom header truncated"));
        }
        let bits = u64::from_le_bytes(payload[0..8].try_into().unwrap_or([0; 8]));
        let k = u32::from_le_bytes(payload[8..12].try_into().unwrap_or([0; 4]));
        let array = &payload[16..];
        if bits == 0 || bits.div_ceil(8) != array.len() as u64 || k == 0 || k > 30 {
            return Err(BlockError::Malformed("bloom sizes disagree"));
        }
        Ok(Bloom { bits, k, array })
    }

    /// False means the key is certainly not in the table.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        let (h1, h2) = bloom_hashes(key);
        (0..u64::from(self.k)).all(|i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % self.bits;
            self.array[(bit / 8) as usize] & (1 << (bit % 8)) != 0
        })
    }
}

/// A bloom filter payload that [`Bloom::parse`] accepted, owned: reading it
/// again ([`OwnedBloom::filter`]) cannot fail.
#[derive(Debug, Clone)]
pub struct OwnedBloom {
    payload: Vec<u8>,
    bits: u64,
    k: u32,
}

impl OwnedBloom {
    /// Parse `payload` and keep a copy.
    pub fn parse(payload: &[u8]) -> Result<OwnedBloom, BlockError> {
        let Bloom { bits, k, .. } = Bloom::parse(payload)?;
        Ok(OwnedBloom {
            payload: payload.to_vec(),
            bits,
            k,
        })
    }

    pub fn filter(&self) -> Bloom<'_> {
        Bloom {
            bits: self.bits,
            k: self.k,
            // `parse` checked that the payload has its 16-byte header.
            array: self.payload.get(16..).unwrap_or_default(),
        }
    }

    /// Bytes of the payload held.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bloom_has_no_false_negatives_and_about_one_percent_false_positives() {
        let mut b = BloomBuilder::default();
        for i in 0..10_000u32 {
            b.add(format!("key{i}").as_bytes());
        }
        let bytes = b.finish();
        let bloom = Bloom::parse(&bytes).unwrap();
        for i in 0..10_000u32 {
            assert!(bloom.may_contain(format!("key{i}").as_bytes()));
        }
        let fp = (0..100_000u32)
            .filter(|i| bloom.may_contain(format!("other{i}").as_bytes()))
            .count();
        assert!(fp < 1_500, "false positive rate {}%", fp as f64 / 1000.0);
    }

    #[test]
    fn index_round_trip_and_search() {
        assert_eq!(place_block(0, 4072), 0);
        assert_eq!(
            place_block(4072, 4072),
            4096,
            "a small block never straddles"
        );
        assert_eq!(place_block(4143, 4143), 4143, "a 2-page block packs");
        assert_eq!(place_block(4090, 4143), 4096);
        let index = TableIndex {
            blocks: (0..10u32)
                .map(|i| IndexEntry {
                    last_key: format!("k{:02}", i * 10 + 9).into_bytes(),
                    offset: u64::from(i) * 4096,
                    extent: 4096,
                    block_no: i,
                })
                .collect(),
        };
        let bytes = encode_index(&index);
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&bytes);
        let a = access_index(&aligned).unwrap();
        assert_eq!(a.blocks.len(), 10);
        assert_eq!(find_block(a, b"k00"), Some(0));
        assert_eq!(find_block(a, b"k09"), Some(0));
        assert_eq!(find_block(a, b"k10"), Some(1));
        assert_eq!(find_block(a, b"k99"), Some(9));
        assert_eq!(find_block(a, b"zz"), None);
        let mut junk = aligned.clone();
        let n = junk.len();
        junk[n - 3] ^= 0xff;
        // Either validation fails or the view is still structurally sound.
        let _ = access_index(&junk);
    }

    fn archived(last_keys: &[Vec<u8>]) -> rkyv::util::AlignedVec<16> {
        let index = TableIndex {
            blocks: last_keys
                .iter()
                .enumerate()
                .map(|(i, k)| IndexEntry {
                    last_key: k.clone(),
                    offset: i as u64 * 4096,
                    extent: 4096,
                    block_no: i as u32,
                })
                .collect(),
        };
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&encode_index(&index));
        aligned
    }

    proptest::proptest! {
        /// The fence search gives the plain binary search's block for every
        /// probe: keys with a long shared prefix, ties in the 8 fence bytes,
        /// keys shorter than the prefix, empty keys, probes outside the range.
        #[test]
        fn block_finder_agrees_with_the_plain_search(
            prefix in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            tails in proptest::collection::btree_set(
                proptest::collection::vec(0u8..4, 0..12), 0..40),
            probes in proptest::collection::vec(
                (proptest::prelude::any::<bool>(), proptest::collection::vec(0u8..5, 0..14)), 1..40),
        ) {
            let keys: Vec<Vec<u8>> = tails.iter().map(|t| [&prefix[..], t].concat()).collect();
            let aligned = archived(&keys);
            let index = access_index(&aligned).unwrap();
            let finder = BlockFinder::new(index).unwrap();
            for (under_prefix, tail) in probes {
                let probe = if under_prefix { [&prefix[..], &tail[..]].concat() } else { tail };
                proptest::prop_assert_eq!(
                    finder.find(index, &probe),
                    find_block(index, &probe),
                    "probe {:?} over {:?}", probe, keys
                );
            }
        }
    }

    #[test]
    fn block_finder_settles_fence_ties_with_the_full_key() {
        // Same 8 bytes after the shared "user", different after them.
        let keys: Vec<Vec<u8>> = ["user00000000a", "user00000000b", "user00000000c", "user1"]
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        let aligned = archived(&keys);
        let index = access_index(&aligned).unwrap();
        let finder = BlockFinder::new(index).unwrap();
        assert_eq!(finder.find(index, b"user00000000b"), Some(1));
        assert_eq!(finder.find(index, b"user00000000bb"), Some(2));
        assert_eq!(finder.find(index, b"user0000"), Some(0));
        assert_eq!(finder.find(index, b"use"), Some(0));
        assert_eq!(finder.find(index, b"user2"), None);
        assert_eq!(finder.find(index, b"v"), None);
    }
}
