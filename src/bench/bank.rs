//! `corekv bench --workload bank`: a correctness check users can run against
//! their own server, including across crashes and restarts.
//!
//! Accounts `bank-000000`… hold decimal balances spread over every shard (the
//! key hash spreads them). `--load` creates them with a known total and, in
//! the same atomic MPUT as the last accounts, records their number under
//! [`META_KEY`]; a run never resets them. A run first refuses a `--keys` that
//! does not match the loaded accounts (that is a usage error, not lost data),
//! then checks the invariant (one snapshot MGET of every account: the sum is
//! the expected total and no balance is negative), then runs random transfers
//! from many connections (snapshot-read two balances, then a TXN conditioned
//! on both being unchanged), re-checks the invariant periodically from another
//! connection and once more at the end. Any violation is returned with what
//! was seen.
//!
//! Contention is ordinary, not a failure: a transfer the server rolled back
//! (TXN_ABORTED, LOCK_TIMEOUT) or whose read went stale (CONDITION_FAILED) is
//! read again and retried after a jittered exponential backoff, as a real
//! client would; each retry is counted. The snapshot read of every account
//! needs every account's lock at once on each shard, which busy transfers
//! rarely leave free (the lock table grants a set all at once or not at all,
//! with no queue), so after its first abort the checker pauses new transfers
//! until its retry gets through; it gives up, naming its attempts, only after
//! `check_patience`.
//!
//! It talks to the server only through the public client, like a user would.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use crate::core::status::Status;
use crate::core::txn_format::{Cond, Write};
use crate::net::client::{Client, ClientError, TxnResult};

/// The balance every account starts with.
pub const INITIAL_BALANCE: u64 = 1000;

/// Where `--load` records how many accounts it created (a decimal number).
/// Written atomically with the last accounts, so it exists only once the
/// load is complete.
pub const META_KEY: &[u8] = b"bank-accounts";

/// Attempts of one transfer before it is abandoned (counted in `gave_up`;
/// harmless to the invariant: nothing of it was applied).
pub const TRANSFER_ATTEMPTS: u32 = 32;
/// A transfer's backoff before retry n is drawn from [c/2, c], c = min(cap, base·2^n).
const TRANSFER_BACKOFF: (Duration, Duration) =
    (Duration::from_micros(500), Duration::from_millis(50));
/// The snapshot check's backoff, same shape.
const CHECK_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(500));

pub fn account_key(i: u64) -> Vec<u8> {
    format!("bank-{i:06}").into_bytes()
}

/// What a bank run saw.
#[derive(Debug, Clone)]
pub struct BankReport {
    /// Transfers committed.
    pub transfers: u64,
    /// Attempts run again (after an abort or a stale read).
    pub retries: u64,
    /// Attempts the server rolled back (TXN_ABORTED, LOCK_TIMEOUT), the
    /// two-balance reads included.
    pub aborts: u64,
    /// Attempts whose condition failed because a balance changed in between.
    pub conflicts: u64,
    /// Transfers abandoned after [`TRANSFER_ATTEMPTS`].
    pub gave_up: u64,
    /// Snapshot checks of every account that passed.
    pub checks: u64,
    /// Snapshot reads it took (aborted ones included).
    pub check_attempts: u64,
    /// Checks that paused the transfers to get through.
    pub paused_checks: u64,
    /// Seconds the transfers ran.
    pub seconds: f64,
    /// Committed transfers, from the first read to the commit (retries included), ns.
    pub latency: Histogram<u64>,
}

impl Default for BankReport {
    fn default() -> Self {
        BankReport {
            transfers: 0,
            retries: 0,
            aborts: 0,
            conflicts: 0,
            gave_up: 0,
            checks: 0,
            check_attempts: 0,
            paused_checks: 0,
            seconds: 0.0,
            latency: super::driver::new_hist(),
        }
    }
}

impl BankReport {
    fn add(&mut self, o: &BankReport) {
        self.transfers += o.transfers;
        self.retries += o.retries;
        self.aborts += o.aborts;
        self.conflicts += o.conflicts;
        self.gave_up += o.gave_up;
        self.checks += o.checks;
        self.check_attempts += o.check_attempts;
        self.paused_checks += o.paused_checks;
        let _ = self.latency.add(&o.latency);
    }

    /// Per second of the run.
    pub fn rate(&self, n: u64) -> f64 {
        if self.seconds > 0.0 {
            n as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Jittered exponential backoff, bounded by its cap.
struct Backoff {
    base: Duration,
    cap: Duration,
    retries: u32,
}

impl Backoff {
    fn new((base, cap): (Duration, Duration)) -> Backoff {
        Backoff {
            base,
            cap,
            retries: 0,
        }
    }

    /// The next pause: half fixed, half random, so retries spread out.
    fn next(&mut self, rng: &mut impl Rng) -> Duration {
        let ceil = self
            .base
            .saturating_mul(1 << self.retries.min(20))
            .min(self.cap);
        self.retries += 1;
        let half = ceil / 2;
        half + Duration::from_nanos(rng.gen_range(0..=half.as_nanos() as u64))
    }
}

/// Lets the checker hold new transfers back while its snapshot read retries.
#[derive(Default)]
pub struct Gate {
    paused: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn set(&self, paused: bool) {
        *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = paused;
        if !paused {
            self.opened.notify_all();
        }
    }

    /// Wait while the gate is closed (or until `stop`).
    fn pass(&self, stop: &AtomicBool) {
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        while *paused && !stop.load(Ordering::Relaxed) {
            paused = self
                .opened
                .wait_timeout(paused, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Reopens the gate however the check ends.
struct Reopen<'a>(Option<&'a Gate>);

impl Drop for Reopen<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            g.set(false);
        }
    }
}

fn is_contention(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Status {
            status: Status::TxnAborted | Status::LockTimeout,
            ..
        }
    )
}

fn parse_balance(key: &[u8], v: &Option<Vec<u8>>) -> Result<i64, String> {
    let k = String::from_utf8_lossy(key);
    let v = v
        .as_ref()
        .ok_or_else(|| format!("account {k} is missing"))?;
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            format!(
                "account {k} holds {:?}, not a balance",
                String::from_utf8_lossy(v)
            )
        })
}

/// Create `accounts` accounts with [`INITIAL_BALANCE`] each, in atomic
/// batches, the last of which also records the count under [`META_KEY`].
/// Refuses if the first account or the record exists: a bank is never reset.
pub fn load(client: &mut Client, accounts: u64) -> Result<(), String> {
    if accounts < 2 {
        return Err("a bank needs at least 2 accounts (--keys)".into());
    }
    let existing = client
        .mget(&[&account_key(0), META_KEY])
        .map_err(|e| format!("checking for existing accounts: {e}"))?;
    if existing.iter().any(Option::is_some) {
        return Err("the accounts already exist; a bank run never resets them \
                    (use a fresh data directory to start over)"
            .into());
    }
    let value = INITIAL_BALANCE.to_string();
    let count = accounts.to_string();
    let keys: Vec<Vec<u8>> = (0..accounts).map(account_key).collect();
    let chunks: Vec<&[Vec<u8>]> = keys.chunks(500).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut pairs: Vec<(&[u8], &[u8])> =
            chunk.iter().map(|k| (&k[..], value.as_bytes())).collect();
        if i + 1 == chunks.len() {
            pairs.push((META_KEY, count.as_bytes()));
        }
        client
            .mput(&pairs)
            .map_err(|e| format!("loading accounts: {e}"))?;
    }
    Ok(())
}

/// Refuse a run whose `accounts` is not what was loaded: checking 500 of
/// 1,000 accounts would see half the money and report a violation that is
/// only a wrong flag. Banks loaded before [`META_KEY`] existed (or whose
/// load did not finish) have no record; for them, an account at index
/// `accounts` proves the flag wrong.
pub fn check_account_count(client: &mut Client, accounts: u64) -> Result<(), String> {
    let probe = account_key(accounts);
    let v = client
        .mget(&[META_KEY, &account_key(0), &probe])
        .map_err(|e| format!("reading the bank's account count: {e}"))?;
    let wrong = |loaded: &str| {
        format!(
            "--keys {accounts} does not match the bank: {loaded}; run with the --keys the \
             bank was loaded with (a different count is not a violation, just a wrong flag)"
        )
    };
    match &v[0] {
        Some(raw) => {
            let loaded = std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    format!(
                        "{} holds {:?}, not an account count",
                        String::from_utf8_lossy(META_KEY),
                        String::from_utf8_lossy(raw)
                    )
                })?;
            if loaded != accounts {
                return Err(wrong(&format!(
                    "it was loaded with {loaded} accounts ({} = {loaded})",
                    String::from_utf8_lossy(META_KEY)
                )));
            }
            Ok(())
        }
        None if v[1].is_none() => Err(format!(
            "no bank at this server: account {} does not exist (create the accounts with --load)",
            String::from_utf8_lossy(&account_key(0))
        )),
        None if v[2].is_some() => Err(wrong(&format!(
            "account {} exists, so it holds more accounts",
            String::from_utf8_lossy(&probe)
        ))),
        None => Ok(()),
    }
}

/// Every account's key, in order.
pub fn account_keys(accounts: u64) -> Vec<Vec<u8>> {
    (0..accounts).map(account_key).collect()
}

/// The invariant over one snapshot of every account: balances sum to the
/// initial total and none is negative. `Err` describes the violation.
pub fn check_values(keys: &[Vec<u8>], values: &[Option<Vec<u8>>]) -> Result<(), String> {
    let mut total = 0i64;
    for (k, v) in keys.iter().zip(values) {
        let b = parse_balance(k, v)?;
        if b < 0 {
            return Err(format!(
                "account {} has a negative balance {b}",
                String::from_utf8_lossy(k)
            ));
        }
        total += b;
    }
    let expected = (keys.len() as u64 * INITIAL_BALANCE) as i64;
    if total != expected {
        return Err(format!(
            "the balances sum to {total}, expected {expected} ({} accounts x {INITIAL_BALANCE})",
            keys.len()
        ));
    }
    Ok(())
}

/// Why a check did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankError {
    /// The invariant is broken: what was seen.
    Violation(String),
    /// The check could not run (connection lost, server error).
    Failed(String),
    /// The run was refused before it started (`--keys` does not match the
    /// loaded accounts, no bank loaded).
    Refused(String),
}

impl std::fmt::Display for BankError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BankError::Violation(v) => write!(f, "invariant violated: {v}"),
            BankError::Failed(e) | BankError::Refused(e) => f.write_str(e),
        }
    }
}

/// How long [`check`] retries an aborted snapshot read.
pub const CHECK_PATIENCE: Duration = Duration::from_secs(60);

/// Read every account in one snapshot and check the invariant, retrying an
/// aborted snapshot read for up to [`CHECK_PATIENCE`].
pub fn check(client: &mut Client, accounts: u64) -> Result<(), BankError> {
    check_patiently(
        client,
        accounts,
        CHECK_PATIENCE,
        None,
        &mut BankReport::default(),
    )
}

/// Read every account in one snapshot and check the invariant, retrying a
/// snapshot the server aborted (lock contention) with backoff for up to
/// `patience`. With a `gate`, transfers are held back from the first abort
/// until the snapshot gets through.
pub fn check_patiently(
    client: &mut Client,
    accounts: u64,
    patience: Duration,
    gate: Option<&Gate>,
    report: &mut BankReport,
) -> Result<(), BankError> {
    let keys = account_keys(accounts);
    let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut backoff = Backoff::new(CHECK_BACKOFF);
    let _reopen = Reopen(gate);
    let mut attempts = 0u64;
    let values = loop {
        attempts += 1;
        report.check_attempts += 1;
        match client.mget(&refs) {
            Ok(values) => break values,
            Err(e) if is_contention(&e) => {
                if attempts == 1 {
                    if let Some(g) = gate {
                        g.set(true);
                        report.paused_checks += 1;
                    }
                }
                let pause = backoff.next(&mut rng);
                if started.elapsed() + pause > patience {
                    return Err(BankError::Failed(format!(
                        "the snapshot read of all {accounts} accounts was aborted {attempts} \
                         times in {:.1} s (last: {e}); giving up after --check-patience {:.0} s \
                         (is another client holding the accounts' locks?)",
                        started.elapsed().as_secs_f64(),
                        patience.as_secs_f64()
                    )));
                }
                std::thread::sleep(pause);
            }
            Err(e) => {
                return Err(BankError::Failed(format!(
                    "snapshot read (attempt {attempts}): {e}"
                )))
            }
        }
    };
    check_values(&keys, &values).map_err(BankError::Violation)
}

/// How one transfer attempt ended.
enum Attempt {
    Committed,
    /// The source account was empty: nothing to move.
    Nothing,
    /// A balance changed after it was read (CONDITION_FAILED).
    Stale,
    /// The server rolled the attempt back (lock contention).
    Aborted,
}

fn attempt(
    client: &mut Client,
    rng: &mut impl Rng,
    kf: &[u8],
    kt: &[u8],
) -> Result<Attempt, ClientError> {
    let v = match client.mget(&[kf, kt]) {
        Ok(v) => v,
        Err(e) if is_contention(&e) => return Ok(Attempt::Aborted),
        Err(e) => return Err(e),
    };
    let (Some(vf), Some(vt)) = (&v[0], &v[1]) else {
        return Err(ClientError::Protocol("an account is missing".into()));
    };
    let parse = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    let (Some(bf), Some(bt)) = (parse(vf), parse(vt)) else {
        return Err(ClientError::Protocol("a balance is not a number".into()));
    };
    if bf == 0 {
        return Ok(Attempt::Nothing);
    }
    let amount = rng.gen_range(1..=bf.min(100));
    let (nf, nt) = ((bf - amount).to_string(), (bt + amount).to_string());
    match client.txn(
        &[Cond::Equals(kf, vf), Cond::Equals(kt, vt)],
        &[Write::Put(kf, nf.as_bytes()), Write::Put(kt, nt.as_bytes())],
    ) {
        Ok(TxnResult::Committed) => Ok(Attempt::Committed),
        Ok(TxnResult::ConditionFailed(_)) => Ok(Attempt::Stale),
        Err(e) if is_contention(&e) => Ok(Attempt::Aborted),
        Err(e) => Err(e),
    }
}

/// One transfer between two random accounts, retried (balances read again)
/// after a stale read or an abort, with jittered exponential backoff, up to
/// [`TRANSFER_ATTEMPTS`] attempts. `Err` only for what a retry cannot fix
/// (connection lost, unexpected status).
pub fn transfer(
    client: &mut Client,
    rng: &mut impl Rng,
    accounts: u64,
    report: &mut BankReport,
) -> Result<(), ClientError> {
    let open = Gate::default();
    transfer_gated(
        client,
        rng,
        accounts,
        report,
        &open,
        &AtomicBool::new(false),
    )
}

/// [`transfer`], waiting at `gate` before every attempt and giving up its
/// retries once `stop` is set.
pub fn transfer_gated(
    client: &mut Client,
    rng: &mut impl Rng,
    accounts: u64,
    report: &mut BankReport,
    gate: &Gate,
    stop: &AtomicBool,
) -> Result<(), ClientError> {
    let from = rng.gen_range(0..accounts);
    let to = (from + rng.gen_range(1..accounts)) % accounts;
    let (kf, kt) = (account_key(from), account_key(to));
    let started = Instant::now();
    let mut backoff = Backoff::new(TRANSFER_BACKOFF);
    for n in 0..TRANSFER_ATTEMPTS {
        if n > 0 {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            report.retries += 1;
            std::thread::sleep(backoff.next(rng));
        }
        gate.pass(stop);
        match attempt(client, rng, &kf, &kt)? {
            Attempt::Committed => {
                report.transfers += 1;
                report
                    .latency
                    .saturating_record(started.elapsed().as_nanos() as u64);
                return Ok(());
            }
            Attempt::Nothing => return Ok(()),
            Attempt::Stale => report.conflicts += 1,
            Attempt::Aborted => report.aborts += 1,
        }
    }
    report.gave_up += 1;
    Ok(())
}

/// Settings of one bank run.
#[derive(Debug, Clone)]
pub struct BankConfig {
    pub addr: std::net::SocketAddr,
    pub accounts: u64,
    pub connections: usize,
    pub duration: Duration,
    /// How often the checker takes a snapshot of every account.
    pub check_every: Duration,
    /// How long one check keeps retrying an aborted snapshot read.
    pub check_patience: Duration,
    pub seed: u64,
    /// AUTH as this user (and password) on every connection first.
    pub auth: Option<(String, Vec<u8>)>,
}

/// Check, run transfers for `duration` while checking, check again.
/// `Err` names the first violation, or the error that stopped the run.
pub fn run(cfg: &BankConfig) -> Result<BankReport, BankError> {
    let failed = BankError::Failed;
    let connect = || {
        let c = Client::connect(cfg.addr).map_err(|e| failed(e.to_string()))?;
        c.set_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| failed(e.to_string()))?;
        let mut c = c;
        if let Some((user, password)) = &cfg.auth {
            c.auth(user, password).map_err(|e| failed(e.to_string()))?;
        }
        Ok::<_, BankError>(c)
    };
    let mut checker = connect()?;
    check_account_count(&mut checker, cfg.accounts).map_err(BankError::Refused)?;
    let mut checked = BankReport::default();
    check_patiently(
        &mut checker,
        cfg.accounts,
        cfg.check_patience,
        None,
        &mut checked,
    )
    .map_err(|e| before("before the run", e))?;
    checked.checks += 1;
    let stop = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Gate::default());
    let checks = Arc::new(AtomicU64::new(0));
    let violation: Arc<Mutex<Option<BankError>>> = Arc::new(Mutex::new(None));
    let started = Instant::now();
    let workers: Vec<_> = (0..cfg.connections)
        .map(|i| {
            let mut client = connect()?;
            let (stop, gate, cfg) = (stop.clone(), gate.clone(), cfg.clone());
            Ok(std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed ^ ((i as u64) << 32));
                let mut report = BankReport::default();
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = transfer_gated(
                        &mut client,
                        &mut rng,
                        cfg.accounts,
                        &mut report,
                        &gate,
                        &stop,
                    ) {
                        // Stop the others too: the run is over.
                        stop.store(true, Ordering::Relaxed);
                        return Err(format!("transfer: {e}"));
                    }
                }
                Ok::<_, String>(report)
            }))
        })
        .collect::<Result<_, BankError>>()?;
    let checker_thread = {
        let (stop, gate, checks, violation, cfg) = (
            stop.clone(),
            gate.clone(),
            checks.clone(),
            violation.clone(),
            cfg.clone(),
        );
        std::thread::spawn(move || {
            let mut seen = BankReport::default();
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = check_patiently(
                    &mut checker,
                    cfg.accounts,
                    cfg.check_patience,
                    Some(&gate),
                    &mut seen,
                ) {
                    *violation.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    stop.store(true, Ordering::Relaxed);
                    return (checker, seen);
                }
                checks.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(cfg.check_every);
            }
            (checker, seen)
        })
    };
    let deadline = started + cfg.duration;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10).min(cfg.duration));
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = BankReport::default();
    let mut failure = None;
    for w in workers {
        match w.join() {
            Ok(Ok(r)) => total.add(&r),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some("a transfer thread panicked".into())),
        }
    }
    total.seconds = started.elapsed().as_secs_f64();
    let (mut checker, seen) = checker_thread
        .join()
        .map_err(|_| failed("the checker thread panicked".into()))?;
    total.add(&checked);
    total.add(&seen);
    let violation = violation.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(e) = violation {
        return Err(before("during the run", e));
    }
    if let Some(e) = failure {
        return Err(failed(e));
    }
    check_patiently(
        &mut checker,
        cfg.accounts,
        cfg.check_patience,
        None,
        &mut total,
    )
    .map_err(|e| before("after the run", e))?;
    total.checks += checks.load(Ordering::Relaxed) + 1;
    Ok(total)
}

fn before(when: &str, e: BankError) -> BankError {
    match e {
        BankError::Violation(v) => BankError::Violation(format!("{when}: {v}")),
        BankError::Failed(f) => BankError::Failed(format!("{when}: {f}")),
        r @ BankError::Refused(_) => r,
    }
}
