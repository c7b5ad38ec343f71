//! The RESP command table and the per-connection session that dispatches
//! each command onto engine operations through the shard router.
//!
//! Every command is checked against the table first (unknown command, then
//! arity, then the access its row names, through `core::auth::permits`, with
//! Redis's exact error texts: NOAUTH before AUTH, NOPERM after), then run.
//! AUTH and HELLO AUTH establish who the connection is through
//! `net::auth::authenticate`, the native AUTH's own path (off-core argon2,
//! the shard's throttle, a log line per refusal); this module must never
//! verify a password itself, nor log or echo one. Connection and server
//! commands live here; the string and key commands are in strings.rs and
//! keyspace.rs. It must never reach into a shard's state: everything goes
//! through `ShardContext` (router operations, transactions, scans).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crate::net::stream::NetStream;

use crate::core::auth::{self, Access};
use crate::core::limits::SHARDS_MAX;
use crate::core::status::Status;
use crate::core::types::ShardId;
use crate::shard::metrics::OpClass;
use crate::shard::{RoutedBatch, ShardContext};

use super::codec::Reply;
use crate::net::outbound::{Outbound, SendError};
use crate::net::request_batch::ConnConfig;

/// The Redis version corekv reports (HELLO, INFO's redis_version): the one
/// whose replies tests/resp.rs compares corekv's against. Client libraries
/// gate features on it.
pub const REDIS_COMPAT_VERSION: &str = "7.0.15";

/// What the connection does after a command.
pub enum Flow {
    Continue,
    /// Close after writing what is buffered (QUIT, a fatal error).
    Close,
    /// Replies could not be delivered.
    Failed(SendError),
}

/// One command of the table: Redis's name (lowercase), arity (positive:
/// exact argument count including the name; negative: at least that many),
/// flags, key positions (first, last, step), group and summary (COMMAND,
/// COMMAND DOCS), and the access it needs (checked through
/// `core::auth::permits` before it runs; docs/security.md has the table).
pub struct Cmd {
    pub name: &'static str,
    pub access: Access,
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub keys: (i32, i32, i32),
    pub group: &'static str,
    pub summary: &'static str,
}

const W: &[&str] = &["write", "denyoom"];
const R: &[&str] = &["readonly", "fast"];
const C: &[&str] = &["fast", "loading", "stale"];
const TX: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];

// The access column has no default: a new command must choose. Open is for
// what Redis 7 answers before AUTH (AUTH, HELLO, QUIT, RESET: not even PING);
// Read is anything that only reads keys or the connection's own state; Write
// changes keys; Admin reveals or touches the server (CONFIG, INFO).
macro_rules! cmds {
    ($( $name:literal, $access:ident, $arity:expr, $flags:expr, $keys:expr, $group:literal, $summary:literal; )*) => {
        /// Every command corekv answers. Redis commands not here get Redis's
        /// "unknown command" error; docs/redis-compatibility.md says why each
        /// is missing.
        pub static COMMANDS: &[Cmd] = &[$(Cmd {
            name: $name, access: Access::$access, arity: $arity, flags: $flags, keys: $keys, group: $group, summary: $summary,
        },)*];
    };
}

cmds! {
    "append", Write, 3, W, (1, 1, 1), "string", "Appends a string to the value of a key.";
    "auth", Open, -2, &["noscript", "loading", "stale", "fast"], (0, 0, 0), "connection", "Authenticates as a users_file user (AUTH [user] password).";
    "client", Read, -2, &["admin", "noscript"], (0, 0, 0), "connection", "CLIENT SETNAME/GETNAME/ID/INFO.";
    "config", Admin, -2, &["admin", "noscript", "loading", "stale"], (0, 0, 0), "server", "CONFIG GET of the settings that map onto Redis's.";
    "command", Read, -1, &["loading", "stale"], (0, 0, 0), "server", "Details about commands.";
    "dbsize", Read, 1, &["readonly"], (0, 0, 0), "server", "Number of keys (counted by a scan: O(N)).";
    "decr", Write, 2, W, (1, 1, 1), "string", "Decrements the integer value of a key by one.";
    "decrby", Write, 3, W, (1, 1, 1), "string", "Decrements the integer value of a key by a number.";
    "del", Write, -2, &["write"], (1, -1, 1), "generic", "Deletes keys.";
    "echo", Read, 2, C, (0, 0, 0), "connection", "Returns the given string.";
    "exists", Read, -2, R, (1, -1, 1), "generic", "Counts the given keys that exist.";
    "expiretime", Read, 2, R, (1, 1, 1), "generic", "Absolute expiry time of a key (-1: none, -2: no key).";
    "get", Read, 2, R, (1, 1, 1), "string", "Returns the value of a key.";
    "getdel", Write, 2, &["write", "fast"], (1, 1, 1), "string", "Returns the value of a key and deletes it.";
    "getrange", Read, 4, &["readonly"], (1, 1, 1), "string", "Returns a substring of a key's value.";
    "getset", Write, 3, W, (1, 1, 1), "string", "Sets a key and returns its old value.";
    "hello", Open, -1, C, (0, 0, 0), "connection", "Handshake: protocol version 2 or 3.";
    "incr", Write, 2, W, (1, 1, 1), "string", "Increments the integer value of a key by one.";
    "incrby", Write, 3, W, (1, 1, 1), "string", "Increments the integer value of a key by a number.";
    "incrbyfloat", Write, 3, W, (1, 1, 1), "string", "Increments the float value of a key by a number.";
    "info", Admin, -1, &["loading", "stale"], (0, 0, 0), "server", "Server, clients, stats and keyspace information.";
    "keys", Read, 2, &["readonly"], (0, 0, 0), "generic", "Keys matching a glob pattern.";
    "mget", Read, -2, R, (1, -1, 1), "string", "Values of several keys (one consistent snapshot).";
    "mset", Write, -3, W, (1, -1, 2), "string", "Sets several keys atomically (across shards).";
    "msetnx", Write, -3, W, (1, -1, 2), "string", "Sets several keys atomically if none exists.";
    "persist", Write, 2, &["write", "fast"], (1, 1, 1), "generic", "Removes a key's expiry.";
    "expire", Write, -3, &["write", "fast"], (1, 1, 1), "generic", "Sets a key's time to live in seconds (NX, XX, GT, LT).";
    "pexpire", Write, -3, &["write", "fast"], (1, 1, 1), "generic", "Sets a key's time to live in milliseconds (NX, XX, GT, LT).";
    "expireat", Write, -3, &["write", "fast"], (1, 1, 1), "generic", "Sets a key's expiry as a unix time in seconds (NX, XX, GT, LT).";
    "pexpireat", Write, -3, &["write", "fast"], (1, 1, 1), "generic", "Sets a key's expiry as a unix time in milliseconds (NX, XX, GT, LT).";
    "setex", Write, 4, W, (1, 1, 1), "string", "Sets a key with a time to live in seconds.";
    "psetex", Write, 4, W, (1, 1, 1), "string", "Sets a key with a time to live in milliseconds.";
    "getex", Write, -2, W, (1, 1, 1), "string", "Gets a value and sets or removes its expiry (EX, PX, EXAT, PXAT, PERSIST).";
    "pexpiretime", Read, 2, R, (1, 1, 1), "generic", "Absolute expiry time of a key (-1: none, -2: no key).";
    "ping", Read, -1, C, (0, 0, 0), "connection", "Returns PONG.";
    "quit", Open, -1, C, (0, 0, 0), "connection", "Closes the connection.";
    "reset", Open, 1, C, (0, 0, 0), "connection", "Resets the connection.";
    "scan", Read, -2, &["readonly"], (0, 0, 0), "generic", "Iterates over the keys.";
    "select", Read, 2, C, (0, 0, 0), "connection", "Selects database 0 (the only one).";
    "set", Write, -3, W, (1, 1, 1), "string", "Sets a key (NX, XX, GET, EX, PX, EXAT, PXAT, KEEPTTL).";
    "setnx", Write, 3, &["write", "denyoom", "fast"], (1, 1, 1), "string", "Sets a key if it does not exist.";
    "setrange", Write, 4, W, (1, 1, 1), "string", "Overwrites part of a value at an offset.";
    "strlen", Read, 2, R, (1, 1, 1), "string", "Length of a key's value.";
    "substr", Read, 4, &["readonly"], (1, 1, 1), "string", "GETRANGE under its old name.";
    "time", Read, 1, C, (0, 0, 0), "server", "The server time.";
    "touch", Read, -2, R, (1, -1, 1), "generic", "Counts the given keys that exist.";
    "pttl", Read, 2, R, (1, 1, 1), "generic", "Time to live of a key (-1: none, -2: no key).";
    "ttl", Read, 2, R, (1, 1, 1), "generic", "Time to live of a key (-1: none, -2: no key).";
    "type", Read, 2, R, (1, 1, 1), "generic", "The type of a key (string or none).";
    "unlink", Write, -2, &["write", "fast"], (1, -1, 1), "generic", "Deletes keys.";
    "multi", Read, 1, TX, (0, 0, 0), "transactions", "Starts a transaction (queued commands run atomically across shards at EXEC).";
    "exec", Read, 1, &["noscript", "loading", "stale", "skip_slowlog"], (0, 0, 0), "transactions", "Runs the queued commands as one atomic corekv transaction.";
    "discard", Read, 1, TX, (0, 0, 0), "transactions", "Discards the queued commands.";
    "watch", Read, -2, TX, (1, -1, 1), "transactions", "EXEC answers nil if one of these keys' values changed.";
    "unwatch", Read, 1, TX, (0, 0, 0), "transactions", "Forgets the watched keys.";
    "setbit", Write, 4, W, (1, 1, 1), "bitmap", "Sets or clears a bit (atomic read-modify-write).";
    "getbit", Read, 3, R, (1, 1, 1), "bitmap", "Returns a bit.";
    "bitcount", Read, -2, &["readonly"], (1, 1, 1), "bitmap", "Counts set bits (BYTE or BIT range).";
    "bitpos", Read, -3, &["readonly"], (1, 1, 1), "bitmap", "Position of the first set or clear bit.";
    "bitop", Write, -4, W, (2, -1, 1), "bitmap", "AND, OR, XOR or NOT of strings into a key (atomic across shards).";
    "lcs", Read, -3, &["readonly"], (1, 2, 1), "string", "Longest common subsequence of two values (LEN, IDX, MINMATCHLEN, WITHMATCHLEN).";
    "flushdb", Admin, -1, &["write"], (0, 0, 0), "server", "Deletes every key (scan + delete in batches; not atomic).";
    "flushall", Admin, -1, &["write"], (0, 0, 0), "server", "Deletes every key (as FLUSHDB: corekv has one database).";
    "lastsave", Read, 1, &["loading", "stale", "fast"], (0, 0, 0), "server", "The server's start time (writes are durable in the WAL; there is no separate save).";
    "wait", Read, 3, &["noscript"], (0, 0, 0), "generic", "0: corekv has no replicas.";
    "debug", Admin, -2, &["admin", "noscript", "loading", "stale"], (0, 0, 0), "server", "DEBUG SLEEP only.";
    "object", Read, -2, &["readonly"], (2, 2, 1), "generic", "OBJECT ENCODING: int, embstr or raw, from the value.";
    "rename", Write, 3, &["write"], (1, 2, 1), "generic", "Renames a key, with its expiry (atomic across shards).";
    "renamenx", Write, 3, &["write", "fast"], (1, 2, 1), "generic", "Renames a key if the new name does not exist (atomic across shards).";
    "randomkey", Read, 1, &["readonly"], (0, 0, 0), "generic", "A key from the key space (not uniformly random: see docs/redis-compatibility.md).";
    "copy", Write, -3, &["write", "denyoom"], (1, 2, 1), "generic", "Copies a value and its expiry to another key (REPLACE; DB 0 only).";
}

/// Redis commands corekv knows and refuses, with the reason (the error
/// says it; docs/redis-compatibility.md has the full list). Commands of data
/// types corekv does not have (lists, hashes, ...) are simply unknown.
pub static UNSUPPORTED: &[(&str, &str)] = &[
    ("bitfield", NOT_YET),
    ("bitfield_ro", NOT_YET),
    ("move", "corekv has one database"),
    ("swapdb", "corekv has one database"),
    ("dump", "corekv has no Redis serialization format"),
    ("restore", "corekv has no Redis serialization format"),
    ("migrate", "corekv has no Redis serialization format"),
    (
        "save",
        "corekv's writes are durable in its WAL; use `corekv backup` for a copy",
    ),
    (
        "bgsave",
        "corekv's writes are durable in its WAL; use `corekv backup` for a copy",
    ),
    (
        "bgrewriteaof",
        "corekv's writes are durable in its WAL; use `corekv backup` for a copy",
    ),
];

const NOT_YET: &str = "not supported by corekv yet";

pub fn lookup(name: &str) -> Option<&'static Cmd> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// `lookup` of a command name as the client sent it (any case), without
/// lower-casing it into a new string: the per-command path.
pub fn lookup_bytes(name: &[u8]) -> Option<&'static Cmd> {
    COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Process-wide counters for INFO (the shards' own metrics are per core).
pub(super) static CONNECTED: AtomicUsize = AtomicUsize::new(0);
pub(super) static CONNECTIONS_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Commands answered (INFO's total_commands_processed), one counter per
/// shard on its own cache line: only the shard's core adds to it, so the
/// request path never pulls a line another core just wrote; INFO sums them.
#[repr(align(128))]
struct ShardCounter(AtomicU64);
static COMMANDS_ANSWERED: [ShardCounter; SHARDS_MAX] =
    [const { ShardCounter(AtomicU64::new(0)) }; SHARDS_MAX];

/// One more command answered on `shard`'s core.
pub(super) fn count_command(shard: ShardId) {
    COMMANDS_ANSWERED[shard.index()]
        .0
        .fetch_add(1, Ordering::Relaxed);
}

/// Commands answered on every shard so far.
pub(super) fn commands_total() -> u64 {
    COMMANDS_ANSWERED
        .iter()
        .map(|c| c.0.load(Ordering::Relaxed))
        .sum()
}
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);
pub(super) static STARTED: OnceLock<Instant> = OnceLock::new();

/// One RESP connection's state.
pub struct Session {
    pub proto: u8,
    pub(super) id: u64,
    pub(super) name: Option<Vec<u8>>,
    pub(super) peer: Option<SocketAddr>,
    pub(super) local: Option<SocketAddr>,
    /// The connection limit, for INFO (per shard times shards).
    pub(super) maxclients: usize,
    /// SCAN cursors handed out (number → resume key), newest last.
    pub(super) cursors: VecDeque<(u64, Vec<u8>)>,
    pub(super) next_cursor: u64,
    /// A reusable batch for single-shard and multi-key routed operations.
    pub(super) batch: RoutedBatch,
    pub(super) probe: RoutedBatch,
    pub(super) scratch: Vec<u8>,
    pub(super) detail: Vec<u8>,
    /// Who the connection is (core::auth decides what that allows).
    pub(super) auth: auth::Session,
    /// Whether the server has users (then a new or RESET connection starts
    /// unauthenticated).
    auth_required: bool,
    /// After MULTI: the queued commands (multi.rs).
    pub(super) multi: Option<super::txn_state::Queue>,
    /// WATCHed keys and what WATCH saw of them.
    pub(super) watched: Vec<super::txn_state::Watched>,
    /// CLIENT KILL of this very connection: close once the reply is out.
    pub(super) close_after_reply: bool,
    /// What CLIENT LIST shows of this connection's activity.
    pub(super) activity: std::sync::Arc<super::clients::Activity>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Before the connection's socket closes (see clients.rs).
        super::clients::unregister(self.id);
        CONNECTED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The context one command runs with.
pub struct Run<'a, 'b> {
    pub ctx: &'a ShardContext,
    pub cfg: &'a ConnConfig,
    pub outb: &'a mut Outbound,
    pub stream: &'a mut NetStream,
    pub argv: &'a [&'b [u8]],
}

impl Run<'_, '_> {
    pub fn reply(&mut self, proto: u8) -> Reply<'_> {
        Reply {
            out: self.outb.buf(),
            proto,
        }
    }
}

/// A command's outcome for metrics: its class and status.
pub type Outcome = (OpClass, Status);

pub const OK: Outcome = (OpClass::Other, Status::Ok);

impl Session {
    pub fn new(
        ctx: &ShardContext,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        maxclients: usize,
        auth_required: bool,
        fd: std::os::fd::RawFd,
    ) -> Session {
        CONNECTED.fetch_add(1, Ordering::Relaxed);
        CONNECTIONS_TOTAL.fetch_add(1, Ordering::Relaxed);
        let id = NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed);
        let activity = std::sync::Arc::new(super::clients::Activity::default());
        super::clients::register(
            id,
            super::clients::Entry {
                addr: peer,
                laddr: local,
                fd,
                name: Vec::new(),
                resp: 2,
                user: String::new(),
                since: Instant::now(),
                activity: activity.clone(),
            },
        );
        Session {
            proto: 2,
            id,
            name: None,
            peer,
            local,
            maxclients,
            cursors: VecDeque::new(),
            next_cursor: 1,
            batch: ctx.new_batch(),
            probe: ctx.new_batch(),
            scratch: Vec::new(),
            detail: Vec::new(),
            auth: auth::Session::new(auth_required),
            auth_required,
            multi: None,
            watched: Vec::new(),
            close_after_reply: false,
            activity,
        }
    }

    /// Record for CLIENT LIST that a command just ran (and the MULTI state
    /// it left).
    pub fn note_activity(&self) {
        self.activity
            .command(self.multi.as_ref().map(|q| q.cmds.len()));
    }

    /// Whether this connection may run a command needing `access` now; the
    /// pipeline asks before queueing a plain GET or SET, so a run never
    /// holds a command the session may not run (it goes through `run` and
    /// is refused there, in order).
    pub fn may(&self, access: Access) -> bool {
        auth::permits(self.auth.role, access)
    }

    /// Answer one command (`argv` is not empty) into `outb`.
    pub async fn run(
        &mut self,
        argv: &[&[u8]],
        ctx: &ShardContext,
        cfg: &ConnConfig,
        outb: &mut Outbound,
        stream: &mut NetStream,
    ) -> (Flow, OpClass, Status) {
        count_command(ctx.shard());
        let mut run = Run {
            ctx,
            cfg,
            outb,
            stream,
            argv,
        };
        let Some(cmd) = lookup_bytes(argv[0]) else {
            // Only a refused command pays for the lower-cased name.
            let name = String::from_utf8_lossy(argv[0]).to_ascii_lowercase();
            let e = match UNSUPPORTED.iter().find(|(n, _)| *n == name) {
                Some((n, why)) => format!(
                    "ERR unsupported command '{n}': {why} (see docs/redis-compatibility.md)"
                ),
                None => unknown_command(argv),
            };
            // Rejected while MULTI queues: EXEC will abort, as in Redis.
            self.flag_multi();
            run.reply(self.proto).error(&e);
            return (Flow::Continue, OpClass::Other, Status::UnknownOpcode);
        };
        let n = argv.len() as i32;
        if (cmd.arity > 0 && n != cmd.arity) || (cmd.arity < 0 && n < -cmd.arity) {
            let e = format!("ERR wrong number of arguments for '{}' command", cmd.name);
            self.flag_multi();
            run.reply(self.proto).error(&e);
            return (Flow::Continue, OpClass::Other, Status::InvalidArgument);
        }
        // After the name and arity checks, as Redis orders them.
        if let Err(status) = self.auth.check(cmd.access) {
            let e = match status {
                Status::NoAuth => NOAUTH.to_string(),
                _ => format!(
                    "NOPERM this user has no permissions to run the '{}' command",
                    acl_name(cmd, argv)
                ),
            };
            self.flag_multi();
            run.reply(self.proto).error(&e);
            return (Flow::Continue, OpClass::Other, status);
        }
        // After MULTI every command but these is queued (Redis's list).
        if self.in_multi()
            && !matches!(
                cmd.name,
                "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
            )
        {
            let (class, status) = self.queue(cmd.name, &mut run);
            return (Flow::Continue, class, status);
        }
        let result = match cmd.name {
            "ping" => self.ping(&mut run),
            "hello" => self.hello(&mut run).await,
            "reset" => {
                self.proto = 2;
                self.name = None;
                self.cursors.clear();
                self.multi_reset();
                // As Redis 7: back to the default state, which with users
                // configured is unauthenticated.
                self.auth = auth::Session::new(self.auth_required);
                run.reply(self.proto).simple("RESET");
                Ok(OK)
            }
            "client" => self.client(&mut run),
            "auth" => {
                let (user, password) = match argv.len() {
                    // Redis: one argument is the default user's password.
                    2 => (&b"default"[..], argv[1]),
                    3 => (argv[1], argv[2]),
                    _ => {
                        run.reply(self.proto).error(SYNTAX);
                        return (Flow::Continue, OpClass::Other, Status::InvalidArgument);
                    }
                };
                if run.cfg.auth.is_none() {
                    // No users: answered as Redis answers when the default
                    // user has no password.
                    let mut r = run.reply(self.proto);
                    match argv.len() {
                        2 => r.error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"),
                        _ if user == b"default" => r.simple("OK"),
                        _ => r.error(WRONGPASS),
                    }
                    Ok(OK)
                } else {
                    match self.authenticate(run.cfg, user, password).await {
                        Ok(()) => {
                            run.reply(self.proto).simple("OK");
                            Ok(OK)
                        }
                        Err((e, status)) => {
                            run.reply(self.proto).error(&e);
                            Ok((OpClass::Other, status))
                        }
                    }
                }
            }
            "echo" => {
                run.reply(self.proto).bulk(argv[1]);
                Ok(OK)
            }
            "select" => self.select(&mut run),
            "quit" => {
                run.reply(self.proto).simple("OK");
                return (Flow::Close, OpClass::Other, Status::Ok);
            }
            "command" => self.command(&mut run),
            "flushdb" | "flushall" => self.flush(&mut run).await,
            "lastsave" => self.lastsave(&mut run),
            "wait" => {
                let argv = run.argv;
                let mut r = run.reply(self.proto);
                match (parse_i64(argv[1]), parse_i64(argv[2])) {
                    (None, _) => r.error(NOT_INTEGER),
                    (_, None) => r.error("ERR timeout is not an integer or out of range"),
                    (_, Some(t)) if t < 0 => r.error("ERR timeout is negative"),
                    // No replicas: none acknowledged, at once.
                    _ => r.int(0),
                }
                Ok(OK)
            }
            "debug" => self.debug(&mut run).await,
            "config" => self.config(&mut run),
            "time" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let mut r = run.reply(self.proto);
                r.array(2);
                r.bulk(now.as_secs().to_string().as_bytes());
                r.bulk(now.subsec_micros().to_string().as_bytes());
                Ok(OK)
            }
            "info" => self.info(&mut run).await,
            "dbsize" => self.dbsize(&mut run).await,
            "randomkey" => self.randomkey(&mut run).await,
            "keys" => self.keys(&mut run).await,
            "scan" => self.scan(&mut run).await,
            "multi" | "exec" | "discard" | "watch" | "unwatch" => {
                self.transaction_command(cmd.name, &mut run).await
            }
            n if super::txn_state::EVALUATED.contains(&n) => self.evaluated(&mut run).await,
            _ => self.string_command(cmd.name, &mut run).await,
        };
        if matches!(cmd.name, "hello" | "client" | "reset" | "auth") {
            // What CLIENT LIST shows may have changed.
            self.publish();
        }
        if std::mem::take(&mut self.close_after_reply) {
            return (Flow::Close, OpClass::Other, Status::Ok);
        }
        match result {
            Ok((class, status)) => (Flow::Continue, class, status),
            Err(e) => (Flow::Failed(e), OpClass::Other, Status::Ok),
        }
    }

    fn ping(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let mut r = run.reply(self.proto);
        match argv.len() {
            1 => r.simple("PONG"),
            2 => r.bulk(argv[1]),
            _ => r.error("ERR wrong number of arguments for 'ping' command"),
        }
        Ok(OK)
    }

    async fn hello(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let mut want = self.proto;
        if let Some(v) = argv.get(1) {
            match parse_i64(v) {
                Some(v @ 2..=3) => want = v as u8,
                Some(_) => {
                    run.reply(self.proto)
                        .error("NOPROTO unsupported protocol version");
                    return Ok(OK);
                }
                None => {
                    run.reply(self.proto)
                        .error("ERR Protocol version is not an integer or out of range");
                    return Ok(OK);
                }
            }
        }
        let mut name = None;
        let mut credentials = None;
        let mut i = 2;
        while i < argv.len() {
            let opt = argv[i].to_ascii_lowercase();
            let more = argv.len() - i - 1;
            if opt == b"auth" && more >= 2 {
                credentials = Some((argv[i + 1], argv[i + 2]));
                i += 3;
            } else if opt == b"setname" && more >= 1 {
                if !valid_client_name(argv[i + 1]) {
                    run.reply(self.proto).error(BAD_NAME);
                    return Ok(OK);
                }
                name = Some(argv[i + 1].to_vec());
                i += 2;
            } else {
                let e = format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(argv[i])
                );
                run.reply(self.proto).error(&e);
                return Ok(OK);
            }
        }
        // As Redis: every option parses before AUTH is tried, and a failed
        // AUTH changes nothing else.
        match (credentials, &run.cfg.auth) {
            (Some((user, password)), Some(_)) => {
                if let Err((e, status)) = self.authenticate(run.cfg, user, password).await {
                    run.reply(self.proto).error(&e);
                    return Ok((OpClass::Other, status));
                }
            }
            // No users: like Redis's default user with no password,
            // "default" with any password is accepted.
            (Some((user, _)), None) if !user.eq_ignore_ascii_case(b"default") => {
                run.reply(self.proto).error(WRONGPASS);
                return Ok(OK);
            }
            _ => {}
        }
        if self.auth.role.is_none() {
            run.reply(self.proto).error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
            return Ok((OpClass::Other, Status::NoAuth));
        }
        self.proto = want;
        if name.is_some() {
            self.name = name;
        }
        let id = self.id as i64;
        let mut r = run.reply(self.proto);
        r.map(7);
        r.bulk(b"server");
        r.bulk(b"redis");
        r.bulk(b"version");
        r.bulk(REDIS_COMPAT_VERSION.as_bytes());
        r.bulk(b"proto");
        r.int(i64::from(want));
        r.bulk(b"id");
        r.int(id);
        r.bulk(b"mode");
        r.bulk(b"standalone");
        r.bulk(b"role");
        r.bulk(b"master");
        r.bulk(b"modules");
        r.array(0);
        Ok(OK)
    }

    /// AUTH's work, shared by AUTH and HELLO AUTH: the native protocol's
    /// check (off-core verification, this shard's throttle, a log line per
    /// refusal naming the user and address, never the password). On success
    /// the session is the user's; on failure it is unchanged, and the error
    /// text and status (counted in the metrics as the native path counts
    /// them) are returned.
    async fn authenticate(
        &mut self,
        cfg: &ConnConfig,
        user: &[u8],
        password: &[u8],
    ) -> Result<(), (String, Status)> {
        let Some(shard_auth) = &cfg.auth else {
            return Err((WRONGPASS.to_string(), Status::AuthFailed));
        };
        // A name no users file can hold, or a password longer than the
        // wire allows, still goes through a (failing) verification: the same
        // time, throttle and log line as any wrong password, and nothing of
        // what the client sent is logged.
        let mut name = std::str::from_utf8(user)
            .ok()
            .filter(|n| auth::valid_user_name(n))
            .map_or_else(|| "(invalid user name)".to_string(), str::to_string);
        let mut password = password;
        if password.len() > auth::PASSWORD_BYTES_MAX {
            // Not a valid name, so no user matches: it fails after hashing
            // nothing longer than the limit.
            name.push_str(" (password too long)");
            password = &password[..auth::PASSWORD_BYTES_MAX];
        }
        let password = password.to_vec();
        let peer = self.peer.map(|p| p.ip());
        let done = crate::net::auth::authenticate(shard_auth, peer, name, password).await;
        match done.session {
            Some(session) => {
                self.auth = session;
                Ok(())
            }
            None if done.status == Status::AuthThrottled => Err((
                format!(
                    "AUTH_THROTTLED {} (see docs/errors.md)",
                    String::from_utf8_lossy(&done.body)
                ),
                done.status,
            )),
            None => Err((WRONGPASS.to_string(), done.status)),
        }
    }

    fn select(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let mut r = run.reply(self.proto);
        match parse_i64(argv[1]) {
            None => r.error(NOT_INTEGER),
            Some(0) => r.simple("OK"),
            Some(_) => r.error("ERR DB index is out of range"),
        }
        Ok(OK)
    }

    fn command(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let sub = argv
            .get(1)
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
        let proto = self.proto;
        let mut r = run.reply(proto);
        match sub.as_deref() {
            None => {
                r.array(COMMANDS.len());
                for c in COMMANDS {
                    command_info(&mut r, c);
                }
            }
            Some("count") => r.int(COMMANDS.len() as i64),
            Some("info") => {
                let names = &argv[2..];
                if names.is_empty() {
                    r.array(COMMANDS.len());
                    COMMANDS.iter().for_each(|c| command_info(&mut r, c));
                } else {
                    r.array(names.len());
                    for n in names {
                        match lookup(&String::from_utf8_lossy(n).to_ascii_lowercase()) {
                            Some(c) => command_info(&mut r, c),
                            None => r.nil_array(),
                        }
                    }
                }
            }
            Some("docs") => {
                let wanted: Vec<&Cmd> = if argv.len() > 2 {
                    argv[2..]
                        .iter()
                        .filter_map(|n| lookup(&String::from_utf8_lossy(n).to_ascii_lowercase()))
                        .collect()
                } else {
                    COMMANDS.iter().collect()
                };
                r.map(wanted.len());
                for c in wanted {
                    r.bulk(c.name.as_bytes());
                    r.map(3);
                    r.bulk(b"summary");
                    r.bulk(c.summary.as_bytes());
                    r.bulk(b"since");
                    r.bulk(b"1.0.0");
                    r.bulk(b"group");
                    r.bulk(c.group.as_bytes());
                }
            }
            Some(_) => {
                let e = format!(
                    "ERR unknown subcommand '{}'. Try COMMAND HELP.",
                    String::from_utf8_lossy(argv[1])
                );
                r.error(&e);
            }
        }
        Ok(OK)
    }
}

/// The command's name as Redis's NOPERM text shows it: `container|sub` for
/// a known subcommand of CONFIG or CLIENT (Redis checks ACLs per
/// subcommand), else the name.
fn acl_name(cmd: &Cmd, argv: &[&[u8]]) -> String {
    const SUBCOMMANDS: &[(&str, &[&str])] = &[
        ("config", &["get", "set", "resetstat", "rewrite"]),
        (
            "client",
            &["setname", "getname", "id", "info", "list", "kill"],
        ),
    ];
    let sub = argv
        .get(1)
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    match SUBCOMMANDS.iter().find(|(name, _)| *name == cmd.name) {
        Some((_, subs)) if sub.as_deref().is_some_and(|s| subs.contains(&s)) => {
            format!("{}|{}", cmd.name, sub.unwrap_or_default())
        }
        _ => cmd.name.to_string(),
    }
}

/// One COMMAND entry in Redis 7's ten-element form (ACL categories, tips,
/// key specs and subcommands left empty).
fn command_info(r: &mut Reply<'_>, c: &Cmd) {
    r.array(10);
    r.bulk(c.name.as_bytes());
    r.int(i64::from(c.arity));
    r.set(c.flags.len());
    for f in c.flags {
        r.simple(f);
    }
    r.int(i64::from(c.keys.0));
    r.int(i64::from(c.keys.1));
    r.int(i64::from(c.keys.2));
    // ACL categories and tips (sets), key specs and subcommands (arrays):
    // ten elements in all, as announced.
    r.set(0);
    r.set(0);
    r.array(0);
    r.array(0);
}

pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const SYNTAX: &str = "ERR syntax error";
/// Redis 7's texts for a command before AUTH and for a failed AUTH.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
pub(super) const BAD_NAME: &str =
    "ERR Client names cannot contain spaces, newlines or special characters.";

pub(super) fn valid_client_name(n: &[u8]) -> bool {
    n.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

/// Redis's text: `unknown command 'foo', with args beginning with: 'a' 'b' `
/// (each shown argument cut so the list stays near 128 bytes).
pub fn unknown_command(argv: &[&[u8]]) -> String {
    let mut args = String::new();
    for a in &argv[1..] {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        let a = &a[..a.len().min(room)];
        args.push('\'');
        args.push_str(&String::from_utf8_lossy(a));
        args.push_str("' ");
    }
    let name = &argv[0][..argv[0].len().min(128)];
    format!(
        "ERR unknown command '{}', with args beginning with: {args}",
        String::from_utf8_lossy(name)
    )
}

/// Redis's strict integer syntax (string2ll), one definition for the RESP
/// argument parser and the in-shard INCR.
pub use crate::core::rmw::parse_i64;

/// A reply's error line for an engine status that is not the command's
/// normal outcome: the status name is the error code (clients show it; the
/// runbook in docs/errors.md is under that name).
pub fn status_error(s: Status) -> String {
    format!("{} {}", s.name(), s.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_like_redis() {
        for ok in [
            "0",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
            "10",
        ] {
            assert!(parse_i64(ok.as_bytes()).is_some(), "{ok}");
        }
        for bad in [
            "",
            "-",
            "+1",
            "01",
            "-0",
            " 1",
            "1 ",
            "9223372036854775808",
            "1.5",
        ] {
            assert!(parse_i64(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn unknown_command_text() {
        assert_eq!(
            unknown_command(&[b"foo", b"a", b"b"]),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            unknown_command(&[b"foo"]),
            "ERR unknown command 'foo', with args beginning with: "
        );
    }

    #[test]
    fn the_plain_run_commands_need_read_and_write() {
        // The pipeline checks plain GET/SET runs with these (pipeline.rs).
        assert_eq!(lookup("get").map(|c| c.access), Some(Access::Read));
        assert_eq!(lookup("set").map(|c| c.access), Some(Access::Write));
    }

    #[test]
    fn table_names_are_lowercase_and_unique() {
        let mut names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase())));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len());
    }
}
