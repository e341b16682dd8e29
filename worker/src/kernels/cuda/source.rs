//! The CUDA C source of the built-in kernels, compiled to PTX with NVRTC once per process and
//! loaded into each backend's context.
//!
//! The float kernels are written to give the CPU reference's results:
//! * `saxpy` uses `fmaf`, the same single rounding as Rust's `f32::mul_add`;
//! * `dense_forward` accumulates each output's dot product in f32, in input order, with explicit
//!   round-to-nearest multiply and add (`__fmul_rn`/`__fadd_rn`, never contracted into an FMA),
//!   exactly as the CPU's `map(|(w, x)| w * x).sum()` does, then adds the bias and applies the
//!   activation. Only `tanhf`/`expf` may differ from Rust's by an ulp or two.

use super::error::unavailable;
use crate::kernels::KernelError;
use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{CompileOptions, Ptx};
use std::sync::{Arc, OnceLock};

/// Side of the square tiles `dense_forward` stages in shared memory; its blocks are
/// `TILE × TILE` threads (must match `DENSE_TILE` in [`SOURCE`]).
pub(crate) const DENSE_TILE: u32 = 16;

/// Threads per block of the element-wise kernels.
pub(crate) const BLOCK: u32 = 256;

/// Cap on the blocks of an element-wise launch; larger inputs are covered by grid-stride loops.
pub(crate) const MAX_BLOCKS: u32 = 1 << 16;

/// The kernels, in CUDA C. Sizes are `unsigned long long` so bodies past 4 GiB index correctly;
/// the dense layer's dimensions are `int` (checked on the host).
pub(crate) const SOURCE: &str = r#"
#define DENSE_TILE 16

extern "C" __global__ void repeat_bytes(
    unsigned char* __restrict__ out, const unsigned char* __restrict__ msg,
    unsigned long long len, unsigned long long total)
{
    unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += stride) {
        out[i] = msg[i % len];
    }
}

extern "C" __global__ void saxpy(
    float a, const float* __restrict__ x, float* __restrict__ y, unsigned long long n)
{
    unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < n; i += stride) {
        y[i] = fmaf(a, x[i], y[i]);
    }
}

__device__ __forceinline__ float activate(float v, int act)
{
    switch (act) {
    case 1: return fmaxf(v, 0.0f);
    case 2: return tanhf(v);
    case 3: return 1.0f / (1.0f + expf(-v));
    default: return v;
    }
}

// y[r][o] = act(sum_k x[r][k] * w[o][k] + b[o]) for `rows` rows. Block (tx, ty) computes the
// DENSE_TILE x DENSE_TILE outputs of rows blockIdx.y*T.. and outputs blockIdx.x*T..; each k-tile
// of x and w is staged in shared memory (padded by one column against bank conflicts) and each
// thread walks k in order, so the sum is the same as the CPU's sequential one.
extern "C" __global__ void dense_forward(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
    float* __restrict__ y, int rows, int in_dim, int out_dim, int act)
{
    __shared__ float xs[DENSE_TILE][DENSE_TILE + 1];
    __shared__ float ws[DENSE_TILE][DENSE_TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int o = blockIdx.x * DENSE_TILE + tx;
    const int r = blockIdx.y * DENSE_TILE + ty;
    const int w_row = blockIdx.x * DENSE_TILE + ty;
    float acc = 0.0f;
    for (int k0 = 0; k0 < in_dim; k0 += DENSE_TILE) {
        const int k = k0 + tx;
        xs[ty][tx] = (r < rows && k < in_dim) ? x[(size_t)r * in_dim + k] : 0.0f;
        ws[ty][tx] = (w_row < out_dim && k < in_dim) ? w[(size_t)w_row * in_dim + k] : 0.0f;
        __syncthreads();
        const int kmax = min(DENSE_TILE, in_dim - k0);
        for (int kk = 0; kk < kmax; ++kk) {
            acc = __fadd_rn(acc, __fmul_rn(ws[tx][kk], xs[ty][kk]));
        }
        __syncthreads();
    }
    if (r < rows && o < out_dim) {
        y[(size_t)r * out_dim + o] = activate(__fadd_rn(acc, b[o]), act);
    }
}
"#;

/// The PTX of [`SOURCE`], compiled on first use and shared by every backend of the process.
/// A compile failure is remembered too: retrying would fail the same way.
fn ptx() -> Result<Ptx, KernelError> {
    static PTX: OnceLock<Result<Ptx, String>> = OnceLock::new();
    PTX.get_or_init(compile)
        .clone()
        .map_err(|e| unavailable(format!("NVRTC could not compile the kernels: {e}")))
}

fn compile() -> Result<Ptx, String> {
    // SAFETY: only probes whether libnvrtc can be loaded; cudarc panics on first use otherwise.
    #[allow(unsafe_code)]
    let present = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    if !present {
        return Err(
            "libnvrtc.so not found (install the CUDA NVRTC runtime or set \
                    LD_LIBRARY_PATH)"
                .into(),
        );
    }
    let opts = CompileOptions {
        // No contraction of a*b+c into an FMA anywhere: results must match the CPU's.
        fmad: Some(false),
        use_fast_math: Some(false),
        name: Some("worker_kernels.cu".into()),
        ..CompileOptions::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts).map_err(|e| e.to_string())
}

/// The kernels loaded into one context.
#[derive(Debug)]
pub(crate) struct Kernels {
    pub(crate) repeat: CudaFunction,
    pub(crate) saxpy: CudaFunction,
    pub(crate) dense: CudaFunction,
}

impl Kernels {
    /// Loads the (once-compiled) module into `ctx`; the driver JIT-compiles the PTX for the
    /// device here, once per backend.
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self, KernelError> {
        use super::error::{At, device_error};
        let module = ctx
            .load_module(ptx()?)
            .at("load kernel module (PTX newer than the driver?)")
            .map_err(device_error)?;
        let get = |name: &'static str| module.load_function(name).at(name).map_err(device_error);
        Ok(Self {
            repeat: get("repeat_bytes")?,
            saxpy: get("saxpy")?,
            dense: get("dense_forward")?,
        })
    }
}

/// Blocks for an element-wise launch over `n` items (at least one; grid-stride beyond the cap).
pub(crate) fn blocks_for(n: usize) -> u32 {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS as usize);
    u32::try_from(blocks).unwrap_or(MAX_BLOCKS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_constant_matches_the_source() {
        assert!(SOURCE.contains(&format!("#define DENSE_TILE {DENSE_TILE}")));
    }

    #[test]
    fn element_wise_grids_are_capped() {
        assert_eq!(blocks_for(0), 1);
        assert_eq!(blocks_for(1), 1);
        assert_eq!(blocks_for(257), 2);
        assert_eq!(blocks_for(usize::MAX), MAX_BLOCKS);
    }
}
