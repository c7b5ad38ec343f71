//! Subcommands of the `corekv` binary. Each turns flags into library calls and
//! results into output and exit codes; none contains engine logic.

pub mod backup;
pub mod bench;
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod hostfacts;
pub mod restore;
pub mod serve;
pub mod settings;
pub mod tune;
pub mod user;
pub mod verify;
