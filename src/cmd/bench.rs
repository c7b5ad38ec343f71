//! `corekv bench`: run a workload against corekv (native protocol) or any RESP
//! server, print the latency table, optionally write JSON, an HdrHistogram log
//! and an SVG percentile plot.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use corekv::bench::driver::{self, BenchConfig};
use corekv::bench::proto::Protocol;
use corekv::bench::report;
use corekv::bench::workload::{workload, Distribution, OpType, ValueSize};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub addr: String,
    /// native (corekv) or resp (Redis protocol).
    #[arg(long, default_value = "native")]
    pub protocol: Protocol,
    /// CPUs for the client's executors, e.g. 0 or 0,1.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub client_cores: Vec<usize>,
    /// Connections in total.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// YCSB workload A-F, ping, or custom (with --mix).
    #[arg(long, default_value = "A")]
    pub workload: String,
    /// Custom mix, e.g. get=0.9,put=0.1.
    #[arg(long)]
    pub mix: Option<String>,
    /// uniform, zipfian or latest (default: the workload's own).
    #[arg(long)]
    pub distribution: Option<Distribution>,
    /// Zipfian skew.
    #[arg(long, default_value_t = 0.99)]
    pub theta: f64,
    /// Records in the data set.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Value size in bytes, or MIN-MAX.
    #[arg(long, default_value = "256")]
    pub value_size: ValueSize,
    /// Insert the records first (the load phase; not timed as part of the run).
    #[arg(long)]
    pub load: bool,
    /// Only load, do not run the workload.
    #[arg(long)]
    pub load_only: bool,
    /// Seconds excluded from the results at the start of the run.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Open loop at this many ops/s in total (latency from intended send time).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Name of the target in reports (e.g. corekv-sync, redis-always).
    #[arg(long, default_value = "target")]
    pub label: String,
    /// Write the result document here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an HdrHistogram interval log here (one histogram per op type).
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
    /// Write a latency-by-percentile SVG here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: BenchArgs) -> ExitCode {
    match execute(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("BENCH_FAILED: {e}");
            ExitCode::from(2)
        }
    }
}

fn execute(args: &BenchArgs) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let addr = args
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("address {}: {e}", args.addr))?
        .next()
        .ok_or_else(|| format!("address {} resolves to nothing", args.addr))?;
    let w = workload(
        &args.workload,
        args.mix.as_deref(),
        args.distribution,
        args.theta,
        args.keys,
    )?;
    if args.protocol == Protocol::Resp && w.mix.0.iter().any(|(op, _)| *op == OpType::Scan) {
        return Err("workload E needs an ordered range scan, which RESP does not have; use --protocol native".into());
    }
    let cfg = BenchConfig {
        addr,
        protocol: args.protocol,
        client_cores: args.client_cores.clone(),
        connections: args.connections,
        pipeline: args.pipeline,
        workload: w,
        keys: args.keys,
        value_size: args.value_size,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        rate: args.rate,
        seed: args.seed,
        progress: !args.quiet,
    };
    if args.load || args.load_only {
        let m = driver::load(&cfg)?;
        let h = &m.hists[OpType::Insert.index()];
        eprintln!(
            "loaded {} records in {:.1} s ({:.0} inserts/s), {} errors",
            h.len(),
            m.seconds,
            h.len() as f64 / m.seconds,
            m.errors[OpType::Insert.index()]
        );
        if args.load_only {
            return Ok(());
        }
    }
    let cpu_before = report::cpu_seconds();
    let wall = std::time::Instant::now();
    let m = driver::run(&cfg)?;
    let cpu_percent = 100.0 * (report::cpu_seconds() - cpu_before) / wall.elapsed().as_secs_f64();
    println!(
        "{} workload {} on {} ({:?}), {} connections x pipeline {}, {}",
        args.label,
        cfg.workload.name,
        cfg.addr,
        cfg.protocol,
        cfg.connections,
        cfg.pipeline,
        match cfg.rate {
            Some(r) => format!("open loop at {r:.0} ops/s"),
            None => "closed loop".into(),
        }
    );
    print!("{}", report::table(&m, cpu_percent));
    if let Some(path) = &args.json {
        let doc = report::json(&cfg, &m, cpu_percent, &args.label);
        std::fs::write(path, format!("{doc:#}\n"))
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.hdr_log {
        corekv::bench::report::write_hdr_log(path, &m)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        corekv::bench::plot::percentile_svg(path, &[(args.label.as_str(), &m)])
            .map_err(|e| format!("plot {}: {e}", path.display()))?;
    }
    let errors: u64 = m.errors.iter().sum();
    if errors > 0 {
        eprintln!("warning: {errors} requests failed (see the errors column)");
    }
    Ok(())
}
