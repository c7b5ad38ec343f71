//! Frame codec hot path: encode and decode of GET and PUT requests, and parsing
//! a 16-request pipelined burst, as the connection task does per batch.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use corekv::core::status::Status;
use corekv::net::codec::{
    decode_request, encode_request, encode_response, parse_frame, Limits, Parsed, Request, Side,
};

fn bench(c: &mut Criterion) {
    let limits = Limits::new(16 << 20);
    let body_max = limits.body_bytes_max();
    let key = [b'k'; 16];
    let value = [b'v'; 256];
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(1024);
    g.bench_function("encode_get", |b| {
        b.iter(|| {
            buf.clear();
            encode_request(&mut buf, 7, black_box(&Request::Get { key: &key }));
            black_box(buf.len())
        })
    });
    g.bench_function("encode_put_256", |b| {
        b.iter(|| {
            buf.clear();
            encode_request(
                &mut buf,
                7,
                black_box(&Request::Put {
                    key: &key,
                    value: &value,
                }),
            );
            black_box(buf.len())
        })
    });
    g.bench_function("encode_response_256", |b| {
        b.iter(|| {
            buf.clear();
            encode_response(&mut buf, 3, 7, Status::Ok, black_box(&value));
            black_box(buf.len())
        })
    });
    for (name, req) in [
        ("decode_get", Request::Get { key: &key }),
        (
            "decode_put_256",
            Request::Put {
                key: &key,
                value: &value,
            },
        ),
    ] {
        let mut frame = Vec::new();
        encode_request(&mut frame, 7, &req);
        g.bench_function(name, |b| {
            b.iter(
                || match parse_frame(black_box(&frame), Side::Server, body_max) {
                    Parsed::Frame { header, body, .. } => {
                        black_box(decode_request(&header, body, &limits).is_ok())
                    }
                    _ => unreachable!(),
                },
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("codec_pipeline");
    for depth in [16usize] {
        let mut burst = Vec::new();
        for i in 0..depth {
            if i % 2 == 0 {
                encode_request(&mut burst, i as u64, &Request::Get { key: &key });
            } else {
                encode_request(
                    &mut burst,
                    i as u64,
                    &Request::Put {
                        key: &key,
                        value: &value,
                    },
                );
            }
        }
        g.throughput(Throughput::Elements(depth as u64));
        g.bench_with_input(
            BenchmarkId::new("parse_burst", depth),
            &burst,
            |b, burst| {
                b.iter(|| {
                    let mut at = 0;
                    let mut n = 0;
                    while let Parsed::Frame { header, body, len } =
                        parse_frame(&burst[at..], Side::Server, body_max)
                    {
                        n += usize::from(decode_request(&header, body, &limits).is_ok());
                        at += len;
                    }
                    black_box(n)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
