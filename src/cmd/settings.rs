//! The server's settings and where each comes from: flags, then `COREKV_*`
//! environment variables, then the TOML file given by `--config`, then defaults.
//!
//! clap resolves flags, environment and defaults; this module slots the file in
//! between (a file value applies only where clap fell back to a default) and
//! records the source of every value for `corekv config show`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};

use corekv::core::config::EngineConfig;
use corekv::core::limits::{
    CONN_BUFFER_BUDGET_DEFAULT, REPLY_BUFFER_BYTES_DEFAULT, REPLY_BYTES_MAX_DEFAULT,
    REPLY_STALL_TIMEOUT_MS_DEFAULT, VALUE_BYTES_MAX_DEFAULT, WAL_SEGMENT_BYTES_DEFAULT,
};
use corekv::core::types::Durability;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// TOML file with settings (flags and COREKV_* variables override it).
    #[arg(long, env = "COREKV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where data lives; created if missing.
    #[arg(long, env = "COREKV_DATA_DIR", default_value = "./corekv-data")]
    pub data_dir: PathBuf,
    /// Address every shard accepts connections on (port 0: pick a free port).
    #[arg(long, env = "COREKV_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Address of the admin HTTP endpoint (/health, /metrics); `off` disables it.
    #[arg(long, env = "COREKV_ADMIN_LISTEN", default_value = "127.0.0.1:9070")]
    pub admin_listen: String,
    /// Number of shards (default: one per usable CPU; fixed once the data
    /// directory exists).
    #[arg(long, env = "COREKV_SHARDS")]
    pub shards: Option<u16>,
    /// sync: acknowledge writes after fdatasync. async: acknowledge at once, sync
    /// at least every --sync-interval-ms.
    #[arg(long, env = "COREKV_DURABILITY", default_value = "sync")]
    pub durability: Durability,
    /// In async mode, the longest a write waits for its fdatasync to start.
    #[arg(long, env = "COREKV_SYNC_INTERVAL_MS", default_value_t = 10)]
    pub sync_interval_ms: u64,
    /// Largest value accepted, in bytes.
    #[arg(long, env = "COREKV_VALUE_BYTES_MAX", default_value_t = VALUE_BYTES_MAX_DEFAULT)]
    pub value_bytes_max: usize,
    /// Size of each WAL segment file, in bytes.
    #[arg(long, env = "COREKV_WAL_SEGMENT_BYTES", default_value_t = WAL_SEGMENT_BYTES_DEFAULT)]
    pub wal_segment_bytes: u64,
    /// On WAL corruption before the tail, truncate the log there (dropping the
    /// records after it) instead of refusing to start.
    #[arg(long, env = "COREKV_RECOVER_TRUNCATE")]
    pub recover_truncate: bool,
    /// CPUs to pin shards to, comma-separated (default: every usable CPU).
    #[arg(long, env = "COREKV_CPUS", value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// Connections each shard serves at once.
    #[arg(
        long,
        env = "COREKV_CONNECTIONS_PER_SHARD_MAX",
        default_value_t = 10_000
    )]
    pub connections_per_shard_max: usize,
    /// A frame whose first byte arrived must be complete within this many ms.
    #[arg(long, env = "COREKV_FRAME_TIMEOUT_MS", default_value_t = 30_000)]
    pub frame_timeout_ms: u64,
    /// Close connections on which no request starts for this many ms (0: never).
    #[arg(long, env = "COREKV_IDLE_TIMEOUT_MS", default_value_t = 0)]
    pub idle_timeout_ms: u64,
    /// Microseconds an idle shard spins before sleeping (0: sleep at once).
    /// Spinning costs CPU and saves the wake-up latency of a sleeping core.
    #[arg(long, env = "COREKV_SPIN_US", default_value_t = 0)]
    pub spin_us: u64,
    /// Block cache for the whole server, in bytes, split evenly across shards.
    #[arg(long, env = "COREKV_CACHE_SIZE", default_value_t = 256 * 1024 * 1024)]
    pub cache_size: usize,
    /// Each shard flushes its memtable into a table past this many bytes.
    #[arg(long, env = "COREKV_MEMTABLE_SIZE", default_value_t = 64 * 1024 * 1024)]
    pub memtable_size: usize,
    /// Compaction writes tables of about this many bytes.
    #[arg(long, env = "COREKV_TABLE_SIZE", default_value_t = 64 * 1024 * 1024)]
    pub table_size: u64,
    /// Level-0 tables (flushed memtables) that trigger a compaction.
    #[arg(long, env = "COREKV_L0_TRIGGER", default_value_t = 4)]
    pub l0_trigger: usize,
    /// How long a transaction, snapshot read or single-key operation waits for
    /// a key locked by another transaction before giving up (TXN_ABORTED /
    /// LOCK_TIMEOUT), in ms.
    #[arg(long, env = "COREKV_LOCK_TIMEOUT_MS", default_value_t = 1000)]
    pub lock_timeout_ms: u64,
    /// Log format on stderr: text or json.
    #[arg(long, env = "COREKV_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Also append logs to this file.
    #[arg(long, env = "COREKV_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// Log every request batch slower than this many ms (0: off).
    #[arg(long, env = "COREKV_SLOW_OP_MS", default_value_t = 100)]
    pub slow_op_ms: u64,
    /// Reply bytes one connection holds at a time (its outbound buffer): a
    /// pipeline of large GETs is answered in rounds of this size per shard.
    #[arg(long, env = "COREKV_REPLY_BUFFER_BYTES", default_value_t = REPLY_BUFFER_BYTES_DEFAULT)]
    pub reply_buffer_bytes: usize,
    /// Largest MGET reply (larger: REPLY_TOO_LARGE) and SCAN page body.
    #[arg(long, env = "COREKV_REPLY_BYTES_MAX", default_value_t = REPLY_BYTES_MAX_DEFAULT)]
    pub reply_bytes_max: usize,
    /// Close a connection whose client takes no reply bytes for this many ms.
    #[arg(long, env = "COREKV_REPLY_STALL_TIMEOUT_MS", default_value_t = REPLY_STALL_TIMEOUT_MS_DEFAULT)]
    pub reply_stall_timeout_ms: u64,
    /// Per shard: bytes all its connections' buffers (partial input frames,
    /// replies being written) may hold together.
    #[arg(long, env = "COREKV_CONN_BUFFER_BUDGET", default_value_t = CONN_BUFFER_BUDGET_DEFAULT)]
    pub conn_buffer_budget: usize,
}

/// Where a setting's value came from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
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
}

/// Every setting a config file may hold (the flag names, with underscores).
pub const KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "admin_listen",
    "shards",
    "durability",
    "sync_interval_ms",
    "value_bytes_max",
    "wal_segment_bytes",
    "recover_truncate",
    "cpus",
    "connections_per_shard_max",
    "frame_timeout_ms",
    "idle_timeout_ms",
    "spin_us",
    "cache_size",
    "memtable_size",
    "table_size",
    "l0_trigger",
    "lock_timeout_ms",
    "log_format",
    "log_file",
    "slow_op_ms",
    "reply_buffer_bytes",
    "reply_bytes_max",
    "reply_stall_timeout_ms",
    "conn_buffer_budget",
];

pub struct Settings {
    pub args: ServeArgs,
    pub sources: BTreeMap<&'static str, Source>,
}

/// Apply the config file (if any) under flags and environment. Every problem is
/// one line naming the key.
pub fn resolve(mut args: ServeArgs, matches: &ArgMatches) -> Result<Settings, Vec<String>> {
    let mut sources = BTreeMap::new();
    for key in KEYS {
        let source = match matches.value_source(key) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env,
            _ => Source::Default,
        };
        sources.insert(*key, source);
    }
    let Some(path) = args.config.clone() else {
        absolutize(&mut args);
        return Ok(Settings { args, sources });
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| vec![format!("config file {}: {e}", path.display())])?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        vec![format!(
            "config file {}: not valid TOML: {e}",
            path.display()
        )]
    })?;
    let mut problems = Vec::new();
    for (key, value) in &table {
        let Some(&known) = KEYS.iter().find(|k| **k == key.as_str()) else {
            problems.push(format!(
                "config file {}: unknown key `{key}` (known: {})",
                path.display(),
                KEYS.join(", ")
            ));
            continue;
        };
        if sources[known] != Source::Default {
            continue;
        }
        match apply(&mut args, known, value) {
            Ok(()) => {
                sources.insert(known, Source::File);
            }
            Err(why) => problems.push(format!("config file {}: `{key}`: {why}", path.display())),
        }
    }
    if problems.is_empty() {
        absolutize(&mut args);
        Ok(Settings { args, sources })
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
    args.config = args.config.as_deref().map(absolute);
}

/// `path` against the working directory (not canonicalized: it may not exist
/// yet, and a symlink the operator chose stays the name they chose).
pub fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn apply(args: &mut ServeArgs, key: &str, v: &toml::Value) -> Result<(), String> {
    let int = |v: &toml::Value| -> Result<u64, String> {
        v.as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| format!("expected a non-negative integer, got {v}"))
    };
    let string = |v: &toml::Value| -> Result<String, String> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("expected a string, got {v}"))
    };
    match key {
        "data_dir" => args.data_dir = PathBuf::from(string(v)?),
        "listen" => args.listen = string(v)?,
        "admin_listen" => args.admin_listen = string(v)?,
        "shards" => {
            args.shards = Some(u16::try_from(int(v)?).map_err(|_| "too many shards".to_string())?)
        }
        "durability" => args.durability = string(v)?.parse()?,
        "sync_interval_ms" => args.sync_interval_ms = int(v)?,
        "value_bytes_max" => args.value_bytes_max = int(v)? as usize,
        "wal_segment_bytes" => args.wal_segment_bytes = int(v)?,
        "recover_truncate" => {
            args.recover_truncate = v
                .as_bool()
                .ok_or_else(|| format!("expected true or false, got {v}"))?
        }
        "cpus" => {
            let list = v
                .as_array()
                .ok_or_else(|| format!("expected a list of CPU numbers, got {v}"))?;
            args.cpus = Some(
                list.iter()
                    .map(|c| int(c).map(|c| c as usize))
                    .collect::<Result<_, _>>()?,
            );
        }
        "connections_per_shard_max" => args.connections_per_shard_max = int(v)? as usize,
        "frame_timeout_ms" => args.frame_timeout_ms = int(v)?,
        "spin_us" => args.spin_us = int(v)?,
        "idle_timeout_ms" => args.idle_timeout_ms = int(v)?,
        "cache_size" => args.cache_size = int(v)? as usize,
        "memtable_size" => args.memtable_size = int(v)? as usize,
        "table_size" => args.table_size = int(v)?,
        "l0_trigger" => args.l0_trigger = int(v)? as usize,
        "lock_timeout_ms" => args.lock_timeout_ms = int(v)?,
        "log_format" => args.log_format = string(v)?,
        "log_file" => args.log_file = Some(PathBuf::from(string(v)?)),
        "slow_op_ms" => args.slow_op_ms = int(v)?,
        "reply_buffer_bytes" => args.reply_buffer_bytes = int(v)? as usize,
        "reply_bytes_max" => args.reply_bytes_max = int(v)? as usize,
        "reply_stall_timeout_ms" => args.reply_stall_timeout_ms = int(v)?,
        "conn_buffer_budget" => args.conn_buffer_budget = int(v)? as usize,
        other => unreachable!("KEYS and apply() disagree on {other}"),
    }
    Ok(())
}

impl ServeArgs {
    pub fn engine_config(&self) -> EngineConfig {
        let mut config = EngineConfig::new(&self.data_dir);
        config.shards = self.shards;
        config.durability = self.durability;
        config.sync_interval = Duration::from_millis(self.sync_interval_ms);
        config.value_bytes_max = self.value_bytes_max;
        config.wal_segment_bytes = self.wal_segment_bytes;
        config.recover_truncate = self.recover_truncate;
        config.cpus = self.cpus.clone();
        config.spin_before_park = Duration::from_micros(self.spin_us);
        config.cache_bytes = self.cache_size;
        config.memtable_bytes = self.memtable_size;
        config.table_target_bytes = self.table_size;
        config.l0_trigger = self.l0_trigger;
        config.lock_timeout = Duration::from_millis(self.lock_timeout_ms);
        config
    }

    /// Checks that need no I/O beyond the engine's own rules.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = self.engine_config().validate().err().unwrap_or_default();
        if !matches!(self.log_format.as_str(), "text" | "json") {
            problems.push(format!(
                "log_format = {:?}: must be text or json",
                self.log_format
            ));
        }
        if self.frame_timeout_ms == 0 {
            problems.push("frame_timeout_ms = 0: must be at least 1".into());
        }
        if self.connections_per_shard_max == 0 {
            problems.push("connections_per_shard_max = 0: must be at least 1".into());
        }
        if self.reply_buffer_bytes < 64 * 1024 {
            problems.push(format!(
                "reply_buffer_bytes = {}: must be at least 65536",
                self.reply_buffer_bytes
            ));
        }
        // One entry of the largest key and value must fit a reply, or a SCAN
        // over it could never make progress.
        let one_entry = 4 + 6 + corekv::core::limits::KEY_BYTES_MAX * 2 + 12 + self.value_bytes_max;
        if self.reply_bytes_max < one_entry {
            problems.push(format!(
                "reply_bytes_max = {}: must hold one largest key and value ({one_entry} bytes with value_bytes_max = {})",
                self.reply_bytes_max, self.value_bytes_max
            ));
        }
        if self.reply_stall_timeout_ms == 0 {
            problems.push("reply_stall_timeout_ms = 0: must be at least 1".into());
        }
        if self.conn_buffer_budget < 2 * self.reply_buffer_bytes {
            problems.push(format!(
                "conn_buffer_budget = {}: must be at least twice reply_buffer_bytes ({})",
                self.conn_buffer_budget, self.reply_buffer_bytes
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// What an unset optional setting means.
    pub fn unset_meaning(&self, key: &str) -> &'static str {
        match key {
            "shards" => "one shard per usable CPU (or the count recorded in the data directory)",
            "cpus" => "every CPU this process may run on",
            "log_file" => "logs go to stderr only",
            _ => "no value",
        }
    }

    /// The value of `key` as TOML, for `config show`; `None` when unset.
    pub fn value_of(&self, key: &str) -> Option<String> {
        let s = |v: &str| toml::Value::String(v.to_string()).to_string();
        Some(match key {
            "data_dir" => s(&self.data_dir.display().to_string()),
            "listen" => s(&self.listen),
            "admin_listen" => s(&self.admin_listen),
            "shards" => return self.shards.map(|n| n.to_string()),
            "durability" => s(self.durability.name()),
            "sync_interval_ms" => self.sync_interval_ms.to_string(),
            "value_bytes_max" => self.value_bytes_max.to_string(),
            "wal_segment_bytes" => self.wal_segment_bytes.to_string(),
            "recover_truncate" => self.recover_truncate.to_string(),
            "cpus" => return self.cpus.as_ref().map(|c| format!("{c:?}")),
            "connections_per_shard_max" => self.connections_per_shard_max.to_string(),
            "frame_timeout_ms" => self.frame_timeout_ms.to_string(),
            "spin_us" => self.spin_us.to_string(),
            "idle_timeout_ms" => self.idle_timeout_ms.to_string(),
            "cache_size" => self.cache_size.to_string(),
            "memtable_size" => self.memtable_size.to_string(),
            "table_size" => self.table_size.to_string(),
            "l0_trigger" => self.l0_trigger.to_string(),
            "lock_timeout_ms" => self.lock_timeout_ms.to_string(),
            "log_format" => s(&self.log_format),
            "log_file" => return self.log_file.as_ref().map(|p| s(&p.display().to_string())),
            "slow_op_ms" => self.slow_op_ms.to_string(),
            "reply_buffer_bytes" => self.reply_buffer_bytes.to_string(),
            "reply_bytes_max" => self.reply_bytes_max.to_string(),
            "reply_stall_timeout_ms" => self.reply_stall_timeout_ms.to_string(),
            "conn_buffer_budget" => self.conn_buffer_budget.to_string(),
            _ => return None,
        })
    }
}
