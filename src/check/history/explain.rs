//! Explaining a violation: the operations around where the search got stuck,
//! in the history's terms (keys and values shown readably), for a person.
//!
//! It owns the text of a [`super::Violation`]; it must never change a verdict.

use std::fmt;

use super::compile::{CompiledOp, Interner, Pred};
use super::model::*;
use super::search::Stuck;

pub(super) fn explain(
    history: &History,
    interner: &Interner<'_>,
    ops: &[CompiledOp],
    global_of: &[usize],
    stuck: Stuck,
) -> Violation {
    use fmt::Write as _;
    let orig = |i: usize| ops[i].orig;
    let describe = |i: usize| describe_op(orig(i), &history.ops[orig(i)]);
    let name = |id: u32| match interner.value_name(id) {
        Some(v) => show(v),
        None => "absent".to_string(),
    };
    let key_name = |local: usize| show(interner.key_names[global_of[local]]);

    let mut state: Vec<(Key, Option<Value>)> = global_of
        .iter()
        .zip(&stuck.state)
        .map(|(&g, &v)| {
            (
                interner.key_names[g].to_vec(),
                interner.value_name(v).map(<[u8]>::to_vec),
            )
        })
        .collect();
    state.sort();

    // Why the blocked operation does not fit the state it had to be placed in.
    let why = |i: usize| -> String {
        let op = &ops[i];
        for &(k, p) in &op.holds {
            let v = stuck.state[k];
            if !p.holds(v) {
                let wanted = match p {
                    Pred::Is(x) => name(x),
                    Pred::Present => "present".to_string(),
                };
                return format!("needs {} = {wanted} but it is {}", key_name(k), name(v));
            }
        }
        if let Some((k, p)) = op.fails {
            if p.holds(stuck.state[k]) {
                return format!(
                    "reports its condition on {} false but it holds ({})",
                    key_name(k),
                    name(stuck.state[k])
                );
            }
        }
        "fits this state, but every continuation from there was already refuted".to_string()
    };

    let mut m = String::new();
    let _ = writeln!(
        m,
        "not strictly serializable: no valid order can place op {}",
        describe(stuck.op)
    );
    let _ = writeln!(
        m,
        "  deepest point: {} of {} ops in this key group placed{}",
        stuck.prefix.len(),
        ops.len(),
        if stuck.prefix.is_empty() {
            ""
        } else {
            ", ending with:"
        }
    );
    const SHOWN: usize = 8;
    let skip = stuck.prefix.len().saturating_sub(SHOWN);
    if skip > 0 {
        let _ = writeln!(m, "    ... {skip} earlier");
    }
    for &i in &stuck.prefix[skip..] {
        let _ = writeln!(m, "    {}", describe(i));
    }
    let shown_state: Vec<String> = state
        .iter()
        .map(|(k, v)| {
            let v = show_opt(v.as_deref());
            format!("{} = {v}", show(k))
        })
        .collect();
    let _ = writeln!(m, "  state there: {}", shown_state.join(", "));
    let _ = writeln!(
        m,
        "  op #{} is the earliest-completing op not yet placed, so it must precede every op \
         invoked after it completed, but it {}",
        orig(stuck.op),
        why(stuck.op)
    );
    for &j in &stuck.also_stuck {
        let _ = writeln!(
            m,
            "  eligible instead, but also no fit: {}: it {}",
            describe(j),
            why(j)
        );
    }

    Violation {
        op: orig(stuck.op),
        prefix: stuck.prefix.iter().map(|&i| orig(i)).collect(),
        state,
        also_stuck: stuck.also_stuck.iter().map(|&i| orig(i)).collect(),
        message: m.trim_end().to_string(),
    }
}

/// Printable ASCII as a quoted string, anything else as hex.
pub(super) fn show(bytes: &[u8]) -> String {
    use fmt::Write as _;
    if bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        let mut s = String::from("0x");
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

pub(super) fn show_opt(v: Option<&[u8]>) -> String {
    v.map_or_else(|| "absent".to_string(), show)
}

pub(super) fn describe_op(index: usize, op: &Op) -> String {
    let kind = match &op.kind {
        OpKind::Get { key, observed } => {
            format!("get {} -> {}", show(key), show_opt(observed.as_deref()))
        }
        OpKind::Put { key, value } => format!("put {} = {}", show(key), show(value)),
        OpKind::Delete { key } => format!("delete {}", show(key)),
        OpKind::Txn { conds, writes } => {
            let conds: Vec<String> = conds
                .iter()
                .map(|c| match c {
                    Cond::Equals(k, v) => format!("{} == {}", show(k), show(v)),
                    Cond::Absent(k) => format!("{} absent", show(k)),
                    Cond::Present(k) => format!("{} present", show(k)),
                })
                .collect();
            let writes: Vec<String> = writes
                .iter()
                .map(|w| match w {
                    Write::Put(k, v) => format!("{} = {}", show(k), show(v)),
                    Write::Delete(k) => format!("delete {}", show(k)),
                })
                .collect();
            format!("txn if [{}] then [{}]", conds.join(", "), writes.join(", "))
        }
        OpKind::Mget { keys, observed } => {
            let pairs: Vec<String> = keys
                .iter()
                .zip(observed)
                .map(|(k, v)| format!("{} -> {}", show(k), show_opt(v.as_deref())))
                .collect();
            format!("mget [{}]", pairs.join(", "))
        }
    };
    let outcome = match op.outcome {
        Outcome::Ok => "ok".to_string(),
        Outcome::Failed => "failed".to_string(),
        Outcome::ConditionFailed(i) => format!("condition {i} false"),
        Outcome::Unknown => "unknown".to_string(),
    };
    let end = match (op.outcome, op.complete) {
        (Outcome::Unknown, _) | (_, None) => "inf)".to_string(),
        (_, Some(c)) => format!("{c}]"),
    };
    format!(
        "#{index} (client {}, {kind}: {outcome}, [{}, {end})",
        op.client, op.invoke
    )
}
