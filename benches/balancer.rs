//! Question: what does picking a worker cost per invocation — power of two choices on outstanding
//! requests (`Balancer::pick`: two candidates' counters looked up, the lighter one incremented) and
//! the drop that ends the outstanding request — for a version with 1, 2 and 8 ready workers? It runs
//! on every dispatch, so it should stay in the tens of nanoseconds.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dataplane::bench::Balancer;
use dataplane::routing::WorkerTarget;
use std::hint::black_box;

fn targets(n: usize) -> Vec<WorkerTarget> {
    (0..n)
        .map(|i| {
            WorkerTarget::new(
                format!("worker-{i:04}-{}", "0".repeat(24)),
                format!("http://10.0.0.{i}:9000"),
                8,
            )
        })
        .collect()
}

/// A cheap per-iteration random number (xorshift64), as the gateway draws one per request.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer pick + drop");
    for n in [1usize, 2, 8] {
        let targets = targets(n);
        let balancer = Balancer::default();
        // Some load already on the workers, held for the whole bench.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let held: Vec<_> = (0..n * 3)
            .filter_map(|_| balancer.pick(&targets, next(&mut seed)))
            .collect();
        group.bench_with_input(BenchmarkId::new("workers", n), &targets, |b, targets| {
            b.iter(|| {
                balancer
                    .pick(black_box(targets), next(&mut seed))
                    .map(|(i, _outstanding)| i)
            })
        });
        drop(held);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
