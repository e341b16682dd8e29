//! Turning cudarc's errors into [`KernelError`]s: which driver results mean the device is gone
//! (the worker must report itself unhealthy) and which are ordinary failures.
//!
//! Messages are built from the `CUresult` variant name only. Formatting a `DriverError` itself
//! calls `cuGetErrorString` through the dynamically loaded driver, which panics where no driver
//! exists, so this module never does it.

use crate::kernels::KernelError;
use cudarc::driver::DriverError;
use cudarc::driver::sys::CUresult;

/// A failed driver call and the step that made it, e.g. `"echo: copy to device"`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failure {
    pub(crate) step: &'static str,
    pub(crate) error: DriverError,
}

/// Attaches the step name to a cudarc result, so `?` can carry it out of a lane closure.
pub(crate) trait At<T> {
    fn at(self, step: &'static str) -> Result<T, Failure>;
}

impl<T> At<T> for Result<T, DriverError> {
    fn at(self, step: &'static str) -> Result<T, Failure> {
        self.map_err(|error| Failure { step, error })
    }
}

/// True for results after which the device (or its context) cannot be used again: the worker
/// must stop offering it. Sticky kernel faults (illegal address, launch failure, …) corrupt the
/// context, so every later call on it fails too.
pub(crate) fn is_device_lost(code: CUresult) -> bool {
    matches!(
        code,
        CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE
            | CUresult::CUDA_ERROR_NO_DEVICE
            | CUresult::CUDA_ERROR_DEINITIALIZED
            | CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED
            | CUresult::CUDA_ERROR_ECC_UNCORRECTABLE
            | CUresult::CUDA_ERROR_NVLINK_UNCORRECTABLE
            | CUresult::CUDA_ERROR_ILLEGAL_ADDRESS
            | CUresult::CUDA_ERROR_HARDWARE_STACK_ERROR
            | CUresult::CUDA_ERROR_ILLEGAL_INSTRUCTION
            | CUresult::CUDA_ERROR_MISALIGNED_ADDRESS
            | CUresult::CUDA_ERROR_INVALID_ADDRESS_SPACE
            | CUresult::CUDA_ERROR_INVALID_PC
            | CUresult::CUDA_ERROR_LAUNCH_FAILED
            | CUresult::CUDA_ERROR_LAUNCH_TIMEOUT
            | CUresult::CUDA_ERROR_EXTERNAL_DEVICE
    )
}

/// The [`KernelError`] for a failed driver call.
pub(crate) fn device_error(failure: Failure) -> KernelError {
    let code = failure.error.0;
    KernelError::Device {
        message: format!("{}: {code:?}", failure.step),
        lost: is_device_lost(code),
    }
}

/// A device error that is not a driver result (missing library, no device, compile failure).
pub(crate) fn unavailable(message: impl Into<String>) -> KernelError {
    KernelError::Device {
        message: message.into(),
        lost: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(code: CUresult) -> KernelError {
        Err::<(), _>(DriverError(code))
            .at("step")
            .map_err(device_error)
            .expect_err("an error")
    }

    #[test]
    fn device_gone_results_are_lost() {
        for code in [
            CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE,
            CUresult::CUDA_ERROR_ILLEGAL_ADDRESS,
            CUresult::CUDA_ERROR_LAUNCH_FAILED,
            CUresult::CUDA_ERROR_ECC_UNCORRECTABLE,
            CUresult::CUDA_ERROR_NO_DEVICE,
        ] {
            assert!(
                matches!(fail(code), KernelError::Device { lost: true, .. }),
                "{code:?}"
            );
        }
    }

    #[test]
    fn ordinary_failures_are_not_lost_and_name_the_step() {
        let e = fail(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
        assert_eq!(
            e,
            KernelError::Device {
                message: "step: CUDA_ERROR_OUT_OF_MEMORY".into(),
                lost: false
            }
        );
        assert!(!is_device_lost(CUresult::CUDA_ERROR_INVALID_VALUE));
        assert!(!is_device_lost(
            CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION
        ));
    }
}
