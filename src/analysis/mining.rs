//! Corpus-scale structure in a set of vectors: paraphrase mining (the most similar pairs),
//! community detection (dense groups around a seed), k-means clusters and the most central
//! members of a group. The first two compute what sentence-transformers 6.2's
//! `util.paraphrase_mining_embeddings` and `util.community_detection` compute (checked against
//! them in `tests/mining.rs`); k-means is `linfa-clustering`'s.
//!
//! Scores come in blocks from one matrix product ([`Embeddings::dot_block`]), so nothing of size
//! N x N is ever held: mining 100,000 vectors of dimension 384 holds one block of 1024 x 4096
//! scores (16 MB) and room for 2 x `top_k` candidates per row (8 bytes each: 160 MB with the
//! default `top_k` of 100). Mining computes each block once for both of its sides (the matrix
//! is symmetric), so it costs half the products the Python loop does.

use std::borrow::Cow;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashSet};

use linfa::DatasetBase;
use linfa::traits::{Fit, Predict};
use linfa_clustering::KMeans;
use ndarray::Array2;
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;
use rayon::prelude::*;

use super::embeddings::Embeddings;
use super::similarity::Similarity;

/// Most rows of scores computed in one block (1024 x 4096 scores: 16 MB).
const BLOCK_ROWS: usize = 1024;
/// Most columns of scores computed in one block.
const BLOCK_COLS: usize = 4096;
/// Columns of a block whose candidate lists one task updates.
const COLUMN_GROUP: usize = 256;

/// The knobs of [`paraphrase_mining`], with the Python library's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MiningOptions {
    /// Most query rows scored at once (an upper bound: the blocks are at most 1024 rows). As in
    /// the Python library (6.2), the result does not depend on it (ties aside).
    pub query_chunk_size: usize,
    /// Most corpus rows scored at once (an upper bound: the blocks are at most 4096 columns).
    /// The result does not depend on it either.
    pub corpus_chunk_size: usize,
    /// The most pairs returned.
    pub max_pairs: usize,
    /// For each vector, only its `top_k` most similar others are candidates.
    pub top_k: usize,
}

impl Default for MiningOptions {
    fn default() -> Self {
        MiningOptions {
            query_chunk_size: 5000,
            corpus_chunk_size: 100_000,
            max_pairs: 500_000,
            top_k: 100,
        }
    }
}

/// One mined pair: rows `i < j` and their score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinedPair {
    pub score: f32,
    pub i: usize,
    pub j: usize,
}

/// A candidate neighbour of a row: its score and row packed in one integer whose order is the
/// ranking, higher first: by score (as `f32::total_cmp` orders it, with -0.0 taken as 0.0),
/// then by lower row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cand(u64);

impl Cand {
    #[inline]
    fn new(score: f32, id: u32) -> Cand {
        let b = (score + 0.0).to_bits();
        let ordered = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
        Cand(((ordered as u64) << 32) | (u32::MAX - id) as u64)
    }

    #[inline]
    fn score(self) -> f32 {
        let o = (self.0 >> 32) as u32;
        f32::from_bits(if o >> 31 == 1 { o & 0x7fff_ffff } else { !o })
    }

    #[inline]
    fn id(self) -> u32 {
        u32::MAX - self.0 as u32
    }
}

/// Each row's best `k` candidates: room for `2k` per row, and a threshold per row (`-inf` until
/// the first selection, see [`offer`]), so that almost every score is turned away by one
/// comparison.
struct RowTops {
    k: usize,
    cap: usize,
    cands: Vec<Cand>,
    lens: Vec<u32>,
    thrs: Vec<f32>,
}

/// The candidate lists of a range of rows, mutably.
struct RowsMut<'a> {
    k: usize,
    cap: usize,
    cands: &'a mut [Cand],
    lens: &'a mut [u32],
    thrs: &'a mut [f32],
}

impl RowTops {
    fn new(n: usize, k: usize) -> Self {
        let cap = 2 * k;
        RowTops {
            k,
            cap,
            cands: vec![Cand(0); n * cap],
            lens: vec![0; n],
            thrs: vec![f32::NEG_INFINITY; n],
        }
    }

    /// Rows `a..b` and rows `g..c` (`b <= g`), to update both sides of one block at once.
    fn split(&mut self, a: usize, b: usize, g: usize, c: usize) -> (RowsMut<'_>, RowsMut<'_>) {
        let (k, cap) = (self.k, self.cap);
        let (c1, c2) = self.cands.split_at_mut(b * cap);
        let (l1, l2) = self.lens.split_at_mut(b);
        let (t1, t2) = self.thrs.split_at_mut(b);
        (
            RowsMut {
                k,
                cap,
                cands: &mut c1[a * cap..],
                lens: &mut l1[a..],
                thrs: &mut t1[a..],
            },
            RowsMut {
                k,
                cap,
                cands: &mut c2[(g - b) * cap..(c - b) * cap],
                lens: &mut l2[g - b..c - b],
                thrs: &mut t2[g - b..c - b],
            },
        )
    }
}

/// The order of candidates: best first.
#[inline]
fn rank(a: &Cand, b: &Cand) -> Ordering {
    b.cmp(a)
}

/// Offers `c` to one row's list: `list` (its capacity, `2k`) holds `len` candidates, unordered;
/// when it is full the best `k` are kept (a selection, linear time) and the `k`-th best score
/// becomes the row's threshold. Whatever the order of the offers, the best `k` offered are
/// among the candidates kept (a candidate is only turned away below a score that `k` better
/// ones reach).
#[inline]
fn offer(list: &mut [Cand], len: &mut u32, thr: &mut f32, k: usize, c: Cand) {
    let n = *len as usize;
    list[n] = c;
    if n + 1 < list.len() {
        *len += 1;
    } else {
        list.select_nth_unstable_by(k - 1, rank);
        *len = k as u32;
        *thr = list[k - 1].score();
    }
}

/// A score is a candidate when it is not below the threshold: equal scores may still rank
/// higher (by row), and NaN passes (it ranks by `total_cmp`).
#[inline]
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn reaches(score: f32, thr: f32) -> bool {
    !(score < thr)
}

/// Lanes compared at once when scanning a block for scores that pass a threshold.
const LANES: usize = 16;

/// True when some score is not below its threshold (NaN included), in one pass the compiler
/// vectorises.
#[inline]
fn any_passes(scores: &[f32; LANES], thrs: &[f32; LANES]) -> bool {
    let mut any = false;
    for l in 0..LANES {
        any |= reaches(scores[l], thrs[l]);
    }
    any
}

#[inline]
fn any_passes_one(scores: &[f32; LANES], thr: f32) -> bool {
    let mut any = false;
    for s in scores {
        any |= reaches(*s, thr);
    }
    any
}

/// True when some score of `seg` is not below `thr` (NaN included).
#[inline]
fn any_reaches(seg: &[f32], thr: f32) -> bool {
    let mut chunks = seg.chunks_exact(LANES);
    for chunk in &mut chunks {
        if any_passes_one(chunk.try_into().unwrap(), thr) {
            return true;
        }
    }
    chunks.remainder().iter().any(|s| reaches(*s, thr))
}

/// First pass over the block columns `cols` (every row of the block, in order): notes in `hits`
/// which rows have a score reaching their threshold (`row_thrs`, fixed during this pass), and,
/// when `lists` holds the lists of these columns (columns past the row block), offers each
/// score to its column's list, row `a + r` as the candidate.
fn scan_group(
    block: &[f32],
    width: usize,
    a: usize,
    cols: std::ops::Range<usize>,
    row_thrs: &[f32],
    lists: Option<RowsMut<'_>>,
    hits: &mut [bool],
) {
    let lines = block.chunks_exact(width).zip(row_thrs).zip(hits.iter_mut());
    let Some(RowsMut {
        k,
        cap,
        cands,
        lens,
        thrs,
    }) = lists
    else {
        for ((line, &t), hit) in lines {
            *hit = any_reaches(&line[cols.clone()], t);
        }
        return;
    };
    let g = cols.len();
    for (r, ((line, &t), hit)) in lines.enumerate() {
        let seg = &line[cols.clone()];
        let id = (a + r) as u32;
        let mut row_hit = false;
        let mut visit = |c: usize, s: f32, thrs: &mut [f32]| {
            if reaches(s, thrs[c]) {
                offer(
                    &mut cands[c * cap..(c + 1) * cap],
                    &mut lens[c],
                    &mut thrs[c],
                    k,
                    Cand::new(s, id),
                );
            }
        };
        let mut c = 0;
        while c + LANES <= g {
            let s: &[f32; LANES] = seg[c..c + LANES].try_into().unwrap();
            let th: &[f32; LANES] = thrs[c..c + LANES].try_into().unwrap();
            row_hit |= any_passes_one(s, t);
            if any_passes(s, th) {
                for (l, &x) in s.iter().enumerate() {
                    visit(c + l, x, thrs);
                }
            }
            c += LANES;
        }
        while c < g {
            row_hit |= reaches(seg[c], t);
            visit(c, seg[c], thrs);
            c += 1;
        }
        *hit = row_hit;
    }
}

/// Second pass for one row of a block: the groups of columns the first pass marked, offered to
/// the row's own list (row `row`, global; the block's first column is global column `c0`).
#[allow(clippy::too_many_arguments)]
fn scan_row(
    line: &[f32],
    c0: usize,
    row: usize,
    groups: &[std::ops::Range<usize>],
    hits: impl Iterator<Item = bool>,
    k: usize,
    (list, len, thr): (&mut [Cand], &mut u32, &mut f32),
) {
    for (cols, hit) in groups.iter().zip(hits) {
        if !hit {
            continue;
        }
        let mut visit = |c: usize, s: f32, thr: &mut f32| {
            let j = c0 + c;
            if reaches(s, *thr) && j != row {
                offer(list, len, thr, k, Cand::new(s, j as u32));
            }
        };
        let seg = &line[cols.clone()];
        let mut chunks = seg.chunks_exact(LANES);
        let mut c = cols.start;
        for chunk in &mut chunks {
            let chunk: &[f32; LANES] = chunk.try_into().unwrap();
            if any_passes_one(chunk, *thr) {
                for (l, &s) in chunk.iter().enumerate() {
                    visit(c + l, s, thr);
                }
            }
            c += LANES;
        }
        for (l, &s) in chunks.remainder().iter().enumerate() {
            visit(c + l, s, thr);
        }
    }
}

/// The vectors the scores are computed on: unit length for cosine, as given otherwise.
fn scoring_vectors(emb: &Embeddings, sim: Similarity) -> Cow<'_, Embeddings> {
    if sim == Similarity::Cosine {
        Cow::Owned(emb.normalized())
    } else {
        Cow::Borrowed(emb)
    }
}

/// For every row, its best `k` other rows by `sim` (itself excluded), computing each block of
/// scores once for both of its sides (the score of `(i, j)` serves row `i` and row `j`). `None`
/// when `progress` asked to stop.
fn row_tops(
    emb: &Embeddings,
    sim: Similarity,
    k: usize,
    block_rows: usize,
    block_cols: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Option<RowTops> {
    let n = emb.len();
    let mut tops = RowTops::new(n, k);
    // Per row block: the square block of its rows against themselves, then the columns past
    // it in chunks.
    let chunks = |a: usize| {
        let b = (a + block_rows).min(n);
        std::iter::once(a..b).chain(
            (b..n)
                .step_by(block_cols)
                .map(move |c| c..(c + block_cols).min(n)),
        )
    };
    let total: usize = (0..n).step_by(block_rows).map(|a| chunks(a).count()).sum();
    let mut done = 0;
    let mut block = Vec::new();
    for a in (0..n).step_by(block_rows) {
        let b = (a + block_rows).min(n);
        for std::ops::Range { start: c0, end: c1 } in chunks(a) {
            let width = c1 - c0;
            Embeddings::score_block(sim, emb, a..b, emb, c0..c1, &mut block);
            if c0 == a {
                // The square block: one score per pair, whichever row proposes it (the
                // product's two halves can differ in the last bit).
                for r in 0..width {
                    for c in r + 1..width {
                        block[c * width + r] = block[r * width + c];
                    }
                }
            }
            // The row block's rows see every column of the block; the columns past the row
            // block (their pairs with these rows are not visited from their side) get the same
            // scores in their own lists. Inside the row block both sides are rows.
            let g = b.max(c0);
            let (rows, cols) = tops.split(a, b, g, c1.max(g));
            let past = g.min(c1) - c0;
            // Groups of columns: those inside the row block, then those past it (each with
            // its columns' lists).
            let mut groups: Vec<std::ops::Range<usize>> = (0..past)
                .step_by(COLUMN_GROUP)
                .map(|s| s..(s + COLUMN_GROUP).min(past))
                .collect();
            let mut lists: Vec<Option<RowsMut<'_>>> = (0..groups.len()).map(|_| None).collect();
            let RowsMut {
                k,
                cap,
                cands,
                lens,
                thrs,
            } = cols;
            for (i, ((cands, lens), thrs)) in cands
                .chunks_mut(COLUMN_GROUP * cap)
                .zip(lens.chunks_mut(COLUMN_GROUP))
                .zip(thrs.chunks_mut(COLUMN_GROUP))
                .enumerate()
            {
                let s = past + i * COLUMN_GROUP;
                groups.push(s..s + lens.len());
                lists.push(Some(RowsMut {
                    k,
                    cap,
                    cands,
                    lens,
                    thrs,
                }));
            }
            // First pass, in parallel over groups of columns: the columns' lists, and which
            // rows have something for their own lists in which group.
            let rows_n = b - a;
            let mut hits = vec![false; groups.len() * rows_n];
            let row_thrs: &[f32] = rows.thrs;
            hits.par_chunks_mut(rows_n)
                .zip(lists.into_par_iter())
                .zip(groups.par_iter())
                .for_each(|((hits, lists), cols)| {
                    scan_group(&block, width, a, cols.clone(), row_thrs, lists, hits)
                });
            // Second pass, in parallel over rows: the marked groups into the rows' lists.
            let RowsMut {
                k,
                cap,
                cands,
                lens,
                thrs,
            } = rows;
            let (groups, hits) = (&groups, &hits);
            block
                .par_chunks(width)
                .zip(cands.par_chunks_mut(cap))
                .zip(lens.par_iter_mut().zip(thrs.par_iter_mut()))
                .enumerate()
                .with_min_len(16)
                .for_each(|(r, ((line, list), (len, thr)))| {
                    let row_hits = (0..groups.len()).map(|gi| hits[gi * rows_n + r]);
                    scan_row(line, c0, a + r, groups, row_hits, k, (list, len, thr))
                });
            done += 1;
            if !progress(done, total) {
                return None;
            }
        }
    }
    Some(tops)
}

/// Sentence-transformers' `util.paraphrase_mining_embeddings`: the pairs of rows with the highest
/// `sim` score, best first, at most `opts.max_pairs`, where each row only proposes its
/// `opts.top_k` most similar other rows. Cosine scores unit-length copies of the vectors.
///
/// The result is the library's: each row's `top_k` best others (itself excluded) are offered in
/// row order, best first, to a min-heap of at most `max_pairs` pairs that skips a pair it holds
/// and a score not above the last one it evicted, exactly as the Python loop does. Ties, which
/// the library leaves to `torch.topk` and to its heap's layout, are broken here by row: among
/// equal scores a row's lower-numbered neighbour comes first, and the result lists equal scores
/// by `i`, then `j`. The query and corpus chunk sizes only bound the blocks of scores held at
/// once; they do not change the result. Cosine and dot scores come from matrix products; the
/// euclidean and manhattan ones are computed pair by pair (right, but slow at corpus scale).
///
/// `progress(done, total)` is called after each block of scores; returning `false` stops the
/// work and the function returns `None`.
pub fn paraphrase_mining(
    emb: &Embeddings,
    sim: Similarity,
    opts: &MiningOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Option<Vec<MinedPair>> {
    let n = emb.len();
    let k = opts.top_k.min(n.saturating_sub(1));
    if k == 0 || opts.max_pairs == 0 {
        return Some(Vec::new());
    }
    assert!(n <= u32::MAX as usize, "more than 2^32 vectors");
    let src = scoring_vectors(emb, sim);
    let block_rows = opts.query_chunk_size.clamp(1, BLOCK_ROWS);
    let block_cols = opts.corpus_chunk_size.clamp(1, BLOCK_COLS);
    let mut tops = row_tops(&src, sim, k, block_rows, block_cols, progress)?;
    Some(collect_pairs(&mut tops, opts.max_pairs))
}

/// A pair in the Python heap, ordered as its `(score, i, j)` tuple.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Key {
    score: f32,
    i: u32,
    j: u32,
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(self.i.cmp(&other.i))
            .then(self.j.cmp(&other.j))
    }
}

/// Hashes the pair keys of the queued set: one multiply and a fold (the keys are row numbers,
/// not chosen by an adversary).
#[derive(Default, Clone, Copy)]
struct PairHasher(u64);

impl std::hash::Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ b as u64);
        }
    }

    fn write_u64(&mut self, x: u64) {
        let h = (x ^ self.0.rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
}

/// The lowest score a pair of the result can have: the `max_pairs`-th best score among the
/// distinct candidate pairs (`-inf` when there are no more than `max_pairs`). Every pair above it
/// ends in the Python heap and none below it does (the heap's minimum never decreases once it
/// is full, and a pair leaves or is turned away only below that minimum), and a pair below it
/// changes nothing for the others (it only ever holds a place no pair at or above the floor
/// needs, and sets `min_score` below the floor), so the loop may skip those pairs unseen. Needs
/// each pair to carry one score whichever row proposes it (the blocks are symmetric).
fn pair_floor(tops: &RowTops, max_pairs: usize) -> f32 {
    let (k, cap) = (tops.k, tops.cap);
    let row = |i: usize| &tops.cands[i * cap..i * cap + tops.lens[i] as usize];
    let scores: Vec<f32> = (0..tops.lens.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            row(i).iter().filter_map(move |c| {
                let j = c.id() as usize;
                // Counted from row i unless row j (i > j) proposes the pair too: row j's list
                // is its best k, so it holds (score, i) when that ranks at or above its last.
                let from_j = i > j && {
                    let other = row(j);
                    other.len() < k || Cand::new(c.score(), i as u32) >= other[other.len() - 1]
                };
                (!from_j).then_some(c.score())
            })
        })
        .collect();
    if scores.len() <= max_pairs {
        return f32::NEG_INFINITY;
    }
    let mut scores = scores;
    let (_, nth, _) = scores.select_nth_unstable_by(max_pairs - 1, |a, b| b.total_cmp(a));
    *nth
}

/// The Python loop over each row's candidates (best first), with its min-heap of at most
/// `max_pairs` pairs, its set of queued pairs and its `min_score`, skipping the pairs below
/// [`pair_floor`].
fn collect_pairs(tops: &mut RowTops, max_pairs: usize) -> Vec<MinedPair> {
    let (k, cap) = (tops.k, tops.cap);
    // Each row's best k, best first.
    tops.cands
        .par_chunks_mut(cap)
        .zip(tops.lens.par_iter_mut())
        .for_each(|(list, len)| {
            let n = *len as usize;
            if n > k {
                list[..n].select_nth_unstable_by(k - 1, rank);
                *len = k as u32;
            }
            list[..*len as usize].sort_unstable_by(rank);
        });
    let floor = pair_floor(tops, max_pairs);
    let mut heap: BinaryHeap<Reverse<Key>> = BinaryHeap::new();
    let mut queued: HashSet<u64, std::hash::BuildHasherDefault<PairHasher>> = HashSet::default();
    let mut min_score = f32::NEG_INFINITY;
    let pair_id = |k: &Key| ((k.i as u64) << 32) | k.j as u64;
    for (i, (row, &len)) in tops.cands.chunks_exact(cap).zip(&tops.lens).enumerate() {
        let i = i as u32;
        for c in &row[..len as usize] {
            // (-0.0 is 0.0 here, as in Python's comparisons of floats.)
            let score = c.score();
            if score < floor || score <= min_score {
                continue;
            }
            let key = Key {
                score,
                i: i.min(c.id()),
                j: i.max(c.id()),
            };
            if !queued.insert(pair_id(&key)) {
                continue;
            }
            if heap.len() < max_pairs {
                heap.push(Reverse(key));
            } else {
                // heapq.heappushpop: the smaller of the root and the new pair goes.
                let mut root = heap.peek_mut().expect("max_pairs > 0");
                let evicted = if root.0 < key {
                    std::mem::replace(&mut root.0, key)
                } else {
                    key
                };
                drop(root);
                queued.remove(&pair_id(&evicted));
                min_score = evicted.score;
            }
        }
    }
    let mut pairs: Vec<Key> = heap.into_iter().map(|r| r.0).collect();
    pairs.sort_unstable_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.i.cmp(&b.i))
            .then(a.j.cmp(&b.j))
    });
    pairs
        .into_iter()
        .map(|k| MinedPair {
            score: k.score,
            i: k.i as usize,
            j: k.j as usize,
        })
        .collect()
}

/// Most columns of scores computed in one block by [`community_detection`].
const COMMUNITY_COLS: usize = 8192;

/// Sentence-transformers' `util.community_detection`: groups of rows whose cosine similarity to
/// a seed row is at least `threshold`, each of at least `min_community_size` rows, largest
/// first, no row in two groups. Each group starts with its seed; the other members follow by
/// similarity to the seed, highest first (equal scores by row, where the library leaves the
/// order to `torch.topk`).
///
/// As the library: vectors are normalised; every row whose `min_community_size`-th most similar
/// row (itself included) reaches `threshold` is a seed of a candidate group (all rows at or
/// above `threshold`); candidates are taken largest first (a stable sort: equal sizes in row
/// order), a candidate whose seed is already taken is skipped, and the others lose the rows
/// already taken and are kept if still large enough. The final groups are sorted by size
/// (stable). A `min_community_size` of 0 counts as 1 (the library fails on 0). `batch_size`
/// rows are scored at a time; `progress(rows_done, rows)` after each batch, `false` to stop
/// (then `None`).
pub fn community_detection(
    emb: &Embeddings,
    threshold: f32,
    min_community_size: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Option<Vec<Vec<usize>>> {
    let n = emb.len();
    if n == 0 || n < min_community_size {
        return Some(Vec::new());
    }
    assert!(n <= u32::MAX as usize, "more than 2^32 vectors");
    let min_size = min_community_size.max(1);
    let norm = emb.normalized();
    let batch = batch_size.max(1);
    let mut extracted: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut block = Vec::new();
    for a in (0..n).step_by(batch) {
        let b = (a + batch).min(n);
        let mut found: Vec<Vec<(f32, u32)>> = vec![Vec::new(); b - a];
        for c0 in (0..n).step_by(COMMUNITY_COLS) {
            let c1 = (c0 + COMMUNITY_COLS).min(n);
            Embeddings::dot_block(&norm, a..b, &norm, c0..c1, &mut block);
            block
                .par_chunks(c1 - c0)
                .zip(found.par_iter_mut())
                .for_each(|(line, f)| {
                    for (c, &s) in line.iter().enumerate() {
                        if s >= threshold {
                            f.push((s, (c0 + c) as u32));
                        }
                    }
                });
        }
        let rows: Vec<Option<Vec<u32>>> = found
            .into_par_iter()
            .map(|mut f| {
                if f.len() < min_size {
                    return None;
                }
                f.sort_unstable_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
                Some(f.into_iter().map(|(_, j)| j).collect())
            })
            .collect();
        for (r, members) in rows.into_iter().enumerate() {
            if let Some(m) = members {
                extracted.push((a + r, m));
            }
        }
        if !progress(b, n) {
            return None;
        }
    }
    // Largest first; a stable sort, as Python's `sorted`.
    extracted.sort_by_key(|x| Reverse(x.1.len()));
    let mut used = vec![false; n];
    let mut communities: Vec<Vec<usize>> = Vec::new();
    for (seed, members) in extracted {
        if used[seed] {
            continue;
        }
        let free: Vec<usize> = members
            .into_iter()
            .map(|j| j as usize)
            .filter(|&j| !used[j])
            .collect();
        if free.len() >= min_size {
            let mut community = Vec::with_capacity(free.len() + 1);
            community.push(seed);
            community.extend(free.into_iter().filter(|&j| j != seed));
            for &j in &community {
                used[j] = true;
            }
            communities.push(community);
        }
    }
    communities.sort_by_key(|x| Reverse(x.len()));
    Some(communities)
}

/// The result of [`kmeans`].
#[derive(Debug, Clone)]
pub struct KMeansResult {
    /// The cluster of each row.
    pub labels: Vec<usize>,
    /// One centroid per cluster.
    pub centroids: Embeddings,
    /// The sum of squared euclidean distances of the rows to their centroids (scikit-learn's
    /// `inertia_`).
    pub inertia: f64,
}

/// K-means (Lloyd's algorithm, k-means++ initialisation, one run, as scikit-learn's
/// `n_init="auto"` does with k-means++; tolerance 1e-4) by `linfa-clustering`, on the vectors
/// as given: euclidean. For a cosine model, pass unit-length vectors
/// ([`Embeddings::normalized`]): on the unit sphere euclidean distance orders pairs as cosine
/// does, so the clusters follow the model's similarity. Seeded: the same `seed` gives the same
/// clusters. `k` is clamped to `1..=rows`; `max_iter` 0 counts as 1. No rows: no clusters.
pub fn kmeans(emb: &Embeddings, k: usize, seed: u64, max_iter: usize) -> KMeansResult {
    kmeans_with_progress(emb, k, seed, max_iter, &mut |_, _| true).expect("not cancelled")
}

/// [`kmeans`], one Lloyd iteration at a time: `progress(iterations done, max_iter)` after each;
/// returning false stops and gives `None`. The iterations are linfa's own (each a one-iteration
/// fit from the previous centroids, the first from k-means++), stopped as linfa stops them:
/// when the centroids move by less than the tolerance (euclidean norm of the change of all of
/// them), or after `max_iter`.
pub fn kmeans_with_progress(
    emb: &Embeddings,
    k: usize,
    seed: u64,
    max_iter: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Option<KMeansResult> {
    use linfa_clustering::KMeansInit;
    const TOLERANCE: f32 = 1e-4;
    let (n, dim) = (emb.len(), emb.dim());
    if n == 0 {
        return Some(KMeansResult {
            labels: Vec::new(),
            centroids: Embeddings::new(dim),
            inertia: 0.0,
        });
    }
    let k = k.clamp(1, n);
    let max_iter = max_iter.max(1);
    let records =
        Array2::from_shape_vec((n, dim), emb.as_flat().to_vec()).expect("rows of `dim` numbers");
    let data = DatasetBase::from(records);
    let step = |init: KMeansInit<f32>| {
        KMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(seed))
            .n_runs(1)
            .max_n_iterations(1)
            .tolerance(TOLERANCE)
            .init_method(init)
            .fit(&data)
            .expect("valid k-means parameters")
    };
    let mut model = step(KMeansInit::KMeansPlusPlus);
    let mut done = 1;
    if !progress(done, max_iter) {
        return None;
    }
    // The first iteration's starting centroids are not kept, so its move is not known; linfa
    // stops after one iteration only when `max_iter` is 1.
    while done < max_iter {
        let before = model.centroids().clone();
        model = step(KMeansInit::Precomputed(before.clone()));
        done += 1;
        if !progress(done, max_iter) {
            return None;
        }
        let moved = (model.centroids() - &before)
            .iter()
            .map(|d| d * d)
            .sum::<f32>()
            .sqrt();
        if moved < TOLERANCE {
            break;
        }
    }
    let labels: Vec<usize> = model.predict(data.records()).to_vec();
    let centroids = Embeddings::from_flat(dim, model.centroids().iter().copied().collect());
    let inertia = labels
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            emb.row(i)
                .iter()
                .zip(centroids.row(c))
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum::<f64>()
        })
        .sum();
    Some(KMeansResult {
        labels,
        centroids,
        inertia,
    })
}

/// The `n` members (rows of `emb`) closest by cosine to the mean of the group's unit-length
/// vectors, most central first (equal scores by position in `members`): the sentences that
/// show what a cluster is about.
pub fn central_members(emb: &Embeddings, members: &[usize], n: usize) -> Vec<usize> {
    let dim = emb.dim();
    let unit = |i: usize| {
        let row = emb.row(i);
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter().map(move |x| x / norm)
    };
    let mut mean = vec![0f64; dim];
    for &i in members {
        for (m, x) in mean.iter_mut().zip(unit(i)) {
            *m += x as f64;
        }
    }
    let mean: Vec<f32> = mean.into_iter().map(|m| m as f32).collect();
    let mut scored: Vec<(f32, usize)> = members
        .iter()
        .map(|&i| (super::similarity::cosine(emb.row(i), &mean), i))
        .collect();
    // A stable sort keeps equal scores in the order of `members`.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(n).map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never_stop() -> impl FnMut(usize, usize) -> bool {
        |_, _| true
    }

    fn mine(e: &Embeddings, sim: Similarity, opts: &MiningOptions) -> Vec<(f32, usize, usize)> {
        paraphrase_mining(e, sim, opts, &mut never_stop())
            .unwrap()
            .into_iter()
            .map(|p| (p.score, p.i, p.j))
            .collect()
    }

    fn opts(top_k: usize, max_pairs: usize) -> MiningOptions {
        MiningOptions {
            top_k,
            max_pairs,
            ..MiningOptions::default()
        }
    }

    /// A line-by-line transcription of sentence-transformers 6.2's
    /// `paraphrase_mining_embeddings` over a full score matrix (each row's candidates sorted by
    /// score, equal scores by column, as our tie rule), to compare the fast path against.
    fn python_loop(m: &[Vec<f32>], top_k: usize, max_pairs: usize) -> Vec<(f32, usize, usize)> {
        let n = m.len();
        let mut heap: Vec<(f32, usize, usize)> = Vec::new();
        let mut queued = HashSet::new();
        let mut min_score = f32::NEG_INFINITY;
        let less = |a: &(f32, usize, usize), b: &(f32, usize, usize)| {
            a.0.total_cmp(&b.0)
                .then(a.1.cmp(&b.1))
                .then(a.2.cmp(&b.2))
                .is_lt()
        };
        for (i, row) in m.iter().enumerate() {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let neighbours: Vec<usize> = order
                .into_iter()
                .take(top_k + 1)
                .filter(|&j| j != i)
                .take(top_k)
                .collect();
            for j in neighbours {
                let score = row[j];
                if score <= min_score {
                    continue;
                }
                let pair = (i.min(j), i.max(j));
                if !queued.insert(pair) {
                    continue;
                }
                let item = (score, pair.0, pair.1);
                if heap.len() < max_pairs {
                    heap.push(item);
                } else {
                    // heappushpop: the smallest of the heap and the new item goes.
                    let (pos, root) = heap
                        .iter()
                        .enumerate()
                        .min_by(|a, b| {
                            if less(a.1, b.1) {
                                Ordering::Less
                            } else {
                                Ordering::Greater
                            }
                        })
                        .map(|(p, r)| (p, *r))
                        .unwrap();
                    let evicted = if less(&root, &item) {
                        heap[pos] = item;
                        root
                    } else {
                        item
                    };
                    queued.remove(&(evicted.1, evicted.2));
                    min_score = evicted.0;
                }
            }
        }
        heap.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        heap
    }

    /// Pseudo-random vectors from a fixed linear congruential sequence, whose scores are exact
    /// in f32 whatever the order of summation, so that ties are real ties: `unit` gives unit
    /// vectors with four coordinates of +-0.5 (cosines are multiples of 0.25), otherwise small
    /// integers. Every seventh row repeats an earlier one.
    fn vectors(n: usize, dim: usize, seed: u64, unit: bool) -> Embeddings {
        let mut x = seed;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize
        };
        let mut e = Embeddings::new(dim);
        for i in 0..n {
            if i % 7 == 3 {
                let copy = e.row(i / 2).to_vec();
                e.push(&copy);
                continue;
            }
            let mut row = vec![0f32; dim];
            if unit {
                let mut set = 0;
                while set < 4 {
                    let d = next() % dim;
                    if row[d] == 0.0 {
                        row[d] = if next() % 2 == 0 { 0.5 } else { -0.5 };
                        set += 1;
                    }
                }
            } else {
                row.iter_mut().for_each(|v| *v = (next() % 7) as f32 - 3.0);
            }
            e.push(&row);
        }
        e
    }

    #[test]
    fn packed_candidates_rank_by_score_then_lower_row() {
        let values = [
            f32::NEG_INFINITY,
            -2.5,
            -1e-30,
            -0.0,
            0.0,
            1e-30,
            0.75,
            3.0,
            f32::INFINITY,
        ];
        for &s in &values {
            for id in [0, 7, u32::MAX] {
                let c = Cand::new(s, id);
                assert_eq!((c.score(), c.id()), (s + 0.0, id));
            }
        }
        for w in values.windows(2) {
            assert!(
                Cand::new(w[1], 9) > Cand::new(w[0], 0) || w[1] == w[0],
                "{w:?}"
            );
        }
        assert!(Cand::new(0.5, 3) > Cand::new(0.5, 4));
        assert_eq!(Cand::new(-0.0, 1), Cand::new(0.0, 1));
    }

    #[test]
    fn by_hand_best_first_without_self_pairs() {
        // Cosines: (0, 1) 0.8, (0, 2) 0, (1, 2) 0.6, (0, 3) -1, (1, 3) -0.8, (2, 3) 0.
        let e = Embeddings::from_rows(&[[1.0, 0.0], [0.8, 0.6], [0.0, 2.0], [-3.0, 0.0]]);
        let got = mine(&e, Similarity::Cosine, &MiningOptions::default());
        let pairs: Vec<(usize, usize)> = got.iter().map(|p| (p.1, p.2)).collect();
        // (0, 2) and (2, 3) tie at 0: by i.
        assert_eq!(pairs, [(0, 1), (1, 2), (0, 2), (2, 3), (1, 3), (0, 3)]);
        assert!((got[0].0 - 0.8).abs() < 1e-6 && (got[1].0 - 0.6).abs() < 1e-6);
        assert!(got.iter().all(|p| p.1 < p.2));
    }

    #[test]
    fn top_k_limits_each_rows_proposals() {
        let e = Embeddings::from_rows(&[[1.0, 0.0], [0.8, 0.6], [0.0, 2.0], [-3.0, 0.0]]);
        // Row 0 proposes 1; row 1 proposes 0; row 2 proposes 1; row 3 proposes 2 (cosine 0,
        // above -0.8 and -1).
        let got = mine(&e, Similarity::Cosine, &opts(1, 100));
        let pairs: Vec<(usize, usize)> = got.iter().map(|p| (p.1, p.2)).collect();
        assert_eq!(pairs, [(0, 1), (1, 2), (2, 3)]);
    }

    #[test]
    fn max_pairs_keeps_the_best() {
        let e = Embeddings::from_rows(&[[1.0, 0.0], [0.8, 0.6], [0.0, 2.0], [-3.0, 0.0]]);
        let got = mine(&e, Similarity::Cosine, &opts(100, 2));
        let pairs: Vec<(usize, usize)> = got.iter().map(|p| (p.1, p.2)).collect();
        assert_eq!(pairs, [(0, 1), (1, 2)]);
    }

    #[test]
    fn ties_go_by_row() {
        // Four identical vectors: every pair scores 1. Row 0 proposes 1 and 2 (top 2, lower
        // rows first); row 1: 0 (held), 2; row 2: 0, 1 (held); row 3: 0, 1.
        let e = Embeddings::from_rows(&[[1.0, 1.0]; 4]);
        let got = mine(&e, Similarity::Dot, &opts(2, 100));
        let pairs: Vec<(usize, usize)> = got.iter().map(|p| (p.1, p.2)).collect();
        assert_eq!(pairs, [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]);
        // With room for 2: (0, 1) and (0, 2) fill the heap; row 1's (1, 2) ties on score and
        // heappushpop evicts the smallest (score, i, j) tuple, (0, 1); every later pair scores
        // no more than the evicted 1 and is skipped, as in the Python loop.
        let got = mine(&e, Similarity::Dot, &opts(2, 2));
        let want = python_loop(&Similarity::Dot.matrix(&e.to_rows()), 2, 2);
        assert_eq!(got, want);
        assert_eq!(got, [(2.0, 0, 2), (2.0, 1, 2)]);
    }

    #[test]
    fn empty_and_single_inputs_give_nothing() {
        let none = Embeddings::new(3);
        assert!(mine(&none, Similarity::Cosine, &MiningOptions::default()).is_empty());
        let one = Embeddings::from_rows(&[[1.0, 2.0]]);
        assert!(mine(&one, Similarity::Cosine, &MiningOptions::default()).is_empty());
        let two = Embeddings::from_rows(&[[1.0, 2.0], [2.0, 1.0]]);
        assert!(mine(&two, Similarity::Cosine, &opts(0, 10)).is_empty());
        assert!(mine(&two, Similarity::Cosine, &opts(5, 0)).is_empty());
        assert_eq!(mine(&two, Similarity::Cosine, &opts(5, 10)).len(), 1);
    }

    fn assert_same(got: &[(f32, usize, usize)], want: &[(f32, usize, usize)], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.1, g.2), (w.1, w.2), "{what}");
            assert!((g.0 - w.0).abs() < 1e-5, "{what}: {g:?} vs {w:?}");
        }
    }

    #[test]
    fn blocked_and_symmetric_equals_the_python_loop() {
        // Exact scores with many ties (repeated rows, few distinct values).
        for (sim, unit) in [
            (Similarity::Dot, false),
            (Similarity::Euclidean, false),
            (Similarity::Manhattan, false),
            (Similarity::Cosine, true),
        ] {
            let e = vectors(150, 12, 7, unit);
            let src = if sim == Similarity::Cosine {
                e.normalized()
            } else {
                e.clone()
            };
            let m = sim.matrix(&src.to_rows());
            for (top_k, max_pairs) in [(3, 40), (10, 1000), (200, 20000), (1, 5), (4, 150)] {
                let want = python_loop(&m, top_k, max_pairs);
                // Small and odd block sizes exercise every edge of the tiling.
                for (q, c) in [(5000, 100_000), (7, 13), (1, 1), (64, 33)] {
                    let o = MiningOptions {
                        query_chunk_size: q,
                        corpus_chunk_size: c,
                        max_pairs,
                        top_k,
                    };
                    let what = format!("{sim} k {top_k} max {max_pairs} ({q}, {c})");
                    assert_same(&mine(&e, sim, &o), &want, &what);
                }
            }
        }
    }

    #[test]
    fn large_blocks_equal_the_python_loop() {
        // More than one full block of rows and columns (1024 x 4096), several column groups.
        let e = vectors(4500, 6, 11, false);
        let m = Similarity::Dot.matrix(&e.to_rows());
        for (top_k, max_pairs) in [(4, 3000), (2, 100_000)] {
            let want = python_loop(&m, top_k, max_pairs);
            let got = mine(&e, Similarity::Dot, &opts(top_k, max_pairs));
            assert_same(&got, &want, &format!("k {top_k} max {max_pairs}"));
        }
    }

    #[test]
    fn cancelling_stops_mining_and_community_detection() {
        let e = vectors(40, 4, 3, true);
        let o = MiningOptions {
            query_chunk_size: 10,
            corpus_chunk_size: 10,
            ..MiningOptions::default()
        };
        let mut calls = Vec::new();
        let got = paraphrase_mining(&e, Similarity::Cosine, &o, &mut |d, t| {
            calls.push((d, t));
            d < 2
        });
        assert!(got.is_none());
        // Blocks: rows 0..10 see 4 column chunks, 10..20 three, then two, then one.
        assert_eq!(calls, [(1, 10), (2, 10)]);
        let mut seen = Vec::new();
        let got = community_detection(&e, 0.5, 2, 16, &mut |d, t| {
            seen.push((d, t));
            false
        });
        assert!(got.is_none());
        assert_eq!(seen, [(16, 40)]);
        let mut all = Vec::new();
        paraphrase_mining(&e, Similarity::Cosine, &o, &mut |d, t| {
            all.push((d, t));
            true
        })
        .unwrap();
        assert_eq!(all.last(), Some(&(10, 10)));
    }

    #[test]
    fn communities_by_hand() {
        // Two tight groups and a loner: a = rows 0, 1, 2, 5 around (1, 0); b = rows 3, 4, 6
        // around (0, 1); row 7 points away from both.
        let rows = [
            [1.0, 0.0],
            [0.99, 0.1],
            [0.98, -0.1],
            [0.0, 1.0],
            [0.1, 0.99],
            [2.0, 0.05],
            [-0.1, 0.98],
            [-1.0, -1.0],
        ];
        let e = Embeddings::from_rows(&rows);
        let c = community_detection(&e, 0.9, 3, 2, &mut never_stop()).unwrap();
        // Seeds first (the first row whose group is largest), then by similarity to the seed.
        // Row 0: cosines 1 (0), 0.9994 (5), 0.995 (1), 0.995 (2) -> 0, 5, then 1 and 2.
        assert_eq!(c.len(), 2);
        assert_eq!(c[0][0], 0);
        let mut a = c[0].clone();
        a.sort();
        assert_eq!(a, [0, 1, 2, 5]);
        assert_eq!(c[1][0], 3);
        let mut b = c[1].clone();
        b.sort();
        assert_eq!(b, [3, 4, 6]);
        // Members after the seed by score, highest first.
        let n = e.normalized();
        for comm in &c {
            let s: Vec<f32> = comm[1..]
                .iter()
                .map(|&j| Similarity::Dot.score(n.row(comm[0]), n.row(j)))
                .collect();
            assert!(s.windows(2).all(|w| w[0] >= w[1]), "{s:?}");
        }
        // A minimum size of 4 keeps only the first; 9 is more than the rows.
        assert_eq!(
            community_detection(&e, 0.9, 4, 1024, &mut never_stop())
                .unwrap()
                .len(),
            1
        );
        assert!(
            community_detection(&e, 0.9, 9, 1024, &mut never_stop())
                .unwrap()
                .is_empty()
        );
        assert!(
            community_detection(&Embeddings::new(2), 0.9, 1, 10, &mut never_stop())
                .unwrap()
                .is_empty()
        );
        // Minimum 1: every row is in some group.
        let all = community_detection(&e, 0.9, 1, 3, &mut never_stop()).unwrap();
        assert_eq!(all.iter().map(Vec::len).sum::<usize>(), 8);
        assert_eq!(all.last().unwrap(), &vec![7]);
    }

    #[test]
    fn overlapping_candidates_lose_taken_rows() {
        // A chain on a circle: each row is within the threshold of its neighbours only, so
        // candidate groups overlap and the later ones shrink below the minimum.
        let rows: Vec<[f32; 2]> = (0..6)
            .map(|i| {
                let t = i as f32 * 0.3;
                [t.cos(), t.sin()]
            })
            .collect();
        let e = Embeddings::from_rows(&rows);
        // cos(0.3) = 0.955, cos(0.6) = 0.825: threshold 0.9 links neighbours only. Rows 1..4
        // have groups of 3 (themselves and two neighbours); 0 and 5 of 2. Row 1 seeds
        // [1, 0, 2] (0 before 2 on equal scores? the scores differ by rounding: either order),
        // then row 2's group loses 1 and 2... is skipped (seed taken), row 3 seeds [3, 2?]
        // no: 2 is taken, leaving [3, 4]: too small; row 4 seeds [4, 3, 5].
        let c = community_detection(&e, 0.9, 3, 1024, &mut never_stop()).unwrap();
        let sets: Vec<Vec<usize>> = c
            .iter()
            .map(|g| {
                let mut g = g.clone();
                g.sort();
                g
            })
            .collect();
        assert_eq!(sets, [vec![0, 1, 2], vec![3, 4, 5]]);
        assert_eq!((c[0][0], c[1][0]), (1, 4));
    }

    #[test]
    fn kmeans_is_seeded_and_finds_separated_groups() {
        let mut rows = Vec::new();
        for i in 0..30 {
            let d = (i % 10) as f32 * 0.01;
            rows.push(match i / 10 {
                0 => [5.0 + d, 0.0],
                1 => [0.0, 5.0 + d],
                _ => [-5.0, -5.0 - d],
            });
        }
        let e = Embeddings::from_rows(&rows);
        let r = kmeans(&e, 3, 42, 100);
        assert_eq!(r.labels.len(), 30);
        assert_eq!(r.centroids.len(), 3);
        for g in 0..3 {
            let l = r.labels[g * 10];
            assert!(r.labels[g * 10..g * 10 + 10].iter().all(|&x| x == l));
        }
        let distinct: HashSet<usize> = r.labels.iter().copied().collect();
        assert_eq!(distinct.len(), 3);
        // Within-group spread only: 3 groups x sum of (d - mean)^2 = 3 x 0.00825.
        assert!((r.inertia - 3.0 * 0.00825).abs() < 1e-4, "{}", r.inertia);
        let again = kmeans(&e, 3, 42, 100);
        assert_eq!(again.labels, r.labels);
        assert_eq!(again.centroids, r.centroids);
        // k past the rows is clamped; no rows, no clusters.
        assert_eq!(kmeans(&e, 100, 1, 10).centroids.len(), 30);
        assert!(kmeans(&Embeddings::new(2), 3, 1, 10).labels.is_empty());
    }

    /// Iteration by iteration gives what one linfa fit gives; progress counts iterations and a
    /// false from it stops the run.
    #[test]
    fn kmeans_steps_equal_one_linfa_fit_and_can_be_cancelled() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Overlapping blobs, so that Lloyd takes a good number of iterations.
        let rows: Vec<Vec<f32>> = (0..600)
            .map(|i| {
                let c = (i % 6) as f32;
                (0..8)
                    .map(|j| c * ((j % 3) as f32 - 1.0) * 0.3 + rng.random_range(-1.0..1.0f32))
                    .collect()
            })
            .collect();
        let e = Embeddings::from_rows(&rows);
        let records = Array2::from_shape_vec((600, 8), e.as_flat().to_vec()).unwrap();
        let data = DatasetBase::from(records);
        let one = KMeans::params_with_rng(6, Xoshiro256Plus::seed_from_u64(5))
            .n_runs(1)
            .max_n_iterations(300)
            .tolerance(1e-4)
            .fit(&data)
            .unwrap();
        let mut calls = Vec::new();
        let r = kmeans_with_progress(&e, 6, 5, 300, &mut |d, t| {
            calls.push((d, t));
            true
        })
        .unwrap();
        let want: Vec<f32> = one.centroids().iter().copied().collect();
        assert_eq!(r.centroids.as_flat(), want.as_slice());
        assert_eq!(r.labels, one.predict(data.records()).to_vec());
        assert!(calls.len() > 3, "{calls:?}");
        assert!(calls.iter().enumerate().all(|(i, &c)| c == (i + 1, 300)));
        let mut seen = 0;
        let stopped = kmeans_with_progress(&e, 6, 5, 300, &mut |d, _| {
            seen = d;
            d < 2
        });
        assert!(stopped.is_none());
        assert_eq!(seen, 2);
    }

    #[test]
    fn central_members_are_nearest_the_mean_direction() {
        let e =
            Embeddings::from_rows(&[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 4.0], [9.0, 9.0]]);
        // Mean of the unit vectors of 0, 1, 2 is along (1, 1): row 2 first, 0 and 1 tie.
        assert_eq!(central_members(&e, &[0, 1, 2], 3), [2, 0, 1]);
        assert_eq!(central_members(&e, &[1, 0, 2], 2), [2, 1]);
        assert_eq!(central_members(&e, &[3, 4, 0], 1), [3]);
        assert!(central_members(&e, &[], 3).is_empty());
    }
}
