//! 2-D / 3-D PCA of sentence vectors, with a basis that can be kept fixed.
//!
//! The decomposition is linfa-linalg's exact dense SVD of the centred data. linfa-reduction's
//! `Pca` uses an iterative truncated SVD (LOBPCG) that is off on the small point sets a map
//! shows: on the 5-point test below it reports 0.512 of the variance on PC1 where numpy says
//! 0.528, and three points came out spanning 66% of their own plane.

use linfa_linalg::svd::{SVDInto, SvdSort};
use ndarray::{Array1, Array2, Axis};

/// A fitted PCA basis: mean, components, and how much of the total variance each explains.
#[derive(Debug, Clone)]
pub struct PcaBasis {
    mean: Array1<f64>,
    /// `[components, dim]`, each row a unit vector, already oriented (see `fit`).
    components: Array2<f64>,
    /// Fraction of the total variance along each component (sums to at most 1).
    pub explained_variance_ratio: Vec<f64>,
}

/// Why no map can be drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcaError {
    #[error("a map needs at least 3 sentences (there are {0})")]
    TooFew(usize),
    #[error("the sentences are all identical, so there is no spread to show")]
    NoSpread,
    #[error("a vector holds NaN or infinity, so no map can be drawn")]
    NonFinite,
    #[error("PCA failed: {0}")]
    Failed(String),
}

/// At most this many components are kept (PC1..PC3).
pub const MAX_COMPONENTS: usize = 3;

fn to_array(vectors: &[Vec<f32>]) -> Array2<f64> {
    let dim = vectors.first().map_or(0, Vec::len);
    Array2::from_shape_fn((vectors.len(), dim), |(i, j)| vectors[i][j] as f64)
}

impl PcaBasis {
    /// Fits up to three components (fewer when the points span fewer dimensions: n points span at
    /// most n - 1).
    pub fn fit(vectors: &[Vec<f32>]) -> Result<Self, PcaError> {
        let n = vectors.len();
        if n < 3 {
            return Err(PcaError::TooFew(n));
        }
        // A NaN would make the SVD below spin for ever (it did: the explorer hung on a model
        // with broken weights).
        if vectors.iter().flatten().any(|v| !v.is_finite()) {
            return Err(PcaError::NonFinite);
        }
        let x = to_array(vectors);
        let mean = x.mean_axis(Axis(0)).expect("n >= 3");
        let centred = &x - &mean;
        // Total variance: the squared Frobenius norm of the centred data, so each ratio is a
        // share of everything, not only of the kept components.
        let total: f64 = centred.iter().map(|v| v * v).sum();
        if total <= 1e-12 {
            return Err(PcaError::NoSpread);
        }
        let (_, sigma, vt) = centred
            .clone()
            .svd_into(false, true)
            .map_err(|e| PcaError::Failed(e.to_string()))?
            .sort_svd_desc();
        let vt = vt.expect("asked for V^T");
        let k = MAX_COMPONENTS.min(n - 1).min(sigma.len());
        let mut components = vt.slice(ndarray::s![..k, ..]).to_owned();
        // Orient each axis so that its largest-magnitude coordinate among the fitted points is
        // positive: deterministic, and stable under small changes.
        let coords = centred.dot(&components.t());
        for (c, mut row) in components.outer_iter_mut().enumerate() {
            let extreme = coords
                .column(c)
                .iter()
                .copied()
                .max_by(|a, b| a.abs().total_cmp(&b.abs()))
                .unwrap_or(0.0);
            if extreme < 0.0 {
                row.mapv_inplace(|v| -v);
            }
        }
        Ok(PcaBasis {
            mean,
            components,
            explained_variance_ratio: sigma.iter().take(k).map(|s| s * s / total).collect(),
        })
    }

    pub fn components(&self) -> usize {
        self.components.nrows()
    }

    /// Coordinates of `vectors` in this basis (one row per vector, one column per component).
    /// Vectors of another width than the fitted ones give an empty result.
    pub fn project(&self, vectors: &[Vec<f32>]) -> Vec<Vec<f64>> {
        if vectors.is_empty() || vectors[0].len() != self.mean.len() {
            return Vec::new();
        }
        let centred = to_array(vectors) - &self.mean;
        centred
            .dot(&self.components.t())
            .outer_iter()
            .map(|row| row.to_vec())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five points in 4-D. Reference from numpy (sklearn-style PCA via SVD of the centred data):
    ///
    /// ```python
    /// import numpy as np
    /// X = np.array([[1,2,0,1],[2,1,1,0],[4,0,1,2],[0,3,2,1],[3,3,3,3]], float)
    /// Xc = X - X.mean(0)
    /// U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    /// print(S**2 / (Xc**2).sum())     # explained variance ratio
    /// print(Xc @ Vt[:3].T)            # projections (up to sign per column)
    /// ```
    const X: [[f32; 4]; 5] = [
        [1., 2., 0., 1.],
        [2., 1., 1., 0.],
        [4., 0., 1., 2.],
        [0., 3., 2., 1.],
        [3., 3., 3., 3.],
    ];
    const RATIO: [f64; 3] = [0.52817833, 0.40799985, 0.05489545];
    const PROJ: [[f64; 3]; 5] = [
        [-1.05173736, -1.10916194, 0.8978026],
        [-0.01943692, -1.45053131, -0.77840043],
        [2.69391608, -0.65627141, 0.10904619],
        [-2.34207204, 0.56841318, -0.26121734],
        [0.71933023, 2.64755148, 0.03276898],
    ];

    fn points() -> Vec<Vec<f32>> {
        X.iter().map(|r| r.to_vec()).collect()
    }

    #[test]
    fn explained_variance_matches_numpy() {
        let b = PcaBasis::fit(&points()).unwrap();
        assert_eq!(b.components(), 3);
        for (got, want) in b.explained_variance_ratio.iter().zip(RATIO) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn projections_match_numpy_up_to_sign() {
        let b = PcaBasis::fit(&points()).unwrap();
        let p = b.project(&points());
        for c in 0..3 {
            let sign = if (p[0][c] * PROJ[0][c]) < 0.0 {
                -1.0
            } else {
                1.0
            };
            for i in 0..5 {
                assert!(
                    (p[i][c] * sign - PROJ[i][c]).abs() < 1e-5,
                    "point {i} axis {c}"
                );
            }
        }
    }

    #[test]
    fn too_few_and_identical_points_say_why() {
        assert_eq!(
            PcaBasis::fit(&points()[..2]).unwrap_err(),
            PcaError::TooFew(2)
        );
        let same = vec![vec![1.0f32, 2.0]; 4];
        assert_eq!(PcaBasis::fit(&same).unwrap_err(), PcaError::NoSpread);
    }

    #[test]
    fn three_points_give_two_components() {
        let b = PcaBasis::fit(&points()[..3]).unwrap();
        assert_eq!(b.components(), 2);
        let sum: f64 = b.explained_variance_ratio.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "3 points span a plane: {sum}");
    }

    #[test]
    fn a_frozen_basis_projects_new_points() {
        // The basis fitted on X, then X + 0.5 projected into it (numpy, continuing the snippet
        // above; the signs of Vt's rows are those of PROJ):
        // print((X + 0.5 - X.mean(0)) @ Vt[:3].T)
        // Each row moves by 0.5 * Vt[:3].sum(1) = [0.31852843, 0.91679424, 0.02238738].
        const MOVED: [[f64; 3]; 5] = [
            [-0.73320892, -0.1923677, 0.92018999],
            [0.29909152, -0.53373707, -0.75601304],
            [3.01244452, 0.26052284, 0.13143357],
            [-2.0235436, 1.48520742, -0.23882996],
            [1.03785866, 3.56434572, 0.05515636],
        ];
        let b = PcaBasis::fit(&points()).unwrap();
        let moved: Vec<Vec<f32>> = points()
            .iter()
            .map(|r| r.iter().map(|v| v + 0.5).collect())
            .collect();
        let p = b.project(&moved);
        assert_eq!(p.len(), 5);
        let base = b.project(&points());
        for c in 0..3 {
            // Our orientation of each axis may differ from numpy's; the points' own projection
            // tells the sign.
            let sign = if base[0][c] * PROJ[0][c] < 0.0 {
                -1.0
            } else {
                1.0
            };
            for i in 0..5 {
                assert!(
                    (p[i][c] * sign - MOVED[i][c]).abs() < 1e-5,
                    "point {i} axis {c}: {} vs {}",
                    p[i][c] * sign,
                    MOVED[i][c]
                );
            }
        }
        assert!(b.project(&[vec![1.0, 2.0]]).is_empty(), "wrong width");
    }

    #[test]
    fn non_finite_vectors_are_refused_not_decomposed() {
        let mut x = points();
        x[2][1] = f32::NAN;
        assert_eq!(PcaBasis::fit(&x).unwrap_err(), PcaError::NonFinite);
        x[2][1] = f32::INFINITY;
        assert_eq!(PcaBasis::fit(&x).unwrap_err(), PcaError::NonFinite);
    }
}
