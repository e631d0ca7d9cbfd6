//! Pooling: token vectors `[batch, seq, hidden]` to one sentence vector `[batch, hidden]`.
//!
//! Every mode respects the attention mask, so padding never leaks into a sentence's vector.
//! The formulas follow `sentence_transformers.sentence_transformer.modules.pooling.Pooling`.

use std::fmt;
use std::str::FromStr;

use candle_core::{D, DType, Tensor};

/// One way of pooling token vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolingMode {
    /// The first token (`[CLS]`).
    Cls,
    /// Average over the real tokens.
    Mean,
    /// Element-wise maximum over the real tokens.
    Max,
    /// Sum over the real tokens divided by the square root of their count.
    MeanSqrtLen,
    /// Average weighted by position: token i (1-based) weighs i.
    WeightedMean,
    /// The last real token.
    LastToken,
    /// The seed's "weighted mean by attention weight". Ours (the Python library has no such
    /// mode): the first real token's vector (`[CLS]`) attends to every real token, one head and
    /// no learned projections: w_i = softmax_i(h_cls · h_i / sqrt(hidden)), pooled = Σ w_i h_i.
    /// Parameter-free, so any model can use it and it needs no training of its own.
    Attention,
    /// Sentence-T5's ST5-EncDec: the first output of the T5 decoder, fed the encoder's tokens
    /// and its start token. Ours (the Python library has no such mode); needs a full T5
    /// checkpoint, encoder and decoder.
    St5EncDec,
}

impl PoolingMode {
    pub const ALL: [PoolingMode; 6] = [
        PoolingMode::Cls,
        PoolingMode::Mean,
        PoolingMode::Max,
        PoolingMode::MeanSqrtLen,
        PoolingMode::WeightedMean,
        PoolingMode::LastToken,
    ];

    /// Modes of this tool only: a folder saved with one loads here, not in Python.
    pub const OURS: [PoolingMode; 2] = [PoolingMode::Attention, PoolingMode::St5EncDec];

    /// Every mode computed from token vectors alone: the Python library's six, then ours. What
    /// the explorer cycles through and shows side by side.
    pub const FROM_TOKENS: [PoolingMode; 7] = [
        PoolingMode::Cls,
        PoolingMode::Mean,
        PoolingMode::Max,
        PoolingMode::MeanSqrtLen,
        PoolingMode::WeightedMean,
        PoolingMode::LastToken,
        PoolingMode::Attention,
    ];

    /// True for a mode the Python library does not have.
    pub fn is_ours(self) -> bool {
        PoolingMode::OURS.contains(&self)
    }

    /// The name the Python library uses (and writes into `1_Pooling/config.json`).
    pub fn name(self) -> &'static str {
        match self {
            PoolingMode::Cls => "cls",
            PoolingMode::Mean => "mean",
            PoolingMode::Max => "max",
            PoolingMode::MeanSqrtLen => "mean_sqrt_len_tokens",
            PoolingMode::WeightedMean => "weightedmean",
            PoolingMode::LastToken => "lasttoken",
            PoolingMode::Attention => "attention",
            PoolingMode::St5EncDec => "st5_encdec",
        }
    }
}

impl fmt::Display for PoolingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PoolingMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        Ok(match norm.as_str() {
            "cls" | "cls_token" => PoolingMode::Cls,
            "mean" | "mean_tokens" | "avg" => PoolingMode::Mean,
            "max" | "max_tokens" => PoolingMode::Max,
            "mean_sqrt_len_tokens" | "mean_sqrt_len" => PoolingMode::MeanSqrtLen,
            "weightedmean" | "weighted_mean" | "weightedmean_tokens" => PoolingMode::WeightedMean,
            "lasttoken" | "last_token" | "last" => PoolingMode::LastToken,
            "attention" | "attention_weighted" | "attn" => PoolingMode::Attention,
            "st5_encdec" | "st5encdec" | "encdec" => PoolingMode::St5EncDec,
            _ => {
                return Err(format!(
                    "unknown pooling mode `{s}` (expected one of: {}, or ours: {})",
                    PoolingMode::ALL.map(PoolingMode::name).join(", "),
                    PoolingMode::OURS.map(PoolingMode::name).join(", ")
                ));
            }
        })
    }
}

/// One or more pooling modes; several are concatenated, as in the Python library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolingSpec(Vec<PoolingMode>);

impl PoolingSpec {
    pub fn new(modes: Vec<PoolingMode>) -> Option<Self> {
        (!modes.is_empty()).then_some(Self(modes))
    }

    pub fn single(mode: PoolingMode) -> Self {
        Self(vec![mode])
    }

    pub fn modes(&self) -> &[PoolingMode] {
        &self.0
    }

    /// Width of the pooled vector for token vectors of width `hidden`.
    pub fn output_dim(&self, hidden: usize) -> usize {
        hidden * self.0.len()
    }

    /// True when a mode is one the Python library does not have ([`PoolingMode::OURS`]).
    pub fn has_ours(&self) -> bool {
        self.0.iter().any(|m| m.is_ours())
    }

    /// True when a mode needs the transformer's decoder ([`PoolingMode::St5EncDec`]).
    pub fn needs_decoder(&self) -> bool {
        self.0.contains(&PoolingMode::St5EncDec)
    }

    /// Pools `tokens` `[batch, seq, hidden]` under `mask` `[batch, seq]` (1 for a real token,
    /// 0 for padding, any float dtype). Differentiable.
    pub fn forward(&self, tokens: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(tokens, mask, &|| {
            candle_core::bail!("st5_encdec pooling needs the T5 decoder")
        })
    }

    /// [`PoolingSpec::forward`], with `decoder` giving the ST5-EncDec output `[batch, hidden]`.
    pub fn forward_with(
        &self,
        tokens: &Tensor,
        mask: &Tensor,
        decoder: &dyn Fn() -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensor> {
        let outs = self
            .0
            .iter()
            .map(|&m| match m {
                PoolingMode::St5EncDec => decoder(),
                m => pool(m, tokens, mask),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        if outs.len() == 1 {
            Ok(outs.into_iter().next().expect("one output"))
        } else {
            Tensor::cat(&outs, D::Minus1)
        }
    }
}

impl fmt::Display for PoolingSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|m| m.name()).collect();
        f.write_str(&names.join("+"))
    }
}

impl FromStr for PoolingSpec {
    type Err = String;

    /// `mean`, or several modes joined by `+` or `,` (`cls+mean`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let modes = s
            .split(['+', ','])
            .map(str::parse)
            .collect::<Result<Vec<PoolingMode>, _>>()?;
        PoolingSpec::new(modes).ok_or_else(|| "empty pooling mode".to_string())
    }
}

/// Pools with a single mode. `mask` is `[batch, seq]`.
pub fn pool(mode: PoolingMode, tokens: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(tokens.dtype())?;
    let mask3 = mask.unsqueeze(D::Minus1)?; // [b, seq, 1]
    match mode {
        PoolingMode::St5EncDec => {
            candle_core::bail!("st5_encdec pooling needs the T5 decoder, not token vectors")
        }
        PoolingMode::Cls => {
            // The first real token: mask[i] - mask[i-1] is 1 exactly there (left or right padding).
            select(tokens, &(&mask - shift_right(&mask)?)?.relu()?)
        }
        PoolingMode::LastToken => {
            // The last real token: mask[i] - mask[i+1] is 1 exactly there.
            select(tokens, &(&mask - shift_left(&mask)?)?.relu()?)
        }
        PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
            let sum = tokens.broadcast_mul(&mask3)?.sum(1)?;
            let count = mask.sum_keepdim(1)?.clamp(1e-9, f64::MAX)?;
            let denom = if mode == PoolingMode::Mean {
                count
            } else {
                count.sqrt()?
            };
            sum.broadcast_div(&denom)
        }
        PoolingMode::Max => {
            // Padding is pushed far below any real value; a real token always exists.
            let offset = ((&mask3 - 1.0)? * 1e9)?;
            tokens.broadcast_add(&offset)?.max(1)
        }
        PoolingMode::WeightedMean | PoolingMode::Attention => {
            let weights = token_weights(mode, tokens, &mask)?; // [b, seq], rows sum to 1
            tokens.broadcast_mul(&weights.unsqueeze(D::Minus1)?)?.sum(1)
        }
    }
}

/// The weight each token gets in the pooled vector, `[batch, seq]`, rows summing to 1 over the
/// real tokens (padding 0): one-hot for `cls` and `lasttoken`, 1/n for `mean`, 1/sqrt(n) for
/// `mean_sqrt_len_tokens` (which does not sum to 1), i / Σi for `weightedmean`, the softmax for
/// `attention`, and for `max` the share of dimensions in which the token holds the maximum.
/// What the workshop's pipeline view shows; `weightedmean` and `attention` pool with it.
pub fn token_weights(
    mode: PoolingMode,
    tokens: &Tensor,
    mask: &Tensor,
) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(tokens.dtype())?;
    let (_b, seq, hidden) = tokens.dims3()?;
    let count = mask.sum_keepdim(1)?.clamp(1e-9, f64::MAX)?; // [b, 1]
    match mode {
        PoolingMode::St5EncDec => {
            candle_core::bail!("st5_encdec pooling has no per-token weights")
        }
        PoolingMode::Cls => (&mask - shift_right(&mask)?)?.relu(),
        PoolingMode::LastToken => (&mask - shift_left(&mask)?)?.relu(),
        PoolingMode::Mean => mask.broadcast_div(&count),
        PoolingMode::MeanSqrtLen => mask.broadcast_div(&count.sqrt()?),
        PoolingMode::Max => {
            let offset = ((&mask - 1.0)? * 1e9)?.unsqueeze(D::Minus1)?;
            let shifted = tokens.broadcast_add(&offset)?;
            let top = shifted.max_keepdim(1)?; // [b, 1, hidden]
            let wins = shifted.broadcast_eq(&top)?.to_dtype(tokens.dtype())?;
            (wins.sum(D::Minus1)? / hidden as f64)?.broadcast_mul(&mask)
        }
        PoolingMode::WeightedMean => {
            let positions = Tensor::arange(1u32, seq as u32 + 1, tokens.device())?
                .to_dtype(tokens.dtype())?
                .unsqueeze(0)?;
            // With left padding the weights start at the first real token, which weighs 1.
            let first = (&mask - shift_right(&mask)?)?.relu()?;
            let pad = first.broadcast_mul(&(&positions - 1.0)?)?.sum_keepdim(1)?;
            let weights = positions.broadcast_sub(&pad)?.broadcast_mul(&mask)?; // [b, seq]
            let denom = weights.sum_keepdim(1)?.clamp(1e-9, f64::MAX)?;
            weights.broadcast_div(&denom)
        }
        PoolingMode::Attention => {
            let first = (&mask - shift_right(&mask)?)?.relu()?;
            let query = select(tokens, &first)?.unsqueeze(D::Minus1)?; // [b, hidden, 1]
            let scores = (tokens.matmul(&query)?.squeeze(D::Minus1)? / (hidden as f64).sqrt())?;
            // Padding gets -1e9 before the softmax, so exactly 0 after it.
            let scores = (scores + ((&mask - 1.0)? * 1e9)?)?;
            let top = scores.max_keepdim(1)?;
            let e = scores.broadcast_sub(&top)?.exp()?.broadcast_mul(&mask)?;
            let sum = e.sum_keepdim(1)?.clamp(1e-30, f64::MAX)?;
            e.broadcast_div(&sum)
        }
    }
}

/// `[b, seq]` -> the same shifted one step right, zero-filled: out[i] = x[i-1].
fn shift_right(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, seq) = x.dims2()?;
    let zero = Tensor::zeros((b, 1), x.dtype(), x.device())?;
    Tensor::cat(&[&zero, &x.narrow(1, 0, seq - 1)?], 1)
}

/// `[b, seq]` -> the same shifted one step left, zero-filled: out[i] = x[i+1].
fn shift_left(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, seq) = x.dims2()?;
    let zero = Tensor::zeros((b, 1), x.dtype(), x.device())?;
    Tensor::cat(&[&x.narrow(1, 1, seq - 1)?, &zero], 1)
}

/// Picks one token per row with a one-hot `[b, seq]` selector (differentiable gather).
fn select(tokens: &Tensor, one_hot: &Tensor) -> candle_core::Result<Tensor> {
    tokens.broadcast_mul(&one_hot.unsqueeze(D::Minus1)?)?.sum(1)
}

/// L2-normalises rows as `torch.nn.functional.normalize(p=2, dim=-1)` (norm clamped at 1e-12).
pub fn normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

/// A `[batch, seq]` float mask from sequence lengths (right padding).
pub fn mask_from_lengths(
    lengths: &[usize],
    seq: usize,
    device: &candle_core::Device,
) -> candle_core::Result<Tensor> {
    let mut data = vec![0f32; lengths.len() * seq];
    for (row, &len) in lengths.iter().enumerate() {
        data[row * seq..row * seq + len.min(seq)].fill(1.0);
    }
    Tensor::from_vec(data, (lengths.len(), seq), device)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two sentences, lengths 3 and 2, hidden 2; the padded row holds huge values that must
    /// never show up in any pooled vector.
    fn batch() -> (Tensor, Tensor) {
        let tokens = Tensor::new(
            &[
                [[1f32, -1.], [2., 0.], [3., 5.]],
                [[4f32, 2.], [-2., 6.], [1000., 1000.]],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let mask = mask_from_lengths(&[3, 2], 3, &Device::Cpu).unwrap();
        (tokens, mask)
    }

    fn run(mode: PoolingMode) -> Vec<Vec<f32>> {
        let (t, m) = batch();
        pool(mode, &t, &m).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn every_mode_by_hand() {
        assert_eq!(run(PoolingMode::Cls), vec![vec![1., -1.], vec![4., 2.]]);
        assert_eq!(
            run(PoolingMode::LastToken),
            vec![vec![3., 5.], vec![-2., 6.]]
        );
        assert_eq!(run(PoolingMode::Max), vec![vec![3., 5.], vec![4., 6.]]);
        assert_eq!(
            run(PoolingMode::Mean),
            vec![vec![2., 4. / 3.], vec![1., 4.]]
        );
        let s3 = 3f32.sqrt();
        let s2 = 2f32.sqrt();
        let got = run(PoolingMode::MeanSqrtLen);
        let want = [[6. / s3, 4. / s3], [2. / s2, 8. / s2]];
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        // Weights 1, 2, 3 for the first row, 1, 2 for the second.
        let got = run(PoolingMode::WeightedMean);
        let want = [
            [(1. + 4. + 9.) / 6., (-1. + 0. + 15.) / 6.],
            [(4. - 4.) / 3., (2. + 12.) / 3.],
        ];
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn attention_pooling_by_hand() {
        // Row 0: query [1, -1]; scores (h_cls · h_i) / sqrt(2) = [2, 2, -2] / sqrt(2).
        let s = 2f32 / 2f32.sqrt();
        let e = [s.exp(), s.exp(), (-s).exp()];
        let z: f32 = e.iter().sum();
        let w = e.map(|x| x / z);
        let want0 = [
            w[0] * 1. + w[1] * 2. + w[2] * 3.,
            -w[0] + w[1] * 0. + w[2] * 5.,
        ];
        // Row 1: query [4, 2]; scores [20, 4] / sqrt(2), the padded token gets nothing.
        let (a, b) = ((20f32 / 2f32.sqrt()).exp(), (4f32 / 2f32.sqrt()).exp());
        let (w0, w1) = (a / (a + b), b / (a + b));
        let want1 = [w0 * 4. + w1 * -2., w0 * 2. + w1 * 6.];
        let got = run(PoolingMode::Attention);
        for (g, w) in got.iter().flatten().zip(want0.iter().chain(&want1)) {
            assert!((g - w).abs() < 1e-5, "{got:?}");
        }
    }

    #[test]
    fn token_weights_sum_to_one_and_skip_padding() {
        let (t, m) = batch();
        for mode in PoolingMode::FROM_TOKENS {
            let w = token_weights(mode, &t, &m)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            assert_eq!(w[1][2], 0., "{mode}: padding weighs nothing");
            if mode != PoolingMode::MeanSqrtLen {
                for row in &w {
                    let sum: f32 = row.iter().sum();
                    assert!((sum - 1.).abs() < 1e-5, "{mode}: {row:?}");
                }
            }
        }
        // Max: row 0's maxima are token 2 in both dimensions; row 1's split between 0 and 1.
        let w = token_weights(PoolingMode::Max, &t, &m)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(w, vec![vec![0., 0., 1.], vec![0.5, 0.5, 0.]]);
    }

    #[test]
    fn left_padding_is_respected() {
        let tokens = Tensor::new(&[[[1000f32], [2.], [4.]]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[0f32, 1., 1.]], &Device::Cpu).unwrap();
        let p = |m| pool(m, &tokens, &mask).unwrap().to_vec2::<f32>().unwrap()[0][0];
        assert_eq!(p(PoolingMode::Cls), 2.);
        assert_eq!(p(PoolingMode::LastToken), 4.);
        assert_eq!(p(PoolingMode::Max), 4.);
        assert_eq!(p(PoolingMode::Mean), 3.);
        // Weights start at the first real token: (1*2 + 2*4) / 3.
        assert!((p(PoolingMode::WeightedMean) - 10. / 3.).abs() < 1e-6);
        // The query is the first real token (2), not the padding: scores 4 and 8.
        let (a, b) = (4f32.exp(), 8f32.exp());
        let want = (2. * a + 4. * b) / (a + b);
        assert!((p(PoolingMode::Attention) - want).abs() < 1e-5);
    }

    #[test]
    fn several_modes_concatenate() {
        let (t, m) = batch();
        let spec: PoolingSpec = "cls+mean".parse().unwrap();
        let out = spec.forward(&t, &m).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(out[0], vec![1., -1., 2., 4. / 3.]);
        assert_eq!(spec.output_dim(2), 4);
        assert_eq!(spec.to_string(), "cls+mean");
    }

    #[test]
    fn names_round_trip() {
        for m in PoolingMode::FROM_TOKENS
            .into_iter()
            .chain(PoolingMode::OURS)
        {
            assert_eq!(m.name().parse::<PoolingMode>().unwrap(), m);
        }
        assert_eq!(
            "weighted-mean".parse::<PoolingMode>().unwrap(),
            PoolingMode::WeightedMean
        );
        assert!(
            "median"
                .parse::<PoolingMode>()
                .unwrap_err()
                .contains("expected one of")
        );
    }

    #[test]
    fn normalize_gives_unit_rows_and_keeps_zero_rows_finite() {
        let x = Tensor::new(&[[3f32, 4.], [0., 0.]], &Device::Cpu).unwrap();
        let n = normalize(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(n, vec![vec![0.6, 0.8], vec![0., 0.]]);
    }
}
