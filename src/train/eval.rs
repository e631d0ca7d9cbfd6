//! Evaluators, computing what the Python library's evaluators compute, under the same names (each
//! checked against the library in `tests/eval_reference.rs`):
//!
//! - scored pairs: Spearman and Pearson correlation of cosine with the gold score
//!   (`EmbeddingSimilarityEvaluator`);
//! - labelled pairs: accuracy, F1, precision, recall at their best cosine thresholds, average
//!   precision and Matthews correlation (`BinaryClassificationEvaluator`);
//! - triplets: the share where the anchor is closer to the positive (`TripletEvaluator`);
//! - positive pairs: retrieval (`InformationRetrievalEvaluator`): each distinct anchor (query) is
//!   a query, each distinct positive (passage) a document, the positives of its rows its relevant
//!   documents; accuracy, precision and recall at 1/3/5/10, NDCG@10, MRR@10, MAP@100;
//! - NLI: the accuracy of the classifier the softmax loss trained.
//!
//! The first metric of each is the one to watch (the library's primary metric).

use candle_core::Tensor;

use super::data::{DataKind, Dataset, Example};
use super::losses::softmax_logits;
use crate::analysis::embeddings::Embeddings;
use crate::analysis::mining::{MiningOptions, paraphrase_mining};
use crate::analysis::search::top_k_flat;
use crate::analysis::similarity::Similarity;
use crate::model::{Prompt, Result, SentenceEncoder};

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

/// Pearson's correlation; NaN when either side is constant or holds a non-finite value.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return f64::NAN;
    }
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
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    pearson(&ranks(x), &ranks(y))
}

/// The metric to watch for a kind of data under a model's similarity (`None`: nothing to
/// measure, e.g. unlabelled sentences), named as the library names it.
pub fn primary_metric(kind: DataKind, sim: Similarity) -> Option<String> {
    match kind {
        DataKind::ScoredPairs => Some(format!("spearman_{sim}")),
        DataKind::LabeledPairs => Some(format!("{sim}_ap")),
        DataKind::Nli => Some("classifier_accuracy".into()),
        DataKind::Pairs => Some(format!("{sim}_ndcg@10")),
        DataKind::Triplets | DataKind::MarginTriplets => Some(format!("{sim}_accuracy")),
        DataKind::Texts => None,
        DataKind::Parallel => Some("mean_accuracy".into()),
    }
}

/// How to embed the texts of an evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub batch: usize,
    /// The prompt before every text (by default the model's default prompt, as in Python).
    pub prompt: Prompt,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            batch: 32,
            prompt: Prompt::ModelDefault,
        }
    }
}

/// Vectors of one column of every example.
fn column(
    encoder: &SentenceEncoder,
    data: &Dataset,
    col: usize,
    opts: &EvalOptions,
) -> Result<Vec<Vec<f32>>> {
    let texts: Vec<&str> = data.examples.iter().map(|e| e.texts()[col]).collect();
    encoder.encode_prompted(&texts, &opts.prompt, opts.batch, &mut |_, _| {})
}

/// The Python library's `TranslationEvaluator`: how often a source's nearest target (cosine)
/// is its own translation, and the other way round.
fn translation_accuracy(source: &[Vec<f32>], target: &[Vec<f32>]) -> Metrics {
    let (s, t) = (Embeddings::from_rows(source), Embeddings::from_rows(target));
    // The best hit of each row; equal scores go to the lower row, as torch.argmax's first maximum.
    let hits = |a: &Embeddings, b: &Embeddings| {
        let best = top_k_flat(a, b, 1, Similarity::Cosine);
        best.iter()
            .enumerate()
            .filter(|(i, h)| h.first().is_some_and(|h| h.corpus_id == *i))
            .count() as f64
            / a.len() as f64
    };
    let (src2trg, trg2src) = (hits(&s, &t), hits(&t, &s));
    vec![
        ("src2trg_accuracy".into(), src2trg),
        ("trg2src_accuracy".into(), trg2src),
        ("mean_accuracy".into(), (src2trg + trg2src) / 2.0),
    ]
}

/// A trained NLI classifier (`W [u; v; |u-v|] + b`).
pub struct Classifier<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
}

/// Evaluates `encoder` on `data` (in evaluation mode: no dropout), comparing vectors with the
/// model's similarity function.
pub fn evaluate(
    encoder: &SentenceEncoder,
    data: &Dataset,
    classifier: Option<&Classifier>,
    opts: &EvalOptions,
) -> Result<Metrics> {
    let n = data.examples.len();
    let sim = encoder.info().similarity;
    Ok(match data.kind {
        DataKind::ScoredPairs => {
            let (a, b) = (
                column(encoder, data, 0, opts)?,
                column(encoder, data, 1, opts)?,
            );
            let cos: Vec<f64> = (0..n).map(|i| sim.score(&a[i], &b[i]) as f64).collect();
            let gold: Vec<f64> = data
                .examples
                .iter()
                .map(|e| match e {
                    Example::Scored { score, .. } => *score as f64,
                    _ => unreachable!("scored pairs"),
                })
                .collect();
            vec![
                (format!("spearman_{sim}"), spearman(&cos, &gold)),
                (format!("pearson_{sim}"), pearson(&cos, &gold)),
            ]
        }
        DataKind::LabeledPairs => {
            let (a, b) = (
                column(encoder, data, 0, opts)?,
                column(encoder, data, 1, opts)?,
            );
            let scores: Vec<f32> = (0..n).map(|i| sim.score(&a[i], &b[i])).collect();
            let labels: Vec<bool> = data
                .examples
                .iter()
                .map(|e| matches!(e, Example::Labeled { label, .. } if *label == 1.0))
                .collect();
            binary_classification(&scores, &labels, sim)
        }
        DataKind::Triplets | DataKind::MarginTriplets => {
            let (a, p, q) = (
                column(encoder, data, 0, opts)?,
                column(encoder, data, 1, opts)?,
                column(encoder, data, 2, opts)?,
            );
            let hits = (0..n)
                .filter(|&i| sim.score(&a[i], &p[i]) > sim.score(&a[i], &q[i]))
                .count();
            vec![(format!("{sim}_accuracy"), hits as f64 / n as f64)]
        }
        DataKind::Pairs => {
            // Queries and documents by their text, in order of first appearance.
            let mut queries: Vec<&str> = Vec::new();
            let mut docs: Vec<&str> = Vec::new();
            let mut relevant: Vec<Vec<usize>> = Vec::new();
            for e in &data.examples {
                let t = e.texts();
                let q = match queries.iter().position(|x| *x == t[0]) {
                    Some(q) => q,
                    None => {
                        queries.push(t[0]);
                        relevant.push(Vec::new());
                        queries.len() - 1
                    }
                };
                let d = match docs.iter().position(|x| *x == t[1]) {
                    Some(d) => d,
                    None => {
                        docs.push(t[1]);
                        docs.len() - 1
                    }
                };
                if !relevant[q].contains(&d) {
                    relevant[q].push(d);
                }
            }
            let embed = |texts: &[&str]| {
                encoder.encode_prompted(texts, &opts.prompt, opts.batch, &mut |_, _| {})
            };
            information_retrieval(&embed(&queries)?, &embed(&docs)?, &relevant, sim)
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
                column(encoder, data, 0, opts)?,
                column(encoder, data, 1, opts)?,
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
        DataKind::Parallel => {
            let (s, t) = (
                column(encoder, data, 0, opts)?,
                column(encoder, data, 1, opts)?,
            );
            translation_accuracy(&s, &t)
        }
        DataKind::Texts => {
            return Err(crate::model::ModelError::Invalid(
                "unlabelled sentences have no metric; evaluate on scored pairs, labelled pairs, pairs or triplets"
                    .into(),
            ));
        }
    })
}

/// `BinaryClassificationEvaluator`'s metrics for similarity scores (higher: more similar) and
/// 0/1 labels: accuracy and F1 at their best thresholds (midpoints between neighbouring scores,
/// as the library picks them), precision and recall at the F1 threshold, average precision
/// (scikit-learn's `average_precision_score`) and Matthews correlation at the F1 threshold.
/// Thresholds of the distance similarities are given as distances, as the library does.
pub fn binary_classification(scores: &[f32], labels: &[bool], sim: Similarity) -> Metrics {
    let n = scores.len();
    let mut rows: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    // Highest score first; a stable sort keeps ties in input order, as Python's `sorted`.
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = labels.iter().filter(|l| **l).count();
    let negatives = n - positives;
    let midpoint = |i: usize| -> f32 {
        let last = i + 1 == rows.len();
        if last {
            return rows[i].0;
        }
        let t = (rows[i].0 + rows[i + 1].0) / 2.0;
        // A rounded midpoint must not include the next score group.
        if t == rows[i + 1].0 { rows[i].0 } else { t }
    };

    // Accuracy: start by calling every pair dissimilar.
    let (mut best_acc, mut acc_threshold) = (0.0f64, -1.0f32);
    if let Some(first) = rows.first() {
        best_acc = negatives as f64 / n as f64;
        acc_threshold = first.0.next_up();
    }
    let (mut pos_so_far, mut neg_left) = (0usize, negatives);
    // F1.
    let (mut best_f1, mut best_p, mut best_r, mut f1_threshold) = (0.0f64, 0.0f64, 0.0f64, 0.0f32);
    let (mut extracted, mut correct) = (0usize, 0usize);
    for i in 0..rows.len() {
        let (score, label) = rows[i];
        extracted += 1;
        if label {
            pos_so_far += 1;
            correct += 1;
        } else {
            neg_left -= 1;
        }
        if i + 1 < rows.len() && rows[i + 1].0 == score {
            continue; // inside a group of equal scores
        }
        let acc = (pos_so_far + neg_left) as f64 / n as f64;
        if acc > best_acc {
            best_acc = acc;
            acc_threshold = midpoint(i);
        }
        if correct > 0 {
            let p = correct as f64 / extracted as f64;
            let r = correct as f64 / positives as f64;
            let f1 = 2.0 * p * r / (p + r);
            if f1 > best_f1 {
                (best_f1, best_p, best_r) = (f1, p, r);
                f1_threshold = midpoint(i);
            }
        }
    }

    // Average precision over the distinct score thresholds, highest first.
    let mut ap = 0.0f64;
    let (mut tp, mut fp, mut prev_recall) = (0usize, 0usize, 0.0f64);
    for i in 0..rows.len() {
        if rows[i].1 {
            tp += 1;
        } else {
            fp += 1;
        }
        if i + 1 < rows.len() && rows[i + 1].0 == rows[i].0 {
            continue;
        }
        if positives > 0 {
            let recall = tp as f64 / positives as f64;
            ap += (recall - prev_recall) * tp as f64 / (tp + fp) as f64;
            prev_recall = recall;
        }
    }

    // Matthews correlation of "score >= F1 threshold" against the labels.
    let (mut tp, mut tn, mut fp, mut fn_) = (0f64, 0f64, 0f64, 0f64);
    for (s, l) in scores.iter().zip(labels) {
        match (*s >= f1_threshold, *l) {
            (true, true) => tp += 1.0,
            (false, false) => tn += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fn_ += 1.0,
        }
    }
    let denom = ((tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_)).sqrt();
    let mcc = if denom == 0.0 {
        0.0
    } else {
        (tp * tn - fp * fn_) / denom
    };
    let shown = |t: f32| -> f64 {
        match sim {
            Similarity::Euclidean | Similarity::Manhattan => -t as f64,
            _ => t as f64,
        }
    };
    vec![
        (format!("{sim}_ap"), ap),
        (format!("{sim}_accuracy"), best_acc),
        (format!("{sim}_accuracy_threshold"), shown(acc_threshold)),
        (format!("{sim}_f1"), best_f1),
        (format!("{sim}_f1_threshold"), shown(f1_threshold)),
        (format!("{sim}_precision"), best_p),
        (format!("{sim}_recall"), best_r),
        (format!("{sim}_mcc"), mcc),
    ]
}

/// `ParaphraseMiningEvaluator`'s metrics: the pairs [`paraphrase_mining`] finds, ranked by
/// score, against known duplicates. Average precision over the ranking, and the best F1 over
/// score thresholds with its precision, recall and threshold (the midpoint between the last
/// score kept and the next), named `{name}_average_precision`, `{name}_f1`,
/// `{name}_precision`, `{name}_recall`, `{name}_threshold` (without the prefix when `name` is
/// empty), average precision first (the library's primary metric).
///
/// Input: row `i` of `embeddings` is the vector of the sentence whose id is `ids[i]` (the
/// evaluator's `sentences_map`, in its order); `duplicates` are pairs of ids known to be
/// paraphrases, in either order (a pair naming an id not in `ids` is ignored, and the list is
/// taken as given, without transitive closure, as the evaluator's defaults do). `opts` are the
/// mining options (the evaluator's defaults: `MiningOptions::default()`, top 100 per sentence,
/// at most 500,000 pairs). Pairs are scored by cosine whatever the model's similarity, as the
/// evaluator (its `paraphrase_mining` uses `cos_sim`).
pub fn paraphrase_mining_metrics<S: AsRef<str>, T: AsRef<str>>(
    embeddings: &Embeddings,
    ids: &[S],
    duplicates: &[(T, T)],
    opts: &MiningOptions,
    name: &str,
) -> Metrics {
    use std::collections::HashSet;
    assert_eq!(embeddings.len(), ids.len(), "one vector per sentence id");
    let known: HashSet<&str> = ids.iter().map(AsRef::as_ref).collect();
    let sorted = |a: &'_ str, b: &'_ str| -> (String, String) {
        if a <= b {
            (a.to_string(), b.to_string())
        } else {
            (b.to_string(), a.to_string())
        }
    };
    let positives: HashSet<(String, String)> = duplicates
        .iter()
        .map(|(a, b)| (a.as_ref(), b.as_ref()))
        .filter(|(a, b)| known.contains(a) && known.contains(b))
        .map(|(a, b)| sorted(a, b))
        .collect();
    let total = positives.len();
    let pairs = paraphrase_mining(embeddings, Similarity::Cosine, opts, &mut |_, _| true)
        .expect("not cancelled");

    let (mut extracted, mut correct, mut previous) = (0usize, 0usize, 0usize);
    let (mut best_f1, mut best_p, mut best_r, mut threshold) = (0f64, 0f64, 0f64, 0f64);
    let mut ap = 0f64;
    for (idx, p) in pairs.iter().enumerate() {
        extracted += 1;
        if positives.contains(&sorted(ids[p.i].as_ref(), ids[p.j].as_ref())) {
            correct += 1;
        }
        // Equal scores are one step of the ranking.
        if pairs.get(idx + 1).is_some_and(|q| q.score == p.score) {
            continue;
        }
        if correct > previous {
            let precision = correct as f64 / extracted as f64;
            let recall = if total > 0 {
                correct as f64 / total as f64
            } else {
                0.0
            };
            let f1 = 2.0 * precision * recall / (precision + recall);
            ap += precision * (correct - previous) as f64;
            if f1 > best_f1 {
                (best_f1, best_p, best_r) = (f1, precision, recall);
                let next = pairs[(idx + 1).min(pairs.len() - 1)].score;
                threshold = (p.score as f64 + next as f64) / 2.0;
            }
        }
        previous = correct;
    }
    let ap = if total > 0 { ap / total as f64 } else { 0.0 };
    let key = |k: &str| {
        if name.is_empty() {
            k.to_string()
        } else {
            format!("{name}_{k}")
        }
    };
    vec![
        (key("average_precision"), ap),
        (key("f1"), best_f1),
        (key("precision"), best_p),
        (key("recall"), best_r),
        (key("threshold"), threshold),
    ]
}

/// Cut-offs of the retrieval metrics, as the library's defaults.
const ACCURACY_AT: [usize; 4] = [1, 3, 5, 10];
const NDCG_AT: usize = 10;
const MRR_AT: usize = 10;
const MAP_AT: usize = 100;

/// `InformationRetrievalEvaluator`'s metrics: each query's documents ranked by `sim` (ties by
/// position), `relevant[q]` the documents relevant to query `q`. Queries without a relevant
/// document are left out, as the library does.
pub fn information_retrieval(
    queries: &[Vec<f32>],
    docs: &[Vec<f32>],
    relevant: &[Vec<usize>],
    sim: Similarity,
) -> Metrics {
    let mut hits_at = [0f64; 4];
    let mut precision_at = [0f64; 4];
    let mut recall_at = [0f64; 4];
    let (mut ndcg, mut mrr, mut map) = (0f64, 0f64, 0f64);
    let mut counted = 0usize;
    let dcg = |rel: &[bool]| -> f64 {
        rel.iter()
            .enumerate()
            .filter(|(_, r)| **r)
            .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
            .sum()
    };
    for (q, rel) in queries.iter().zip(relevant) {
        if rel.is_empty() {
            continue;
        }
        counted += 1;
        let mut ranked: Vec<(f32, usize)> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (sim.score(q, d), i))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked.truncate(MAP_AT);
        let is_rel: Vec<bool> = ranked.iter().map(|(_, i)| rel.contains(i)).collect();
        for (j, &k) in ACCURACY_AT.iter().enumerate() {
            let top = &is_rel[..k.min(is_rel.len())];
            let found = top.iter().filter(|r| **r).count();
            if found > 0 {
                hits_at[j] += 1.0;
            }
            precision_at[j] += found as f64 / k as f64;
            recall_at[j] += found as f64 / rel.len() as f64;
        }
        let top = &is_rel[..NDCG_AT.min(is_rel.len())];
        let ideal = vec![true; rel.len().min(NDCG_AT)];
        ndcg += dcg(top) / dcg(&ideal);
        if let Some(rank) = is_rel.iter().take(MRR_AT).position(|r| *r) {
            mrr += 1.0 / (rank + 1) as f64;
        }
        let (mut found, mut sum) = (0usize, 0f64);
        for (rank, r) in is_rel.iter().enumerate() {
            if *r {
                found += 1;
                sum += found as f64 / (rank + 1) as f64;
            }
        }
        map += sum / rel.len().min(MAP_AT) as f64;
    }
    let n = counted.max(1) as f64;
    let mut m: Metrics = vec![
        (format!("{sim}_ndcg@{NDCG_AT}"), ndcg / n),
        (format!("{sim}_mrr@{MRR_AT}"), mrr / n),
        (format!("{sim}_map@{MAP_AT}"), map / n),
    ];
    for (j, k) in ACCURACY_AT.iter().enumerate() {
        m.push((format!("{sim}_accuracy@{k}"), hits_at[j] / n));
    }
    for (j, k) in ACCURACY_AT.iter().enumerate() {
        m.push((format!("{sim}_precision@{k}"), precision_at[j] / n));
    }
    for (j, k) in ACCURACY_AT.iter().enumerate() {
        m.push((format!("{sim}_recall@{k}"), recall_at[j] / n));
    }
    m
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

    #[test]
    fn a_non_finite_value_gives_no_correlation() {
        // Every cosine NaN once gave a Spearman of 0.0991 (NaN sorted as a rank).
        let x = [f64::NAN, f64::NAN, f64::NAN];
        assert!(spearman(&x, &[1.0, 2.0, 3.0]).is_nan());
        assert!(pearson(&[1.0, f64::INFINITY, 2.0], &[1.0, 2.0, 3.0]).is_nan());
    }

    #[test]
    fn binary_metrics_by_hand() {
        // sklearn: average_precision_score([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) -> 0.8333333333
        // matthews_corrcoef([1, 0, 1, 0], [1, 1, 1, 0]) -> 0.5773502691896258
        let m = binary_classification(
            &[0.9, 0.8, 0.7, 0.1],
            &[true, false, true, false],
            Similarity::Cosine,
        );
        let get = |k: &str| m.iter().find(|(n, _)| n == k).unwrap().1;
        assert!((get("cosine_ap") - 0.833_333_333_3).abs() < 1e-9);
        // Accuracy: 3 of 4 with the threshold between 0.9 and 0.8 or between 0.7 and 0.1.
        assert_eq!(get("cosine_accuracy"), 0.75);
        assert!((get("cosine_accuracy_threshold") - 0.85).abs() < 1e-6);
        // F1: best with the three highest called similar: p 2/3, r 1, f1 0.8.
        assert!((get("cosine_f1") - 0.8).abs() < 1e-12);
        assert!((get("cosine_f1_threshold") - 0.4).abs() < 1e-6);
        assert!((get("cosine_mcc") - 0.577_350_269_189_625_8).abs() < 1e-12);
    }

    #[test]
    fn paraphrase_mining_metrics_by_hand() {
        // Pairs by cosine: (a, b) 0.8, (b, c) 0.6, (a, c) 0 and (c, d) 0 (one step), (b, d)
        // -0.8, (a, d) -1. Duplicates a-b and d-c (x is not a sentence: ignored).
        let e = Embeddings::from_rows(&[[1.0, 0.0], [0.8, 0.6], [0.0, 2.0], [-3.0, 0.0]]);
        let dups = [("a", "b"), ("d", "c"), ("b", "x")];
        let m = paraphrase_mining_metrics(
            &e,
            &["a", "b", "c", "d"],
            &dups,
            &MiningOptions::default(),
            "toy",
        );
        let names: Vec<&str> = m.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "toy_average_precision",
                "toy_f1",
                "toy_precision",
                "toy_recall",
                "toy_threshold"
            ]
        );
        let get = |k: &str| m.iter().find(|(n, _)| n == k).unwrap().1;
        // AP: precision 1 at the first hit, 2/4 at the second (after the tied step): 1.5 / 2.
        assert!((get("toy_average_precision") - 0.75).abs() < 1e-12);
        // F1 2/3 first at one pair kept (p 1, r 1/2; the tie at four pairs does not replace
        // it), threshold between 0.8 and 0.6.
        assert!((get("toy_f1") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!((get("toy_precision"), get("toy_recall")), (1.0, 0.5));
        assert!((get("toy_threshold") - 0.7).abs() < 1e-6);
        let unnamed = paraphrase_mining_metrics(
            &e,
            &["a", "b", "c", "d"],
            &dups,
            &MiningOptions::default(),
            "",
        );
        assert_eq!(unnamed[0].0, "average_precision");
    }

    #[test]
    fn retrieval_metrics_by_hand() {
        // Query 0: documents ranked 1, 0, 2 (cosines 1, 0.6, 0), relevant {0}: the hit at rank 2.
        let q = vec![vec![1.0f32, 0.0]];
        let d = vec![vec![0.6f32, 0.8], vec![1.0, 0.0], vec![0.0, 1.0]];
        let m = information_retrieval(&q, &d, &[vec![0]], Similarity::Cosine);
        let get = |k: &str| m.iter().find(|(n, _)| n == k).unwrap().1;
        assert_eq!(get("cosine_accuracy@1"), 0.0);
        assert_eq!(get("cosine_accuracy@3"), 1.0);
        assert_eq!(get("cosine_mrr@10"), 0.5);
        // NDCG: (1 / log2(3)) / 1.
        assert!((get("cosine_ndcg@10") - 1.0 / 3f64.log2()).abs() < 1e-12);
        assert!((get("cosine_precision@3") - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(get("cosine_map@100"), 0.5);
    }
}
