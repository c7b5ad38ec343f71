//! The compiled form of a history that the search walks: keys are dense
//! indices, values are interned ids, and every kind of operation becomes
//! "these predicates hold, this one does not, then write"; and the union-find
//! that splits keys into independently checkable groups.
//!
//! It owns the translation from the model ([`super::Op`]) only; it must never
//! decide a verdict (that is [`super::search`]'s).

use std::collections::HashMap;

use super::model::*;

/// Value id of an absent key. Real values are numbered from 1.
pub(super) const ABSENT: u32 = 0;

#[derive(Debug, Clone, Copy)]
pub(super) enum Pred {
    Is(u32),
    Present,
}

impl Pred {
    pub(super) fn holds(self, v: u32) -> bool {
        match self {
            Pred::Is(x) => v == x,
            Pred::Present => v != ABSENT,
        }
    }
}

#[derive(Debug)]
pub(super) struct CompiledOp {
    /// Index in `History::ops`.
    pub(super) orig: usize,
    /// All must hold at the operation's place in the order.
    pub(super) holds: Vec<(usize, Pred)>,
    /// Must not hold (the first false condition of a `ConditionFailed` txn).
    pub(super) fails: Option<(usize, Pred)>,
    pub(super) writes: Vec<(usize, u32)>,
    /// Unknown outcome: may be placed or left out, and never blocks others.
    pub(super) optional: bool,
    pub(super) invoke: u64,
    /// Meaningless when `optional`.
    pub(super) complete: u64,
}

impl CompiledOp {
    pub(super) fn admissible(&self, state: &[u32]) -> bool {
        self.holds.iter().all(|&(k, p)| p.holds(state[k]))
            && self.fails.is_none_or(|(k, p)| !p.holds(state[k]))
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.holds
            .iter()
            .map(|&(k, _)| k)
            .chain(self.fails.iter().map(|&(k, _)| k))
            .chain(self.writes.iter().map(|&(k, _)| k))
    }

    pub(super) fn map_keys(&mut self, mut f: impl FnMut(usize) -> usize) {
        for (k, _) in &mut self.holds {
            *k = f(*k);
        }
        if let Some((k, _)) = &mut self.fails {
            *k = f(*k);
        }
        for (k, _) in &mut self.writes {
            *k = f(*k);
        }
    }
}

#[derive(Default)]
pub(super) struct Interner<'a> {
    pub(super) keys: HashMap<&'a [u8], usize>,
    pub(super) key_names: Vec<&'a [u8]>,
    pub(super) values: HashMap<&'a [u8], u32>,
    /// `value_names[id - 1]` is the value with id `id`.
    pub(super) value_names: Vec<&'a [u8]>,
}

impl<'a> Interner<'a> {
    pub(super) fn key(&mut self, k: &'a [u8]) -> usize {
        let names = &mut self.key_names;
        *self.keys.entry(k).or_insert_with(|| {
            names.push(k);
            names.len() - 1
        })
    }

    pub(super) fn value(&mut self, v: &'a [u8]) -> u32 {
        let names = &mut self.value_names;
        *self.values.entry(v).or_insert_with(|| {
            names.push(v);
            u32::try_from(names.len()).expect("more than 2^32 distinct values in one history")
        })
    }

    pub(super) fn opt_value(&mut self, v: Option<&'a [u8]>) -> u32 {
        v.map_or(ABSENT, |v| self.value(v))
    }

    pub(super) fn value_name(&self, id: u32) -> Option<&'a [u8]> {
        id.checked_sub(1)
            .and_then(|i| self.value_names.get(i as usize).copied())
    }

    pub(super) fn cond(&mut self, c: &'a Cond) -> (usize, Pred) {
        match c {
            Cond::Equals(k, v) => (self.key(k), Pred::Is(self.value(v))),
            Cond::Absent(k) => (self.key(k), Pred::Is(ABSENT)),
            Cond::Present(k) => (self.key(k), Pred::Present),
        }
    }

    pub(super) fn write(&mut self, w: &'a Write) -> (usize, u32) {
        match w {
            Write::Put(k, v) => (self.key(k), self.value(v)),
            Write::Delete(k) => (self.key(k), ABSENT),
        }
    }
}

pub(super) fn compile<'a>(
    index: usize,
    op: &'a Op,
    interner: &mut Interner<'a>,
) -> Result<Option<CompiledOp>, CheckError> {
    let malformed = |reason: &str| CheckError::Malformed {
        op: index,
        reason: reason.to_string(),
    };
    let is_read = matches!(op.kind, OpKind::Get { .. } | OpKind::Mget { .. });
    let optional = match op.outcome {
        Outcome::Failed => return Ok(None),
        Outcome::Unknown if is_read => return Ok(None),
        Outcome::Unknown => true,
        Outcome::Ok | Outcome::ConditionFailed(_) => false,
    };
    let complete = if optional {
        u64::MAX
    } else {
        match op.complete {
            None => return Err(malformed("completed outcome without a completion time")),
            Some(c) if c < op.invoke => return Err(malformed("completes before it is invoked")),
            Some(c) => c,
        }
    };
    let mut c = CompiledOp {
        orig: index,
        holds: Vec::new(),
        fails: None,
        writes: Vec::new(),
        optional,
        invoke: op.invoke,
        complete,
    };
    match (&op.kind, op.outcome) {
        (_, Outcome::ConditionFailed(_)) if !matches!(op.kind, OpKind::Txn { .. }) => {
            return Err(malformed(
                "ConditionFailed on an operation without conditions",
            ));
        }
        (OpKind::Get { key, observed }, _) => {
            let v = interner.opt_value(observed.as_deref());
            c.holds.push((interner.key(key), Pred::Is(v)));
        }
        (OpKind::Mget { keys, observed }, _) => {
            if keys.len() != observed.len() {
                return Err(malformed("MGET with different numbers of keys and values"));
            }
            for (k, v) in keys.iter().zip(observed) {
                let v = interner.opt_value(v.as_deref());
                c.holds.push((interner.key(k), Pred::Is(v)));
            }
        }
        (OpKind::Put { key, value }, _) => {
            let w = (interner.key(key), interner.value(value));
            c.writes.push(w);
        }
        (OpKind::Delete { key }, _) => c.writes.push((interner.key(key), ABSENT)),
        (OpKind::Txn { conds, .. }, Outcome::ConditionFailed(i)) => {
            let Some(failed) = conds.get(i) else {
                return Err(malformed("ConditionFailed index past the last condition"));
            };
            for cond in &conds[..i] {
                c.holds.push(interner.cond(cond));
            }
            c.fails = Some(interner.cond(failed));
        }
        (OpKind::Txn { conds, writes }, _) => {
            for cond in conds {
                c.holds.push(interner.cond(cond));
            }
            for w in writes {
                c.writes.push(interner.write(w));
            }
        }
    }
    // An unanswered op that writes nothing can always be left out.
    if c.optional && c.writes.is_empty() {
        return Ok(None);
    }
    Ok(Some(c))
}

pub(super) struct UnionFind {
    pub(super) parent: Vec<usize>,
}

impl UnionFind {
    pub(super) fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n).collect(),
        }
    }

    pub(super) fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    pub(super) fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        self.parent[a] = b;
    }
}
