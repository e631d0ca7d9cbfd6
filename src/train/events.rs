//! What a training run reports while it runs. The CLI prints these and logs them as JSON Lines;
//! the UI draws them.

use std::path::PathBuf;

use serde::Serialize;

/// Metric name and value, the first being the one to watch.
pub type Metrics = Vec<(String, f64)>;

fn metrics_as_map<S: serde::Serializer>(m: &Metrics, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    Started {
        total_steps: usize,
        steps_per_epoch: usize,
        epochs: usize,
        examples: usize,
        data_kind: String,
        loss: String,
        device: String,
        /// Non-zero when continuing a run.
        start_step: usize,
    },
    Step {
        step: usize,
        total_steps: usize,
        epoch: f64,
        loss: f64,
        learning_rate: f64,
        grad_norm: Option<f64>,
        sentences_per_second: f64,
        elapsed_seconds: f64,
        /// What the loss saw in this batch, for the training pane's live view (never logged).
        #[serde(skip)]
        batch: Option<BatchView>,
    },
    Eval {
        step: usize,
        epoch: f64,
        #[serde(serialize_with = "metrics_as_map")]
        metrics: Metrics,
    },
    Checkpoint {
        step: usize,
        path: PathBuf,
    },
    Finished {
        step: usize,
        output: PathBuf,
        #[serde(serialize_with = "metrics_as_map")]
        metrics: Metrics,
    },
    Failed {
        step: usize,
        message: String,
    },
    Cancelled {
        step: usize,
        checkpoint: Option<PathBuf>,
    },
}

/// Rows of a batch shown at most (the view stays readable in a terminal pane).
pub const BATCH_VIEW_ROWS: usize = 8;

/// What the loss saw in one batch, for the workshop: the numbers it turned into the loss.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchView {
    /// Multiple-negatives ranking (and SimCSE): the cosine of anchor i with the positive of
    /// example j, for the first [`BATCH_VIEW_ROWS`] examples. The diagonal holds each anchor's
    /// own positive; everything off it is an in-batch negative. `correct` of the batch's `rows`
    /// anchors ranked their own positive first among every candidate (hard negatives included).
    Ranking {
        anchors: Vec<String>,
        cosines: Vec<Vec<f32>>,
        scale: f64,
        rows: usize,
        correct: usize,
    },
    /// Triplet: d(anchor, positive) and d(anchor, negative) of the first [`BATCH_VIEW_ROWS`]
    /// triplets, the margin, and how many of the batch's `rows` triplets still violate it
    /// (d(a, p) - d(a, n) + margin > 0: the ones the loss pushes on).
    Triplet {
        anchors: Vec<String>,
        distances: Vec<(f32, f32)>,
        margin: f64,
        distance: String,
        rows: usize,
        violating: usize,
    },
}
