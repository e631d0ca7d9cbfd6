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
