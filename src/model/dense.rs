//! The sentence-transformers `Dense` module: `activation(W x + b)` on the sentence vector.

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use super::error::Result;
use super::layers::Linear;
use super::weights::CheckedWeights;

/// `2_Dense/config.json`: the layer's shape, its bias, and its activation's PyTorch class name.
#[derive(Debug, Clone, Deserialize)]
pub struct DenseConfig {
    pub in_features: usize,
    pub out_features: usize,
    #[serde(default = "yes")]
    pub bias: bool,
    #[serde(default)]
    pub activation_function: Option<String>,
}

fn yes() -> bool {
    true
}

/// Activation functions a `Dense` module may name (`torch.nn.modules.activation.Tanh`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Tanh,
    Relu,
    Gelu,
    Sigmoid,
    Silu,
}

impl Activation {
    /// Parses the fully qualified PyTorch class name that sentence-transformers writes.
    pub fn from_torch_name(name: &str) -> Option<Self> {
        let class = name.rsplit('.').next().unwrap_or(name);
        Some(match class {
            "Identity" => Activation::Identity,
            "Tanh" => Activation::Tanh,
            "ReLU" => Activation::Relu,
            "GELU" => Activation::Gelu,
            "Sigmoid" => Activation::Sigmoid,
            "SiLU" => Activation::Silu,
            _ => return None,
        })
    }

    /// The class name written back into `config.json`.
    pub fn torch_name(self) -> &'static str {
        match self {
            Activation::Identity => "torch.nn.modules.linear.Identity",
            Activation::Tanh => "torch.nn.modules.activation.Tanh",
            Activation::Relu => "torch.nn.modules.activation.ReLU",
            Activation::Gelu => "torch.nn.modules.activation.GELU",
            Activation::Sigmoid => "torch.nn.modules.activation.Sigmoid",
            Activation::Silu => "torch.nn.modules.activation.SiLU",
        }
    }

    pub fn forward(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Identity => Ok(x.clone()),
            Activation::Tanh => x.tanh(),
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu_erf(),
            Activation::Sigmoid => candle_nn::ops::sigmoid(x),
            Activation::Silu => x.silu(),
        }
    }
}

/// A loaded `Dense` module; its weights live in their own [`VarMap`] so training can update them.
pub struct Dense {
    linear: Linear,
    activation: Activation,
    config: DenseConfig,
    varmap: VarMap,
}

impl Dense {
    pub fn load(
        dir: &Path,
        config: &DenseConfig,
        activation: Activation,
        device: &Device,
    ) -> Result<Self> {
        let weights = CheckedWeights::open(dir, "")?;
        let vb = weights.var_builder(device);
        let linear = Linear::load(
            vb.pp("linear"),
            config.in_features,
            config.out_features,
            config.bias,
        )?;
        let varmap = weights.finish()?;
        Ok(Self {
            linear,
            activation,
            config: config.clone(),
            varmap,
        })
    }

    /// A new module, initialised as `torch.nn.Linear` is: weight and bias uniform in
    /// ±1/sqrt(in_features) (Kaiming-uniform with a = sqrt(5)), drawn from `seed`.
    pub fn new(
        in_features: usize,
        out_features: usize,
        activation: Activation,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / (in_features as f32).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xde45_e000);
        let mut uniform =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let w = Var::from_tensor(&Tensor::from_vec(
            uniform(out_features * in_features),
            (out_features, in_features),
            device,
        )?)?;
        let b = Var::from_tensor(&Tensor::from_vec(
            uniform(out_features),
            out_features,
            device,
        )?)?;
        let linear = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().expect("fresh varmap");
            data.insert("linear.weight".into(), w);
            data.insert("linear.bias".into(), b);
        }
        Ok(Self {
            linear,
            activation,
            config: DenseConfig {
                in_features,
                out_features,
                bias: true,
                activation_function: Some(activation.torch_name().into()),
            },
            varmap,
        })
    }

    pub fn forward(&self, x: &Tensor, grad: bool) -> candle_core::Result<Tensor> {
        self.activation.forward(&self.linear.forward(x, grad)?)
    }

    pub fn config(&self) -> &DenseConfig {
        &self.config
    }

    pub fn activation(&self) -> Activation {
        self.activation
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_names_round_trip() {
        for a in [
            Activation::Identity,
            Activation::Tanh,
            Activation::Relu,
            Activation::Gelu,
            Activation::Sigmoid,
            Activation::Silu,
        ] {
            assert_eq!(Activation::from_torch_name(a.torch_name()), Some(a));
        }
        assert_eq!(Activation::from_torch_name("my.custom.Swish"), None);
    }

    #[test]
    fn a_new_module_is_seeded_and_shaped_as_torch_linear() {
        let d = Dense::new(16, 4, Activation::Tanh, 7, &Device::Cpu).unwrap();
        let w: Vec<Vec<f32>> = d.linear.weight().to_vec2().unwrap();
        assert_eq!((w.len(), w[0].len()), (4, 16));
        assert!(
            w.iter().flatten().all(|x| x.abs() <= 0.25),
            "bound 1/sqrt(16)"
        );
        let again = Dense::new(16, 4, Activation::Tanh, 7, &Device::Cpu).unwrap();
        assert_eq!(again.linear.weight().to_vec2::<f32>().unwrap(), w);
        let other = Dense::new(16, 4, Activation::Tanh, 8, &Device::Cpu).unwrap();
        assert_ne!(other.linear.weight().to_vec2::<f32>().unwrap(), w);
        let names: Vec<String> = d.varmap().data().lock().unwrap().keys().cloned().collect();
        assert_eq!(names.len(), 2);
        let x = Tensor::ones((3, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
        let y: Vec<Vec<f32>> = d.forward(&x, false).unwrap().to_vec2().unwrap();
        assert!(y.iter().flatten().all(|v| v.abs() < 1.0), "tanh");
    }
}
