//! Question: what does the pending-request table cost a 202'd invocation — parking it, recording
//! its in-memory result (the spill decision included), and handing that result to the status poll
//! once (also with a poller already waiting for it) — and what do a poll of a still-running
//! request and the periodic sweep cost, with 1000 other requests parked? Measured on the plain
//! table (`pending::Table`, no lock, `now` passed in) and through the shared store the gateway
//! uses (`PendingStore`: mutex, gauges, poller wake-up, reading the worker's response body, on a
//! current-thread tokio runtime). In-memory results only: the spill-to-disk path (results past
//! `pending-max-result-bytes` or the memory bound) is file I/O and is not benched here.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use dataplane::bench::{PendingStore, PendingTable, Polled};
use std::hint::black_box;
use std::time::{Duration, Instant};
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(3600);
/// The defaults' order of magnitude: 256 MiB in all, 1 MiB per result.
const MEMORY: u64 = 256 << 20;
const PER_RESULT: u64 = 1 << 20;
const PARKED: u128 = 1000;

static BODY: [u8; 1024] = [b'x'; 1024];

fn bench_table(c: &mut Criterion) {
    let now = Instant::now();
    let mut table = PendingTable::new(TTL, MEMORY, PER_RESULT);
    for i in 0..PARKED {
        table.insert(Uuid::from_u128(i), now);
    }
    let body = Bytes::from_static(&BODY);
    let mut next = PARKED;
    c.bench_function("table: park → complete 1 KiB → take", |b| {
        b.iter(|| {
            next += 1;
            let id = Uuid::from_u128(next);
            table.insert(id, now);
            let kept = table.complete_in_memory(id, body.clone(), now);
            let held = table.is_held(id);
            (kept, held, table.take(id, now))
        })
    });
    let running = Uuid::from_u128(PARKED / 2);
    c.bench_function("table: poll of a running entry (owner check + take)", |b| {
        b.iter(|| {
            let id = black_box(running);
            (table.is_held(id), table.take(id, now))
        })
    });
    assert_eq!(table.take(running, now), Polled::Running);
    c.bench_function("table: expire scan, 1000 parked, none due", |b| {
        b.iter(|| table.expire(black_box(now)))
    });
    assert_eq!(table.len(), PARKED as usize);
}

fn bench_store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let dir = std::env::temp_dir().join(format!("dataplane-bench-pending-{}", std::process::id()));
    let store = PendingStore::new(TTL, MEMORY, PER_RESULT, &dir);
    for i in 0..PARKED {
        store.insert(Uuid::from_u128(i));
    }
    let body = Bytes::from_static(&BODY);
    let mut next = PARKED;
    c.bench_function("store: park → keep 1 KiB → complete → poll", |b| {
        b.iter(|| {
            next += 1;
            let id = Uuid::from_u128(next);
            rt.block_on(async {
                store.insert(id);
                store.keep_and_complete(id, body.clone()).await;
                let held = store.is_held(id);
                (held, store.poll(id, Duration::from_secs(1)).await)
            })
        })
    });
    c.bench_function(
        "store: park → poller waiting → keep 1 KiB → complete wakes it",
        |b| {
            b.iter(|| {
                next += 1;
                let id = Uuid::from_u128(next);
                rt.block_on(async {
                    store.insert(id);
                    let poller = {
                        let store = store.clone();
                        tokio::spawn(async move { store.poll(id, Duration::from_secs(5)).await })
                    };
                    // The poller takes its turn: finds the entry running and waits.
                    tokio::task::yield_now().await;
                    store.keep_and_complete(id, body.clone()).await;
                    poller.await.ok()
                })
            })
        },
    );
    c.bench_function("store: sweep, 1000 parked, none due", |b| {
        b.iter(|| store.sweep())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench_table, bench_store);
criterion_main!(benches);
