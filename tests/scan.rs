//! SCAN (with pushed-down filters) and MGET against a real multi-shard server,
//! checked against a model of what was written.

use crate::common;

use std::collections::BTreeMap;
use std::process::Command;

use corekv::core::scan_format::ScanRequest;
use corekv::net::client::ScanFilter;
use corekv::net::codec::Request;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn load(c: &mut corekv::net::client::Client) -> Model {
    let mut model = Model::new();
    // A fixed LCG keeps the data set reproducible without a seed parameter.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    for i in 0..1500u64 {
        let key = format!(
            "{}:{:05}",
            ["user", "order", "item"][(rnd() % 3) as usize],
            rnd() % 5000
        );
        let value = match i % 3 {
            0 => format!(
                "{{\"name\":\"n{}\",\"age\":{},\"tags\":{{\"color\":\"{}\"}}}}",
                rnd() % 50,
                rnd() % 10,
                ["red", "blue"][(rnd() % 2) as usize]
            ),
            1 => format!("plain text {} with needle{} inside", rnd() % 100, rnd() % 7),
            _ => format!("binary-ish \u{1} {}", rnd()),
        };
        c.queue(&Request::Put {
            key: key.as_bytes(),
            value: value.as_bytes(),
        });
        model.insert(key.into_bytes(), value.into_bytes());
        if i % 100 == 99 {
            c.flush().unwrap();
            while c.in_flight() > 0 {
                assert!(c.recv().unwrap().status.is_ok());
            }
        }
    }
    // Deletes must disappear from scans too.
    let doomed: Vec<Vec<u8>> = model.keys().step_by(7).cloned().collect();
    for k in doomed {
        c.delete(&k).unwrap();
        model.remove(&k);
    }
    model
}

fn naive(model: &Model, start: &[u8], end: &[u8], f: &ScanFilter) -> Vec<(Vec<u8>, Vec<u8>)> {
    model
        .iter()
        .filter(|(k, _)| k.as_slice() >= start && (end.is_empty() || k.as_slice() < end))
        .filter(|(k, v)| match f {
            ScanFilter::None => true,
            ScanFilter::KeyPrefix(p) => k.starts_with(p),
            ScanFilter::ValueContains(n) => v.windows(n.len()).any(|w| w == n.as_slice()),
            ScanFilter::JsonEq { path, value_json } => {
                let Ok(doc) = serde_json::from_slice::<serde_json::Value>(v) else {
                    return false;
                };
                let want: serde_json::Value = serde_json::from_str(value_json).unwrap();
                path.split('.').try_fold(&doc, |d, p| d.get(p)) == Some(&want)
            }
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn scans_and_filters_equal_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "3"]);
    let mut c = server.client();
    let model = load(&mut c);
    assert!(model.len() > 1000);

    assert_eq!(
        c.scan_all(b"", b"", &ScanFilter::None).unwrap(),
        naive(&model, b"", b"", &ScanFilter::None)
    );
    for (start, end) in [
        (&b"order:"[..], &b"order:~"[..]),
        (b"item:01", b"user:02"),
        (b"zzz", b""),
        (b"", b"a"),
    ] {
        assert_eq!(
            c.scan_all(start, end, &ScanFilter::None).unwrap(),
            naive(&model, start, end, &ScanFilter::None)
        );
    }
    // Small pages stitched together give the same answer.
    let mut from = b"".to_vec();
    let mut paged = Vec::new();
    loop {
        let page = c.scan_page(&from, b"", 7, &ScanFilter::None).unwrap();
        assert!(page.entries.len() <= 7);
        paged.extend(page.entries);
        match page.next {
            Some(n) => from = n,
            None => break,
        }
    }
    assert_eq!(paged, naive(&model, b"", b"", &ScanFilter::None));

    let filters = [
        ScanFilter::KeyPrefix(b"user:".to_vec()),
        ScanFilter::KeyPrefix(b"order:004".to_vec()),
        ScanFilter::ValueContains(b"needle3".to_vec()),
        ScanFilter::ValueContains(b"\x01".to_vec()),
        ScanFilter::JsonEq {
            path: "age".into(),
            value_json: "3".into(),
        },
        ScanFilter::JsonEq {
            path: "tags.color".into(),
            value_json: "\"red\"".into(),
        },
        ScanFilter::JsonEq {
            path: "name".into(),
            value_json: "\"n7\"".into(),
        },
    ];
    for f in &filters {
        let want = naive(&model, b"", b"", f);
        assert!(!want.is_empty(), "{f:?} should match something");
        assert_eq!(c.scan_all(b"", b"", f).unwrap(), want, "{f:?}");
        assert_eq!(
            c.scan_all(b"item:", b"order:", f).unwrap(),
            naive(&model, b"item:", b"order:", f),
            "{f:?}"
        );
    }
}

#[test]
fn scan_sees_pipelined_writes_and_mget_spans_shards() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2"]);
    let mut c = server.client();
    // PUT then SCAN in one flush: the scan runs after the put in request order.
    c.queue(&Request::Put {
        key: b"p:1",
        value: b"one",
    });
    c.queue(&Request::Scan(ScanRequest {
        start: b"p:",
        end: b"p;",
        limit: 10,
        filter_kind: 0,
        filter_arg: b"",
    }));
    c.flush().unwrap();
    assert!(c.recv().unwrap().status.is_ok());
    let scan = c.recv().unwrap();
    assert!(scan.status.is_ok());
    assert!(
        scan.body.windows(3).any(|w| w == b"one"),
        "the scan must see the PUT before it"
    );

    let keys: Vec<Vec<u8>> = (0..50).map(|i| format!("m{i}").into_bytes()).collect();
    for (i, k) in keys.iter().enumerate() {
        if i % 2 == 0 {
            c.put(k, format!("v{i}").as_bytes()).unwrap();
        }
    }
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let got = c.mget(&refs).unwrap();
    for (i, v) in got.iter().enumerate() {
        let want = (i % 2 == 0).then(|| format!("v{i}").into_bytes());
        assert_eq!(v, &want, "key m{i}");
    }

    // Bad arguments are answered and the connection stays usable.
    let err = c.scan_page(b"", b"", 0, &ScanFilter::None).unwrap_err();
    assert_eq!(err.name(), "INVALID_ARGUMENT");
    let err = c
        .scan_page(
            b"",
            b"",
            5,
            &ScanFilter::JsonEq {
                path: "a".into(),
                value_json: "{oops".into(),
            },
        )
        .unwrap_err();
    assert_eq!(err.name(), "INVALID_ARGUMENT");
    c.ping().unwrap();

    // The CLI pages through everything and prints key<TAB>value lines.
    let out = Command::new(common::corekv_bin())
        .args([
            "cli",
            "--addr",
            &server.addr.to_string(),
            "scan",
            "m",
            "n",
            "--prefix",
            "m1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec!["m10\tv10", "m12\tv12", "m14\tv14", "m16\tv16", "m18\tv18"]
    );
    let out = Command::new(common::corekv_bin())
        .args([
            "cli",
            "--addr",
            &server.addr.to_string(),
            "mget",
            "m0",
            "m1",
            "m2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a missing key exits 1");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "v0\n\nv2\n");
}

/// With two shards the server asks each for its share of the limit and tops
/// up the one that fell short: an unfiltered page is always full (the limit,
/// or what is left of the range), whatever the start and the limit.
#[test]
fn unfiltered_pages_are_full_over_two_shards() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2"]);
    let mut c = server.client();
    let model = load(&mut c);
    let keys: Vec<&Vec<u8>> = model.keys().collect();
    let mut short_seen = 0;
    for (i, limit) in [1u32, 2, 5, 7, 16, 50, 100, 333, 1000]
        .iter()
        .cycle()
        .take(90)
        .enumerate()
    {
        let from = keys[(i * 7919) % keys.len()];
        let page = c.scan_page(from, b"", *limit, &ScanFilter::None).unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = model
            .range(from.clone()..)
            .take(*limit as usize)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if want.len() < *limit as usize {
            short_seen += 1;
        }
        assert!(
            page.entries == want,
            "from {:?}, limit {limit}: {} entries, expected {}",
            String::from_utf8_lossy(from),
            page.entries.len(),
            want.len()
        );
    }
    assert!(short_seen > 0, "some pages reach the end of the range");
}
