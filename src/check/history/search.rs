//! The search for a valid order (Wing & Gong / Lowe, see the parent module):
//! the time-ordered event list, the memo of visited configurations and the
//! backtracking loop, with where it got stuck when no order exists.
//!
//! It owns deciding one key group against its budget; it must never look at the
//! original history (explaining a failure is [`super::explain`]'s).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use super::compile::CompiledOp;

pub(super) const NIL: usize = usize::MAX;

/// Time-ordered call/return events as a doubly linked list with a head sentinel
/// at index 0, so placing an operation and undoing it are O(1) splices.
pub(super) struct Events {
    pub(super) next: Vec<usize>,
    pub(super) prev: Vec<usize>,
    /// Operation of each entry, and whether the entry is its call (else return).
    pub(super) op: Vec<usize>,
    pub(super) is_call: Vec<bool>,
    pub(super) call_of: Vec<usize>,
    /// `NIL` for optional operations, which never return.
    pub(super) return_of: Vec<usize>,
}

impl Events {
    pub(super) fn new(ops: &[CompiledOp]) -> Self {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke, false, i));
            if !op.optional {
                events.push((op.complete, true, i));
            }
        }
        // Calls sort before returns at the same instant: ops that merely touch
        // are treated as concurrent rather than ordered.
        events.sort_unstable();
        let m = events.len();
        let mut ev = Events {
            next: vec![NIL; m + 1],
            prev: vec![NIL; m + 1],
            op: vec![0; m + 1],
            is_call: vec![false; m + 1],
            call_of: vec![NIL; ops.len()],
            return_of: vec![NIL; ops.len()],
        };
        for (j, &(_, is_return, i)) in events.iter().enumerate() {
            let e = j + 1;
            ev.op[e] = i;
            ev.is_call[e] = !is_return;
            if is_return {
                ev.return_of[i] = e;
            } else {
                ev.call_of[i] = e;
            }
            ev.prev[e] = j;
            ev.next[j] = e;
        }
        ev
    }

    pub(super) fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Valid only in the reverse order of `unlink`s (dancing links).
    pub(super) fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }

    pub(super) fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        if self.return_of[op] != NIL {
            self.unlink(self.return_of[op]);
        }
    }

    pub(super) fn unlift(&mut self, op: usize) {
        if self.return_of[op] != NIL {
            self.relink(self.return_of[op]);
        }
        self.relink(self.call_of[op]);
    }
}

/// FxHash: configurations are hashed once per attempted step, and SipHash's
/// DoS resistance buys nothing for data we generated ourselves.
#[derive(Default)]
pub(super) struct FxHasher {
    pub(super) hash: u64,
}

impl FxHasher {
    pub(super) fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

pub(super) type Memo = HashSet<Box<[u64]>, BuildHasherDefault<FxHasher>>;

/// Where the search got stuck with the most operations placed. Indices are
/// local to the group.
pub(super) struct Stuck {
    pub(super) op: usize,
    pub(super) prefix: Vec<usize>,
    pub(super) state: Vec<u32>,
    pub(super) also_stuck: Vec<usize>,
}

pub(super) enum SearchFailure {
    Stuck(Stuck),
    Budget,
}

pub(super) struct Frame {
    pub(super) op: usize,
    pub(super) undo_len: usize,
    /// Placed as a fitting pure observation, the only choice tried at its node.
    pub(super) forced: bool,
}

/// The mutable half of the search: the configuration and how to undo it.
pub(super) struct Search<'o> {
    pub(super) ops: &'o [CompiledOp],
    pub(super) events: Events,
    pub(super) state: Vec<u32>,
    pub(super) placed: Vec<u64>,
    pub(super) memo: Memo,
    /// Scratch for the configuration key, so memo hits allocate nothing.
    pub(super) config: Vec<u64>,
    pub(super) undo: Vec<(usize, u32)>,
    pub(super) stack: Vec<Frame>,
    /// Mandatory operations not yet placed; the search succeeds at zero.
    pub(super) remaining: usize,
}

impl Search<'_> {
    pub(super) fn is_placed(&self, i: usize) -> bool {
        self.placed[i / 64] & (1 << (i % 64)) != 0
    }

    /// Places candidate `i` if it fits and leads to an unexplored configuration.
    pub(super) fn try_place(
        &mut self,
        i: usize,
        forced: bool,
        budget: &mut u64,
    ) -> Result<bool, SearchFailure> {
        let op = &self.ops[i];
        if !op.admissible(&self.state) {
            return Ok(false);
        }
        let undo_len = self.undo.len();
        for &(k, v) in &op.writes {
            self.undo.push((k, self.state[k]));
            self.state[k] = v;
        }
        self.placed[i / 64] |= 1 << (i % 64);
        self.config.clear();
        self.config.extend_from_slice(&self.placed);
        self.config.extend(
            self.state
                .chunks(2)
                .map(|c| u64::from(c[0]) | u64::from(c.get(1).copied().unwrap_or(0)) << 32),
        );
        // Configurations only grow along the current path, so one already in
        // the memo is not an ancestor: it was explored to the end and refuted.
        if self.memo.contains(self.config.as_slice()) {
            self.placed[i / 64] &= !(1 << (i % 64));
            for (k, v) in self.undo.drain(undo_len..).rev() {
                self.state[k] = v;
            }
            return Ok(false);
        }
        if *budget == 0 {
            return Err(SearchFailure::Budget);
        }
        *budget -= 1;
        self.memo.insert(self.config.as_slice().into());
        self.events.lift(i);
        self.stack.push(Frame {
            op: i,
            undo_len,
            forced,
        });
        if !op.optional {
            self.remaining -= 1;
        }
        Ok(true)
    }

    pub(super) fn pop(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        let i = frame.op;
        self.events.unlift(i);
        self.placed[i / 64] &= !(1 << (i % 64));
        for (k, v) in self.undo.drain(frame.undo_len..).rev() {
            self.state[k] = v;
        }
        if !self.ops[i].optional {
            self.remaining += 1;
        }
        Some(frame)
    }

    /// First candidate that writes nothing and fits the current state.
    pub(super) fn fitting_observation(&self) -> Option<usize> {
        let mut e = self.events.next[0];
        while e != NIL && self.events.is_call[e] {
            let op = &self.ops[self.events.op[e]];
            if op.writes.is_empty() && op.admissible(&self.state) {
                return Some(self.events.op[e]);
            }
            e = self.events.next[e];
        }
        None
    }
}

pub(super) enum Step {
    /// A new configuration: check for success, then choose.
    Enter,
    /// Trying candidates from this event entry on.
    Scan(usize),
    /// The current configuration is refuted.
    Backtrack,
}

pub(super) fn search(
    ops: &[CompiledOp],
    state: Vec<u32>,
    budget: &mut u64,
) -> Result<(), SearchFailure> {
    let words = ops.len().div_ceil(64);
    let mut s = Search {
        ops,
        events: Events::new(ops),
        config: Vec::with_capacity(words + state.len().div_ceil(2)),
        state,
        placed: vec![0; words],
        memo: Memo::default(),
        undo: Vec::new(),
        stack: Vec::new(),
        remaining: ops.iter().filter(|o| !o.optional).count(),
    };
    let mut deepest: Option<Stuck> = None;
    let mut step = Step::Enter;
    loop {
        step = match step {
            Step::Enter if s.remaining == 0 => return Ok(()),
            // Partial-order reduction: an eligible op that writes nothing and
            // fits now can be moved to the front of any valid continuation
            // (nothing it precedes there was forced before it, or it would not
            // be eligible), so it is placed without branching. This is what
            // keeps read-heavy histories with many clients tractable.
            Step::Enter => match s.fitting_observation() {
                Some(i) if s.try_place(i, true, budget)? => Step::Enter,
                Some(_) => Step::Backtrack,
                None => Step::Scan(s.events.next[0]),
            },
            Step::Scan(cur) if cur != NIL && s.events.is_call[cur] => {
                let i = s.events.op[cur];
                // Observations here do not fit, or Enter would have taken them.
                if !s.ops[i].writes.is_empty() && s.try_place(i, false, budget)? {
                    Step::Enter
                } else {
                    Step::Scan(s.events.next[cur])
                }
            }
            Step::Scan(cur) => {
                // `cur` is the return of an unplaced op: it had to be placed
                // before anything still pending, and no choice made that
                // possible.
                if deepest
                    .as_ref()
                    .is_none_or(|d| s.stack.len() > d.prefix.len())
                {
                    deepest = Some(stuck_here(&s, cur));
                }
                Step::Backtrack
            }
            Step::Backtrack => match s.pop() {
                // A forced placement was the only option at its node, so its
                // refutation refutes the node too.
                Some(frame) if frame.forced => Step::Backtrack,
                Some(frame) => Step::Scan(s.events.next[s.events.call_of[frame.op]]),
                None => {
                    return Err(SearchFailure::Stuck(deepest.unwrap_or_else(|| Stuck {
                        op: 0,
                        prefix: Vec::new(),
                        state: s.state.clone(),
                        also_stuck: Vec::new(),
                    })))
                }
            },
        };
    }
}

pub(super) fn stuck_here(s: &Search<'_>, cur: usize) -> Stuck {
    // Reaching the end of the list with mandatory ops left cannot happen (each
    // has a return entry), but blame something sensible rather than panic.
    let op = if cur != NIL {
        s.events.op[cur]
    } else {
        (0..s.ops.len())
            .find(|&i| !s.ops[i].optional && !s.is_placed(i))
            .unwrap_or(0)
    };
    let mut also_stuck = Vec::new();
    let mut e = s.events.next[0];
    while e != cur && e != NIL {
        let j = s.events.op[e];
        if s.events.is_call[e] && j != op && !s.ops[j].admissible(&s.state) {
            also_stuck.push(j);
        }
        e = s.events.next[e];
    }
    Stuck {
        op,
        prefix: s.stack.iter().map(|f| f.op).collect(),
        state: s.state.clone(),
        also_stuck,
    }
}
