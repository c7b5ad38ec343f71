//! Every hard limit and budget of the engine, each with the reason for its
//! value, and the compile-time relations between them.
//!
//! Every length that arrives from a client or a disk is bounded by one of these
//! constants before anything is allocated for it; every per-request or
//! per-shard budget that bounds memory or the time one request may hold a core
//! is here too, so a reader finds all the numbers in one place. Operator
//! settings (`corekv serve` flags) are not here: their table is
//! src/cmd/settings.rs; this module only holds the defaults some of them share
//! with the library. Pure constants: no I/O, no state, and nothing here may
//! depend on a higher layer.

/// Largest key accepted anywhere (wire, WAL, tables).
pub const KEY_BYTES_MAX: usize = 64 * 1024;

/// Default largest value; configurable up to [`VALUE_BYTES_CEILING`].
pub const VALUE_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;

/// No configuration may raise the value limit past this.
pub const VALUE_BYTES_CEILING: usize = 256 * 1024 * 1024;

/// Alignment of every O_DIRECT write (offset, length and buffer) and of every
/// buffer. The logical block of common devices is 512 B, but their physical
/// sector is 4 KiB: a sub-4K write costs a read-modify-write below us, so
/// writes are 4 KiB aligned. Reads are not: they need only the device's
/// logical block (`Disk::read_alignment`, 512 B on most devices, see
/// io/dma_disk.rs), which makes a small value's block one 4.5 KiB read
/// instead of an 8 KiB one.
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

/// Most conditions plus writes one TXN (or pairs one MPUT) may carry: a
/// transaction holds a lock per key until it commits, and its decoded form is
/// allocated up front, so the count is bounded before any of it is.
pub const TXN_OPS_MAX: u32 = 10_000;

/// Longest BACKUP target path: Linux PATH_MAX, the longest path open(2) takes.
pub const BACKUP_PATH_BYTES_MAX: usize = 4096;

/// Most keys one MGET may carry: bounds the key list decoded before the reply
/// size (`reply_bytes_max`) can be checked, and the fan-out to shards.
pub const MGET_KEYS_MAX: u32 = 10_000;

/// Most entries one SCAN request may ask for: bounds one page's entry list
/// whatever the reply byte limit (many tiny entries).
pub const SCAN_LIMIT_MAX: u32 = 10_000;

/// A shard's SCAN page stops growing past this many bytes (one entry always
/// fits), so one page never holds the core or a reply buffer for long.
pub const SCAN_REPLY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A shard examines at most this many records per SCAN request before
/// returning a resume point, bounding the time a selective filter can hold the
/// core (about 10 ms of merging).
pub const SCAN_EXAMINED_MAX: usize = 100_000;

/// At most this many requests go into one connection's batch, so one
/// connection cannot hold a shard for long and responses start flowing early.
pub const BATCH_REQUESTS_MAX: usize = 1024;

/// Past this many request bytes, a connection's batch is closed (same reason:
/// a few large PUTs must not hold the shard like a thousand small ones).
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most arguments one RESP command may carry (the `*<n>` of a multibulk).
/// Its argument list is grown as arguments arrive, never allocated from the
/// declared count; the bound rejects a hostile count at once instead of after
/// gigabytes. An MSET of `TXN_OPS_MAX` pairs needs `2 * TXN_OPS_MAX + 1`.
pub const RESP_ARGS_MAX: usize = 2 * TXN_OPS_MAX as usize + 1;

/// Longest inline RESP command line (Redis's PROTO_INLINE_MAX_SIZE): a line
/// with no newline past this is refused, so a client sending bytes without a
/// newline cannot grow the receive buffer.
pub const RESP_INLINE_BYTES_MAX: usize = 64 * 1024;

/// Most SCAN/KEYS cursors one RESP connection keeps (a Redis cursor is a
/// number, corekv's resume point is a key: the connection maps one to the
/// other). The oldest is forgotten first.
pub const RESP_CURSORS_MAX: usize = 64;

/// Most commands one RESP MULTI may queue, and most bytes of arguments they
/// may hold (a queue is kept per connection until EXEC, outside the buffer
/// budget, so both are bounded). Past either, the command is refused and
/// the EXEC aborts.
pub const RESP_MULTI_COMMANDS_MAX: usize = 10_000;
pub const RESP_MULTI_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Most keys one RESP connection may WATCH at a time (EXEC reads them all
/// in one snapshot, at most `MGET_KEYS_MAX` keys).
pub const RESP_WATCH_KEYS_MAX: usize = 1_000;

/// A round's reply room that needs no share of the shard's connection buffer
/// budget: a well-behaved connection always makes progress in rounds of this
/// size even when other connections hold the whole budget (issue 17).
pub const REPLY_BASE_BYTES: usize = 64 * 1024;

/// Default outbound buffer (reply round) per connection (`reply_buffer_bytes`):
/// large enough that a pipeline of 4 KiB GETs needs few rounds.
pub const REPLY_BUFFER_BYTES_DEFAULT: usize = 2 * 1024 * 1024;

/// Default largest MGET reply / SCAN page body (`reply_bytes_max`): four
/// default-sized largest values.
pub const REPLY_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;

/// Default time a client may leave its replies unread before it is closed
/// (`reply_stall_timeout_ms`): matches the frame timeout.
pub const REPLY_STALL_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// Default connections one source address may hold across the whole server
/// (`connections_per_source_max`; 0 turns the limit off). Generous for one
/// application host (pools are tens to hundreds of connections), small next
/// to what the server accepts in all (`connections_per_shard_max`, 10,000,
/// times the shards): one runaway or hostile host cannot take every place.
/// Deployments where many clients share one address (a proxy, NAT) raise it
/// or set 0.
pub const CONNECTIONS_PER_SOURCE_MAX_DEFAULT: u32 = 1_000;

/// Default per-shard budget for connection buffers
/// (`conn_buffer_budget_bytes`): 128 default reply buffers.
pub const CONN_BUFFER_BUDGET_DEFAULT: usize = 256 * 1024 * 1024;

/// Most neighbouring blocks one prefetch request reads (128 KiB of 4 KiB
/// blocks): enough to make a sequential SCAN one large read, small enough not
/// to evict the cache for a short one.
pub const PREFETCH_SPAN_BLOCKS: usize = 32;

/// Most bytes one prefetch request reads (large values make large blocks).
pub const PREFETCH_SPAN_BYTES: usize = 256 * 1024;

/// Level 0 may hold up to this many times `l0_trigger` tables; past that,
/// flushes wait for compaction, memtables fill, and writes get OVERLOADED
/// (RocksDB's level0_stop_writes_trigger plays this role, at 9x).
pub const L0_STOP_FACTOR: usize = 3;

/// Pending (written, not yet synced) WAL bytes a shard allows before it
/// answers OVERLOADED: this many largest values ...
pub const WAL_PENDING_VALUES: usize = 4;

/// ... but never less than this, so small values can keep a deep pipeline.
pub const WAL_PENDING_BYTES_MIN: usize = 64 * 1024 * 1024;

/// A group-commit batch is cut at this many bytes or a quarter of a WAL
/// segment, whichever is smaller, so a segment holds several batches; a record
/// larger than this still forms one batch, which config validation proves fits
/// a segment.
pub const WAL_BATCH_BYTES_CAP: usize = 8 * 1024 * 1024;

const _: () = assert!(KEY_BYTES_MAX < u32::MAX as usize);
const _: () = assert!(WAL_BATCH_BYTES_TARGET <= WAL_BATCH_BYTES_CAP);
const _: () = assert!(REPLY_BASE_BYTES <= REPLY_BUFFER_BYTES_DEFAULT);
const _: () = assert!(2 * REPLY_BUFFER_BYTES_DEFAULT <= CONN_BUFFER_BUDGET_DEFAULT);
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

/// `park_policy = "balanced"` (the default): microseconds an idle shard spins
/// before sleeping. Chosen from perf/spin_sweep.sh (docs/performance.md).
pub const PARK_SPIN_BALANCED_US: u64 = 50;
/// `park_policy = "latency-first"`: microseconds an idle shard spins before
/// sleeping, for shard CPUs that do nothing else.
pub const PARK_SPIN_LATENCY_FIRST_US: u64 = 2_000;

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
