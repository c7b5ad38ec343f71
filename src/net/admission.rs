//! Whether an accepted connection may stay, and the count of everything the
//! server refuses.
//!
//! It owns two process-wide pieces of state, the only ones the network layer
//! shares between shards:
//! - [`SourceLimits`]: how many connections each source address holds now,
//!   across every shard and both client listeners (native and RESP), against
//!   `connections_per_source_max`. The kernel spreads one client's
//!   connections over the shards (SO_REUSEPORT), so a per-shard count would
//!   let a client hold `shards` times the limit. The table is touched only at
//!   accept and at close, never per request, so a small lock-striped map is
//!   cheap there; it holds one entry per source with a connection open (an
//!   entry goes when its count reaches zero), so its size is bounded by the
//!   open connections.
//! - [`Refusals`]: counters of refused connections and authentications by
//!   reason (atomics, bumped only when something is refused), exposed on
//!   `/metrics` as `corekv_refusals_total{reason}`, and the rate limit on
//!   the log lines of connection refusals (a flood of connections must not
//!   become a flood of log lines).
//!
//! [`Gate`] puts them together with a shard's own connection limit: the one
//! check both listeners of a shard make at accept.
//!
//! It must never be touched per request, never block on anything but its own
//! short critical sections, and never log more than one line per reason per
//! [`REFUSAL_LOG_INTERVAL`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lock stripes of the per-source table: connections accepted at once on
/// different shards rarely wait on each other.
const STRIPES: usize = 16;

/// Connections per source address across the whole process.
#[derive(Debug)]
pub struct SourceLimits {
    /// 0: no limit (and the table is never touched).
    max: u32,
    stripes: [Mutex<HashMap<IpAddr, u32>>; STRIPES],
}

/// A source address already holds `max` connections.
#[derive(Debug, PartialEq, Eq)]
pub struct SourceFull {
    pub max: u32,
}

/// One connection's place in the per-source count; dropping it (when the
/// connection ends, however it ends) gives the place back.
#[derive(Debug)]
pub struct SourceSlot {
    held: Option<(Arc<SourceLimits>, IpAddr)>,
}

impl SourceLimits {
    /// A table allowing `max` connections per source (0: unlimited).
    pub fn new(max: u32) -> Arc<SourceLimits> {
        Arc::new(SourceLimits {
            max,
            stripes: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        })
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    fn stripe(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let h = match ip {
            IpAddr::V4(v4) => u32::from(*v4),
            IpAddr::V6(v6) => v6
                .segments()
                .iter()
                .fold(0u32, |h, s| h.rotate_left(5) ^ u32::from(*s)),
        };
        &self.stripes[h as usize % STRIPES]
    }

    /// Take a place for a connection from `peer`, or `Err` when that source
    /// already holds `max`. An unknown peer (the socket could not say) is
    /// admitted uncounted: refusing it would refuse everyone on that error.
    pub fn acquire(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<SourceSlot, SourceFull> {
        let (Some(ip), true) = (peer, self.max > 0) else {
            return Ok(SourceSlot { held: None });
        };
        // An IPv4 client on a dual-stack listener shows as ::ffff:a.b.c.d:
        // one host, one count.
        let ip = ip.to_canonical();
        let mut table = lock(self.stripe(&ip));
        let n = table.entry(ip).or_insert(0);
        // `max > 0`, so a refused source has an entry with a count: nothing
        // empty is left behind.
        if *n >= self.max {
            return Err(SourceFull { max: self.max });
        }
        *n += 1;
        Ok(SourceSlot {
            held: Some((self.clone(), ip)),
        })
    }

    /// Connections `ip` holds now (for tests and diagnostics).
    pub fn held_by(&self, ip: IpAddr) -> u32 {
        let ip = ip.to_canonical();
        lock(self.stripe(&ip)).get(&ip).copied().unwrap_or(0)
    }

    fn release(&self, ip: IpAddr) {
        let mut table = lock(self.stripe(&ip));
        match table.get_mut(&ip) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                table.remove(&ip);
            }
            // Every slot was counted when it was made: a missing entry is a
            // bug in this module, not something a client can cause.
            None => debug_assert!(false, "released a source slot nobody held: {ip}"),
        }
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Some((limits, ip)) = self.held.take() {
            limits.release(ip);
        }
    }
}

/// A poisoned stripe still holds whole counts (every change is one
/// assignment): keep using it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// What was refused. Each is a `reason` label of `corekv_refusals_total`
/// (docs/monitoring.md).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A source address at `connections_per_source_max`.
    ConnectionsPerSource = 0,
    /// A shard at `connections_per_shard_max`.
    ConnectionsPerShard = 1,
    /// AUTH (native or RESP) with an unknown user or a wrong password.
    AuthFailed = 2,
    /// AUTH from an address in the failed-AUTH throttle.
    AuthThrottled = 3,
    /// Admin endpoint: no or bad credentials (HTTP 401).
    AdminUnauthorized = 4,
    /// Admin endpoint: a user whose role is not admin (HTTP 403).
    AdminForbidden = 5,
    /// Admin endpoint: an address in its failed-auth throttle (HTTP 429).
    AdminThrottled = 6,
}

const REFUSAL_KINDS: usize = 7;

impl Refusal {
    pub const ALL: [Refusal; REFUSAL_KINDS] = [
        Refusal::ConnectionsPerSource,
        Refusal::ConnectionsPerShard,
        Refusal::AuthFailed,
        Refusal::AuthThrottled,
        Refusal::AdminUnauthorized,
        Refusal::AdminForbidden,
        Refusal::AdminThrottled,
    ];

    /// The `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::ConnectionsPerSource => "connections_per_source",
            Refusal::ConnectionsPerShard => "connections_per_shard",
            Refusal::AuthFailed => "auth_failed",
            Refusal::AuthThrottled => "auth_throttled",
            Refusal::AdminUnauthorized => "admin_unauthorized",
            Refusal::AdminForbidden => "admin_forbidden",
            Refusal::AdminThrottled => "admin_throttled",
        }
    }
}

/// At most one log line per refusal reason this often; the refusals in
/// between are counted and the next line says how many there were.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Refusals so far, by reason, for the whole process.
#[derive(Debug)]
pub struct Refusals {
    counts: [AtomicU64; REFUSAL_KINDS],
    /// Per reason: ms since `epoch` of its last log line, plus one (0: never).
    last_logged_ms: [AtomicU64; REFUSAL_KINDS],
    /// Per reason: refusals not logged since its last line.
    unlogged: [AtomicU64; REFUSAL_KINDS],
    epoch: Instant,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            last_logged_ms: std::array::from_fn(|_| AtomicU64::new(0)),
            unlogged: std::array::from_fn(|_| AtomicU64::new(0)),
            epoch: Instant::now(),
        }
    }
}

impl Refusals {
    pub fn new() -> Arc<Refusals> {
        Arc::new(Refusals::default())
    }

    /// Count one refusal.
    pub fn count(&self, r: Refusal) {
        self.counts[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Every reason with its count, in [`Refusal::ALL`] order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Refusal::ALL
            .iter()
            .map(|r| (r.reason(), self.counts[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }

    /// Count one refusal and decide whether it gets a log line: `Some(n)`
    /// when it does, `n` being the refusals of this reason not logged since
    /// the previous line; `None` when one was logged less than
    /// [`REFUSAL_LOG_INTERVAL`] ago.
    pub fn count_and_log(&self, r: Refusal) -> Option<u64> {
        self.count(r);
        let i = r as usize;
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_logged_ms[i].load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= REFUSAL_LOG_INTERVAL.as_millis() as u64;
        // One thread wins the interval; the others count themselves unlogged.
        if due
            && self.last_logged_ms[i]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.unlogged[i].swap(0, Ordering::Relaxed));
        }
        self.unlogged[i].fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The limits a shard's listeners check at accept: its own connection limit
/// and the process-wide per-source one, and where refusals are counted.
/// One per shard, shared by its native and RESP listeners.
#[derive(Clone, Debug)]
pub struct Gate {
    pub connections_per_shard_max: usize,
    pub sources: Arc<SourceLimits>,
    pub refusals: Arc<Refusals>,
}

impl Gate {
    /// Decide whether a connection accepted on shard `shard` (which has
    /// `open` connections, native and RESP together) from `peer` may stay:
    /// the shard's limit first (no shared state), then the per-source one.
    /// A refusal is counted by reason and logged at most once per
    /// [`REFUSAL_LOG_INTERVAL`] per reason (address and limit only);
    /// `listener` names the listener in that line. The slot must live as
    /// long as the connection.
    pub fn admit(
        &self,
        shard: u16,
        open: usize,
        peer: Option<IpAddr>,
        listener: &str,
    ) -> Result<SourceSlot, Refusal> {
        let refused = if open >= self.connections_per_shard_max {
            Refusal::ConnectionsPerShard
        } else {
            match self.sources.acquire(peer) {
                Ok(slot) => return Ok(slot),
                Err(SourceFull { .. }) => Refusal::ConnectionsPerSource,
            }
        };
        if let Some(unlogged) = self.refusals.count_and_log(refused) {
            let addr = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
            match refused {
                Refusal::ConnectionsPerSource => tracing::warn!(
                    %addr,
                    listener,
                    limit = self.sources.max(),
                    also_refused_since_last_line = unlogged,
                    "connection refused: this source address holds connections_per_source_max connections"
                ),
                _ => tracing::warn!(
                    %addr,
                    listener,
                    shard,
                    limit = self.connections_per_shard_max,
                    also_refused_since_last_line = unlogged,
                    "connection refused: the shard holds connections_per_shard_max connections"
                ),
            }
        }
        Err(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_max_and_closing_frees_a_place() {
        let limits = SourceLimits::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limits.acquire(Some(a)).expect("1st");
        // The same host through a dual-stack listener counts as itself.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let second = limits.acquire(Some(mapped)).expect("2nd");
        assert!(limits.acquire(Some(a)).is_err(), "3rd from a is refused");
        let other = limits
            .acquire(Some(b))
            .expect("another source is not affected");
        assert_eq!(limits.held_by(a), 2);
        drop(first);
        let third = limits.acquire(Some(a)).expect("a place was freed");
        drop((second, third, other));
        assert_eq!(limits.held_by(a), 0);
        assert!(
            lock(limits.stripe(&a)).is_empty(),
            "empty entries are removed"
        );
    }

    #[test]
    fn zero_means_no_limit_and_unknown_peers_are_admitted() {
        let limits = SourceLimits::new(0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..100).map(|_| limits.acquire(Some(a)).unwrap()).collect();
        assert_eq!(limits.held_by(a), 0, "untracked when off");
        drop(slots);
        let one = SourceLimits::new(1);
        let _held = one.acquire(None).unwrap();
        let _also = one.acquire(None).unwrap();
    }

    #[test]
    fn refusal_logs_are_rate_limited_but_every_refusal_is_counted() {
        let r = Refusals::default();
        assert_eq!(r.count_and_log(Refusal::ConnectionsPerSource), Some(0));
        for _ in 0..5 {
            assert_eq!(r.count_and_log(Refusal::ConnectionsPerSource), None);
        }
        // Another reason has its own interval.
        assert_eq!(r.count_and_log(Refusal::ConnectionsPerShard), Some(0));
        let counts: HashMap<_, _> = r.snapshot().into_iter().collect();
        assert_eq!(counts["connections_per_source"], 6);
        assert_eq!(counts["connections_per_shard"], 1);
        assert_eq!(counts["auth_failed"], 0);
        // Once the interval has passed, the next line reports the 5 skipped.
        std::thread::sleep(REFUSAL_LOG_INTERVAL + Duration::from_millis(10));
        assert_eq!(r.count_and_log(Refusal::ConnectionsPerSource), Some(5));
    }
}
