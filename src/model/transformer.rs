//! The seam between the sentence pipeline and a transformer family: token ids in, token vectors
//! out, in evaluation or training mode. A family is one module that implements [`Transformer`]
//! (`bert/` for BERT, RoBERTa and XLM-RoBERTa, with its fast CPU paths); `families.rs` picks the
//! family by `config.json`'s `model_type`.

use std::any::Any;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

pub use super::layers::RowGrad;
use super::layers::{DropoutRng, Linear, LinearKernels, Mode};

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
pub struct WeightGrads {
    /// Whole gradients, laid out as their weights, each with the sum of its squares where the
    /// product that made it summed them.
    pub dense: Vec<(Tensor, Vec<f32>, Option<f64>)>,
    /// Gradients of lookup tables that only the batch's rows received.
    pub rows: Vec<(Tensor, RowGrad)>,
}

impl WeightGrads {
    pub fn push(&mut self, weight: &Tensor, grad: Vec<f32>) {
        self.dense.push((weight.clone(), grad, None));
    }

    /// [`WeightGrads::push`] of a gradient whose sum of squares is known.
    pub fn push_with_squares(&mut self, weight: &Tensor, grad: Vec<f32>, squares: f64) {
        self.dense.push((weight.clone(), grad, Some(squares)));
    }

    pub fn push_rows(&mut self, weight: &Tensor, grad: RowGrad) {
        self.rows.push((weight.clone(), grad));
    }
}

/// What [`Transformer::linear_kernels`] hands out: a family's kernel settings, its linear layers
/// (whose prepared weights a change of settings drops) and its device.
pub struct KernelSettings<'a> {
    pub kernels: &'a mut LinearKernels,
    pub linears: Vec<&'a Linear>,
    pub device: &'a Device,
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
    /// `[b, hidden]`: the vector of token `at[r]` of each sentence `r` (below its length), for
    /// pooling that reads one token (CLS, last token). Where this pass can, the last layer runs
    /// past its keys and values for those tokens alone; `None` where it cannot (the caller
    /// runs [`Transformer::forward`] and picks).
    fn forward_at(
        &self,
        _input: &EncoderInput,
        _mode: Mode,
        _at: &[usize],
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(None)
    }
    /// Whether [`Transformer::forward_at`] runs the last layer for the picked tokens alone on
    /// the CPU (for `info`).
    fn picks_pooled_token(&self) -> bool {
        false
    }
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
    /// [`Transformer::forward_recorded`] giving the vector of token `at[r]` of each sentence
    /// alone, `[b, hidden]` (as [`Transformer::forward_at`]); [`Transformer::backward`] then
    /// takes that vector's gradient. `None` where the family has no such pass.
    fn forward_recorded_at(
        &self,
        _input: &EncoderInput,
        _dropout: Option<&DropoutRng>,
        _at: &[usize],
    ) -> candle_core::Result<Option<(Tensor, Tape)>> {
        Ok(None)
    }
    /// From the gradient of the token vectors of a recorded pass to the gradient of every weight.
    fn backward(&self, _tape: Tape, _grad_tokens: &[f32]) -> candle_core::Result<WeightGrads> {
        candle_core::bail!("{} has no hand-written backward pass", self.model_type())
    }
    /// A family whose CPU inference runs its composition on the kernels: those settings, its
    /// linear layers and its device, through which the default [`Transformer::set_precision`]
    /// and [`Transformer::set_trainable`] work. `None` where the family has no such path.
    fn linear_kernels(&mut self) -> Option<KernelSettings<'_>> {
        None
    }
    /// Sets the precision of inference (`--precision`); refused where the family has no such
    /// path. Training always runs in float32.
    fn set_precision(&mut self, precision: super::Precision) -> Result<(), String> {
        let name = self.model_type().to_string();
        match self.linear_kernels() {
            Some(KernelSettings {
                kernels,
                linears,
                device,
            }) => {
                *kernels = kernels.with_precision(precision, device, linears)?;
                Ok(())
            }
            None if precision == super::Precision::F32 => Ok(()),
            None => Err(format!(
                "--precision {precision} is not available for {name}"
            )),
        }
    }
    /// The weights are about to change (a training session): drop every copy made of them for
    /// inference (float32 packed, bf16, int8), make none from now on, and return to float32.
    /// Inference then runs on the live weights.
    fn set_trainable(&mut self) {
        if let Some(KernelSettings {
            kernels, linears, ..
        }) = self.linear_kernels()
        {
            *kernels = kernels.trainable(linears);
        }
    }
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
    /// What runs on the CPU, in words (for `sbert-tui info`): the family's inference and
    /// training paths.
    fn cpu_paths(&self) -> &'static str {
        "inference: the composition with its linear layers, norms, activations and attention \
         on the kernels, on the real tokens alone; training: candle's autograd, its linear \
         layers, norms, activations, attention and their gradients on the kernels, on the real \
         tokens alone"
    }
    /// For tests that look inside one family.
    fn as_any(&self) -> &dyn Any;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dense gradient of a `table_rows × width` table, filled token by token.
    fn dense(ids: &[usize], g: &[f32], width: usize, table_rows: usize) -> Vec<f32> {
        let mut out = vec![0f32; table_rows * width];
        for (&id, g) in ids.iter().zip(g.chunks_exact(width)) {
            for (a, v) in out[id * width..(id + 1) * width].iter_mut().zip(g) {
                *a += v;
            }
        }
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn gathered_rows_are_the_dense_gradient() {
        let (width, table) = (3, 10);
        let ids = [7, 2, 7, 0, 2, 7];
        let g: Vec<f32> = (0..ids.len() * width)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let r = RowGrad::gather(&ids, &g, width);
        assert_eq!(r.rows, [0, 2, 7]);
        assert_eq!(
            bits(&r.to_dense(table)),
            bits(&dense(&ids, &g, width, table))
        );
        // Row 7 sums three contributions in order.
        let want: Vec<f32> = (0..width)
            .map(|c| 0.0 + g[c] + g[2 * width + c] + g[5 * width + c])
            .collect();
        assert_eq!(bits(r.row(2)), bits(&want));
    }

    #[test]
    fn adding_row_gradients_adds_the_dense_ones() {
        let (width, table) = (2, 12);
        let (ids_a, ids_b) = ([5, 1, 9], [11, 5, 0, 3]);
        let ga: Vec<f32> = (0..6).map(|i| i as f32 + 0.5).collect();
        let gb: Vec<f32> = (0..8).map(|i| -(i as f32) * 0.25).collect();
        let mut a = RowGrad::gather(&ids_a, &ga, width);
        a.add(&RowGrad::gather(&ids_b, &gb, width));
        assert_eq!(a.rows, [0, 1, 3, 5, 9, 11]);
        let want: Vec<f32> = dense(&ids_a, &ga, width, table)
            .iter()
            .zip(dense(&ids_b, &gb, width, table))
            .map(|(x, y)| x + y)
            .collect();
        assert_eq!(a.to_dense(table), want);
    }
}
