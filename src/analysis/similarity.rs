//! Similarity between sentence vectors: cosine (the default), dot product, and the negated
//! euclidean and manhattan distances, as `sentence_transformers.SimilarityFunction` defines them.

use std::fmt;
use std::str::FromStr;

/// How a model compares two vectors (`similarity_fn_name` in its
/// `config_sentence_transformers.json`). Higher is more similar for every one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Similarity {
    #[default]
    Cosine,
    Dot,
    /// Minus the euclidean distance.
    Euclidean,
    /// Minus the manhattan (L1) distance.
    Manhattan,
}

impl Similarity {
    pub const ALL: [Similarity; 4] = [
        Similarity::Cosine,
        Similarity::Dot,
        Similarity::Euclidean,
        Similarity::Manhattan,
    ];

    /// The library's name (`similarity_fn_name`, and the suffix of evaluator metrics).
    pub fn name(self) -> &'static str {
        match self {
            Similarity::Cosine => "cosine",
            Similarity::Dot => "dot",
            Similarity::Euclidean => "euclidean",
            Similarity::Manhattan => "manhattan",
        }
    }

    /// The similarity of two vectors, accumulated in f64.
    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Similarity::Cosine => cosine(a, b),
            Similarity::Dot => a
                .iter()
                .zip(b)
                .map(|(x, y)| *x as f64 * *y as f64)
                .sum::<f64>() as f32,
            Similarity::Euclidean => {
                -(a.iter()
                    .zip(b)
                    .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                    .sum::<f64>()
                    .sqrt() as f32)
            }
            Similarity::Manhattan => {
                -(a.iter()
                    .zip(b)
                    .map(|(x, y)| (*x as f64 - *y as f64).abs())
                    .sum::<f64>() as f32)
            }
        }
    }

    /// The N x N matrix of similarities, row-major.
    pub fn matrix(self, vectors: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let n = vectors.len();
        let mut m = vec![vec![0f32; n]; n];
        for i in 0..n {
            for j in i..n {
                let c = self.score(&vectors[i], &vectors[j]);
                m[i][j] = c;
                m[j][i] = c;
            }
        }
        m
    }

    /// True when values lie in [-1, 1] (a heat map can use a fixed scale).
    pub fn bounded(self) -> bool {
        self == Similarity::Cosine
    }
}

impl fmt::Display for Similarity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Similarity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Similarity::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                format!("unknown similarity `{s}` (cosine, dot, euclidean or manhattan)")
            })
    }
}

/// Cosine similarity of two vectors, accumulated in f64; 0 when either vector is all zeros
/// (norms are floored at 1e-12, as `sentence_transformers.util.cos_sim` does).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += x as f64 * y as f64;
        na += x as f64 * x as f64;
        nb += y as f64 * y as f64;
    }
    let denom = na.sqrt().max(1e-12) * nb.sqrt().max(1e-12);
    (dot / denom) as f32
}

/// The N x N matrix of cosine similarities, row-major.
pub fn cosine_matrix(vectors: &[Vec<f32>]) -> Vec<Vec<f32>> {
    Similarity::Cosine.matrix(vectors)
}

/// The `k` rows most similar to row `i` of a similarity matrix (itself excluded), best first.
pub fn top_neighbours(matrix: &[Vec<f32>], i: usize, k: usize) -> Vec<(usize, f32)> {
    let Some(row) = matrix.get(i) else {
        return Vec::new();
    };
    let mut others: Vec<(usize, f32)> = row
        .iter()
        .copied()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .collect();
    others.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    others.truncate(k);
    others
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_best_first_without_self() {
        let m = vec![
            vec![1.0, 0.2, 0.9, -0.5],
            vec![0.2, 1.0, 0.1, 0.0],
            vec![0.9, 0.1, 1.0, 0.3],
            vec![-0.5, 0.0, 0.3, 1.0],
        ];
        assert_eq!(top_neighbours(&m, 0, 2), vec![(2, 0.9), (1, 0.2)]);
        assert_eq!(top_neighbours(&m, 3, 10).len(), 3);
        assert!(top_neighbours(&m, 9, 2).is_empty());
    }

    #[test]
    fn cosine_by_hand() {
        assert!((cosine(&[1., 0.], &[0., 1.])).abs() < 1e-7);
        assert!((cosine(&[1., 2.], &[2., 4.]) - 1.0).abs() < 1e-7);
        assert!((cosine(&[1., 0.], &[-1., 0.]) + 1.0).abs() < 1e-7);
        // 3-4-5 triangle: cos = (3*4) / (5 * 4) = 0.6
        assert!((cosine(&[3., 4.], &[4., 0.]) - 0.6).abs() < 1e-7);
        assert_eq!(cosine(&[0., 0.], &[1., 1.]), 0.0);
    }

    #[test]
    fn every_similarity_by_hand() {
        let (a, b) = ([3.0f32, 4.0], [0.0f32, 0.0]);
        assert_eq!(Similarity::Dot.score(&a, &[1.0, 2.0]), 11.0);
        assert_eq!(Similarity::Euclidean.score(&a, &b), -5.0);
        assert_eq!(Similarity::Manhattan.score(&a, &b), -7.0);
        assert_eq!("dot".parse::<Similarity>(), Ok(Similarity::Dot));
        assert!("dot_product".parse::<Similarity>().is_err());
    }

    #[test]
    fn matrix_is_symmetric_with_unit_diagonal() {
        let v = vec![vec![1., 2., 3.], vec![-1., 0.5, 2.], vec![0.3, 0.3, -0.1]];
        let m = cosine_matrix(&v);
        for (i, row) in m.iter().enumerate() {
            assert!((row[i] - 1.0).abs() < 1e-6);
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(v, m[j][i]);
            }
        }
    }
}
