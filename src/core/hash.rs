//! The stable key→shard mapping.
//!
//! `shard = jump_consistent_hash(xxh3_64(key, seed 0), shard_count)`.
//!
//! Both functions are public, well specified algorithms (XXH3-64 from the xxHash
//! project; Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm",
//! 2014), so a client in any language can compute the owner of a key. This mapping
//! is part of the on-disk format: changing it would misroute every existing key,
//! which is why the shard count is recorded in the data directory.

use super::types::ShardId;

/// XXH3 64-bit with seed 0.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Jump consistent hash of `hash` into `buckets` buckets.
pub fn jump_consistent_hash(mut hash: u64, buckets: u32) -> u32 {
    assert!(buckets > 0, "jump hash needs at least one bucket");
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        hash = hash.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let divisor = ((hash >> 33) + 1) as f64;
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / divisor)) as i64;
    }
    debug_assert!(b >= 0 && b < i64::from(buckets));
    b as u32
}

/// Which shard owns `key` when there are `shard_count` shards.
pub fn shard_for_key(key: &[u8], shard_count: u16) -> ShardId {
    let s = jump_consistent_hash(key_hash(key), u32::from(shard_count));
    ShardId(s as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh3_reference_values() {
        // Values from the xxHash reference implementation (XXH3_64bits, seed 0).
        assert_eq!(key_hash(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(key_hash(b"a"), 0xE6C6_32B6_1E96_4E1F);
    }

    #[test]
    fn jump_hash_reference_values() {
        // Test vectors published with the Go port of the paper (dgryski/go-jump).
        assert_eq!(jump_consistent_hash(1, 1), 0);
        assert_eq!(jump_consistent_hash(0xDEAD_10CC, 1), 0);
        assert_eq!(jump_consistent_hash(0xDEAD_10CC, 666), 361);
        assert_eq!(jump_consistent_hash(42, 57), 43);
        assert_eq!(jump_consistent_hash(256, 1024), 520);
    }

    #[test]
    fn spreads_evenly() {
        let shards = 4u16;
        let mut counts = [0u32; 4];
        for i in 0..40_000u32 {
            let key = format!("key:{i:012}");
            counts[shard_for_key(key.as_bytes(), shards).index()] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn growing_moves_only_a_fraction() {
        let mut moved = 0;
        for i in 0..10_000u32 {
            let key = i.to_le_bytes();
            if shard_for_key(&key, 8) != shard_for_key(&key, 9) {
                moved += 1;
            }
        }
        // Ideal is 1/9 of the keys.
        assert!(moved < 1_400, "moved {moved}");
    }
}
