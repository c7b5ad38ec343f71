//! Transactions at startup: replaying their WAL records, and settling every
//! transaction a crash left prepared before any shard serves.
//!
//! Replay (per shard, in LSN order, records above the manifest's cutoff):
//! TXN_COMMIT applies its writes and, if it names participants, is a commit
//! decision; TXN_PREPARE remembers prepared writes; TXN_RESOLVE applies them
//! (commit) or forgets them. What remains prepared at the end is in doubt on
//! this shard. The runtime then gathers every shard's decisions and
//! each coordinator's highest transaction number, and every shard settles its
//! in-doubt transactions: commit if its coordinator logged a decision, abort
//! (nothing to undo: prepared writes were never applied) otherwise. Commits are
//! logged and durable before the shard serves.
//!
//! Cutoffs never pass an unresolved prepare or an unacknowledged decision (the
//! WAL floor), so a resolve always finds its prepare during replay.
//!
//! It must never: apply prepared writes without a decision, or let a shard
//! serve before its in-doubt transactions are settled.

use std::collections::{BTreeMap, HashSet};

use crate::core::txn_format::{
    parse_commit_record, parse_prepare_record, parse_resolve_record, TxnId,
};
use crate::core::wal_format::RecordKind;
use crate::io::Disk;

use super::locks::{LockSet, Mode};
use super::lsm::Lsm;
use super::state::{apply_txn_writes, ShardState};

/// What one shard's replay found about transactions.
#[derive(Default, Debug)]
pub struct TxnReplay {
    /// Prepared and not resolved: id → (LSN of the prepare, its record body).
    pub in_doubt: BTreeMap<TxnId, (u64, Vec<u8>)>,
    /// Commit decisions this shard logged as a coordinator.
    pub decisions: Vec<TxnId>,
    /// Highest transaction number seen per coordinator shard.
    pub max_seq: BTreeMap<u16, u64>,
    /// Resolves with no prepare before them: a broken invariant, reported.
    pub orphans: Vec<(TxnId, u64)>,
}

impl TxnReplay {
    fn saw(&mut self, id: TxnId) {
        let m = self.max_seq.entry(id.coordinator).or_insert(0);
        *m = (*m).max(id.seq);
    }

    /// Replay one transaction record. Bodies were validated by the WAL decoder.
    pub fn replay<D: Disk>(&mut self, lsm: &Lsm<D>, kind: RecordKind, body: &[u8], lsn: u64) {
        match kind {
            RecordKind::TxnCommit => {
                let Ok(c) = parse_commit_record(body) else {
                    unreachable!("the WAL decoder validates transaction records")
                };
                apply_txn_writes(lsm, c.writes(), lsn);
                if c.has_participants() {
                    self.decisions.push(c.id);
                    self.saw(c.id);
                }
            }
            RecordKind::TxnPrepare => {
                let Ok(p) = parse_prepare_record(body) else {
                    unreachable!("the WAL decoder validates transaction records")
                };
                self.saw(p.id);
                self.in_doubt.insert(p.id, (lsn, body.to_vec()));
            }
            RecordKind::TxnResolve => {
                let Ok(r) = parse_resolve_record(body) else {
                    unreachable!("the WAL decoder validates transaction records")
                };
                match self.in_doubt.remove(&r.id) {
                    Some((_, record)) if r.commit => {
                        let Ok(p) = parse_prepare_record(&record) else {
                            unreachable!("validated when it was replayed")
                        };
                        apply_txn_writes(lsm, p.writes(), lsn);
                    }
                    Some(_) => {}
                    None => self.orphans.push((r.id, lsn)),
                }
            }
            RecordKind::Put | RecordKind::Delete => {
                unreachable!("single-key records are replayed by the caller")
            }
        }
    }
}

/// What every shard's replay says, gathered by the runtime and handed back to
/// every shard before it settles its in-doubt transactions.
#[derive(Default, Debug, Clone)]
pub struct TxnOutcomes {
    pub committed: HashSet<TxnId>,
    pub max_seq: BTreeMap<u16, u64>,
}

impl TxnOutcomes {
    pub fn gather(&mut self, replay: &TxnReplay) {
        self.committed.extend(replay.decisions.iter().copied());
        for (c, s) in &replay.max_seq {
            let m = self.max_seq.entry(*c).or_insert(0);
            *m = (*m).max(*s);
        }
    }
}

/// Settle this shard's in-doubt transactions. Their prepare LSNs are pinned by
/// the caller until this returns. On a WAL failure the in-doubt keys stay
/// locked for good (reads of them time out rather than see half a transaction)
/// and the shard is read-only until restarted.
pub async fn settle_in_doubt<D: Disk>(
    state: &ShardState<D>,
    in_doubt: BTreeMap<TxnId, (u64, Vec<u8>)>,
    outcomes: &TxnOutcomes,
) {
    let first_seq = outcomes
        .max_seq
        .get(&state.id.0)
        .copied()
        .unwrap_or(0)
        .max(unix_micros());
    state.raise_txn_seq(first_seq);
    for (id, (lsn, record)) in in_doubt {
        let commit = outcomes.committed.contains(&id);
        tracing::info!(shard = state.id.0, %id, commit, "settling a transaction left prepared by a crash");
        match state.resolve_recovered(id, &record, commit).await {
            Ok(()) => state.unpin(lsn),
            Err(status) => {
                tracing::error!(
                    shard = state.id.0,
                    %id,
                    status = status.name(),
                    "could not log the resolution of a prepared transaction; its keys stay \
                     locked until the next start"
                );
                let mut set = LockSet::default();
                if let Ok(p) = parse_prepare_record(&record) {
                    for w in p.writes() {
                        set.add(w.key(), Mode::Exclusive);
                    }
                }
                set.seal();
                state.hold_locks_forever(&set);
            }
        }
    }
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
