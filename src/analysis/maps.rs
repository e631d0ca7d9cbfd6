//! 2-D maps of a corpus: PCA, t-SNE and UMAP, meant to run on a background thread for up to some
//! tens of thousands of points, with progress reports and cancellation.
//!
//! [`project`] is the one entry point. Rows are first scaled to unit length when
//! [`MapOptions::normalize`] is on (the default: Euclidean distance between unit vectors orders
//! pairs exactly as cosine similarity does, the usual geometry of sentence embeddings). Then, by
//! [`MapMethod`]:
//!
//! - **PCA**: the first two principal components. Up to [`PCA_EXACT_MAX`] points through the
//!   explorer's own [`PcaBasis`] (exact SVD; one step, not interruptible); beyond, through the
//!   covariance route below, which gives the same axes to float precision (0.2 s rather than
//!   20 s at 10,000 x 384).
//! - **t-SNE** and **UMAP** share a front end: PCA to [`MapOptions::pre_reduce_dim`] dimensions
//!   when the vectors are wider than that, and an exact k-nearest-neighbour search in the
//!   reduced space (blocks of dot products through `gemm`, parallel over rows). The PCA is the
//!   covariance matrix (`dim x dim`, summed block by block in f64) and its leading eigenvectors
//!   by subspace iteration (randomized PCA with oversampling, Halko et al. 2011); a dense
//!   eigendecomposition of a 384 x 384 matrix alone takes 0.4 s, too long without a report.
//! - **t-SNE** comes from the `bhtsne` crate: Barnes-Hut (theta 0.5) below [`TSNE_FFT_FROM`]
//!   points and FIt-SNE's FFT interpolation from there on, as openTSNE chooses; perplexity 30 by
//!   default, 750 iterations of which the first 250 exaggerate 12 times, learning rate
//!   `max(n / 12, 200)` (Belkina et al. 2019). It is fed with our neighbours (`3 x perplexity` of
//!   them) and starts from the PCA layout scaled to a standard deviation of 1e-4 (openTSNE's
//!   default initialisation) or from seeded Gaussian noise.
//! - **UMAP** is implemented here, following umap-learn 0.5 (McInnes, Healy & Melville 2018):
//!   `smooth_knn_dist` (binary search of each point's sigma with rho the distance to its nearest
//!   neighbour), memberships `exp(-(d - rho) / sigma)`, fuzzy union `A + A^T - A o A^T`, `a` and
//!   `b` fitted to `min_dist` with spread 1 (Levenberg-Marquardt, as `find_ab_params`), edges
//!   lighter than `max / n_epochs` dropped, then `optimize_layout_euclidean`: SGD over the edges
//!   sampled in proportion to their weight, 5 negative samples per positive one, gradients
//!   clipped at 4, learning rate decaying linearly from 1; 500 epochs up to 10,000 points and 200
//!   beyond. The initial layout is the PCA layout (umap-learn's `init="pca"`) or seeded uniform
//!   noise, rescaled to `[0, 10]` per axis; there is no spectral initialisation.
//!
//! **Reproducibility.** The same input, options and seed give the same map, bit for bit, on the
//! same machine and build. The pre-reduction starts its subspace iteration from a fixed random
//! matrix; the parallel parts (neighbours, memberships) compute every row independently; UMAP's
//! SGD runs on one thread in umap-learn's order, as umap-learn does when given a
//! `random_state`; `bhtsne` sums some of its per-epoch terms with rayon reductions whose order
//! depends on scheduling, so its fit runs in a one-thread pool of its own. The seed picks the
//! random initial layout, the jitter added to the PCA one, and UMAP's negative samples.
//!
//! **Progress and cancel.** The callback is always called on the caller's thread: at every
//! stage boundary, and within a stage whenever [`REPORT_INTERVAL`] has passed at the end of a
//! step (a block of rows, an epoch: tens of milliseconds at 10,000 points). Returning `false`
//! cancels: [`project`] then returns `Ok(None)` at the end of the step under way. t-SNE's fit
//! runs on a thread of its own that relays its epochs; `bhtsne` gives a per-epoch callback
//! without a way to stop, so a cancel unwinds out of it (with [`std::panic::resume_unwind`],
//! which prints nothing) at the end of the epoch, or of bhtsne's affinity computation before
//! the first epoch (0.3 s at 10,000 points, 1 s at 20,000; progress is still reported during
//! it); a build with `panic = "abort"` would instead finish the fit and then return `None`.

#[cfg(panic = "unwind")]
use std::panic::resume_unwind;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use linfa_linalg::eigh::{EigSort, EighInto};
use linfa_linalg::qr::QRInto;
use ndarray::{Array2, ArrayView2, s};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::embeddings::Embeddings;
use super::pca::{PcaBasis, PcaError};

/// How a corpus is laid out on a plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapMethod {
    /// The first two principal components: linear, global, instant.
    Pca,
    /// Barnes-Hut t-SNE: local neighbourhoods, clusters well apart.
    Tsne,
    /// UMAP: local neighbourhoods with more of the global arrangement kept.
    Umap,
}

impl MapMethod {
    pub const ALL: [MapMethod; 3] = [MapMethod::Pca, MapMethod::Tsne, MapMethod::Umap];

    /// The name the command line uses: `pca`, `tsne`, `umap`.
    pub fn name(self) -> &'static str {
        match self {
            MapMethod::Pca => "pca",
            MapMethod::Tsne => "tsne",
            MapMethod::Umap => "umap",
        }
    }

    /// The name to show a person: `PCA`, `t-SNE`, `UMAP`.
    pub fn label(self) -> &'static str {
        match self {
            MapMethod::Pca => "PCA",
            MapMethod::Tsne => "t-SNE",
            MapMethod::Umap => "UMAP",
        }
    }

    /// Reads a name, case-insensitively; `t-sne` and `t_sne` are taken for `tsne`.
    pub fn parse(s: &str) -> Option<MapMethod> {
        let key: String = s
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        MapMethod::ALL.into_iter().find(|m| m.name() == key)
    }
}

impl std::fmt::Display for MapMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for MapMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MapMethod::parse(s).ok_or_else(|| format!("unknown map method {s:?} (pca, tsne or umap)"))
    }
}

/// Where t-SNE and UMAP start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapInit {
    /// The first two principal components (plus a tiny seeded jitter that separates duplicates).
    Pca,
    /// Seeded noise: Gaussian with standard deviation 1e-4 for t-SNE, uniform for UMAP.
    Random,
}

/// Settings of a map. [`MapOptions::new`] gives the defaults for a method.
#[derive(Debug, Clone, PartialEq)]
pub struct MapOptions {
    pub method: MapMethod,
    /// Seeds every random choice (initial jitter or noise, UMAP's negative samples).
    pub seed: u64,
    /// Scale each vector to unit length first, so that distances rank pairs as cosine does
    /// (default `true`). Applies to PCA too.
    pub normalize: bool,
    /// t-SNE and UMAP first reduce wider vectors to this many principal components (default 50;
    /// 0 never reduces).
    pub pre_reduce_dim: usize,
    /// t-SNE's perplexity, the effective number of neighbours (default 30). Lowered to
    /// `(n - 1) / 3` for small inputs, as openTSNE does.
    pub perplexity: f32,
    /// UMAP's neighbourhood size, the point itself included as in umap-learn (default 15, at
    /// least 2). Lowered to `n - 1` for small inputs.
    pub n_neighbors: usize,
    /// UMAP's minimum distance between embedded points, in `[0, 1]` (default 0.1; spread is 1).
    pub min_dist: f32,
    /// Optimisation steps; `None` takes the method's default (see
    /// [`MapOptions::resolved_iterations`]).
    pub iterations: Option<usize>,
    pub init: MapInit,
}

impl MapOptions {
    pub fn new(method: MapMethod) -> Self {
        MapOptions {
            method,
            seed: 42,
            normalize: true,
            pre_reduce_dim: 50,
            perplexity: 30.0,
            n_neighbors: 15,
            min_dist: 0.1,
            iterations: None,
            init: MapInit::Pca,
        }
    }

    /// The number of optimisation steps for `n` points: [`MapOptions::iterations`] when set, else
    /// 750 for t-SNE (250 with early exaggeration, then 500), and for UMAP 500 epochs up to
    /// 10,000 points and 200 beyond (umap-learn's rule); 0 for PCA.
    pub fn resolved_iterations(&self, n: usize) -> usize {
        match (self.method, self.iterations) {
            (MapMethod::Pca, _) => 0,
            (_, Some(set)) => set,
            (MapMethod::Tsne, None) => 750,
            (MapMethod::Umap, None) if n <= 10_000 => 500,
            (MapMethod::Umap, None) => 200,
        }
    }

    fn validate(&self) -> Result<(), MapError> {
        let bad = |what: String| Err(MapError::InvalidOption(what));
        if !(self.perplexity.is_finite() && self.perplexity > 0.0) {
            return bad(format!(
                "perplexity must be positive (got {})",
                self.perplexity
            ));
        }
        if self.n_neighbors < 2 {
            return bad(format!(
                "n_neighbors must be at least 2 (got {})",
                self.n_neighbors
            ));
        }
        if !(0.0..=1.0).contains(&self.min_dist) {
            return bad(format!(
                "min_dist must be between 0 and 1 (got {})",
                self.min_dist
            ));
        }
        if self.pre_reduce_dim == 1 {
            return bad("pre_reduce_dim must be 0 (off) or at least 2".into());
        }
        if self.iterations == Some(0) {
            return bad("iterations must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for MapOptions {
    /// PCA, the explorer's map.
    fn default() -> Self {
        MapOptions::new(MapMethod::Pca)
    }
}

/// The stages a map goes through, in order (PCA has only the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapStage {
    /// Normalising and reducing to `pre_reduce_dim` principal components (or PCA itself).
    Reducing,
    /// The exact nearest-neighbour search.
    Neighbours,
    /// Neighbour affinities (t-SNE's P, UMAP's fuzzy simplicial set) and the initial layout.
    Affinities,
    /// Gradient descent: t-SNE iterations or UMAP epochs.
    Optimising,
}

impl MapStage {
    pub fn label(self) -> &'static str {
        match self {
            MapStage::Reducing => "reducing",
            MapStage::Neighbours => "neighbours",
            MapStage::Affinities => "affinities",
            MapStage::Optimising => "optimising",
        }
    }
}

/// One progress report: `done` of `total` steps of `stage` are finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapProgress {
    pub method: MapMethod,
    pub stage: MapStage,
    pub done: usize,
    pub total: usize,
}

impl MapProgress {
    /// How far into the stage, 0 to 1.
    pub fn fraction(&self) -> f32 {
        if self.total == 0 {
            1.0
        } else {
            (self.done as f32 / self.total as f32).clamp(0.0, 1.0)
        }
    }

    /// How far into the whole map, 0 to 1, for one progress bar. The stages are given fixed
    /// shares (reducing 5%, neighbours 15%, affinities 5%, optimising 75%) that roughly match
    /// their cost at 10,000 points.
    pub fn overall(&self) -> f32 {
        if self.method == MapMethod::Pca {
            return self.fraction();
        }
        let (start, share) = match self.stage {
            MapStage::Reducing => (0.0, 0.05),
            MapStage::Neighbours => (0.05, 0.15),
            MapStage::Affinities => (0.20, 0.05),
            MapStage::Optimising => (0.25, 0.75),
        };
        start + share * self.fraction()
    }
}

/// Why no map came out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    #[error("a map needs at least 3 sentences (there are {0})")]
    TooFew(usize),
    #[error("the sentences are all identical, so there is no spread to show")]
    NoSpread,
    #[error("a vector holds NaN or infinity, so no map can be drawn")]
    NonFinite,
    #[error("invalid map setting: {0}")]
    InvalidOption(String),
    #[error("{method} failed: {reason}")]
    Failed {
        method: &'static str,
        reason: String,
    },
}

impl From<PcaError> for MapError {
    fn from(e: PcaError) -> Self {
        match e {
            PcaError::TooFew(n) => MapError::TooFew(n),
            PcaError::NoSpread => MapError::NoSpread,
            PcaError::NonFinite => MapError::NonFinite,
            PcaError::Failed(reason) => MapError::Failed {
                method: "PCA",
                reason,
            },
        }
    }
}

/// The longest the progress callback goes unasked within a stage while work is done (plus the
/// one step under way: a block of neighbour rows, an epoch).
pub const REPORT_INTERVAL: Duration = Duration::from_millis(40);

/// Lays `emb` out on a plane with `opts`, one `[x, y]` per row in row order.
///
/// `progress` is called as described in the module documentation; return `false` from it to
/// cancel, and `project` returns `Ok(None)` soon after (within about [`REPORT_INTERVAL`] plus
/// one step). The coordinates are in the method's own units (t-SNE's and UMAP's spread is
/// arbitrary): scale them to the screen.
///
/// Fewer than 3 rows give [`MapError::TooFew`]; rows that are all the same (after normalising,
/// when on) [`MapError::NoSpread`]; small inputs otherwise work, with perplexity and
/// `n_neighbors` lowered to what the number of points allows.
pub fn project(
    emb: &Embeddings,
    opts: &MapOptions,
    progress: &mut dyn FnMut(MapProgress) -> bool,
) -> Result<Option<Vec<[f32; 2]>>, MapError> {
    let mut reporter = Reporter {
        method: opts.method,
        callback: progress,
        last: None,
        cancelled: false,
    };
    match run(emb, opts, &mut reporter) {
        Ok(map) => Ok(Some(map)),
        Err(Stop::Cancelled) => Ok(None),
        Err(Stop::Error(e)) => Err(e),
    }
}

enum Stop {
    Cancelled,
    Error(MapError),
}

impl From<MapError> for Stop {
    fn from(e: MapError) -> Self {
        Stop::Error(e)
    }
}

impl From<PcaError> for Stop {
    fn from(e: PcaError) -> Self {
        Stop::Error(e.into())
    }
}

struct Reporter<'a> {
    method: MapMethod,
    callback: &'a mut dyn FnMut(MapProgress) -> bool,
    last: Option<Instant>,
    cancelled: bool,
}

impl Reporter<'_> {
    /// Reports now.
    fn report(&mut self, stage: MapStage, done: usize, total: usize) -> Result<(), Stop> {
        if self.cancelled {
            return Err(Stop::Cancelled);
        }
        self.last = Some(Instant::now());
        let go_on = (self.callback)(MapProgress {
            method: self.method,
            stage,
            done,
            total,
        });
        if go_on {
            Ok(())
        } else {
            self.cancelled = true;
            Err(Stop::Cancelled)
        }
    }

    /// Reports when [`REPORT_INTERVAL`] has passed since the last report, or at the end of the
    /// stage.
    fn tick(&mut self, stage: MapStage, done: usize, total: usize) -> Result<(), Stop> {
        if self.cancelled {
            return Err(Stop::Cancelled);
        }
        if done >= total || self.last.is_none_or(|t| t.elapsed() >= REPORT_INTERVAL) {
            self.report(stage, done, total)
        } else {
            Ok(())
        }
    }
}

fn run(emb: &Embeddings, opts: &MapOptions, rep: &mut Reporter) -> Result<Vec<[f32; 2]>, Stop> {
    opts.validate()?;
    let n = emb.len();
    if n < 3 {
        return Err(MapError::TooFew(n).into());
    }
    if emb.as_flat().iter().any(|v| !v.is_finite()) {
        return Err(MapError::NonFinite.into());
    }
    rep.report(MapStage::Reducing, 0, 1)?;
    let normalized;
    let emb = if opts.normalize {
        normalized = emb.normalized();
        &normalized
    } else {
        emb
    };
    if opts.method == MapMethod::Pca {
        return pca_map(emb, rep);
    }
    let reduced = reduce(emb, opts.pre_reduce_dim, rep)?;
    let iterations = opts.resolved_iterations(n);
    let map = match opts.method {
        MapMethod::Tsne => tsne(&reduced, opts, iterations, rep)?,
        _ => umap(&reduced, opts, iterations, rep)?,
    };
    if map.iter().flatten().any(|v| !v.is_finite()) {
        return Err(MapError::Failed {
            method: opts.method.label(),
            reason: "the layout diverged (non-finite coordinates)".into(),
        }
        .into());
    }
    Ok(map)
}

/// PCA maps of at most this many points go through the explorer's own [`PcaBasis`] (an exact
/// SVD of the data, its numbers to the last digit, about 0.5 s at 500 x 384); larger ones through
/// the covariance route that t-SNE and UMAP reduce with (see the module documentation), which
/// finds the same axes to float precision in a fraction of the time (PcaBasis takes 20 s at
/// 10,000 x 384, the covariance route 0.2 s) and reports progress as it goes.
pub const PCA_EXACT_MAX: usize = 500;

fn pca_map(emb: &Embeddings, rep: &mut Reporter) -> Result<Vec<[f32; 2]>, Stop> {
    if emb.len() > PCA_EXACT_MAX {
        let x = view(emb);
        let mut steps = Steps::new(&x, 2);
        let axes = principal_axes(x, 2, rep, &mut steps)?;
        let coords = project_onto(x, &axes, rep, &mut steps)?;
        return Ok(coords.chunks_exact(2).map(|p| [p[0], p[1]]).collect());
    }
    let rows = emb.to_rows();
    let basis = PcaBasis::fit(&rows)?;
    let coords = basis.project(&rows);
    rep.report(MapStage::Reducing, 1, 1)?;
    Ok(coords
        .iter()
        .map(|c| {
            [
                c.first().copied().unwrap_or(0.0) as f32,
                c.get(1).copied().unwrap_or(0.0) as f32,
            ]
        })
        .collect())
}

fn view(emb: &Embeddings) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((emb.len(), emb.dim()), emb.as_flat()).expect("n x dim")
}

/// The data t-SNE and UMAP work on: centred, and projected on the leading principal axes when
/// wider than asked; plus the points' first two principal coordinates.
struct Reduced {
    data: Embeddings,
    pca2: Vec<[f32; 2]>,
}

/// Steps of the reducing stage, for its progress reports.
struct Steps {
    done: usize,
    total: usize,
}

impl Steps {
    /// The steps of [`principal_axes`] and [`project_onto`] for `x` and `width` axes.
    fn new(x: &ArrayView2<f32>, width: usize) -> Self {
        let (n, dim) = x.dim();
        let subspace = if subspace_width(dim, width) == dim {
            1
        } else {
            POWER_ITERATIONS + 1
        };
        Steps {
            done: 0,
            total: n.div_ceil(covariance_block(dim)) + subspace + n.div_ceil(PROJECT_BLOCK),
        }
    }

    fn step(&mut self, rep: &mut Reporter) -> Result<(), Stop> {
        self.done = (self.done + 1).min(self.total);
        rep.tick(MapStage::Reducing, self.done, self.total)
    }
}

/// Rows per block of the covariance sum: about 5e7 multiply-adds, some 10 to 20 milliseconds.
fn covariance_block(dim: usize) -> usize {
    (50_000_000 / (dim * dim).max(1)).clamp(16, 4096)
}

/// Rows per block of the projection onto the axes.
const PROJECT_BLOCK: usize = 4096;

/// Subspace iterations on the covariance matrix when only some of its eigenvectors are wanted.
const POWER_ITERATIONS: usize = 20;

/// Vectors iterated to find `width` eigenvectors: 10 more, as randomized SVD oversamples.
fn subspace_width(dim: usize, width: usize) -> usize {
    (width + 10).min(dim)
}

/// Mean and leading principal axes (the columns of `basis`) of the rows.
struct Axes {
    mean: ndarray::Array1<f32>,
    basis: Array2<f32>,
}

/// The `width` leading principal axes of the rows of `x`: eigenvectors of the covariance matrix
/// (summed block by block in f64), all of them by a dense eigendecomposition when the matrix is
/// small, else by subspace iteration from a fixed random start (Halko, Martinsson & Tropp 2011:
/// `POWER_ITERATIONS` products with the covariance, then Rayleigh-Ritz). Orientation is left to
/// [`project_onto`].
fn principal_axes(
    x: ArrayView2<f32>,
    width: usize,
    rep: &mut Reporter,
    steps: &mut Steps,
) -> Result<Axes, Stop> {
    let (n, dim) = x.dim();
    let mut mean = ndarray::Array1::<f64>::zeros(dim);
    for row in x.outer_iter() {
        mean.zip_mut_with(&row, |m, &v| *m += v as f64);
    }
    mean /= n as f64;
    let block = covariance_block(dim);
    let mut cov = Array2::<f64>::zeros((dim, dim));
    for start in (0..n).step_by(block) {
        let rows = x.slice(s![start..(start + block).min(n), ..]);
        let centred = rows.mapv(f64::from) - &mean;
        ndarray::linalg::general_mat_mul(1.0, &centred.t(), &centred, 1.0, &mut cov);
        steps.step(rep)?;
    }
    // Total variance, as PcaBasis measures it.
    if cov.diag().sum() <= 1e-12 {
        return Err(MapError::NoSpread.into());
    }
    let failed = |e: linfa_linalg::LinalgError| {
        Stop::Error(MapError::Failed {
            method: "PCA",
            reason: e.to_string(),
        })
    };
    let p = subspace_width(dim, width);
    let vectors = if p == dim {
        let (_, vecs) = cov.eigh_into().map_err(failed)?.sort_eig_desc();
        steps.step(rep)?;
        vecs
    } else {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_f0a7);
        let start = Array2::from_shape_fn((dim, p), |_| gaussian(&mut rng) as f64);
        let mut q = start.qr_into().map_err(failed)?.generate_q();
        for _ in 0..POWER_ITERATIONS {
            q = cov.dot(&q).qr_into().map_err(failed)?.generate_q();
            steps.step(rep)?;
        }
        let small = q.t().dot(&cov.dot(&q));
        let (_, w) = small.eigh_into().map_err(failed)?.sort_eig_desc();
        steps.step(rep)?;
        q.dot(&w)
    };
    Ok(Axes {
        mean: mean.mapv(|v| v as f32),
        basis: vectors.slice(s![.., ..width.min(dim)]).mapv(|v| v as f32),
    })
}

/// The coordinates of the rows of `x` on `axes` (row-major, one column per axis), each axis
/// turned so that its largest-magnitude coordinate is positive, as [`PcaBasis`] does.
fn project_onto(
    x: ArrayView2<f32>,
    axes: &Axes,
    rep: &mut Reporter,
    steps: &mut Steps,
) -> Result<Vec<f32>, Stop> {
    let n = x.nrows();
    let width = axes.basis.ncols();
    let mut out = Array2::<f32>::zeros((n, width));
    for start in (0..n).step_by(PROJECT_BLOCK) {
        let end = (start + PROJECT_BLOCK).min(n);
        let centred = &x.slice(s![start..end, ..]) - &axes.mean;
        let mut dst = out.slice_mut(s![start..end, ..]);
        ndarray::linalg::general_mat_mul(1.0, &centred, &axes.basis, 0.0, &mut dst);
        steps.step(rep)?;
    }
    for mut column in out.columns_mut() {
        let extreme = column
            .iter()
            .copied()
            .max_by(|a, b| a.abs().total_cmp(&b.abs()))
            .unwrap_or(0.0);
        if extreme < 0.0 {
            column.mapv_inplace(|v| -v);
        }
    }
    Ok(out.into_raw_vec_and_offset().0)
}

/// Centres the rows and, when they are wider than `target` (and `target` is not 0), projects
/// them on their `target` leading principal axes.
fn reduce(emb: &Embeddings, target: usize, rep: &mut Reporter) -> Result<Reduced, Stop> {
    let (n, dim) = (emb.len(), emb.dim());
    let x = view(emb);
    let reducing = target >= 2 && dim > target;
    let width = if reducing { target } else { 2.min(dim) };
    let mut steps = Steps::new(&x, width);
    let axes = principal_axes(x, width, rep, &mut steps)?;
    let projected = project_onto(x, &axes, rep, &mut steps)?;
    let pca2 = projected
        .chunks_exact(width)
        .map(|row| [row[0], row.get(1).copied().unwrap_or(0.0)])
        .collect();
    let data = if reducing {
        Embeddings::from_flat(width, projected)
    } else {
        let mut centred = emb.as_flat().to_vec();
        for row in centred.chunks_exact_mut(dim) {
            row.iter_mut()
                .zip(axes.mean.iter())
                .for_each(|(v, m)| *v -= m);
        }
        Embeddings::from_flat(dim, centred)
    };
    debug_assert_eq!(data.len(), n);
    Ok(Reduced { data, pca2 })
}

/// The `k` nearest other points of every point: `idx[i * k..][..k]` by ascending distance (ties
/// by index), `dist` the Euclidean distances.
struct Knn {
    k: usize,
    idx: Vec<u32>,
    dist: Vec<f32>,
}

fn knn(data: &Embeddings, k: usize, rep: &mut Reporter) -> Result<Knn, Stop> {
    let n = data.len();
    assert!(k >= 1 && k < n, "k = {k} of {n} points");
    let norms: Vec<f32> = data.rows().map(|r| r.iter().map(|v| v * v).sum()).collect();
    // About 4 million scores per block: tens of milliseconds at 20,000 points.
    let block = (4_000_000 / n).clamp(16, 1024);
    let blocks = n.div_ceil(block);
    let mut idx = vec![0u32; n * k];
    let mut dist = vec![0.0f32; n * k];
    let mut dots = Vec::new();
    rep.report(MapStage::Neighbours, 0, blocks)?;
    for b in 0..blocks {
        let rows = b * block..((b + 1) * block).min(n);
        Embeddings::dot_block(data, rows.clone(), data, 0..n, &mut dots);
        idx[rows.start * k..rows.end * k]
            .par_chunks_mut(k)
            .zip(dist[rows.start * k..rows.end * k].par_chunks_mut(k))
            .zip(dots.par_chunks(n))
            .zip(rows.clone())
            .for_each(|(((idx_row, dist_row), dots_row), i)| {
                // Keep the k smallest (squared distance, index) pairs, sorted.
                let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
                for (j, &dot) in dots_row.iter().enumerate() {
                    if j == i {
                        continue;
                    }
                    let d2 = (norms[i] + norms[j] - 2.0 * dot).max(0.0);
                    if best.len() == k && d2 >= best[k - 1].0 {
                        continue;
                    }
                    let at = best.partition_point(|&(d, _)| d <= d2);
                    best.insert(at, (d2, j as u32));
                    best.truncate(k);
                }
                // Exact distances for the chosen few (the expansion above loses precision
                // between near-duplicates).
                let xi = data.row(i);
                let mut exact: Vec<(f32, u32)> = best
                    .iter()
                    .map(|&(_, j)| {
                        let xj = data.row(j as usize);
                        let d2: f32 = xi.iter().zip(xj).map(|(a, b)| (a - b) * (a - b)).sum();
                        (d2.sqrt(), j)
                    })
                    .collect();
                exact.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                for (slot, (d, j)) in exact.into_iter().enumerate() {
                    idx_row[slot] = j;
                    dist_row[slot] = d;
                }
            });
        rep.tick(MapStage::Neighbours, b + 1, blocks)?;
    }
    Ok(Knn { k, idx, dist })
}

/// Standard normal numbers from a seeded generator (Box-Muller).
fn gaussian(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// A seed for one use of the map's seed, so that t-SNE and UMAP draw independent streams.
fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The initial layout: PCA coordinates with a jitter of 1e-3 of their spread (which only
/// separates duplicates), or seeded noise from `noise`. The result's spread is arbitrary.
fn initial_layout(
    reduced: &Reduced,
    opts: &MapOptions,
    noise: impl Fn(&mut ChaCha8Rng) -> f32,
) -> Vec<[f32; 2]> {
    let mut rng = rng_for(opts.seed, 1);
    match opts.init {
        MapInit::Random => (0..reduced.pca2.len())
            .map(|_| [noise(&mut rng), noise(&mut rng)])
            .collect(),
        MapInit::Pca => {
            let spread = reduced
                .pca2
                .iter()
                .flatten()
                .fold(0.0f32, |m, v| m.max(v.abs()))
                .max(f32::MIN_POSITIVE);
            let jitter = 1e-3 * spread;
            reduced
                .pca2
                .iter()
                .map(|p| {
                    [
                        p[0] + jitter * gaussian(&mut rng),
                        p[1] + jitter * gaussian(&mut rng),
                    ]
                })
                .collect()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// t-SNE

/// Barnes-Hut accuracy: bhtsne's and openTSNE's default.
const TSNE_THETA: f32 = 0.5;

/// From this many points on, t-SNE's repulsion is FIt-SNE's interpolation on a grid (Linderman
/// et al. 2019) rather than Barnes-Hut: openTSNE's rule. On one thread here at 20,000 x 384 it
/// took 20 s of optimisation where Barnes-Hut took 50 to 60 s; maps of equal trustworthiness.
pub const TSNE_FFT_FROM: usize = 10_000;

/// Raised out of t-SNE's epoch callback to stop the fit.
#[cfg_attr(not(panic = "unwind"), allow(dead_code))]
struct CancelFit;

fn tsne(
    reduced: &Reduced,
    opts: &MapOptions,
    iterations: usize,
    rep: &mut Reporter,
) -> Result<Vec<[f32; 2]>, Stop> {
    let n = reduced.data.len();
    // bhtsne wants 3 * floor(perplexity) <= n - 1; openTSNE lowers it to (n - 1) / 3.
    let max_perplexity = (n - 1) as f32 / 3.0;
    let (perplexity, k) = if opts.perplexity >= max_perplexity {
        (max_perplexity, n - 1)
    } else {
        let k = ((3.0 * opts.perplexity).floor() as usize).clamp(1, n - 1);
        (opts.perplexity, k)
    };
    let neighbours = knn(&reduced.data, k, rep)?;
    rep.report(MapStage::Affinities, 0, 1)?;
    let rows: Vec<Vec<bhtsne::Neighbor<f32>>> = (0..n)
        .map(|i| {
            (0..k)
                .map(|s| bhtsne::Neighbor {
                    index: neighbours.idx[i * k + s] as usize,
                    distance: neighbours.dist[i * k + s],
                })
                .collect()
        })
        .collect();
    drop(neighbours);

    // openTSNE: the PCA layout scaled to a standard deviation of 1e-4 along its first axis.
    let mut init = initial_layout(reduced, opts, |rng| 1e-4 * gaussian(rng));
    if opts.init == MapInit::Pca {
        let m = init.iter().map(|p| p[0]).sum::<f32>() / n as f32;
        let sd = (init.iter().map(|p| (p[0] - m).powi(2)).sum::<f32>() / n as f32).sqrt();
        let scale = if sd > 0.0 { 1e-4 / sd } else { 1.0 };
        init.iter_mut().flatten().for_each(|v| *v *= scale);
    }
    let init: Vec<f32> = init.into_iter().flatten().collect();
    let exaggerated = (iterations / 3).min(250);
    // Belkina et al. 2019, openTSNE before 1.0: n / early exaggeration, at least 200. bhtsne's
    // own default is scikit-learn's n / 12 / 4, made for a gradient 4 times larger than
    // bhtsne's: its maps came out under-converged (trustworthiness 0.88 where openTSNE gets 0.91).
    let learning_rate = (n as f32 / 12.0).max(200.0);

    // The fit runs on a thread of its own in a one-thread rayon pool: bhtsne reduces some sums
    // through rayon, whose order would otherwise depend on scheduling (the map would differ in
    // its last bits from run to run). This thread relays its epochs to the progress callback,
    // which so stays on the caller's thread, and raises `cancel` for it.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| MapError::Failed {
            method: "t-SNE",
            reason: e.to_string(),
        })?;
    let ids: Vec<u32> = (0..n as u32).collect();
    let cancel = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<FitMessage>();
    let fitted = std::thread::scope(|scope| {
        scope.spawn(|| {
            let fitted = catch_unwind(AssertUnwindSafe(|| {
                pool.install(|| {
                    let mut fit: bhtsne::tSNE<f32, u32, 2> = bhtsne::tSNE::new(&ids);
                    fit.perplexity(perplexity)
                        .learning_rate(learning_rate)
                        .epochs(iterations)
                        .stop_lying_epoch(exaggerated)
                        .momentum_switch_epoch(exaggerated)
                        .initial_embedding(init)
                        .epoch_callback(|epoch, _| {
                            let _ = tx.send(FitMessage::Epoch(epoch + 1));
                            if cancel.load(Ordering::Relaxed) {
                                // With panic = "abort" the fit runs on to its end instead.
                                #[cfg(panic = "unwind")]
                                resume_unwind(Box::new(CancelFit));
                            }
                        });
                    if n >= TSNE_FFT_FROM {
                        fit.fit_sne_with_neighbors(&rows);
                    } else {
                        fit.barnes_hut_with_neighbors(TSNE_THETA, &rows);
                    }
                    fit.embedding()
                })
            }));
            let _ = tx.send(FitMessage::Done(fitted));
        });
        // Should the progress callback panic, the fit stops at its next epoch rather than
        // running on while the panic waits for the scope to end.
        let _stop_on_unwind = RaiseOnDrop(&cancel);
        let mut stage = (MapStage::Affinities, 0, 1);
        loop {
            match rx.recv_timeout(REPORT_INTERVAL) {
                Ok(FitMessage::Done(fitted)) => break fitted,
                Ok(FitMessage::Epoch(epoch)) => {
                    if stage.0 == MapStage::Affinities && !rep.cancelled {
                        let ok = rep.report(MapStage::Affinities, 1, 1).is_ok()
                            && rep.report(MapStage::Optimising, 0, iterations).is_ok();
                        if !ok {
                            cancel.store(true, Ordering::Relaxed);
                        }
                    }
                    stage = (MapStage::Optimising, epoch, iterations);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(Box::new("the t-SNE thread stopped"));
                }
            }
            if rep.tick(stage.0, stage.1, stage.2).is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
        }
    });
    match fitted {
        _ if rep.cancelled => Err(Stop::Cancelled),
        Ok(y) => Ok(y.chunks_exact(2).map(|p| [p[0], p[1]]).collect()),
        Err(payload) => {
            let reason = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into());
            Err(MapError::Failed {
                method: "t-SNE",
                reason,
            }
            .into())
        }
    }
}

/// Raises its flag when dropped.
struct RaiseOnDrop<'a>(&'a AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

enum FitMessage {
    Epoch(usize),
    Done(std::thread::Result<Vec<f32>>),
}

// ---------------------------------------------------------------------------------------------
// UMAP

/// umap-learn's constants.
const SMOOTH_K_TOLERANCE: f64 = 1e-5;
const MIN_K_DIST_SCALE: f64 = 1e-3;
const NEGATIVE_SAMPLE_RATE: f64 = 5.0;
const REPULSION_STRENGTH: f32 = 1.0;
const INITIAL_ALPHA: f32 = 1.0;

/// umap-learn's `find_ab_params`: `a` and `b` of `1 / (1 + a d^(2b))` fitted by least squares
/// to 1 up to `min_dist` and `exp(-(d - min_dist) / spread)` after, on 300 points over
/// `[0, 3 spread]` (Levenberg-Marquardt from `(1, 1)`, as scipy's `curve_fit`).
pub fn find_ab_params(spread: f32, min_dist: f32) -> (f32, f32) {
    let (spread, min_dist) = (spread as f64, min_dist as f64);
    let xs: Vec<f64> = (0..300).map(|i| 3.0 * spread * i as f64 / 299.0).collect();
    let ys: Vec<f64> = xs
        .iter()
        .map(|&x| {
            if x < min_dist {
                1.0
            } else {
                (-(x - min_dist) / spread).exp()
            }
        })
        .collect();
    let cost = |a: f64, b: f64| -> f64 {
        xs.iter()
            .zip(&ys)
            .map(|(&x, &y)| (1.0 / (1.0 + a * x.powf(2.0 * b)) - y).powi(2))
            .sum()
    };
    let (mut a, mut b) = (1.0f64, 1.0f64);
    let mut current = cost(a, b);
    let mut lambda = 1e-3;
    for _ in 0..500 {
        // Normal equations of the linearised residuals.
        let (mut jaa, mut jab, mut jbb, mut ga, mut gb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&x, &y) in xs.iter().zip(&ys) {
            if x <= 0.0 {
                continue; // f(0) = 1 whatever a and b: no gradient.
            }
            let u = x.powf(2.0 * b);
            let f = 1.0 / (1.0 + a * u);
            let r = f - y;
            let da = -u * f * f;
            let db = -a * u * 2.0 * x.ln() * f * f;
            jaa += da * da;
            jab += da * db;
            jbb += db * db;
            ga += da * r;
            gb += db * r;
        }
        let mut improved = false;
        while lambda < 1e12 {
            let (maa, mbb) = (jaa * (1.0 + lambda), jbb * (1.0 + lambda));
            let det = maa * mbb - jab * jab;
            if det.abs() < 1e-300 {
                lambda *= 10.0;
                continue;
            }
            let step_a = -(mbb * ga - jab * gb) / det;
            let step_b = -(maa * gb - jab * ga) / det;
            let (na, nb) = (a + step_a, b + step_b);
            let trial = if na > 0.0 && nb > 0.0 {
                cost(na, nb)
            } else {
                f64::INFINITY
            };
            if trial < current {
                let gain = current - trial;
                a = na;
                b = nb;
                current = trial;
                lambda = (lambda / 10.0).max(1e-12);
                improved = gain > 1e-15 * current.max(1e-300);
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    (a as f32, b as f32)
}

/// umap-learn's `smooth_knn_dist` for one point: `(sigma, rho)` from its distances, itself
/// (distance 0) first. `mean_all` is the mean of all distances, the floor for points whose
/// neighbours are all at distance 0.
fn smooth_knn_dist(distances: &[f32], mean_all: f64) -> (f64, f64) {
    let k = distances.len();
    let target = (k as f64).log2(); // bandwidth 1
    // local_connectivity 1: rho is the nearest non-zero distance.
    let rho = distances
        .iter()
        .map(|&d| d as f64)
        .find(|&d| d > 0.0)
        .unwrap_or(0.0);
    let (mut lo, mut hi, mut mid) = (0.0f64, f64::INFINITY, 1.0f64);
    for _ in 0..64 {
        let psum: f64 = distances[1..]
            .iter()
            .map(|&d| {
                let d = d as f64 - rho;
                if d > 0.0 { (-(d / mid)).exp() } else { 1.0 }
            })
            .sum();
        if (psum - target).abs() < SMOOTH_K_TOLERANCE {
            break;
        }
        if psum > target {
            hi = mid;
            mid = (lo + hi) / 2.0;
        } else {
            lo = mid;
            mid = if hi == f64::INFINITY {
                mid * 2.0
            } else {
                (lo + hi) / 2.0
            };
        }
    }
    let floor = if rho > 0.0 {
        MIN_K_DIST_SCALE * distances.iter().map(|&d| d as f64).sum::<f64>() / k as f64
    } else {
        MIN_K_DIST_SCALE * mean_all
    };
    (mid.max(floor), rho)
}

/// The fuzzy simplicial set as a list of directed edges `(i, j, w)` sorted by `(i, j)`: both
/// directions of every symmetric pair, as umap-learn's COO graph.
fn fuzzy_simplicial_set(
    knn: &Knn,
    n: usize,
    rep: &mut Reporter,
    steps: &mut AffinitySteps,
) -> Result<Vec<(u32, u32, f32)>, Stop> {
    let k = knn.k;
    let mean_all = knn.dist.iter().map(|&d| d as f64).sum::<f64>() / (n * (k + 1)) as f64;
    // Memberships of each point's neighbours (umap-learn's compute_membership_strengths); its
    // own distance 0 leads the row in smooth_knn_dist. Blocks of rows, to report between them.
    let mut rows: Vec<Vec<(u32, f32)>> = Vec::with_capacity(n);
    for start in (0..n).step_by(MEMBERSHIP_BLOCK) {
        let block = start..(start + MEMBERSHIP_BLOCK).min(n);
        rows.par_extend(block.into_par_iter().map(|i| {
            let dist = &knn.dist[i * k..(i + 1) * k];
            let mut with_self = Vec::with_capacity(k + 1);
            with_self.push(0.0f32);
            with_self.extend_from_slice(dist);
            let (sigma, rho) = smooth_knn_dist(&with_self, mean_all);
            let mut row: Vec<(u32, f32)> = knn.idx[i * k..(i + 1) * k]
                .iter()
                .zip(dist)
                .map(|(&j, &d)| {
                    let over = d as f64 - rho;
                    let w = if over <= 0.0 || sigma == 0.0 {
                        1.0
                    } else {
                        (-(over / sigma)).exp()
                    };
                    (j, w as f32)
                })
                .collect();
            row.sort_by_key(|&(j, _)| j);
            row
        }));
        steps.step(rep)?;
    }
    // Fuzzy union: w_ij + w_ji - w_ij w_ji over the union of both directions.
    let lookup = |i: u32, j: u32| -> f32 {
        let row = &rows[i as usize];
        row.binary_search_by_key(&j, |&(c, _)| c)
            .map_or(0.0, |at| row[at].1)
    };
    let mut edges: Vec<(u32, u32, f32)> = Vec::with_capacity(n * k * 2);
    for (i, row) in rows.iter().enumerate() {
        let i = i as u32;
        for &(j, w) in row {
            let back = lookup(j, i);
            edges.push((i, j, w + back - w * back));
            if back == 0.0 {
                // Only i lists j: the pair (j, i) exists through i alone.
                edges.push((j, i, w));
            }
        }
    }
    edges.retain(|e| e.2 > 0.0);
    edges.par_sort_unstable_by_key(|e| (e.0, e.1));
    steps.step(rep)?;
    Ok(edges)
}

/// Rows of memberships computed between two progress reports.
const MEMBERSHIP_BLOCK: usize = 4096;

/// Steps of UMAP's affinity stage: blocks of memberships, the union, the layout.
struct AffinitySteps {
    done: usize,
    total: usize,
}

impl AffinitySteps {
    fn new(n: usize) -> Self {
        AffinitySteps {
            done: 0,
            total: n.div_ceil(MEMBERSHIP_BLOCK) + 2,
        }
    }

    fn step(&mut self, rep: &mut Reporter) -> Result<(), Stop> {
        self.done = (self.done + 1).min(self.total);
        rep.tick(MapStage::Affinities, self.done, self.total)
    }
}

fn umap(
    reduced: &Reduced,
    opts: &MapOptions,
    n_epochs: usize,
    rep: &mut Reporter,
) -> Result<Vec<[f32; 2]>, Stop> {
    let n = reduced.data.len();
    // umap-learn counts the point itself among its n_neighbors, and lowers the count to n - 1
    // when the data are fewer.
    let k_with_self = opts.n_neighbors.min(n - 1).max(2);
    let neighbours = knn(&reduced.data, k_with_self - 1, rep)?;
    let mut steps = AffinitySteps::new(n);
    rep.report(MapStage::Affinities, 0, steps.total)?;
    let mut edges = fuzzy_simplicial_set(&neighbours, n, rep, &mut steps)?;
    drop(neighbours);
    let (a, b) = find_ab_params(1.0, opts.min_dist);

    // Edges too light to be sampled even once in n_epochs go (umap-learn).
    let max_w = edges.iter().fold(0.0f32, |m, e| m.max(e.2));
    edges.retain(|e| e.2 >= max_w / n_epochs as f32);
    let head: Vec<usize> = edges.iter().map(|e| e.0 as usize).collect();
    let tail: Vec<usize> = edges.iter().map(|e| e.1 as usize).collect();
    // make_epochs_per_sample: an edge of weight w is sampled n_epochs * w / max_w times.
    let epochs_per_sample: Vec<f64> = edges.iter().map(|e| max_w as f64 / e.2 as f64).collect();
    drop(edges);
    let epochs_per_negative: Vec<f64> = epochs_per_sample
        .iter()
        .map(|e| e / NEGATIVE_SAMPLE_RATE)
        .collect();
    let mut next_sample = epochs_per_sample.clone();
    let mut next_negative = epochs_per_negative.clone();

    // Initial layout, each axis rescaled to [0, 10] as umap-learn does.
    let mut y = initial_layout(reduced, opts, |rng| rng.random_range(-10.0f32..10.0));
    for axis in 0..2 {
        let (lo, hi) = y
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p[axis]), hi.max(p[axis]))
            });
        let range = hi - lo;
        for p in &mut y {
            p[axis] = if range > 0.0 {
                10.0 * (p[axis] - lo) / range
            } else {
                5.0
            };
        }
    }
    steps.step(rep)?;

    // optimize_layout_euclidean, one thread, move_other = true.
    let mut rng = rng_for(opts.seed, 2);
    let clip = |v: f32| v.clamp(-4.0, 4.0);
    let two_ab = 2.0 * a * b;
    let two_gamma_b = 2.0 * REPULSION_STRENGTH * b;
    rep.report(MapStage::Optimising, 0, n_epochs)?;
    for epoch in 0..n_epochs {
        let alpha = INITIAL_ALPHA * (1.0 - epoch as f32 / n_epochs as f32);
        let now = epoch as f64;
        for e in 0..head.len() {
            if next_sample[e] > now {
                continue;
            }
            let (j, k) = (head[e], tail[e]);
            let (current, other) = (y[j], y[k]);
            let dx = [current[0] - other[0], current[1] - other[1]];
            let d2 = dx[0] * dx[0] + dx[1] * dx[1];
            if d2 > 0.0 {
                let pow_b = d2.powf(b);
                let coeff = -two_ab * pow_b / d2 / (a * pow_b + 1.0);
                for (c, diff) in dx.into_iter().enumerate() {
                    let g = clip(coeff * diff) * alpha;
                    y[j][c] += g;
                    y[k][c] -= g;
                }
            }
            next_sample[e] += epochs_per_sample[e];

            let negatives = ((now - next_negative[e]) / epochs_per_negative[e]).max(0.0) as usize;
            for _ in 0..negatives {
                let k = ((rng.next_u32() as u64 * n as u64) >> 32) as usize;
                if k == j {
                    continue;
                }
                let (current, other) = (y[j], y[k]);
                let dx = [current[0] - other[0], current[1] - other[1]];
                let d2 = dx[0] * dx[0] + dx[1] * dx[1];
                if d2 > 0.0 {
                    let coeff = two_gamma_b / ((0.001 + d2) * (a * d2.powf(b) + 1.0));
                    for (c, diff) in dx.into_iter().enumerate() {
                        y[j][c] += clip(coeff * diff) * alpha;
                    }
                }
            }
            next_negative[e] += negatives as f64 * epochs_per_negative[e];
        }
        rep.tick(MapStage::Optimising, epoch + 1, n_epochs)?;
    }
    Ok(y)
}

/// How well a map keeps known groups together: the mean share of each point's `k` nearest
/// neighbours on the map (euclidean) that carry its label. 1 is perfect; a map that ignores the
/// labels scores about the share of the commonest label. For judging maps on labelled data
/// (tests, `examples/maps_timing.rs`); quadratic in the points.
pub fn label_agreement(map: &[[f32; 2]], labels: &[usize], k: usize) -> f64 {
    let n = map.len();
    assert_eq!(labels.len(), n, "one label per point");
    let k = k.min(n.saturating_sub(1));
    if k == 0 {
        return 0.0;
    }
    let total: f64 = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut d: Vec<(f32, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let (dx, dy) = (map[i][0] - map[j][0], map[i][1] - map[j][1]);
                    (dx * dx + dy * dy, j)
                })
                .collect();
            d.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
            let same = d[..k]
                .iter()
                .filter(|&&(_, j)| labels[j] == labels[i])
                .count();
            same as f64 / k as f64
        })
        .sum();
    total / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `clusters` Gaussian clusters of `per` points in `dim` dimensions: centres with
    /// coordinates N(0, spread^2), points N(centre, 1). Returns the vectors and the labels.
    pub(crate) fn clusters(
        clusters: usize,
        per: usize,
        dim: usize,
        spread: f32,
        seed: u64,
    ) -> (Embeddings, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..clusters)
            .map(|_| (0..dim).map(|_| spread * gaussian(&mut rng)).collect())
            .collect();
        let mut emb = Embeddings::new(dim);
        let mut labels = Vec::new();
        for i in 0..clusters * per {
            let c = i % clusters;
            let row: Vec<f32> = centres[c].iter().map(|m| m + gaussian(&mut rng)).collect();
            emb.push(&row);
            labels.push(c);
        }
        (emb, labels)
    }

    fn run(emb: &Embeddings, opts: &MapOptions) -> Result<Vec<[f32; 2]>, MapError> {
        project(emb, opts, &mut |_| true).map(|m| m.expect("not cancelled"))
    }

    #[test]
    fn method_names_round_trip() {
        for m in MapMethod::ALL {
            assert_eq!(MapMethod::parse(m.name()), Some(m));
            assert_eq!(m.to_string().parse::<MapMethod>(), Ok(m));
        }
        assert_eq!(MapMethod::parse("t-SNE"), Some(MapMethod::Tsne));
        assert_eq!(MapMethod::parse(" UMAP "), Some(MapMethod::Umap));
        assert!(MapMethod::parse("mds").is_none());
        assert!(
            "mds"
                .parse::<MapMethod>()
                .unwrap_err()
                .contains("pca, tsne or umap")
        );
    }

    #[test]
    fn ab_params_match_umap_learn() {
        // umap-learn's find_ab_params(1.0, min_dist), run with numpy 2 and scipy 1.17
        // (curve_fit of 1 / (1 + a x^(2b)) on linspace(0, 3, 300)).
        for (min_dist, want_a, want_b) in [
            (0.1, 1.576_943, 0.895_061),
            (0.0, 1.932_808, 0.790_495),
            (0.25, 1.121_436, 1.057_5),
            (0.5, 0.583_03, 1.334_167),
            (1.0, 0.114_976, 1.929_237),
        ] {
            let (a, b) = find_ab_params(1.0, min_dist);
            assert!(
                (a - want_a).abs() < 1e-4 && (b - want_b).abs() < 1e-4,
                "min_dist {min_dist}: ({a}, {b}) vs ({want_a}, {want_b})"
            );
        }
    }

    #[test]
    fn smooth_knn_dist_hits_its_target() {
        let d = [0.0f32, 1.0, 1.5, 2.0, 2.2, 3.0, 4.5];
        let (sigma, rho) = smooth_knn_dist(&d, 1.0);
        assert_eq!(rho, 1.0);
        let psum: f64 = d[1..]
            .iter()
            .map(|&x| (-((x as f64 - rho).max(0.0)) / sigma).exp())
            .sum();
        assert!((psum - (d.len() as f64).log2()).abs() < 1e-4, "{psum}");
    }

    #[test]
    fn pca_method_is_the_explorer_pca() {
        let (emb, _) = clusters(3, 10, 8, 2.0, 7);
        for normalize in [false, true] {
            let opts = MapOptions {
                normalize,
                ..MapOptions::new(MapMethod::Pca)
            };
            let map = run(&emb, &opts).unwrap();
            let src = if normalize {
                emb.normalized()
            } else {
                emb.clone()
            };
            let rows = src.to_rows();
            let want = PcaBasis::fit(&rows).unwrap().project(&rows);
            for (got, want) in map.iter().zip(&want) {
                assert!((got[0] as f64 - want[0]).abs() < 1e-5);
                assert!((got[1] as f64 - want[1]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn large_pca_maps_find_the_explorer_axes() {
        // Past PCA_EXACT_MAX the covariance route: same axes, same orientation.
        let (emb, _) = clusters(6, 110, 64, 1.0, 21);
        assert!(emb.len() > PCA_EXACT_MAX);
        let map = run(&emb, &MapOptions::new(MapMethod::Pca)).unwrap();
        let rows = emb.normalized().to_rows();
        let want = PcaBasis::fit(&rows).unwrap().project(&rows);
        let scale = want.iter().map(|w| w[0].abs()).fold(0.0, f64::max);
        for (got, want) in map.iter().zip(&want) {
            for c in 0..2 {
                assert!(
                    (got[c] as f64 - want[c]).abs() < 1e-4 * scale,
                    "{got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn subspace_iteration_keeps_the_leading_variance() {
        // 300 points in 120-D with a slowly decaying spectrum: 40 axes by subspace iteration
        // capture as much variance as the exact 40 leading eigenvectors.
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut emb = Embeddings::new(120);
        for _ in 0..300 {
            let row: Vec<f32> = (0..120)
                .map(|j| gaussian(&mut rng) / (1.0 + j as f32 * 0.05))
                .collect();
            emb.push(&row);
        }
        let x = view(&emb);
        let mut reports = |_: MapProgress| true;
        let mut rep = Reporter {
            method: MapMethod::Umap,
            callback: &mut reports,
            last: None,
            cancelled: false,
        };
        let captured = |axes: &Axes| -> f64 {
            let centred = &x - &axes.mean;
            centred
                .dot(&axes.basis)
                .iter()
                .map(|&v| (v as f64).powi(2))
                .sum()
        };
        let mut steps = Steps::new(&x, 40);
        let Ok(fast) = principal_axes(x, 40, &mut rep, &mut steps) else {
            panic!("subspace route failed")
        };
        assert_eq!(steps.done, POWER_ITERATIONS + 2, "went the subspace route");
        let mut steps = Steps::new(&x, 120);
        let Ok(exact) = principal_axes(x, 120, &mut rep, &mut steps) else {
            panic!("dense route failed")
        };
        let exact40 = Axes {
            mean: exact.mean.clone(),
            basis: exact.basis.slice(s![.., ..40]).to_owned(),
        };
        let (got, want) = (captured(&fast), captured(&exact40));
        assert!(got > 0.999 * want, "{got} of {want}");
        // Orthonormal axes.
        let gram = fast.basis.t().dot(&fast.basis);
        for ((i, j), v) in gram.indexed_iter() {
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-4, "({i}, {j}): {v}");
        }
    }

    #[test]
    fn tsne_and_umap_keep_clusters_apart() {
        // Five clusters, apart in 50-D but not along any two directions: PCA's map mixes them
        // (0.85 here; t-SNE 0.986 and UMAP 0.991 when written; at spread 0.5 they fall to 0.94
        // and 0.96, so the bound below is a real one).
        let (emb, labels) = clusters(5, 200, 50, 0.6, 11);
        let pca = run(&emb, &MapOptions::new(MapMethod::Pca)).unwrap();
        let pca_score = label_agreement(&pca, &labels, 10);
        assert!(
            pca_score < 0.9,
            "the clusters are too easy: PCA scores {pca_score}"
        );
        for method in [MapMethod::Tsne, MapMethod::Umap] {
            let map = run(&emb, &MapOptions::new(method)).unwrap();
            assert_eq!(map.len(), 1000);
            let score = label_agreement(&map, &labels, 10);
            eprintln!("{method}: 10-NN label agreement {score:.4} (PCA {pca_score:.4})");
            assert!(score > 0.95, "{method}: {score}");
        }
        // And a map that ignores the data scores near chance (1/5).
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let noise: Vec<[f32; 2]> = (0..1000).map(|_| [rng.random(), rng.random()]).collect();
        assert!(label_agreement(&noise, &labels, 10) < 0.35);
    }

    #[test]
    fn same_seed_same_map_and_other_seed_other_map() {
        let (emb, _) = clusters(4, 60, 20, 2.0, 5);
        for method in [MapMethod::Tsne, MapMethod::Umap] {
            for init in [MapInit::Pca, MapInit::Random] {
                let opts = MapOptions {
                    init,
                    iterations: Some(300),
                    ..MapOptions::new(method)
                };
                let first = run(&emb, &opts).unwrap();
                assert_eq!(first, run(&emb, &opts).unwrap(), "{method} {init:?}");
                let other = MapOptions { seed: 43, ..opts };
                assert_ne!(first, run(&emb, &other).unwrap(), "{method} {init:?}");
            }
        }
    }

    #[test]
    fn large_tsne_takes_the_fft_route_reproducibly() {
        let (emb, _) = clusters(5, TSNE_FFT_FROM / 5, 16, 3.0, 17);
        let opts = MapOptions {
            iterations: Some(30),
            ..MapOptions::new(MapMethod::Tsne)
        };
        let first = run(&emb, &opts).unwrap();
        assert_eq!(first.len(), TSNE_FFT_FROM);
        assert!(first.iter().flatten().all(|v| v.is_finite()));
        assert_eq!(first, run(&emb, &opts).unwrap());
    }

    #[test]
    fn cancelling_returns_none_at_every_stage() {
        let (emb, _) = clusters(3, 100, 64, 2.0, 9);
        for method in MapMethod::ALL {
            let stages: &[MapStage] = if method == MapMethod::Pca {
                &[MapStage::Reducing]
            } else {
                &[
                    MapStage::Reducing,
                    MapStage::Neighbours,
                    MapStage::Affinities,
                    MapStage::Optimising,
                ]
            };
            for &stage in stages {
                let opts = MapOptions {
                    pre_reduce_dim: 16,
                    ..MapOptions::new(method)
                };
                let mut calls_after = 0;
                let mut cancelled = false;
                let out = project(&emb, &opts, &mut |p| {
                    if cancelled {
                        calls_after += 1;
                    }
                    cancelled |= p.stage == stage;
                    !cancelled
                })
                .unwrap();
                assert!(out.is_none(), "{method} at {stage:?}");
                assert_eq!(calls_after, 0, "no reports after a cancel");
            }
        }
    }

    #[test]
    fn cancel_mid_optimisation_takes_effect_quickly() {
        let (emb, _) = clusters(4, 500, 32, 2.0, 13);
        for method in [MapMethod::Tsne, MapMethod::Umap] {
            let mut reports = Vec::new();
            let mut at = None;
            let out = project(&emb, &MapOptions::new(method), &mut |p| {
                reports.push(p);
                if p.stage == MapStage::Optimising && p.done >= 5 {
                    at.get_or_insert_with(Instant::now);
                    false
                } else {
                    true
                }
            })
            .unwrap();
            let latency = at.expect("reached the optimisation").elapsed();
            assert!(out.is_none());
            assert!(
                latency < Duration::from_millis(500),
                "{method}: {latency:?}"
            );
            // Reports move forward through the stages, fractions within 0..=1.
            assert!(reports.windows(2).all(|w| w[0].stage <= w[1].stage));
            assert!(reports.windows(2).all(|w| w[0].overall() <= w[1].overall()));
        }
    }

    #[test]
    fn tiny_and_degenerate_inputs_do_not_panic() {
        for method in MapMethod::ALL {
            let opts = MapOptions::new(method);
            for n in 0..3 {
                let rows: Vec<Vec<f32>> = (0..n).map(|i| vec![i as f32, 1.0, 2.0]).collect();
                let emb = Embeddings::from_rows(&rows);
                assert_eq!(run(&emb, &opts), Err(MapError::TooFew(n)), "{method}");
            }
            // Three, four and seven points: fewer than 3 x perplexity and than n_neighbors.
            for n in [3, 4, 7] {
                let rows: Vec<Vec<f32>> = (0..n)
                    .map(|i| vec![i as f32, (i * i) as f32 * 0.3 + 1.0, 1.0 - i as f32])
                    .collect();
                let map = run(&Embeddings::from_rows(&rows), &opts).unwrap();
                assert_eq!(map.len(), n);
                assert!(map.iter().flatten().all(|v| v.is_finite()), "{method} {n}");
            }
            // Duplicates among distinct points.
            let mut rows = vec![vec![1.0f32, 0.0, 0.0, 0.5]; 6];
            rows.extend((0..6).map(|i| vec![0.0, 1.0, i as f32 * 0.1, 0.0]));
            rows.push(vec![0.0, 0.0, 1.0, 1.0]);
            let map = run(&Embeddings::from_rows(&rows), &opts).unwrap();
            assert_eq!(map.len(), 13);
            assert!(map.iter().flatten().all(|v| v.is_finite()), "{method} dups");
            // Nothing to spread: all rows the same (and, normalised, all along one direction).
            let same = Embeddings::from_rows(&vec![vec![1.0f32, 2.0, 3.0]; 5]);
            assert_eq!(run(&same, &opts), Err(MapError::NoSpread), "{method}");
            let scaled: Vec<Vec<f32>> = (1..6).map(|i| vec![i as f32, 2.0 * i as f32]).collect();
            assert_eq!(
                run(&Embeddings::from_rows(&scaled), &opts),
                Err(MapError::NoSpread)
            );
            let mut bad = rows.clone();
            bad[3][1] = f32::NAN;
            assert_eq!(
                run(&Embeddings::from_rows(&bad), &opts),
                Err(MapError::NonFinite)
            );
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let (emb, _) = clusters(2, 10, 4, 2.0, 1);
        let base = MapOptions::new(MapMethod::Umap);
        for opts in [
            MapOptions {
                perplexity: 0.0,
                ..base.clone()
            },
            MapOptions {
                perplexity: f32::NAN,
                ..base.clone()
            },
            MapOptions {
                n_neighbors: 1,
                ..base.clone()
            },
            MapOptions {
                min_dist: 1.5,
                ..base.clone()
            },
            MapOptions {
                pre_reduce_dim: 1,
                ..base.clone()
            },
            MapOptions {
                iterations: Some(0),
                ..base.clone()
            },
        ] {
            assert!(matches!(run(&emb, &opts), Err(MapError::InvalidOption(_))));
        }
    }

    #[test]
    fn iteration_defaults_follow_the_references() {
        let t = MapOptions::new(MapMethod::Tsne);
        assert_eq!(t.resolved_iterations(500), 750);
        let u = MapOptions::new(MapMethod::Umap);
        assert_eq!(u.resolved_iterations(10_000), 500);
        assert_eq!(u.resolved_iterations(10_001), 200);
        let set = MapOptions {
            iterations: Some(42),
            ..u
        };
        assert_eq!(set.resolved_iterations(5), 42);
    }
}
