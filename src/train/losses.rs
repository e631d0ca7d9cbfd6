//! The training losses, on sentence vectors, with the Python library's defaults and formulas
//! (`sentence_transformers.sentence_transformer.losses`). Each is differentiable with candle's
//! autograd; `tests/fixtures/loss_reference.json` checks values and gradients.

use std::fmt;
use std::str::FromStr;

use candle_core::{D, DType, Device, Tensor};

/// Distance for the triplet loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TripletDistance {
    /// `torch.nn.functional.pairwise_distance` (p = 2, eps = 1e-6): the library's default.
    Euclidean,
    /// `1 - cos(x, y)`.
    Cosine,
}

impl FromStr for TripletDistance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "euclidean" => Ok(Self::Euclidean),
            "cosine" => Ok(Self::Cosine),
            _ => Err(format!("unknown distance `{s}` (euclidean or cosine)")),
        }
    }
}

/// A loss by the name the command line uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// `CosineSimilarityLoss`: MSE between cos(u, v) and a gold score in [0, 1].
    Cosine,
    /// `CoSENTLoss(scale=20)`.
    CoSent,
    /// `AnglELoss(scale=20)`.
    Angle,
    /// `MSELoss` against a teacher model's vectors (distillation).
    Mse,
    /// `SoftmaxLoss`: a classifier over (u, v, |u - v|) trained along.
    Softmax,
    /// `TripletLoss` (euclidean, margin 5 by default).
    Triplet,
    /// `MultipleNegativesRankingLoss(scale=20)`, with hard negatives when the data has them.
    Mnr,
    /// `MultipleNegativesSymmetricRankingLoss(scale=20)`.
    MnrSymmetric,
    /// Unsupervised SimCSE: each sentence twice with dropout, in-batch negatives (MNR, scale 20).
    SimCse,
    /// `ContrastiveLoss` (cosine distance, margin 0.5).
    Contrastive,
    /// `OnlineContrastiveLoss` (cosine distance, margin 0.5).
    OnlineContrastive,
    /// `MarginMSELoss`: distil a cross-encoder's margins.
    MarginMse,
    /// `CachedMultipleNegativesRankingLoss` (GradCache): MNR's value and gradients, with the
    /// batch embedded a mini-batch at a time.
    CachedMnr,
}

impl LossKind {
    pub const ALL: [LossKind; 13] = [
        LossKind::Cosine,
        LossKind::CoSent,
        LossKind::Angle,
        LossKind::Mse,
        LossKind::Softmax,
        LossKind::Triplet,
        LossKind::Mnr,
        LossKind::MnrSymmetric,
        LossKind::SimCse,
        LossKind::Contrastive,
        LossKind::OnlineContrastive,
        LossKind::MarginMse,
        LossKind::CachedMnr,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LossKind::Cosine => "cosine",
            LossKind::CoSent => "cosent",
            LossKind::Angle => "angle",
            LossKind::Mse => "mse",
            LossKind::Softmax => "softmax",
            LossKind::Triplet => "triplet",
            LossKind::Mnr => "mnr",
            LossKind::MnrSymmetric => "mnr-symmetric",
            LossKind::SimCse => "simcse",
            LossKind::Contrastive => "contrastive",
            LossKind::OnlineContrastive => "online-contrastive",
            LossKind::MarginMse => "margin-mse",
            LossKind::CachedMnr => "cached-mnr",
        }
    }

    /// The Python class it reproduces, for the model card.
    pub fn python_class(self) -> &'static str {
        match self {
            LossKind::Cosine => "CosineSimilarityLoss",
            LossKind::CoSent => "CoSENTLoss",
            LossKind::Angle => "AnglELoss",
            LossKind::Mse => "MSELoss",
            LossKind::Softmax => "SoftmaxLoss",
            LossKind::Triplet => "TripletLoss",
            LossKind::Mnr => "MultipleNegativesRankingLoss",
            LossKind::MnrSymmetric => "MultipleNegativesSymmetricRankingLoss",
            LossKind::SimCse => "MultipleNegativesRankingLoss (unsupervised SimCSE)",
            LossKind::Contrastive => "ContrastiveLoss",
            LossKind::OnlineContrastive => "OnlineContrastiveLoss",
            LossKind::MarginMse => "MarginMSELoss",
            LossKind::CachedMnr => "CachedMultipleNegativesRankingLoss",
        }
    }

    /// One line for people choosing a loss.
    pub fn explain(self) -> &'static str {
        match self {
            LossKind::Cosine => "regress cos(u, v) onto a gold similarity score",
            LossKind::CoSent => "rank pairs: a higher gold score must get a higher cosine",
            LossKind::Angle => "CoSENT on an angle similarity that avoids cosine saturation",
            LossKind::Mse => "distillation: reproduce a teacher model's vectors",
            LossKind::Softmax => {
                "NLI classification over (u, v, |u-v|) with a throw-away classifier"
            }
            LossKind::Triplet => "anchor closer to positive than to negative by a margin",
            LossKind::Mnr => {
                "in-batch negatives (InfoNCE, temperature 0.05), hard negatives optional"
            }
            LossKind::MnrSymmetric => {
                "in-batch negatives in both directions (anchor->positive and back)"
            }
            LossKind::SimCse => "unsupervised: a sentence and its own dropout view are positives",
            LossKind::Contrastive => {
                "pull similar pairs together, push dissimilar ones past a margin"
            }
            LossKind::OnlineContrastive => "contrastive on the hard pairs of each batch only",
            LossKind::MarginMse => {
                "distil a cross-encoder: q·p - q·n must equal the teacher's margin"
            }
            LossKind::CachedMnr => {
                "MNR with GradCache: big batches in small memory, same gradients"
            }
        }
    }
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LossKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        LossKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .or(match s.as_str() {
                "cosine-similarity" | "cosinesimilarity" => Some(LossKind::Cosine),
                "multiple-negatives-ranking" | "infonce" => Some(LossKind::Mnr),
                "distillation" => Some(LossKind::Mse),
                _ => None,
            })
            .ok_or_else(|| {
                format!(
                    "unknown loss `{s}` (expected one of: {})",
                    LossKind::ALL.map(LossKind::name).join(", ")
                )
            })
    }
}

/// Library defaults.
pub const MNR_SCALE: f64 = 20.0;
pub const COSENT_SCALE: f64 = 20.0;
pub const TRIPLET_MARGIN_EUCLIDEAN: f64 = 5.0;
pub const TRIPLET_MARGIN_COSINE: f64 = 0.5;
pub const CONTRASTIVE_MARGIN: f64 = 0.5;

type R<T> = candle_core::Result<T>;

/// log(sum(exp(x))) over `dim`, with the maximum taken out of the graph (its gradient cancels).
fn logsumexp(x: &Tensor, dim: usize) -> R<Tensor> {
    let m = x.max_keepdim(dim)?.detach();
    x.broadcast_sub(&m)?
        .exp()?
        .sum_keepdim(dim)?
        .log()?
        .broadcast_add(&m)?
        .squeeze(dim)
}

/// Rows scaled to unit length, as `F.normalize` (norm floored at 1e-12).
fn normalize(x: &Tensor) -> R<Tensor> {
    crate::model::pooling::normalize(x)
}

/// cos(a_i, b_j) for all i, j: `[n, m]`.
pub fn cos_sim_matrix(a: &Tensor, b: &Tensor) -> R<Tensor> {
    normalize(a)?.matmul(&normalize(b)?.t()?)
}

/// cos(a_i, b_i) per row: `[n]` (`torch.cosine_similarity`, eps 1e-8).
pub fn pairwise_cos(a: &Tensor, b: &Tensor) -> R<Tensor> {
    let dot = (a * b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    dot / (na * nb)?.clamp(1e-8, f64::MAX)?
}

/// ||a_i - b_i + eps|| per row (`F.pairwise_distance`, p = 2, eps = 1e-6).
pub fn pairwise_euclidean(a: &Tensor, b: &Tensor) -> R<Tensor> {
    ((a - b)? + 1e-6)?.sqr()?.sum(D::Minus1)?.sqrt()
}

/// Cross entropy of `logits` `[n, c]` against the class `targets` (u32 `[n]`), mean over rows.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> R<Tensor> {
    let lse = logsumexp(logits, 1)?;
    let picked = logits.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    (lse - picked)?.mean_all()
}

/// `CosineSimilarityLoss`: mean((cos(a, b) - score)^2).
pub fn cosine_loss(a: &Tensor, b: &Tensor, scores: &Tensor) -> R<Tensor> {
    (pairwise_cos(a, b)? - scores)?.sqr()?.mean_all()
}

/// The CoSENT ranking term over per-pair similarities `s` and gold `scores`:
/// log(1 + sum over pairs with score_i < score_j of exp(scale (s_i - s_j))).
fn cosent_from_similarities(s: &Tensor, scores: &Tensor, scale: f64) -> R<Tensor> {
    let n = s.dim(0)?;
    let s = (s * scale)?;
    let diff = s.unsqueeze(1)?.broadcast_sub(&s.unsqueeze(0)?)?; // s_i - s_j
    let lab: Vec<f32> = scores.to_dtype(DType::F32)?.to_vec1()?;
    let mut penalty = vec![0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            if lab[i] >= lab[j] {
                penalty[i * n + j] = -1e12;
            }
        }
    }
    let penalty = Tensor::from_vec(penalty, (n, n), s.device())?;
    let flat = (diff + penalty)?.flatten_all()?;
    let with_zero = Tensor::cat(&[&Tensor::zeros(1, flat.dtype(), flat.device())?, &flat], 0)?;
    logsumexp(&with_zero.unsqueeze(0)?, 1)?.squeeze(0)
}

/// `CoSENTLoss(scale)`.
pub fn cosent_loss(a: &Tensor, b: &Tensor, scores: &Tensor, scale: f64) -> R<Tensor> {
    cosent_from_similarities(&pairwise_cos(a, b)?, scores, scale)
}

/// `pairwise_angle_sim`: |cos + sin| after L2 normalisation, pairing dimension i with i + D/2.
pub fn pairwise_angle_sim(a: &Tensor, b: &Tensor) -> R<Tensor> {
    let (n, d) = a.dims2()?;
    let pad = |x: &Tensor| -> R<Tensor> {
        if d % 2 == 0 {
            Ok(x.clone())
        } else {
            Tensor::cat(&[x, &Tensor::zeros((n, 1), x.dtype(), x.device())?], 1)
        }
    };
    let (x, y) = (normalize(&pad(a)?)?, normalize(&pad(b)?)?);
    let half = x.dim(1)? / 2;
    let cos = (&x * &y)?.sum(1)?;
    let (fx, lx) = (x.narrow(1, 0, half)?, x.narrow(1, half, half)?);
    let (fy, ly) = (y.narrow(1, 0, half)?, y.narrow(1, half, half)?);
    let sin = ((lx * fy)? - (fx * ly)?)?.sum(1)?;
    (cos + sin)?.abs()
}

/// `AnglELoss(scale)`: CoSENT over the angle similarity.
pub fn angle_loss(a: &Tensor, b: &Tensor, scores: &Tensor, scale: f64) -> R<Tensor> {
    cosent_from_similarities(&pairwise_angle_sim(a, b)?, scores, scale)
}

/// `MSELoss`: mean squared error over every element.
pub fn mse_loss(pred: &Tensor, target: &Tensor) -> R<Tensor> {
    (pred - target)?.sqr()?.mean_all()
}

/// `SoftmaxLoss`: cross entropy of `W [u; v; |u - v|] + b`. `weight` is `[classes, 3 dim]`.
pub fn softmax_loss(
    a: &Tensor,
    b: &Tensor,
    labels: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
) -> R<Tensor> {
    cross_entropy(&softmax_logits(a, b, weight, bias)?, labels)
}

pub fn softmax_logits(a: &Tensor, b: &Tensor, weight: &Tensor, bias: &Tensor) -> R<Tensor> {
    let features = Tensor::cat(&[a, b, &(a - b)?.abs()?], 1)?;
    features.matmul(&weight.t()?)?.broadcast_add(bias)
}

/// `TripletLoss`: mean(relu(d(a, p) - d(a, n) + margin)).
pub fn triplet_loss(
    a: &Tensor,
    p: &Tensor,
    n: &Tensor,
    distance: TripletDistance,
    margin: f64,
) -> R<Tensor> {
    let d = |x: &Tensor, y: &Tensor| match distance {
        TripletDistance::Euclidean => pairwise_euclidean(x, y),
        TripletDistance::Cosine => pairwise_cos(x, y)?.affine(-1.0, 1.0),
    };
    ((d(a, p)? - d(a, n)?)? + margin)?.relu()?.mean_all()
}

/// `MultipleNegativesRankingLoss(scale)`: anchor i must pick its own positive among every
/// positive (and hard negative) in the batch: cross entropy over scale * cos.
pub fn mnr_loss(anchors: &Tensor, docs: &[&Tensor], scale: f64) -> R<Tensor> {
    let n = anchors.dim(0)?;
    let all = Tensor::cat(docs, 0)?;
    let scores = (cos_sim_matrix(anchors, &all)? * scale)?;
    let targets = Tensor::arange(0u32, n as u32, anchors.device())?;
    cross_entropy(&scores, &targets)
}

/// `MultipleNegativesSymmetricRankingLoss(scale)`: the mean of the anchor->documents and
/// positive->anchors log-partition terms, per example.
pub fn mnr_symmetric_loss(anchors: &Tensor, docs: &[&Tensor], scale: f64) -> R<Tensor> {
    let n = anchors.dim(0)?;
    let all = Tensor::cat(docs, 0)?;
    let q2d = (cos_sim_matrix(anchors, &all)? * scale)?;
    let d2q = (cos_sim_matrix(docs[0], anchors)? * scale)?;
    let targets = Tensor::arange(0u32, n as u32, anchors.device())?;
    let positive = q2d.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let log_z = ((logsumexp(&q2d, 1)? + logsumexp(&d2q, 1)?)? * 0.5)?;
    (log_z - positive)?.mean_all()
}

/// `ContrastiveLoss` (cosine distance): mean(0.5 (y d^2 + (1 - y) relu(margin - d)^2)).
pub fn contrastive_loss(a: &Tensor, b: &Tensor, labels: &Tensor, margin: f64) -> R<Tensor> {
    let d = pairwise_cos(a, b)?.affine(-1.0, 1.0)?;
    let pos = (labels * d.sqr()?)?;
    let neg = (labels.affine(-1.0, 1.0)? * (d.affine(-1.0, margin)?.relu()?.sqr()?))?;
    ((pos + neg)? * 0.5)?.mean_all()
}

/// `OnlineContrastiveLoss` (cosine distance): only positives farther than the closest negative
/// and negatives closer than the farthest positive count; summed.
pub fn online_contrastive_loss(a: &Tensor, b: &Tensor, labels: &Tensor, margin: f64) -> R<Tensor> {
    let d = pairwise_cos(a, b)?.affine(-1.0, 1.0)?;
    let dv: Vec<f32> = d.to_dtype(DType::F32)?.to_vec1()?;
    let lv: Vec<f32> = labels.to_dtype(DType::F32)?.to_vec1()?;
    let poss: Vec<usize> = (0..dv.len()).filter(|&i| lv[i] == 1.0).collect();
    let negs: Vec<usize> = (0..dv.len()).filter(|&i| lv[i] == 0.0).collect();
    let mean = |ix: &[usize]| ix.iter().map(|&i| dv[i]).sum::<f32>() / ix.len().max(1) as f32;
    let pos_max = if poss.is_empty() {
        mean(&negs)
    } else {
        poss.iter().map(|&i| dv[i]).fold(f32::MIN, f32::max)
    };
    let neg_min = if negs.is_empty() {
        mean(&poss)
    } else {
        negs.iter().map(|&i| dv[i]).fold(f32::MAX, f32::min)
    };
    let hard_negs: Vec<u32> = negs
        .iter()
        .filter(|&&i| dv[i] < pos_max)
        .map(|&i| i as u32)
        .collect();
    let hard_poss: Vec<u32> = poss
        .iter()
        .filter(|&&i| dv[i] > neg_min)
        .map(|&i| i as u32)
        .collect();
    let pick = |ix: &[u32]| -> R<Option<Tensor>> {
        if ix.is_empty() {
            return Ok(None);
        }
        let ix = Tensor::new(ix, d.device())?;
        Ok(Some(d.index_select(&ix, 0)?))
    };
    // Multiplying by zero keeps the graph connected when nothing is selected.
    let mut loss = (d.sum_all()? * 0.0)?;
    if let Some(p) = pick(&hard_poss)? {
        loss = (loss + p.sqr()?.sum_all()?)?;
    }
    if let Some(n) = pick(&hard_negs)? {
        loss = (loss + n.affine(-1.0, margin)?.relu()?.sqr()?.sum_all()?)?;
    }
    Ok(loss)
}

/// a_i · b_i per row: `[n]` (`pairwise_dot_score`).
pub fn pairwise_dot(a: &Tensor, b: &Tensor) -> R<Tensor> {
    (a * b)?.sum(D::Minus1)
}

/// `MarginMSELoss` (dot product): mean((q·p - q·n - margin)^2), where `margins` are a teacher's
/// (usually a cross-encoder's) score of the positive minus its score of the negative.
pub fn margin_mse_loss(q: &Tensor, p: &Tensor, n: &Tensor, margins: &Tensor) -> R<Tensor> {
    mse_loss(&(pairwise_dot(q, p)? - pairwise_dot(q, n)?)?, margins)
}

/// `MatryoshkaLoss` over any loss: `loss` on every column cut to each of `dims` (the first `d`
/// values, not normalised again: the inner loss normalises where it compares by cosine), weighted
/// and summed. The full width is usually one of `dims`.
pub fn matryoshka_loss<E: From<candle_core::Error>>(
    cols: &[Tensor],
    dims: &[usize],
    weights: &[f64],
    loss: impl Fn(&[Tensor]) -> Result<Tensor, E>,
) -> Result<Tensor, E> {
    let mut total: Option<Tensor> = None;
    for (&d, &w) in dims.iter().zip(weights) {
        let cut = cols
            .iter()
            .map(|c| c.narrow(D::Minus1, 0, d))
            .collect::<R<Vec<_>>>()?;
        let term = (loss(&cut)? * w)?;
        total = Some(match total {
            Some(t) => (t + term)?,
            None => term,
        });
    }
    total.ok_or_else(|| {
        candle_core::Error::Msg("matryoshka needs at least one dimension".into()).into()
    })
}

/// A `[n]` f32 tensor of scores or labels.
pub fn labels_tensor(values: &[f32], device: &Device) -> R<Tensor> {
    Tensor::from_slice(values, values.len(), device)
}
