//! Execution lanes: each lane is a CUDA stream (copies in and kernels), a second stream (copies
//! back, so a chunked echo overlaps both directions), timing events, and grow-only pools of device
//! buffers and pinned host staging buffers. A call checks a lane out, runs on it, synchronises it
//! and checks it back in, so once the pools have grown to the working sizes a request allocates
//! nothing on the device or in pinned memory.

use super::error::{At, Failure};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, DeviceRepr, PinnedHostSlice, ValidAsZeroBits,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Smallest buffer a pool allocates, in elements: small requests share one size class.
const MIN_ELEMS: usize = 16 << 10;

/// The size class for `n` elements: the next power of two (at least [`MIN_ELEMS`]), so a pool
/// that sees slowly growing requests reallocates a logarithmic number of times.
pub(crate) fn size_class(n: usize) -> usize {
    n.max(MIN_ELEMS).checked_next_power_of_two().unwrap_or(n)
}

/// Bytes held by the pools and weights of one backend (read by `memory_in_use` and metrics).
#[derive(Debug, Default)]
pub(crate) struct Accounting {
    pub(crate) device_pool: AtomicU64,
    pub(crate) weights: AtomicU64,
    pub(crate) pinned: AtomicU64,
}

fn swap_bytes(counter: &AtomicU64, old: usize, new: usize) {
    counter.fetch_add(new as u64, Ordering::Relaxed);
    counter.fetch_sub(old as u64, Ordering::Relaxed);
}

/// A grow-only device buffer.
#[derive(Debug)]
pub(crate) struct DeviceBuf<T> {
    slice: Option<CudaSlice<T>>,
}

impl<T: DeviceRepr> DeviceBuf<T> {
    fn new() -> Self {
        Self { slice: None }
    }

    /// A buffer of at least `n` elements, reallocated (on `stream`, which owns it) only when the
    /// current one is smaller. The contents are unspecified: callers write before they read.
    pub(crate) fn ensure(
        &mut self,
        stream: &Arc<CudaStream>,
        n: usize,
        acct: &Accounting,
    ) -> Result<&mut CudaSlice<T>, Failure> {
        let old = self.slice.as_ref().map_or(0, CudaSlice::len);
        if old < n || self.slice.is_none() {
            let len = size_class(n);
            // Free first: the old buffer's contents are not needed and the memory may be.
            self.slice = None;
            swap_bytes(&acct.device_pool, old * size_of::<T>(), 0);
            // SAFETY: the memory is uninitialised; every user copies or computes into the first
            // `n` elements before reading them and never reads beyond.
            #[allow(unsafe_code)]
            let slice = unsafe { stream.alloc::<T>(len) }.at("allocate device buffer")?;
            swap_bytes(&acct.device_pool, 0, len * size_of::<T>());
            self.slice = Some(slice);
        }
        self.slice
            .as_mut()
            .ok_or_else(|| unreachable_failure("device buffer"))
    }
}

/// A grow-only page-locked host buffer: the staging area async copies need to run at full speed
/// and without the driver's own bounce buffers.
#[derive(Debug)]
pub(crate) struct PinnedBuf<T> {
    buf: Option<PinnedHostSlice<T>>,
}

impl<T: DeviceRepr + ValidAsZeroBits> PinnedBuf<T> {
    fn new() -> Self {
        Self { buf: None }
    }

    /// The first `n` elements of a pinned buffer of at least `n` elements.
    pub(crate) fn ensure(
        &mut self,
        ctx: &Arc<CudaContext>,
        n: usize,
        acct: &Accounting,
    ) -> Result<&mut [T], Failure> {
        let old = self.buf.as_ref().map_or(0, PinnedHostSlice::len);
        if old < n || self.buf.is_none() {
            let len = size_class(n);
            self.buf = None;
            swap_bytes(&acct.pinned, old * size_of::<T>(), 0);
            self.buf = Some(alloc_zeroed_pinned(ctx, len)?);
            swap_bytes(&acct.pinned, 0, len * size_of::<T>());
        }
        let buf = self
            .buf
            .as_mut()
            .ok_or_else(|| unreachable_failure("pinned buffer"))?;
        let slice = buf.as_mut_slice().at("map pinned buffer")?;
        Ok(&mut slice[..n])
    }
}

/// Page-locked memory (plain, not write-combined: the output staging is read by the CPU), zeroed
/// once so that it is never read uninitialised.
fn alloc_zeroed_pinned<T: DeviceRepr + ValidAsZeroBits>(
    ctx: &Arc<CudaContext>,
    len: usize,
) -> Result<PinnedHostSlice<T>, Failure> {
    // SAFETY: the allocation is uninitialised; it is zeroed below before any slice of it exists.
    #[allow(unsafe_code)]
    let mut buf =
        unsafe { ctx.alloc_pinned_with_flags::<T>(len, 0) }.at("allocate pinned buffer")?;
    let ptr = buf.as_mut_ptr().at("map pinned buffer")?;
    // SAFETY: `ptr` points to `len` elements owned by `buf`; all-zero bits are a valid `T`
    // (`ValidAsZeroBits`).
    #[allow(unsafe_code)]
    unsafe {
        std::ptr::write_bytes(ptr, 0, len);
    }
    Ok(buf)
}

/// A `Failure` for a state the code above rules out (a buffer just stored is missing); kept as an
/// error rather than a panic because it sits on the request path.
fn unreachable_failure(what: &'static str) -> Failure {
    Failure {
        step: what,
        error: cudarc::driver::DriverError(cudarc::driver::sys::CUresult::CUDA_ERROR_UNKNOWN),
    }
}

/// The ordered side of a lane: its streams and events.
#[derive(Debug)]
pub(crate) struct Exec {
    /// Copies to the device and kernel launches.
    pub(crate) stream: Arc<CudaStream>,
    /// Copies back to the host of a chunked echo, overlapping the next chunk's copy in.
    pub(crate) copy_back: Arc<CudaStream>,
    /// Timing events around the kernel (or the copies of an echo).
    pub(crate) start: CudaEvent,
    pub(crate) end: CudaEvent,
    /// "Chunk is on the device": recorded on `stream`, waited on by `copy_back`.
    pub(crate) handoff: CudaEvent,
    /// "Chunk is back on the host": recorded on `copy_back` after chunk k's copy (k mod 2), so the
    /// CPU moves chunk k out of the staging buffer while chunk k+1 is still in flight.
    pub(crate) landed: [CudaEvent; 2],
}

impl Exec {
    fn new(ctx: &Arc<CudaContext>) -> Result<Self, Failure> {
        let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
        Ok(Self {
            stream: ctx.new_stream().at("create stream")?,
            copy_back: ctx.new_stream().at("create stream")?,
            start: ctx.new_event(timing).at("create event")?,
            end: ctx.new_event(timing).at("create event")?,
            // `None` = CU_EVENT_DISABLE_TIMING, the cheapest event for pure ordering.
            handoff: ctx.new_event(None).at("create event")?,
            landed: [
                ctx.new_event(None).at("create event")?,
                ctx.new_event(None).at("create event")?,
            ],
        })
    }

    /// Waits for everything queued on the lane. Called before results are read and before the
    /// lane is handed back (on error paths too), so the next user never races a copy still
    /// reading its staging buffers.
    pub(crate) fn synchronize(&self) -> Result<(), Failure> {
        self.copy_back.synchronize().at("synchronize")?;
        self.stream.synchronize().at("synchronize")
    }

    /// Device time between the `start` and `end` events (both recorded and complete).
    pub(crate) fn elapsed(&self) -> Result<std::time::Duration, Failure> {
        let ms = self.start.elapsed_ms(&self.end).at("read timing events")?;
        Ok(std::time::Duration::try_from_secs_f64(f64::from(ms) / 1e3).unwrap_or_default())
    }
}

/// One execution lane: streams and events, and the pools that only this lane uses (the buffers'
/// owning stream is `exec.stream`, so their stream-ordered frees stay on the lane).
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) exec: Exec,
    pub(crate) bytes_in: DeviceBuf<u8>,
    pub(crate) bytes_out: DeviceBuf<u8>,
    /// Float buffers: saxpy's x and y; a forward pass's input and its two ping-pong activations.
    pub(crate) floats: [DeviceBuf<f32>; 3],
    pub(crate) pinned_bytes_in: PinnedBuf<u8>,
    pub(crate) pinned_bytes_out: PinnedBuf<u8>,
    pub(crate) pinned_floats_in: PinnedBuf<f32>,
    pub(crate) pinned_floats_out: PinnedBuf<f32>,
}

impl Lane {
    pub(crate) fn new(ctx: &Arc<CudaContext>) -> Result<Self, Failure> {
        Ok(Self {
            ctx: Arc::clone(ctx),
            exec: Exec::new(ctx)?,
            bytes_in: DeviceBuf::new(),
            bytes_out: DeviceBuf::new(),
            floats: [DeviceBuf::new(), DeviceBuf::new(), DeviceBuf::new()],
            pinned_bytes_in: PinnedBuf::new(),
            pinned_bytes_out: PinnedBuf::new(),
            pinned_floats_in: PinnedBuf::new(),
            pinned_floats_out: PinnedBuf::new(),
        })
    }
}

/// The free lanes. `take` blocks while all are busy: callers run on blocking threads, and the
/// number of lanes bounds the device work in flight.
#[derive(Debug)]
pub(crate) struct LanePool {
    free: Mutex<Vec<Lane>>,
    returned: Condvar,
    count: usize,
}

impl LanePool {
    pub(crate) fn new(lanes: Vec<Lane>) -> Self {
        Self {
            count: lanes.len(),
            free: Mutex::new(lanes),
            returned: Condvar::new(),
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Checks a lane out; it goes back when the guard drops (also on panic).
    pub(crate) fn take(&self) -> LaneGuard<'_> {
        // A panic while the lock was held cannot leave the Vec inconsistent (push/pop only).
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(lane) = free.pop() {
                return LaneGuard {
                    pool: self,
                    lane: Some(lane),
                };
            }
            free = self
                .returned
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A checked-out lane.
#[derive(Debug)]
pub(crate) struct LaneGuard<'a> {
    pool: &'a LanePool,
    lane: Option<Lane>,
}

impl std::ops::Deref for LaneGuard<'_> {
    type Target = Lane;
    fn deref(&self) -> &Lane {
        // Only `Drop` empties the option.
        self.lane
            .as_ref()
            .unwrap_or_else(|| unreachable!("lane used after return"))
    }
}

impl std::ops::DerefMut for LaneGuard<'_> {
    fn deref_mut(&mut self) -> &mut Lane {
        self.lane
            .as_mut()
            .unwrap_or_else(|| unreachable!("lane used after return"))
    }
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        if let Some(lane) = self.lane.take() {
            let mut free = self
                .pool
                .free
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            free.push(lane);
            drop(free);
            self.pool.returned.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_are_powers_of_two_with_a_floor() {
        assert_eq!(size_class(0), MIN_ELEMS);
        assert_eq!(size_class(1), MIN_ELEMS);
        assert_eq!(size_class(MIN_ELEMS + 1), MIN_ELEMS * 2);
        assert_eq!(size_class(64 << 20), 64 << 20);
        assert_eq!(size_class(usize::MAX), usize::MAX);
    }
}
