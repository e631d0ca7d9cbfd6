//! The whole sentence-transformers pipeline: tokenizer, transformer, pooling, Dense, Normalize.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use super::dense::{Activation, Dense};
use super::device::{DeviceChoice, describe};
use super::error::{ModelError, Result};
use super::families;
use super::folder::{ModelLayout, Stage, read_transformer_files};
use super::layers::{DropoutRng, Mode};
use super::pooling::{PoolingMode, PoolingSpec, mask_from_lengths, normalize};
use super::tokenize::{TextTokenizer, Tokenized};
use super::transformer::{EncoderInput, Tape, Transformer, WeightGrads};
use crate::analysis::similarity::Similarity;

/// Choices made when loading a model, each overriding what the folder says.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub device: DeviceChoice,
    /// Replaces the model's pooling.
    pub pooling: Option<PoolingSpec>,
    /// Replaces the model's `max_seq_length`.
    pub max_seq_length: Option<usize>,
    /// Keeps the first N dimensions of every vector (`truncate_dim` in Python).
    pub truncate_dim: Option<usize>,
    /// Inference precision (float32 unless asked).
    pub precision: Precision,
}

/// The arithmetic of inference: float32 (exact, the default), bfloat16 products of the linear
/// layers summed in float32 (`model/cpu/bf16.rs`), or int8 dynamic quantisation of the linear
/// layers (`model/cpu/quant.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "int8" | "i8" => Ok(Precision::Int8),
            other => Err(format!("unknown precision `{other}` (f32, bf16 or int8)")),
        }
    }
}

/// Which prompt goes before each text (the prompts of `config_sentence_transformers.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Prompt {
    /// The model's `default_prompt_name`, if it has one: what `encode` does in Python.
    #[default]
    ModelDefault,
    /// No prompt.
    None,
    /// One of the model's prompts, by name.
    Name(String),
    /// This text.
    Text(String),
}

impl Prompt {
    /// From `--prompt-name` and `--prompt` (the text wins, as in Python).
    pub fn from_flags(name: Option<&str>, text: Option<&str>) -> Self {
        match (text, name) {
            (Some(t), _) => Prompt::Text(t.to_string()),
            (None, Some(n)) => Prompt::Name(n.to_string()),
            (None, None) => Prompt::ModelDefault,
        }
    }
}

/// What a loaded model is, for status lines, logs and `--help`-style summaries.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub folder: PathBuf,
    /// Folder of the Transformer module (config, tokenizer files), usually `folder` itself.
    pub transformer_dir: PathBuf,
    /// `do_lower_case` of `sentence_bert_config.json`.
    pub do_lower_case: bool,
    pub model_type: String,
    pub hidden_size: usize,
    pub layers: usize,
    /// Width of the final sentence vector (after `truncate_dim`).
    pub embedding_dim: usize,
    /// Vectors are cut to this many dimensions.
    pub truncate_dim: Option<usize>,
    pub max_seq_length: usize,
    pub pooling: PoolingSpec,
    pub dense_layers: usize,
    pub normalize: bool,
    pub device: String,
    /// Names in the checkpoint that the encoder does not use (warned about, not fatal).
    pub unexpected_weights: Vec<String>,
    /// Prompt name -> text.
    pub prompts: std::collections::BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
    /// False: pooling leaves the prompt's tokens out.
    pub include_prompt: bool,
    /// How the model compares vectors (`similarity_fn_name`).
    pub similarity: Similarity,
    /// Inference precision.
    pub precision: Precision,
}

/// A module after the transformer, as the saver sees it.
pub enum StageRef<'a> {
    Pooling(&'a PoolingSpec),
    Dense(&'a Dense),
    Normalize,
}

enum LoadedStage {
    Pooling(PoolingSpec),
    Dense(Dense),
    Normalize,
}

impl LoadedStage {
    /// A module after pooling, on the sentence vectors `x`.
    fn on_vectors(&self, x: Tensor, mode: Mode) -> Result<Tensor> {
        Ok(match self {
            LoadedStage::Dense(d) => d.forward(&x, mode.grad)?,
            LoadedStage::Normalize => normalize(&x)?,
            LoadedStage::Pooling(spec) => {
                return Err(ModelError::Invalid(format!(
                    "a second pooling module ({spec}) after the first"
                )));
            }
        })
    }

    fn as_ref(&self) -> StageRef<'_> {
        match self {
            LoadedStage::Pooling(p) => StageRef::Pooling(p),
            LoadedStage::Dense(d) => StageRef::Dense(d),
            LoadedStage::Normalize => StageRef::Normalize,
        }
    }
}

/// One token of [`Pipeline`].
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineToken {
    /// The vocabulary's piece (`play`, `##ing`, `[CLS]`).
    pub piece: String,
    pub id: u32,
    /// `[CLS]`, `[SEP]`, `</s>`, ... (not the unknown token).
    pub special: bool,
    /// The unknown token: text the vocabulary has no piece for.
    pub unknown: bool,
    /// Pooling sees this token (false for a prompt's tokens under `include_prompt: false`).
    pub pooled: bool,
    /// Its weight under the model's (first) pooling mode; see [`super::pooling::token_weights`].
    pub weight: Option<f32>,
    /// The transformer's output for it.
    pub vector: Vec<f32>,
}

/// A text through every step of the model, from [`SentenceEncoder::pipeline`].
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub tokens: Vec<PipelineToken>,
    /// Tokens were cut off at `max_seq_length`; `dropped` of the text's pieces were lost.
    pub truncated: bool,
    pub dropped: usize,
    pub max_seq_length: usize,
    /// Tokens at the start that belong to the prompt.
    pub prompt_len: usize,
    /// The mode whose token weights `tokens` hold.
    pub pooling: PoolingMode,
    /// Each module after the transformer (pooling, Dense, Normalize, then `truncate_dim`) with
    /// its output; the last is the sentence vector.
    pub stages: Vec<(String, Vec<f32>)>,
}

/// A sentence encoder that embeds text exactly as `SentenceTransformer.encode` does.
pub struct SentenceEncoder {
    info: ModelInfo,
    tokenizer: TextTokenizer,
    transformer: Box<dyn Transformer>,
    stages: Vec<LoadedStage>,
    device: Device,
    /// `config.json` and the tokenizer files, kept from load time for saving.
    transformer_files: Vec<(String, Vec<u8>)>,
}

impl SentenceEncoder {
    /// Loads a sentence-transformers (or plain Hugging Face BERT) folder.
    pub fn load(folder: &Path, options: &LoadOptions) -> Result<Self> {
        let loaded = Self::load_inner(folder, options);
        // What loading freed goes back to the system: the allocator keeps freed memory in the
        // arena of the thread that freed it (`crate::tune_allocator`), where the passes, which
        // run on another thread, could not reuse it (all-mpnet-base-v2 encoding peaked at
        // 1,227 MB instead of 863).
        crate::release_freed_memory();
        loaded
    }

    fn load_inner(folder: &Path, options: &LoadOptions) -> Result<Self> {
        let layout = ModelLayout::read(folder)?;
        let device = options.device.open()?;
        let mut transformer = families::load(&layout.transformer_dir, &device)?;
        transformer
            .set_precision(options.precision)
            .map_err(ModelError::Invalid)?;
        let hidden = transformer.hidden_size();

        let max_seq_length = options
            .max_seq_length
            .unwrap_or(layout.max_seq_length)
            .min(transformer.max_tokens());
        if max_seq_length < 2 {
            return Err(ModelError::Invalid(format!(
                "max_seq_length {max_seq_length} leaves no room for text"
            )));
        }
        let transformer_files = read_transformer_files(&layout.transformer_dir)?;
        let tokenizer = TextTokenizer::load(
            &layout.transformer_dir,
            max_seq_length,
            layout.do_lower_case,
        )?;

        let mut stages = Vec::new();
        let mut dim = hidden;
        let mut pooling = None;
        for stage in &layout.stages {
            match stage {
                Stage::Pooling(spec) => {
                    let spec = options.pooling.clone().unwrap_or_else(|| spec.clone());
                    if spec.needs_decoder() && !transformer.has_decoder() {
                        return Err(no_decoder(transformer.model_type()));
                    }
                    dim = spec.output_dim(hidden);
                    pooling = Some(spec.clone());
                    stages.push(LoadedStage::Pooling(spec));
                }
                Stage::Dense {
                    dir,
                    config,
                    activation,
                } => {
                    if config.in_features != dim {
                        return Err(ModelError::config(
                            dir.join("config.json"),
                            format!(
                                "Dense expects {} inputs but the previous module gives {dim}{}",
                                config.in_features,
                                if options.pooling.is_some() {
                                    " (the --pooling override changed the width)"
                                } else {
                                    ""
                                }
                            ),
                        ));
                    }
                    dim = config.out_features;
                    stages.push(LoadedStage::Dense(Dense::load(
                        dir,
                        config,
                        *activation,
                        &device,
                    )?));
                }
                Stage::Normalize => stages.push(LoadedStage::Normalize),
            }
        }
        if let Some(t) = options.truncate_dim
            && (t == 0 || t > dim)
        {
            return Err(ModelError::Invalid(format!(
                "truncate_dim {t}: the model's vectors have {dim} dimensions"
            )));
        }
        let info = ModelInfo {
            folder: folder.to_path_buf(),
            transformer_dir: layout.transformer_dir.clone(),
            do_lower_case: layout.do_lower_case,
            model_type: transformer.model_type().to_string(),
            hidden_size: hidden,
            layers: transformer.layers(),
            embedding_dim: options.truncate_dim.unwrap_or(dim),
            truncate_dim: options.truncate_dim,
            max_seq_length,
            pooling: pooling.expect("ModelLayout guarantees a Pooling stage"),
            dense_layers: stages
                .iter()
                .filter(|s| matches!(s, LoadedStage::Dense(_)))
                .count(),
            normalize: layout.normalizes(),
            device: describe(&device),
            unexpected_weights: transformer.unexpected_weights().to_vec(),
            prompts: layout.st_config.prompts.clone(),
            default_prompt_name: layout.st_config.default_prompt_name.clone(),
            include_prompt: layout.include_prompt,
            similarity: layout.st_config.similarity,
            precision: options.precision,
        };
        Ok(Self {
            info,
            tokenizer,
            transformer,
            stages,
            device,
            transformer_files,
        })
    }

    /// Prepares the model for training: its transformer drops every copy of its weights made
    /// for inference and makes none from now on (they would go stale at the first update), and
    /// inference returns to float32 (`Transformer::set_trainable`).
    pub fn set_trainable(&mut self) {
        self.transformer.set_trainable();
        self.info.precision = Precision::F32;
    }

    /// Replaces the pooling (as `--pooling` does at load time), checking that a following Dense
    /// module still gets the width it expects.
    pub fn set_pooling(&mut self, spec: PoolingSpec) -> Result<()> {
        if spec.needs_decoder() && !self.transformer.has_decoder() {
            return Err(no_decoder(self.transformer.model_type()));
        }
        let hidden = self.info.hidden_size;
        let mut dim = hidden;
        for stage in &self.stages {
            match stage {
                LoadedStage::Pooling(_) => dim = spec.output_dim(hidden),
                LoadedStage::Dense(d) => {
                    if d.config().in_features != dim {
                        return Err(ModelError::Invalid(format!(
                            "pooling {spec} gives {dim} values but the Dense module expects {}",
                            d.config().in_features
                        )));
                    }
                    dim = d.config().out_features;
                }
                LoadedStage::Normalize => {}
            }
        }
        if let Some(t) = self.info.truncate_dim
            && t > dim
        {
            return Err(ModelError::Invalid(format!(
                "pooling {spec} gives {dim} values, fewer than truncate_dim {t}"
            )));
        }
        for stage in &mut self.stages {
            if let LoadedStage::Pooling(p) = stage {
                *p = spec.clone();
            }
        }
        self.info.pooling = spec;
        self.info.embedding_dim = self.info.truncate_dim.unwrap_or(dim);
        Ok(())
    }

    /// Adds a new trained Dense module after pooling (after any Dense the model has, before
    /// Normalize): the vectors become `out_features` wide. `seed` draws its initial weights.
    pub fn add_dense(
        &mut self,
        out_features: usize,
        activation: Activation,
        seed: u64,
    ) -> Result<()> {
        let width = self
            .stages
            .iter()
            .fold(self.info.hidden_size, |dim, s| match s {
                LoadedStage::Pooling(p) => p.output_dim(self.info.hidden_size),
                LoadedStage::Dense(d) => d.config().out_features,
                LoadedStage::Normalize => dim,
            });
        if let Some(t) = self.info.truncate_dim
            && t > out_features
        {
            return Err(ModelError::Invalid(format!(
                "a Dense module of {out_features} outputs is narrower than truncate_dim {t}"
            )));
        }
        let at = self
            .stages
            .iter()
            .rposition(|s| matches!(s, LoadedStage::Pooling(_) | LoadedStage::Dense(_)))
            .map_or(0, |i| i + 1);
        let dense = Dense::new(width, out_features, activation, seed, &self.device)?;
        self.stages.insert(at, LoadedStage::Dense(dense));
        self.info.dense_layers += 1;
        self.info.embedding_dim = self.info.truncate_dim.unwrap_or(out_features);
        Ok(())
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The transformer's `config.json` and tokenizer files (name, bytes), as read at load time.
    pub fn transformer_files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.transformer_files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    pub fn transformer(&self) -> &dyn Transformer {
        self.transformer.as_ref()
    }

    /// The transformer as its family's own type (for tests of one family's paths).
    pub fn transformer_as<T: 'static>(&self) -> Option<&T> {
        self.transformer.as_any().downcast_ref::<T>()
    }

    /// The encoder's part of a hand-written backward pass: from the gradient of the leaf of
    /// [`SentenceEncoder::forward_recorded`] to the gradient of every weight.
    pub fn backward(&self, tape: Tape, grad_tokens: &[f32]) -> Result<WeightGrads> {
        Ok(self.transformer.backward(tape, grad_tokens)?)
    }

    /// The modules after the transformer, in order.
    pub fn stages(&self) -> Vec<StageRef<'_>> {
        self.stages.iter().map(LoadedStage::as_ref).collect()
    }

    /// Every trainable variable map: the transformer's, then each Dense module's.
    pub fn varmaps(&self) -> Vec<&VarMap> {
        let mut maps = vec![self.transformer.varmap()];
        maps.extend(self.stages.iter().filter_map(|s| match s {
            LoadedStage::Dense(d) => Some(d.varmap()),
            _ => None,
        }));
        maps
    }

    /// Tokenizes texts with this model's settings (no prompt).
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Tokenized>> {
        self.tokenizer.encode(texts)
    }

    /// The text of `prompt` for this model (`None`: no prompt). A name the model does not have
    /// is an error that lists the ones it has.
    pub fn prompt_text(&self, prompt: &Prompt) -> Result<Option<String>> {
        let named = |name: &str| {
            self.info.prompts.get(name).cloned().ok_or_else(|| {
                ModelError::Invalid(format!(
                    "prompt `{name}` is not one of the model's prompts ({})",
                    super::folder::prompt_names(&self.info.prompts)
                ))
            })
        };
        let text = match prompt {
            Prompt::None => return Ok(None),
            Prompt::Text(t) => t.clone(),
            Prompt::Name(n) => named(n)?,
            Prompt::ModelDefault => match &self.info.default_prompt_name {
                Some(n) => named(n)?,
                None => return Ok(None),
            },
        };
        // An empty prompt is no prompt (as in Python).
        Ok((!text.is_empty()).then_some(text))
    }

    /// Tokenizes texts with `prompt` before each.
    pub fn tokenize_prompted<S: AsRef<str>>(
        &self,
        texts: &[S],
        prompt: &Prompt,
    ) -> Result<Vec<Tokenized>> {
        match self.prompt_text(prompt)? {
            Some(p) => self.tokenizer.encode_prompted(texts, &p),
            None => self.tokenize(texts),
        }
    }

    /// Pads tokenized texts into one batch (right padding).
    pub fn batch(&self, items: &[&Tokenized]) -> Result<EncoderInput> {
        let seq = items.iter().map(|t| t.ids.len()).max().unwrap_or(0).max(1);
        let b = items.len();
        let pad = self.tokenizer.pad_id();
        let mut ids = vec![pad; b * seq];
        let mut type_ids = vec![0u32; b * seq];
        let mut lengths = Vec::with_capacity(b);
        for (row, t) in items.iter().enumerate() {
            ids[row * seq..row * seq + t.ids.len()].copy_from_slice(&t.ids);
            type_ids[row * seq..row * seq + t.type_ids.len()].copy_from_slice(&t.type_ids);
            lengths.push(t.ids.len());
        }
        Ok(EncoderInput {
            ids: Tensor::from_vec(ids, (b, seq), &self.device)?,
            type_ids: Tensor::from_vec(type_ids, (b, seq), &self.device)?,
            mask: mask_from_lengths(&lengths, seq, &self.device)?,
            lengths,
            prompt_lens: items.iter().map(|t| t.prompt_len).collect(),
        })
    }

    /// Token vectors `[b, seq, hidden]` of a batch.
    pub fn token_embeddings(&self, input: &EncoderInput, mode: Mode) -> Result<Tensor> {
        Ok(self.transformer.forward(input, mode)?)
    }

    /// Sentence vectors `[b, dim]`: transformer, then every module after it. Differentiable when
    /// `mode.grad` is set.
    pub fn forward(&self, input: &EncoderInput, mode: Mode) -> Result<Tensor> {
        if let Some(at) = self.pooled_token(input)
            && let Some(pooled) = self.transformer.forward_at(input, mode, &at)?
        {
            // Pooling read one token, which the transformer gave alone.
            return self.after_pooling(pooled, mode);
        }
        let tokens = self.token_embeddings(input, mode)?;
        self.after_transformer(tokens, input, mode)
    }

    /// The modules after pooling (the first), on its output `pooled`.
    fn after_pooling(&self, pooled: Tensor, mode: Mode) -> Result<Tensor> {
        self.stages[1..]
            .iter()
            .try_fold(pooled, |x, stage| stage.on_vectors(x, mode))
    }

    /// The pooling mode when the model pools one token of each sentence (`cls` or `lasttoken`
    /// alone, its only pooling module), and whether its transformer then runs the last layer
    /// for that token alone on the CPU.
    pub fn pools_one_token(&self) -> Option<(PoolingMode, bool)> {
        let (LoadedStage::Pooling(spec), rest) = self.stages.split_first()? else {
            return None;
        };
        let mode = match spec.modes() {
            [m @ (PoolingMode::Cls | PoolingMode::LastToken)] => *m,
            _ => return None,
        };
        if rest.iter().any(|s| matches!(s, LoadedStage::Pooling(_))) {
            return None;
        }
        Some((mode, self.transformer.picks_pooled_token()))
    }

    /// Where the model pools one token of each sentence (`cls` or `lasttoken` alone, its only
    /// pooling module): that token's place in each sentence of `input`, as pooling picks it (the
    /// first token, or the first after the prompt without `include_prompt`; the last token).
    /// `None` otherwise, or where a sentence has no token to pool.
    fn pooled_token(&self, input: &EncoderInput) -> Option<Vec<usize>> {
        let (mode, _) = self.pools_one_token()?;
        let skip_prompt = !self.info.include_prompt;
        input
            .lengths
            .iter()
            .zip(&input.prompt_lens)
            .map(|(&len, &prompt)| {
                let first = if skip_prompt { prompt.min(len) } else { 0 };
                (first < len).then_some(if mode == PoolingMode::Cls {
                    first
                } else {
                    len - 1
                })
            })
            .collect()
    }

    /// Training-mode sentence vectors with the encoder's backward pass written by hand (CPU):
    /// the token vectors become a leaf variable (where pooling reads one token, that token's
    /// vectors alone, `[b, hidden]`), pooling / Dense / Normalize stay differentiable candle
    /// operations on it. After `loss.backward()`, pass the leaf's gradient to
    /// [`SentenceEncoder::backward`]. `None` where the hand-written path does not apply.
    pub fn forward_recorded(
        &self,
        input: &EncoderInput,
        dropout: Option<&DropoutRng>,
    ) -> Result<Option<(Tensor, Var, Tape)>> {
        let mode = Mode {
            dropout,
            grad: true,
            kernels: None,
            lookups: None,
            fresh: false,
        };
        if let Some(at) = self.pooled_token(input)
            && let Some((pooled, tape)) =
                self.transformer.forward_recorded_at(input, dropout, &at)?
        {
            // Pooling read one token, which the transformer gave alone: the leaf is its vector.
            let leaf = Var::from_tensor(&pooled)?;
            let out = self.after_pooling(leaf.as_tensor().clone(), mode)?;
            return Ok(Some((out, leaf, tape)));
        }
        let Some((tokens, tape)) = self.transformer.forward_recorded(input, dropout)? else {
            return Ok(None);
        };
        let leaf = Var::from_tensor(&tokens)?;
        let out = self.after_transformer(leaf.as_tensor().clone(), input, mode)?;
        Ok(Some((out, leaf, tape)))
    }

    /// The mask pooling uses: the attention mask, less the prompt's tokens when the model's
    /// pooling leaves them out (`include_prompt: false`).
    fn pooling_mask(&self, input: &EncoderInput) -> Result<Tensor> {
        if self.info.include_prompt || input.prompt_lens.iter().all(|&p| p == 0) {
            return Ok(input.mask.clone());
        }
        let (b, seq) = input.mask.dims2()?;
        let mut m = vec![0f32; b * seq];
        for (row, (&len, &p)) in input.lengths.iter().zip(&input.prompt_lens).enumerate() {
            for v in &mut m[row * seq + p.min(len)..row * seq + len] {
                *v = 1.0;
            }
        }
        Ok(Tensor::from_vec(m, (b, seq), input.mask.device())?)
    }

    fn after_transformer(
        &self,
        tokens: Tensor,
        input: &EncoderInput,
        mode: Mode,
    ) -> Result<Tensor> {
        self.after_transformer_observed(tokens, input, mode, &mut |_, _| Ok(()))
    }

    /// [`SentenceEncoder::after_transformer`], showing `observe` each module and its output.
    fn after_transformer_observed(
        &self,
        tokens: Tensor,
        input: &EncoderInput,
        mode: Mode,
        observe: &mut dyn FnMut(StageRef<'_>, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let mask = self.pooling_mask(input)?;
        let mut x = tokens;
        for stage in &self.stages {
            x = match stage {
                LoadedStage::Pooling(spec) => {
                    let tokens = &x;
                    spec.forward_with(tokens, &mask, &|| {
                        self.transformer.decoder_first(tokens, input, mode)
                    })?
                }
                vectors => vectors.on_vectors(x, mode)?,
            };
            observe(stage.as_ref(), &x)?;
        }
        Ok(x)
    }

    /// `text` encoded `k` times with dropout on, as unsupervised SimCSE sees it: one batch of `k`
    /// copies, each row with its own dropout masks from `seed`'s stream (no gradient kept).
    pub fn dropout_views(
        &self,
        text: &str,
        prompt: &Prompt,
        k: usize,
        seed: u64,
    ) -> Result<Vec<Vec<f32>>> {
        let tokenized = self.tokenize_prompted(&[text], prompt)?.remove(0);
        let rng = DropoutRng::new(seed);
        let mode = Mode {
            dropout: Some(&rng),
            grad: false,
            kernels: None,
            lookups: None,
            fresh: false,
        };
        let copies = vec![&tokenized; k];
        let input = self.batch(&copies)?;
        let mut out: Vec<Vec<f32>> = self
            .forward(&input, mode)?
            .to_dtype(DType::F32)?
            .to_vec2()?;
        if let Some(t) = self.info.truncate_dim {
            out.iter_mut().for_each(|v| v.truncate(t));
        }
        Ok(out)
    }

    /// One text through the whole pipeline, every step kept for the workshop's pipeline view:
    /// its tokens (pieces, ids, unknown and special ones marked, where it was cut), each token's
    /// vector and the weight it gets under the model's pooling, then the vector after each
    /// module. The last stage's vector is exactly what [`SentenceEncoder::encode_prompted`] gives.
    pub fn pipeline(&self, text: &str, prompt: &Prompt) -> Result<Pipeline> {
        let tokenized = self.tokenize_prompted(&[text], prompt)?.remove(0);
        let input = self.batch(&[&tokenized])?;
        let tokens = self.token_embeddings(&input, Mode::EVAL)?;
        let mask = self.pooling_mask(&input)?;
        let pooled_by = self.info.pooling.modes()[0];
        let weights: Option<Vec<f32>> = if pooled_by == PoolingMode::St5EncDec {
            None
        } else {
            let w = super::pooling::token_weights(pooled_by, &tokens, &mask)?;
            Some(w.squeeze(0)?.to_dtype(DType::F32)?.to_vec1()?)
        };
        let vectors: Vec<Vec<f32>> = tokens.squeeze(0)?.to_dtype(DType::F32)?.to_vec2()?;
        let pooled_mask: Vec<f32> = mask.squeeze(0)?.to_dtype(DType::F32)?.to_vec1()?;
        let pieces = self.tokenizer.pieces(&tokenized.ids);
        let rows = tokenized
            .ids
            .iter()
            .zip(pieces)
            .zip(vectors)
            .enumerate()
            .map(|(i, ((&id, piece), vector))| PipelineToken {
                piece,
                id,
                special: self.tokenizer.is_special(id) && !self.tokenizer.is_unknown(id),
                unknown: self.tokenizer.is_unknown(id),
                pooled: pooled_mask[i] > 0.0,
                weight: weights.as_ref().map(|w| w[i]),
                vector,
            })
            .collect();
        let mut stages = Vec::new();
        let out =
            self.after_transformer_observed(tokens, &input, Mode::EVAL, &mut |stage, x| {
                let name = match stage {
                    StageRef::Pooling(spec) => format!("pooling {spec}"),
                    StageRef::Dense(d) => format!(
                        "dense {}→{} {}",
                        d.config().in_features,
                        d.config().out_features,
                        d.activation().torch_name().rsplit('.').next().unwrap_or("")
                    ),
                    StageRef::Normalize => "normalize".to_string(),
                };
                stages.push((name, x.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?));
                Ok(())
            })?;
        if let Some(t) = self.info.truncate_dim {
            let mut v: Vec<f32> = out.squeeze(0)?.to_dtype(DType::F32)?.to_vec1()?;
            v.truncate(t);
            stages.push((format!("truncate_dim {t}"), v));
        }
        let dropped = if tokenized.truncated {
            let full = match self.prompt_text(prompt)? {
                Some(p) => format!("{p}{text}"),
                None => text.to_string(),
            };
            self.tokenizer
                .untruncated_len(&full)?
                .saturating_sub(tokenized.ids.len())
        } else {
            0
        };
        Ok(Pipeline {
            tokens: rows,
            truncated: tokenized.truncated,
            dropped,
            max_seq_length: self.info.max_seq_length,
            prompt_len: tokenized.prompt_len,
            pooling: pooled_by,
            stages,
        })
    }

    /// Embeds texts (with the model's default prompt, if it has one, as Python's `encode`) in
    /// batches sorted by length (less padding), returning vectors in input order.
    /// `progress(done, total)` is called after each batch.
    pub fn encode<S: AsRef<str>>(
        &self,
        texts: &[S],
        batch_size: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        self.encode_prompted(texts, &Prompt::ModelDefault, batch_size, progress)
    }

    /// [`SentenceEncoder::encode`] with `prompt` before each text.
    pub fn encode_prompted<S: AsRef<str>>(
        &self,
        texts: &[S],
        prompt: &Prompt,
        batch_size: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        let tokenized = self.tokenize_prompted(texts, prompt)?;
        self.encode_tokenized(&tokenized, batch_size, progress)
    }

    /// Pools with `spec` over the model's token vectors (skipping Dense and Normalize): the
    /// reference fixtures hold every pooling mode computed this way.
    pub fn encode_pooled<S: AsRef<str>>(
        &self,
        texts: &[S],
        spec: &PoolingSpec,
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>> {
        self.encode_with(texts, batch_size, &mut |_, _| {}, |input| {
            let tokens = self.token_embeddings(input, Mode::EVAL)?;
            Ok(spec.forward_with(&tokens, &input.mask, &|| {
                self.transformer.decoder_first(&tokens, input, Mode::EVAL)
            })?)
        })
    }

    /// The similarity of two texts under every pooling mode (but ST5-EncDec), from one pass of
    /// the transformer: its token vectors pooled each way, before any Dense or Normalize (which
    /// were trained for the model's own pooling). Cosine of the pooled vectors; the modes in
    /// [`PoolingMode::FROM_TOKENS`]'s order.
    pub fn pooling_table(
        &self,
        a: &str,
        b: &str,
        prompt: &Prompt,
    ) -> Result<Vec<(PoolingMode, f32)>> {
        let tokenized = self.tokenize_prompted(&[a, b], prompt)?;
        let input = self.batch(&tokenized.iter().collect::<Vec<_>>())?;
        let tokens = self.token_embeddings(&input, Mode::EVAL)?;
        PoolingMode::FROM_TOKENS
            .iter()
            .map(|&mode| {
                let v: Vec<Vec<f32>> = super::pooling::pool(mode, &tokens, &input.mask)?
                    .to_dtype(DType::F32)?
                    .to_vec2()?;
                let dot: f32 = v[0].iter().zip(&v[1]).map(|(x, y)| x * y).sum();
                let norm = |x: &[f32]| x.iter().map(|v| v * v).sum::<f32>().sqrt();
                Ok((mode, dot / (norm(&v[0]) * norm(&v[1])).max(1e-12)))
            })
            .collect()
    }

    /// Two texts under each of the model's prompts (and none): the labels (`none`, then the
    /// prompt names) and the model's similarity of `a` with prompt `i` to `b` with prompt `j`.
    pub fn prompt_table(&self, a: &str, b: &str) -> Result<(Vec<String>, Vec<Vec<f32>>)> {
        let mut labels = vec!["none".to_string()];
        labels.extend(self.info.prompts.keys().cloned());
        let vectors: Vec<Vec<Vec<f32>>> = labels
            .iter()
            .map(|l| {
                let prompt = if l == "none" {
                    Prompt::None
                } else {
                    Prompt::Name(l.clone())
                };
                self.encode_prompted(&[a, b], &prompt, 2, &mut |_, _| {})
            })
            .collect::<Result<_>>()?;
        let sim = self.info.similarity;
        let matrix = vectors
            .iter()
            .map(|va| vectors.iter().map(|vb| sim.score(&va[0], &vb[1])).collect())
            .collect();
        Ok((labels, matrix))
    }

    /// Token vectors of each text, without padding: `[text][token][hidden]`.
    pub fn encode_tokens<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<Vec<f32>>>> {
        let tokenized = self.tokenize(texts)?;
        tokenized
            .iter()
            .map(|t| {
                let input = self.batch(&[t])?;
                let out = self.token_embeddings(&input, Mode::EVAL)?.squeeze(0)?;
                Ok(out.to_dtype(DType::F32)?.to_vec2()?)
            })
            .collect()
    }

    fn encode_with<S: AsRef<str>>(
        &self,
        texts: &[S],
        batch_size: usize,
        progress: &mut dyn FnMut(usize, usize),
        run: impl Fn(&EncoderInput) -> Result<Tensor>,
    ) -> Result<Vec<Vec<f32>>> {
        let tokenized = self.tokenize_prompted(texts, &Prompt::ModelDefault)?;
        self.encode_tokenized_with(&tokenized, batch_size, progress, run)
    }

    /// [`SentenceEncoder::encode`] on texts tokenized already (by [`SentenceEncoder::tokenize`]).
    pub fn encode_tokenized(
        &self,
        tokenized: &[Tokenized],
        batch_size: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        self.encode_tokenized_with(tokenized, batch_size, progress, |input| {
            self.forward(input, Mode::EVAL)
        })
    }

    /// Runs `run` over batches sorted by length (less padding) and returns the rows (cut to
    /// `truncate_dim`) in input order; see [`super::tokenize::in_length_order`].
    fn encode_tokenized_with(
        &self,
        tokenized: &[Tokenized],
        batch_size: usize,
        progress: &mut dyn FnMut(usize, usize),
        run: impl Fn(&EncoderInput) -> Result<Tensor>,
    ) -> Result<Vec<Vec<f32>>> {
        super::tokenize::in_length_order(tokenized, batch_size, progress, |items| {
            let mut rows = run(&self.batch(items)?)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            if let Some(t) = self.info.truncate_dim {
                rows.iter_mut().for_each(|v| v.truncate(t));
            }
            Ok(rows)
        })
    }
}

/// The refusal of ST5-EncDec pooling for a model without a T5 decoder.
fn no_decoder(model_type: &str) -> ModelError {
    ModelError::Invalid(format!(
        "st5_encdec pooling needs a full T5 checkpoint with its decoder (decoder.block.*); \
         this `{model_type}` model has none"
    ))
}
