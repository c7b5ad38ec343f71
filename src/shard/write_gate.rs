//! The write gate a backup closes while it takes a shard's cut: writes that
//! have not appended wait at it (reads go on), a pause waits for the writes
//! already past it, and a pause that outlives its deadline lifts itself so a
//! backup can never stall writes for long. It also holds what the backup's
//! pause captured for its finish.
//!
//! Plain state owned by `ShardState`; the backup phases (`backup::phases`)
//! open and close it. It must never block a write past [`PAUSE_DEADLINE`] or
//! do any I/O.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::io::backup_files::WalCut;
use crate::shard::wake::{sleep_unless_simulated, WaitQueue};

/// Writes never wait for a backup longer than this: a shard paused this long
/// lifts the pause itself, and the backup fails.
pub const PAUSE_DEADLINE: Duration = Duration::from_secs(10);

/// One shard's backup state. Lives on the shard's core.
#[derive(Default)]
pub struct BackupGate {
    /// The backup that has writes paused, and when the pause lifts itself.
    pub(in crate::shard) paused: Cell<Option<(u64, Instant)>>,
    /// A pause that reached its deadline and lifted itself: that backup fails.
    pub(in crate::shard) expired: Cell<Option<u64>>,
    /// The backup holding WAL recycling, from its pause to its finish.
    pub(in crate::shard) held_by: Cell<Option<u64>>,
    /// What the pause captured, for the finish: target, data dir, WAL cut.
    pub(in crate::shard) cut: RefCell<Option<(PathBuf, PathBuf, WalCut)>>,
    /// Write operations past the gate that may still append.
    pub(in crate::shard) writers: Cell<usize>,
    pub(in crate::shard) changed: WaitQueue,
}

/// Held by a write from the gate until it has appended (or given up).
pub struct WriteTicket<'a> {
    gate: &'a BackupGate,
}

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        let left = self.gate.writers.get() - 1;
        self.gate.writers.set(left);
        if left == 0 && self.gate.paused.get().is_some() {
            self.gate.changed.wake_all();
        }
    }
}

impl BackupGate {
    /// Wait while a backup has writes paused, then count this write in until
    /// the ticket drops. Costs two Cell updates when no backup runs.
    pub async fn enter_write(&self) -> WriteTicket<'_> {
        while let Some((id, deadline)) = self.paused.get() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.expire(id);
                break;
            }
            let opened = self
                .changed
                .until(|| self.paused.get().is_none().then_some(()));
            future::or(opened, sleep_unless_simulated(left)).await;
        }
        // No await between the check above and this: a pause that begins now
        // sees this write and waits for it.
        self.writers.set(self.writers.get() + 1);
        WriteTicket { gate: self }
    }

    pub(in crate::shard) fn expire(&self, id: u64) {
        if matches!(self.paused.get(), Some((p, _)) if p == id) {
            self.paused.set(None);
            self.expired.set(Some(id));
            self.changed.wake_all();
            tracing::warn!(
                error = "BACKUP_FAILED",
                "a backup kept writes paused past {PAUSE_DEADLINE:?}: writes resumed and that backup fails"
            );
        }
    }

    pub(in crate::shard) fn lift(&self, id: u64) {
        if matches!(self.paused.get(), Some((p, _)) if p == id) {
            self.paused.set(None);
            self.changed.wake_all();
        }
    }

    /// Whether a backup is between its pause and its finish here.
    pub fn is_busy(&self) -> bool {
        self.paused.get().is_some() || self.held_by.get().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn writes_wait_at_a_closed_gate_and_a_pause_waits_for_writes_past_it() {
        let ex = glommio::LocalExecutor::default();
        ex.run(async {
            let gate = Rc::new(BackupGate::default());
            // A write past the gate before the pause holds the pause's drain.
            let early = gate.enter_write().await;
            gate.paused
                .set(Some((1, Instant::now() + Duration::from_secs(30))));
            let g = gate.clone();
            let late = glommio::spawn_local(async move {
                let _t = g.enter_write().await;
                Instant::now()
            });
            glommio::timer::sleep(Duration::from_millis(20)).await;
            assert_eq!(gate.writers.get(), 1, "the late write waits at the gate");
            let g = gate.clone();
            let drained = glommio::spawn_local(async move {
                g.changed
                    .until(|| (g.writers.get() == 0).then_some(()))
                    .await
            });
            drop(early);
            drained.await;
            let lifted = Instant::now();
            gate.lift(1);
            assert!(
                late.await >= lifted,
                "the late write entered only once lifted"
            );
            assert_eq!(gate.expired.get(), None);
        });
    }

    #[test]
    fn a_pause_past_its_deadline_lifts_itself_and_marks_the_backup_failed() {
        let ex = glommio::LocalExecutor::default();
        ex.run(async {
            let gate = BackupGate::default();
            let started = Instant::now();
            gate.paused
                .set(Some((7, started + Duration::from_millis(50))));
            drop(gate.enter_write().await);
            let waited = started.elapsed();
            assert!(waited >= Duration::from_millis(50), "{waited:?}");
            assert!(waited < Duration::from_secs(5), "{waited:?}");
            assert_eq!(gate.paused.get(), None);
            assert_eq!(gate.expired.get(), Some(7));
            assert_eq!(gate.writers.get(), 0);
        });
    }
}
