//! The CUDA backend: the built-in kernels on an NVIDIA GPU through cudarc (driver API + NVRTC,
//! both loaded dynamically, so this compiles and links where no CUDA exists).
//!
//! * The kernels are CUDA C compiled once per process by NVRTC (`source`) and loaded into the
//!   backend's context when it is created.
//! * Work runs on execution lanes (`lane`): a stream pair plus grow-only pools of device buffers
//!   and pinned host staging buffers. A call checks out a free lane, queues copy in → kernel →
//!   copy out on it, synchronises it and hands it back; the steady state allocates nothing.
//! * Kernel time is measured with CUDA events around the launch(es).
//! * A driver error that means the device is gone marks the backend lost: every later call fails
//!   fast with `KernelError::Device { lost: true }` so the worker can report itself unhealthy.
//!
//! Construction never panics where no driver is installed: cudarc panics on first use of a missing
//! library, so both libraries are probed first.

// The crate denies unsafe code; each unsafe block below and in these modules opts out on its own,
// with a SAFETY note (cudarc's launches, uninitialised allocations and library probes).
mod error;
mod lane;
mod mlp;
mod source;

use self::error::{At, Failure, device_error, unavailable};
use self::lane::{Accounting, Lane, LanePool};
use self::source::{BLOCK, Kernels, blocks_for};
use super::{Backend, KernelError, KernelTiming, LoadedMlp, MlpWeights, check_repeat, check_saxpy};
use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use self::mlp::CudaMlp;

/// Echo bodies move in chunks of this size: chunk k's copy back overlaps chunk k+1's copy in (the
/// two directions use separate copy engines) and the CPU's staging copy of the next chunk.
const ECHO_CHUNK: usize = 4 << 20;

/// The CUDA backend for one device.
#[derive(Debug, Clone)]
pub struct CudaBackend {
    device: Arc<Device>,
}

/// Device times of plain pinned↔device copies, from [`CudaBackend::measure_transfers`].
#[derive(Debug, Clone, Copy)]
pub struct TransferTimes {
    /// Bytes moved in each direction.
    pub bytes: usize,
    pub to_device: Duration,
    pub to_host: Duration,
    /// `bytes` each way at once, one direction per copy engine.
    pub both_ways: Duration,
}

/// What a backend and the networks loaded on it share.
#[derive(Debug)]
pub(crate) struct Device {
    name: String,
    kernels: Kernels,
    lanes: LanePool,
    acct: Accounting,
    lost: AtomicBool,
    /// Held for the backend's lifetime (streams, buffers and the module hold it too).
    _ctx: Arc<CudaContext>,
}

/// Fails unless both libraries can be loaded (cudarc would panic on first use otherwise).
fn probe_libraries() -> Result<(), KernelError> {
    // SAFETY: only tries to dlopen libcuda; no driver call is made.
    #[allow(unsafe_code)]
    let driver = unsafe { cudarc::driver::sys::is_culib_present() };
    if !driver {
        return Err(unavailable("no CUDA driver (libcuda.so not found)"));
    }
    // SAFETY: only tries to dlopen libnvrtc.
    #[allow(unsafe_code)]
    let nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    if !nvrtc {
        return Err(unavailable(
            "CUDA driver found but not NVRTC (libnvrtc.so), which compiles the kernels",
        ));
    }
    Ok(())
}

/// A context on device `ordinal`, with cudarc's per-buffer event tracking turned off.
fn open_context(ordinal: usize) -> Result<Arc<CudaContext>, KernelError> {
    let count = CudaContext::device_count()
        .at("count devices")
        .map_err(device_error)?;
    if usize::try_from(count).map_or(true, |c| ordinal >= c) {
        return Err(unavailable(format!(
            "CUDA device {ordinal} not present (the driver reports {count})"
        )));
    }
    let ctx = CudaContext::new(ordinal)
        .at("create context")
        .map_err(device_error)?;
    // Tracking records two events per buffer use so cudarc can order cross-stream access; we do
    // it ourselves (a buffer belongs to one lane; weights are uploaded and synchronised before any
    // lane reads them; nothing is freed while queued work uses it), so it would be pure overhead.
    // SAFETY: called before any buffer of this context exists; the invariants above are the ones
    // `disable_event_tracking` asks the caller to uphold.
    #[allow(unsafe_code)]
    unsafe {
        ctx.disable_event_tracking();
    }
    Ok(ctx)
}

impl CudaBackend {
    /// Opens device `ordinal` with `lanes` execution lanes (at least one). Fails cleanly, never
    /// panics, when the driver, NVRTC or the device is missing.
    pub fn new(ordinal: usize, lanes: usize) -> Result<Self, KernelError> {
        probe_libraries()?;
        let ctx = open_context(ordinal)?;
        let kernels = Kernels::load(&ctx)?;
        let lanes = (0..lanes.max(1))
            .map(|_| Lane::new(&ctx))
            .collect::<Result<Vec<_>, _>>()
            .map_err(device_error)?;
        let name = ctx
            .name()
            .unwrap_or_else(|_| format!("CUDA device {ordinal}"));
        tracing::info!(device = %name, ordinal, lanes = lanes.len(), "CUDA backend ready");
        Ok(Self {
            device: Arc::new(Device {
                name,
                kernels,
                lanes: LanePool::new(lanes),
                acct: Accounting::default(),
                lost: AtomicBool::new(false),
                _ctx: ctx,
            }),
        })
    }

    /// The driver's name for the device, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn device_name(&self) -> &str {
        &self.device.name
    }

    /// Number of execution lanes.
    pub fn lanes(&self) -> usize {
        self.device.lanes.count()
    }

    /// Page-locked host memory held by the lanes' staging pools, in bytes.
    pub fn pinned_bytes(&self) -> u64 {
        self.device.acct.pinned.load(Ordering::Relaxed)
    }

    /// Device time of plain copies of `bytes` bytes between a lane's pinned staging buffer and
    /// device memory: to the device, to the host, and both directions at once (two streams, so
    /// the two copy engines overlap). A diagnostic for the GPU check; it allocates the lane's
    /// pools at that size like any request would.
    pub fn measure_transfers(&self, bytes: usize) -> Result<TransferTimes, KernelError> {
        let bytes = bytes.max(1);
        self.device.run(|lane, _, acct| {
            let exec = &lane.exec;
            let up = lane.bytes_in.ensure(&exec.stream, bytes, acct)?;
            let down = lane.bytes_out.ensure(&exec.stream, bytes, acct)?;
            let staged_in = lane.pinned_bytes_in.ensure(&lane.ctx, bytes, acct)?;
            let staged_out = lane.pinned_bytes_out.ensure(&lane.ctx, bytes, acct)?;
            let mut up = up.try_slice_mut(..bytes).ok_or_else(range_failure)?;
            let down = down.try_slice(..bytes).ok_or_else(range_failure)?;
            let mut timed = |both: bool, to_device: bool| -> Result<Duration, Failure> {
                exec.start
                    .record(&exec.stream)
                    .at("transfer: record start")?;
                if both {
                    exec.handoff.record(&exec.stream).at("transfer: record")?;
                    exec.copy_back.wait(&exec.handoff).at("transfer: order")?;
                    exec.copy_back
                        .memcpy_dtoh(&down, &mut *staged_out)
                        .at("transfer: copy to host")?;
                    exec.landed[0]
                        .record(&exec.copy_back)
                        .at("transfer: record")?;
                    exec.stream
                        .memcpy_htod(&*staged_in, &mut up)
                        .at("transfer: copy to device")?;
                    exec.stream.wait(&exec.landed[0]).at("transfer: join")?;
                } else if to_device {
                    exec.stream
                        .memcpy_htod(&*staged_in, &mut up)
                        .at("transfer: copy to device")?;
                } else {
                    exec.stream
                        .memcpy_dtoh(&down, &mut *staged_out)
                        .at("transfer: copy to host")?;
                }
                exec.end.record(&exec.stream).at("transfer: record end")?;
                exec.synchronize()?;
                exec.elapsed()
            };
            // One untimed round first: the first copy of a buffer maps it.
            timed(true, true)?;
            Ok(TransferTimes {
                bytes,
                to_device: timed(false, true)?,
                to_host: timed(false, false)?,
                both_ways: timed(true, true)?,
            })
        })
    }

    /// True once a driver error has shown the device to be gone; every call then fails.
    pub fn is_lost(&self) -> bool {
        self.device.lost.load(Ordering::Acquire)
    }
}

impl Device {
    /// Runs `op` on a free lane. On failure the lane is drained before it goes back (so no copy
    /// still reads its staging buffers) and a device-lost error marks the backend lost.
    pub(crate) fn run<T>(
        &self,
        op: impl FnOnce(&mut Lane, &Kernels, &Accounting) -> Result<T, Failure>,
    ) -> Result<T, KernelError> {
        if self.lost.load(Ordering::Acquire) {
            return Err(KernelError::Device {
                message: format!("{} was lost earlier; the worker needs a restart", self.name),
                lost: true,
            });
        }
        let mut guard = self.lanes.take();
        let lane: &mut Lane = &mut guard;
        op(lane, &self.kernels, &self.acct).map_err(|failure| {
            // Best effort: after a sticky fault this fails too, and the lane is dead anyway.
            let _ = lane.exec.synchronize();
            let err = device_error(failure);
            if matches!(err, KernelError::Device { lost: true, .. }) {
                self.lost.store(true, Ordering::Release);
                tracing::error!(device = %self.name, error = %err, "CUDA device lost");
            }
            err
        })
    }

    pub(crate) fn acct(&self) -> &Accounting {
        &self.acct
    }
}

/// The chunk ranges `[start, end)` of an `n`-byte echo.
fn chunks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n)
        .step_by(ECHO_CHUNK)
        .map(move |start| (start, (start + ECHO_CHUNK).min(n)))
}

/// A range of a device buffer that the pool guarantees exists; `None` would be a pool bug.
fn range_failure() -> Failure {
    Failure {
        step: "device buffer smaller than its request",
        error: cudarc::driver::DriverError(cudarc::driver::sys::CUresult::CUDA_ERROR_INVALID_VALUE),
    }
}

/// Echo on a lane: pinned staging, then per chunk copy in on `stream` and copy back on
/// `copy_back` once the chunk has landed. The timing covers the copies (there is no kernel).
fn echo_on(lane: &mut Lane, acct: &Accounting, input: &[u8]) -> Result<Vec<u8>, Failure> {
    let exec = &lane.exec;
    let n = input.len();
    let dev = lane.bytes_in.ensure(&exec.stream, n, acct)?;
    let staged_in = lane.pinned_bytes_in.ensure(&lane.ctx, n, acct)?;
    let staged_out = lane.pinned_bytes_out.ensure(&lane.ctx, n, acct)?;
    let mut out = Vec::with_capacity(n);
    // The chunk whose copy back is queued but not yet moved into `out`.
    let mut pending: Option<(usize, usize, usize)> = None;
    for (k, (start, end)) in chunks(n).enumerate() {
        staged_in[start..end].copy_from_slice(&input[start..end]);
        if k == 0 {
            // After the first staging copy, so the span is the device's, not the CPU's.
            exec.start.record(&exec.stream).at("echo: record start")?;
        }
        let mut dst = dev.try_slice_mut(start..end).ok_or_else(range_failure)?;
        exec.stream
            .memcpy_htod(&staged_in[start..end], &mut dst)
            .at("echo: copy to device")?;
        exec.handoff.record(&exec.stream).at("echo: record chunk")?;
        exec.copy_back
            .wait(&exec.handoff)
            .at("echo: order copy back")?;
        let src = dev.try_slice(start..end).ok_or_else(range_failure)?;
        exec.copy_back
            .memcpy_dtoh(&src, &mut staged_out[start..end])
            .at("echo: copy to host")?;
        // `landed[k % 2]` was last recorded for chunk k-2, which was waited for below in the
        // previous iteration, so re-recording it here is safe.
        exec.landed[k % 2]
            .record(&exec.copy_back)
            .at("echo: record landed")?;
        // While chunk k is in flight, move chunk k-1 out of the staging buffer.
        if let Some((j, s, e)) = pending.replace((k, start, end)) {
            exec.landed[j % 2]
                .synchronize()
                .at("echo: wait for chunk")?;
            out.extend_from_slice(&staged_out[s..e]);
        }
    }
    exec.end.record(&exec.copy_back).at("echo: record end")?;
    exec.synchronize()?;
    if let Some((_, s, e)) = pending {
        out.extend_from_slice(&staged_out[s..e]);
    }
    Ok(out)
}

/// `repeat` on a lane: the message goes up, one kernel fills the output, the output comes down.
#[allow(unsafe_code)] // the launch (SAFETY note inline)
fn repeat_on(
    lane: &mut Lane,
    kernels: &Kernels,
    acct: &Accounting,
    message: &[u8],
    total: usize,
) -> Result<Vec<u8>, Failure> {
    let exec = &lane.exec;
    let staged_msg = lane
        .pinned_bytes_in
        .ensure(&lane.ctx, message.len(), acct)?;
    staged_msg.copy_from_slice(message);
    let msg = lane.bytes_in.ensure(&exec.stream, message.len(), acct)?;
    exec.stream
        .memcpy_htod(&*staged_msg, msg)
        .at("repeat: copy to device")?;
    let out = lane.bytes_out.ensure(&exec.stream, total, acct)?;
    let (len, total_u64) = (message.len() as u64, total as u64);
    exec.start.record(&exec.stream).at("repeat: record start")?;
    {
        let mut launch = exec.stream.launch_builder(&kernels.repeat);
        launch.arg(&*out).arg(&*msg).arg(&len).arg(&total_u64);
        // SAFETY: arguments match `repeat_bytes(uchar*, const uchar*, u64, u64)`; `out` holds
        // at least `total` bytes and `msg` at least `len` (> 0) bytes.
        unsafe { launch.launch(element_wise(total)) }.at("repeat: launch")?;
    }
    exec.end.record(&exec.stream).at("repeat: record end")?;
    let staged_out = lane.pinned_bytes_out.ensure(&lane.ctx, total, acct)?;
    let src = out.try_slice(..total).ok_or_else(range_failure)?;
    exec.stream
        .memcpy_dtoh(&src, staged_out)
        .at("repeat: copy to host")?;
    exec.synchronize()?;
    Ok(staged_out.to_vec())
}

/// `saxpy` on a lane: x and y go up through one pinned buffer, y comes back.
#[allow(unsafe_code)] // the launch (SAFETY note inline)
fn saxpy_on(
    lane: &mut Lane,
    kernels: &Kernels,
    acct: &Accounting,
    a: f32,
    x: &[f32],
    y: &[f32],
) -> Result<Vec<f32>, Failure> {
    let exec = &lane.exec;
    let n = x.len();
    let staged = lane.pinned_floats_in.ensure(&lane.ctx, 2 * n, acct)?;
    staged[..n].copy_from_slice(x);
    staged[n..].copy_from_slice(y);
    let [xs, ys, _] = &mut lane.floats;
    let dx = xs.ensure(&exec.stream, n, acct)?;
    let dy = ys.ensure(&exec.stream, n, acct)?;
    exec.stream
        .memcpy_htod(&staged[..n], dx)
        .at("saxpy: copy x to device")?;
    exec.stream
        .memcpy_htod(&staged[n..], dy)
        .at("saxpy: copy y to device")?;
    let n_u64 = n as u64;
    exec.start.record(&exec.stream).at("saxpy: record start")?;
    {
        let mut launch = exec.stream.launch_builder(&kernels.saxpy);
        launch.arg(&a).arg(&*dx).arg(&*dy).arg(&n_u64);
        // SAFETY: arguments match `saxpy(float, const float*, float*, u64)`; both buffers hold at
        // least `n` floats.
        unsafe { launch.launch(element_wise(n)) }.at("saxpy: launch")?;
    }
    exec.end.record(&exec.stream).at("saxpy: record end")?;
    let staged_out = lane.pinned_floats_out.ensure(&lane.ctx, n, acct)?;
    let src = dy.try_slice(..n).ok_or_else(range_failure)?;
    exec.stream
        .memcpy_dtoh(&src, staged_out)
        .at("saxpy: copy to host")?;
    exec.synchronize()?;
    Ok(staged_out.to_vec())
}

/// Launch shape of the element-wise kernels (grid-stride loops cover what the cap leaves).
fn element_wise(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks_for(n), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Timing of a call that moved `h2d` and `d2h` bytes, with the device time read from the lane's
/// events (the lane has been synchronised, so this does not wait).
fn timing(lane: &Lane, h2d: usize, d2h: usize) -> Result<KernelTiming, Failure> {
    let exec = &lane.exec;
    Ok(KernelTiming {
        kernel: exec.elapsed()?,
        h2d_bytes: h2d as u64,
        d2h_bytes: d2h as u64,
    })
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn echo(&self, input: &[u8]) -> Result<(Vec<u8>, KernelTiming), KernelError> {
        if input.is_empty() {
            return Ok((Vec::new(), KernelTiming::default()));
        }
        self.device.run(|lane, _, acct| {
            let out = echo_on(lane, acct, input)?;
            Ok((out, timing(lane, input.len(), input.len())?))
        })
    }

    fn repeat(&self, message: &[u8], times: usize) -> Result<(Vec<u8>, KernelTiming), KernelError> {
        let total = check_repeat(message, times)?;
        if total == 0 {
            return Ok((Vec::new(), KernelTiming::default()));
        }
        self.device.run(|lane, kernels, acct| {
            let out = repeat_on(lane, kernels, acct, message, total)?;
            Ok((out, timing(lane, message.len(), total)?))
        })
    }

    fn saxpy(&self, a: f32, x: &[f32], y: &[f32]) -> Result<(Vec<f32>, KernelTiming), KernelError> {
        check_saxpy(x, y)?;
        if x.is_empty() {
            return Ok((Vec::new(), KernelTiming::default()));
        }
        self.device.run(|lane, kernels, acct| {
            let out = saxpy_on(lane, kernels, acct, a, x, y)?;
            let bytes = size_of_val(x);
            Ok((out, timing(lane, 2 * bytes, bytes)?))
        })
    }

    fn load_mlp(&self, weights: &MlpWeights) -> Result<Arc<dyn LoadedMlp>, KernelError> {
        Ok(Arc::new(CudaMlp::load(Arc::clone(&self.device), weights)?))
    }

    fn memory_in_use(&self) -> u64 {
        let acct = &self.device.acct;
        acct.device_pool.load(Ordering::Relaxed) + acct.weights.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_chunks_cover_the_body_exactly() {
        assert_eq!(chunks(0).count(), 0);
        assert_eq!(chunks(1).collect::<Vec<_>>(), [(0, 1)]);
        let n = 2 * ECHO_CHUNK + 5;
        let c: Vec<_> = chunks(n).collect();
        assert_eq!(
            c,
            [
                (0, ECHO_CHUNK),
                (ECHO_CHUNK, 2 * ECHO_CHUNK),
                (2 * ECHO_CHUNK, n)
            ]
        );
    }

    #[test]
    fn construction_without_a_driver_fails_cleanly() {
        // SAFETY: only probes for the library.
        #[allow(unsafe_code)]
        let driver = unsafe { cudarc::driver::sys::is_culib_present() };
        match CudaBackend::new(0, 2) {
            Ok(b) => assert!(driver, "a backend without a driver: {b:?}"),
            Err(KernelError::Device { lost, message }) => {
                assert!(!lost, "{message}");
                if !driver {
                    assert!(message.contains("libcuda"), "{message}");
                }
            }
            Err(e) => panic!("unexpected error kind: {e:?}"),
        }
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn construction_on_a_device_succeeds() {
        let b = CudaBackend::new(0, 2).expect("CUDA backend on device 0");
        assert_eq!(b.lanes(), 2);
        assert_eq!(b.name(), "cuda");
        assert!(!b.device_name().is_empty());
        assert!(!b.is_lost());
        assert!(matches!(
            CudaBackend::new(1 << 20, 1),
            Err(KernelError::Device { lost: false, .. })
        ));
    }
}
