//! The batches of an epoch: which file each step's rows come from, and which of its rows. A
//! run over one file takes its shuffled rows in order; a run over several files never mixes
//! files in a batch (their columns may differ) and interleaves the files' batches as the Python
//! trainer's `multi_dataset_batch_sampler` does.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// How the batches of several training files are interleaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MultiSampler {
    /// Every batch of every file once per epoch, the file of each step drawn in proportion to its
    /// batches left (`MultiDatasetBatchSamplers.PROPORTIONAL`, the Python trainer's default).
    #[default]
    Proportional,
    /// One batch of each file in turn while every file has one left (`ROUND_ROBIN`): each file
    /// weighs the same whatever its size; the rest of the larger files is not seen that epoch.
    RoundRobin,
}

impl MultiSampler {
    /// The name of the Python library's `MultiDatasetBatchSamplers` member.
    pub fn python_name(self) -> &'static str {
        match self {
            MultiSampler::Proportional => "PROPORTIONAL",
            MultiSampler::RoundRobin => "ROUND_ROBIN",
        }
    }
}

impl fmt::Display for MultiSampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MultiSampler::Proportional => "proportional",
            MultiSampler::RoundRobin => "round-robin",
        })
    }
}

impl FromStr for MultiSampler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "proportional" => Ok(MultiSampler::Proportional),
            "round-robin" | "roundrobin" => Ok(MultiSampler::RoundRobin),
            other => Err(format!(
                "unknown sampler `{other}` (expected proportional or round-robin)"
            )),
        }
    }
}

/// One step's rows: file `file`, positions `rows` of that file's shuffled order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    pub file: usize,
    pub rows: Range<usize>,
}

/// An epoch: each file's shuffled row order and the steps taken through them.
#[derive(Debug, Clone)]
pub struct EpochPlan {
    pub orders: Vec<Vec<usize>>,
    pub steps: Vec<PlannedStep>,
}

/// The seeded generator of (seed, epoch); the first file's shuffle is the one a one-file run has
/// always used, so older checkpoints resume on the same batches.
fn rng(seed: u64, epoch: usize, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(epoch as u64),
    );
    rng.set_stream(stream);
    rng
}

/// The shuffled order of a file's `n` rows in `epoch`.
fn order(n: usize, seed: u64, epoch: usize, file: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng(seed, epoch, file as u64));
    order
}

/// The steps of `epoch` over files of `sizes` rows, `rows_per_step` rows a step (the last step of
/// a file may be short).
pub fn epoch_plan(
    sizes: &[usize],
    rows_per_step: usize,
    sampler: MultiSampler,
    seed: u64,
    epoch: usize,
) -> EpochPlan {
    let rows_per_step = rows_per_step.max(1);
    let orders: Vec<Vec<usize>> = sizes
        .iter()
        .enumerate()
        .map(|(f, &n)| order(n, seed, epoch, f))
        .collect();
    let chunks: Vec<Vec<Range<usize>>> = sizes
        .iter()
        .map(|&n| {
            (0..n.div_ceil(rows_per_step))
                .map(|b| b * rows_per_step..((b + 1) * rows_per_step).min(n))
                .collect()
        })
        .collect();
    let files: Vec<usize> = match (sizes.len(), sampler) {
        (0 | 1, _) => vec![0; chunks.first().map_or(0, Vec::len)],
        (_, MultiSampler::Proportional) => {
            let mut files: Vec<usize> = chunks
                .iter()
                .enumerate()
                .flat_map(|(f, c)| std::iter::repeat_n(f, c.len()))
                .collect();
            files.shuffle(&mut rng(seed, epoch, u64::MAX));
            files
        }
        (k, MultiSampler::RoundRobin) => {
            // Whole rounds, one batch of each file, while every file has one left (as
            // sentence-transformers 6's `zip` over the files' batch samplers).
            let fewest = chunks.iter().map(Vec::len).min().unwrap_or(0);
            (0..fewest * k).map(|i| i % k).collect()
        }
    };
    let mut next = vec![0; sizes.len()];
    let steps = files
        .into_iter()
        .map(|file| {
            let rows = chunks[file][next[file]].clone();
            next[file] += 1;
            PlannedStep { file, rows }
        })
        .collect();
    EpochPlan { orders, steps }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_takes_its_rows_in_shuffled_order() {
        let p = epoch_plan(&[10], 4, MultiSampler::RoundRobin, 42, 0);
        let rows: Vec<_> = p.steps.iter().map(|s| s.rows.clone()).collect();
        assert_eq!(rows, vec![0..4, 4..8, 8..10]);
        let mut seen = p.orders[0].clone();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        // Another epoch, another shuffle; the same (seed, epoch), the same one.
        assert_ne!(
            p.orders[0],
            epoch_plan(&[10], 4, MultiSampler::RoundRobin, 42, 1).orders[0]
        );
        assert_eq!(
            p.orders,
            epoch_plan(&[10], 4, MultiSampler::Proportional, 42, 0).orders
        );
    }

    #[test]
    fn round_robin_alternates_and_stops_as_the_python_sampler() {
        // Batches [3, 5] or [5, 3]: three whole rounds (sentence-transformers 6.2's
        // RoundRobinBatchSampler zips the files' batch samplers).
        let p = epoch_plan(&[6, 10], 2, MultiSampler::RoundRobin, 1, 0);
        let files: Vec<_> = p.steps.iter().map(|s| s.file).collect();
        assert_eq!(files, vec![0, 1, 0, 1, 0, 1]);
        let p = epoch_plan(&[10, 6, 9], 2, MultiSampler::RoundRobin, 1, 0);
        let files: Vec<_> = p.steps.iter().map(|s| s.file).collect();
        assert_eq!(files, vec![0, 1, 2, 0, 1, 2, 0, 1, 2]);
        // Each file's batches in order, none twice.
        let rows: Vec<_> = p
            .steps
            .iter()
            .filter(|s| s.file == 1)
            .map(|s| s.rows.clone())
            .collect();
        assert_eq!(rows, vec![0..2, 2..4, 4..6]);
    }

    #[test]
    fn proportional_takes_every_batch_once_in_a_seeded_mix() {
        let p = epoch_plan(&[7, 20, 3], 4, MultiSampler::Proportional, 5, 0);
        let count = |f| p.steps.iter().filter(|s| s.file == f).count();
        assert_eq!((count(0), count(1), count(2)), (2, 5, 1));
        let rows: Vec<_> = p
            .steps
            .iter()
            .filter(|s| s.file == 0)
            .map(|s| s.rows.clone())
            .collect();
        assert_eq!(rows, vec![0..4, 4..7]);
        let files = |seed, epoch| -> Vec<usize> {
            epoch_plan(&[7, 20, 3], 4, MultiSampler::Proportional, seed, epoch)
                .steps
                .iter()
                .map(|s| s.file)
                .collect()
        };
        assert_eq!(files(5, 0), files(5, 0));
        assert_ne!(files(5, 0), files(5, 1), "a new mix each epoch");
        // The files' shuffles are independent of one another.
        assert_ne!(p.orders[0][..3], p.orders[2][..3]);
    }

    #[test]
    fn the_sampler_parses_its_names() {
        assert_eq!("round_robin".parse(), Ok(MultiSampler::RoundRobin));
        assert_eq!("Proportional".parse(), Ok(MultiSampler::Proportional));
        assert!("random".parse::<MultiSampler>().is_err());
        assert_eq!(MultiSampler::RoundRobin.to_string(), "round-robin");
    }
}
