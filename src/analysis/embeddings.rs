//! A corpus of sentence vectors in one flat row-major buffer: 4 bytes x dimension x N and
//! nothing per row, so a million vectors cost what their numbers cost. Blocks of scores between
//! two sets of rows come from one matrix product (the `gemm` crate candle uses), the basis of
//! exact search, paraphrase mining and community detection at corpus scale.

use super::similarity::Similarity;

/// N vectors of one dimension, row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embeddings {
    dim: usize,
    data: Vec<f32>,
}

impl Embeddings {
    /// An empty set of `dim`-wide vectors.
    pub fn new(dim: usize) -> Self {
        Embeddings {
            dim,
            data: Vec::new(),
        }
    }

    /// `data.len()` must be a multiple of `dim`.
    pub fn from_flat(dim: usize, data: Vec<f32>) -> Self {
        assert!(
            dim > 0 && data.len().is_multiple_of(dim),
            "{} numbers do not make rows of {dim}",
            data.len()
        );
        Embeddings { dim, data }
    }

    /// Rows of equal length (the dimension of the first; zero rows give dimension 0).
    pub fn from_rows<R: AsRef<[f32]>>(rows: &[R]) -> Self {
        let dim = rows.first().map_or(0, |r| r.as_ref().len());
        let mut data = Vec::with_capacity(dim * rows.len());
        for r in rows {
            assert_eq!(r.as_ref().len(), dim, "rows of different lengths");
            data.extend_from_slice(r.as_ref());
        }
        Embeddings { dim, data }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[f32]> + '_ {
        self.data.chunks_exact(self.dim.max(1))
    }

    pub fn as_flat(&self) -> &[f32] {
        &self.data
    }

    pub fn into_flat(self) -> Vec<f32> {
        self.data
    }

    /// Appends one row.
    pub fn push(&mut self, row: &[f32]) {
        if self.dim == 0 && self.data.is_empty() {
            self.dim = row.len();
        }
        assert_eq!(row.len(), self.dim, "row of the wrong dimension");
        self.data.extend_from_slice(row);
    }

    /// The rows as separate vectors (for the APIs that take them).
    pub fn to_rows(&self) -> Vec<Vec<f32>> {
        self.rows().map(<[f32]>::to_vec).collect()
    }

    /// A copy with every row scaled to unit length (zero rows stay zero), so that cosine is a
    /// dot product, as the Python library's `normalize_embeddings`.
    pub fn normalized(&self) -> Embeddings {
        let mut data = self.data.clone();
        for row in data.chunks_exact_mut(self.dim.max(1)) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            // torch.nn.functional.normalize: x / max(||x||, 1e-12).
            let d = norm.max(1e-12);
            row.iter_mut().for_each(|x| *x /= d);
        }
        Embeddings {
            dim: self.dim,
            data,
        }
    }

    /// `out[i * cols.len() + j] = a.row(rows.start + i) · b.row(cols.start + j)`: one block of
    /// dot products through `gemm`, parallel over the machine's threads when it is large.
    pub fn dot_block(
        a: &Embeddings,
        rows: std::ops::Range<usize>,
        b: &Embeddings,
        cols: std::ops::Range<usize>,
        out: &mut Vec<f32>,
    ) {
        assert_eq!(a.dim, b.dim, "vectors of different dimensions");
        assert!(rows.end <= a.len() && cols.end <= b.len());
        let (m, n, k) = (rows.len(), cols.len(), a.dim);
        out.clear();
        out.resize(m * n, 0.0);
        if m == 0 || n == 0 {
            return;
        }
        let lhs = &a.data[rows.start * k..rows.end * k];
        let rhs = &b.data[cols.start * k..cols.end * k];
        let threads = rayon::current_num_threads();
        let parallelism = if threads > 1 && m * n * k >= 1 << 20 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: dst is m x n row-major (row stride n, column stride 1); lhs is m x k row-major;
        // rhs read as k x n with column stride k and row stride 1 (the transpose of the n x k
        // row-major block). Every index stays inside the slices above.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                lhs.as_ptr(),
                1,
                k as isize,
                rhs.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            )
        }
    }

    /// Scores of rows `rows` of `a` against rows `cols` of `b` under `sim`, row-major into
    /// `out`. Cosine and dot go through [`Embeddings::dot_block`] (cosine expects both sets
    /// normalised: pass [`Embeddings::normalized`] copies); the distances are computed pairwise.
    pub fn score_block(
        sim: Similarity,
        a: &Embeddings,
        rows: std::ops::Range<usize>,
        b: &Embeddings,
        cols: std::ops::Range<usize>,
        out: &mut Vec<f32>,
    ) {
        match sim {
            Similarity::Cosine | Similarity::Dot => Self::dot_block(a, rows, b, cols, out),
            Similarity::Euclidean | Similarity::Manhattan => {
                use rayon::prelude::*;
                let n = cols.len();
                out.clear();
                out.resize(rows.len() * n, 0.0);
                out.par_chunks_mut(n.max(1))
                    .zip(rows)
                    .for_each(|(line, i)| {
                        for (slot, j) in line.iter_mut().zip(cols.clone()) {
                            *slot = sim.score(a.row(i), b.row(j));
                        }
                    });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_equal_pairwise_scores() {
        let rows: Vec<Vec<f32>> = (0..37)
            .map(|i| {
                (0..13)
                    .map(|j| ((i * 7 + j * 3) % 11) as f32 - 5.0)
                    .collect()
            })
            .collect();
        let e = Embeddings::from_rows(&rows);
        assert_eq!((e.len(), e.dim()), (37, 13));
        let n = e.normalized();
        let mut out = Vec::new();
        for sim in Similarity::ALL {
            let src = if sim == Similarity::Cosine { &n } else { &e };
            Embeddings::score_block(sim, src, 3..20, src, 5..37, &mut out);
            assert_eq!(out.len(), 17 * 32);
            for (bi, i) in (3..20).enumerate() {
                for (bj, j) in (5..37).enumerate() {
                    let want = sim.score(&rows[i], &rows[j]);
                    let got = out[bi * 32 + bj];
                    assert!(
                        (want - got).abs() <= 1e-4 * want.abs().max(1.0),
                        "{sim:?} {i} {j}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn normalized_rows_have_unit_length_and_zero_stays_zero() {
        let e = Embeddings::from_rows(&[vec![3.0, 4.0], vec![0.0, 0.0]]);
        let n = e.normalized();
        assert_eq!(n.row(0), &[0.6, 0.8]);
        assert_eq!(n.row(1), &[0.0, 0.0]);
    }
}
