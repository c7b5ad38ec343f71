//! `corekv cli`: one request to a running server.
//!
//! Exit codes: 0 success; 1 `get` of a missing key; 2 any error, with its stable
//! name first on stderr. Values are written to stdout byte for byte (a newline is
//! added only when stdout is a terminal).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use corekv::net::client::{Client, ClientError, ScanFilter};

#[derive(Args, Debug)]
pub struct CliArgs {
    /// Server address.
    #[arg(long, env = "COREKV_ADDR", default_value = "127.0.0.1:7070")]
    pub addr: String,
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Subcommand, Debug)]
pub enum CliCommand {
    /// Check the server answers.
    Ping,
    /// Print the server's protocol version, shard count and limits.
    Hello,
    /// Print the value of KEY.
    Get { key: String },
    /// Set KEY to VALUE.
    Put { key: String, value: String },
    /// Delete KEY.
    Del { key: String },
    /// Print the values of several keys, one per line (missing keys: empty line,
    /// and exit code 1).
    Mget { keys: Vec<String> },
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
    match execute(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}: {e}", e.name());
            ExitCode::from(2)
        }
    }
}

fn execute(args: &CliArgs) -> Result<ExitCode, ClientError> {
    let mut client = Client::connect(args.addr.as_str())?;
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
                "protocol_version={} shard_count={} key_bytes_max={} value_bytes_max={} server_version={}",
                h.protocol_version, h.shard_count, h.key_bytes_max, h.value_bytes_max, h.server_version
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
        CliCommand::Put { key, value } => {
            client.put(key.as_bytes(), value.as_bytes())?;
            print(&mut stdout, b"OK");
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
                    (want - printed).min(corekv::shard::scan::SCAN_LIMIT_MAX as usize) as u32;
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
        CliCommand::Del { key } => {
            let existed = client.delete(key.as_bytes())?;
            print(&mut stdout, if existed { b"1" } else { b"0" });
        }
    }
    Ok(ExitCode::SUCCESS)
}
