//! Unit tests of `txn_format`: round trips, and every length field bounded.

use super::*;

#[test]
fn txn_round_trip_both_forms() {
    let conds = [
        Cond::Equals(b"a", b"1"),
        Cond::Absent(b"b"),
        Cond::Present(b"c"),
        Cond::EqualsExpiring(b"d", b"4", 1_700_000_000_000),
        Cond::EqualsExpiring(b"e", b"", 0),
    ];
    let writes = [Write::Put(b"a", b"2"), Write::Delete(b"c")];
    let mut body = Vec::new();
    encode_txn(&mut body, &conds, &writes);
    let v = TxnView::parse(&body, false).expect("valid");
    let got: Vec<_> = v.conds().collect();
    assert_eq!(got, (0..).zip(conds).collect::<Vec<_>>());
    assert_eq!(v.writes().collect::<Vec<_>>(), writes.to_vec());

    let mut shard = Vec::new();
    let at = begin_list(&mut shard);
    encode_cond(&mut shard, Some(7), &conds[2]);
    end_list(&mut shard, at, 1);
    let at = begin_list(&mut shard);
    encode_write(&mut shard, &writes[0]);
    end_list(&mut shard, at, 1);
    let v = TxnView::parse(&shard, true).expect("valid");
    assert_eq!(v.conds().collect::<Vec<_>>(), vec![(7, conds[2])]);
    assert_eq!(write_bytes(&writes[0]), 9 + 1 + 1);
}

#[test]
fn every_truncation_and_bad_count_is_rejected() {
    let mut body = Vec::new();
    encode_txn(
        &mut body,
        &[
            Cond::Equals(b"key", b"value"),
            Cond::EqualsExpiring(b"key2", b"value", 9),
        ],
        &[Write::Put(b"k", b"v")],
    );
    for cut in 0..body.len() {
        assert!(TxnView::parse(&body[..cut], false).is_err(), "cut {cut}");
    }
    let mut huge = body.clone();
    huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        TxnView::parse(&huge, false).unwrap_err(),
        TxnFormatError::Truncated
    );
    let mut trailing = body.clone();
    trailing.push(0);
    assert!(TxnView::parse(&trailing, false).is_err());
}

/// A part's view, and a view made again from a shape, are exactly what
/// parsing the same bytes finds.
#[test]
fn parts_and_shapes_make_the_views_parsing_makes() {
    let mut part = TxnPart::default();
    assert!(part.is_empty());
    part.push_cond(4, &Cond::Equals(b"a", b"1"));
    part.push_cond(9, &Cond::Absent(b"b"));
    part.push_cond(11, &Cond::EqualsExpiring(b"c", b"3", 12));
    part.push_write(&Write::Put(b"a", b"2"));
    let mut out = vec![7u8; 3];
    let made = part.encode(&mut out);
    let made_shape = made.shape();
    let made_conds = format!("{:?}", made.conds().collect::<Vec<_>>());
    let parsed = TxnView::parse(&out, true).expect("a part encodes validly");
    assert_eq!(made_shape, parsed.shape());
    assert_eq!(
        made_conds,
        format!("{:?}", parsed.conds().collect::<Vec<_>>())
    );
    assert_eq!(parsed.conds().nth(1), Some((9, Cond::Absent(&b"b"[..]))));

    let mut body = Vec::new();
    encode_txn(&mut body, &[Cond::Present(b"x")], &[Write::Delete(b"y")]);
    let shape = TxnView::parse(&body, false).unwrap().shape();
    let again = shape.view(&body);
    assert_eq!(again.body(), &body[..]);
    assert_eq!(
        again.conds().collect::<Vec<_>>(),
        vec![(0, Cond::Present(b"x"))]
    );
    assert_eq!(
        again.writes().collect::<Vec<_>>(),
        vec![Write::Delete(b"y")]
    );
}

#[test]
#[should_panic(expected = "a transaction shape applied to other bytes")]
fn a_shape_refuses_other_bytes() {
    let mut body = Vec::new();
    encode_txn(&mut body, &[], &[Write::Delete(b"y")]);
    let shape = TxnView::parse(&body, false).unwrap().shape();
    body.push(0);
    let _ = shape.view(&body);
}

#[test]
fn a_valid_prepare_encodes_what_parsing_finds() {
    let writes = [Write::Put(b"a", b"2"), Write::Delete(b"c")];
    let mut part = Vec::new();
    let at = begin_list(&mut part);
    end_list(&mut part, at, 0);
    let at = begin_list(&mut part);
    for w in &writes {
        encode_write(&mut part, w);
    }
    end_list(&mut part, at, 2);
    let view = TxnView::parse(&part, true).expect("valid part");
    let id = TxnId {
        coordinator: 3,
        seq: 99,
    };
    let made = ValidPrepare::encode(id, &view);
    let parsed = ValidPrepare::parse(made.body()).expect("what we encode parses");
    assert_eq!(made, parsed);
    assert_eq!(made.record().id, id);
    assert_eq!(made.record().writes().collect::<Vec<_>>(), writes.to_vec());
    let body = made.body();
    assert!(ValidPrepare::parse(&body[..body.len() - 1]).is_err());
}

#[test]
fn records_round_trip() {
    let id = TxnId {
        coordinator: 3,
        seq: 99,
    };
    let mut b = Vec::new();
    let at = begin_commit_record(&mut b, id, &[1, 2]);
    encode_write(&mut b, &Write::Put(b"x", b"y"));
    end_list(&mut b, at, 1);
    let c = parse_commit_record(&b).expect("valid");
    assert_eq!(c.id, id);
    assert_eq!(c.participants().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(c.writes().collect::<Vec<_>>(), vec![Write::Put(b"x", b"y")]);
    for cut in 0..b.len() {
        assert!(parse_commit_record(&b[..cut]).is_err());
    }

    let mut p = Vec::new();
    let at = begin_prepare_record(&mut p, id);
    encode_write(&mut p, &Write::Delete(b"z"));
    end_list(&mut p, at, 1);
    let pr = parse_prepare_record(&p).expect("valid");
    assert_eq!(pr.writes().collect::<Vec<_>>(), vec![Write::Delete(b"z")]);

    let mut r = Vec::new();
    encode_resolve_record(&mut r, id, true);
    assert_eq!(
        parse_resolve_record(&r),
        Ok(ResolveRecord { id, commit: true })
    );
    r[10] = 2;
    assert!(parse_resolve_record(&r).is_err());
}

#[test]
fn mput_round_trip_and_bounds() {
    let mut b = Vec::new();
    encode_mput(&mut b, &[(b"a", b"1"), (b"bb", b"")]);
    let view = MputView::parse(&b).expect("valid");
    assert_eq!(
        view.pairs().collect::<Vec<_>>(),
        vec![(&b"a"[..], &b"1"[..]), (&b"bb"[..], &b""[..])]
    );
    assert_eq!(view.count(), 2);
    for cut in 0..b.len() {
        assert!(MputView::parse(&b[..cut]).is_err());
    }
    // As a transaction: no conditions, the same writes in order.
    let mut txn = Vec::new();
    let made = view.write_as_txn(&mut txn).shape();
    let t = TxnView::parse(&txn, false).expect("a valid TXN body");
    assert_eq!(made, t.shape(), "the view made is the view parsed");
    assert_eq!(t.conds().count(), 0);
    assert_eq!(
        t.writes().collect::<Vec<_>>(),
        vec![Write::Put(b"a", b"1"), Write::Put(b"bb", b"")]
    );
}

#[test]
fn expiring_writes_round_trip_and_bad_ones_are_refused() {
    let writes = [
        Write::put(b"a", b"1", 1_700_000_000_000),
        Write::put(b"b", b"", u64::MAX),
        Write::put(b"c", b"2", 0),
        Write::Delete(b"d"),
    ];
    assert!(matches!(writes[2], Write::Put(..)), "no expiry: WRITE_PUT");
    let mut body = Vec::new();
    encode_txn(&mut body, &[Cond::Absent(b"a")], &writes);
    let view = TxnView::parse(&body, false).unwrap();
    assert_eq!(view.writes().collect::<Vec<_>>(), writes.to_vec());
    for w in &writes {
        let mut one = Vec::new();
        encode_write(&mut one, w);
        assert_eq!(one.len(), write_bytes(w));
    }
    // An expiring write with expiry 0, or cut anywhere, does not parse.
    let mut zero = Vec::new();
    encode_txn(&mut zero, &[], &[Write::PutExpiring(b"k", b"v", 7)]);
    let at = zero.len() - 4 - 1 - 8;
    zero[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    assert!(TxnView::parse(&zero, false).is_err());
    for cut in 0..body.len() {
        assert!(TxnView::parse(&body[..cut], false).is_err(), "cut {cut}");
    }
}

#[test]
fn equals_expiring_holds_only_for_the_value_and_the_expiry() {
    let c = Cond::EqualsExpiring(b"k", b"v", 5);
    assert!(c.holds(Some(b"v"), 5));
    assert!(!c.holds(Some(b"v"), 0));
    assert!(!c.holds(Some(b"v"), 6));
    assert!(!c.holds(Some(b"w"), 5));
    assert!(!c.holds(None, 0));
    let none = Cond::EqualsExpiring(b"k", b"v", 0);
    assert!(none.holds(Some(b"v"), 0));
    assert!(!none.holds(Some(b"v"), 5));
    // EQUALS ignores the expiry, as it always has.
    assert!(Cond::Equals(b"k", b"v").holds(Some(b"v"), 5));
}
