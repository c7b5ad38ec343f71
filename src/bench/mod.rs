//! `corekv bench`: an honest latency benchmark for corekv and its peers.
//!
//! It owns workload generation (YCSB A–F, custom mixes, uniform / zipfian /
//! latest keys), the client-side protocols (native and RESP2), the load driver
//! (pinned client executors, connections, pipelining, closed and open loop with
//! coordinated-omission correction) and reporting. It talks to servers only over
//! TCP and must never reach into the engine: it measures what a user would see.

pub mod bank;
pub mod driver;
pub mod keygen;
pub mod plot;
pub mod proto;
pub mod report;
pub mod workload;
