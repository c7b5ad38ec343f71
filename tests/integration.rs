//! The integration tests, one test binary (issue 19's CI budget): each file
//! under tests/ is a module here. One binary links once instead of once per
//! file, and its tests share one pool of test threads, so a long test (the
//! README's fresh-clone release build, the simulations) runs beside the
//! others instead of before or after them.
//!
//! Two files stay binaries of their own (Cargo.toml, `[[test]]`):
//! tests/alloc_steady_state.rs installs a counting global allocator, and
//! tests/runtime_patches.rs counts a process's syscalls and ring entries,
//! which other tests running beside it would disturb.
//!
//! Run one file's tests with a filter: `cargo test --test integration crash::`.

mod common;

// libtest starts tests in the order of their names, two at a time here. The
// README test's release build of a fresh clone is the longest test of all
// (~3.5 minutes on 2 cores, CI's first run), so its module is named to sort
// first: it starts at once and everything else runs beside it, instead of
// it starting two-thirds of the way through and ending the run alone.
#[path = "readme.rs"]
mod _readme;

mod admin;
mod alerts;
mod auth;
mod backup;
mod bench_harness;
mod config;
mod crash;
mod disk_full;
mod docs_commands;
mod embedded;
mod errors_doc;
mod expiry;
mod fuzz_replay;
mod garbage;
mod limits;
mod lsm_faults;
mod memory_bounds;
mod ops;
mod power_loss;
mod redis_py;
mod relative_paths;
mod resp;
mod resp_auth;
mod resp_keys;
mod resp_multi;
mod restart_bind;
mod rmw;
mod scan;
mod scripts;
mod server;
mod settings_doc;
mod simulation;
mod smoke;
mod storage;
mod storage_model;
mod tidy;
mod tls;
mod txn;
mod txn_crash;
mod txn_history;
mod txn_restart;
mod txn_simulation;
mod verify;
mod wal_files;
