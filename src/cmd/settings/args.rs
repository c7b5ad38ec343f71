//! The values of every setting as clap fills them: one field per row of the
//! settings table (table.rs), plus hidden deprecated spellings. Plain data;
//! reading and checking it is mod.rs's.

use std::path::PathBuf;

use clap::Args;

use corekv::core::limits::{
    CONN_BUFFER_BUDGET_DEFAULT, REPLY_BUFFER_BYTES_DEFAULT, REPLY_BYTES_MAX_DEFAULT,
    REPLY_STALL_TIMEOUT_MS_DEFAULT, VALUE_BYTES_MAX_DEFAULT, WAL_SEGMENT_BYTES_DEFAULT,
};
use corekv::core::types::{Durability, ParkPolicy};

/// The values of every setting, filled by clap (flags, environment, defaults)
/// and then by `resolve` (config file, deprecated names). Each field is one
/// row of `SETTINGS`: the flag, variable and default here must be the
/// table's (the unit test `clap_args_match_the_table` fails otherwise), and
/// the help text is set from the table by `with_table_help`.
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
    #[arg(long, env = "COREKV_RESP_LISTEN", default_value = "127.0.0.1:6380")]
    pub resp_listen: String,
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
    #[arg(long, env = "COREKV_CONNECTION_SHARDS", value_delimiter = ',')]
    pub connection_shards: Option<Vec<u16>>,
    #[arg(
        long,
        env = "COREKV_CONNECTIONS_PER_SHARD_MAX",
        default_value_t = 10_000
    )]
    pub connections_per_shard_max: usize,
    #[arg(
        long,
        env = "COREKV_CONNECTIONS_PER_SOURCE_MAX",
        default_value_t = corekv::core::limits::CONNECTIONS_PER_SOURCE_MAX_DEFAULT
    )]
    pub connections_per_source_max: u32,
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
    #[arg(long, env = "COREKV_EXPIRY_SWEEP_INTERVAL_MS", default_value_t = 100)]
    pub expiry_sweep_interval_ms: u64,
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
    // `Setting::deprecated`). Hidden from --help; `resolve` reads them through
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
