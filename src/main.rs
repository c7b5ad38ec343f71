//! The `corekv` binary: one executable, one subcommand per job.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Serve(cmd::serve::ServeArgs),
    /// Talk to a running server.
    Cli(cmd::cli::CliArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::Cli(args) => cmd::cli::run(args),
    }
}
