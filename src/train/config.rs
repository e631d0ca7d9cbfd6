//! Everything that defines a training run. Saved in each checkpoint so `--resume` continues the
//! same run. What the values may be is decided in `rules.rs`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::losses::{LossKind, TripletDistance};
use crate::model::dense::Activation;
use crate::model::{DeviceChoice, PoolingSpec};

/// (De)serialises a type through its `Display` / `FromStr` form.
mod as_string {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

mod opt_string {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl std::fmt::Display for TripletDistance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TripletDistance::Euclidean => "euclidean",
            TripletDistance::Cosine => "cosine",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Base model: folder or Hub id.
    pub model: String,
    pub data: PathBuf,
    /// More training files: their batches are interleaved with `data`'s by `sampler` (a batch
    /// never mixes files).
    #[serde(default)]
    pub more_data: Vec<PathBuf>,
    #[serde(with = "as_string", default)]
    pub sampler: super::sampler::MultiSampler,
    #[serde(with = "as_string")]
    pub loss: LossKind,
    #[serde(with = "opt_string", default)]
    pub pooling: Option<PoolingSpec>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    /// Gradient-norm clipping; `None` turns it off.
    pub max_grad_norm: Option<f64>,
    pub max_seq_length: Option<usize>,
    pub seed: u64,
    #[serde(with = "as_string")]
    pub device: DeviceChoice,
    pub eval: Option<PathBuf>,
    /// Evaluate every N steps (besides each epoch's end); `None`: epoch ends only.
    pub eval_steps: Option<usize>,
    /// Teacher model for the `mse` (distillation) loss.
    pub teacher: Option<String>,
    pub output: PathBuf,
    /// Save a checkpoint every N steps; `None`: only when stopped.
    pub checkpoint_steps: Option<usize>,
    pub keep_checkpoints: usize,
    #[serde(with = "as_string")]
    pub triplet_distance: TripletDistance,
    /// Margin for triplet / contrastive losses (default: the library's for the distance).
    pub margin: Option<f64>,
    /// Scale for mnr / cosent / angle / simcse (default 20).
    pub scale: Option<f64>,
    /// Dropout during training (the model's own probabilities). Off makes steps deterministic.
    pub dropout: bool,
    /// Prompts put before the texts of the data's columns, as the Python trainer's `prompts`.
    #[serde(default)]
    pub prompts: Vec<ColumnPrompt>,
    /// `MatryoshkaLoss` around the loss: the widths it is computed at (empty: off).
    #[serde(default)]
    pub matryoshka_dims: Vec<usize>,
    /// A weight per width (empty: 1 each).
    #[serde(default)]
    pub matryoshka_weights: Vec<f64>,
    /// A new trained Dense module after pooling (the seed's optional dense layer).
    #[serde(default)]
    pub add_dense: Option<AddDense>,
    /// Micro-batches of `batch_size` whose mean gradient makes one optimizer step.
    #[serde(default = "one")]
    pub gradient_accumulation_steps: usize,
    /// Rows per forward pass of `cached-mnr` (GradCache); the batch is `batch_size` rows.
    #[serde(default = "thirty_two")]
    pub mini_batch_size: usize,
    /// Augmented copies of the training rows (EDA, back-translation); `None`: off.
    #[serde(default)]
    pub augment: Option<super::augment::Augment>,
    /// Contriever: unlabelled documents become pairs of two independent random crops (their
    /// lengths a ratio of the document, uniform in this range), redrawn each epoch.
    #[serde(default)]
    pub crops: Option<[f64; 2]>,
    /// FGM / PGD on the word embeddings; `None`: off.
    #[serde(default)]
    pub adversarial: Option<super::session::Adversarial>,
}

fn thirty_two() -> usize {
    32
}

fn one() -> usize {
    1
}

/// A Dense module added to the student: its output width and activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddDense {
    pub dim: usize,
    #[serde(with = "as_string")]
    pub activation: DenseActivation,
}

/// The activations `--dense-activation` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenseActivation {
    #[default]
    Tanh,
    Relu,
    Identity,
}

impl DenseActivation {
    pub fn activation(self) -> Activation {
        match self {
            DenseActivation::Tanh => Activation::Tanh,
            DenseActivation::Relu => Activation::Relu,
            DenseActivation::Identity => Activation::Identity,
        }
    }
}

impl fmt::Display for DenseActivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DenseActivation::Tanh => "tanh",
            DenseActivation::Relu => "relu",
            DenseActivation::Identity => "identity",
        })
    }
}

impl std::str::FromStr for DenseActivation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tanh" => Ok(DenseActivation::Tanh),
            "relu" => Ok(DenseActivation::Relu),
            "identity" | "none" | "linear" => Ok(DenseActivation::Identity),
            other => Err(format!(
                "unknown activation `{other}` (expected relu, tanh or identity)"
            )),
        }
    }
}

impl TrainConfig {
    /// Every training file, `data` first.
    pub fn data_files(&self) -> Vec<&std::path::Path> {
        std::iter::once(self.data.as_path())
            .chain(self.more_data.iter().map(PathBuf::as_path))
            .collect()
    }

    /// The Matryoshka weights, one per width (1 where none were given).
    pub fn matryoshka_weights(&self) -> Vec<f64> {
        if self.matryoshka_weights.is_empty() {
            vec![1.0; self.matryoshka_dims.len()]
        } else {
            self.matryoshka_weights.clone()
        }
    }
}

/// A prompt for the texts of one column of the training data (or of every column): the name of
/// one of the model's prompts, or else the text itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnPrompt {
    /// `None`: every column.
    pub column: Option<String>,
    pub prompt: String,
}

impl ColumnPrompt {
    /// Reads `--prompts`: `COLUMN=PROMPT` pairs separated by commas (`anchor=query,positive=passage`),
    /// or one prompt for every column when the value is not such a list.
    pub fn parse_list(value: &str) -> Vec<ColumnPrompt> {
        let pair = |part: &str| -> Option<ColumnPrompt> {
            let (column, prompt) = part.split_once('=')?;
            let column = column.trim();
            let ok = !column.is_empty()
                && column
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
            ok.then(|| ColumnPrompt {
                column: Some(column.to_string()),
                prompt: prompt.to_string(),
            })
        };
        let parts: Option<Vec<ColumnPrompt>> = value.split(',').map(pair).collect();
        if let Some(parts) = parts {
            return parts;
        }
        match pair(value) {
            Some(one) => vec![one],
            None => vec![ColumnPrompt {
                column: None,
                prompt: value.to_string(),
            }],
        }
    }
}

impl fmt::Display for ColumnPrompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(c) => write!(f, "{c}={}", self.prompt),
            None => f.write_str(&self.prompt),
        }
    }
}

impl TrainConfig {
    /// A run with the library's usual defaults.
    pub fn new(model: &str, data: PathBuf, loss: LossKind, output: PathBuf) -> Self {
        Self {
            model: model.to_string(),
            data,
            more_data: Vec::new(),
            sampler: Default::default(),
            loss,
            pooling: None,
            epochs: 1,
            batch_size: 16,
            lr: 2e-5,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
            max_seq_length: None,
            seed: 42,
            device: DeviceChoice::Auto,
            eval: None,
            eval_steps: None,
            teacher: None,
            output,
            checkpoint_steps: None,
            keep_checkpoints: 2,
            triplet_distance: TripletDistance::Euclidean,
            margin: None,
            scale: None,
            dropout: true,
            prompts: Vec::new(),
            matryoshka_dims: Vec::new(),
            matryoshka_weights: Vec::new(),
            add_dense: None,
            gradient_accumulation_steps: 1,
            mini_batch_size: 32,
            augment: None,
            crops: None,
            adversarial: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_parse_per_column_or_for_every_column() {
        let p = ColumnPrompt::parse_list("anchor=query,positive=passage");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].column.as_deref(), Some("anchor"));
        assert_eq!(p[1].prompt, "passage");
        let p = ColumnPrompt::parse_list("anchor=query: a, b");
        assert_eq!(
            p,
            vec![ColumnPrompt {
                column: Some("anchor".into()),
                prompt: "query: a, b".into()
            }]
        );
        let p = ColumnPrompt::parse_list("query: ");
        assert_eq!(
            p,
            vec![ColumnPrompt {
                column: None,
                prompt: "query: ".into()
            }]
        );
        // An old checkpoint's settings have no prompts.
        let mut v =
            serde_json::to_value(TrainConfig::new("m", "d".into(), LossKind::Mnr, "o".into()))
                .unwrap();
        v.as_object_mut().unwrap().remove("prompts");
        v.as_object_mut()
            .unwrap()
            .remove("gradient_accumulation_steps");
        let back: TrainConfig = serde_json::from_value(v).unwrap();
        assert!(back.prompts.is_empty());
        assert_eq!(back.gradient_accumulation_steps, 1);
    }

    #[test]
    fn round_trips_through_json() {
        let mut c = TrainConfig::new("m", "d.csv".into(), LossKind::MnrSymmetric, "out".into());
        c.pooling = Some("cls".parse().unwrap());
        c.device = DeviceChoice::Cuda(1);
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains("\"loss\":\"mnr-symmetric\""), "{text}");
        let back: TrainConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back.loss, LossKind::MnrSymmetric);
        assert_eq!(back.device, DeviceChoice::Cuda(1));
        assert_eq!(back.pooling.unwrap().to_string(), "cls");
    }
}
