//! Exact semantic search: every query against every corpus vector, the best `k` kept. What the
//! Python library's `util.semantic_search` returns, computed in parallel over queries.

use rayon::prelude::*;

use super::similarity::Similarity;

/// One hit: the corpus row and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub corpus_id: usize,
    pub score: f32,
}

/// For each query, the `k` corpus vectors with the highest `sim` score, best first; equal scores
/// by corpus row. Unit-length vectors make cosine a dot product; the model's similarity
/// function is used as it is.
pub fn top_k(
    queries: &[Vec<f32>],
    corpus: &[Vec<f32>],
    k: usize,
    sim: Similarity,
) -> Vec<Vec<Hit>> {
    let k = k.min(corpus.len());
    queries
        .par_iter()
        .map(|q| {
            let mut hits: Vec<Hit> = corpus
                .iter()
                .enumerate()
                .map(|(i, c)| Hit {
                    corpus_id: i,
                    score: sim.score(q, c),
                })
                .collect();
            let order = |a: &Hit, b: &Hit| {
                b.score
                    .total_cmp(&a.score)
                    .then(a.corpus_id.cmp(&b.corpus_id))
            };
            if k > 0 && k < hits.len() {
                hits.select_nth_unstable_by(k - 1, order);
                hits.truncate(k);
            }
            hits.sort_by(order);
            hits.truncate(k);
            hits
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_first_ties_by_row_and_k_capped() {
        let corpus = vec![
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![1.0, 0.0],
            vec![-1.0, 0.0],
        ];
        let hits = top_k(&[vec![1.0, 0.0]], &corpus, 3, Similarity::Cosine);
        let ids: Vec<usize> = hits[0].iter().map(|h| h.corpus_id).collect();
        assert_eq!(ids, [0, 2, 1]);
        assert!((hits[0][0].score - 1.0).abs() < 1e-6);
        assert_eq!(
            top_k(&[vec![1.0, 0.0]], &corpus, 10, Similarity::Cosine)[0].len(),
            4
        );
        assert!(top_k(&[vec![1.0, 0.0]], &[], 5, Similarity::Cosine)[0].is_empty());
    }
}
