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
    /// Add, change, remove or list the users of a users file.
    #[command(subcommand)]
    User(cmd::user::UserCommand),
}

/// COREKV_* variables read outside clap: logging, test and fault-injection
/// knobs. The server's settings come from the settings table
/// (`cmd::settings::known_env_vars`); the other subcommands' from clap's `env`.
const OTHER_ENV: &[&str] = &[
    "COREKV_LOG",
    "COREKV_PASSWORD",
    "COREKV_FAILPOINT",
    "COREKV_TEST_BIN",
    "COREKV_SIM_SEED",
    "COREKV_SIM_SEEDS",
    "COREKV_TXN_SIM_SEEDS",
    "COREKV_RESTART_CYCLES",
    "COREKV_CRASH_CYCLES",
    "COREKV_POWER_SEEDS",
    "COREKV_MUTATIONS",
    "COREKV_MODEL_CASES",
    "COREKV_BENCH_ENTRIES",
];

/// Every (long flag, environment variable) pair in the command tree.
fn env_flags(cmd: &clap::Command, out: &mut Vec<(String, String)>) {
    for a in cmd.get_arguments() {
        if let (Some(long), Some(env)) = (a.get_long(), a.get_env()) {
            out.push((long.to_string(), env.to_string_lossy().into_owned()));
        }
    }
    for sub in cmd.get_subcommands() {
        env_flags(sub, out);
    }
}

/// A misspelled COREKV_* variable would be silently ignored: say so.
fn warn_unknown_env(known: &[(String, String)]) {
    let settings = cmd::settings::known_env_vars();
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("COREKV_")
            && !settings.iter().any(|env| env == name)
            && !known.iter().any(|(_, env)| env == name)
            && !OTHER_ENV.contains(&name)
        {
            eprintln!(
                "warning: environment variable {name} is not a corekv setting and is ignored \
                 (`corekv config show` lists the settings; their variables are COREKV_ + the key in upper case)"
            );
        }
    }
}

fn main() -> ExitCode {
    let mut known = Vec::new();
    env_flags(&Cli::command(), &mut known);
    warn_unknown_env(&known);
    let matches = match cmd::settings::with_table_help(Cli::command()).try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            // A bad value that came from a COREKV_* variable: clap names only
            // the flag, so name the variable the operator must change.
            if let Some(clap::error::ContextValue::String(arg)) =
                e.get(clap::error::ContextKind::InvalidArg)
            {
                let long = arg
                    .trim_start_matches("--")
                    .split([' ', '='])
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let on_command_line = std::env::args()
                    .any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
                if let Some((_, env)) = known.iter().find(|(l, _)| *l == long) {
                    if !on_command_line && std::env::var_os(env).is_some() {
                        eprintln!(
                            "error: the value of --{long} comes from the environment variable {env}; fix or unset {env}"
                        );
                    }
                }
            }
            e.exit()
        }
    };
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
        Command::User(c) => cmd::user::run(c),
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
