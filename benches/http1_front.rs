//! Question: what does the gateway's own HTTP/1.1 front spend per call on the wire format — parsing
//! a typical invocation request head into a request (`httparse`, path and values sliced from the
//! read buffer, the header map built, framing and connection handling decided in the same pass),
//! and encoding a typical answer's status line and headers (with `date`) — and how does the parse
//! grow with a large head? Both run once per HTTP/1.1 call; together they should stay near 1 µs.

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use dataplane::bench::{encode_response_head, parse_request_head};
use http::{HeaderMap, HeaderValue};
use std::hint::black_box;

/// What a typical pexec client sends (an SDK over HTTP/1.1), body included.
const TYPICAL: &[u8] =
    b"POST /v2/nvcf/pexec/functions/0f6d3c8e-9a3b-4c1e-8d2f-1a2b3c4d5e6f HTTP/1.1\r\n\
host: invocation.api.nvcf.example.com\r\n\
authorization: Bearer nvapi-0000000000000000000000000000000000000000000000000000000000000000\r\n\
content-type: application/json\r\n\
accept: application/json\r\n\
user-agent: python-requests/2.32.3\r\n\
accept-encoding: gzip, deflate\r\n\
content-length: 17\r\n\
\r\n\
{\"hello\":\"world\"}";

fn large_head() -> Vec<u8> {
    let mut wire = b"POST /echo HTTP/1.1\r\nhost: x.invocation.gw\r\n".to_vec();
    for i in 0..60 {
        wire.extend_from_slice(format!("x-trace-{i}: {}\r\n", "v".repeat(64)).as_bytes());
    }
    wire.extend_from_slice(b"content-length: 0\r\n\r\n");
    wire
}

fn bench(c: &mut Criterion) {
    assert!(parse_request_head(TYPICAL, 16 * 1024).is_some());
    c.bench_function("front/parse typical pexec head (7 headers)", |b| {
        b.iter(|| black_box(parse_request_head(black_box(TYPICAL), 16 * 1024)));
    });
    let large = large_head();
    assert!(parse_request_head(&large, 16 * 1024).is_some());
    c.bench_function("front/parse large head (62 headers, 4.6 KiB)", |b| {
        b.iter(|| black_box(parse_request_head(black_box(&large), 16 * 1024)));
    });

    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("nvcf-reqid", "7d0bb6c6-6a34-4a3e-9a1f-0d1b1c5f6f41"),
        ("nvcf-status", "fulfilled"),
        ("access-control-expose-headers", "nvcf-reqid"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    let mut out = BytesMut::with_capacity(1024);
    c.bench_function(
        "front/encode typical answer head (4 headers + date + length)",
        |b| {
            b.iter(|| {
                out.clear();
                encode_response_head(&mut out, black_box(&headers), 112);
                black_box(out.len())
            });
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
