//! The sentence-transformers `Dense` module: `activation(W x + b)` on the sentence vector.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
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
}
