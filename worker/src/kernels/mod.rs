//! Compute backends for the built-in runtimes. Every kernel exists twice: on the CPU (always
//! available, the reference) and on CUDA through cudarc (when a device is present). Callers hold an
//! `Arc<dyn Backend>` and never know which one runs.
//!
//! Calls are blocking (a CUDA backend synchronises its stream before returning); the serving side
//! runs them on the blocking pool or a dedicated lane, never on an async worker thread.

pub mod cpu;
pub mod cuda;
pub mod mlp;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

pub use mlp::{Activation, DenseLayer, MlpWeights};

/// What one kernel call cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KernelTiming {
    /// Time spent in the kernel itself (CUDA events on the device; wall time on the CPU).
    pub kernel: Duration,
    /// Bytes copied host → device (0 on the CPU).
    pub h2d_bytes: u64,
    /// Bytes copied device → host (0 on the CPU).
    pub d2h_bytes: u64,
}

/// Why a kernel call failed. Input errors are the caller's fault (4xx); device errors are ours (5xx)
/// and, when `lost` is set, mean the device is gone and the worker must report itself unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("{0}")]
    Input(String),
    #[error("device error: {message}")]
    Device { message: String, lost: bool },
}

/// A compute backend.
pub trait Backend: Send + Sync + Debug {
    /// `cpu` or `cuda`.
    fn name(&self) -> &'static str;

    /// Copies `input` to the device and back, byte for byte.
    fn echo(&self, input: &[u8]) -> Result<(Vec<u8>, KernelTiming), KernelError>;

    /// `message` repeated `times` times, built by a kernel (the load-tester workload).
    fn repeat(&self, message: &[u8], times: usize) -> Result<(Vec<u8>, KernelTiming), KernelError>;

    /// `a·x + y`; `x` and `y` have the same length (checked by the caller, re-checked here).
    fn saxpy(&self, a: f32, x: &[f32], y: &[f32]) -> Result<(Vec<f32>, KernelTiming), KernelError>;

    /// Uploads a network's weights once; the result runs forward passes.
    fn load_mlp(&self, weights: &MlpWeights) -> Result<Arc<dyn LoadedMlp>, KernelError>;

    /// Device memory held by this backend (pools and weights), in bytes; 0 on the CPU.
    fn memory_in_use(&self) -> u64 {
        0
    }
}

/// A network whose weights are resident on a backend.
pub trait LoadedMlp: Send + Sync + Debug {
    fn input_width(&self) -> usize;
    fn output_width(&self) -> usize;

    /// Forward pass over `rows` input rows laid out row-major (`rows × input_width` values);
    /// returns `rows × output_width` values.
    fn forward(&self, inputs: &[f32], rows: usize)
    -> Result<(Vec<f32>, KernelTiming), KernelError>;
}

/// Largest output `repeat` may build (a guard against `repeats` × `message` exhausting memory).
pub const MAX_REPEAT_BYTES: usize = 64 << 20;

/// Checks `repeat`'s arguments; shared by every backend.
pub fn check_repeat(message: &[u8], times: usize) -> Result<usize, KernelError> {
    let total = message
        .len()
        .checked_mul(times)
        .filter(|n| *n <= MAX_REPEAT_BYTES)
        .ok_or_else(|| {
            KernelError::Input(format!(
                "message of {} bytes repeated {times} times exceeds the {MAX_REPEAT_BYTES}-byte limit",
                message.len()
            ))
        })?;
    Ok(total)
}

/// Checks `saxpy`'s arguments; shared by every backend.
pub fn check_saxpy(x: &[f32], y: &[f32]) -> Result<(), KernelError> {
    if x.len() != y.len() {
        return Err(KernelError::Input(format!(
            "x and y must have the same length (x has {}, y has {})",
            x.len(),
            y.len()
        )));
    }
    Ok(())
}

/// Checks a forward pass's input shape; shared by every backend.
pub fn check_forward(inputs: &[f32], rows: usize, width: usize) -> Result<(), KernelError> {
    if inputs.len() != rows * width {
        return Err(KernelError::Input(format!(
            "expected {rows} rows of {width} values ({} in all), got {}",
            rows * width,
            inputs.len()
        )));
    }
    Ok(())
}

/// The backend for a device mode. `lanes` is the number of execution lanes (one CUDA stream pair and
/// one set of pooled buffers each) a CUDA backend opens.
///
/// * `Cpu`: the CPU backend.
/// * `Auto`: CUDA on device 0 when a driver, NVRTC and a device are present and the backend comes
///   up; otherwise a warning and the CPU backend.
/// * `Cuda`: CUDA on device 0, or the error that prevented it.
pub fn select(
    mode: crate::config::DeviceMode,
    lanes: usize,
) -> Result<Arc<dyn Backend>, KernelError> {
    use crate::config::DeviceMode;
    match mode {
        DeviceMode::Cpu => Ok(Arc::new(cpu::CpuBackend)),
        DeviceMode::Cuda => Ok(Arc::new(cuda::CudaBackend::new(0, lanes)?)),
        DeviceMode::Auto => match cuda::CudaBackend::new(0, lanes) {
            Ok(b) => Ok(Arc::new(b)),
            Err(e) => {
                tracing::warn!(error = %e, "no usable CUDA device: built-in kernels run on the CPU");
                Ok(Arc::new(cpu::CpuBackend))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeviceMode;

    #[test]
    fn select_cpu_is_the_cpu_backend() {
        let b = select(DeviceMode::Cpu, 4).expect("cpu backend");
        assert_eq!(b.name(), "cpu");
        assert_eq!(b.memory_in_use(), 0);
    }

    #[test]
    fn select_auto_always_gives_a_backend() {
        // Without CUDA (this machine, CI) it is the CPU; on a GPU host it is CUDA.
        let b = select(DeviceMode::Auto, 2).expect("auto never fails");
        assert!(matches!(b.name(), "cpu" | "cuda"));
    }

    #[test]
    fn select_cuda_without_a_driver_is_an_error_not_a_panic() {
        // SAFETY: only probes for the library.
        #[allow(unsafe_code)]
        let driver = unsafe { cudarc::driver::sys::is_culib_present() };
        if !driver {
            assert!(matches!(
                select(DeviceMode::Cuda, 1),
                Err(KernelError::Device { lost: false, .. })
            ));
        }
    }
}
