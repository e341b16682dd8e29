//! A dense network resident on the device: weights uploaded once, forward passes run layer by
//! layer on a lane, activations ping-ponging between two pooled buffers.

use super::Device;
use super::error::{At, Failure};
use super::lane::Lane;
use super::source::{DENSE_TILE, Kernels};
use crate::kernels::{KernelError, KernelTiming, LoadedMlp, MlpWeights, check_forward};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Largest grid height: bounds the rows of one forward pass to 65 535 tiles.
const MAX_GRID_Y: usize = 65_535;

/// One layer on the device.
#[derive(Debug)]
struct DeviceLayer {
    weights: CudaSlice<f32>,
    bias: CudaSlice<f32>,
    in_dim: i32,
    out_dim: i32,
    activation: i32,
}

/// A network whose weights live in device memory.
#[derive(Debug)]
pub struct CudaMlp {
    device: Arc<Device>,
    layers: Vec<DeviceLayer>,
    input_width: usize,
    output_width: usize,
    /// Widest layer output: the size of the ping-pong buffers per row.
    widest: usize,
    bytes: u64,
}

fn dim(v: usize, what: &str) -> Result<i32, KernelError> {
    i32::try_from(v).map_err(|_| KernelError::Input(format!("{what} {v} is too large")))
}

impl CudaMlp {
    /// Validates `weights` and uploads them (on a lane's stream, synchronised before returning,
    /// so every lane may read them afterwards).
    pub(crate) fn load(device: Arc<Device>, weights: &MlpWeights) -> Result<Self, KernelError> {
        weights.validate()?;
        for l in &weights.layers {
            dim(l.in_dim, "layer width")?;
            dim(l.out_dim, "layer width")?;
        }
        let layers = device.run(|lane, _, _| upload(lane, weights))?;
        let bytes = weights
            .layers
            .iter()
            .map(|l| size_of_val(&l.weights[..]) + size_of_val(&l.bias[..]))
            .sum::<usize>() as u64;
        device.acct().weights.fetch_add(bytes, Ordering::Relaxed);
        Ok(Self {
            layers,
            input_width: weights.input_width(),
            output_width: weights.output_width(),
            widest: weights.layers.iter().map(|l| l.out_dim).max().unwrap_or(0),
            bytes,
            device,
        })
    }
}

fn upload(lane: &mut Lane, weights: &MlpWeights) -> Result<Vec<DeviceLayer>, Failure> {
    let exec = &lane.exec;
    let layers = weights
        .layers
        .iter()
        .map(|l| {
            Ok(DeviceLayer {
                weights: exec
                    .stream
                    .clone_htod(&l.weights)
                    .at("mlp: upload weights")?,
                bias: exec.stream.clone_htod(&l.bias).at("mlp: upload bias")?,
                // Checked to fit by `load`.
                in_dim: i32::try_from(l.in_dim).unwrap_or(i32::MAX),
                out_dim: i32::try_from(l.out_dim).unwrap_or(i32::MAX),
                activation: l.activation.code(),
            })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    exec.synchronize()?;
    Ok(layers)
}

impl Drop for CudaMlp {
    fn drop(&mut self) {
        self.device
            .acct()
            .weights
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Launch shape of one dense layer over `rows` rows.
fn dense_config(rows: usize, out_dim: i32) -> LaunchConfig {
    let tiles = |n: usize| u32::try_from(n.div_ceil(DENSE_TILE as usize)).unwrap_or(u32::MAX);
    LaunchConfig {
        grid_dim: (tiles(out_dim as usize), tiles(rows), 1),
        block_dim: (DENSE_TILE, DENSE_TILE, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaMlp {
    /// The forward pass on a lane: input up, one launch per layer, output down.
    #[allow(unsafe_code)] // the launches (SAFETY note inline)
    fn forward_on(
        &self,
        lane: &mut Lane,
        kernels: &Kernels,
        inputs: &[f32],
        rows: usize,
    ) -> Result<Vec<f32>, Failure> {
        let exec = &lane.exec;
        let acct = self.device.acct();
        let staged = lane
            .pinned_floats_in
            .ensure(&lane.ctx, inputs.len(), acct)?;
        staged.copy_from_slice(inputs);
        let [b0, b1, b2] = &mut lane.floats;
        let input = b0.ensure(&exec.stream, inputs.len(), acct)?;
        exec.stream
            .memcpy_htod(&*staged, input)
            .at("mlp: copy input to device")?;
        let ping: &CudaSlice<f32> = b1.ensure(&exec.stream, rows * self.widest, acct)?;
        let pong: &CudaSlice<f32> = b2.ensure(&exec.stream, rows * self.widest, acct)?;
        let rows_i32 = i32::try_from(rows).unwrap_or(i32::MAX);
        exec.start.record(&exec.stream).at("mlp: record start")?;
        let mut src: &CudaSlice<f32> = input;
        for (i, layer) in self.layers.iter().enumerate() {
            let dst = if i % 2 == 0 { ping } else { pong };
            let mut launch = exec.stream.launch_builder(&kernels.dense);
            launch
                .arg(src)
                .arg(&layer.weights)
                .arg(&layer.bias)
                .arg(dst)
                .arg(&rows_i32)
                .arg(&layer.in_dim)
                .arg(&layer.out_dim)
                .arg(&layer.activation);
            // SAFETY: arguments match `dense_forward(const float*, const float*, const float*,
            // float*, int, int, int, int)`; `src` holds rows×in_dim floats, `dst` rows×widest ≥
            // rows×out_dim, the weights out_dim×in_dim and the bias out_dim.
            unsafe { launch.launch(dense_config(rows, layer.out_dim)) }.at("mlp: launch layer")?;
            src = dst;
        }
        exec.end.record(&exec.stream).at("mlp: record end")?;
        let n_out = rows * self.output_width;
        let staged_out = lane.pinned_floats_out.ensure(&lane.ctx, n_out, acct)?;
        let result = src.try_slice(..n_out).ok_or_else(super::range_failure)?;
        exec.stream
            .memcpy_dtoh(&result, staged_out)
            .at("mlp: copy output to host")?;
        exec.synchronize()?;
        Ok(staged_out.to_vec())
    }
}

impl LoadedMlp for CudaMlp {
    fn input_width(&self) -> usize {
        self.input_width
    }

    fn output_width(&self) -> usize {
        self.output_width
    }

    fn forward(
        &self,
        inputs: &[f32],
        rows: usize,
    ) -> Result<(Vec<f32>, KernelTiming), KernelError> {
        check_forward(inputs, rows, self.input_width)?;
        if rows == 0 {
            return Ok((Vec::new(), KernelTiming::default()));
        }
        if rows.div_ceil(DENSE_TILE as usize) > MAX_GRID_Y {
            return Err(KernelError::Input(format!(
                "{rows} rows in one forward pass; at most {} fit one launch",
                MAX_GRID_Y * DENSE_TILE as usize
            )));
        }
        self.device.run(|lane, kernels, _| {
            let out = self.forward_on(lane, kernels, inputs, rows)?;
            let timing = KernelTiming {
                kernel: lane.exec.elapsed()?,
                h2d_bytes: size_of_val(inputs) as u64,
                d2h_bytes: size_of_val(&out[..]) as u64,
            };
            Ok((out, timing))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_grid_covers_rows_and_outputs() {
        let c = dense_config(1, 16);
        assert_eq!((c.grid_dim, c.block_dim), ((1, 1, 1), (16, 16, 1)));
        let c = dense_config(65, 257);
        assert_eq!(c.grid_dim, (17, 5, 1));
    }
}
