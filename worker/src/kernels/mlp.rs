//! A dense network's weights: layers of `out × in` row-major weights, a bias and an activation.
//! Loaded from a safetensors file, or seeded random weights of a documented shape.

use super::KernelError;

/// Activation applied after a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
    Tanh,
    Sigmoid,
}

impl Activation {
    /// Parses `identity`/`none`/`linear`, `relu`, `tanh`, `sigmoid`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "identity" | "none" | "linear" | "" => Some(Self::Identity),
            "relu" => Some(Self::Relu),
            "tanh" => Some(Self::Tanh),
            "sigmoid" => Some(Self::Sigmoid),
            _ => None,
        }
    }

    /// Applies the activation to one value (the CPU reference; the CUDA kernel mirrors it).
    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Self::Identity => v,
            Self::Relu => v.max(0.0),
            Self::Tanh => v.tanh(),
            Self::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        }
    }

    /// Code used by the CUDA kernel.
    pub fn code(self) -> i32 {
        match self {
            Self::Identity => 0,
            Self::Relu => 1,
            Self::Tanh => 2,
            Self::Sigmoid => 3,
        }
    }
}

/// One dense layer: `y = act(W·x + b)`, `W` is `out_dim × in_dim` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseLayer {
    pub in_dim: usize,
    pub out_dim: usize,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub activation: Activation,
}

/// A whole network.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpWeights {
    pub layers: Vec<DenseLayer>,
}

/// Shape of the seeded network used when a function names no weights file: 64 inputs, two hidden
/// layers of 256 with ReLU, 16 outputs with no activation.
pub const SEEDED_SHAPE: &[usize] = &[64, 256, 256, 16];
/// Seed of the seeded network (the same weights on every worker and every run).
pub const SEED: u64 = 0x0005_eed0_fa11_5eed;

impl MlpWeights {
    /// Checks that the layers chain (each layer's input width is the previous output width) and
    /// that every buffer has its size.
    pub fn validate(&self) -> Result<(), KernelError> {
        if self.layers.is_empty() {
            return Err(KernelError::Input("the network has no layers".into()));
        }
        for (i, l) in self.layers.iter().enumerate() {
            if l.in_dim == 0 || l.out_dim == 0 {
                return Err(KernelError::Input(format!(
                    "layer {i} has a zero dimension"
                )));
            }
            if l.weights.len() != l.in_dim * l.out_dim || l.bias.len() != l.out_dim {
                return Err(KernelError::Input(format!(
                    "layer {i}: weights must be {}×{} and bias {}",
                    l.out_dim, l.in_dim, l.out_dim
                )));
            }
            if i > 0 && self.layers[i - 1].out_dim != l.in_dim {
                return Err(KernelError::Input(format!(
                    "layer {i} takes {} inputs but layer {} gives {}",
                    l.in_dim,
                    i - 1,
                    self.layers[i - 1].out_dim
                )));
            }
        }
        Ok(())
    }

    /// Input width of the network.
    pub fn input_width(&self) -> usize {
        self.layers.first().map_or(0, |l| l.in_dim)
    }

    /// Output width of the network.
    pub fn output_width(&self) -> usize {
        self.layers.last().map_or(0, |l| l.out_dim)
    }

    /// Deterministic weights of `shape` from `seed` (xorshift; Xavier-like scale `1/sqrt(in)`), ReLU
    /// on hidden layers, identity on the last.
    pub fn seeded(shape: &[usize], seed: u64) -> Self {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Uniform in [-1, 1).
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let layers = shape
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let (in_dim, out_dim) = (w[0], w[1]);
                let scale = 1.0 / (in_dim as f32).sqrt();
                DenseLayer {
                    in_dim,
                    out_dim,
                    weights: (0..in_dim * out_dim).map(|_| next() * scale).collect(),
                    bias: (0..out_dim).map(|_| next() * 0.1).collect(),
                    activation: if i + 2 == shape.len() {
                        Activation::Identity
                    } else {
                        Activation::Relu
                    },
                }
            })
            .collect();
        Self { layers }
    }
}
