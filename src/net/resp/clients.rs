//! The process-wide registry of RESP connections behind CLIENT LIST and
//! CLIENT KILL: every connection of every shard, whatever core serves it.
//!
//! A connection registers when its session starts and leaves when the
//! session is dropped, which is before its socket is closed (the session is
//! a local of the connection task, the socket its parameter), so the
//! descriptor in an entry is always the live socket of that connection.
//! KILL shuts that socket down (`shutdown(2)`, from whichever core runs the
//! KILL): the owning connection's pending read or write then ends and it
//! closes itself on its own core. This module must never close a descriptor
//! nor touch another core's connection state beyond that one call.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// What a connection's own task records as it runs commands, for CLIENT
/// LIST on any core: plain atomics that only the owning core writes (two
/// relaxed stores per command, no lock on the command path).
#[derive(Debug)]
pub struct Activity {
    /// `clock_ms()` at the start of the connection's last command.
    last_ms: AtomicU64,
    /// Commands queued in an open MULTI; -1: not in MULTI.
    multi: AtomicI64,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            last_ms: AtomicU64::new(clock_ms()),
            multi: AtomicI64::new(-1),
        }
    }
}

impl Activity {
    /// A command starts; `multi` is the open MULTI's queue length, if any.
    pub fn command(&self, multi: Option<usize>) {
        self.last_ms.store(clock_ms(), Ordering::Relaxed);
        self.multi
            .store(multi.map_or(-1, |n| n as i64), Ordering::Relaxed);
    }
}

/// Milliseconds on a process-wide monotonic clock.
fn clock_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What CLIENT LIST shows of a connection.
pub struct Entry {
    pub addr: Option<SocketAddr>,
    pub laddr: Option<SocketAddr>,
    pub fd: RawFd,
    pub name: Vec<u8>,
    pub resp: u8,
    pub user: String,
    pub since: Instant,
    pub activity: Arc<Activity>,
}

static CLIENTS: Mutex<BTreeMap<u64, Entry>> = Mutex::new(BTreeMap::new());

fn clients() -> std::sync::MutexGuard<'static, BTreeMap<u64, Entry>> {
    // A panic while holding the lock leaves plain data behind: still usable.
    CLIENTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn register(id: u64, entry: Entry) {
    clients().insert(id, entry);
}

pub fn unregister(id: u64) {
    clients().remove(&id);
}

/// Update what CLIENT LIST shows of `id` (after SETNAME, HELLO, AUTH, RESET).
pub fn update(id: u64, name: &[u8], resp: u8, user: &str) {
    if let Some(e) = clients().get_mut(&id) {
        e.name = name.to_vec();
        e.resp = resp;
        e.user = user.to_string();
    }
}

/// CLIENT INFO's line for `id` (empty if it is not registered).
pub fn line_of(id: u64) -> String {
    clients()
        .get(&id)
        .map(|e| line(id, e, Instant::now()))
        .unwrap_or_default()
}

/// CLIENT LIST's lines, by id.
pub fn list() -> String {
    let now = Instant::now();
    let mut out = String::new();
    for (id, e) in clients().iter() {
        out.push_str(&line(*id, e, now));
    }
    out
}

pub fn line(id: u64, e: &Entry, now: Instant) -> String {
    let addr = e.addr.map_or_else(|| "?".into(), |a| a.to_string());
    let laddr = e.laddr.map_or_else(|| "?".into(), |a| a.to_string());
    let idle = clock_ms().saturating_sub(e.activity.last_ms.load(Ordering::Relaxed)) / 1000;
    let multi = e.activity.multi.load(Ordering::Relaxed);
    // Redis's field order. sub/psub/ssub are 0 because corekv has no
    // pub/sub; the buffer fields (qbuf ... tot-mem) are not tracked per
    // connection and read 0 (docs/redis-compatibility.md): they are here so
    // client libraries that parse every field (redis-py's client_info and
    // client_list) can.
    format!(
        "id={id} addr={addr} laddr={laddr} fd={} name={} age={} idle={idle} flags={} db=0 \
         sub=0 psub=0 ssub=0 multi={multi} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 \
         obl=0 oll=0 omem=0 tot-mem=0 user={} redir=-1 resp={}\n",
        e.fd,
        String::from_utf8_lossy(&e.name),
        now.duration_since(e.since).as_secs(),
        if multi >= 0 { "x" } else { "N" },
        e.user,
        e.resp
    )
}

/// What a KILL selects.
pub struct Filter<'a> {
    pub id: Option<u64>,
    pub addr: Option<&'a str>,
    pub laddr: Option<&'a str>,
    pub user: Option<&'a str>,
    /// The caller, and whether to spare it.
    pub me: u64,
    pub skip_me: bool,
}

/// Shut down every matching connection but the caller's; returns how many
/// matched, and whether the caller itself matched (it closes after its
/// reply, as Redis does).
pub fn kill(f: &Filter<'_>) -> (usize, bool) {
    let map = clients();
    let mut n = 0;
    let mut me = false;
    for (id, e) in map.iter() {
        let hit = f.id.is_none_or(|x| x == *id)
            && f.addr
                .is_none_or(|a| e.addr.is_some_and(|x| x.to_string() == a))
            && f.laddr
                .is_none_or(|a| e.laddr.is_some_and(|x| x.to_string() == a))
            && f.user.is_none_or(|u| u == e.user);
        if !hit || (f.skip_me && *id == f.me) {
            continue;
        }
        n += 1;
        if *id == f.me {
            me = true;
            continue;
        }
        // SAFETY: shutdown(2) on a descriptor this registry knows is the
        // live socket of a registered connection (the entry leaves before
        // the socket closes, and we hold the registry's lock): it cannot
        // be a reused descriptor. shutdown neither frees nor closes it.
        let rc = unsafe { libc::shutdown(e.fd, libc::SHUT_RDWR) };
        if rc != 0 {
            tracing::debug!(
                id,
                "CLIENT KILL: shutdown failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    (n, me)
}
