//! The `corekv` binary: one executable, one subcommand per job.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "corekv",
    version,
    about = "A thread-per-core, shared-nothing storage engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(cmd::settings::ServeArgs),
    /// Measure throughput and latency against corekv or a RESP server.
    Bench(cmd::bench::BenchArgs),
    /// Talk to a running server.
    Cli(cmd::cli::CliArgs),
    /// Check or show the effective configuration.
    #[command(subcommand)]
    Config(cmd::config::ConfigCommand),
    /// Collect a diagnostics archive (config, health, metrics, logs, system facts).
    Diagnose(cmd::diagnose::DiagnoseArgs),
    /// Check a stopped server's data directory (or a backup): metadata, tables, WAL.
    Verify(cmd::verify::VerifyArgs),
    /// Take an online, consistent backup of a running server, and verify it.
    Backup(cmd::backup::BackupArgs),
    /// Restore a backup into a data directory (the server must be stopped).
    Restore(cmd::restore::RestoreArgs),
    /// Check this host's tuning for corekv.
    #[command(subcommand)]
    Tune(cmd::tune::TuneCommand),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The settings layer needs to know which values came from flags or env.
    let sub = |name: &str| {
        matches
            .subcommand_matches(name)
            .cloned()
            .unwrap_or_default()
    };
    match cli.command {
        Command::Serve(args) => cmd::serve::run(args, &sub("serve")),
        Command::Cli(args) => cmd::cli::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Tune(c) => cmd::tune::run(c),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Backup(args) => cmd::backup::run(args),
        Command::Restore(args) => cmd::restore::run(args),
        Command::Diagnose(args) => cmd::diagnose::run(args, &sub("diagnose")),
        Command::Config(c) => {
            let config = sub("config");
            let inner = config
                .subcommand()
                .map(|(_, m)| m.clone())
                .unwrap_or_default();
            cmd::config::run(c, &inner)
        }
    }
}
