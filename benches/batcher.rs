//! What does the dynamic-batching policy cost per request?
//!
//! Every `builtin/mlp` request passes through `BatchPolicy`: one `push`, a share of the `retain`
//! pass that drops requests whose client left, and a share of the `ready` call that cuts the batch.
//! This measures those steps for a full batch of 64 one-row requests (the default
//! `max-batch-size`) and for requests arriving one by one, so the number per request can be set
//! against a forward pass of the seeded network (tens of microseconds on the CPU, see
//! `benches/kernels.rs`). The answer we expect, and the reason batching is always on: tens of
//! nanoseconds per request, negligible next to the kernel.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use worker::batcher::BatchPolicy;

fn full_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_policy");
    for n in [8usize, 64] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("push_retain_ready_{n}_requests"), |b| {
            let t0 = Instant::now();
            let mut policy = BatchPolicy::new(64, Duration::from_millis(2));
            b.iter(|| {
                for i in 0..n {
                    policy.push(t0, 1, i);
                }
                policy.retain(|i| black_box(*i) < usize::MAX);
                let batch = policy.ready(t0 + Duration::from_millis(2));
                black_box(batch.map(|b| b.rows))
            });
        });
    }
    g.finish();
}

fn one_by_one(c: &mut Criterion) {
    c.bench_function("batch_policy/single_request_not_yet_due", |b| {
        let t0 = Instant::now();
        let mut policy = BatchPolicy::new(64, Duration::from_millis(2));
        b.iter(|| {
            policy.push(t0, 1, 0u32);
            let not_due = policy.ready(t0);
            let deadline = policy.next_deadline();
            let due = policy.ready(t0 + Duration::from_millis(2));
            black_box((not_due.is_none(), deadline, due.map(|b| b.rows)))
        });
    });
}

criterion_group!(benches, full_batch, one_by_one);
criterion_main!(benches);
