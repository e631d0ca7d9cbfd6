//! The seam between the sentence pipeline and a transformer family: token ids in, token vectors
//! out, in evaluation or training mode. A family is one module that implements [`Transformer`]
//! (`bert/` for BERT, RoBERTa and XLM-RoBERTa, with its fast CPU paths); `families.rs` picks the
//! family by `config.json`'s `model_type`.

use std::any::Any;

use candle_core::Tensor;
use candle_nn::VarMap;

use super::layers::{DropoutRng, Mode};

/// Token ids of a padded batch, ready for the encoder.
pub struct EncoderInput {
    /// `[b, seq]` u32.
    pub ids: Tensor,
    /// `[b, seq]` u32.
    pub type_ids: Tensor,
    /// `[b, seq]` f32, 1 for real tokens.
    pub mask: Tensor,
    /// Real tokens per row (right padding).
    pub lengths: Vec<usize>,
    /// Tokens at the start of each row that are a prompt's.
    pub prompt_lens: Vec<usize>,
}

/// What a family's recorded forward pass keeps for its hand-written backward pass; only the
/// family that made it reads it.
pub struct Tape(pub Box<dyn Any + Send>);

/// Gradients of a transformer's weights, each with the weight it belongs to.
#[derive(Default)]
pub struct WeightGrads(pub Vec<(Tensor, Vec<f32>)>);

impl WeightGrads {
    pub fn push(&mut self, weight: &Tensor, grad: Vec<f32>) {
        self.0.push((weight.clone(), grad));
    }
}

/// A transformer family, as the sentence pipeline uses it.
pub trait Transformer: Send + Sync {
    /// `config.json`'s `model_type`.
    fn model_type(&self) -> &str;
    fn hidden_size(&self) -> usize;
    fn layers(&self) -> usize;
    /// Largest number of tokens (special tokens included) the model's positions allow.
    fn max_tokens(&self) -> usize;
    /// Every trainable weight, under its PyTorch name.
    fn varmap(&self) -> &VarMap;
    /// Checkpoint names no module asked for (warned about, not fatal).
    fn unexpected_weights(&self) -> &[String];
    /// `[b, seq]` ids -> `[b, seq, hidden]` token vectors; the family's fast path where it has
    /// one for this mode and device.
    fn forward(&self, input: &EncoderInput, mode: Mode) -> candle_core::Result<Tensor>;
    /// The forward pass as a composition of candle operations (differentiable; any device): the
    /// reference every fast path is tested against.
    fn forward_composed(&self, input: &EncoderInput, mode: Mode) -> candle_core::Result<Tensor>;
    /// A training-mode forward pass that records a [`Tape`] for a hand-written backward pass, or
    /// `None` where the family has none (candle's autograd trains it then).
    fn forward_recorded(
        &self,
        _input: &EncoderInput,
        _dropout: Option<&DropoutRng>,
    ) -> candle_core::Result<Option<(Tensor, Tape)>> {
        Ok(None)
    }
    /// From the gradient of the token vectors of a recorded pass to the gradient of every weight.
    fn backward(&self, _tape: Tape, _grad_tokens: &[f32]) -> candle_core::Result<WeightGrads> {
        candle_core::bail!("{} has no hand-written backward pass", self.model_type())
    }
    /// Sets the precision of inference (`--precision`); refused where the family has no such
    /// path. Training always runs in float32.
    fn set_precision(&mut self, precision: super::Precision) -> Result<(), String> {
        match precision {
            super::Precision::F32 => Ok(()),
            p => Err(format!(
                "--precision {p} covers the BERT family (BERT, RoBERTa, XLM-RoBERTa, DistilBERT, \
                 MPNet) on the CPU, not {}",
                self.model_type()
            )),
        }
    }
    /// The weights are about to change (a training session): drop every copy made of them for
    /// inference (float32 packed, bf16, int8), make none from now on, and return to float32.
    /// Inference then runs on the live weights.
    fn set_trainable(&mut self) {}
    /// True when the model has a decoder that [`Transformer::decoder_first`] runs.
    fn has_decoder(&self) -> bool {
        false
    }
    /// Sentence-T5's ST5-EncDec: the decoder's first output `[b, hidden]`, fed the encoder's
    /// token vectors `tokens` of `input`.
    fn decoder_first(
        &self,
        _tokens: &Tensor,
        _input: &EncoderInput,
        _mode: Mode,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("`{}` has no decoder", self.model_type())
    }
    /// For tests that look inside one family.
    fn as_any(&self) -> &dyn Any;
}
