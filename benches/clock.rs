//! Question: what does a clock reading cost on the per-call path, and what do the coarse clocks
//! and the derived wall time (`dataplane::clock`) save? A proxied call read the precise clocks
//! nine times; on this project's 2-core virtual machine a precise reading measured 31 ns (TSC
//! through the vDSO; 40–60 ns with a build running beside it), a coarse one 8 ns, and a wall time
//! derived from a monotonic reading the call already took 7 ns (no reading at all).

use criterion::{Criterion, criterion_group, criterion_main};
use dataplane::bench;
use std::hint::black_box;
use std::time::{Instant, SystemTime};

fn clocks(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock");
    g.bench_function("Instant::now (CLOCK_MONOTONIC)", |b| {
        b.iter(|| black_box(Instant::now()))
    });
    g.bench_function("SystemTime::now (CLOCK_REALTIME)", |b| {
        b.iter(|| black_box(SystemTime::now()))
    });
    g.bench_function("coarse_millis (CLOCK_MONOTONIC_COARSE)", |b| {
        b.iter(|| black_box(bench::coarse_millis()))
    });
    g.bench_function("coarse_unix_secs (CLOCK_REALTIME_COARSE)", |b| {
        b.iter(|| black_box(bench::coarse_unix_secs()))
    });
    let now = Instant::now();
    g.bench_function("wall_at (derived from a monotonic reading)", |b| {
        b.iter(|| black_box(bench::wall_at(black_box(now))))
    });
    g.finish();
}

criterion_group!(benches, clocks);
criterion_main!(benches);
