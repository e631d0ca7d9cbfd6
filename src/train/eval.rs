//! Evaluators, with the Python library's metric names: scored pairs give the Spearman and Pearson
//! correlation of cosine with the gold score (`EmbeddingSimilarityEvaluator`), triplets the share
//! where the anchor is closer to the positive (`TripletEvaluator`), NLI the accuracy of the
//! trained classifier, labelled pairs the accuracy at the best cosine threshold, and positive
//! pairs retrieval accuracy@1 and MRR@10 over all positives of the file.

use candle_core::Tensor;

use super::data::{DataKind, Dataset, Example};
use super::losses::softmax_logits;
use crate::analysis::similarity::cosine;
use crate::model::{Result, SentenceEncoder};

/// Named metric values, the first being the one to watch.
pub type Metrics = Vec<(String, f64)>;

/// Average ranks (1-based), ties sharing the mean of their positions.
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[idx[k]] = avg;
        }
        i = j + 1;
    }
    r
}

pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx.sqrt() * syy.sqrt())
}

/// Spearman's rank correlation (Pearson of the average ranks), as `scipy.stats.spearmanr`.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

/// What a kind of data can be evaluated with (`None`: nothing, e.g. unlabelled sentences).
pub fn primary_metric(kind: DataKind) -> Option<&'static str> {
    match kind {
        DataKind::ScoredPairs => Some("spearman_cosine"),
        DataKind::LabeledPairs => Some("cosine_accuracy_best_threshold"),
        DataKind::Nli => Some("classifier_accuracy"),
        DataKind::Pairs => Some("accuracy@1"),
        DataKind::Triplets => Some("cosine_accuracy"),
        DataKind::Texts => None,
    }
}

/// Vectors of one column of every example.
fn column(
    encoder: &SentenceEncoder,
    data: &Dataset,
    col: usize,
    batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let texts: Vec<&str> = data.examples.iter().map(|e| e.texts()[col]).collect();
    encoder.encode(&texts, batch, &mut |_, _| {})
}

/// A trained NLI classifier (`W [u; v; |u-v|] + b`).
pub struct Classifier<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
}

/// Evaluates `encoder` on `data` (in evaluation mode: no dropout).
pub fn evaluate(
    encoder: &SentenceEncoder,
    data: &Dataset,
    classifier: Option<&Classifier>,
    batch: usize,
) -> Result<Metrics> {
    let n = data.examples.len();
    Ok(match data.kind {
        DataKind::ScoredPairs => {
            let (a, b) = (
                column(encoder, data, 0, batch)?,
                column(encoder, data, 1, batch)?,
            );
            let cos: Vec<f64> = (0..n).map(|i| cosine(&a[i], &b[i]) as f64).collect();
            let gold: Vec<f64> = data
                .examples
                .iter()
                .map(|e| match e {
                    Example::Scored { score, .. } => *score as f64,
                    _ => unreachable!("scored pairs"),
                })
                .collect();
            vec![
                ("spearman_cosine".into(), spearman(&cos, &gold)),
                ("pearson_cosine".into(), pearson(&cos, &gold)),
            ]
        }
        DataKind::LabeledPairs => {
            let (a, b) = (
                column(encoder, data, 0, batch)?,
                column(encoder, data, 1, batch)?,
            );
            let mut scored: Vec<(f32, bool)> = data
                .examples
                .iter()
                .enumerate()
                .map(|(i, e)| match e {
                    Example::Labeled { label, .. } => (cosine(&a[i], &b[i]), *label == 1.0),
                    _ => unreachable!("labelled pairs"),
                })
                .collect();
            scored.sort_by(|x, y| y.0.total_cmp(&x.0));
            // Threshold after position k: the first k are called similar.
            let positives = scored.iter().filter(|s| s.1).count();
            let mut correct = n - positives; // k = 0: everything called dissimilar
            let mut best = correct;
            for s in &scored {
                if s.1 {
                    correct += 1;
                } else {
                    correct -= 1;
                }
                best = best.max(correct);
            }
            vec![(
                "cosine_accuracy_best_threshold".into(),
                best as f64 / n as f64,
            )]
        }
        DataKind::Triplets => {
            let (a, p, q) = (
                column(encoder, data, 0, batch)?,
                column(encoder, data, 1, batch)?,
                column(encoder, data, 2, batch)?,
            );
            let hits = (0..n)
                .filter(|&i| cosine(&a[i], &p[i]) > cosine(&a[i], &q[i]))
                .count();
            vec![("cosine_accuracy".into(), hits as f64 / n as f64)]
        }
        DataKind::Pairs => {
            let (q, d) = (
                column(encoder, data, 0, batch)?,
                column(encoder, data, 1, batch)?,
            );
            let (mut top1, mut mrr) = (0usize, 0f64);
            for i in 0..n {
                let own = cosine(&q[i], &d[i]);
                let rank = 1
                    + (0..n)
                        .filter(|&j| j != i && cosine(&q[i], &d[j]) > own)
                        .count();
                if rank == 1 {
                    top1 += 1;
                }
                if rank <= 10 {
                    mrr += 1.0 / rank as f64;
                }
            }
            vec![
                ("accuracy@1".into(), top1 as f64 / n as f64),
                ("mrr@10".into(), mrr / n as f64),
            ]
        }
        DataKind::Nli => {
            let Some(c) = classifier else {
                return Err(crate::model::ModelError::Invalid(
                    "NLI data is evaluated with the classifier trained by the softmax loss; \
                     `eval` alone has none (use scored pairs, labelled pairs, pairs or triplets)"
                        .into(),
                ));
            };
            let (a, b) = (
                column(encoder, data, 0, batch)?,
                column(encoder, data, 1, batch)?,
            );
            let dev = c.weight.device();
            let to_t = |v: &Vec<Vec<f32>>| -> Result<Tensor> {
                let dim = v[0].len();
                Ok(Tensor::from_vec(v.concat(), (v.len(), dim), dev)?)
            };
            let logits =
                softmax_logits(&to_t(&a)?, &to_t(&b)?, &c.weight.detach(), &c.bias.detach())?;
            let predicted: Vec<u32> = logits.argmax(1)?.to_vec1()?;
            let hits = data
                .examples
                .iter()
                .zip(&predicted)
                .filter(|(e, p)| matches!(e, Example::Nli { label, .. } if label == *p))
                .count();
            vec![("classifier_accuracy".into(), hits as f64 / n as f64)]
        }
        DataKind::Texts => {
            return Err(crate::model::ModelError::Invalid(
                "unlabelled sentences have no metric; evaluate on scored pairs, labelled pairs, pairs or triplets"
                    .into(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlations_match_scipy() {
        // scipy.stats.spearmanr([1, 2, 2, 4, 5], [2, 1, 4, 3, 5]).statistic -> 0.6668859288553503
        // numpy.corrcoef([1, 2, 2, 4, 5], [2, 1, 4, 3, 5])[0, 1] -> 0.6735753140545633
        let x = [1.0, 2.0, 2.0, 4.0, 5.0];
        let y = [2.0, 1.0, 4.0, 3.0, 5.0];
        assert!((spearman(&x, &y) - 0.666_885_928_855_350_3).abs() < 1e-12);
        assert!((pearson(&x, &y) - 0.673_575_314_054_563_3).abs() < 1e-12);
        assert_eq!(ranks(&[10.0, 20.0, 20.0, 5.0]), vec![2.0, 3.5, 3.5, 1.0]);
    }
}
