//! Checkpoints of a run: where they live, what they hold, writing them (atomically, the last K
//! kept) and opening one to continue from.
//!
//! ```text
//! OUTPUT/checkpoints/checkpoint-000100/   a loadable model + optimizer.safetensors
//!                                         (+ classifier.safetensors) + trainer_state.json
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::eval::Metrics;
use super::session::Session;
use crate::model::atomic::{recover, recover_all, write_folder_atomically};
use crate::model::save::{write_model, write_tensors};

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const CLASSIFIER_FILE: &str = "classifier.safetensors";

/// Saved in each checkpoint: where the run was and how it was set up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    pub global_step: usize,
    /// The epoch in progress (0-based) and the next batch in it.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    pub total_steps: usize,
    /// Position of the dropout generator, as a decimal string (a u128).
    pub dropout_position: String,
    /// The run's settings, with every local path made absolute so that a run continues the same
    /// way from any working folder.
    pub config: TrainConfig,
    /// The evaluations so far, for the model card.
    pub evals: Vec<(usize, Metrics)>,
    /// (step, loss) every step so far, for the model card.
    pub losses: Vec<(usize, f64)>,
}

/// Why a checkpoint could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{} holds no checkpoint (no {STATE_FILE}, no checkpoints/checkpoint-*)", .0.display())]
    NotFound(PathBuf),
    #[error("{}: {message}", .path.display())]
    Bad { path: PathBuf, message: String },
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
}

/// The checkpoints in `dir` (`OUTPUT/checkpoints`), oldest first, with their step.
pub fn list(dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join(STATE_FILE)
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Finishes or removes what killed runs left half-written: the final saves of this output and
/// of the runs beside it (in the output's parent: `runs/.run-1.tmp-PID`, 90 MB each for
/// all-MiniLM-L6-v2, were never cleaned up), and this run's checkpoints. Only folders a writer of
/// ours marked, of processes that are gone, are touched.
pub fn recover_run_folder(output: &Path) -> Result<Vec<String>, CheckpointError> {
    let mut done = recover(output)?;
    if let Some(parent) = output.parent().filter(|p| p.is_dir()) {
        done.extend(recover_all(parent)?);
    }
    let checkpoints = output.join("checkpoints");
    if checkpoints.is_dir() {
        done.extend(recover_all(&checkpoints)?);
    }
    Ok(done)
}

/// A checkpoint opened to continue from: its folder and its state, read once.
#[derive(Debug, Clone)]
pub struct Resume {
    pub dir: PathBuf,
    pub state: TrainerState,
}

impl Resume {
    /// Opens `dir`: a checkpoint folder, or a run's output folder (its newest checkpoint). A run
    /// that was killed while saving is put back in order first.
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        let checkpoint = if dir.join(STATE_FILE).is_file() {
            dir.to_path_buf()
        } else {
            recover_run_folder(dir)?;
            list(&dir.join("checkpoints"))
                .pop()
                .map(|(_, p)| p)
                .ok_or_else(|| CheckpointError::NotFound(dir.to_path_buf()))?
        };
        let p = checkpoint.join(STATE_FILE);
        let text = fs::read_to_string(&p).map_err(|e| CheckpointError::Bad {
            path: p.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let state: TrainerState =
            serde_json::from_str(&text).map_err(|e| CheckpointError::Bad {
                path: p.clone(),
                message: format!("invalid trainer state: {e}"),
            })?;
        state
            .dropout_position
            .parse::<u128>()
            .map_err(|_| CheckpointError::Bad {
                path: p.clone(),
                message: format!("bad dropout_position `{}`", state.dropout_position),
            })?;
        Ok(Self {
            dir: checkpoint,
            state,
        })
    }

    /// Loads a tensor file of the checkpoint, naming it in any error.
    pub fn tensors(
        &self,
        file: &str,
        device: &candle_core::Device,
    ) -> Result<std::collections::HashMap<String, candle_core::Tensor>, CheckpointError> {
        let path = self.dir.join(file);
        if !path.is_file() {
            return Err(CheckpointError::Bad {
                path,
                message: "missing: the checkpoint is incomplete (it cannot be continued)".into(),
            });
        }
        candle_core::safetensors::load(&path, device).map_err(|e| CheckpointError::Bad {
            path,
            message: format!("cannot load: {e}"),
        })
    }
}

/// Writes `OUTPUT/checkpoints/checkpoint-NNNNNN` atomically, then drops the oldest beyond K.
pub fn save(
    session: &Session,
    state: &TrainerState,
    data: &[&Path],
) -> Result<PathBuf, CheckpointError> {
    let dir = state.config.output.join("checkpoints");
    let path = dir.join(format!("checkpoint-{:06}", state.global_step));
    let note = format!(
        "# Checkpoint at step {} of {}\n\nA loadable sentence-transformers model, plus the optimizer state \
         to continue with `sbert-tui train --resume {}`. Data: {}.\n",
        state.global_step,
        state.total_steps,
        path.display(),
        data.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let optimizer = session
        .optimizer
        .state_tensors()
        .map_err(crate::model::ModelError::from)?;
    let classifier = session.classifier.as_ref().map(|c| c.tensors());
    let state_json = serde_json::to_string_pretty(state).expect("state serializes");
    write_folder_atomically(&path, &[], None, |w| {
        write_model(&session.encoder, w, Some(&note))?;
        write_tensors(w, OPTIMIZER_FILE, &optimizer)?;
        if let Some(c) = &classifier {
            write_tensors(w, CLASSIFIER_FILE, c)?;
        }
        w.file(STATE_FILE, state_json.as_bytes())
    })?;
    let all = list(&dir);
    let keep = state.config.keep_checkpoints.max(1);
    for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
        let _ = fs::remove_dir_all(old);
    }
    Ok(path)
}
