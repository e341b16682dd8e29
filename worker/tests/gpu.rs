//! The CUDA backend against the CPU reference, on a real device. Every test here is ignored by
//! default; `scripts/gpu-check.sh` builds this binary and runs it with `--ignored` on a GPU host.
//!
//! * echo and repeat must be byte-identical to the CPU;
//! * saxpy and the MLP forward pass must agree within 1e-5 relative error (plus 1e-6 absolute for
//!   values near zero);
//! * repeated calls must not grow the pools once warmed up;
//! * `timing_report` prints the numbers docs/gpu.md records (kernel times, host↔device GB/s, MLP
//!   rows/s with and without batching) as Markdown tables.

use std::sync::Arc;
use std::time::{Duration, Instant};
use worker::kernels::cpu::CpuBackend;
use worker::kernels::cuda::CudaBackend;
use worker::kernels::mlp::{SEED, SEEDED_SHAPE};
use worker::kernels::{Activation, Backend, LoadedMlp, MlpWeights};

const REL_TOL: f32 = 1e-5;
const ABS_TOL: f32 = 1e-6;

fn cuda() -> CudaBackend {
    CudaBackend::new(0, 2).expect("a CUDA backend on device 0 (driver, NVRTC and a device)")
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 56) as u8
        })
        .collect()
}

/// Deterministic floats in [-4, 4).
fn floats(n: usize, seed: u64) -> Vec<f32> {
    bytes(n * 2, seed)
        .chunks_exact(2)
        .map(|b| f32::from(u16::from_le_bytes([b[0], b[1]])) / 8192.0 - 4.0)
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = REL_TOL * w.abs() + ABS_TOL;
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: cuda {g} vs cpu {w} (diff {}, tolerance {tol})",
            (g - w).abs()
        );
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn echo_is_byte_identical() {
    let gpu = cuda();
    for n in [0, 1, 4097, 8 << 20, (13 << 20) + 7] {
        let input = bytes(n, n as u64);
        let (out, t) = gpu.echo(&input).expect("echo");
        assert!(out == input, "echo of {n} bytes differs");
        assert_eq!((t.h2d_bytes, t.d2h_bytes), (n as u64, n as u64));
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn repeat_is_byte_identical() {
    let gpu = cuda();
    for (msg, times) in [
        (&b"x"[..], 1),
        (b"hello, world ", 1000),
        (b"", 5),
        (b"ab", 0),
        (&bytes(4097, 7)[..], 513),
    ] {
        let want = CpuBackend.repeat(msg, times).expect("cpu").0;
        let got = gpu.repeat(msg, times).expect("cuda").0;
        assert!(got == want, "repeat of {} bytes × {times}", msg.len());
    }
    assert!(gpu.repeat(b"ab", usize::MAX).is_err());
}

#[test]
#[ignore = "needs a CUDA device"]
fn saxpy_matches_the_cpu() {
    let gpu = cuda();
    for n in [1, 1000, 1 << 20] {
        let (x, y) = (floats(n, 1), floats(n, 2));
        let want = CpuBackend.saxpy(1.5, &x, &y).expect("cpu").0;
        let (got, t) = gpu.saxpy(1.5, &x, &y).expect("cuda");
        assert_close(&format!("saxpy n={n}"), &got, &want);
        assert_eq!(t.h2d_bytes, 8 * n as u64);
    }
    assert!(gpu.saxpy(1.0, &[1.0], &[]).is_err());
}

fn compare_forward(what: &str, gpu: &dyn LoadedMlp, cpu: &dyn LoadedMlp, rows: usize) {
    let inputs = floats(rows * cpu.input_width(), rows as u64);
    let want = cpu.forward(&inputs, rows).expect("cpu").0;
    let got = gpu.forward(&inputs, rows).expect("cuda").0;
    assert_close(&format!("{what} rows={rows}"), &got, &want);
}

#[test]
#[ignore = "needs a CUDA device"]
fn mlp_forward_matches_the_cpu() {
    let gpu = cuda();
    let seeded = MlpWeights::seeded(SEEDED_SHAPE, SEED);
    let (g, c) = (
        gpu.load_mlp(&seeded).expect("load"),
        CpuBackend.load_mlp(&seeded).expect("load"),
    );
    for rows in [1, 8, 64] {
        compare_forward("seeded", g.as_ref(), c.as_ref(), rows);
    }
    // Odd sizes (not multiples of the 16-wide tile) and every activation.
    let mut small = MlpWeights::seeded(&[7, 33, 17, 5], 0xC0FFEE);
    small.layers[0].activation = Activation::Tanh;
    small.layers[1].activation = Activation::Sigmoid;
    let (g, c) = (
        gpu.load_mlp(&small).expect("load"),
        CpuBackend.load_mlp(&small).expect("load"),
    );
    for rows in [1, 3, 17, 100] {
        compare_forward("small", g.as_ref(), c.as_ref(), rows);
    }
    assert!(g.forward(&[1.0], 1).is_err());
}

#[test]
#[ignore = "needs a CUDA device"]
fn pools_are_reused_after_warm_up() {
    let gpu = cuda();
    let mlp = gpu
        .load_mlp(&MlpWeights::seeded(SEEDED_SHAPE, SEED))
        .expect("load");
    let body = bytes(1 << 20, 3);
    let (x, y) = (floats(4096, 4), floats(4096, 5));
    let inputs = floats(64 * 64, 6);
    let round = || {
        gpu.echo(&body).expect("echo");
        gpu.repeat(b"abc", 10_000).expect("repeat");
        gpu.saxpy(2.0, &x, &y).expect("saxpy");
        mlp.forward(&inputs, 64).expect("forward");
    };
    // Both lanes warm up (calls are sequential, but which lane serves one is not fixed).
    for _ in 0..4 {
        round();
    }
    let (device, pinned) = (gpu.memory_in_use(), gpu.pinned_bytes());
    for _ in 0..100 {
        round();
    }
    assert_eq!(
        gpu.memory_in_use(),
        device,
        "device pools grew after warm-up"
    );
    assert_eq!(
        gpu.pinned_bytes(),
        pinned,
        "pinned pools grew after warm-up"
    );
    println!("steady state: {device} device bytes, {pinned} pinned bytes");
}

#[test]
#[ignore = "needs a CUDA device"]
fn concurrent_calls_share_the_lanes() {
    let gpu = Arc::new(cuda());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let gpu = Arc::clone(&gpu);
            std::thread::spawn(move || {
                for i in 0..20 {
                    let input = bytes(1000 + t * 100 + i, (t * 1000 + i) as u64);
                    assert!(gpu.echo(&input).expect("echo").0 == input);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

// === timing report ===

/// Median of `runs` calls of `f`, which returns the device-side time of one call.
fn median(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..runs).map(|_| f()).collect();
    times.sort();
    times[runs / 2]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Rows per second of `forward` over `rows` rows: one call of `rows` rows (`batched`) or `rows`
/// calls of one row each, repeated for about 200 ms.
fn rows_per_second(mlp: &dyn LoadedMlp, rows: usize, batched: bool) -> f64 {
    let inputs = floats(rows * mlp.input_width(), 9);
    let width = mlp.input_width();
    let pass = || {
        if batched {
            mlp.forward(&inputs, rows).expect("forward");
        } else {
            for r in 0..rows {
                mlp.forward(&inputs[r * width..(r + 1) * width], 1)
                    .expect("forward");
            }
        }
    };
    pass();
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < Duration::from_millis(200) {
        pass();
        done += rows;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// One timed call, returning its device time.
type Timed<'a> = Box<dyn Fn() -> Duration + 'a>;

fn print_kernel_times(gpu: &CudaBackend) {
    let (x, y) = (floats(1 << 20, 1), floats(1 << 20, 2));
    let mlp = gpu
        .load_mlp(&MlpWeights::seeded(SEEDED_SHAPE, SEED))
        .expect("load");
    let inputs = floats(64 * 64, 3);
    println!("| kernel | size | device time (median of 50, CUDA events) |");
    println!("|---|---|---|");
    let rows: [(&str, &str, Timed<'_>); 4] = [
        (
            "repeat",
            "13 B × 10 000",
            Box::new(|| {
                gpu.repeat(b"hello, world ", 10_000)
                    .expect("repeat")
                    .1
                    .kernel
            }),
        ),
        (
            "saxpy",
            "2^20 floats",
            Box::new(|| gpu.saxpy(1.5, &x, &y).expect("saxpy").1.kernel),
        ),
        (
            "mlp forward (64-256-256-16)",
            "64 rows",
            Box::new(|| mlp.forward(&inputs, 64).expect("forward").1.kernel),
        ),
        (
            "mlp forward (64-256-256-16)",
            "1 row",
            Box::new(|| mlp.forward(&inputs[..64], 1).expect("forward").1.kernel),
        ),
    ];
    for (name, size, f) in rows {
        f();
        println!("| {name} | {size} | {} |", us(median(50, f)));
    }
}

fn print_bandwidth(gpu: &CudaBackend) {
    println!();
    println!("| plain copies, pinned ↔ device (median of 10, CUDA events) | size | time | GB/s |");
    println!("|---|---|---|---|");
    for size in [1 << 20, 64 << 20] {
        let runs: Vec<_> = (0..10)
            .map(|_| gpu.measure_transfers(size).expect("transfers"))
            .collect();
        let pick = |f: &dyn Fn(&worker::kernels::cuda::TransferTimes) -> Duration| {
            let mut v: Vec<Duration> = runs.iter().map(f).collect();
            v.sort();
            v[5]
        };
        let rows: [(&str, Duration, usize); 3] = [
            ("host → device", pick(&|t| t.to_device), size),
            ("device → host", pick(&|t| t.to_host), size),
            ("both at once", pick(&|t| t.both_ways), 2 * size),
        ];
        for (what, d, moved) in rows {
            println!(
                "| {what} | {} MiB | {} | {:.1} |",
                size >> 20,
                us(d),
                moved as f64 / d.as_secs_f64() / 1e9
            );
        }
    }

    println!();
    println!(
        "| echo (median of 10) | device span (events) | whole call | whole-call GB/s (both ways) |"
    );
    println!("|---|---|---|---|");
    for size in [16 << 10, 1 << 20, 64 << 20] {
        let body = bytes(size, 11);
        gpu.echo(&body).expect("warm-up");
        let mut wall = Vec::new();
        let mut device = Vec::new();
        for _ in 0..10 {
            let start = Instant::now();
            let (_, t) = gpu.echo(&body).expect("echo");
            wall.push(start.elapsed());
            device.push(t.kernel);
        }
        wall.sort();
        device.sort();
        let label = if size >= 1 << 20 {
            format!("{} MiB", size >> 20)
        } else {
            format!("{} KiB", size >> 10)
        };
        println!(
            "| {label} | {} | {} | {:.1} |",
            us(device[5]),
            us(wall[5]),
            (2 * size) as f64 / wall[5].as_secs_f64() / 1e9
        );
    }
}

fn print_batching(gpu: &CudaBackend) {
    let weights = MlpWeights::seeded(SEEDED_SHAPE, SEED);
    let backends: [(&str, Arc<dyn LoadedMlp>); 2] = [
        ("cuda", gpu.load_mlp(&weights).expect("load")),
        ("cpu", CpuBackend.load_mlp(&weights).expect("load")),
    ];
    println!();
    println!(
        "| backend | batch size | rows/s batched (one forward of N rows) | rows/s unbatched (N forwards of 1 row) | gain |"
    );
    println!("|---|---|---|---|---|");
    for (name, mlp) in &backends {
        for n in [1, 8, 64] {
            let batched = rows_per_second(mlp.as_ref(), n, true);
            let single = rows_per_second(mlp.as_ref(), n, false);
            println!(
                "| {name} | {n} | {batched:.0} | {single:.0} | {:.1}× |",
                batched / single
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn timing_report() {
    let gpu = cuda();
    println!("\n### {} ({} lanes)\n", gpu.device_name(), gpu.lanes());
    print_kernel_times(&gpu);
    print_bandwidth(&gpu);
    print_batching(&gpu);
    println!(
        "\ndevice memory in use after the report: {} bytes; pinned host memory: {} bytes",
        gpu.memory_in_use(),
        gpu.pinned_bytes()
    );
}
