//! Tests of the checker: small histories with known verdicts, and timing
//! bounds on histories the search must decide quickly.

use super::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn get(key: &str, observed: Option<&str>) -> OpKind {
    OpKind::Get {
        key: b(key),
        observed: observed.map(b),
    }
}

fn put(key: &str, value: &str) -> OpKind {
    OpKind::Put {
        key: b(key),
        value: b(value),
    }
}

fn mget(pairs: &[(&str, Option<&str>)]) -> OpKind {
    OpKind::Mget {
        keys: pairs.iter().map(|(k, _)| b(k)).collect(),
        observed: pairs.iter().map(|(_, v)| v.map(b)).collect(),
    }
}

fn txn(conds: Vec<Cond>, writes: Vec<Write>) -> OpKind {
    OpKind::Txn { conds, writes }
}

fn eq(k: &str, v: &str) -> Cond {
    Cond::Equals(b(k), b(v))
}

fn w(k: &str, v: &str) -> Write {
    Write::Put(b(k), b(v))
}

/// A completed operation with outcome Ok.
fn ok(client: u32, invoke: u64, complete: u64, kind: OpKind) -> Op {
    Op {
        client,
        invoke,
        complete: Some(complete),
        kind,
        outcome: Outcome::Ok,
    }
}

fn unknown(client: u32, invoke: u64, kind: OpKind) -> Op {
    Op {
        client,
        invoke,
        complete: None,
        kind,
        outcome: Outcome::Unknown,
    }
}

fn hist(initial: &[(&str, &str)], ops: Vec<Op>) -> History {
    History {
        initial: initial.iter().map(|(k, v)| (b(k), b(v))).collect(),
        ops,
    }
}

fn accept(h: &History) {
    if let Err(e) = check(h) {
        panic!("expected acceptance, got: {e}");
    }
}

fn reject(h: &History) -> Violation {
    match check(h) {
        Err(CheckError::Violation(v)) => {
            eprintln!("{v}");
            v
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

// ---- accepted ----

#[test]
fn sequential_history() {
    accept(&hist(
        &[],
        vec![
            ok(1, 0, 10, get("x", None)),
            ok(1, 20, 30, put("x", "1")),
            ok(2, 40, 50, get("x", Some("1"))),
            ok(2, 60, 70, OpKind::Delete { key: b("x") }),
            ok(1, 80, 90, get("x", None)),
            ok(
                1,
                100,
                110,
                txn(vec![Cond::Absent(b("x"))], vec![w("x", "2"), w("y", "3")]),
            ),
            ok(2, 120, 130, mget(&[("x", Some("2")), ("y", Some("3"))])),
        ],
    ));
}

#[test]
fn concurrent_writes_read_sees_either() {
    for seen in ["1", "2"] {
        accept(&hist(
            &[],
            vec![
                ok(1, 0, 100, put("x", "1")),
                ok(2, 0, 100, put("x", "2")),
                ok(3, 110, 120, get("x", Some(seen))),
                ok(3, 130, 140, get("x", Some(seen))),
            ],
        ));
    }
}

#[test]
fn read_concurrent_with_write_sees_old_or_new() {
    for seen in [Some("0"), Some("1")] {
        accept(&hist(
            &[("x", "0")],
            vec![ok(1, 0, 100, put("x", "1")), ok(2, 10, 50, get("x", seen))],
        ));
    }
}

#[test]
fn unknown_put_later_observed() {
    accept(&hist(
        &[("x", "0")],
        vec![
            ok(2, 0, 5, get("x", Some("0"))),
            unknown(1, 10, put("x", "1")),
            ok(2, 20, 30, get("x", Some("0"))),
            ok(2, 1000, 1010, get("x", Some("1"))),
        ],
    ));
}

#[test]
fn unknown_put_never_observed() {
    accept(&hist(
        &[("x", "0")],
        vec![
            unknown(1, 10, put("x", "1")),
            ok(2, 20, 30, get("x", Some("0"))),
            ok(2, 1000, 1010, get("x", Some("0"))),
        ],
    ));
}

#[test]
fn failed_ops_and_unanswered_reads_are_ignored() {
    let mut failed_put = ok(1, 0, 10, put("x", "9"));
    failed_put.outcome = Outcome::Failed;
    accept(&hist(
        &[("x", "0")],
        vec![
            failed_put,
            unknown(2, 0, get("x", Some("garbage"))),
            ok(3, 20, 30, get("x", Some("0"))),
        ],
    ));
}

/// Four concurrent transfers between accounts a and b, each a CAS on both
/// balances, with snapshot reads that always see the total of 100.
#[test]
fn transfers_with_consistent_snapshots() {
    let t = |a0: &str, b0: &str, a1: &str, b1: &str| {
        txn(vec![eq("a", a0), eq("b", b0)], vec![w("a", a1), w("b", b1)])
    };
    let mut stale = ok(4, 5, 70, t("100", "0", "50", "50"));
    stale.outcome = Outcome::ConditionFailed(0);
    accept(&hist(
        &[("a", "100"), ("b", "0")],
        vec![
            ok(1, 0, 40, t("100", "0", "90", "10")),
            ok(2, 10, 60, t("90", "10", "70", "30")),
            ok(3, 20, 50, mget(&[("a", Some("90")), ("b", Some("10"))])),
            stale,
            ok(3, 55, 65, mget(&[("a", Some("70")), ("b", Some("30"))])),
            ok(1, 45, 90, t("70", "30", "60", "40")),
            unknown(2, 65, t("60", "40", "0", "100")),
            ok(3, 70, 80, mget(&[("b", Some("30")), ("a", Some("70"))])),
            ok(3, 95, 99, mget(&[("a", Some("0")), ("b", Some("100"))])),
        ],
    ));
}

#[test]
fn condition_failed_placed_after_the_write_that_falsified_it() {
    let mut cas = ok(2, 20, 30, txn(vec![eq("x", "0")], vec![w("x", "2")]));
    cas.outcome = Outcome::ConditionFailed(0);
    accept(&hist(
        &[("x", "0")],
        vec![
            ok(1, 0, 10, put("x", "1")),
            cas,
            ok(3, 40, 50, get("x", Some("1"))),
        ],
    ));
}

// ---- rejected ----

#[test]
fn rejects_stale_read() {
    let v = reject(&hist(
        &[("x", "0")],
        vec![
            ok(1, 0, 10, put("x", "1")),
            ok(2, 20, 30, get("x", Some("0"))),
        ],
    ));
    assert_eq!(v.op, 1);
    assert_eq!(v.prefix, vec![0]);
    assert_eq!(v.state, vec![(b("x"), Some(b("1")))]);
}

#[test]
fn rejects_lost_update() {
    let inc = || txn(vec![eq("c", "0")], vec![w("c", "1")]);
    reject(&hist(
        &[("c", "0")],
        vec![
            ok(1, 0, 50, inc()),
            ok(2, 10, 60, inc()),
            ok(3, 100, 110, get("c", Some("1"))),
        ],
    ));
}

#[test]
fn rejects_fractured_read() {
    reject(&hist(
        &[("x", "0"), ("y", "0")],
        vec![
            ok(1, 0, 100, txn(vec![], vec![w("x", "1"), w("y", "1")])),
            ok(2, 10, 90, mget(&[("x", Some("1")), ("y", Some("0"))])),
        ],
    ));
}

/// A saw the new x and finished; B started later and saw the old x. Key y is
/// busy concurrently so the checker must not confuse the two.
#[test]
fn rejects_real_time_inversion() {
    let v = reject(&hist(
        &[("x", "0"), ("y", "0")],
        vec![
            ok(1, 0, 100, put("x", "1")),
            ok(3, 0, 100, put("y", "1")),
            ok(2, 10, 20, get("x", Some("1"))),
            ok(4, 15, 25, get("y", Some("0"))),
            ok(5, 30, 40, get("x", Some("0"))),
            ok(4, 30, 40, get("y", Some("1"))),
        ],
    ));
    assert_eq!(v.op, 4, "blames B's read");
}

/// The same inversion through a two-key transaction: seeing its x write
/// and later missing its y write is impossible.
#[test]
fn rejects_real_time_inversion_across_keys() {
    reject(&hist(
        &[("x", "0"), ("y", "0")],
        vec![
            ok(1, 0, 100, txn(vec![], vec![w("x", "1"), w("y", "1")])),
            ok(2, 10, 20, get("x", Some("1"))),
            ok(3, 30, 40, get("y", Some("0"))),
        ],
    ));
}

#[test]
fn rejects_write_skew() {
    reject(&hist(
        &[("x", "0"), ("y", "0")],
        vec![
            ok(1, 0, 50, txn(vec![eq("y", "0")], vec![w("x", "1")])),
            ok(2, 0, 50, txn(vec![eq("x", "0")], vec![w("y", "1")])),
            ok(3, 60, 70, mget(&[("x", Some("1")), ("y", Some("1"))])),
        ],
    ));
}

#[test]
fn rejects_txn_whose_condition_never_holds() {
    let v = reject(&hist(
        &[("x", "0")],
        vec![
            ok(1, 0, 100, put("x", "1")),
            ok(2, 0, 100, txn(vec![eq("x", "7")], vec![w("y", "1")])),
        ],
    ));
    assert_eq!(v.op, 1);
}

#[test]
fn rejects_condition_failed_when_condition_held() {
    let mut cas = ok(2, 20, 30, txn(vec![eq("x", "0")], vec![w("x", "2")]));
    cas.outcome = Outcome::ConditionFailed(0);
    reject(&hist(&[("x", "0")], vec![cas]));
}

#[test]
fn rejects_read_of_value_nobody_wrote() {
    let v = reject(&hist(
        &[("x", "0")],
        vec![
            ok(1, 0, 10, put("x", "1")),
            ok(2, 0, 20, get("x", Some("ghost"))),
        ],
    ));
    assert_eq!(v.op, 1);
    assert!(v.message.contains("\"ghost\""), "{}", v.message);
}

#[test]
fn rejects_unknown_put_observed_before_its_invocation() {
    reject(&hist(
        &[("x", "0")],
        vec![
            ok(2, 0, 20, get("x", Some("1"))),
            unknown(1, 50, put("x", "1")),
        ],
    ));
}

#[test]
fn malformed_ops_are_reported() {
    let mut bad = ok(1, 0, 10, get("x", None));
    bad.complete = None;
    assert!(matches!(
        check(&hist(&[], vec![bad])),
        Err(CheckError::Malformed { op: 0, .. })
    ));
    let mut bad = ok(1, 0, 10, put("x", "1"));
    bad.outcome = Outcome::ConditionFailed(0);
    assert!(matches!(
        check(&hist(&[], vec![bad])),
        Err(CheckError::Malformed { op: 0, .. })
    ));
}

// ---- generated histories ----

/// SplitMix64: deterministic, dependency-free randomness for the generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Runs `n` random operations sequentially on a real map (the `i`-th takes
/// effect at time 100·i), assigns each to one of `clients` sequential
/// clients, then widens every operation into a random interval around its
/// effect time that does not overlap the same client's neighbours. The result
/// is linearizable by construction and heavily concurrent.
fn generate(seed: u64, n: usize, clients: u32, multi_key: bool) -> History {
    let keys = ["k0", "k1", "k2", "k3"];
    let mut rng = Rng(seed);
    let mut state: BTreeMap<Key, Value> = BTreeMap::new();
    let mut ops = Vec::with_capacity(n);
    for i in 0..n {
        let key = b(keys[rng.below(4) as usize]);
        let other = b(keys[rng.below(4) as usize]);
        let value = format!("v{i}").into_bytes();
        let point = 100 * i as u64 + 100;
        let roll = rng.below(100);
        let mut outcome = Outcome::Ok;
        let kind = match roll {
            0..=34 => OpKind::Get {
                observed: state.get(&key).cloned(),
                key,
            },
            35..=59 => {
                let unanswered = rng.below(20) == 0;
                // Half the unanswered writes never took effect.
                if !unanswered || rng.below(2) == 0 {
                    state.insert(key.clone(), value.clone());
                }
                if unanswered {
                    outcome = Outcome::Unknown;
                }
                OpKind::Put { key, value }
            }
            60..=69 => {
                state.remove(&key);
                OpKind::Delete { key }
            }
            70..=89 => {
                let second = if multi_key { other } else { key.clone() };
                let current = state.get(&key).cloned();
                let cond = if rng.below(3) == 0 {
                    Cond::Equals(key.clone(), b("stale"))
                } else {
                    match current {
                        Some(v) => Cond::Equals(key.clone(), v),
                        None => Cond::Absent(key.clone()),
                    }
                };
                let holds = !matches!(&cond, Cond::Equals(_, v) if v == b"stale");
                let writes = vec![
                    Write::Put(key, value.clone()),
                    Write::Put(second, format!("w{i}").into_bytes()),
                ];
                if holds {
                    for wr in &writes {
                        if let Write::Put(k, v) = wr {
                            state.insert(k.clone(), v.clone());
                        }
                    }
                } else {
                    outcome = Outcome::ConditionFailed(0);
                }
                OpKind::Txn {
                    conds: vec![cond],
                    writes,
                }
            }
            _ => {
                let ks: Vec<Key> = if multi_key {
                    vec![key, other]
                } else {
                    vec![key]
                };
                OpKind::Mget {
                    observed: ks.iter().map(|k| state.get(k).cloned()).collect(),
                    keys: ks,
                }
            }
        };
        let client = rng.below(u64::from(clients)) as u32;
        ops.push((
            point,
            Op {
                client,
                invoke: 0,
                complete: None,
                kind,
                outcome,
            },
        ));
    }
    // Per client: invoke in (previous effect point, own point], complete in
    // [own point, next invoke).
    for c in 0..clients {
        let mine: Vec<usize> = (0..n).filter(|&i| ops[i].1.client == c).collect();
        let mut prev_point = 0;
        for &i in &mine {
            let point = ops[i].0;
            ops[i].1.invoke = prev_point + 1 + rng.below(point - prev_point);
            prev_point = point;
        }
        for (j, &i) in mine.iter().enumerate() {
            let point = ops[i].0;
            let limit = mine.get(j + 1).map_or(point + 2000, |&nx| ops[nx].1.invoke);
            if ops[i].1.outcome != Outcome::Unknown {
                ops[i].1.complete = Some(point + rng.below(limit - point));
            }
        }
    }
    History {
        initial: BTreeMap::new(),
        ops: ops.into_iter().map(|(_, op)| op).collect(),
    }
}

fn check_generated(multi_key: bool) {
    for seed in 0..5 {
        let h = generate(seed, 200, 8, multi_key);
        let start = Instant::now();
        let result = check(&h);
        let took = start.elapsed();
        eprintln!("seed {seed} multi_key {multi_key}: {took:?}");
        if let Err(e) = result {
            panic!("seed {seed}: generated history rejected: {e}");
        }
        assert!(took < Duration::from_secs(1), "seed {seed} took {took:?}");
    }
}

#[test]
fn generated_single_key_histories_are_accepted_quickly() {
    check_generated(false);
}

#[test]
fn generated_multi_key_histories_are_accepted_quickly() {
    check_generated(true);
}

/// The generator could hide a bug that accepts everything; corrupting one
/// read of a generated history must turn it into a violation.
#[test]
fn generated_history_with_a_corrupted_read_is_rejected() {
    for multi_key in [false, true] {
        let mut h = generate(7, 200, 8, multi_key);
        let read = h
            .ops
            .iter()
            .rposition(|op| matches!(op.kind, OpKind::Get { .. }))
            .expect("generator produces reads");
        if let OpKind::Get { observed, .. } = &mut h.ops[read].kind {
            *observed = Some(b("corrupt"));
        }
        let v = reject(&h);
        assert_eq!(v.op, read);
    }
}

/// Reference semantics, written independently of the search: replay one
/// op on a map, or `None` if its observation does not match.
fn replay(state: &BTreeMap<Key, Value>, op: &Op) -> Option<BTreeMap<Key, Value>> {
    let cond = |c: &Cond| match c {
        Cond::Equals(k, v) => state.get(k) == Some(v),
        Cond::Absent(k) => !state.contains_key(k),
        Cond::Present(k) => state.contains_key(k),
    };
    let mut next = state.clone();
    match (&op.kind, op.outcome) {
        (OpKind::Get { key, observed }, _) => (state.get(key) == observed.as_ref()).then_some(next),
        (OpKind::Mget { keys, observed }, _) => keys
            .iter()
            .zip(observed)
            .all(|(k, v)| state.get(k) == v.as_ref())
            .then_some(next),
        (OpKind::Put { key, value }, _) => {
            next.insert(key.clone(), value.clone());
            Some(next)
        }
        (OpKind::Delete { key }, _) => {
            next.remove(key);
            Some(next)
        }
        (OpKind::Txn { conds, .. }, Outcome::ConditionFailed(i)) => {
            (conds[..i].iter().all(cond) && !cond(&conds[i])).then_some(next)
        }
        (OpKind::Txn { conds, writes }, _) => {
            if !conds.iter().all(cond) {
                return None;
            }
            for w in writes {
                match w {
                    Write::Put(k, v) => next.insert(k.clone(), v.clone()),
                    Write::Delete(k) => next.remove(k),
                };
            }
            Some(next)
        }
    }
}

/// Brute force: try every order of every admissible subset, checking real
/// time pairwise on the finished sequence.
fn brute_force(h: &History) -> bool {
    let included: Vec<usize> = (0..h.ops.len())
        .filter(|&i| {
            let op = &h.ops[i];
            let read = matches!(op.kind, OpKind::Get { .. } | OpKind::Mget { .. });
            match op.outcome {
                Outcome::Failed => false,
                Outcome::Unknown => !read,
                _ => true,
            }
        })
        .collect();
    let end = |i: usize| match h.ops[i].outcome {
        Outcome::Unknown => u64::MAX,
        _ => h.ops[i].complete.unwrap_or(u64::MAX),
    };
    fn go(
        h: &History,
        included: &[usize],
        end: &dyn Fn(usize) -> u64,
        seq: &mut Vec<usize>,
        state: &BTreeMap<Key, Value>,
    ) -> bool {
        let done = included
            .iter()
            .all(|&i| seq.contains(&i) || h.ops[i].outcome == Outcome::Unknown);
        if done {
            return true;
        }
        for &i in included {
            if seq.contains(&i) {
                continue;
            }
            // Nothing already placed may have been invoked after i completed.
            if seq.iter().any(|&p| end(i) < h.ops[p].invoke) {
                continue;
            }
            if let Some(next) = replay(state, &h.ops[i]) {
                seq.push(i);
                if go(h, included, end, seq, &next) {
                    return true;
                }
                seq.pop();
            }
        }
        false
    }
    // Ops never placed are only legal if optional; the pairwise rule above
    // covers every placed pair, and an unplaced mandatory op fails `done`.
    go(h, &included, &end, &mut Vec::new(), &h.initial)
}

fn random_small_history(rng: &mut Rng) -> History {
    let vals = ["0", "1", "2"];
    let keys = ["x", "y"];
    let pick_key = |rng: &mut Rng| b(keys[rng.below(2) as usize]);
    let n = 2 + rng.below(5) as usize;
    let mut ops = Vec::new();
    for _ in 0..n {
        let val = |rng: &mut Rng| b(vals[rng.below(3) as usize]);
        let opt_val = |rng: &mut Rng| (rng.below(4) != 0).then(|| val(rng));
        let kind = match rng.below(5) {
            0 => OpKind::Get {
                key: pick_key(rng),
                observed: opt_val(rng),
            },
            1 => OpKind::Put {
                key: pick_key(rng),
                value: val(rng),
            },
            2 => OpKind::Delete { key: pick_key(rng) },
            3 => OpKind::Txn {
                conds: (0..1 + rng.below(2))
                    .map(|_| match rng.below(3) {
                        0 => Cond::Equals(pick_key(rng), val(rng)),
                        1 => Cond::Absent(pick_key(rng)),
                        _ => Cond::Present(pick_key(rng)),
                    })
                    .collect(),
                writes: (0..rng.below(3))
                    .map(|_| match rng.below(3) {
                        0 => Write::Delete(pick_key(rng)),
                        _ => Write::Put(pick_key(rng), val(rng)),
                    })
                    .collect(),
            },
            _ => {
                let keys: Vec<Key> = (0..1 + rng.below(2)).map(|_| pick_key(rng)).collect();
                OpKind::Mget {
                    observed: keys.iter().map(|_| opt_val(rng)).collect(),
                    keys,
                }
            }
        };
        let outcome = match (rng.below(10), &kind) {
            (0, _) => Outcome::Unknown,
            (1, _) => Outcome::Failed,
            (2..=4, OpKind::Txn { conds, .. }) => {
                Outcome::ConditionFailed(rng.below(conds.len() as u64) as usize)
            }
            _ => Outcome::Ok,
        };
        let invoke = rng.below(40);
        let complete = (outcome != Outcome::Unknown).then(|| invoke + rng.below(25));
        ops.push(Op {
            client: ops.len() as u32,
            invoke,
            complete,
            kind,
            outcome,
        });
    }
    let mut initial = BTreeMap::new();
    for k in keys {
        if rng.below(3) != 0 {
            initial.insert(b(k), b(vals[rng.below(3) as usize]));
        }
    }
    History { initial, ops }
}

/// Differential test against brute force on thousands of tiny histories,
/// about half of them invalid.
#[test]
fn agrees_with_brute_force_on_small_histories() {
    let mut rng = Rng(42);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..20_000 {
        let h = random_small_history(&mut rng);
        let expected = brute_force(&h);
        match check(&h) {
            Ok(()) if expected => accepted += 1,
            Err(CheckError::Violation(_)) if !expected => rejected += 1,
            other => {
                panic!("case {case}: brute force says {expected}, checker {other:?}\n{h:#?}")
            }
        }
    }
    eprintln!("accepted {accepted}, rejected {rejected}");
    assert!(
        accepted > 2_000 && rejected > 2_000,
        "{accepted} / {rejected}"
    );
}

#[test]
fn violation_in_one_group_beats_undecided_other_group() {
    let mut h = generate(3, 200, 8, true);
    h.ops.push(ok(9, 0, 10, put("z", "1")));
    h.ops.push(ok(9, 20, 30, get("z", None)));
    assert!(matches!(
        check_with_budget(&h, 10),
        Err(CheckError::Violation(Violation { op: 201, .. }))
    ));
}

#[test]
fn exhausted_budget_is_not_a_verdict() {
    let h = generate(3, 200, 8, true);
    assert!(matches!(
        check_with_budget(&h, 10),
        Err(CheckError::TooLarge { explored: 10, .. })
    ));
}
