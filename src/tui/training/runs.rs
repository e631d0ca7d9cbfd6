//! The runs of this session as the training screen shows them: status, progress, the loss and
//! metric curves, fed by the engine's events.

use std::path::PathBuf;

use crate::train::config::TrainConfig;
use crate::train::events::{Metrics, TrainEvent};

/// Where a run is.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    Starting,
    Running,
    Stopping,
    Finished,
    Failed(String),
    Cancelled { checkpoint: Option<PathBuf> },
}

impl RunStatus {
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            RunStatus::Starting | RunStatus::Running | RunStatus::Stopping
        )
    }
}

/// A run as the pane shows it: settings, progress, the loss and metric curves.
#[derive(Debug, Clone)]
pub struct RunView {
    pub id: usize,
    pub config: TrainConfig,
    pub status: RunStatus,
    pub device: String,
    pub total_steps: usize,
    pub step: usize,
    pub epoch: f64,
    pub learning_rate: f64,
    pub sentences_per_second: f64,
    pub elapsed: f64,
    /// (step, loss) for finite losses only: a NaN never reaches a chart.
    pub losses: Vec<(f64, f64)>,
    /// Exponential moving average of the loss (weight 0.1 for the newest).
    pub smoothed: Vec<(f64, f64)>,
    pub evals: Vec<(usize, Metrics)>,
    pub last_checkpoint: Option<PathBuf>,
    /// What a ranking or triplet loss saw in the newest batch.
    pub batch: Option<crate::train::events::BatchView>,
}

impl RunView {
    pub fn new(id: usize, config: TrainConfig) -> Self {
        Self {
            id,
            config,
            status: RunStatus::Starting,
            device: String::new(),
            total_steps: 0,
            step: 0,
            epoch: 0.0,
            learning_rate: 0.0,
            sentences_per_second: 0.0,
            elapsed: 0.0,
            losses: Vec::new(),
            smoothed: Vec::new(),
            evals: Vec::new(),
            last_checkpoint: None,
            batch: None,
        }
    }

    /// Seconds left, from the pace so far.
    pub fn eta(&self) -> Option<f64> {
        (self.step > 0 && self.total_steps > self.step)
            .then(|| self.elapsed / self.step as f64 * (self.total_steps - self.step) as f64)
    }

    /// The folder to load into the explorer: the final model, else the newest checkpoint.
    pub fn loadable(&self) -> Option<PathBuf> {
        match &self.status {
            RunStatus::Finished => Some(self.config.output.clone()),
            _ => self.last_checkpoint.clone(),
        }
    }

    /// The primary metric of the last evaluation.
    pub fn final_metric(&self) -> Option<(String, f64)> {
        self.evals.last().and_then(|(_, m)| m.first().cloned())
    }

    pub fn on_event(&mut self, e: &TrainEvent) {
        match e {
            TrainEvent::Started {
                total_steps,
                device,
                start_step,
                ..
            } => {
                self.status = RunStatus::Running;
                self.total_steps = *total_steps;
                self.device = device.clone();
                self.step = *start_step;
            }
            TrainEvent::Step {
                step,
                total_steps,
                epoch,
                loss,
                learning_rate,
                sentences_per_second,
                elapsed_seconds,
                batch,
                ..
            } => {
                if batch.is_some() {
                    self.batch = batch.clone();
                }
                self.step = *step;
                self.total_steps = *total_steps;
                self.epoch = *epoch;
                self.learning_rate = *learning_rate;
                self.sentences_per_second = *sentences_per_second;
                self.elapsed = *elapsed_seconds;
                if loss.is_finite() {
                    let x = *step as f64;
                    self.losses.push((x, *loss));
                    let s = match self.smoothed.last() {
                        Some(&(_, prev)) => 0.9 * prev + 0.1 * loss,
                        None => *loss,
                    };
                    self.smoothed.push((x, s));
                }
            }
            TrainEvent::Eval { step, metrics, .. } => {
                if metrics.iter().all(|(_, v)| v.is_finite()) {
                    self.evals.push((*step, metrics.clone()));
                }
            }
            TrainEvent::Checkpoint { path, .. } => self.last_checkpoint = Some(path.clone()),
            TrainEvent::Finished { .. } => self.status = RunStatus::Finished,
            TrainEvent::Failed { message, .. } => self.status = RunStatus::Failed(message.clone()),
            TrainEvent::Cancelled { checkpoint, .. } => {
                self.status = RunStatus::Cancelled {
                    checkpoint: checkpoint.clone(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::losses::LossKind;

    #[test]
    fn a_nan_never_reaches_the_curves() {
        let mut r = RunView::new(
            1,
            TrainConfig::new("m", "d".into(), LossKind::Cosine, "o".into()),
        );
        for (step, loss) in [(1, 0.5), (2, f64::NAN), (3, f64::INFINITY), (4, 0.3)] {
            r.on_event(&TrainEvent::Step {
                step,
                total_steps: 10,
                epoch: 0.1,
                loss,
                learning_rate: 1e-5,
                grad_norm: None,
                sentences_per_second: 10.0,
                elapsed_seconds: step as f64,
                batch: None,
            });
        }
        assert_eq!(r.losses, vec![(1.0, 0.5), (4.0, 0.3)]);
        assert!(r.smoothed.iter().all(|p| p.1.is_finite()));
        assert_eq!(r.eta(), Some(6.0));
    }
}
