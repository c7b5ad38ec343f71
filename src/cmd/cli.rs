//! `corekv cli`: one request to a running server.
//!
//! Exit codes: 0 success; 1 `get` of a missing key; 2 any error, with its stable
//! name first on stderr. Values are written to stdout byte for byte (a newline is
//! added only when stdout is a terminal).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use corekv::core::status::Status;
use corekv::core::txn_format::{Cond, Write as KvWrite};
use corekv::net::client::{Client, ClientError, ScanFilter, TlsOptions, TxnResult};

#[derive(Args, Debug)]
pub struct CliArgs {
    /// Server address.
    #[arg(long, env = "COREKV_ADDR", default_value = "127.0.0.1:7070")]
    pub addr: String,
    /// Give up when connecting, or waiting for any reply, takes longer than
    /// this many milliseconds (REPLY_TIMEOUT / CONNECT_FAILED, exit 2).
    #[arg(long, env = "COREKV_CLI_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub credentials: super::user::Credentials,
    #[command(flatten)]
    pub tls: TlsClientArgs,
    #[command(subcommand)]
    pub command: CliCommand,
}

/// How a client command connects over TLS (the server's `tls_*` settings).
#[derive(Args, Debug, Clone, Default)]
pub struct TlsClientArgs {
    /// Speak TLS, trusting the CA certificate(s) in this PEM file.
    #[arg(long, env = "COREKV_TLS_CA_FILE")]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry (default: the host part
    /// of --addr).
    #[arg(long, env = "COREKV_TLS_SERVER_NAME", requires = "tls_ca_file")]
    pub tls_server_name: Option<String>,
    /// Client certificate (PEM) for a server with tls_client_ca_file.
    #[arg(long, env = "COREKV_CLI_TLS_CERT_FILE", requires_all = ["tls_ca_file", "tls_key_file"])]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "COREKV_CLI_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,
}

impl TlsClientArgs {
    /// The client's TLS options for `addr`, or `None` for plaintext.
    pub fn options(&self, addr: &str) -> Option<TlsOptions> {
        let ca_file = self.tls_ca_file.clone()?;
        let server_name = self
            .tls_server_name
            .clone()
            .unwrap_or_else(|| host_of(addr).to_string());
        Some(TlsOptions {
            ca_file,
            server_name,
            client_cert: self.tls_cert_file.clone().zip(self.tls_key_file.clone()),
        })
    }
}

/// `host` of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[derive(Subcommand, Debug)]
pub enum CliCommand {
    /// Make KEY expire after MS milliseconds (0 or less: delete it now), or
    /// with --persist never. Prints 1 if applied, 0 if not (no such key, or
    /// the --nx/--xx/--gt/--lt condition was false).
    Expire {
        key: String,
        #[arg(allow_hyphen_values = true, default_value_t = 0)]
        ms: i64,
        /// Only if the key has no expiry.
        #[arg(long)]
        nx: bool,
        /// Only if the key has an expiry.
        #[arg(long)]
        xx: bool,
        /// Only if the new expiry is later (no expiry counts as infinite).
        #[arg(long)]
        gt: bool,
        /// Only if the new expiry is earlier (no expiry counts as infinite).
        #[arg(long)]
        lt: bool,
        /// Remove the expiry instead.
        #[arg(long)]
        persist: bool,
    },
    /// Print the milliseconds until KEY expires (-1: never); exit 1 if there
    /// is no such key.
    Ttl { key: String },
    /// Check the server answers.
    Ping,
    /// Print the server's protocol version, shard count and limits.
    Hello,
    /// Print the value of KEY.
    Get { key: String },
    /// Set KEY to VALUE (with --ttl, expiring after that many milliseconds;
    /// without, any expiry is cleared).
    Put {
        key: String,
        value: String,
        /// Milliseconds until the key expires.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Delete KEY.
    Del { key: String },
    /// Add BY (default 1) to KEY's integer value atomically (a missing key
    /// counts as 0); print the new value.
    Incr {
        key: String,
        #[arg(default_value_t = 1, allow_hyphen_values = true)]
        by: i64,
    },
    /// Append VALUE to KEY's value atomically; print the new length.
    Append { key: String, value: String },
    /// Print the values of several keys, one per line (missing keys: empty line,
    /// and exit code 1).
    Mget { keys: Vec<String> },
    /// Write every KEY VALUE pair atomically (all or none).
    Mput {
        #[arg(required = true, num_args = 2.., value_names = ["KEY", "VALUE"])]
        pairs: Vec<String>,
    },
    /// Run a transaction described by JSON on stdin:
    /// {"if": [{"key": K, "equals": V} | {"key": K, "absent": true} | {"key": K, "present": true}],
    ///  "then": [{"put": K, "value": V} | {"delete": K}]}.
    /// Prints COMMITTED (exit 0) or CONDITION_FAILED <index> (exit 1).
    Txn,
    /// Print `key<TAB>value` for every key in [START, END) (END "" = to the end).
    Scan {
        start: String,
        end: String,
        /// Stop after this many entries (default: all).
        #[arg(long)]
        limit: Option<usize>,
        /// Only keys starting with these bytes.
        #[arg(long)]
        prefix: Option<String>,
        /// Only values containing these bytes.
        #[arg(long)]
        contains: Option<String>,
        /// Only JSON values whose FIELD (dot path) equals VALUE (JSON text), as FIELD=VALUE.
        #[arg(long)]
        json_eq: Option<String>,
    },
}

pub fn run(args: CliArgs) -> ExitCode {
    let credentials = match args.credentials.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("CREDENTIALS_MISSING: {e}");
            return ExitCode::from(2);
        }
    };
    match execute(&args, credentials) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}: {}", e.name(), e.message());
            ExitCode::from(2)
        }
    }
}

fn execute(
    args: &CliArgs,
    credentials: Option<(String, Vec<u8>)>,
) -> Result<ExitCode, ClientError> {
    let timeout = std::time::Duration::from_millis(args.timeout_ms.max(1));
    let mut client = match args.tls.options(&args.addr) {
        None => Client::connect_timeout(args.addr.as_str(), timeout)?,
        Some(tls) => Client::connect_tls_timeout(args.addr.as_str(), &tls, timeout)?,
    };
    if let Some((user, password)) = &credentials {
        client.auth(user, password)?;
    }
    let mut stdout = std::io::stdout().lock();
    let tty = stdout.is_terminal();
    let print = |out: &mut std::io::StdoutLock<'_>, bytes: &[u8]| {
        let _ = out.write_all(bytes);
        if tty {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    };
    match &args.command {
        CliCommand::Ping => {
            client.ping()?;
            print(&mut stdout, b"PONG");
        }
        CliCommand::Hello => {
            let h = client.hello()?;
            let text = format!(
                "protocol_version={} shard_count={} key_bytes_max={} value_bytes_max={} server_version={} shard={}",
                h.protocol_version, h.shard_count, h.key_bytes_max, h.value_bytes_max, h.server_version, h.shard
            );
            print(&mut stdout, text.as_bytes());
        }
        CliCommand::Get { key } => match client.get(key.as_bytes())? {
            Some(v) => print(&mut stdout, &v),
            None => {
                eprintln!("NOT_FOUND: {key}");
                return Ok(ExitCode::from(1));
            }
        },
        CliCommand::Put { key, value, ttl } => {
            match ttl {
                Some(ms) => {
                    let at = corekv::core::expiry::absolute_ms(
                        i64::try_from(*ms).unwrap_or(i64::MAX),
                        corekv::core::expiry::ExpiryArg::Millis,
                        corekv::shard::clock::wall_clock_ms(),
                        true,
                    )
                    .map_err(|_| invalid("--ttl must be between 1 and 2^63-1 ms from now"))?;
                    client.put_ex(key.as_bytes(), value.as_bytes(), at)?
                }
                None => client.put(key.as_bytes(), value.as_bytes())?,
            }
            print(&mut stdout, b"OK");
        }
        CliCommand::Expire {
            key,
            ms,
            nx,
            xx,
            gt,
            lt,
            persist,
        } => {
            use corekv::core::expiry::ExpireMode;
            let mode =
                match (*persist, *nx, *xx, *gt, *lt) {
                    (true, false, false, false, false) => ExpireMode::Persist,
                    (false, false, false, false, false) => ExpireMode::Always,
                    (false, true, false, false, false) => ExpireMode::Nx,
                    (false, false, true, false, false) => ExpireMode::Xx,
                    (false, false, _, true, false) => ExpireMode::Gt,
                    (false, false, false, false, true) => ExpireMode::Lt,
                    (false, false, true, false, true) => ExpireMode::XxLt,
                    _ => return Err(invalid(
                        "--persist, --nx, --gt/--lt: one at a time (--xx may join --gt or --lt)",
                    )),
                };
            let at = corekv::core::expiry::absolute_ms(
                *ms,
                corekv::core::expiry::ExpiryArg::Millis,
                corekv::shard::clock::wall_clock_ms(),
                false,
            )
            .map_err(|_| invalid("MS is out of range"))?;
            let applied = client.expire(key.as_bytes(), mode, at)?;
            print(&mut stdout, if applied { b"1" } else { b"0" });
        }
        CliCommand::Ttl { key } => match client.ttl(key.as_bytes())? {
            None => {
                eprintln!("NOT_FOUND: {key}");
                return Ok(ExitCode::from(1));
            }
            Some(0) => print(&mut stdout, b"-1"),
            Some(at) => {
                let left = at.saturating_sub(corekv::shard::clock::wall_clock_ms());
                print(&mut stdout, left.to_string().as_bytes());
            }
        },
        CliCommand::Incr { key, by } => {
            let n = client.incr_by(key.as_bytes(), *by)?;
            print(&mut stdout, n.to_string().as_bytes());
        }
        CliCommand::Append { key, value } => {
            let n = client.append(key.as_bytes(), value.as_bytes())?;
            print(&mut stdout, n.to_string().as_bytes());
        }
        CliCommand::Mget { keys } => {
            let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
            let values = client.mget(&refs)?;
            let mut missing = false;
            for v in &values {
                match v {
                    Some(v) => {
                        let _ = stdout.write_all(v);
                    }
                    None => missing = true,
                }
                let _ = stdout.write_all(b"\n");
            }
            let _ = stdout.flush();
            if missing {
                return Ok(ExitCode::from(1));
            }
        }
        CliCommand::Scan {
            start,
            end,
            limit,
            prefix,
            contains,
            json_eq,
        } => {
            let filter = match (prefix, contains, json_eq) {
                (None, None, None) => ScanFilter::None,
                (Some(p), None, None) => ScanFilter::KeyPrefix(p.as_bytes().to_vec()),
                (None, Some(c), None) => ScanFilter::ValueContains(c.as_bytes().to_vec()),
                (None, None, Some(j)) => {
                    let Some((path, value)) = j.split_once('=') else {
                        return Err(ClientError::Status {
                            status: corekv::core::status::Status::InvalidArgument,
                            detail: "--json-eq takes FIELD=VALUE".into(),
                        });
                    };
                    ScanFilter::JsonEq {
                        path: path.into(),
                        value_json: value.into(),
                    }
                }
                _ => {
                    return Err(ClientError::Status {
                        status: corekv::core::status::Status::InvalidArgument,
                        detail: "use at most one of --prefix, --contains, --json-eq".into(),
                    })
                }
            };
            let mut from = start.as_bytes().to_vec();
            let mut printed = 0usize;
            let want = limit.unwrap_or(usize::MAX);
            'pages: loop {
                let page_limit =
                    (want - printed).min(corekv::core::limits::SCAN_LIMIT_MAX as usize) as u32;
                let page = client.scan_page(&from, end.as_bytes(), page_limit, &filter)?;
                for (k, v) in &page.entries {
                    let _ = stdout.write_all(k);
                    let _ = stdout.write_all(b"\t");
                    let _ = stdout.write_all(v);
                    let _ = stdout.write_all(b"\n");
                    printed += 1;
                    if printed >= want {
                        break 'pages;
                    }
                }
                match page.next {
                    Some(n) => from = n,
                    None => break,
                }
            }
            let _ = stdout.flush();
        }
        CliCommand::Mput { pairs } => {
            if pairs.len() % 2 != 0 {
                return Err(invalid(
                    "mput takes KEY VALUE pairs: the last key has no value",
                ));
            }
            let kv: Vec<(&[u8], &[u8])> = pairs
                .chunks(2)
                .map(|p| (p[0].as_bytes(), p[1].as_bytes()))
                .collect();
            client.mput(&kv)?;
            print(&mut stdout, b"OK");
        }
        CliCommand::Txn => {
            let mut input = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)
                .map_err(ClientError::Io)?;
            let txn = parse_txn_json(&mut input).map_err(|e| invalid(&e))?;
            let conds: Vec<Cond<'_>> = txn.conds.iter().map(TxnCond::as_cond).collect();
            let writes: Vec<KvWrite<'_>> = txn.writes.iter().map(TxnWrite::as_write).collect();
            match client.txn(&conds, &writes)? {
                TxnResult::Committed => print(&mut stdout, b"COMMITTED"),
                TxnResult::ConditionFailed(i) => {
                    print(&mut stdout, format!("CONDITION_FAILED {i}").as_bytes());
                    return Ok(ExitCode::from(1));
                }
            }
        }
        CliCommand::Del { key } => {
            let existed = client.delete(key.as_bytes())?;
            print(&mut stdout, if existed { b"1" } else { b"0" });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn invalid(detail: &str) -> ClientError {
    ClientError::Status {
        status: Status::InvalidArgument,
        detail: detail.into(),
    }
}

enum TxnCond {
    Equals(String, String),
    Absent(String),
    Present(String),
}

impl TxnCond {
    fn as_cond(&self) -> Cond<'_> {
        match self {
            TxnCond::Equals(k, v) => Cond::Equals(k.as_bytes(), v.as_bytes()),
            TxnCond::Absent(k) => Cond::Absent(k.as_bytes()),
            TxnCond::Present(k) => Cond::Present(k.as_bytes()),
        }
    }
}

enum TxnWrite {
    Put(String, String),
    Delete(String),
}

impl TxnWrite {
    fn as_write(&self) -> KvWrite<'_> {
        match self {
            TxnWrite::Put(k, v) => KvWrite::Put(k.as_bytes(), v.as_bytes()),
            TxnWrite::Delete(k) => KvWrite::Delete(k.as_bytes()),
        }
    }
}

struct TxnJson {
    conds: Vec<TxnCond>,
    writes: Vec<TxnWrite>,
}

/// The `corekv cli txn` description; every problem is named with its position.
fn parse_txn_json(input: &mut [u8]) -> Result<TxnJson, String> {
    use simd_json::prelude::*;
    let doc = simd_json::to_borrowed_value(input).map_err(|e| format!("stdin is not JSON: {e}"))?;
    let obj = doc
        .as_object()
        .ok_or("the transaction must be a JSON object")?;
    for k in obj.keys() {
        if k != "if" && k != "then" {
            return Err(format!(
                "unknown field {k:?} (expected \"if\" and \"then\")"
            ));
        }
    }
    let text = |v: Option<&simd_json::BorrowedValue<'_>>, what: &str| -> Result<String, String> {
        v.and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{what} must be a string"))
    };
    let mut conds = Vec::new();
    if let Some(list) = obj.get("if") {
        let list = list.as_array().ok_or("\"if\" must be a list")?;
        for (i, c) in list.iter().enumerate() {
            let key = text(c.get("key"), &format!("if[{i}].key"))?;
            conds.push(if c.get("equals").is_some() {
                TxnCond::Equals(key, text(c.get("equals"), &format!("if[{i}].equals"))?)
            } else if c.get("absent").and_then(|v| v.as_bool()) == Some(true) {
                TxnCond::Absent(key)
            } else if c.get("present").and_then(|v| v.as_bool()) == Some(true) {
                TxnCond::Present(key)
            } else {
                return Err(format!(
                    "if[{i}] needs \"equals\": VALUE, \"absent\": true or \"present\": true"
                ));
            });
        }
    }
    let mut writes = Vec::new();
    if let Some(list) = obj.get("then") {
        let list = list.as_array().ok_or("\"then\" must be a list")?;
        for (i, w) in list.iter().enumerate() {
            writes.push(if w.get("put").is_some() {
                TxnWrite::Put(
                    text(w.get("put"), &format!("then[{i}].put"))?,
                    text(w.get("value"), &format!("then[{i}].value"))?,
                )
            } else if w.get("delete").is_some() {
                TxnWrite::Delete(text(w.get("delete"), &format!("then[{i}].delete"))?)
            } else {
                return Err(format!(
                    "then[{i}] needs \"put\": KEY with \"value\", or \"delete\": KEY"
                ));
            });
        }
    }
    Ok(TxnJson { conds, writes })
}
