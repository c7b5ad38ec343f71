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
//! WAL floor). They may pass a *resolved* prepare whose TXN_RESOLVE lies above
//! them: a prepare's pin is released only once its resolve's writes are in the
//! memtable, so the flush that records such a cutoff has put those writes in a
//! table, and the manifest's `applied_lsn` is at or past the resolve. Replay
//! skips such a resolve (`already_applied`); a resolve without its prepare
//! above `applied_lsn` is a broken log (`log_check`). Replay keeps its own WAL
//! floor at the lowest unresolved prepare, since a memtable may freeze while
//! the log is replayed. The full invariant is in docs/transactions.md.
//!
//! It must never: apply prepared writes without a decision, or let a shard
//! serve before its in-doubt transactions are settled.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::core::txn_format::{TxnId, TxnRecord, ValidPrepare, WriteIter};

use crate::io::Disk;
use crate::shard::locks::{LockSet, Mode};
use crate::shard::state::ShardState;

/// What one shard's replay found about transactions.
#[derive(Default, Debug)]
pub struct TxnReplay {
    /// Records at or below this LSN are in the tables and not replayed.
    pub cutoff: u64,
    /// Records up to this LSN may be in the tables already (the manifest's
    /// `applied_lsn`).
    pub applied: u64,
    /// Prepared and not resolved: id → (LSN of the prepare, its record body).
    pub in_doubt: BTreeMap<TxnId, (u64, ValidPrepare)>,
    /// The LSNs of `in_doubt`, lowest first: the WAL floor while replaying.
    pub(crate) in_doubt_lsns: BTreeSet<u64>,
    /// Commit decisions this shard logged as a coordinator.
    pub decisions: Vec<TxnId>,
    /// Highest transaction number seen per coordinator shard.
    pub max_seq: BTreeMap<u16, u64>,
    /// Resolves above the cutoff whose prepare lies at or below it, and at or
    /// below `applied`: their writes are in the tables (see the module doc).
    pub already_applied: u64,
    /// Resolves with no prepare that the tables cannot account for: a broken
    /// invariant (`check_log` reports it).
    pub orphans: Vec<(TxnId, u64)>,
}

impl TxnReplay {
    /// Replay of the records above `cutoff`, with the tables holding effects
    /// up to `applied`.
    pub fn new(cutoff: u64, applied: u64) -> TxnReplay {
        TxnReplay {
            cutoff,
            applied: applied.max(cutoff),
            ..TxnReplay::default()
        }
    }

    fn saw(&mut self, id: TxnId) {
        let m = self.max_seq.entry(id.coordinator).or_insert(0);
        *m = (*m).max(id.seq);
    }

    /// The lowest LSN of a prepare not resolved so far: the WAL must keep it,
    /// so a memtable frozen during replay may not record a cutoff at or past it.
    pub fn floor(&self) -> Option<u64> {
        self.in_doubt_lsns.first().copied()
    }

    /// Replay one transaction record above the cutoff; `apply` receives the
    /// writes that take effect and their LSN (called with no writes too, so
    /// the caller can note the LSN as applied). The WAL decoder validated the
    /// record; nothing here parses bytes again.
    pub fn replay(
        &mut self,
        txn: TxnRecord<'_>,
        lsn: u64,
        apply: &mut dyn FnMut(WriteIter<'_>, u64),
    ) {
        debug_assert!(
            lsn > self.cutoff,
            "records at or below the cutoff are not replayed"
        );
        match txn {
            TxnRecord::Commit(c) => {
                apply(c.writes(), lsn);
                if c.has_participants() {
                    self.decisions.push(c.id);
                    self.saw(c.id);
                }
            }
            TxnRecord::Prepare(p) => {
                let id = p.id;
                self.saw(id);
                let prepared = ValidPrepare::from_record(p);
                if let Some((old, _)) = self.in_doubt.insert(id, (lsn, prepared)) {
                    self.in_doubt_lsns.remove(&old);
                }
                self.in_doubt_lsns.insert(lsn);
            }
            TxnRecord::Resolve(r) => match self.in_doubt.remove(&r.id) {
                Some((prepared_at, record)) => {
                    self.in_doubt_lsns.remove(&prepared_at);
                    if r.commit {
                        apply(record.record().writes(), lsn);
                    }
                }
                // The prepare lies at or below the cutoff: its pin was
                // released only after this resolve's writes reached the
                // memtable, and a flush recorded a cutoff past the prepare
                // only after that memtable's writes (up to `applied`) were
                // in a table. Nothing to do.
                None if lsn <= self.applied => self.already_applied += 1,
                None => self.orphans.push((r.id, lsn)),
            },
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
    in_doubt: BTreeMap<TxnId, (u64, ValidPrepare)>,
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
                for w in record.record().writes() {
                    set.add(w.key(), Mode::Exclusive);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::txn_format::{
        begin_prepare_record, encode_write, end_list, parse_prepare_record, ResolveRecord, Write,
    };

    fn id(seq: u64) -> TxnId {
        TxnId {
            coordinator: 1,
            seq,
        }
    }

    fn prepare(seq: u64, key: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        let at = begin_prepare_record(&mut body, id(seq));
        encode_write(&mut body, &Write::Put(key, b"v"));
        end_list(&mut body, at, 1);
        body
    }

    fn prepared(body: &[u8]) -> TxnRecord<'_> {
        TxnRecord::Prepare(parse_prepare_record(body).unwrap())
    }

    fn resolve(seq: u64) -> TxnRecord<'static> {
        TxnRecord::Resolve(ResolveRecord {
            id: id(seq),
            commit: true,
        })
    }

    /// What a flush can leave: prepares 10 and 12 resolved at 15 and 16; a
    /// memtable frozen while only 14 was pinned holds writes up to 18, so the
    /// manifest says cutoff 13, applied 18. The resolve at 15 finds no
    /// prepare (11 is below the cutoff) and is already in the tables; a
    /// resolve past `applied` with no prepare is a broken log.
    #[test]
    fn resolves_whose_prepare_was_flushed_are_already_applied() {
        let mut r = TxnReplay::new(13, 18);
        let mut applied: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut apply = |w: WriteIter<'_>, lsn: u64| {
            for w in w {
                applied.push((w.key().to_vec(), lsn));
            }
        };
        r.replay(prepared(&prepare(2, b"b")), 14, &mut apply);
        assert_eq!(r.floor(), Some(14));
        r.replay(resolve(1), 15, &mut apply);
        assert_eq!(r.already_applied, 1);
        assert!(r.orphans.is_empty());
        r.replay(resolve(2), 16, &mut apply);
        assert_eq!(r.floor(), None, "resolved: no floor");
        r.replay(resolve(3), 19, &mut apply);
        assert_eq!(r.orphans, vec![(id(3), 19)]);
        assert_eq!(applied, vec![(b"b".to_vec(), 16)]);
    }

    /// Replay keeps the floor at the lowest unresolved prepare, whatever the
    /// order of their resolves.
    #[test]
    fn the_replay_floor_follows_unresolved_prepares() {
        let mut r = TxnReplay::new(0, 0);
        let mut none = |_: WriteIter<'_>, _: u64| {};
        r.replay(prepared(&prepare(1, b"a")), 5, &mut none);
        r.replay(prepared(&prepare(2, b"b")), 7, &mut none);
        assert_eq!(r.floor(), Some(5));
        r.replay(resolve(1), 9, &mut none);
        assert_eq!(r.floor(), Some(7));
        assert_eq!(r.in_doubt.len(), 1);
    }
}
