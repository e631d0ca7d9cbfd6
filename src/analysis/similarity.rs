//! Cosine similarity between sentence vectors.

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
    let n = vectors.len();
    let mut m = vec![vec![0f32; n]; n];
    for i in 0..n {
        for j in i..n {
            let c = cosine(&vectors[i], &vectors[j]);
            m[i][j] = c;
            m[j][i] = c;
        }
    }
    m
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
