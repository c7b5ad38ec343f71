//! `corekv bench --workload bank`: a correctness check users can run against
//! their own server, including across crashes and restarts.
//!
//! Accounts `bank-000000`… hold decimal balances spread over every shard (the
//! key hash spreads them). `--load` creates them with a known total; a run never
//! resets them: it checks the invariant first (one snapshot MGET of every
//! account: the sum is the expected total and no balance is negative), then runs
//! random transfers from many connections (snapshot-read two balances, then a
//! TXN conditioned on both being unchanged), re-checks the invariant
//! periodically from another connection and once more at the end. Any
//! violation is returned with what was seen.
//!
//! It talks to the server only through the public client, like a user would.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::core::status::Status;
use crate::core::txn_format::{Cond, Write};
use crate::net::client::{Client, ClientError, TxnResult};

/// The balance every account starts with.
pub const INITIAL_BALANCE: u64 = 1000;

pub fn account_key(i: u64) -> Vec<u8> {
    format!("bank-{i:06}").into_bytes()
}

/// What a bank run saw.
#[derive(Debug, Default, Clone)]
pub struct BankReport {
    pub transfers: u64,
    /// Transfers whose condition failed because a balance changed in between.
    pub conflicts: u64,
    /// Transfers the server rolled back (TXN_ABORTED, lock contention).
    pub aborts: u64,
    /// Snapshot checks of every account that passed.
    pub checks: u64,
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

/// Create `accounts` accounts with [`INITIAL_BALANCE`] each, in atomic batches.
/// Refuses if the first account exists: a bank is never reset.
pub fn load(client: &mut Client, accounts: u64) -> Result<(), String> {
    if client
        .get(&account_key(0))
        .map_err(|e| format!("checking for existing accounts: {e}"))?
        .is_some()
    {
        return Err("the accounts already exist; a bank run never resets them \
                    (use a fresh data directory to start over)"
            .into());
    }
    let value = INITIAL_BALANCE.to_string();
    let keys: Vec<Vec<u8>> = (0..accounts).map(account_key).collect();
    for chunk in keys.chunks(500) {
        let pairs: Vec<(&[u8], &[u8])> = chunk.iter().map(|k| (&k[..], value.as_bytes())).collect();
        client
            .mput(&pairs)
            .map_err(|e| format!("loading accounts: {e}"))?;
    }
    Ok(())
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
}

impl std::fmt::Display for BankError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BankError::Violation(v) => write!(f, "invariant violated: {v}"),
            BankError::Failed(e) => f.write_str(e),
        }
    }
}

/// Read every account in one snapshot and check the invariant.
pub fn check(client: &mut Client, accounts: u64) -> Result<(), BankError> {
    let keys = account_keys(accounts);
    let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let values = client
        .mget(&refs)
        .map_err(|e| BankError::Failed(format!("snapshot read: {e}")))?;
    check_values(&keys, &values).map_err(BankError::Violation)
}

/// One transfer attempt between two random accounts.
pub fn transfer(
    client: &mut Client,
    rng: &mut impl Rng,
    accounts: u64,
    report: &mut BankReport,
) -> Result<(), ClientError> {
    let from = rng.gen_range(0..accounts);
    let to = (from + rng.gen_range(1..accounts)) % accounts;
    let (kf, kt) = (account_key(from), account_key(to));
    let v = client.mget(&[&kf, &kt])?;
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
        return Ok(());
    }
    let amount = rng.gen_range(1..=bf.min(100));
    let (nf, nt) = ((bf - amount).to_string(), (bt + amount).to_string());
    match client.txn(
        &[Cond::Equals(&kf, vf), Cond::Equals(&kt, vt)],
        &[
            Write::Put(&kf, nf.as_bytes()),
            Write::Put(&kt, nt.as_bytes()),
        ],
    ) {
        Ok(TxnResult::Committed) => report.transfers += 1,
        Ok(TxnResult::ConditionFailed(_)) => report.conflicts += 1,
        Err(ClientError::Status {
            status: Status::TxnAborted | Status::LockTimeout,
            ..
        }) => report.aborts += 1,
        Err(e) => return Err(e),
    }
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
    pub seed: u64,
}

/// Check, run transfers for `duration` while checking, check again.
/// `Err` names the first violation, or the error that stopped the run.
pub fn run(cfg: &BankConfig) -> Result<BankReport, BankError> {
    let failed = BankError::Failed;
    let connect = || {
        let c = Client::connect(cfg.addr).map_err(|e| failed(e.to_string()))?;
        c.set_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| failed(e.to_string()))?;
        Ok::<_, BankError>(c)
    };
    let mut checker = connect()?;
    check(&mut checker, cfg.accounts).map_err(|e| before("before the run", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let violation: Arc<Mutex<Option<BankError>>> = Arc::new(Mutex::new(None));
    let workers: Vec<_> = (0..cfg.connections)
        .map(|i| {
            let mut client = connect()?;
            let (stop, cfg) = (stop.clone(), cfg.clone());
            Ok(std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed ^ ((i as u64) << 32));
                let mut report = BankReport::default();
                while !stop.load(Ordering::Relaxed) {
                    transfer(&mut client, &mut rng, cfg.accounts, &mut report)
                        .map_err(|e| format!("transfer: {e}"))?;
                }
                Ok::<_, String>(report)
            }))
        })
        .collect::<Result<_, BankError>>()?;
    let checker_thread = {
        let (stop, checks, violation, cfg) =
            (stop.clone(), checks.clone(), violation.clone(), cfg.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = check(&mut checker, cfg.accounts) {
                    *violation.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    stop.store(true, Ordering::Relaxed);
                    return checker;
                }
                checks.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(cfg.check_every);
            }
            checker
        })
    };
    let deadline = Instant::now() + cfg.duration;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10).min(cfg.duration));
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = BankReport::default();
    let mut failure = None;
    for w in workers {
        match w.join() {
            Ok(Ok(r)) => {
                total.transfers += r.transfers;
                total.conflicts += r.conflicts;
                total.aborts += r.aborts;
            }
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some("a transfer thread panicked".into())),
        }
    }
    let mut checker = checker_thread
        .join()
        .map_err(|_| failed("the checker thread panicked".into()))?;
    let seen = violation.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(e) = seen {
        return Err(before("during the run", e));
    }
    if let Some(e) = failure {
        return Err(failed(e));
    }
    check(&mut checker, cfg.accounts).map_err(|e| before("after the run", e))?;
    total.checks = checks.load(Ordering::Relaxed) + 2;
    Ok(total)
}

fn before(when: &str, e: BankError) -> BankError {
    match e {
        BankError::Violation(v) => BankError::Violation(format!("{when}: {v}")),
        BankError::Failed(f) => BankError::Failed(format!("{when}: {f}")),
    }
}
