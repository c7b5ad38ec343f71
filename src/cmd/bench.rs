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
    /// YCSB workload A-F, ping, custom (with --mix), or bank (the transaction
    /// invariant check: --load creates --keys accounts; a run checks the total).
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
    /// Compare targets in one run: LABEL=PROTOCOL@HOST:PORT, repeatable (e.g.
    /// corekv=native@127.0.0.1:7070 redis=resp@127.0.0.1:6379). The first is the
    /// baseline of the ratio table. Overrides --addr/--protocol/--label.
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// Run each target this many times (interleaved) and report the median run.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Microseconds an idle client executor spins before sleeping.
    #[arg(long, default_value_t = 0)]
    pub client_spin_us: u64,
    /// Native protocol: connection i keeps reconnecting until the server's
    /// HELLO says shard i % shards serves it, then asks only for keys that
    /// shard owns (a shard-aware client: no cross-core hop). Timed run only.
    #[arg(long)]
    pub shard_aware: bool,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: BenchArgs) -> ExitCode {
    if args.workload.eq_ignore_ascii_case("bank") {
        return bank(&args);
    }
    match execute(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("BENCH_FAILED: {e}");
            ExitCode::from(2)
        }
    }
}

struct Target {
    label: String,
    protocol: Protocol,
    addr: std::net::SocketAddr,
}

fn resolve(addr: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| format!("address {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {addr} resolves to nothing"))
}

fn targets(args: &BenchArgs) -> Result<Vec<Target>, String> {
    if args.targets.is_empty() {
        return Ok(vec![Target {
            label: args.label.clone(),
            protocol: args.protocol,
            addr: resolve(&args.addr)?,
        }]);
    }
    args.targets
        .iter()
        .map(|t| {
            let (label, rest) = t
                .split_once('=')
                .ok_or_else(|| format!("--target {t}: expected LABEL=PROTOCOL@ADDR"))?;
            let (proto, addr) = rest
                .split_once('@')
                .ok_or_else(|| format!("--target {t}: expected LABEL=PROTOCOL@ADDR"))?;
            Ok(Target {
                label: label.into(),
                protocol: proto.parse()?,
                addr: resolve(addr)?,
            })
        })
        .collect()
}

/// The run with the median total throughput.
fn median(runs: &[(driver::Measured, f64)]) -> &(driver::Measured, f64) {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    let total = |m: &driver::Measured| m.hists.iter().map(|h| h.len()).sum::<u64>();
    order.sort_by_key(|&i| total(&runs[i].0));
    &runs[order[order.len() / 2]]
}

/// `--workload bank`: exit 0 if the invariant held, 1 with the violation.
fn bank(args: &BenchArgs) -> ExitCode {
    use corekv::bench::bank;
    type Outcome = Result<Option<Result<bank::BankReport, bank::BankError>>, String>;
    let result: Outcome = (|| {
        let addr = resolve(&args.addr)?;
        if args.load || args.load_only {
            let mut c = corekv::net::client::Client::connect(addr).map_err(|e| e.to_string())?;
            bank::load(&mut c, args.keys)?;
            println!(
                "created {} accounts x {} = {}",
                args.keys,
                bank::INITIAL_BALANCE,
                args.keys * bank::INITIAL_BALANCE
            );
            if args.load_only {
                return Ok(None);
            }
        }
        Ok(Some(bank::run(&bank::BankConfig {
            addr,
            accounts: args.keys,
            connections: args.connections,
            duration: Duration::from_secs_f64(args.duration),
            check_every: Duration::from_millis(100),
            seed: args.seed,
        })))
    })();
    match result {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(Ok(r))) => {
            println!(
                "bank: invariant held. {} transfers committed, {} conflicts, {} aborted by lock \
                 timeout, {} snapshot checks of all {} accounts",
                r.transfers, r.conflicts, r.aborts, r.checks, args.keys
            );
            ExitCode::SUCCESS
        }
        Ok(Some(Err(bank::BankError::Violation(v)))) => {
            eprintln!("BANK_VIOLATION: {v}");
            ExitCode::from(1)
        }
        Ok(Some(Err(bank::BankError::Failed(e)))) => {
            eprintln!(
                "BENCH_FAILED: the bank run stopped (the invariant held as far as it ran): {e}"
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("BENCH_FAILED: {e}");
            ExitCode::from(2)
        }
    }
}

fn execute(args: &BenchArgs) -> Result<(), String> {
    let targets = targets(args)?;
    let w = workload(
        &args.workload,
        args.mix.as_deref(),
        args.distribution,
        args.theta,
        args.keys,
    )?;
    let make = |t: &Target| BenchConfig {
        addr: t.addr,
        protocol: t.protocol,
        client_cores: args.client_cores.clone(),
        connections: args.connections,
        pipeline: args.pipeline,
        workload: w.clone(),
        keys: args.keys,
        value_size: args.value_size,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        rate: args.rate,
        seed: args.seed,
        progress: !args.quiet,
        spin: Duration::from_micros(args.client_spin_us),
        shard_aware: args.shard_aware && t.protocol == Protocol::Native,
        shards: match t.protocol {
            Protocol::Native => corekv::net::client::Client::connect(t.addr)
                .and_then(|mut c| c.hello())
                .map_or(1, |h| h.shard_count),
            Protocol::Resp => 1,
        },
    };
    for t in &targets {
        if t.protocol == Protocol::Resp && w.mix.0.iter().any(|(op, _)| *op == OpType::Scan) {
            return Err(format!(
                "{}: workload E needs an ordered range scan, which RESP does not have",
                t.label
            ));
        }
        if args.load || args.load_only {
            let m = driver::load(&make(t))?;
            let h = &m.hists[OpType::Insert.index()];
            eprintln!(
                "{}: loaded {} records in {:.1} s ({:.0} inserts/s), {} errors, {} re-sent after OVERLOADED",
                t.label,
                h.len(),
                m.seconds,
                h.len() as f64 / m.seconds,
                m.errors[OpType::Insert.index()],
                m.resent
            );
        }
    }
    if args.load_only {
        return Ok(());
    }
    let mut results: Vec<Vec<(driver::Measured, f64)>> =
        targets.iter().map(|_| Vec::new()).collect();
    for round in 0..args.repeat.max(1) {
        for (i, t) in targets.iter().enumerate() {
            let cfg = make(t);
            let cpu_before = report::cpu_seconds();
            let wall = std::time::Instant::now();
            let m = driver::run(&cfg)?;
            let cpu = 100.0 * (report::cpu_seconds() - cpu_before) / wall.elapsed().as_secs_f64();
            if let Some(path) = &args.json {
                let path = if targets.len() > 1 || args.repeat > 1 {
                    path.with_file_name(format!(
                        "{}-{}-{round}.json",
                        path.file_stem()
                            .map_or("bench".into(), |s| s.to_string_lossy()),
                        t.label
                    ))
                } else {
                    path.clone()
                };
                let doc = report::json(&cfg, &m, cpu, &t.label);
                std::fs::write(&path, format!("{doc:#}\n"))
                    .map_err(|e| format!("write {}: {e}", path.display()))?;
            }
            results[i].push((m, cpu));
        }
    }
    let mode = match args.rate {
        Some(r) => format!("open loop at {r:.0} ops/s"),
        None => "closed loop".into(),
    };
    for (t, runs) in targets.iter().zip(&results) {
        let (m, cpu) = median(runs);
        println!(
            "{} ({:?} {}): workload {}, {} connections x pipeline {}, {mode}{}",
            t.label,
            t.protocol,
            t.addr,
            w.name,
            args.connections,
            args.pipeline,
            if runs.len() > 1 {
                format!(", median of {} runs", runs.len())
            } else {
                String::new()
            }
        );
        print!("{}", report::table(m, *cpu));
    }
    if targets.len() > 1 {
        let medians: Vec<(&str, &driver::Measured)> = targets
            .iter()
            .zip(&results)
            .map(|(t, r)| (t.label.as_str(), &median(r).0))
            .collect();
        print!("{}", report::ratios(&medians));
    }
    if let Some(path) = &args.hdr_log {
        report::write_hdr_log(path, &median(&results[0]).0)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let runs: Vec<(&str, &driver::Measured)> = targets
            .iter()
            .zip(&results)
            .map(|(t, r)| (t.label.as_str(), &median(r).0))
            .collect();
        corekv::bench::plot::percentile_svg(path, &runs)
            .map_err(|e| format!("plot {}: {e}", path.display()))?;
    }
    let errors: u64 = results
        .iter()
        .flatten()
        .map(|(m, _)| m.errors.iter().sum::<u64>())
        .sum();
    if errors > 0 {
        eprintln!("warning: {errors} requests failed (see the errors columns)");
    }
    Ok(())
}
