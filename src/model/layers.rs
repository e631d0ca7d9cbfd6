//! Small building blocks shared by the encoders: linear, layer norm, embedding, dropout.
//!
//! Each takes a [`Mode`]. In evaluation mode the weights are detached from the autograd graph and
//! the fused kernels (which have no backward pass in candle) are used; in training mode the
//! differentiable compositions are used and dropout draws masks from our own seeded generator.
//! An inference pass on the CPU may ask for the CPU's own kernels ([`Mode::kernels`], set by
//! [`LinearKernels`]): linear layers then run on weights prepared once for the precision chosen,
//! and RMS norm, GELU and SiLU as vectorised passes over rows. A training pass on the CPU asks
//! for them too: the linear layers, norms, softmax, gated activations and rotary positions then
//! run as candle operations of our own with their backward passes on the kernels
//! (`cpu::autograd`). Either pass runs on the batch's real tokens alone, attention included
//! ([`Packing`]).

use std::sync::{Arc, Mutex};

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::Precision;
use super::cpu::prepared::{self, Data, PreparedWeight};

/// How a forward pass runs.
#[derive(Clone, Copy)]
pub struct Mode<'a> {
    /// Dropout is active, with masks from this generator; `None` means no dropout.
    pub dropout: Option<&'a DropoutRng>,
    /// Keep the autograd graph: a backward pass will follow.
    pub grad: bool,
    /// Run the linear layers on the CPU's product kernels at this precision: set by a family's
    /// `forward` ([`LinearKernels`]) on the CPU, never in the reference composition. In
    /// inference on weights prepared once; in training (float32 only) as candle operations with
    /// their backward passes on the kernels ([`Linear::forward_mode`]; the norms, softmax, gated
    /// activations and rotary positions likewise, `cpu::autograd`), on the batch's real tokens
    /// ([`Packing`]).
    pub kernels: Option<Precision>,
    /// A training pass on the CPU that collects its table lookups, so that their gradients are
    /// taken as the rows the batch reached ([`Embedding::forward`]).
    pub lookups: Option<&'a Lookups>,
    /// The weights change between passes (a model being trained, evaluated between steps): an
    /// inference pass on the kernels packs them for each product and keeps nothing.
    pub fresh: bool,
}

impl<'a> Mode<'a> {
    /// Inference: no dropout, no graph.
    pub const EVAL: Mode<'static> = Mode {
        dropout: None,
        grad: false,
        kernels: None,
        lookups: None,
        fresh: false,
    };

    /// Training with dropout on.
    pub fn train(rng: &'a DropoutRng) -> Self {
        Mode {
            dropout: Some(rng),
            grad: true,
            kernels: None,
            lookups: None,
            fresh: false,
        }
    }

    /// Training with dropout off (deterministic; for checks against a reference).
    pub fn train_without_dropout() -> Mode<'static> {
        Mode {
            dropout: None,
            grad: true,
            kernels: None,
            lookups: None,
            fresh: false,
        }
    }

    /// This pass with its linear layers on the CPU kernels where `device` is the CPU: a
    /// training pass in float32; an inference pass (no graph, no dropout) at `precision` on
    /// weights prepared once where `prepare`, else in float32 on the live weights ([`Mode::fresh`]).
    pub fn with_kernels(self, precision: Precision, device: &Device, prepare: bool) -> Self {
        let (kernels, fresh) = if !device.is_cpu() || (!self.grad && self.dropout.is_some()) {
            (None, false)
        } else if self.grad {
            (Some(Precision::F32), false)
        } else if prepare {
            (Some(precision), false)
        } else {
            (Some(Precision::F32), true)
        };
        Mode {
            kernels,
            fresh,
            ..self
        }
    }

    /// This pass collecting its table lookups into `lookups`.
    pub fn with_lookups(self, lookups: &'a Lookups) -> Self {
        Mode {
            lookups: Some(lookups),
            ..self
        }
    }

    /// The parameter as seen by this pass: detached in evaluation so no graph is built.
    pub fn param(&self, t: &Tensor) -> Tensor {
        if self.grad { t.clone() } else { t.detach() }
    }

    /// Inverted dropout with probability `p` when dropout is on; identity otherwise.
    pub fn dropout(&self, x: &Tensor, p: f64) -> candle_core::Result<Tensor> {
        match self.dropout {
            Some(rng) if p > 0.0 => x.broadcast_mul(&rng.mask(x.dims(), p, x.device())?),
            _ => Ok(x.clone()),
        }
    }

    pub fn softmax_last_dim(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if on_trained_kernels(x, *self) {
            super::cpu::autograd::softmax_last_dim(x)
        } else if self.grad {
            candle_nn::ops::softmax(x, D::Minus1)
        } else {
            candle_nn::ops::softmax_last_dim(x)
        }
    }
}

/// The real tokens of a right-padded batch `[b, seq]`. A pass on the CPU kernels (training, or
/// inference at any precision) runs its row operations (norms, linear layers, activations,
/// dropout) on these alone, `[tokens, width]`, and attention too where the family calls
/// [`Packing::attention`] (a composed attention unpacks to the padded layout and back): random
/// batches of STS-B sentences are more than half padding, which the padded layout multiplies
/// through every product. The real tokens get the same values and gradients either way (padding
/// keys are masked, padding queries read by nothing), and dropout the same masks
/// ([`Packing::dropout`]). In other passes (the reference composition, GPUs), and for a batch
/// without padding, the layout stays padded and every method is the identity.
pub struct Packing {
    /// Row `i * seq + j` (`[b * seq]` flattened) of each real token, in order; `None`: padded.
    index: Option<Arc<Vec<u32>>>,
    b: usize,
    seq: usize,
    /// Each sentence's tokens where the rows are sentence after sentence with no padding
    /// between them (packed, or a batch without padding) in a pass on the kernels.
    lengths: Option<Arc<Vec<usize>>>,
}

impl Packing {
    /// The padded layout, whatever the pass.
    pub fn padded() -> Self {
        Self {
            index: None,
            b: 0,
            seq: 0,
            lengths: None,
        }
    }

    /// For a pass over token `ids` (`[b, seq]`) whose rows have `lengths` real tokens.
    pub fn new(ids: &Tensor, lengths: &[usize], mode: Mode) -> candle_core::Result<Self> {
        let (b, seq) = ids.dims2()?;
        let real: usize = lengths.iter().map(|&l| l.min(seq)).sum();
        let packs = mode.kernels.is_some() && ids.device().is_cpu();
        let index = (packs && real < b * seq).then(|| {
            Arc::new(
                lengths
                    .iter()
                    .enumerate()
                    .flat_map(|(i, &len)| (0..len.min(seq)).map(move |j| (i * seq + j) as u32))
                    .collect(),
            )
        });
        let lengths = packs.then(|| Arc::new(lengths.iter().map(|&l| l.min(seq)).collect()));
        Ok(Self {
            index,
            b,
            seq,
            lengths,
        })
    }

    /// Whether [`Packing::attention`] runs (rather than returning `None`) for the pass's rows
    /// `x`.
    pub fn attends_on_kernels(&self, x: &Tensor, mode: Mode) -> bool {
        self.lengths.is_some() && on_cpu_kernels(x, mode)
    }

    /// Self-attention of the pass's rows `qkv` (`[tokens, 3 * heads * d]`, each token's
    /// `[q | k | v]`, q and k not yet rotated where positions rotate them) on the CPU kernels
    /// ([`super::cpu::autograd::packed_attention`]), where this pass runs there (training or
    /// inference); `None` elsewhere, where the caller composes attention from candle
    /// operations. The attention dropout mask is the one the padded layout draws (`[b, heads,
    /// seq, seq]`), at the real tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        qkv: &Tensor,
        positions: super::cpu::autograd::Positions,
        heads: usize,
        scale: f64,
        window: Option<(usize, usize)>,
        mode: Mode,
        dropout: f64,
    ) -> candle_core::Result<Option<Tensor>> {
        let Some(lengths) = &self.lengths else {
            return Ok(None);
        };
        if !on_cpu_kernels(qkv, mode) {
            return Ok(None);
        }
        let mask = match mode.dropout {
            Some(rng) if dropout > 0.0 => {
                let seq = self.seq;
                let all = rng.mask_values(self.b * heads * seq * seq, dropout)?;
                let mut mask = Vec::with_capacity(lengths.iter().map(|l| heads * l * l).sum());
                for (s, &len) in lengths.iter().enumerate() {
                    for head in 0..heads {
                        for i in 0..len {
                            let at = ((s * heads + head) * seq + i) * seq;
                            mask.extend_from_slice(&all[at..at + len]);
                        }
                    }
                }
                mask
            }
            _ => Vec::new(),
        };
        let spec = super::cpu::autograd::PackedAttention {
            lengths: lengths.clone(),
            heads,
            scale: scale as f32,
            window,
            dropout: Arc::new(mask),
            queries: Arc::new(Vec::new()),
        };
        // Without padding the rows keep the batch's shape, `[b, seq, 3h]`.
        let mut dims = qkv.dims().to_vec();
        let width = dims.pop().unwrap_or(0);
        let ctx = super::cpu::autograd::packed_attention(&rows(qkv)?, positions, spec)?;
        dims.push(width / 3);
        ctx.reshape(dims).map(Some)
    }

    /// Whether this pass can run a last layer for one token of each sentence alone
    /// ([`Packing::attention_at`], [`Packing::pick`]): a pass on the kernels (`x` its rows, or a
    /// tensor of their dtype and device) that draws no dropout mask (inference, or a model
    /// whose every dropout probability, `dropout` the largest, is 0: a mask drawn for fewer rows
    /// would move the stream the padded layout draws from).
    pub fn picks(&self, x: &Tensor, mode: Mode, dropout: f64) -> bool {
        self.attends_on_kernels(x, mode) && (mode.dropout.is_none() || dropout <= 0.0)
    }

    /// [`Packing::attention`] of the query `at[r]` of each sentence `r` alone (over all its
    /// keys), without attention dropout: `[b, heads * d]`, those tokens' rows of the whole
    /// attention, differentiable. Only in a pass that [`Packing::picks`].
    #[allow(clippy::too_many_arguments)]
    pub fn attention_at(
        &self,
        qkv: &Tensor,
        positions: super::cpu::autograd::Positions,
        heads: usize,
        scale: f64,
        window: Option<(usize, usize)>,
        mode: Mode,
        at: &[usize],
    ) -> candle_core::Result<Tensor> {
        let Some(lengths) = self.lengths.as_ref().filter(|_| self.picks(qkv, mode, 0.0)) else {
            candle_core::bail!("attention of picked queries outside a pass on the kernels");
        };
        let spec = super::cpu::autograd::PackedAttention {
            lengths: lengths.clone(),
            heads,
            scale: scale as f32,
            window,
            dropout: Arc::new(Vec::new()),
            queries: Arc::new(at.to_vec()),
        };
        super::cpu::autograd::packed_attention(&rows(qkv)?, positions, spec)
    }

    /// Row `at[r]` of each sentence `r` among the pass's rows `x`, `[b, width]`. Only where the
    /// rows are sentence after sentence ([`Packing::picks`]).
    pub fn pick(&self, x: &Tensor, at: &[usize]) -> candle_core::Result<Tensor> {
        let Some(lengths) = &self.lengths else {
            candle_core::bail!("rows picked from a padded pass");
        };
        if at.len() != lengths.len() {
            candle_core::bail!("{} tokens picked for {} sentences", at.len(), lengths.len());
        }
        let mut first = 0;
        let mut index = Vec::with_capacity(at.len());
        for (&len, &i) in lengths.iter().zip(at) {
            if i >= len {
                candle_core::bail!("token {i} picked from a sentence of {len} tokens");
            }
            index.push((first + i) as u32);
            first += len;
        }
        let index = Tensor::from_vec(index, at.len(), x.device())?;
        rows(x)?.index_select(&index, 0)
    }

    /// `x` (`[b, seq, width]`) as the pass's rows: `[tokens, width]` where packed.
    pub fn pack(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.index {
            None => Ok(x.clone()),
            Some(index) => {
                let w = x.dim(D::Minus1)?;
                super::cpu::autograd::gather_rows(&x.reshape((self.b * self.seq, w))?, index)
            }
        }
    }

    /// The pass's rows `x` as `[b, seq, width]`, zeros at the padding where packed.
    pub fn unpack(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.index {
            None => Ok(x.clone()),
            Some(index) => {
                let w = x.dim(D::Minus1)?;
                super::cpu::autograd::scatter_rows(x, index, self.b * self.seq)?
                    .reshape((self.b, self.seq, w))
            }
        }
    }

    /// [`Mode::dropout`] of the pass's rows `x`: where packed, the real tokens' rows of the mask
    /// the padded layout draws (the same stream, the same values at every real token).
    pub fn dropout(&self, mode: Mode, x: &Tensor, p: f64) -> candle_core::Result<Tensor> {
        match (&self.index, mode.dropout) {
            (Some(index), Some(rng)) if p > 0.0 => {
                let w = x.dim(D::Minus1)?;
                let all = rng.mask_values(self.b * self.seq * w, p)?;
                let mut mask = Vec::with_capacity(index.len() * w);
                for &r in index.iter() {
                    let r = r as usize;
                    mask.extend_from_slice(&all[r * w..(r + 1) * w]);
                }
                x * Tensor::from_vec(mask, x.shape(), x.device())?
            }
            _ => mode.dropout(x, p),
        }
    }
}

/// Seeded generator for dropout masks, so a run is reproducible on CPU.
pub struct DropoutRng(Mutex<ChaCha8Rng>);

impl DropoutRng {
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(ChaCha8Rng::seed_from_u64(seed)))
    }

    /// Where the generator is in its stream, for checkpoints.
    pub fn position(&self) -> u128 {
        self.0.lock().expect("dropout rng poisoned").get_word_pos()
    }

    /// Moves the generator to a saved position (the seed must be the same).
    pub fn set_position(&self, pos: u128) {
        self.0
            .lock()
            .expect("dropout rng poisoned")
            .set_word_pos(pos)
    }

    /// A mask of `0` (dropped, probability `p`) and `1 / (1 - p)` (kept).
    ///
    /// On a GPU the mask travels as bytes (0 or 1) and is scaled there: a quarter of the copy
    /// of a float mask (a MiniLM step at batch 64 draws about 13 million values), the same
    /// values.
    pub fn mask(&self, dims: &[usize], p: f64, device: &Device) -> candle_core::Result<Tensor> {
        let n = dims.iter().product();
        if device.is_cpu() {
            Tensor::from_vec(self.mask_values(n, p)?, dims, device)
        } else {
            self.mask_from_bytes(dims, p, device)
        }
    }

    /// [`DropoutRng::mask`] drawn as bytes and scaled on `device`.
    fn mask_from_bytes(
        &self,
        dims: &[usize],
        p: f64,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let keep = (1.0 / (1.0 - p)) as f32;
        let n = dims.iter().product();
        Tensor::from_vec(self.draw(n, p, 0u8, 1u8)?, dims, device)?
            .to_dtype(DType::F32)?
            .affine(f64::from(keep), 0.0)
    }

    /// The values of [`DropoutRng::mask`], drawn the same way (so either form moves the stream
    /// alike).
    pub fn mask_values(&self, n: usize, p: f64) -> candle_core::Result<Vec<f32>> {
        let keep = (1.0 / (1.0 - p)) as f32;
        self.draw(n, p, 0.0, keep)
    }

    /// `n` values, each `dropped` with probability `p` and `kept` otherwise.
    fn draw<T: Copy + Send + Sync>(
        &self,
        n: usize,
        p: f64,
        dropped: T,
        kept: T,
    ) -> candle_core::Result<Vec<T>> {
        if !(0.0..1.0).contains(&p) {
            candle_core::bail!("dropout probability must be in [0, 1), got {p}");
        }
        let p = p as f32;
        let mut rng = self.0.lock().expect("dropout rng poisoned");
        // Every value takes one 32-bit word of the stream, so a block of values can be drawn
        // from a copy of the generator moved to the block's first word: the same values as one
        // serial draw, on all threads (a BERT-base step draws about 14 million).
        const BLOCK: usize = 1 << 15;
        let start = rng.get_word_pos();
        let mut out = vec![dropped; n];
        out.par_chunks_mut(BLOCK).enumerate().for_each(|(i, part)| {
            let mut rng = rng.clone();
            rng.set_word_pos(start + (i * BLOCK) as u128);
            for v in part {
                *v = if rng.random::<f32>() < p {
                    dropped
                } else {
                    kept
                };
            }
        });
        rng.set_word_pos(start + n as u128);
        Ok(out)
    }
}

/// `y = x W^T + b`, weights named `weight` and `bias` as in `torch.nn.Linear`.
#[derive(Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// A feed-forward block's second product (see [`PreparedWeight::feed_forward_output`]).
    feed_forward_output: bool,
    /// The weight prepared for the CPU kernels at a precision, made at the first pass that
    /// asks for them ([`Mode::kernels`]).
    prepared: Mutex<Option<(Precision, Arc<PreparedWeight>)>>,
}

impl Clone for Linear {
    fn clone(&self) -> Self {
        Self {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            feed_forward_output: self.feed_forward_output,
            prepared: Mutex::new(self.prepared.lock().expect("not poisoned").clone()),
        }
    }
}

impl Linear {
    /// From weights already at hand (`weight` is `[out, in]`).
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            feed_forward_output: false,
            prepared: Mutex::new(None),
        }
    }

    pub fn load(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> candle_core::Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self::new(weight, bias))
    }

    /// Marks a feed-forward block's second product, whose input is the activation's output
    /// (in int8 it may run in bf16; [`PreparedWeight::feed_forward_output`]).
    pub fn feed_forward_output(mut self) -> Self {
        self.feed_forward_output = true;
        self
    }

    pub fn forward_mode(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        match mode.kernels {
            Some(_) if mode.fresh && on_kernels(x, mode) => self.forward_fresh(x),
            Some(precision) if on_kernels(x, mode) => self.forward_kernels(x, precision),
            Some(Precision::F32) if mode.grad && is_cpu_f32(x) && is_cpu_f32(&self.weight) => {
                self.forward_trained(x)
            }
            _ => self.forward(x, mode.grad),
        }
    }

    /// `[out, in]`, PyTorch's layout.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Drops the prepared weight (the weights are about to change, or the precision did).
    pub fn drop_prepared(&self) {
        *self.prepared.lock().expect("not poisoned") = None;
    }

    /// The weight prepared for `precision`'s kernel, made now if it is not yet; `None` in
    /// float32 where this CPU's products do not run on prepared weights.
    fn prepared(&self, precision: Precision) -> candle_core::Result<Option<Arc<PreparedWeight>>> {
        if !PreparedWeight::worth_it(precision) {
            return Ok(None);
        }
        let mut slot = self.prepared.lock().expect("not poisoned");
        if let Some((p, w)) = slot.as_ref()
            && *p == precision
        {
            return Ok(Some(w.clone()));
        }
        let (n, k) = self.weight.dims2()?;
        let data = Data::of(&self.weight)?;
        let w = Arc::new(if self.feed_forward_output {
            PreparedWeight::feed_forward_output(precision, data.get(), n, k)
        } else {
            PreparedWeight::new(precision, data.get(), n, k)
        });
        *slot = Some((precision, w.clone()));
        Ok(Some(w))
    }

    /// [`Linear::forward`] of an inference pass on the CPU's product kernels at `precision`
    /// (the BERT family's fused path runs the same products).
    fn forward_kernels(&self, x: &Tensor, precision: Precision) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let (n, k) = self.weight.dims2()?;
        let rows: usize = dims[..dims.len() - 1].iter().product();
        if dims.last() != Some(&k) {
            candle_core::bail!(
                "linear layer: input width {:?}, weight [{n}, {k}]",
                dims.last()
            );
        }
        let prepared = self.prepared(precision)?;
        let x = x.contiguous()?;
        let mut out = vec![0f32; rows * n];
        {
            let (x, w) = (Data::of(&x)?, Data::of(&self.weight)?);
            prepared::product(
                &mut out,
                n,
                x.get(),
                rows,
                k,
                w.get(),
                n,
                prepared.as_deref(),
            );
        }
        if let Some(b) = &self.bias {
            super::cpu::kernels::add_bias(&mut out, Data::of(b)?.get());
        }
        let mut out_dims = dims;
        *out_dims.last_mut().expect("at least one dimension") = n;
        Tensor::from_vec(out, out_dims, x.device())
    }

    /// [`Linear::forward`] of a training pass on the CPU: the product and its backward pass on
    /// the kernels (`cpu::autograd`), the bias added by candle.
    fn forward_trained(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.on_rows(x, |x| super::cpu::autograd::linear(x, &self.weight))
    }

    /// [`Linear::forward`] of an inference pass on the kernels on weights that change between
    /// passes ([`Mode::fresh`]): packed for this product only, as in training.
    fn forward_fresh(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.on_rows(x, |x| {
            let (rows, k) = x.dims2()?;
            let n = self.weight.dim(0)?;
            let y = {
                let (x, w) = (Data::of(x)?, Data::of(&self.weight)?);
                super::cpu::packed::product_wt_fresh(x.get(), rows, k, w.get(), n)
            };
            Tensor::from_vec(y, (rows, n), x.device())
        })
    }

    /// `product` (`[rows, in]` -> `[rows, out]`) on `x`'s rows, plus the bias, in `x`'s shape.
    fn on_rows(
        &self,
        x: &Tensor,
        product: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let (n, k) = self.weight.dims2()?;
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = product(&x.reshape((rows, k))?.contiguous()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("at least one dimension") = n;
        y.reshape(out_dims)
    }

    /// Works on any leading shape: `[..., in]` -> `[..., out]`.
    pub fn forward(&self, x: &Tensor, grad: bool) -> candle_core::Result<Tensor> {
        let (w, b) = if grad {
            (self.weight.clone(), self.bias.clone())
        } else {
            (self.weight.detach(), self.bias.as_ref().map(Tensor::detach))
        };
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().expect("at least one dimension");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = x.reshape((rows, in_dim))?.matmul(&w.t()?)?;
        let y = match b {
            Some(b) => y.broadcast_add(&b)?,
            None => y,
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("at least one dimension") = w.dim(0)?;
        y.reshape(out_dims)
    }
}

/// Rows `x` (`[tokens, width]`, or `[b, seq, width]` without padding) as `[tokens, width]`.
fn rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let width = x.dim(D::Minus1)?;
    x.reshape((x.elem_count() / width.max(1), width))
}

/// Whether `x`'s next operation runs on the CPU kernels, in a pass of either kind that asked
/// for them, on a float32 CPU tensor.
fn on_cpu_kernels(x: &Tensor, mode: Mode) -> bool {
    mode.kernels.is_some() && is_cpu_f32(x)
}

/// [`on_cpu_kernels`] in an inference pass.
fn on_kernels(x: &Tensor, mode: Mode) -> bool {
    !mode.grad && on_cpu_kernels(x, mode)
}

/// [`on_cpu_kernels`] in a training pass: the operation has its backward pass there
/// (`cpu::autograd`).
fn on_trained_kernels(x: &Tensor, mode: Mode) -> bool {
    mode.grad && on_cpu_kernels(x, mode)
}

fn is_cpu_f32(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// A copy of the CPU tensor `x` with `f` applied to its rows (of its last dimension), in blocks
/// of rows on the kernels' threads.
fn map_rows(x: &Tensor, f: impl Fn(&mut [f32]) + Sync) -> candle_core::Result<Tensor> {
    const ROWS_PER_TASK: usize = 16;
    let width = x.dim(D::Minus1)?.max(1);
    let x = x.contiguous()?;
    let mut data = Data::of(&x)?.get().to_vec();
    if data.len() < 2 * ROWS_PER_TASK * width || super::cpu::kernels::threads() < 2 {
        f(&mut data);
    } else {
        data.par_chunks_mut(ROWS_PER_TASK * width).for_each(&f);
    }
    Tensor::from_vec(data, x.dims(), x.device())
}

/// How a family without a fused path runs on the CPU: its linear layers on the product kernels,
/// at the chosen precision in inference and in float32 in training (the rest stays candle's
/// composition).
#[derive(Debug, Clone, Copy)]
pub struct LinearKernels {
    precision: Precision,
    /// False once the model is being trained: inference then runs on the live weights.
    prepare: bool,
}

impl Default for LinearKernels {
    fn default() -> Self {
        Self {
            precision: Precision::F32,
            prepare: true,
        }
    }
}

impl LinearKernels {
    /// `mode` with the linear layers on the kernels where it is an inference pass on the CPU.
    pub fn mode<'a>(&self, mode: Mode<'a>, device: &Device) -> Mode<'a> {
        mode.with_kernels(self.precision, device, self.prepare)
    }

    /// Runs `pass` (a family's forward pass, given `mode` as [`LinearKernels::mode`] makes it):
    /// an inference pass on the kernels on their first pool thread, as the BERT family's fused
    /// pass does, so that its products and row passes need no hand-over to the pool and back.
    pub fn run<'a, R: Send>(
        &self,
        mode: Mode<'a>,
        device: &Device,
        pass: impl Fn(Mode<'a>) -> R + Sync,
    ) -> R {
        let mode = self.mode(mode, device);
        if mode.kernels.is_none() || mode.grad {
            return pass(mode);
        }
        rayon::broadcast(|ctx| (ctx.index() == 0).then(|| pass(mode)))
            .swap_remove(0)
            .expect("the pool's first thread runs the pass")
    }

    /// `--precision` (the CPU only), dropping the weights `linears` had prepared for another.
    pub fn with_precision<'l>(
        self,
        precision: Precision,
        device: &Device,
        linears: impl IntoIterator<Item = &'l Linear>,
    ) -> Result<Self, String> {
        if precision != Precision::F32 && !device.is_cpu() {
            return Err(format!("--precision {precision} runs on the CPU only"));
        }
        linears.into_iter().for_each(Linear::drop_prepared);
        Ok(Self { precision, ..self })
    }

    /// The weights are about to change: float32 on the live weights from now on, and the
    /// weights `linears` had prepared dropped.
    pub fn trainable<'l>(self, linears: impl IntoIterator<Item = &'l Linear>) -> Self {
        linears.into_iter().for_each(Linear::drop_prepared);
        Self {
            precision: Precision::F32,
            prepare: false,
        }
    }
}

/// Layer normalisation over the last dimension (`weight` and `bias`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f64) -> candle_core::Result<Self> {
        Self::load_with_bias(vb, dim, eps, true)
    }

    /// A layer norm whose checkpoint may have no `bias` (ModernBERT's `norm_bias: false`): the
    /// bias is then a constant zero, not a weight.
    pub fn load_with_bias(
        vb: VarBuilder,
        dim: usize,
        eps: f64,
        bias: bool,
    ) -> candle_core::Result<Self> {
        let weight = vb.get(dim, "weight")?;
        let bias = if bias {
            vb.get(dim, "bias")?
        } else {
            Tensor::zeros(dim, weight.dtype(), weight.device())?
        };
        Ok(Self { weight, bias, eps })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        if on_trained_kernels(x, mode) {
            return super::cpu::autograd::layer_norm(x, &self.weight, &self.bias, self.eps);
        }
        if !mode.grad {
            // Fused kernel; no backward pass, so only in evaluation.
            return candle_nn::ops::layer_norm(
                &x.contiguous()?,
                &self.weight.detach(),
                &self.bias.detach(),
                self.eps as f32,
            );
        }
        let hidden = x.dim(D::Minus1)? as f64;
        let mean = (x.sum_keepdim(D::Minus1)? / hidden)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = (centred.sqr()?.sum_keepdim(D::Minus1)? / hidden)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Root-mean-square normalisation over the last dimension, scaled by `weight` (no mean, no bias):
/// T5's `T5LayerNorm`, Qwen3's `Qwen3RMSNorm`. Computed in float32.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            eps,
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        if on_kernels(x, mode) {
            let gamma = Data::of(&self.weight)?;
            let eps = self.eps as f32;
            return map_rows(x, |rows| {
                super::cpu::kernels::rms_norm_rows(rows, gamma.get(), eps)
            });
        }
        if on_trained_kernels(x, mode) {
            return super::cpu::autograd::rms_norm(x, &self.weight, self.eps);
        }
        let hidden = x.dim(D::Minus1)? as f64;
        let var = (x.sqr()?.sum_keepdim(D::Minus1)? / hidden)?;
        let normed = x.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&mode.param(&self.weight))
    }
}

/// A feed-forward activation, by its `transformers` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// `gelu_new`, `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    /// `gelu`: the exact (erf) form.
    Gelu,
    Silu,
}

impl Activation {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "relu" => Activation::Relu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            "silu" | "swish" => Activation::Silu,
            _ => return None,
        })
    }

    /// [`Activation::forward`], on the CPU's vectorised kernels in an inference pass that runs
    /// its linear layers there ([`Mode::kernels`]).
    pub fn forward_mode(self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        if on_kernels(x, mode) {
            match self {
                Activation::Gelu => return map_rows(x, super::cpu::kernels::gelu),
                Activation::Silu => return map_rows(x, super::cpu::kernels::silu),
                Activation::Relu | Activation::GeluTanh => {}
            }
        }
        self.forward(x)
    }

    /// `act(a) ⊙ g` for the two halves `a`, `g` of `x`'s last dimension (GeGLU on one product's
    /// output): for GELU and SiLU one pass on the CPU kernels (and one backward in training)
    /// where the pass runs its linear layers there; the same values as the composition.
    pub fn gated_halves(self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let fused = matches!(self, Activation::Gelu | Activation::Silu);
        if fused && mode.kernels.is_some() && is_cpu_f32(x) {
            return super::cpu::autograd::gated_halves(x, self == Activation::Silu);
        }
        let half = x.dim(D::Minus1)? / 2;
        self.forward_mode(&x.narrow(D::Minus1, 0, half)?, mode)?
            * x.narrow(D::Minus1, half, half)?
    }

    /// `act(a) ⊙ g` (SwiGLU, a gated T5's feed-forward block), as [`Activation::gated_halves`].
    pub fn gated(self, a: &Tensor, g: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let fused = matches!(self, Activation::Gelu | Activation::Silu);
        if fused && mode.kernels.is_some() && is_cpu_f32(a) && is_cpu_f32(g) {
            return super::cpu::autograd::gated(a, g, self == Activation::Silu);
        }
        self.forward_mode(a, mode)? * g
    }

    pub fn forward(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::GeluTanh => x.gelu(),
            Activation::Gelu => x.gelu_erf(),
            Activation::Silu => x.silu(),
        }
    }
}

/// Rotary position embeddings (`rotate_half` layout, as `transformers`' Llama, Qwen3 and
/// ModernBERT apply them) for heads of `dim` values, with frequencies `base^(-2i/dim)`.
#[derive(Debug, Clone)]
pub struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    pub fn new(dim: usize, base: f64) -> Self {
        // As `compute_default_rope_parameters`: 1 / base^(arange(0, dim, 2) / dim) in float32.
        let inv_freq = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / (base as f32).powf(i as f32 / dim as f32))
            .collect();
        Self { inv_freq }
    }

    /// `cos` and `sin` of positions `0..seq`: `[seq, dim / 2]` each.
    pub fn cos_sin(&self, seq: usize, dev: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(seq * half);
        let mut sin = Vec::with_capacity(seq * half);
        for p in 0..seq {
            for f in &self.inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok((
            Tensor::from_vec(cos, (seq, half), dev)?,
            Tensor::from_vec(sin, (seq, half), dev)?,
        ))
    }

    /// Rotates `x` (`[b, heads, seq, dim]`) by position; differentiable in training mode.
    pub fn apply(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mode: Mode,
    ) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        if on_trained_kernels(&x, mode) {
            super::cpu::autograd::rotary(&x, cos, sin)
        } else if mode.grad {
            candle_nn::rotary_emb::rope_slow(&x, cos, sin)
        } else {
            candle_nn::rotary_emb::rope(&x, cos, sin)
        }
    }
}

/// The bucket of a relative position (`key - query`) for the bidirectional relative position
/// biases of T5 and MPNet (`T5Attention._relative_position_bucket`,
/// `MPNetEncoder.relative_position_bucket`): exact up to a quarter of the buckets either way,
/// then logarithmic up to `max_distance`; positive and negative positions use separate halves.
/// Computed in float32 and truncated, as `transformers` does.
pub fn relative_position_bucket(relative: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = (num_buckets / 2) as i64;
    let mut ret = if relative > 0 { half } else { 0 };
    let n = relative.abs();
    let max_exact = half / 2;
    if n < max_exact {
        ret += n;
    } else {
        let scale = (max_distance as f64 / max_exact as f64).ln() as f32;
        let large = max_exact
            + ((n as f32 / max_exact as f32).ln() / scale * (half - max_exact) as f32) as i64;
        ret += large.min(half - 1);
    }
    ret as usize
}

/// A lookup table (`weight` of shape `[n, dim]`).
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: Tensor,
    /// The row that gets no gradient in training (`torch.nn.Embedding`'s `padding_idx`). It
    /// matters where the padding token is also a real one: Qwen3's end-of-text token, which ends
    /// every text and is the one last-token pooling reads.
    padding_idx: Option<u32>,
}

/// The gradient of a lookup table (a word-embedding matrix) that is zero outside the rows a
/// batch looked up: those rows' ids, ascending and distinct, and one row of values for each.
///
/// A batch of 32 sentences reaches a few hundred of all-MiniLM-L6-v2's 30,522 rows; the whole
/// gradient would be 47 MB to zero, fill, and read again in the optimizer, every step.
#[derive(Debug, Clone, PartialEq)]
pub struct RowGrad {
    pub width: usize,
    pub rows: Vec<u32>,
    /// `rows.len() × width`.
    pub values: Vec<f32>,
}

impl RowGrad {
    /// Sums the rows of `g` (one of `width` values per entry of `ids`) into the table rows `ids`
    /// name. Each table row adds its contributions in the order of `ids`, starting from 0, as a
    /// dense gradient filled in that order would: the values are the same bits.
    pub fn gather(ids: &[usize], g: &[f32], width: usize) -> Self {
        assert_eq!(g.len(), ids.len() * width, "one gradient row per id");
        let mut rows: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        rows.sort_unstable();
        rows.dedup();
        let mut values = vec![0f32; rows.len() * width];
        for (&id, g) in ids.iter().zip(g.chunks_exact(width)) {
            let slot = rows
                .binary_search(&(id as u32))
                .expect("every id has a row");
            for (a, v) in values[slot * width..(slot + 1) * width].iter_mut().zip(g) {
                *a += v;
            }
        }
        Self {
            width,
            rows,
            values,
        }
    }

    /// The values of the `i`-th stored row (table row `self.rows[i]`).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// `self += other`: rows in both are summed, the others kept.
    pub fn add(&mut self, other: &RowGrad) {
        assert_eq!(self.width, other.width, "row gradients of one table");
        let (mut rows, mut values) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        while i < self.rows.len() || j < other.rows.len() {
            let (a, b) = (self.rows.get(i), other.rows.get(j));
            match (a, b) {
                (Some(&x), Some(&y)) if x == y => {
                    rows.push(x);
                    values.extend(self.row(i).iter().zip(other.row(j)).map(|(p, q)| p + q));
                    i += 1;
                    j += 1;
                }
                (Some(&x), Some(&y)) if x < y => {
                    rows.push(x);
                    values.extend_from_slice(self.row(i));
                    i += 1;
                }
                (Some(&x), None) => {
                    rows.push(x);
                    values.extend_from_slice(self.row(i));
                    i += 1;
                }
                (_, Some(&y)) => {
                    rows.push(y);
                    values.extend_from_slice(other.row(j));
                    j += 1;
                }
                (None, None) => unreachable!("the loop runs while one has rows"),
            }
        }
        self.rows = rows;
        self.values = values;
    }

    /// The whole gradient of a table of `table_rows` rows.
    pub fn to_dense(&self, table_rows: usize) -> Vec<f32> {
        let mut out = vec![0f32; table_rows * self.width];
        for (i, &r) in self.rows.iter().enumerate() {
            out[r as usize * self.width..(r as usize + 1) * self.width]
                .copy_from_slice(self.row(i));
        }
        out
    }
}

/// The table lookups of one training pass ([`Mode::lookups`]): each looked up the rows it needed
/// from a variable of its own, whose gradient after the backward pass is the table's gradient in
/// those rows only ([`Lookup::row_grad`]). candle's autograd would otherwise build the whole
/// table's gradient, three times over (zeros, the rows added, the sum): 155 MB each for
/// ModernBERT's, every step.
#[derive(Default)]
pub struct Lookups(Mutex<Vec<Lookup>>);

impl Lookups {
    pub fn into_inner(self) -> Vec<Lookup> {
        self.0.into_inner().expect("lookups lock")
    }
}

/// One table lookup of a training pass.
pub struct Lookup {
    /// The table.
    pub table: Tensor,
    /// The rows looked up, ascending and distinct.
    ids: Vec<u32>,
    /// Those rows, as the variable the pass read them from.
    rows: candle_core::Var,
    /// The table's row that gets no gradient.
    padding_idx: Option<u32>,
}

impl Lookup {
    /// The table's gradient in the rows looked up, taken from `grads`; `None` where the pass's
    /// result did not depend on them.
    pub fn row_grad(
        &self,
        grads: &mut candle_core::backprop::GradStore,
    ) -> candle_core::Result<Option<RowGrad>> {
        let Some(g) = grads.remove(self.rows.as_tensor()) else {
            return Ok(None);
        };
        let width = g.dim(1)?;
        let mut values: Vec<f32> = g.flatten_all()?.to_vec1()?;
        if let Some(i) = self
            .padding_idx
            .and_then(|p| self.ids.binary_search(&p).ok())
        {
            values[i * width..(i + 1) * width].fill(0.0);
        }
        Ok(Some(RowGrad {
            width,
            rows: self.ids.clone(),
            values,
        }))
    }
}

impl Embedding {
    pub fn load(vb: VarBuilder, n: usize, dim: usize) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get((n, dim), "weight")?,
            padding_idx: None,
        })
    }

    /// The row that gets no gradient in training ([`Embedding::padding_idx`]).
    pub fn padding_idx(mut self, row: Option<usize>) -> Self {
        self.padding_idx = row.map(|r| r as u32);
        self
    }

    /// `ids` of any shape -> `[..., dim]`. A training pass that collects its lookups
    /// ([`Mode::lookups`]) reads a float32 table on the CPU through a [`Lookup`].
    pub fn forward(&self, ids: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let w = mode.param(&self.weight);
        let mut dims = ids.dims().to_vec();
        dims.push(w.dim(1)?);
        let ids = ids.flatten_all()?;
        match mode.lookups {
            Some(lookups) if mode.grad && is_cpu_f32(&w) => {
                let wanted = ids.to_dtype(DType::U32)?.to_vec1::<u32>()?;
                let mut distinct = wanted.clone();
                distinct.sort_unstable();
                distinct.dedup();
                let at: Vec<u32> = wanted
                    .iter()
                    .map(|i| distinct.binary_search(i).expect("every id is there") as u32)
                    .collect();
                let dev = w.device();
                let picked = w
                    .detach()
                    .index_select(&Tensor::new(distinct.as_slice(), dev)?, 0)?;
                let rows = candle_core::Var::from_tensor(&picked)?;
                let out = rows
                    .as_tensor()
                    .index_select(&Tensor::new(at, dev)?, 0)?
                    .reshape(dims)?;
                lookups.0.lock().expect("lookups lock").push(Lookup {
                    table: self.weight.clone(),
                    ids: distinct,
                    rows,
                    padding_idx: self.padding_idx,
                });
                Ok(out)
            }
            _ => {
                let out = w.index_select(&ids, 0)?;
                let out = match self.padding_idx {
                    // The padding row's lookups read the table without its gradient.
                    Some(p) if mode.grad => ids
                        .ne(p)?
                        .unsqueeze(1)?
                        .broadcast_as(out.shape())?
                        .where_cond(&out, &out.detach())?,
                    _ => out,
                };
                out.reshape(dims)
            }
        }
    }

    pub fn rows(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

/// The largest absolute difference between two tensors of one shape (for tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes");
    (a - b)
        .and_then(|d| d.abs()?.max_all()?.to_dtype(DType::F32)?.to_scalar())
        .expect("a difference of two tensors")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    /// Passes on the CPU kernels, inference at every precision as well as training, run on the
    /// real tokens alone and give the padded layout back (zeros at the padding); the reference
    /// composition keeps the padded layout.
    #[test]
    fn passes_on_the_kernels_run_on_the_real_tokens() {
        let dev = Device::Cpu;
        let ids = Tensor::zeros((2, 4), DType::U32, &dev).unwrap();
        let lengths = [4, 2];
        let x = Tensor::arange(0f32, 24.0, &dev)
            .unwrap()
            .reshape((2, 4, 3))
            .unwrap();
        let rng = DropoutRng::new(1);
        let mut kernel_modes: Vec<Mode> = [Precision::F32, Precision::Bf16, Precision::Int8]
            .into_iter()
            .map(|p| Mode::EVAL.with_kernels(p, &dev, true))
            .collect();
        kernel_modes.push(Mode::EVAL.with_kernels(Precision::F32, &dev, false));
        kernel_modes.push(Mode::train(&rng).with_kernels(Precision::F32, &dev, true));
        for mode in kernel_modes {
            let rows = Packing::new(&ids, &lengths, mode).unwrap();
            let packed = rows.pack(&x).unwrap();
            assert_eq!(packed.dims(), [6, 3]);
            assert!(rows.attends_on_kernels(&packed, mode));
            let back: Vec<f32> = rows
                .unpack(&packed)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let want: Vec<f32> = (0..24)
                .map(|i| {
                    if i % 12 >= 6 && i >= 12 {
                        0.0
                    } else {
                        i as f32
                    }
                })
                .collect();
            assert_eq!(back, want);
        }
        for mode in [Mode::EVAL, Mode::train(&rng)] {
            let rows = Packing::new(&ids, &lengths, mode).unwrap();
            assert_eq!(rows.pack(&x).unwrap().dims(), [2, 4, 3]);
            assert!(!rows.attends_on_kernels(&x, mode));
        }
    }

    /// A linear layer on the CPU kernels gives candle's product (float32: to rounding; bf16 and
    /// int8 near it), keeps one prepared weight per precision, and drops it on request.
    #[test]
    fn linear_on_the_kernels_equals_candles_product() {
        let dev = Device::Cpu;
        let (n, k) = (70, 45);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) / 17.0)
            .collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 / 50.0 - 0.5).collect();
        let lin = Linear::new(
            Tensor::from_vec(w, (n, k), &dev).unwrap(),
            Some(Tensor::from_vec(b, n, &dev).unwrap()),
        );
        // [3, 37, k]: more rows than the small-row kernel takes, and a transposed view.
        let x: Vec<f32> = (0..3 * 37 * k)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let x = Tensor::from_vec(x, (3, k, 37), &dev)
            .unwrap()
            .transpose(1, 2)
            .unwrap();
        let want: Vec<f32> = lin
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (p, tol) in [
            (Precision::F32, 1e-4),
            (Precision::Bf16, 0.1),
            (Precision::Int8, 0.2),
        ] {
            let got = lin
                .forward_mode(&x, Mode::EVAL.with_kernels(p, &dev, true))
                .unwrap();
            assert_eq!(got.dims(), [3, 37, n]);
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < tol, "{p}: {worst}");
            let prepared = lin.prepared.lock().unwrap().as_ref().map(|(q, _)| *q);
            let expected = PreparedWeight::worth_it(p).then_some(p);
            assert_eq!(prepared, expected, "{p}");
            if p != Precision::F32 {
                assert!(worst > 0.0, "{p} ran in float32");
            }
        }
        lin.drop_prepared();
        assert!(lin.prepared.lock().unwrap().is_none());
        // Training passes run in float32 on the live weights, and never prepare.
        let train = Mode::train_without_dropout().with_kernels(Precision::Int8, &dev, true);
        assert_eq!(train.kernels, Some(Precision::F32));
        let trained = lin.forward_mode(&x, train).unwrap();
        assert!(lin.prepared.lock().unwrap().is_none());
        let worst = max_abs_diff(&trained, &lin.forward(&x, true).unwrap());
        assert!(worst < 1e-5, "training pass: {worst}");
        // Inference on weights that change (a model being trained): float32, nothing prepared.
        let live = Mode::EVAL.with_kernels(Precision::Int8, &dev, false);
        assert_eq!((live.kernels, live.fresh), (Some(Precision::F32), true));
        let got = lin.forward_mode(&x, live).unwrap();
        assert!(lin.prepared.lock().unwrap().is_none());
        let worst = max_abs_diff(&got, &lin.forward(&x, false).unwrap());
        assert!(worst < 1e-5, "inference on live weights: {worst}");
    }

    /// The block-parallel draw gives the values one serial pass over the stream gives, and
    /// leaves the generator where that pass would (several blocks, a start inside a block).
    #[test]
    fn mask_values_are_the_serial_stream() {
        let rng = DropoutRng::new(11);
        rng.mask_values(5, 0.1).unwrap();
        let mut serial = ChaCha8Rng::seed_from_u64(11);
        serial.set_word_pos(5);
        let n = 3 * (1 << 15) + 77;
        let got = rng.mask_values(n, 0.1).unwrap();
        let keep = (1.0 / 0.9f64) as f32;
        let want: Vec<f32> = (0..n)
            .map(|_| {
                if serial.random::<f32>() < 0.1 {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(rng.position(), serial.get_word_pos());
    }

    /// The byte masks sent to a GPU scale to the float mask's values and move the stream alike.
    #[test]
    fn byte_masks_are_the_float_masks() {
        let (a, b) = (DropoutRng::new(5), DropoutRng::new(5));
        for dims in [&[3, 7][..], &[2, 4, 1000]] {
            let want = Tensor::from_vec(
                a.mask_values(dims.iter().product(), 0.1).unwrap(),
                dims,
                &Device::Cpu,
            )
            .unwrap();
            let got = b.mask_from_bytes(dims, 0.1, &Device::Cpu).unwrap();
            assert_eq!(got.dims(), dims);
            assert_eq!(
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            assert_eq!(a.position(), b.position());
        }
    }

    #[test]
    fn dropout_is_seeded_scaled_and_off_in_eval() {
        let x = Tensor::ones((64, 64), DType::F32, &Device::Cpu).unwrap();
        let a = DropoutRng::new(7);
        let b = DropoutRng::new(7);
        let ya = Mode::train(&a).dropout(&x, 0.25).unwrap();
        let yb = Mode::train(&b).dropout(&x, 0.25).unwrap();
        let va: Vec<f32> = ya.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = yb.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(va, vb, "same seed, same mask");
        let dropped = va.iter().filter(|&&v| v == 0.0).count() as f64 / va.len() as f64;
        assert!((dropped - 0.25).abs() < 0.03, "dropped {dropped}");
        assert!(
            va.iter()
                .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6)
        );
        let again: Vec<f32> = Mode::train(&a)
            .dropout(&x, 0.25)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_ne!(va, again, "the generator moves on");
        let eval: Vec<f32> = Mode::EVAL
            .dropout(&x, 0.25)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(eval.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn fused_and_differentiable_layer_norm_agree() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2., (3, 5, 8), &dev).unwrap();
        let ln = LayerNorm {
            weight: Tensor::randn(1f32, 0.1, 8, &dev).unwrap(),
            bias: Tensor::randn(0f32, 0.1, 8, &dev).unwrap(),
            eps: 1e-12,
        };
        let a = ln.forward(&x, Mode::EVAL).unwrap();
        let b = ln.forward(&x, Mode::train_without_dropout()).unwrap();
        let diff = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
    }
}
