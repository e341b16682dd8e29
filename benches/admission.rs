//! Question: what does the `admit` step cost when nothing is contended — the common case: one
//! version whose workers have room, a gateway under its global cap — from `Admission::admit` to
//! the `Slot`'s drop giving both places back (a per-version gate lookup, two short mutex holds, one
//! atomic compare-and-swap each way)? And how fast is the shed when the version is full and its
//! queue takes no more (429 without waiting)? Both should be far below a proxied request's CPU.
//!
//! The uncontended path never suspends, so it is driven with `now_or_never()`: no runtime in the
//! measurement.

use criterion::{Criterion, criterion_group, criterion_main};
use dataplane::bench::Admission;
use futures_util::FutureExt;
use std::hint::black_box;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn bench(c: &mut Criterion) {
    let far = Instant::now() + Duration::from_secs(3600);

    // 50 versions known to the gateway (NVIDIA's per-account function limit), one invoked.
    let admission = Admission::new(10_000, 64, Duration::from_secs(10));
    let versions: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    for v in &versions {
        let slot = admission.admit(*v, 8, far).now_or_never();
        assert!(matches!(slot, Some(Ok(_))), "warm-up admit");
    }
    let v = versions[25];
    c.bench_function("admit + drop (uncontended, capacity 8)", |b| {
        b.iter(|| {
            let slot = admission.admit(black_box(v), 8, far).now_or_never();
            // Dropped here: both places go back.
            matches!(slot, Some(Ok(_)))
        })
    });

    // One place held, capacity 1, no queue: every further request is shed with 429.
    let full = Admission::new(10_000, 0, Duration::from_secs(10));
    let held = full.admit(v, 1, far).now_or_never();
    assert!(matches!(held, Some(Ok(_))), "the held place");
    c.bench_function("admit when full, no queue (429)", |b| {
        b.iter(|| {
            let shed = full.admit(black_box(v), 1, far).now_or_never();
            matches!(shed, Some(Err(_)))
        })
    });
    drop(held);
}

criterion_group!(benches, bench);
criterion_main!(benches);
