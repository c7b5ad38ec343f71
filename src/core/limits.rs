//! Hard limits and the compile-time relations between them.
//!
//! Every length that arrives from a client or a disk is bounded by one of these
//! constants before anything is allocated for it.

/// Largest key accepted anywhere (wire, WAL, tables).
pub const KEY_BYTES_MAX: usize = 64 * 1024;

/// Default largest value; configurable up to [`VALUE_BYTES_CEILING`].
pub const VALUE_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;

/// No configuration may raise the value limit past this.
pub const VALUE_BYTES_CEILING: usize = 256 * 1024 * 1024;

/// Alignment of every O_DIRECT offset, length and buffer. The logical block of
/// common devices is 512 B, but their physical sector is 4 KiB: sub-4K writes cost
/// a read-modify-write below us, so we align to 4 KiB everywhere.
pub const SECTOR_BYTES: usize = 4096;

/// Most shards a data directory may have (the wire protocol carries u16).
pub const SHARDS_MAX: usize = 1024;

/// Default WAL segment size.
pub const WAL_SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Smallest WAL segment a configuration may ask for.
pub const WAL_SEGMENT_BYTES_MIN: u64 = 1024 * 1024;

/// A group-commit batch stops growing past this many payload bytes; further
/// writers go into the next batch. One record larger than this still gets a batch
/// of its own.
pub const WAL_BATCH_BYTES_TARGET: usize = 1024 * 1024;

const _: () = assert!(KEY_BYTES_MAX < u32::MAX as usize);
const _: () = assert!(VALUE_BYTES_CEILING < u32::MAX as usize / 2);
const _: () = assert!(VALUE_BYTES_MAX_DEFAULT <= VALUE_BYTES_CEILING);
const _: () = assert!(SECTOR_BYTES.is_power_of_two());
const _: () = assert!(WAL_SEGMENT_BYTES_DEFAULT % SECTOR_BYTES as u64 == 0);
const _: () = assert!(WAL_SEGMENT_BYTES_MIN % SECTOR_BYTES as u64 == 0);
const _: () = assert!(SHARDS_MAX <= u16::MAX as usize);

/// Round `n` up to the next multiple of [`SECTOR_BYTES`].
pub const fn align_up(n: usize) -> usize {
    (n + SECTOR_BYTES - 1) & !(SECTOR_BYTES - 1)
}

/// Round `n` up to the next multiple of [`SECTOR_BYTES`].
pub const fn align_up_u64(n: u64) -> u64 {
    (n + SECTOR_BYTES as u64 - 1) & !(SECTOR_BYTES as u64 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_rounds_to_sector() {
        assert_eq!(align_up(0), 0);
        assert_eq!(align_up(1), SECTOR_BYTES);
        assert_eq!(align_up(SECTOR_BYTES), SECTOR_BYTES);
        assert_eq!(align_up(SECTOR_BYTES + 1), 2 * SECTOR_BYTES);
        assert_eq!(align_up_u64(4097), 8192);
    }
}
