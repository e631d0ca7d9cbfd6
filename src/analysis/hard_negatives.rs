//! Hard-negative mining: for each (anchor, positive) pair, corpus texts close to the anchor that
//! are not its positive. The Python library's `util.mine_hard_negatives` (without a cross-encoder
//! or FAISS), step for step: the same defaults, filters, order and output rows.
//!
//! The caller embeds the texts; this module only ranks vectors. [`MiningPlan`] deduplicates the
//! queries and the corpus as Python does, so that each distinct text is embedded once.

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use super::embeddings::Embeddings;
use super::search::top_k_flat;
use super::similarity::Similarity;

/// How negatives are picked among the candidates left after the filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampling {
    /// The most similar ones (Python's "top").
    #[default]
    Top,
    /// Uniformly among those left (Python's "random"; our generator, seeded).
    Random,
}

/// The rows written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// (anchor, positive, negative): one row per negative.
    #[default]
    Triplet,
    /// (anchor, document, label): each positive with 1, then each negative with 0.
    LabeledPair,
}

/// The settings of `mine_hard_negatives`, with its defaults.
#[derive(Debug, Clone)]
pub struct MiningOptions {
    /// Skip this many of the most similar candidates (they may be unlabelled positives).
    pub range_min: usize,
    /// Candidates considered per anchor (default: `range_min + num_negatives + positives`, or
    /// ten times the negatives with a margin or `max_score`).
    pub range_max: Option<usize>,
    /// Candidates scoring above this are not negatives.
    pub max_score: Option<f32>,
    /// Candidates scoring below this are not negatives.
    pub min_score: Option<f32>,
    /// A negative must score at least this much below the positive.
    pub absolute_margin: Option<f32>,
    /// A negative must score below `positive - |positive| * relative_margin`.
    pub relative_margin: Option<f32>,
    pub num_negatives: usize,
    pub sampling: Sampling,
    pub seed: u64,
}

impl Default for MiningOptions {
    fn default() -> Self {
        Self {
            range_min: 0,
            range_max: None,
            max_score: None,
            min_score: None,
            absolute_margin: None,
            relative_margin: None,
            num_negatives: 3,
            sampling: Sampling::Top,
            seed: 42,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MiningError {
    #[error("the data has no (anchor, positive) rows")]
    Empty,
    #[error("{0}")]
    Settings(String),
}

/// The distinct queries and corpus texts of a set of pairs, in Python's order: queries by first
/// appearance; the corpus is the extra corpus then the positives, each text once.
#[derive(Debug, Clone)]
pub struct MiningPlan {
    pub queries: Vec<String>,
    pub corpus: Vec<String>,
    /// For each query, its positives as corpus rows (each once, in the order of the data).
    pub positives: Vec<Vec<usize>>,
}

impl MiningPlan {
    pub fn new(pairs: &[(String, String)], extra_corpus: &[String]) -> Result<Self, MiningError> {
        if pairs.is_empty() {
            return Err(MiningError::Empty);
        }
        let mut corpus_idx = std::collections::HashMap::new();
        let mut corpus = Vec::new();
        for t in extra_corpus.iter().chain(pairs.iter().map(|(_, p)| p)) {
            corpus_idx.entry(t.clone()).or_insert_with(|| {
                corpus.push(t.clone());
                corpus.len() - 1
            });
        }
        let mut query_idx = std::collections::HashMap::new();
        let mut queries = Vec::new();
        let mut positives: Vec<Vec<usize>> = Vec::new();
        for (q, p) in pairs {
            let qi = *query_idx.entry(q.clone()).or_insert_with(|| {
                queries.push(q.clone());
                positives.push(Vec::new());
                queries.len() - 1
            });
            let pi = corpus_idx[p];
            if !positives[qi].contains(&pi) {
                positives[qi].push(pi);
            }
        }
        Ok(Self {
            queries,
            corpus,
            positives,
        })
    }
}

/// One mined row.
#[derive(Debug, Clone, PartialEq)]
pub enum MinedRow {
    Triplet {
        anchor: String,
        positive: String,
        negative: String,
        /// The anchor's cosine with the positive and with the negative.
        scores: (f32, f32),
    },
    Labeled {
        anchor: String,
        document: String,
        label: u8,
        score: f32,
    },
}

/// What was mined, and counts for the report.
#[derive(Debug, Clone)]
pub struct Mined {
    pub rows: Vec<MinedRow>,
    /// Negatives found, of the `queries × num_negatives` asked for.
    pub negatives: usize,
    pub asked: usize,
    /// Mean anchor-negative and anchor-positive cosine over the mined triplets.
    pub mean_negative_score: f32,
    pub mean_positive_score: f32,
}

/// Mines negatives for `plan` from unit-length vectors of its queries and corpus (rows in the
/// plan's order). Settings are checked first, with Python's messages.
pub fn mine_hard_negatives(
    plan: &MiningPlan,
    queries: &Embeddings,
    corpus: &Embeddings,
    options: &MiningOptions,
    format: OutputFormat,
) -> Result<Mined, MiningError> {
    assert_eq!(queries.len(), plan.queries.len(), "a vector per query");
    assert_eq!(corpus.len(), plan.corpus.len(), "a vector per corpus text");
    let o = options;
    let max_positives = plan.positives.iter().map(Vec::len).max().unwrap_or(1);
    if o.num_negatives < 1 {
        return Err(MiningError::Settings(format!(
            "num_negatives must be at least 1, got {}",
            o.num_negatives
        )));
    }
    let filtered =
        o.absolute_margin.is_some() || o.relative_margin.is_some() || o.max_score.is_some();
    let range_max = o.range_max.unwrap_or(if filtered {
        o.range_min + o.num_negatives * 10 + max_positives
    } else {
        o.range_min + o.num_negatives + max_positives
    });
    if o.range_min >= range_max {
        return Err(MiningError::Settings(format!(
            "range_min must be smaller than range_max, got range_min={} and range_max={range_max}",
            o.range_min
        )));
    }
    if o.num_negatives > range_max - o.range_min {
        return Err(MiningError::Settings(format!(
            "cannot mine {} negatives per query: only {} candidates remain after skipping the \
             first range_min={} of range_max={range_max}",
            o.num_negatives,
            range_max - o.range_min,
            o.range_min
        )));
    }

    // The range_max + max_positives best corpus rows of each query, best first.
    let k = range_max + max_positives;
    let hits = top_k_flat(queries, corpus, k, Similarity::Cosine);
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let mut rows = Vec::new();
    let (mut found, mut neg_sum, mut pos_sum, mut triplets) = (0usize, 0f64, 0f64, 0usize);
    for (qi, hits) in hits.iter().enumerate() {
        let q = queries.row(qi);
        let positive_scores: Vec<f32> = plan.positives[qi]
            .iter()
            .map(|&p| Similarity::Cosine.score(q, corpus.row(p)))
            .collect();
        // The hardest positive sets the margins.
        let hardest = positive_scores
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        // Candidates as (corpus row, score); short lists are padded as Python pads with -inf.
        let mut cands: Vec<(usize, f32)> = hits
            .iter()
            .map(|h| {
                let mut s = h.score;
                let keep = !plan.positives[qi].contains(&h.corpus_id)
                    && o.absolute_margin.is_none_or(|m| s + m <= hardest)
                    && o.relative_margin
                        .is_none_or(|m| s <= hardest - hardest.abs() * m)
                    && o.max_score.is_none_or(|m| s <= m)
                    && o.min_score.is_none_or(|m| s >= m);
                if !keep {
                    s = f32::NEG_INFINITY;
                }
                (h.corpus_id, s)
            })
            .collect();
        // torch.topk(scores, range_max): best first; a stable sort keeps the search's order
        // among equal scores (the disqualified ones at the end).
        cands.sort_by(|a, b| b.1.total_cmp(&a.1));
        cands.truncate(range_max);
        let cands: Vec<(usize, f32)> = cands.into_iter().skip(o.range_min).collect();
        let mut chosen: Vec<(usize, f32)> = match o.sampling {
            Sampling::Top => cands.iter().take(o.num_negatives).copied().collect(),
            Sampling::Random => {
                let options = cands.iter().filter(|c| c.1.is_finite()).count();
                let options = options.max(o.num_negatives).min(cands.len());
                let n = o.num_negatives.min(options);
                let mut picked: Vec<(usize, f32)> = sample(&mut rng, options, n)
                    .into_iter()
                    .map(|i| cands[i])
                    .collect();
                picked.sort_by(|a, b| b.1.total_cmp(&a.1));
                picked
            }
        };
        chosen.retain(|c| c.1.is_finite());
        found += chosen.len();
        let query = &plan.queries[qi];
        match format {
            OutputFormat::Triplet => {
                for (&p, &ps) in plan.positives[qi].iter().zip(&positive_scores) {
                    for &(n, ns) in &chosen {
                        rows.push(MinedRow::Triplet {
                            anchor: query.clone(),
                            positive: plan.corpus[p].clone(),
                            negative: plan.corpus[n].clone(),
                            scores: (ps, ns),
                        });
                        pos_sum += f64::from(ps);
                        neg_sum += f64::from(ns);
                        triplets += 1;
                    }
                }
            }
            OutputFormat::LabeledPair => {
                for (&p, &ps) in plan.positives[qi].iter().zip(&positive_scores) {
                    rows.push(MinedRow::Labeled {
                        anchor: query.clone(),
                        document: plan.corpus[p].clone(),
                        label: 1,
                        score: ps,
                    });
                    pos_sum += f64::from(ps);
                }
                for &(n, ns) in &chosen {
                    rows.push(MinedRow::Labeled {
                        anchor: query.clone(),
                        document: plan.corpus[n].clone(),
                        label: 0,
                        score: ns,
                    });
                    neg_sum += f64::from(ns);
                }
                triplets += chosen.len();
            }
        }
    }
    let positives: usize = plan.positives.iter().map(Vec::len).sum();
    let mean = |sum: f64, n: usize| {
        if n == 0 {
            f32::NAN
        } else {
            (sum / n as f64) as f32
        }
    };
    let pos_n = match format {
        OutputFormat::Triplet => triplets,
        OutputFormat::LabeledPair => positives,
    };
    Ok(Mined {
        rows,
        negatives: found,
        asked: plan.queries.len() * o.num_negatives,
        mean_negative_score: mean(neg_sum, triplets),
        mean_positive_score: mean(pos_sum, pos_n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// Queries q0, q1 with positives p0, p1; the corpus also holds n0..n2. Vectors on the unit
    /// circle at known angles, so every cosine is known.
    fn setup() -> (MiningPlan, Embeddings, Embeddings) {
        let pairs = vec![
            ("q0".to_string(), "p0".to_string()),
            ("q1".to_string(), "p1".to_string()),
        ];
        let extra: Vec<String> = ["n0", "n1", "n2"].map(String::from).to_vec();
        let plan = MiningPlan::new(&pairs, &extra).unwrap();
        assert_eq!(plan.corpus, ["n0", "n1", "n2", "p0", "p1"]);
        let at = |deg: f32| unit(&[deg.to_radians().cos(), deg.to_radians().sin()]);
        // q0 at 0°: p0 at 30°, n0 at 10° (closer than the positive), n1 at 40°, n2 at 90°.
        let corpus = Embeddings::from_rows(&[at(10.0), at(40.0), at(90.0), at(30.0), at(180.0)]);
        let queries = Embeddings::from_rows(&[at(0.0), at(180.0)]);
        (plan, queries, corpus)
    }

    fn negatives(m: &Mined) -> Vec<(&str, &str)> {
        m.rows
            .iter()
            .map(|r| match r {
                MinedRow::Triplet {
                    anchor, negative, ..
                } => (anchor.as_str(), negative.as_str()),
                MinedRow::Labeled { .. } => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn the_closest_non_positives_are_taken_and_margins_and_ranges_filter_them() {
        let (plan, q, c) = setup();
        let mine = |o: MiningOptions| {
            mine_hard_negatives(&plan, &q, &c, &o, OutputFormat::Triplet).unwrap()
        };
        let two = MiningOptions {
            num_negatives: 2,
            ..MiningOptions::default()
        };
        // q0: n0 (10°), then n1 (40°); the positive p0 (30°) is never a negative.
        // q1 at 180°: p1 is its positive; then n2 (90°), n1 (140°).
        let m = mine(two.clone());
        assert_eq!(
            negatives(&m),
            [("q0", "n0"), ("q0", "n1"), ("q1", "n2"), ("q1", "n1")]
        );
        assert_eq!(m.negatives, 4);
        // A margin of 0 drops n0, which is closer to q0 than its positive.
        let m = mine(MiningOptions {
            absolute_margin: Some(0.0),
            ..two.clone()
        });
        assert_eq!(negatives(&m)[..2], [("q0", "n1"), ("q0", "n2")]);
        // range_min 1 skips the closest candidate.
        let m = mine(MiningOptions {
            range_min: 1,
            ..two.clone()
        });
        assert_eq!(negatives(&m)[..2], [("q0", "n1"), ("q0", "n2")]);
        // max_score below cos 10° and min_score above cos 90° leave only n1 for q0.
        let m = mine(MiningOptions {
            max_score: Some(0.9),
            min_score: Some(0.1),
            ..two.clone()
        });
        assert_eq!(negatives(&m)[..1], [("q0", "n1")]);
        assert_eq!(m.negatives, 1, "q1 has nothing between 0.1 and 0.9");
        // Random sampling is seeded: the same seed, the same rows.
        let r = MiningOptions {
            sampling: Sampling::Random,
            num_negatives: 1,
            range_max: Some(4),
            ..MiningOptions::default()
        };
        assert_eq!(mine(r.clone()).rows, mine(r).rows);
    }

    #[test]
    fn labeled_pairs_list_the_positive_then_the_negatives() {
        let (plan, q, c) = setup();
        let o = MiningOptions {
            num_negatives: 1,
            ..MiningOptions::default()
        };
        let m = mine_hard_negatives(&plan, &q, &c, &o, OutputFormat::LabeledPair).unwrap();
        let rows: Vec<(&str, &str, u8)> = m
            .rows
            .iter()
            .map(|r| match r {
                MinedRow::Labeled {
                    anchor,
                    document,
                    label,
                    ..
                } => (anchor.as_str(), document.as_str(), *label),
                MinedRow::Triplet { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("q0", "p0", 1),
                ("q0", "n0", 0),
                ("q1", "p1", 1),
                ("q1", "n2", 0)
            ]
        );
    }

    #[test]
    fn settings_python_refuses_are_refused() {
        let (plan, q, c) = setup();
        let refuse = |o: MiningOptions| {
            mine_hard_negatives(&plan, &q, &c, &o, OutputFormat::Triplet).unwrap_err()
        };
        assert!(matches!(
            refuse(MiningOptions {
                num_negatives: 0,
                ..MiningOptions::default()
            }),
            MiningError::Settings(m) if m.contains("num_negatives")
        ));
        assert!(matches!(
            refuse(MiningOptions {
                range_min: 5,
                range_max: Some(5),
                ..MiningOptions::default()
            }),
            MiningError::Settings(m) if m.contains("range_min must be smaller")
        ));
        assert!(matches!(
            refuse(MiningOptions {
                num_negatives: 4,
                range_max: Some(3),
                ..MiningOptions::default()
            }),
            MiningError::Settings(m) if m.contains("cannot mine 4")
        ));
        assert_eq!(MiningPlan::new(&[], &[]).unwrap_err(), MiningError::Empty);
    }
}
