//! The server's settings: one table ([`SETTINGS`]) that names each setting
//! once (file key, flag, environment variable, default, doc line, rule), and
//! the resolution of where each value comes from: flags, then `COREKV_*`
//! environment variables, then the TOML file given by `--config`, then defaults.
//!
//! clap resolves flags, environment and defaults (the derive struct
//! [`ServeArgs`] is typed storage; a unit test proves its flags, variables and
//! defaults are exactly the table's, and the help text comes from the table);
//! this module slots the file in between (a file value applies only where clap
//! fell back to a default), accepts renamed settings under their old names with
//! a warning, and records the source of every value for `corekv config show`.
//! The table also drives `config show`, `config doc` (docs/settings.md), the
//! unknown-`COREKV_*` warning and the per-setting validation. It must never hold
//! engine logic: cross-setting relations of the engine are
//! `EngineConfig::validate`'s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};

use corekv::core::config::EngineConfig;
use corekv::core::limits::{
    CONN_BUFFER_BUDGET_DEFAULT, KEY_BYTES_MAX, REPLY_BUFFER_BYTES_DEFAULT, REPLY_BYTES_MAX_DEFAULT,
    REPLY_STALL_TIMEOUT_MS_DEFAULT, SHARDS_MAX, VALUE_BYTES_CEILING, VALUE_BYTES_MAX_DEFAULT,
    WAL_SEGMENT_BYTES_DEFAULT,
};
use corekv::core::types::{Durability, ParkPolicy};

/// The values of every setting, filled by clap (flags, environment, defaults)
/// and then by [`resolve`] (config file, deprecated names). Each field is one
/// row of [`SETTINGS`]: the flag, variable and default here must be the
/// table's (the unit test `clap_args_match_the_table` fails otherwise), and
/// the help text is set from the table by [`with_table_help`].
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// TOML file with settings (flags and COREKV_* variables override it).
    #[arg(long, env = "COREKV_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "COREKV_DATA_DIR", default_value = "./corekv-data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "COREKV_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: String,
    #[arg(long, env = "COREKV_ADMIN_LISTEN", default_value = "127.0.0.1:9070")]
    pub admin_listen: String,
    #[arg(long, env = "COREKV_USERS_FILE")]
    pub users_file: Option<PathBuf>,
    #[arg(long, env = "COREKV_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    #[arg(long, env = "COREKV_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "COREKV_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    #[arg(long, env = "COREKV_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    #[arg(long, env = "COREKV_HEALTH_REQUIRES_AUTH")]
    pub health_requires_auth: bool,
    #[arg(long, env = "COREKV_SHARDS")]
    pub shards: Option<u16>,
    #[arg(long, env = "COREKV_DURABILITY", default_value = "sync")]
    pub durability: Durability,
    #[arg(long, env = "COREKV_SYNC_INTERVAL_MS", default_value_t = 10)]
    pub sync_interval_ms: u64,
    #[arg(long, env = "COREKV_VALUE_BYTES_MAX", default_value_t = VALUE_BYTES_MAX_DEFAULT)]
    pub value_bytes_max: usize,
    #[arg(long, env = "COREKV_WAL_SEGMENT_BYTES", default_value_t = WAL_SEGMENT_BYTES_DEFAULT)]
    pub wal_segment_bytes: u64,
    #[arg(long, env = "COREKV_RECOVER_TRUNCATE")]
    pub recover_truncate: bool,
    #[arg(long, env = "COREKV_CPUS", value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    #[arg(
        long,
        env = "COREKV_CONNECTIONS_PER_SHARD_MAX",
        default_value_t = 10_000
    )]
    pub connections_per_shard_max: usize,
    #[arg(long, env = "COREKV_FRAME_TIMEOUT_MS", default_value_t = 30_000)]
    pub frame_timeout_ms: u64,
    #[arg(long, env = "COREKV_IDLE_TIMEOUT_MS", default_value_t = 0)]
    pub idle_timeout_ms: u64,
    #[arg(long, env = "COREKV_PARK_POLICY", default_value = "balanced")]
    pub park_policy: ParkPolicy,
    #[arg(long, env = "COREKV_SPIN_BEFORE_PARK_US", default_value_t = 0)]
    pub spin_before_park_us: u64,
    #[arg(long, env = "COREKV_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub cache_bytes: usize,
    #[arg(long, env = "COREKV_MEMTABLE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub memtable_bytes: usize,
    #[arg(long, env = "COREKV_TABLE_TARGET_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub table_target_bytes: u64,
    #[arg(long, env = "COREKV_L0_TRIGGER", default_value_t = 4)]
    pub l0_trigger: usize,
    #[arg(long, env = "COREKV_LOCK_TIMEOUT_MS", default_value_t = 1000)]
    pub lock_timeout_ms: u64,
    #[arg(long, env = "COREKV_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    #[arg(long, env = "COREKV_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    #[arg(long, env = "COREKV_SLOW_OP_MS", default_value_t = 100)]
    pub slow_op_ms: u64,
    #[arg(long, env = "COREKV_REPLY_BUFFER_BYTES", default_value_t = REPLY_BUFFER_BYTES_DEFAULT)]
    pub reply_buffer_bytes: usize,
    #[arg(long, env = "COREKV_REPLY_BYTES_MAX", default_value_t = REPLY_BYTES_MAX_DEFAULT)]
    pub reply_bytes_max: usize,
    #[arg(long, env = "COREKV_REPLY_STALL_TIMEOUT_MS", default_value_t = REPLY_STALL_TIMEOUT_MS_DEFAULT)]
    pub reply_stall_timeout_ms: u64,
    #[arg(long, env = "COREKV_CONN_BUFFER_BUDGET_BYTES", default_value_t = CONN_BUFFER_BUDGET_DEFAULT)]
    pub conn_buffer_budget_bytes: usize,

    // Deprecated names, accepted for one release with a warning (see
    // `Setting::deprecated`). Hidden from --help; [`resolve`] reads them through
    // the ArgMatches by id (the old key), so the fields themselves are unread.
    #[arg(long = "spin-us", env = "COREKV_SPIN_US", hide = true)]
    #[allow(dead_code)]
    spin_us: Option<u64>,
    #[arg(long = "cache-size", env = "COREKV_CACHE_SIZE", hide = true)]
    #[allow(dead_code)]
    cache_size: Option<usize>,
    #[arg(long = "memtable-size", env = "COREKV_MEMTABLE_SIZE", hide = true)]
    #[allow(dead_code)]
    memtable_size: Option<usize>,
    #[arg(long = "table-size", env = "COREKV_TABLE_SIZE", hide = true)]
    #[allow(dead_code)]
    table_size: Option<u64>,
    #[arg(
        long = "conn-buffer-budget",
        env = "COREKV_CONN_BUFFER_BUDGET",
        hide = true
    )]
    #[allow(dead_code)]
    conn_buffer_budget: Option<usize>,
}

/// The TOML type of a setting's value.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Path,
    Integer,
    Bool,
    /// A list of CPU numbers (`--cpus 2,3`, `cpus = [2, 3]`).
    CpuList,
}

/// A setting's value when nothing sets it.
#[derive(Copy, Clone, Debug)]
pub enum DefaultValue {
    Text(&'static str),
    Integer(u64),
    Bool(bool),
    /// No value; the text says what that means.
    Unset(&'static str),
}

/// What values a setting accepts, checked by [`ServeArgs::validate`] for every
/// row alike.
#[derive(Copy, Clone, Debug)]
pub enum Rule {
    /// Any value of the kind.
    Any,
    /// An integer in `min..=max`.
    Between(u64, u64),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A rule relating several settings, checked by hand in
    /// [`ServeArgs::validate`] or `EngineConfig::validate`; the text documents it.
    Relation(&'static str),
}

/// How the table reads and writes a setting's field.
pub struct Access {
    /// The value as TOML; `None` when unset.
    pub get: fn(&ServeArgs) -> Option<toml::Value>,
    /// Set the value from the config file (or a deprecated name).
    pub set: fn(&mut ServeArgs, &toml::Value) -> Result<(), String>,
}

/// One row of the settings table.
pub struct Setting {
    /// The config file key, and the source of the flag (`--` + dashes) and the
    /// environment variable (`COREKV_` + upper case). A value with a unit ends
    /// in it: `_bytes`, `_ms`, `_us`.
    pub name: &'static str,
    pub kind: Kind,
    pub default: DefaultValue,
    /// One line for --help and docs/settings.md.
    pub doc: &'static str,
    pub rule: Rule,
    /// Former names (file keys; their flags and variables follow the same
    /// rule), accepted for one release with a warning naming the new one.
    pub deprecated: &'static [&'static str],
    pub access: Access,
}

impl Setting {
    pub fn flag(&self) -> String {
        flag_of(self.name)
    }
    pub fn env_var(&self) -> String {
        env_of(self.name)
    }
}

pub fn flag_of(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

pub fn env_of(key: &str) -> String {
    format!("COREKV_{}", key.to_uppercase())
}

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
        default: DefaultValue::Unset("no TLS: the native listener speaks plaintext"),
        doc: "PEM certificate chain (leaf first) of the native listener; with tls_key_file, the listener speaks only TLS 1.2/1.3. Reloaded on SIGHUP (new connections). See docs/security.md.",
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
        kind: Kind::CpuList,
        default: DefaultValue::Unset("every CPU this process may run on"),
        doc: "CPUs to pin shards to, in shard order (flag and variable: comma-separated).",
        rule: Rule::Relation("not empty; every CPU must be one this process may run on"),
        deprecated: &[],
        access: Access {
            get: |a| {
                a.cpus
                    .as_ref()
                    .map(|c| toml::Value::Array(c.iter().map(|&n| int_value(n)).collect()))
            },
            set: |a, v| {
                let list = v
                    .as_array()
                    .ok_or_else(|| format!("expected a list of CPU numbers, got {v}"))?;
                a.cpus = Some(
                    list.iter()
                        .map(|c| to_u64(c).map(|c| c as usize))
                        .collect::<Result<_, _>>()?,
                );
                Ok(())
            },
        },
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

/// The row named `key`, by its current name only.
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == key)
}

/// The row a deprecated name now belongs to.
pub fn renamed(old: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.deprecated.contains(&old))
}

/// Every COREKV_* variable the settings read, deprecated ones included, and
/// COREKV_CONFIG.
pub fn known_env_vars() -> Vec<String> {
    let mut vars = vec!["COREKV_CONFIG".to_string()];
    for s in SETTINGS {
        vars.push(s.env_var());
        vars.extend(s.deprecated.iter().map(|old| env_of(old)));
    }
    vars
}

/// Give every argument that is a table row the table's doc line as its help,
/// in every subcommand that takes the settings (serve, config, diagnose).
pub fn with_table_help(cmd: clap::Command) -> clap::Command {
    let ids: Vec<String> = cmd
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    let mut cmd = cmd;
    for id in ids {
        if let Some(s) = setting(&id) {
            cmd = cmd.mut_arg(id, |a| a.help(s.doc));
        }
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, with_table_help);
    }
    cmd
}

impl DefaultValue {
    /// What leaving the setting unset means.
    pub fn unset_meaning(&self) -> &'static str {
        match self {
            DefaultValue::Unset(meaning) => meaning,
            _ => "no value",
        }
    }

    /// The default as clap shows it (`None`: no default).
    pub fn clap_text(&self) -> Option<String> {
        match self {
            DefaultValue::Text(t) => Some(t.to_string()),
            DefaultValue::Integer(n) => Some(n.to_string()),
            DefaultValue::Bool(b) => Some(b.to_string()),
            DefaultValue::Unset(_) => None,
        }
    }
}

impl Rule {
    /// The rule as docs/settings.md states it.
    pub fn describe(&self) -> String {
        match self {
            Rule::Any => "any".to_string(),
            Rule::Between(min, u64::MAX) => format!("at least {min}"),
            Rule::Between(min, max) => format!("{min} to {max}"),
            Rule::OneOf(choices) => choices.join(" or "),
            Rule::Relation(text) => text.to_string(),
        }
    }

    /// The problem with `value` of setting `name`, if any.
    fn check(&self, name: &str, value: &toml::Value) -> Option<String> {
        match (self, value) {
            (Rule::Between(min, max), toml::Value::Integer(i)) => {
                let n = u64::try_from(*i).unwrap_or(0);
                (n < *min || n > *max).then(|| match *max {
                    u64::MAX => format!("{name} = {n}: must be at least {min}"),
                    _ => format!("{name} = {n}: must be between {min} and {max}"),
                })
            }
            (Rule::OneOf(choices), toml::Value::String(s)) => (!choices.contains(&s.as_str()))
                .then(|| format!("{name} = {s:?}: must be {}", choices.join(" or "))),
            _ => None,
        }
    }
}

/// Where a setting's value came from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::File => "config file",
            Source::Default => "default",
        }
    }

    fn of(matches: &ArgMatches, id: &str) -> Source {
        match matches.try_get_raw(id) {
            Ok(Some(_)) => match matches.value_source(id) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Env,
                _ => Source::Default,
            },
            _ => Source::Default,
        }
    }
}

pub struct Settings {
    pub args: ServeArgs,
    /// The source of every setting, by its table name.
    pub sources: BTreeMap<&'static str, Source>,
    /// One line per deprecated name in use, naming its replacement.
    pub warnings: Vec<String>,
}

/// Apply deprecated flags and variables, then the config file (if any), under
/// flags and environment (precedence: flag > environment > file > default,
/// whatever the name used). Every problem is one line naming the key.
pub fn resolve(mut args: ServeArgs, matches: &ArgMatches) -> Result<Settings, Vec<String>> {
    let mut sources = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    for s in SETTINGS {
        sources.insert(s.name, Source::of(matches, s.name));
    }
    // Deprecated flags and variables: clap parsed them into hidden arguments
    // whose id is the old key; move each value to its row unless a source as
    // strong or stronger already set the new name.
    for s in SETTINGS {
        for old in s.deprecated {
            let source = Source::of(matches, old);
            let used = match source {
                Source::Flag => flag_of(old),
                Source::Env => env_of(old),
                _ => continue,
            };
            let new = if source == Source::Flag {
                s.flag()
            } else {
                s.env_var()
            };
            warnings.push(format!(
                "{used} is deprecated and will be removed in the next release: use {new} (setting `{}`)",
                s.name
            ));
            if sources[s.name] >= source {
                continue;
            }
            let raw = matches
                .get_raw(old)
                .and_then(|mut v| v.next())
                .and_then(|v| v.to_str())
                .unwrap_or_default();
            // clap already parsed it as an integer (every renamed setting is one).
            let applied = raw
                .parse::<i64>()
                .map_err(|e| e.to_string())
                .and_then(|n| (s.access.set)(&mut args, &toml::Value::Integer(n)));
            match applied {
                Ok(()) => {
                    sources.insert(s.name, source);
                }
                Err(why) => problems.push(format!("{used}: {why}")),
            }
        }
    }
    if let Some(path) = args.config.clone() {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| vec![format!("config file {}: {e}", path.display())])?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            vec![format!(
                "config file {}: not valid TOML: {e}",
                path.display()
            )]
        })?;
        for (key, value) in &table {
            let row = match (setting(key), renamed(key)) {
                (Some(row), _) => row,
                (None, Some(row)) => {
                    warnings.push(format!(
                        "config file {}: key `{key}` is deprecated and will be removed in the next release: rename it `{}`",
                        path.display(),
                        row.name
                    ));
                    if table.contains_key(row.name) {
                        // Both names in one file: the new one wins.
                        continue;
                    }
                    row
                }
                (None, None) => {
                    let known: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
                    problems.push(format!(
                        "config file {}: unknown key `{key}` (known: {})",
                        path.display(),
                        known.join(", ")
                    ));
                    continue;
                }
            };
            if sources[row.name] != Source::Default {
                continue;
            }
            match (row.access.set)(&mut args, value) {
                Ok(()) => {
                    sources.insert(row.name, Source::File);
                }
                Err(why) => {
                    problems.push(format!("config file {}: `{key}`: {why}", path.display()))
                }
            }
        }
    }
    if problems.is_empty() {
        absolutize(&mut args);
        Ok(Settings {
            args,
            sources,
            warnings,
        })
    } else {
        Err(problems)
    }
}

/// Every path setting, from flags, environment or the config file, made
/// absolute against the working directory, before anything touches the disk:
/// the storage layer opens directories through io_uring, where a relative path
/// has no directory to be relative to (EBADF), and logs, `config show` and
/// /health should name the one directory that is meant.
fn absolutize(args: &mut ServeArgs) {
    args.data_dir = absolute(&args.data_dir);
    args.log_file = args.log_file.as_deref().map(absolute);
    args.users_file = args.users_file.as_deref().map(absolute);
    args.tls_cert_file = args.tls_cert_file.as_deref().map(absolute);
    args.tls_key_file = args.tls_key_file.as_deref().map(absolute);
    args.tls_client_ca_file = args.tls_client_ca_file.as_deref().map(absolute);
    args.config = args.config.as_deref().map(absolute);
}

/// `path` against the working directory (not canonicalized: it may not exist
/// yet, and a symlink the operator chose stays the name they chose).
pub fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

impl ServeArgs {
    /// The native listener's TLS files, when TLS is on (both cert and key set;
    /// `validate` refuses one without the other).
    pub fn tls_files(&self) -> Option<corekv::net::tls::TlsFiles> {
        Some(corekv::net::tls::TlsFiles {
            cert: self.tls_cert_file.clone()?,
            key: self.tls_key_file.clone()?,
            client_ca: self.tls_client_ca_file.clone(),
        })
    }

    /// The engine's share of the settings: the table's names mapped onto
    /// `EngineConfig`'s fields (whose names the shard code uses).
    pub fn engine_config(&self) -> EngineConfig {
        let mut config = EngineConfig::new(&self.data_dir);
        config.shards = self.shards;
        config.durability = self.durability;
        config.sync_interval = Duration::from_millis(self.sync_interval_ms);
        config.value_bytes_max = self.value_bytes_max;
        config.wal_segment_bytes = self.wal_segment_bytes;
        config.recover_truncate = self.recover_truncate;
        config.cpus = self.cpus.clone();
        config.spin_before_park = match self.spin_before_park_us {
            0 => self.park_policy.spin(),
            us => Duration::from_micros(us),
        };
        config.cache_bytes = self.cache_bytes;
        config.memtable_bytes = self.memtable_bytes;
        config.table_target_bytes = self.table_target_bytes;
        config.l0_trigger = self.l0_trigger;
        config.lock_timeout = Duration::from_millis(self.lock_timeout_ms);
        config
    }

    /// Checks that need no I/O: every row's rule, then the relations between
    /// settings (the engine's own, and the server's below).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems: Vec<String> = SETTINGS
            .iter()
            .filter_map(|s| s.rule.check(s.name, &(s.access.get)(self)?))
            .collect();
        // The engine checks some of the same values for library users; one
        // line per setting is enough.
        let named = |p: &str| p.split([' ', ':']).next().unwrap_or_default().to_string();
        let already: Vec<String> = problems.iter().map(|p| named(p)).collect();
        for p in self.engine_config().validate().err().unwrap_or_default() {
            if !already.contains(&named(&p)) {
                problems.push(p);
            }
        }
        // One entry of the largest key and value must fit a reply, or a SCAN
        // over it could never make progress.
        let one_entry = 4 + 6 + KEY_BYTES_MAX * 2 + 12 + self.value_bytes_max;
        if self.reply_bytes_max < one_entry {
            problems.push(format!(
                "reply_bytes_max = {}: must hold one largest key and value ({one_entry} bytes with value_bytes_max = {})",
                self.reply_bytes_max, self.value_bytes_max
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            problems.push(
                "tls_cert_file and tls_key_file: set both (TLS on) or neither (plaintext)".into(),
            );
        }
        if self.tls_client_ca_file.is_some() && self.tls_cert_file.is_none() {
            problems.push(
                "tls_client_ca_file: needs tls_cert_file and tls_key_file (client certificates are asked for in the TLS handshake)".into(),
            );
        }
        if self.conn_buffer_budget_bytes < 2 * self.reply_buffer_bytes {
            problems.push(format!(
                "conn_buffer_budget_bytes = {}: must be at least twice reply_buffer_bytes ({})",
                self.conn_buffer_budget_bytes, self.reply_buffer_bytes
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// docs/settings.md, generated from the table (`corekv config doc`).
pub fn markdown() -> String {
    let mut out = String::from(
        "# Settings of `corekv serve`\n\n\
         <!-- Generated by `corekv config doc` from src/cmd/settings.rs; edit the table there \
         and regenerate: tests/settings_doc.rs fails when this file and the table disagree. -->\n\n\
         Every setting has one name: the config file key. Its flag is `--` and the key with \
         dashes, its environment variable `COREKV_` and the key in upper case. A value with a \
         unit names it (`_bytes`, `_ms`, `_us`). Precedence, highest first: flags, \
         environment variables, the TOML file given by `--config` (docs/corekv.example.toml), \
         defaults. `corekv config show` prints the effective values and where each came from; \
         `corekv config check` validates them against the host.\n\n\
         | Setting (file key) | Type | Flag | Environment variable | Default | Valid values | Meaning |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        let default = match s.default.clap_text() {
            Some(text) => format!("`{text}`"),
            None => format!("unset: {}", s.default.unset_meaning()),
        };
        let kind = match s.kind {
            Kind::Text => "string",
            Kind::Path => "path",
            Kind::Integer => "integer",
            Kind::Bool => "boolean",
            Kind::CpuList => "list of integers",
        };
        out.push_str(&format!(
            "| `{}` | {kind} | `{}` | `{}` | {} | {} | {} |\n",
            s.name,
            s.flag(),
            s.env_var(),
            default,
            s.rule.describe(),
            s.doc.replace('|', "\\|")
        ));
    }
    out.push_str(
        "\n## Deprecated names\n\n\
         These names were renamed to say their unit. They still work for one release: \
         `serve`, `config show` and `config check` accept them and warn, naming the new \
         setting. If both names are given the same way, the new one wins.\n\n\
         | Old file key | Old flag | Old environment variable | Now |\n|---|---|---|---|\n",
    );
    for s in SETTINGS {
        for old in s.deprecated {
            out.push_str(&format!(
                "| `{old}` | `{}` | `{}` | `{}` |\n",
                flag_of(old),
                env_of(old),
                s.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// The derive struct and the table cannot drift: every row has a clap
    /// argument with the table's flag, variable and default; every clap
    /// argument is a row, a deprecated name of one (hidden, flag and variable
    /// from the old key), or --config.
    #[test]
    fn clap_args_match_the_table() {
        let mut cmd = Wrap::command();
        // Building applies clap's implied defaults (`false` for a switch).
        cmd.build();
        for s in SETTINGS {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == s.name)
                .unwrap_or_else(|| panic!("no clap argument for setting {}", s.name));
            assert_eq!(
                arg.get_long().map(|l| format!("--{l}")),
                Some(s.flag()),
                "{}",
                s.name
            );
            assert_eq!(
                arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                Some(s.env_var()),
                "{}",
                s.name
            );
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                defaults,
                s.default.clap_text().into_iter().collect::<Vec<_>>(),
                "default of {}",
                s.name
            );
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "config" || id == "help" {
                continue;
            }
            if let Some(row) = renamed(id) {
                assert!(arg.is_hide_set(), "deprecated --{id} must be hidden");
                assert_eq!(arg.get_long().map(|l| format!("--{l}")), Some(flag_of(id)));
                assert_eq!(
                    arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                    Some(env_of(id))
                );
                assert!(setting(id).is_none(), "{id} is both a name and an alias");
                assert_eq!(row.kind, Kind::Integer, "aliases are applied as integers");
                continue;
            }
            assert!(setting(id).is_some(), "clap argument {id} has no table row");
        }
    }

    /// Names say their unit and are unique, old names included.
    #[test]
    fn names_are_unique_and_unit_suffixed() {
        let mut all: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        all.extend(SETTINGS.iter().flat_map(|s| s.deprecated.iter().copied()));
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "a name is used twice");
        for s in SETTINGS {
            assert!(
                !s.name.ends_with("_size") && !s.name.ends_with("_budget"),
                "{} does not say its unit",
                s.name
            );
        }
    }

    /// Every default obeys its own row's rule, and the defaults together are
    /// a valid configuration.
    #[test]
    fn defaults_are_valid() {
        use clap::Parser;
        let args = Wrap::try_parse_from(["corekv"])
            .expect("defaults parse")
            .serve;
        for s in SETTINGS {
            let value = (s.access.get)(&args);
            match s.default {
                DefaultValue::Unset(_) => assert!(value.is_none(), "{}", s.name),
                _ => {
                    let value = value.unwrap_or_else(|| panic!("{} unset", s.name));
                    assert_eq!(s.rule.check(s.name, &value), None);
                }
            }
        }
        args.validate().expect("the defaults are valid");
    }

    #[test]
    fn rules_name_the_setting() {
        use clap::Parser;
        let mut args = Wrap::try_parse_from(["corekv"]).unwrap().serve;
        args.cache_bytes = 1000;
        args.log_format = "xml".into();
        args.l0_trigger = 1;
        let problems = args.validate().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.contains(&"cache_bytes = 1000: must be at least 1048576".to_string()));
        assert!(problems.contains(&"log_format = \"xml\": must be text or json".to_string()));
        assert!(problems.contains(&"l0_trigger = 1: must be between 2 and 64".to_string()));
    }

    /// The file path through the table: a value set from TOML reads back the
    /// same, for every row.
    #[test]
    fn every_row_round_trips_through_toml() {
        use clap::Parser;
        let mut args = Wrap::try_parse_from(["corekv", "--shards", "3", "--cpus", "1,2"])
            .unwrap()
            .serve;
        args.log_file = Some("/tmp/x.log".into());
        args.users_file = Some("/tmp/users.toml".into());
        for s in SETTINGS {
            let v = (s.access.get)(&args).unwrap_or_else(|| panic!("{}", s.name));
            (s.access.set)(&mut args, &v).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            assert_eq!((s.access.get)(&args), Some(v), "{}", s.name);
        }
    }
}
