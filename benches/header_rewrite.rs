//! Question: what does rewriting a client's request headers for the worker cost per invocation —
//! hop-by-hop removal, one pass dropping the caller's credential, `Host` and forged `NVCF-*`
//! copies (`dispatch::prepare_headers`), then writing the worker-owned `NVCF-*` lines into
//! the worker's request head from the route's prebuilt block, as the HTTP/1.1 worker client does
//! — and what does stripping hop-by-hop headers off a worker's
//! response cost? Both run on every proxied invocation, so they should stay well under 1 µs.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use dataplane::bench::{Region, prepare_headers, route};
use dataplane::routing::WorkerTarget;
use http::{HeaderMap, HeaderValue};
use std::hint::black_box;
use uuid::Uuid;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

/// What a typical pexec client sends (curl / an SDK over HTTP/1.1).
const TYPICAL: &[(&str, &str)] = &[
    ("host", "api.invocation.gw"),
    (
        "authorization",
        "Bearer nvapi-0000000000000000000000000000000000000000000000000000000000000000",
    ),
    ("content-type", "application/json"),
    ("accept", "application/json"),
    ("user-agent", "python-requests/2.32.3"),
    ("content-length", "87"),
    ("accept-encoding", "gzip, deflate"),
];

/// A hostile or proxied request: `Connection`-named hop headers, forged worker-owned values.
const HOSTILE: &[(&str, &str)] = &[
    ("host", "api.invocation.gw"),
    ("authorization", "Bearer nvapi-x"),
    ("connection", "keep-alive, x-hop"),
    ("keep-alive", "timeout=5"),
    ("x-hop", "1"),
    ("te", "trailers"),
    ("nvcf-reqid", "forged"),
    ("nvcf-sub", "forged"),
    ("nvcf-poll-seconds", "9"),
    ("function-id", "00000000-0000-0000-0000-000000000000"),
    ("content-type", "application/json"),
    ("x-custom", "kept"),
];

/// A worker's response head as the gateway receives it.
const RESPONSE: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("content-length", "112"),
    ("date", "Tue, 01 Jul 2025 00:00:00 GMT"),
    ("connection", "keep-alive"),
    ("nvcf-reqid", "7d0bb6c6-6a34-4a3e-9a1f-0d1b1c5f6f41"),
    ("nvcf-status", "fulfilled"),
];

fn bench(c: &mut Criterion) {
    let targets = vec![WorkerTarget::new(
        "w0".into(),
        "http://127.0.0.1:9000".into(),
        8,
    )];
    let route = route(Uuid::new_v4(), Uuid::new_v4(), "bench-fn", targets);
    let region = Region::new(HeaderValue::from_static("local"));
    let id = Uuid::new_v4();

    for (name, pairs) in [
        (
            "prepare_headers (typical pexec request, 7 headers)",
            TYPICAL,
        ),
        (
            "prepare_headers (hop-by-hop + forged NVCF-*, 12 headers)",
            HOSTILE,
        ),
    ] {
        let template = headers(pairs);
        c.bench_function(name, |b| {
            b.iter_batched_ref(
                || (template.clone(), bytes::BytesMut::with_capacity(1024)),
                |(h, head)| prepare_headers(h, head, black_box(id), &route, &region, 60),
                BatchSize::SmallInput,
            )
        });
    }
    let template = headers(RESPONSE);
    c.bench_function("remove_hop_by_hop (worker response, 6 headers)", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |h| model::headers::remove_hop_by_hop(black_box(h)),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
