//! The settings table itself: one row per setting (its name, kind, default,
//! documentation, rule and how it reads and writes `ServeArgs`). Everything
//! that reads settings (flags, environment, config files, `config show`,
//! docs/settings.md) is driven by these rows; this file owns only the rows
//! and the small converters they use. It must never do I/O.

use std::path::PathBuf;

use corekv::core::limits::{
    CONN_BUFFER_BUDGET_DEFAULT, REPLY_BUFFER_BYTES_DEFAULT, REPLY_BYTES_MAX_DEFAULT,
    REPLY_STALL_TIMEOUT_MS_DEFAULT, SHARDS_MAX, VALUE_BYTES_CEILING, VALUE_BYTES_MAX_DEFAULT,
    WAL_SEGMENT_BYTES_DEFAULT,
};
use corekv::core::types::ParkPolicy;

use super::row::{Access, DefaultValue, Kind, Rule, Setting};
fn to_u64(v: &toml::Value) -> Result<u64, String> {
    v.as_integer()
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| format!("expected a non-negative integer, got {v}"))
}

fn to_string(v: &toml::Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("expected a string, got {v}"))
}

fn to_bool(v: &toml::Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("expected true or false, got {v}"))
}

fn int_value(n: impl TryInto<i64>) -> toml::Value {
    toml::Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

/// A list field as TOML (`None` when unset).
fn int_list<T: Copy + TryInto<i64>>(list: &Option<Vec<T>>) -> Option<toml::Value> {
    list.as_ref()
        .map(|l| toml::Value::Array(l.iter().map(|&n| int_value(n)).collect()))
}

/// A TOML list of `what` numbers, each in `T`'s range.
fn to_int_list<T: TryFrom<u64>>(v: &toml::Value, what: &str) -> Result<Vec<T>, String> {
    v.as_array()
        .ok_or_else(|| format!("expected a list of {what} numbers, got {v}"))?
        .iter()
        .map(|n| {
            to_u64(n)
                .and_then(|n| T::try_from(n).map_err(|_| format!("{what} {n} is out of range")))
        })
        .collect()
}

/// Table access to an integer field.
macro_rules! integer {
    ($field:ident) => {
        Access {
            get: |a| Some(int_value(a.$field)),
            set: |a, v| {
                a.$field = to_u64(v)?
                    .try_into()
                    .map_err(|_| format!("{v} is too large"))?;
                Ok(())
            },
        }
    };
}

/// Table access to an optional list of `$what` numbers.
macro_rules! int_list {
    ($field:ident, $what:literal) => {
        Access {
            get: |a| int_list(&a.$field),
            set: |a, v| {
                a.$field = Some(to_int_list(v, $what)?);
                Ok(())
            },
        }
    };
}

/// Table access to a string field.
macro_rules! text {
    ($field:ident) => {
        Access {
            get: |a| Some(toml::Value::String(a.$field.clone())),
            set: |a, v| {
                a.$field = to_string(v)?;
                Ok(())
            },
        }
    };
}

macro_rules! path_access {
    ($field:ident) => {
        Access {
            get: |a| {
                a.$field
                    .as_ref()
                    .map(|p| toml::Value::String(p.display().to_string()))
            },
            set: |a, v| {
                a.$field = Some(PathBuf::from(to_string(v)?));
                Ok(())
            },
        }
    };
}

/// Every `corekv serve` setting, in the order `config show` and
/// docs/settings.md list them. Adding a setting: a row here, a field in
/// [`ServeArgs`], its use in `serve` (or [`ServeArgs::engine_config`]), a line
/// in docs/corekv.example.toml, and `corekv config doc > docs/settings.md`;
/// the tests say which of these you forgot.
pub static SETTINGS: &[Setting] = &[
    Setting {
        name: "data_dir",
        kind: Kind::Path,
        default: DefaultValue::Text("./corekv-data"),
        doc: "Where data lives; created if missing (its parent must exist).",
        rule: Rule::Any,
        deprecated: &[],
        access: Access {
            get: |a| Some(toml::Value::String(a.data_dir.display().to_string())),
            set: |a, v| {
                a.data_dir = PathBuf::from(to_string(v)?);
                Ok(())
            },
        },
    },
    Setting {
        name: "listen",
        kind: Kind::Text,
        default: DefaultValue::Text("127.0.0.1:7070"),
        doc: "Address every shard accepts connections on (port 0: pick a free port).",
        rule: Rule::Any,
        deprecated: &[],
        access: text!(listen),
    },
    Setting {
        name: "admin_listen",
        kind: Kind::Text,
        default: DefaultValue::Text("127.0.0.1:9070"),
        doc: "Address of the admin HTTP endpoint (/health, /metrics); `off` disables it.",
        rule: Rule::Any,
        deprecated: &[],
        access: text!(admin_listen),
    },
    Setting {
        name: "resp_listen",
        kind: Kind::Text,
        default: DefaultValue::Text("127.0.0.1:6380"),
        doc: "Address every shard accepts Redis protocol (RESP2/RESP3) clients on (port 0: pick a free port); `off` disables it. See docs/redis-compatibility.md.",
        rule: Rule::Any,
        deprecated: &[],
        access: text!(resp_listen),
    },
    Setting {
        name: "users_file",
        kind: Kind::Path,
        default: DefaultValue::Unset(
            "no authentication: every client may do everything, so the listeners must be loopback (or insecure_no_auth set)",
        ),
        doc: "TOML file of users, argon2id password hashes and roles (edit it with `corekv user`); when set, every connection and the admin endpoint must authenticate. Reloaded on SIGHUP. See docs/security.md.",
        rule: Rule::Relation("must exist and parse; keep it mode 0600"),
        deprecated: &[],
        access: Access {
            get: |a| {
                a.users_file
                    .as_ref()
                    .map(|p| toml::Value::String(p.display().to_string()))
            },
            set: |a, v| {
                a.users_file = Some(PathBuf::from(to_string(v)?));
                Ok(())
            },
        },
    },
    Setting {
        name: "tls_cert_file",
        kind: Kind::Path,
        default: DefaultValue::Unset("no TLS: every listener speaks plaintext"),
        doc: "PEM certificate chain (leaf first); with tls_key_file, every listener (native protocol, RESP, admin HTTPS) speaks only TLS 1.2/1.3, with this one certificate. Reloaded on SIGHUP (new connections). See docs/security.md.",
        rule: Rule::Relation("set together with tls_key_file; must load and match the key (TLS_CONFIG_INVALID)"),
        deprecated: &[],
        access: path_access!(tls_cert_file),
    },
    Setting {
        name: "tls_key_file",
        kind: Kind::Path,
        default: DefaultValue::Unset("no TLS"),
        doc: "PEM private key (PKCS#8, PKCS#1 or SEC1) of tls_cert_file. Its contents are never logged; keep it mode 0600.",
        rule: Rule::Relation("set together with tls_cert_file"),
        deprecated: &[],
        access: path_access!(tls_key_file),
    },
    Setting {
        name: "tls_client_ca_file",
        kind: Kind::Path,
        default: DefaultValue::Unset("clients are not asked for certificates"),
        doc: "PEM CA certificate(s): with TLS on, every client must present a certificate signed by one of them (mutual TLS); others are refused in the handshake.",
        rule: Rule::Relation("needs tls_cert_file and tls_key_file"),
        deprecated: &[],
        access: path_access!(tls_client_ca_file),
    },
    Setting {
        name: "insecure_no_auth",
        kind: Kind::Bool,
        default: DefaultValue::Bool(false),
        doc: "Allow listening on a non-loopback address without a users_file (protected mode off: anyone who reaches the port may read, write and back up). Refused at startup otherwise, with INSECURE_LISTEN.",
        rule: Rule::Any,
        deprecated: &[],
        access: Access {
            get: |a| Some(toml::Value::Boolean(a.insecure_no_auth)),
            set: |a, v| {
                a.insecure_no_auth = to_bool(v)?;
                Ok(())
            },
        },
    },
    Setting {
        name: "health_requires_auth",
        kind: Kind::Bool,
        default: DefaultValue::Bool(false),
        doc: "With a users_file, make the admin endpoint's /health need admin credentials too (by default it stays open for load balancers; /metrics always needs them).",
        rule: Rule::Any,
        deprecated: &[],
        access: Access {
            get: |a| Some(toml::Value::Boolean(a.health_requires_auth)),
            set: |a, v| {
                a.health_requires_auth = to_bool(v)?;
                Ok(())
            },
        },
    },
    Setting {
        name: "shards",
        kind: Kind::Integer,
        default: DefaultValue::Unset(
            "one shard per usable CPU (or the count recorded in the data directory)",
        ),
        doc: "Number of shards; fixed once the data directory exists.",
        rule: Rule::Between(1, SHARDS_MAX as u64),
        deprecated: &[],
        access: Access {
            get: |a| a.shards.map(int_value),
            set: |a, v| {
                a.shards =
                    Some(u16::try_from(to_u64(v)?).map_err(|_| "too many shards".to_string())?);
                Ok(())
            },
        },
    },
    Setting {
        name: "durability",
        kind: Kind::Text,
        default: DefaultValue::Text("sync"),
        doc: "sync: acknowledge writes after fdatasync. async: acknowledge at once, sync within sync_interval_ms.",
        rule: Rule::OneOf(&["sync", "async"]),
        deprecated: &[],
        access: Access {
            get: |a| Some(toml::Value::String(a.durability.name().to_string())),
            set: |a, v| {
                a.durability = to_string(v)?.parse()?;
                Ok(())
            },
        },
    },
    Setting {
        name: "sync_interval_ms",
        kind: Kind::Integer,
        default: DefaultValue::Integer(10),
        doc: "In async mode, the longest a write waits for its fdatasync to start.",
        rule: Rule::Between(1, 10_000),
        deprecated: &[],
        access: integer!(sync_interval_ms),
    },
    Setting {
        name: "value_bytes_max",
        kind: Kind::Integer,
        default: DefaultValue::Integer(VALUE_BYTES_MAX_DEFAULT as u64),
        doc: "Largest value accepted, in bytes.",
        rule: Rule::Between(1, VALUE_BYTES_CEILING as u64),
        deprecated: &[],
        access: integer!(value_bytes_max),
    },
    Setting {
        name: "wal_segment_bytes",
        kind: Kind::Integer,
        default: DefaultValue::Integer(WAL_SEGMENT_BYTES_DEFAULT),
        doc: "Size of each WAL segment file, in bytes.",
        rule: Rule::Relation(
            "a multiple of 4096, at least 1048576, and large enough for the largest record",
        ),
        deprecated: &[],
        access: integer!(wal_segment_bytes),
    },
    Setting {
        name: "recover_truncate",
        kind: Kind::Bool,
        default: DefaultValue::Bool(false),
        doc: "On WAL corruption before the tail, truncate the log there (dropping the records after it) instead of refusing to start.",
        rule: Rule::Any,
        deprecated: &[],
        access: Access {
            get: |a| Some(toml::Value::Boolean(a.recover_truncate)),
            set: |a, v| {
                a.recover_truncate = v
                    .as_bool()
                    .ok_or_else(|| format!("expected true or false, got {v}"))?;
                Ok(())
            },
        },
    },
    Setting {
        name: "cpus",
        kind: Kind::IntList,
        default: DefaultValue::Unset("every CPU this process may run on"),
        doc: "CPUs to pin shards to, in shard order (flag and variable: comma-separated).",
        rule: Rule::Relation("not empty; every CPU must be one this process may run on"),
        deprecated: &[],
        access: int_list!(cpus, "CPU"),
    },
    Setting {
        name: "connection_shards",
        kind: Kind::IntList,
        default: DefaultValue::Unset("every shard"),
        doc: "Shards that accept client connections (native and RESP), by shard number; the others serve only requests forwarded to them, which leaves their CPUs to what shares them (a client on the same machine, NIC interrupts). See docs/tuning.md.",
        rule: Rule::Relation("not empty, no number twice; every number below the data directory's shard count"),
        deprecated: &[],
        access: int_list!(connection_shards, "shard"),
    },
    Setting {
        name: "connections_per_shard_max",
        kind: Kind::Integer,
        default: DefaultValue::Integer(10_000),
        doc: "Connections each shard serves at once; more get TOO_MANY_CONNECTIONS.",
        rule: Rule::Between(1, u64::MAX),
        deprecated: &[],
        access: integer!(connections_per_shard_max),
    },
    Setting {
        name: "connections_per_source_max",
        kind: Kind::Integer,
        default: DefaultValue::Integer(
            corekv::core::limits::CONNECTIONS_PER_SOURCE_MAX_DEFAULT as u64,
        ),
        doc: "Connections one source address may hold at once, over every shard and both client listeners (0: no limit); more get TOO_MANY_CONNECTIONS.",
        rule: Rule::Between(0, u32::MAX as u64),
        deprecated: &[],
        access: integer!(connections_per_source_max),
    },
    Setting {
        name: "frame_timeout_ms",
        kind: Kind::Integer,
        default: DefaultValue::Integer(30_000),
        doc: "A frame whose first byte arrived must be complete within this many ms.",
        rule: Rule::Between(1, u64::MAX),
        deprecated: &[],
        access: integer!(frame_timeout_ms),
    },
    Setting {
        name: "idle_timeout_ms",
        kind: Kind::Integer,
        default: DefaultValue::Integer(0),
        doc: "Close connections on which no request starts for this many ms (0: never).",
        rule: Rule::Any,
        deprecated: &[],
        access: integer!(idle_timeout_ms),
    },
    Setting {
        name: "park_policy",
        kind: Kind::Text,
        default: DefaultValue::Text("balanced"),
        doc: "What an idle shard does before sleeping: latency-first (spin 2 ms; shard CPUs that do nothing else), balanced (spin 50 µs), efficient (sleep at once; CPUs shared with other work). spin_before_park_us, when not 0, overrides the policy's spin.",
        rule: Rule::OneOf(&ParkPolicy::NAMES),
        deprecated: &[],
        access: Access {
            get: |a| Some(toml::Value::String(a.park_policy.name().to_string())),
            set: |a, v| {
                a.park_policy = to_string(v)?.parse()?;
                Ok(())
            },
        },
    },
    Setting {
        name: "spin_before_park_us",
        kind: Kind::Integer,
        default: DefaultValue::Integer(0),
        doc: "Microseconds an idle shard spins before sleeping, overriding park_policy's window when not 0; costs CPU, saves the wake-up latency of a sleeping core.",
        rule: Rule::Between(0, 1_000_000),
        deprecated: &["spin_us"],
        access: integer!(spin_before_park_us),
    },
    Setting {
        name: "cache_bytes",
        kind: Kind::Integer,
        default: DefaultValue::Integer(256 * 1024 * 1024),
        doc: "Block cache for the whole server, in bytes, split evenly across shards.",
        rule: Rule::Between(1024 * 1024, u64::MAX),
        deprecated: &["cache_size"],
        access: integer!(cache_bytes),
    },
    Setting {
        name: "memtable_bytes",
        kind: Kind::Integer,
        default: DefaultValue::Integer(64 * 1024 * 1024),
        doc: "Each shard flushes its memtable into a table past this many bytes.",
        rule: Rule::Between(64 * 1024, u64::MAX),
        deprecated: &["memtable_size"],
        access: integer!(memtable_bytes),
    },
    Setting {
        name: "table_target_bytes",
        kind: Kind::Integer,
        default: DefaultValue::Integer(64 * 1024 * 1024),
        doc: "Compaction writes tables of about this many bytes.",
        rule: Rule::Between(64 * 1024, u64::MAX),
        deprecated: &["table_size"],
        access: integer!(table_target_bytes),
    },
    Setting {
        name: "l0_trigger",
        kind: Kind::Integer,
        default: DefaultValue::Integer(4),
        doc: "Level-0 tables (flushed memtables) that trigger a compaction.",
        rule: Rule::Between(2, 64),
        deprecated: &[],
        access: integer!(l0_trigger),
    },
    Setting {
        name: "lock_timeout_ms",
        kind: Kind::Integer,
        default: DefaultValue::Integer(1000),
        doc: "How long a transaction, snapshot read or single-key operation waits for a key another transaction locked (then TXN_ABORTED / LOCK_TIMEOUT).",
        rule: Rule::Between(1, 600_000),
        deprecated: &[],
        access: integer!(lock_timeout_ms),
    },
    Setting {
        name: "expiry_sweep_interval_ms",
        kind: Kind::Integer,
        default: DefaultValue::Integer(100),
        doc: "How often each shard's sweeper deletes expired keys (those reads met, and a bounded slice of its walk over the keys); expired keys are invisible to reads either way (docs/expiry.md).",
        rule: Rule::Between(1, 3_600_000),
        deprecated: &[],
        access: integer!(expiry_sweep_interval_ms),
    },
    Setting {
        name: "log_format",
        kind: Kind::Text,
        default: DefaultValue::Text("text"),
        doc: "Log format on stderr: text or json.",
        rule: Rule::OneOf(&["text", "json"]),
        deprecated: &[],
        access: text!(log_format),
    },
    Setting {
        name: "log_file",
        kind: Kind::Path,
        default: DefaultValue::Unset("logs go to stderr only"),
        doc: "Also append logs to this file.",
        rule: Rule::Relation("its directory must exist and be writable"),
        deprecated: &[],
        access: Access {
            get: |a| {
                a.log_file
                    .as_ref()
                    .map(|p| toml::Value::String(p.display().to_string()))
            },
            set: |a, v| {
                a.log_file = Some(PathBuf::from(to_string(v)?));
                Ok(())
            },
        },
    },
    Setting {
        name: "slow_op_ms",
        kind: Kind::Integer,
        default: DefaultValue::Integer(100),
        doc: "Log every request batch slower than this many ms (0: off).",
        rule: Rule::Any,
        deprecated: &[],
        access: integer!(slow_op_ms),
    },
    Setting {
        name: "reply_buffer_bytes",
        kind: Kind::Integer,
        default: DefaultValue::Integer(REPLY_BUFFER_BYTES_DEFAULT as u64),
        doc: "Reply bytes one connection holds at a time: a pipeline of large GETs is answered in rounds of this size per shard.",
        rule: Rule::Between(64 * 1024, u64::MAX),
        deprecated: &[],
        access: integer!(reply_buffer_bytes),
    },
    Setting {
        name: "reply_bytes_max",
        kind: Kind::Integer,
        default: DefaultValue::Integer(REPLY_BYTES_MAX_DEFAULT as u64),
        doc: "Largest MGET reply (larger: REPLY_TOO_LARGE) and SCAN page body, in bytes.",
        rule: Rule::Relation("must hold one largest key and value (value_bytes_max)"),
        deprecated: &[],
        access: integer!(reply_bytes_max),
    },
    Setting {
        name: "reply_stall_timeout_ms",
        kind: Kind::Integer,
        default: DefaultValue::Integer(REPLY_STALL_TIMEOUT_MS_DEFAULT),
        doc: "Close a connection whose client takes no reply bytes for this many ms.",
        rule: Rule::Between(1, u64::MAX),
        deprecated: &[],
        access: integer!(reply_stall_timeout_ms),
    },
    Setting {
        name: "conn_buffer_budget_bytes",
        kind: Kind::Integer,
        default: DefaultValue::Integer(CONN_BUFFER_BUDGET_DEFAULT as u64),
        doc: "Per shard: bytes all its connections' buffers (partial input frames, replies being written) may hold together.",
        rule: Rule::Relation("at least twice reply_buffer_bytes"),
        deprecated: &["conn_buffer_budget"],
        access: integer!(conn_buffer_budget_bytes),
    },
];
