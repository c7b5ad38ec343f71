//! `corekv tune check`: print how this host compares with what corekv wants.
//!
//! Exit code 0 unless a fact would stop corekv from running or being durable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::hostfacts::{gather, Verdict};

#[derive(Subcommand, Debug)]
pub enum TuneCommand {
    /// Read the host and print current value, recommended value and why.
    Check(TuneArgs),
}

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// The data directory to check the filesystem and device of.
    #[arg(long, env = "COREKV_DATA_DIR", default_value = "./corekv-data")]
    pub data_dir: PathBuf,
}

pub fn run(cmd: TuneCommand) -> ExitCode {
    let TuneCommand::Check(args) = cmd;
    let facts = gather(&args.data_dir);
    let w_item = facts
        .iter()
        .map(|f| f.item.len())
        .max()
        .unwrap_or(0)
        .min(48);
    let w_cur = facts
        .iter()
        .map(|f| f.current.len())
        .max()
        .unwrap_or(0)
        .min(40);
    println!(
        "{:<5} {:<w_item$} {:<w_cur$} {:<28} why",
        "", "item", "current", "recommended"
    );
    for f in &facts {
        println!(
            "{:<5} {:<w_item$} {:<w_cur$} {:<28} {}",
            f.verdict.name(),
            f.item,
            f.current,
            f.recommended,
            f.why
        );
    }
    let fails = facts.iter().filter(|f| f.verdict == Verdict::Fail).count();
    let warns = facts.iter().filter(|f| f.verdict == Verdict::Warn).count();
    println!("\n{} checks: {fails} failing, {warns} to improve (see docs/tuning.md; tuning/apply.sh applies them)", facts.len());
    if fails > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
