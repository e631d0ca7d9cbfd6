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
    pub const OURS: [PoolingMode; 1] = [PoolingMode::St5EncDec];

    /// The name the Python library uses (and writes into `1_Pooling/config.json`).
    pub fn name(self) -> &'static str {
        match self {
            PoolingMode::Cls => "cls",
            PoolingMode::Mean => "mean",
            PoolingMode::Max => "max",
            PoolingMode::MeanSqrtLen => "mean_sqrt_len_tokens",
            PoolingMode::WeightedMean => "weightedmean",
            PoolingMode::LastToken => "lasttoken",
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
    let (_b, seq, _h) = tokens.dims3()?;
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
        PoolingMode::WeightedMean => {
            let positions = Tensor::arange(1u32, seq as u32 + 1, tokens.device())?
                .to_dtype(tokens.dtype())?
                .unsqueeze(0)?;
            // With left padding the weights start at the first real token, which weighs 1.
            let first = (&mask - shift_right(&mask)?)?.relu()?;
            let pad = first.broadcast_mul(&(&positions - 1.0)?)?.sum_keepdim(1)?;
            let weights = positions.broadcast_sub(&pad)?.broadcast_mul(&mask)?; // [b, seq]
            let sum = tokens
                .broadcast_mul(&weights.unsqueeze(D::Minus1)?)?
                .sum(1)?;
            let denom = weights.sum_keepdim(1)?.clamp(1e-9, f64::MAX)?;
            sum.broadcast_div(&denom)
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
        for m in PoolingMode::ALL {
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
