//! `corekv cli`: one request to a running server.
//!
//! Exit codes: 0 success; 1 `get` of a missing key; 2 any error, with its stable
//! name first on stderr. Values are written to stdout byte for byte (a newline is
//! added only when stdout is a terminal).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use corekv::net::client::{Client, ClientError};

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
        CliCommand::Del { key } => {
            let existed = client.delete(key.as_bytes())?;
            print(&mut stdout, if existed { b"1" } else { b"0" });
        }
    }
    Ok(ExitCode::SUCCESS)
}
