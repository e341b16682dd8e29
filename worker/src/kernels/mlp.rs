//! A dense network's weights: layers of `out × in` row-major weights, a bias and an activation.
//! Loaded from a safetensors file, or seeded random weights of a documented shape.
//!
//! The safetensors layout: tensors `layers.{i}.weight` (F32, shape `[out, in]`) and
//! `layers.{i}.bias` (F32, shape `[out]`) for `i = 0, 1, …`, and optionally the metadata key
//! `activations`, a comma-separated list with one activation per layer (default: `relu` on hidden
//! layers, `identity` on the last). Other tensors are ignored.

use super::KernelError;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;

/// Metadata key holding the per-layer activations in a safetensors file.
pub const ACTIVATIONS_KEY: &str = "activations";

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

    /// The name [`Activation::parse`] reads back.
    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Relu => "relu",
            Self::Tanh => "tanh",
            Self::Sigmoid => "sigmoid",
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

// === safetensors ===

fn weight_name(i: usize) -> String {
    format!("layers.{i}.weight")
}

fn bias_name(i: usize) -> String {
    format!("layers.{i}.bias")
}

/// The layer index of a tensor named `layers.{i}.…`, if it is one.
fn layer_index(name: &str) -> Option<usize> {
    name.strip_prefix("layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// A tensor's values (F32, little-endian) and shape.
fn f32_tensor(file: &SafeTensors<'_>, name: &str) -> Result<(Vec<f32>, Vec<usize>), KernelError> {
    let view = file
        .tensor(name)
        .map_err(|_| KernelError::Input(format!("weights file: missing tensor {name}")))?;
    if view.dtype() != Dtype::F32 {
        return Err(KernelError::Input(format!(
            "weights file: tensor {name} is {:?}, expected F32",
            view.dtype()
        )));
    }
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((values, view.shape().to_vec()))
}

/// Layer `i` of a safetensors file.
fn read_layer(
    file: &SafeTensors<'_>,
    i: usize,
    activation: Activation,
) -> Result<DenseLayer, KernelError> {
    let (weights, shape) = f32_tensor(file, &weight_name(i))?;
    let [out_dim, in_dim] = shape[..] else {
        return Err(KernelError::Input(format!(
            "weights file: tensor {} must be 2-D [out, in], has shape {shape:?}",
            weight_name(i)
        )));
    };
    let (bias, bias_shape) = f32_tensor(file, &bias_name(i))?;
    if bias_shape != [out_dim] {
        return Err(KernelError::Input(format!(
            "weights file: tensor {} must have shape [{out_dim}] (the rows of {}), has {bias_shape:?}",
            bias_name(i),
            weight_name(i)
        )));
    }
    Ok(DenseLayer {
        in_dim,
        out_dim,
        weights,
        bias,
        activation,
    })
}

/// The activation of each of `layers` layers: from the metadata, or the default.
fn activations(
    metadata: Option<&HashMap<String, String>>,
    layers: usize,
) -> Result<Vec<Activation>, KernelError> {
    let Some(list) = metadata.and_then(|m| m.get(ACTIVATIONS_KEY)) else {
        return Ok((0..layers)
            .map(|i| {
                if i + 1 == layers {
                    Activation::Identity
                } else {
                    Activation::Relu
                }
            })
            .collect());
    };
    let names: Vec<&str> = list.split(',').collect();
    if names.len() != layers {
        return Err(KernelError::Input(format!(
            "weights file: metadata {ACTIVATIONS_KEY:?} names {} activations for {layers} layers",
            names.len()
        )));
    }
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Activation::parse(name).ok_or_else(|| {
                KernelError::Input(format!(
                    "weights file: unknown activation {:?} for layer {i} (expected identity, relu, \
                     tanh or sigmoid)",
                    name.trim()
                ))
            })
        })
        .collect()
}

impl MlpWeights {
    /// Reads a network from a safetensors file (layout in the module docs). Every problem is a
    /// [`KernelError::Input`] naming the tensor or key at fault.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, KernelError> {
        let unreadable =
            |e| KernelError::Input(format!("weights file is not a valid safetensors file: {e}"));
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(unreadable)?;
        let file = SafeTensors::deserialize(bytes).map_err(unreadable)?;
        let count = (0..)
            .take_while(|i| file.tensor(&weight_name(*i)).is_ok())
            .count();
        // A gap (layers.0 and layers.2 but no layers.1) would silently drop layers: refuse it.
        let highest = file.names().into_iter().filter_map(layer_index).max();
        if count == 0 || highest.is_some_and(|h| h >= count) {
            return Err(KernelError::Input(format!(
                "weights file: missing tensor {}",
                weight_name(count)
            )));
        }
        let acts = activations(header.metadata().as_ref(), count)?;
        let layers = acts
            .into_iter()
            .enumerate()
            .map(|(i, act)| read_layer(&file, i, act))
            .collect::<Result<Vec<_>, _>>()?;
        let weights = Self { layers };
        weights.validate()?;
        Ok(weights)
    }

    /// Writes the network as a safetensors file that [`MlpWeights::from_safetensors`] reads back
    /// identically (activations in the metadata).
    pub fn to_safetensors(&self) -> Result<Vec<u8>, KernelError> {
        self.validate()?;
        let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                [
                    (weight_name(i), vec![l.out_dim, l.in_dim], le(&l.weights)),
                    (bias_name(i), vec![l.out_dim], le(&l.bias)),
                ]
            })
            .collect();
        let views = data
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.as_str(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| KernelError::Input(format!("cannot write weights: {e}")))?;
        let acts: Vec<&str> = self.layers.iter().map(|l| l.activation.name()).collect();
        let metadata = HashMap::from([(ACTIVATIONS_KEY.to_owned(), acts.join(","))]);
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| KernelError::Input(format!("cannot write weights: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> MlpWeights {
        let mut w = MlpWeights::seeded(&[5, 7, 3, 2], 42);
        w.layers[0].activation = Activation::Tanh;
        w.layers[1].activation = Activation::Sigmoid;
        w
    }

    /// A file with the given tensors `(name, dtype, shape, bytes)` and optional activations.
    fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], acts: Option<&str>) -> Vec<u8> {
        let views: Vec<_> = tensors
            .iter()
            .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).expect("view")))
            .collect();
        let meta = acts.map(|a| HashMap::from([(ACTIVATIONS_KEY.to_owned(), a.to_owned())]));
        safetensors::serialize(views, meta).expect("serialize")
    }

    fn f32s(n: usize) -> Vec<u8> {
        (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
    }

    fn input_error(bytes: &[u8]) -> String {
        match MlpWeights::from_safetensors(bytes) {
            Err(KernelError::Input(m)) => m,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_is_identical() {
        let w = small();
        let bytes = w.to_safetensors().expect("write");
        assert_eq!(MlpWeights::from_safetensors(&bytes).expect("read"), w);
        let seeded = MlpWeights::seeded(SEEDED_SHAPE, SEED);
        let bytes = seeded.to_safetensors().expect("write");
        assert_eq!(MlpWeights::from_safetensors(&bytes).expect("read"), seeded);
    }

    #[test]
    fn activations_default_to_relu_then_identity() {
        let f = file(
            &[
                ("layers.0.weight", Dtype::F32, vec![3, 2], f32s(6)),
                ("layers.0.bias", Dtype::F32, vec![3], f32s(3)),
                ("layers.1.weight", Dtype::F32, vec![1, 3], f32s(3)),
                ("layers.1.bias", Dtype::F32, vec![1], f32s(1)),
                ("unrelated", Dtype::I32, vec![1], vec![0; 4]),
            ],
            None,
        );
        let w = MlpWeights::from_safetensors(&f).expect("read");
        let acts: Vec<_> = w.layers.iter().map(|l| l.activation).collect();
        assert_eq!(acts, [Activation::Relu, Activation::Identity]);
        assert_eq!(w.layers[0].weights, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!((w.input_width(), w.output_width()), (2, 1));
    }

    #[test]
    fn missing_tensors_are_named() {
        let no_bias = file(
            &[("layers.0.weight", Dtype::F32, vec![3, 2], f32s(6))],
            None,
        );
        assert!(input_error(&no_bias).contains("missing tensor layers.0.bias"));
        let empty = file(&[("other", Dtype::F32, vec![1], f32s(1))], None);
        assert!(input_error(&empty).contains("missing tensor layers.0.weight"));
        let gap = file(
            &[
                ("layers.0.weight", Dtype::F32, vec![1, 1], f32s(1)),
                ("layers.0.bias", Dtype::F32, vec![1], f32s(1)),
                ("layers.2.weight", Dtype::F32, vec![1, 1], f32s(1)),
                ("layers.2.bias", Dtype::F32, vec![1], f32s(1)),
            ],
            None,
        );
        assert!(input_error(&gap).contains("missing tensor layers.1.weight"));
    }

    #[test]
    fn wrong_dtype_is_rejected() {
        let f = file(
            &[
                ("layers.0.weight", Dtype::F64, vec![1, 2], vec![0; 16]),
                ("layers.0.bias", Dtype::F32, vec![1], f32s(1)),
            ],
            None,
        );
        let m = input_error(&f);
        assert!(m.contains("layers.0.weight is F64, expected F32"), "{m}");
    }

    #[test]
    fn wrong_shapes_are_rejected() {
        let flat = file(
            &[
                ("layers.0.weight", Dtype::F32, vec![6], f32s(6)),
                ("layers.0.bias", Dtype::F32, vec![3], f32s(3)),
            ],
            None,
        );
        assert!(input_error(&flat).contains("must be 2-D [out, in], has shape [6]"));
        let bias = file(
            &[
                ("layers.0.weight", Dtype::F32, vec![3, 2], f32s(6)),
                ("layers.0.bias", Dtype::F32, vec![2], f32s(2)),
            ],
            None,
        );
        assert!(input_error(&bias).contains("layers.0.bias must have shape [3]"));
    }

    #[test]
    fn non_chaining_layers_are_rejected() {
        let f = file(
            &[
                ("layers.0.weight", Dtype::F32, vec![3, 2], f32s(6)),
                ("layers.0.bias", Dtype::F32, vec![3], f32s(3)),
                ("layers.1.weight", Dtype::F32, vec![1, 4], f32s(4)),
                ("layers.1.bias", Dtype::F32, vec![1], f32s(1)),
            ],
            None,
        );
        assert!(input_error(&f).contains("layer 1 takes 4 inputs but layer 0 gives 3"));
    }

    #[test]
    fn bad_activation_metadata_is_rejected() {
        let layer = [
            ("layers.0.weight", Dtype::F32, vec![1, 1], f32s(1)),
            ("layers.0.bias", Dtype::F32, vec![1], f32s(1)),
        ];
        assert!(input_error(&file(&layer, Some("gelu"))).contains("unknown activation \"gelu\""));
        assert!(
            input_error(&file(&layer, Some("relu,tanh"))).contains("2 activations for 1 layers")
        );
        let w = MlpWeights::from_safetensors(&file(&layer, Some(" Sigmoid "))).expect("read");
        assert_eq!(w.layers[0].activation, Activation::Sigmoid);
    }

    #[test]
    fn garbage_is_not_a_weights_file() {
        assert!(input_error(b"not safetensors").contains("not a valid safetensors file"));
        assert!(input_error(&[]).contains("not a valid safetensors file"));
    }
}
