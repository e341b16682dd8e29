//! What do the CPU reference kernels cost per call and per byte? These are the numbers the CUDA
//! backend's speed-up (docs/gpu.md) and the MLP batching gain are judged against: the serving
//! side falls back to exactly these functions when no device is present, and batching N rows into
//! one forward pass only pays if a pass has a fixed cost worth sharing.
//!
//! Run with `cargo bench --bench kernels` from the repository root (`-- --quick` for a smoke
//! run).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use worker::kernels::cpu::CpuBackend;
use worker::kernels::mlp::{SEED, SEEDED_SHAPE};
use worker::kernels::{Backend, MlpWeights};

fn echo(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/echo");
    for size in [4 << 10, 1 << 20] {
        let body = vec![0xA5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| CpuBackend.echo(black_box(body)))
        });
    }
    g.finish();
}

fn repeat(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/repeat");
    // The load-tester's typical request (a short message, many repeats) and one large output.
    for (msg, times) in [
        (&b"hello, world "[..], 100usize),
        (b"hello, world ", 100_000),
    ] {
        g.throughput(Throughput::Bytes((msg.len() * times) as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{}x{times}", msg.len())),
            &times,
            |b, &times| b.iter(|| CpuBackend.repeat(black_box(msg), times)),
        );
    }
    g.finish();
}

fn saxpy(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/saxpy");
    for n in [1_000usize, 1 << 20] {
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let y: Vec<f32> = (0..n).map(|i| 1.0 - i as f32).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| CpuBackend.saxpy(black_box(1.5), black_box(&x), black_box(&y)))
        });
    }
    g.finish();
}

fn mlp_forward(c: &mut Criterion) {
    let mlp = CpuBackend
        .load_mlp(&MlpWeights::seeded(SEEDED_SHAPE, SEED))
        .expect("the seeded network is valid");
    let mut g = c.benchmark_group("cpu/mlp_forward_seeded");
    for rows in [1usize, 8, 64] {
        let inputs: Vec<f32> = (0..rows * mlp.input_width())
            .map(|i| (i % 17) as f32 / 17.0)
            .collect();
        g.throughput(Throughput::Elements(rows as u64));
        g.bench_with_input(BenchmarkId::from_parameter(rows), &rows, |b, &rows| {
            b.iter(|| mlp.forward(black_box(&inputs), rows))
        });
    }
    g.finish();
}

criterion_group!(benches, echo, repeat, saxpy, mlp_forward);
criterion_main!(benches);
