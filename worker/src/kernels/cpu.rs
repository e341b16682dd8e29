//! The CPU backend: the reference implementation of every kernel, used when no CUDA device is
//! present or when the config asks for it.

use super::{
    Backend, KernelError, KernelTiming, LoadedMlp, MlpWeights, check_forward, check_repeat,
    check_saxpy,
};
use std::sync::Arc;
use std::time::Instant;

/// The CPU backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

fn timed<T>(f: impl FnOnce() -> T) -> (T, KernelTiming) {
    let start = Instant::now();
    let out = f();
    (
        out,
        KernelTiming {
            kernel: start.elapsed(),
            ..KernelTiming::default()
        },
    )
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn echo(&self, input: &[u8]) -> Result<(Vec<u8>, KernelTiming), KernelError> {
        Ok(timed(|| input.to_vec()))
    }

    fn repeat(&self, message: &[u8], times: usize) -> Result<(Vec<u8>, KernelTiming), KernelError> {
        let total = check_repeat(message, times)?;
        Ok(timed(|| {
            let mut out = Vec::with_capacity(total);
            for _ in 0..times {
                out.extend_from_slice(message);
            }
            out
        }))
    }

    fn saxpy(&self, a: f32, x: &[f32], y: &[f32]) -> Result<(Vec<f32>, KernelTiming), KernelError> {
        check_saxpy(x, y)?;
        Ok(timed(|| {
            x.iter().zip(y).map(|(x, y)| a.mul_add(*x, *y)).collect()
        }))
    }

    fn load_mlp(&self, weights: &MlpWeights) -> Result<Arc<dyn LoadedMlp>, KernelError> {
        weights.validate()?;
        Ok(Arc::new(CpuMlp {
            weights: weights.clone(),
        }))
    }
}

/// A network evaluated on the CPU.
#[derive(Debug)]
pub struct CpuMlp {
    weights: MlpWeights,
}

impl CpuMlp {
    /// One layer over `rows` rows.
    fn layer(l: &super::DenseLayer, input: &[f32], rows: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * l.out_dim];
        for r in 0..rows {
            let x = &input[r * l.in_dim..(r + 1) * l.in_dim];
            for o in 0..l.out_dim {
                let w = &l.weights[o * l.in_dim..(o + 1) * l.in_dim];
                let dot: f32 = w.iter().zip(x).map(|(w, x)| w * x).sum();
                out[r * l.out_dim + o] = l.activation.apply(dot + l.bias[o]);
            }
        }
        out
    }
}

impl LoadedMlp for CpuMlp {
    fn input_width(&self) -> usize {
        self.weights.input_width()
    }

    fn output_width(&self) -> usize {
        self.weights.output_width()
    }

    fn forward(
        &self,
        inputs: &[f32],
        rows: usize,
    ) -> Result<(Vec<f32>, KernelTiming), KernelError> {
        check_forward(inputs, rows, self.input_width())?;
        Ok(timed(|| {
            let mut cur = inputs.to_vec();
            for l in &self.weights.layers {
                cur = Self::layer(l, &cur, rows);
            }
            cur
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::mlp::{Activation, DenseLayer, SEED, SEEDED_SHAPE};

    #[test]
    fn echo_repeat_saxpy() {
        let b = CpuBackend;
        assert_eq!(b.echo(b"abc").expect("echo").0, b"abc");
        assert_eq!(b.repeat(b"ab", 3).expect("repeat").0, b"ababab");
        assert!(matches!(
            b.repeat(b"ab", usize::MAX),
            Err(KernelError::Input(_))
        ));
        assert_eq!(
            b.saxpy(2.0, &[1.0, 2.0], &[10.0, 20.0]).expect("saxpy").0,
            vec![12.0, 24.0]
        );
        assert!(matches!(
            b.saxpy(1.0, &[1.0], &[]),
            Err(KernelError::Input(_))
        ));
    }

    #[test]
    fn mlp_forward_matches_hand_computation() {
        let w = MlpWeights {
            layers: vec![
                DenseLayer {
                    in_dim: 2,
                    out_dim: 2,
                    weights: vec![1.0, -1.0, 0.5, 0.5],
                    bias: vec![0.0, 1.0],
                    activation: Activation::Relu,
                },
                DenseLayer {
                    in_dim: 2,
                    out_dim: 1,
                    weights: vec![2.0, 1.0],
                    bias: vec![0.5],
                    activation: Activation::Identity,
                },
            ],
        };
        let m = CpuBackend.load_mlp(&w).expect("load");
        // Row 1: [1, 3] → relu([-2, 3]) = [0, 3] → 0*2 + 3 + 0.5 = 3.5. Row 2: [2, 0] → [2, 2] → 6.5.
        let (out, _) = m.forward(&[1.0, 3.0, 2.0, 0.0], 2).expect("forward");
        assert_eq!(out, vec![3.5, 6.5]);
        assert!(matches!(m.forward(&[1.0], 1), Err(KernelError::Input(_))));
    }

    #[test]
    fn seeded_network_is_deterministic_and_well_formed() {
        let a = MlpWeights::seeded(SEEDED_SHAPE, SEED);
        assert_eq!(a, MlpWeights::seeded(SEEDED_SHAPE, SEED));
        a.validate().expect("valid");
        assert_eq!((a.input_width(), a.output_width()), (64, 16));
        assert!(a.layers[0].weights.iter().all(|w| w.abs() <= 0.125 + 1e-6));
    }
}
