//! The commands that walk the keyspace (SCAN, KEYS, DBSIZE, RANDOMKEY) and INFO
//! (its memory and persistence sections from the shards' published telemetry), and
//! Redis's glob matching for MATCH/KEYS patterns.
//!
//! Each walk is corekv's merged scan over every shard (`scan_merged`), in key
//! order. A SCAN cursor is a number to Redis clients (redis-cli parses it as
//! one), so the session maps the numbers it hands out to resume keys; a
//! pattern's literal prefix narrows the scanned range. Replies are bounded by
//! `reply_bytes_max` (a KEYS reply past it is refused; a SCAN page ends
//! early). It must never read a shard's data except through the scan.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::core::filter::FILTER_NONE;
use crate::core::limits::{RESP_CURSORS_MAX, SCAN_LIMIT_MAX};
use crate::core::scan_format::ScanRequest;
use crate::core::status::Status;
use crate::shard::metrics::OpClass;

use super::commands::{
    commands_total, parse_i64, status_error, Outcome, Run, Session, CONNECTED, CONNECTIONS_TOTAL,
    REDIS_COMPAT_VERSION, STARTED, SYNTAX,
};
use super::glob::glob_match;
use crate::net::outbound::SendError;

/// Entries one KEYS/DBSIZE step asks for (the walk pages on until done).
const WALK_PAGE: u32 = 1000;

/// Keys one RANDOMKEY reads and picks from.
const RANDOM_WINDOW: u32 = 64;

impl Session {
    /// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type].
    pub(super) async fn scan(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let cursor = std::str::from_utf8(argv[1])
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        let Some(cursor) = cursor else {
            run.reply(self.proto).error("ERR invalid cursor");
            return Ok((OpClass::Other, Status::InvalidArgument));
        };
        let (mut pattern, mut count, mut only_strings) = (&b"*"[..], 10i64, true);
        let mut i = 2;
        while i < argv.len() {
            if i + 1 >= argv.len() {
                run.reply(self.proto).error(SYNTAX);
                return Ok((OpClass::Other, Status::InvalidArgument));
            }
            let (opt, arg) = (argv[i].to_ascii_uppercase(), argv[i + 1]);
            match opt.as_slice() {
                b"MATCH" => pattern = arg,
                b"COUNT" => match parse_i64(arg) {
                    None => {
                        run.reply(self.proto).error(super::commands::NOT_INTEGER);
                        return Ok((OpClass::Other, Status::InvalidArgument));
                    }
                    Some(n) if n < 1 => {
                        run.reply(self.proto).error(SYNTAX);
                        return Ok((OpClass::Other, Status::InvalidArgument));
                    }
                    Some(n) => count = n,
                },
                // Every corekv key holds a string.
                b"TYPE" => only_strings = arg.eq_ignore_ascii_case(b"string"),
                _ => {
                    run.reply(self.proto).error(SYNTAX);
                    return Ok((OpClass::Other, Status::InvalidArgument));
                }
            }
            i += 2;
        }
        let from = if cursor == 0 {
            Vec::new()
        } else {
            match self.cursors.iter().find(|(n, _)| *n == cursor) {
                Some((_, k)) => k.clone(),
                // An unknown cursor (from another connection, or forgotten):
                // the iteration is over, as far as this connection can tell.
                None => {
                    let mut r = run.reply(self.proto);
                    r.array(2);
                    r.bulk(b"0");
                    r.array(0);
                    return Ok((OpClass::Other, Status::Ok));
                }
            }
        };
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut next = None;
        if only_strings {
            let limit = count.min(i64::from(SCAN_LIMIT_MAX)) as u32;
            let budget = run.cfg.reply_bytes_max;
            let mut bytes = 0usize;
            match walk(run, pattern, &from, limit, |k| {
                if bytes + k.len() > budget && !keys.is_empty() {
                    return false;
                }
                bytes += k.len() + 16;
                keys.push(k.to_vec());
                true
            })
            .await
            {
                Ok(n) => next = n,
                Err(s) => {
                    run.reply(self.proto).error(&status_error(s));
                    return Ok((OpClass::Other, s));
                }
            }
        }
        let number = match next {
            None => 0,
            Some(k) => {
                let n = self.next_cursor;
                self.next_cursor += 1;
                if self.cursors.len() >= RESP_CURSORS_MAX {
                    self.cursors.pop_front();
                }
                self.cursors.push_back((n, k));
                n
            }
        };
        let mut r = run.reply(self.proto);
        r.array(2);
        r.bulk(number.to_string().as_bytes());
        r.array(keys.len());
        for k in &keys {
            r.bulk(k);
        }
        Ok((OpClass::Other, Status::Ok))
    }

    pub(super) async fn keys(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let pattern = run.argv[1];
        let budget = run.cfg.reply_bytes_max;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0usize;
        let mut from = Vec::new();
        let mut too_large = false;
        loop {
            let step = walk(run, pattern, &from, WALK_PAGE, |k| {
                bytes += k.len() + 16;
                if bytes > budget {
                    too_large = true;
                    return false;
                }
                keys.push(k.to_vec());
                true
            })
            .await;
            match step {
                Err(s) => {
                    run.reply(self.proto).error(&status_error(s));
                    return Ok((OpClass::Other, s));
                }
                Ok(_) if too_large => {
                    let e = format!(
                        "REPLY_TOO_LARGE the KEYS reply would pass the reply limit of {budget} bytes (reply_bytes_max): use SCAN"
                    );
                    run.reply(self.proto).error(&e);
                    return Ok((OpClass::Other, Status::ReplyTooLarge));
                }
                Ok(None) => break,
                Ok(Some(next)) => from = next,
            }
        }
        let mut r = run.reply(self.proto);
        r.array(keys.len());
        for k in &keys {
            r.bulk(k);
        }
        Ok((OpClass::Other, Status::Ok))
    }

    /// FLUSHDB / FLUSHALL [ASYNC|SYNC]: every key deleted, a page at a time
    /// (a scan of `WALK_PAGE` keys, then one routed delete batch: one
    /// message per shard). Not atomic: a key written meanwhile behind the
    /// scan survives, and readers see the keyspace emptied progressively
    /// (docs/redis-compatibility.md). ASYNC and SYNC both answer when done.
    pub(super) async fn flush(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let ok_opt = |a: &[u8]| a.eq_ignore_ascii_case(b"async") || a.eq_ignore_ascii_case(b"sync");
        if argv.len() > 2 || argv.get(1).is_some_and(|a| !ok_opt(a)) {
            run.reply(self.proto).error(SYNTAX);
            return Ok((OpClass::Delete, Status::InvalidArgument));
        }
        let ctx = run.ctx;
        let mut from: Vec<u8> = Vec::new();
        loop {
            let mut keys: Vec<Vec<u8>> = Vec::new();
            let request = ScanRequest {
                start: &from,
                end: b"",
                limit: WALK_PAGE,
                filter_kind: FILTER_NONE,
                filter_arg: b"",
            };
            let next = match ctx
                .scan_merged(&request, 2, |k, _| {
                    keys.push(k.to_vec());
                    true
                })
                .await
            {
                Ok(next) => next,
                Err(s) => {
                    run.reply(self.proto).error(&status_error(s));
                    return Ok((OpClass::Delete, s));
                }
            };
            self.batch.clear();
            for k in &keys {
                self.batch
                    .push(ctx.router.shard_of(k), crate::shard::OpKind::Delete, k, b"");
            }
            ctx.router.execute(&mut self.batch).await;
            for s in 0..ctx.shard_count() {
                let replies = self.batch.replies(crate::core::types::ShardId(s));
                for i in 0..replies.len() {
                    let (status, _) = replies.get(i);
                    if !matches!(status, Status::Ok | Status::NotFound) {
                        run.reply(self.proto).error(&status_error(status));
                        return Ok((OpClass::Delete, status));
                    }
                }
            }
            match next {
                Some(k) => from = k,
                None => break,
            }
        }
        run.reply(self.proto).simple("OK");
        Ok((OpClass::Delete, Status::Ok))
    }

    pub(super) async fn dbsize(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        match count_keys(run).await {
            Ok(n) => run.reply(self.proto).int(n as i64),
            Err(s) => run.reply(self.proto).error(&status_error(s)),
        }
        Ok((OpClass::Other, Status::Ok))
    }

    /// RANDOMKEY: a key picked uniformly from a window of up to
    /// `RANDOM_WINDOW` keys that starts at a random point of the key space
    /// (wrapping to the first key). The point is the first key's prefix, cut
    /// at a random length, then random bytes, so keys that share a prefix
    /// (`user:...`) are not all skipped. A key space of up to
    /// `RANDOM_WINDOW` keys is sampled uniformly; a larger one is not: a
    /// window after a wide gap in the key order comes up more often
    /// (Redis's pick is not uniform either: it samples hash buckets).
    pub(super) async fn randomkey(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let mut window: Vec<Vec<u8>> = Vec::new();
        let mut failed = None;
        let mut first: Option<Vec<u8>> = None;
        if let Err(s) = walk(run, b"*", b"", 1, |k| {
            first = Some(k.to_vec());
            false
        })
        .await
        {
            failed = Some(s);
        }
        if let Some(first) = first.filter(|_| failed.is_none()) {
            let cut = rand::random::<usize>() % (first.len() + 1);
            let mut start = first[..cut].to_vec();
            start.extend_from_slice(&rand::random::<[u8; 8]>());
            for from in [&start[..], &first[..]] {
                let r = walk(run, b"*", from, RANDOM_WINDOW, |k| {
                    window.push(k.to_vec());
                    window.len() < RANDOM_WINDOW as usize
                })
                .await;
                if let Err(s) = r {
                    failed = Some(s);
                    break;
                }
                if !window.is_empty() {
                    break;
                }
            }
        }
        if let Some(s) = failed {
            run.reply(self.proto).error(&status_error(s));
            return Ok((OpClass::Other, s));
        }
        let mut r = run.reply(self.proto);
        if window.is_empty() {
            r.nil();
        } else {
            r.bulk(&window[rand::random::<usize>() % window.len()]);
        }
        Ok((OpClass::Other, Status::Ok))
    }

    /// INFO [section ...]: server, clients, stats, keyspace (Redis's format:
    /// `# Section` headers, `field:value` lines, CRLF).
    pub(super) async fn info(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let wanted: Vec<String> = run.argv[1..]
            .iter()
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
            .collect();
        let all = wanted.is_empty()
            || wanted
                .iter()
                .any(|w| w == "all" || w == "default" || w == "everything");
        let want = |s: &str| all || wanted.iter().any(|w| w == s);
        let mut text = String::new();
        if want("server") {
            let up = STARTED.get().map_or(0, |t| t.elapsed().as_secs());
            let port = self.local.map_or(0, |a| a.port());
            let _ = write!(
                text,
                "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\ncorekv_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nmultiplexing_api:io_uring\r\nprocess_id:{}\r\ntcp_port:{port}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::process::id(),
                up / 86_400
            );
        }
        if want("clients") {
            let _ = write!(
                text,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
                CONNECTED.load(Ordering::Relaxed),
                self.maxclients
            );
        }
        // One copy of the shards' published telemetry for both sections.
        let view = (want("memory") || want("persistence"))
            .then(|| run.cfg.telemetry.as_ref().map(|t| t.view()))
            .flatten();
        if want("memory") {
            let rss = crate::net::admin::process_rss_bytes();
            let (mut memtables, mut cache) = (0u64, 0u64);
            for s in view.iter().flat_map(|v| &v.shards) {
                memtables += s.storage.memtable_bytes + s.storage.frozen_bytes;
                cache += s.storage.cache_capacity_bytes;
            }
            // Redis's used_memory is its allocator's count; corekv's is the
            // process's resident set (what the kernel charges it), so both
            // fields say the same. maxmemory 0 / noeviction: corekv never
            // evicts, its data lives on disk beyond the caches.
            let _ = write!(
                text,
                "# Memory\r\nused_memory:{rss}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\nmaxmemory_policy:noeviction\r\ncorekv_memtable_bytes:{memtables}\r\ncorekv_block_cache_capacity_bytes:{cache}\r\n\r\n",
                human_bytes(rss),
                human_bytes(rss),
            );
        }
        if want("persistence") {
            let status = view.as_ref().map_or("serving", |v| v.status());
            let loading = u8::from(status == "starting");
            // A shard whose WAL failed refuses writes (read-only): the
            // closest Redis field is the AOF's last write status.
            let write_ok = if matches!(status, "degraded" | "failed") {
                "err"
            } else {
                "ok"
            };
            let durability = match run.ctx.durability {
                crate::core::types::Durability::Sync => "sync",
                crate::core::types::Durability::Async => "async",
            };
            let (mut wal_bytes, mut durable_lsn) = (0u64, 0u64);
            for s in view.iter().flat_map(|v| &v.shards) {
                wal_bytes += s.wal_bytes;
                durable_lsn += s.durable_lsn;
            }
            let _ = write!(
                text,
                "# Persistence\r\nloading:{loading}\r\nasync_loading:0\r\nrdb_changes_since_last_save:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_bgsave_status:ok\r\naof_enabled:1\r\naof_rewrite_in_progress:0\r\naof_last_bgrewrite_status:ok\r\naof_last_write_status:{write_ok}\r\ncorekv_status:{status}\r\ncorekv_durability:{durability}\r\ncorekv_wal_bytes_written:{wal_bytes}\r\ncorekv_durable_lsn_sum:{durable_lsn}\r\n\r\n"
            );
        }
        if want("stats") {
            let _ = write!(
                text,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\r\n",
                CONNECTIONS_TOTAL.load(Ordering::Relaxed),
                commands_total()
            );
        }
        if want("keyspace") {
            text.push_str("# Keyspace\r\n");
            match count_keys(run).await {
                Ok(0) => {}
                Ok(n) => {
                    let _ = write!(text, "db0:keys={n},expires=0,avg_ttl=0\r\n");
                }
                Err(s) => {
                    run.reply(self.proto).error(&status_error(s));
                    return Ok((OpClass::Other, s));
                }
            }
            text.push_str("\r\n");
        }
        // Redis ends the text without the last section's blank line.
        while text.ends_with("\r\n\r\n") {
            text.truncate(text.len() - 2);
        }
        run.reply(self.proto).verbatim(&text);
        Ok((OpClass::Other, Status::Ok))
    }
}

/// Every key, counted by walking the keyspace.
async fn count_keys(run: &mut Run<'_, '_>) -> Result<u64, Status> {
    let mut n = 0u64;
    let mut from = Vec::new();
    loop {
        match walk(run, b"*", &from, WALK_PAGE, |_| {
            n += 1;
            true
        })
        .await?
        {
            None => return Ok(n),
            Some(next) => from = next,
        }
    }
}

/// One page of the merged scan from `from` (at least the pattern's literal
/// prefix), at most `limit` entries examined; each key matching `pattern` is
/// handed to `emit` (false: stop before it). Returns where to go on.
async fn walk(
    run: &mut Run<'_, '_>,
    pattern: &[u8],
    from: &[u8],
    limit: u32,
    mut emit: impl FnMut(&[u8]) -> bool,
) -> Result<Option<Vec<u8>>, Status> {
    let prefix = literal_prefix(pattern);
    let start = if from < prefix.as_slice() {
        prefix.as_slice()
    } else {
        from
    };
    let end = successor(&prefix);
    let request = ScanRequest {
        start,
        end: &end,
        limit,
        filter_kind: FILTER_NONE,
        filter_arg: b"",
    };
    let whole = pattern == b"*";
    run.ctx
        .scan_merged(&request, 2, |k, _| {
            if whole || glob_match(pattern, k) {
                emit(k)
            } else {
                true
            }
        })
        .await
}

/// The bytes every key matching `pattern` starts with.
fn literal_prefix(pattern: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' | b'?' | b'[' => break,
            b'\\' if i + 1 < pattern.len() => {
                out.push(pattern[i + 1]);
                i += 2;
            }
            b'\\' => break,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The first key past every key starting with `prefix` (empty: no bound).
fn successor(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// Redis's `_human` form of a byte count (`1.50M`).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"a\\*b?"), b"a*b");
        assert_eq!(successor(b"ab"), b"ac");
        assert_eq!(successor(b"a\xff"), b"b");
        assert_eq!(successor(b""), b"");
    }
}
