//! `corekv bench`: run a workload against corekv (native protocol) or any RESP
//! server, print the latency table, optionally write JSON, an HdrHistogram log
//! and an SVG percentile plot.
//!
//! Exit codes (docs/benchmarking.md): 0 the run (or load) completed, every load
//! insert succeeded and, for `--workload bank`, the invariant held; 1
//! BANK_VIOLATION; 2 BENCH_FAILED (could not run, a load insert failed, the
//! server closed a connection or stopped answering, bad flags). Errors in the
//! timed run of a YCSB workload are measurements (the errors column), not
//! failures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use corekv::bench::driver::{self, BenchConfig, BenchTls};
use corekv::bench::proto::Protocol;
use corekv::bench::report;
use corekv::bench::workload::{workload, Distribution, OpType, ValueSize};
use corekv::net::client::TlsOptions;
use corekv::net::codec::HelloInfo;

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
    /// Seconds a connection with requests in flight waits for the server to
    /// answer (or accept bytes) before the run fails.
    #[arg(long, default_value_t = driver::REPLY_TIMEOUT.as_secs_f64())]
    pub reply_timeout: f64,
    /// --workload bank: seconds one invariant check keeps retrying a snapshot
    /// read the server aborted (lock contention) before the run fails.
    #[arg(long, default_value_t = 60.0)]
    pub check_patience: f64,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Native targets: every connection authenticates first.
    #[command(flatten)]
    pub credentials: super::user::Credentials,
    /// Speak TLS (a server with tls_cert_file), with `corekv cli`'s flags:
    /// --tls-ca-file, --tls-server-name, and --tls-cert-file/--tls-key-file
    /// for a server with tls_client_ca_file. Applies to --addr; with
    /// --target, only to targets whose protocol ends in `+tls`
    /// (corekv-tls=native+tls@HOST:PORT), so one run can compare plaintext
    /// and TLS servers.
    #[command(flatten)]
    pub tls: super::cli::TlsClientArgs,
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
    /// TLS: the options (for HELLO through the Rust client) and the
    /// configuration the driver's connections use, built from them.
    tls: Option<(TlsOptions, BenchTls)>,
}

/// TLS for a target at `addr` (as given, for the server name) when `on`.
fn target_tls(
    args: &BenchArgs,
    addr: &str,
    on: bool,
) -> Result<Option<(TlsOptions, BenchTls)>, String> {
    if !on {
        return Ok(None);
    }
    let options = args
        .tls
        .options(addr)
        .ok_or_else(|| format!("{addr}: a +tls target needs --tls-ca-file"))?;
    let (config, server_name) = options.rustls().map_err(|e| format!("{}: {e}", e.name()))?;
    Ok(Some((
        options,
        BenchTls {
            config,
            server_name,
        },
    )))
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
            tls: target_tls(args, &args.addr, args.tls.tls_ca_file.is_some())?,
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
            let (proto, tls) = match proto.strip_suffix("+tls") {
                Some(p) => (p, true),
                None => (proto, false),
            };
            Ok(Target {
                label: label.into(),
                protocol: proto.parse()?,
                addr: resolve(addr)?,
                tls: target_tls(args, addr, tls)?,
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

/// `--workload bank`: exit 0 if the invariant held, 1 with the violation, 2
/// if the run could not complete (BENCH_FAILED).
fn bank(args: &BenchArgs) -> ExitCode {
    use corekv::bench::bank;
    type Outcome = Result<Option<Result<bank::BankReport, bank::BankError>>, String>;
    let cpu_before = report::cpu_seconds();
    let wall = std::time::Instant::now();
    let addr = resolve(&args.addr);
    if args.tls.tls_ca_file.is_some() {
        eprintln!("BENCH_FAILED: --workload bank does not speak TLS yet; run it against a plaintext listener");
        return ExitCode::from(2);
    }
    let result: Outcome = (|| {
        let addr = addr.clone()?;
        let auth = args.credentials.resolve()?;
        if args.load || args.load_only {
            let mut c = corekv::net::client::Client::connect(addr).map_err(|e| e.to_string())?;
            c.set_timeout(Some(driver::REPLY_TIMEOUT))
                .map_err(|e| e.to_string())?;
            if let Some((user, password)) = &auth {
                c.auth(user, password).map_err(|e| e.to_string())?;
            }
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
            check_patience: Duration::from_secs_f64(args.check_patience),
            seed: args.seed,
            auth,
        })))
    })();
    match result {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(Ok(r))) => {
            let us = |p: f64| r.latency.value_at_percentile(p) as f64 / 1000.0;
            println!(
                "bank: invariant held over {:.1} s with {} connections: {} transfers committed \
                 ({:.0}/s), {} retries ({:.0}/s), {} aborts ({:.0}/s), {} stale reads, \
                 {} transfers abandoned after {} attempts",
                r.seconds,
                args.connections,
                r.transfers,
                r.rate(r.transfers),
                r.retries,
                r.rate(r.retries),
                r.aborts,
                r.rate(r.aborts),
                r.conflicts,
                r.gave_up,
                bank::TRANSFER_ATTEMPTS
            );
            println!(
                "bank: transfer latency (retries included) p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs; \
                 {} snapshot checks of all {} accounts in {} reads ({} paused the transfers)",
                us(50.0),
                us(99.0),
                r.latency.max() as f64 / 1000.0,
                r.checks,
                args.keys,
                r.check_attempts,
                r.paused_checks
            );
            if let (Some(path), Ok(addr)) = (&args.json, &addr) {
                let cpu =
                    100.0 * (report::cpu_seconds() - cpu_before) / wall.elapsed().as_secs_f64();
                let doc =
                    report::bank_json(*addr, &args.label, args.connections, args.keys, &r, cpu);
                if let Err(e) = std::fs::write(path, format!("{doc:#}\n")) {
                    eprintln!("BENCH_FAILED: write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
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
        Ok(Some(Err(bank::BankError::Refused(e)))) | Err(e) => {
            eprintln!("BENCH_FAILED: {e}");
            ExitCode::from(2)
        }
    }
}

/// The native target's HELLO (shard count, limits), refusing values the
/// server would reject: without this a load of oversize values ends in
/// FRAME_TOO_LARGE and closed connections. RESP targets: `None`.
fn hello_of(t: &Target, args: &BenchArgs) -> Result<Option<HelloInfo>, String> {
    let value_size = &args.value_size;
    if t.protocol != Protocol::Native {
        return Ok(None);
    }
    let auth = args.credentials.resolve()?;
    let connected = match &t.tls {
        None => corekv::net::client::Client::connect(t.addr),
        Some((options, _)) => {
            corekv::net::client::Client::connect_tls(&t.addr.to_string(), options)
        }
    };
    let h = connected
        .and_then(|mut c| {
            c.set_timeout(Some(Duration::from_secs_f64(args.reply_timeout)))?;
            if let Some((user, password)) = &auth {
                c.auth(user, password)?;
            }
            c.hello()
        })
        .map_err(|e| format!("{}: HELLO: {e}", t.label))?;
    if value_size.max > h.value_bytes_max as usize {
        return Err(format!(
            "{}: VALUE_TOO_LARGE: --value-size allows values of {} bytes; the server at {} \
             accepts at most {} (its --value-bytes-max)",
            t.label, value_size.max, t.addr, h.value_bytes_max
        ));
    }
    Ok(Some(h))
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
    let auth = args.credentials.resolve()?;
    let make = |t: &Target, hello: &Option<HelloInfo>| BenchConfig {
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
        shards: hello.as_ref().map_or(1, |h| h.shard_count),
        reply_timeout: Duration::from_secs_f64(args.reply_timeout),
        auth: auth.clone(),
        tls: t.tls.as_ref().map(|(_, b)| b.clone()),
    };
    let hellos = targets
        .iter()
        .map(|t| hello_of(t, args))
        .collect::<Result<Vec<_>, String>>()?;
    for (t, hello) in targets.iter().zip(&hellos) {
        if t.protocol == Protocol::Resp && w.mix.0.iter().any(|(op, _)| *op == OpType::Scan) {
            return Err(format!(
                "{}: workload E needs an ordered range scan, which RESP does not have",
                t.label
            ));
        }
        if args.load || args.load_only {
            let m = driver::load(&make(t, hello)).map_err(|e| format!("{}: load: {e}", t.label))?;
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
            // A load that left records out makes every later figure a lie.
            let failed = m.error_count();
            if failed > 0 {
                return Err(format!(
                    "{}: the load failed: {failed} of {} inserts were refused (first: {}); \
                     the data set is incomplete",
                    t.label,
                    args.keys,
                    m.first_error.as_deref().unwrap_or("no detail")
                ));
            }
        }
    }
    if args.load_only {
        return Ok(());
    }
    let mut results: Vec<Vec<(driver::Measured, f64)>> =
        targets.iter().map(|_| Vec::new()).collect();
    for round in 0..args.repeat.max(1) {
        for (i, t) in targets.iter().enumerate() {
            let cfg = make(t, &hellos[i]);
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
        if args.shard_aware && t.protocol == Protocol::Native {
            print!("{}", report::routing(m));
        }
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
