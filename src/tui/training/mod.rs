//! The training screen: the form for a new run, the run in progress (or any earlier one of this
//! session), and the list of runs. Pure state; the engine runs on its own thread (`tui/mod.rs`)
//! and reports through [`TrainEvent`]s.

pub mod form;
pub mod runs;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use form::{DataFile, DataSummary, FIELDS, Form, MODEL_POOLING, is_choice, next_output};
pub use runs::{RunStatus, RunView};

use super::keys::{Action, Context};
use super::shell::{EditTarget, Effect, Shell};
use crate::train::data::Dataset;
use crate::train::events::TrainEvent;
use crate::train::rules::Setting;

/// Which part of the training screen has the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainFocus {
    /// The form, or the selected run when the form is closed.
    Main,
    History,
}

pub struct TrainingScreen {
    pub form: Form,
    /// The form is shown (else the selected run).
    pub form_open: bool,
    pub focus: TrainFocus,
    /// Every run of this session, oldest first.
    pub runs: Vec<RunView>,
    /// The run shown when the form is closed.
    pub run_selected: usize,
    /// Quit as soon as the running run has stopped.
    pub quit_after_stop: bool,
}

impl Default for TrainingScreen {
    fn default() -> Self {
        Self::new()
    }
}

impl TrainingScreen {
    pub fn new() -> Self {
        Self {
            form: Form::new("", next_output(Path::new("runs"))),
            form_open: true,
            focus: TrainFocus::Main,
            runs: Vec::new(),
            run_selected: 0,
            quit_after_stop: false,
        }
    }

    /// The run that is training now, if any.
    pub fn active_run(&self) -> Option<&RunView> {
        self.runs.iter().rev().find(|r| r.status.is_active())
    }

    fn active_run_mut(&mut self) -> Option<&mut RunView> {
        self.runs.iter_mut().rev().find(|r| r.status.is_active())
    }

    /// True when the form is on screen (it is also shown when there is no run to show).
    pub fn form_shown(&self) -> bool {
        self.form_open || self.runs.get(self.run_selected).is_none()
    }

    /// Where the keys go on this screen.
    pub fn context(&self) -> Context {
        match self.focus {
            TrainFocus::History if !self.runs.is_empty() => Context::History,
            _ if self.form_shown() => Context::Form,
            _ => Context::Run,
        }
    }

    /// The explorer's model becomes the form's, until the first run.
    pub fn model_changed(&mut self, spec: &str) {
        if self.form.get(Setting::Model).is_empty() || self.runs.is_empty() {
            self.form.set(Setting::Model, spec.to_string());
        }
    }

    /// The folder to load of the selected run: its model, else its newest checkpoint.
    pub fn selected_loadable(&self) -> Option<PathBuf> {
        self.runs.get(self.run_selected).and_then(RunView::loadable)
    }

    /// The newest run's folder to load, for the comparison's input line.
    pub fn newest_loadable(&self) -> Option<PathBuf> {
        self.runs.iter().rev().find_map(RunView::loadable)
    }

    /// Asks for the form's data files to be read, when they were not.
    pub fn opened(&mut self, shell: &mut Shell) {
        if self.form.data.is_none() {
            self.inspect_files(shell);
        }
    }

    fn inspect_files(&mut self, shell: &mut Shell) {
        for (field, eval) in [(Setting::Data, false), (Setting::Eval, true)] {
            let path = self.form.get(field).trim().to_string();
            if path.is_empty() {
                if eval {
                    self.form.eval = None;
                } else {
                    self.form.data = None;
                }
            } else {
                shell.effect(Effect::InspectData { path, eval });
            }
        }
    }

    /// Carries out an action of the training screen; false when `action` is not one.
    pub fn act(&mut self, action: Action, shell: &mut Shell) -> bool {
        match action {
            Action::NextPane | Action::PrevPane => {
                self.focus = match self.focus {
                    TrainFocus::Main if !self.runs.is_empty() => TrainFocus::History,
                    _ => TrainFocus::Main,
                };
            }
            Action::FieldUp => self.form.selected = self.form.selected.saturating_sub(1),
            Action::FieldDown => {
                self.form.selected = (self.form.selected + 1).min(self.form.visible().len() - 1)
            }
            Action::FieldPrev | Action::FieldNext => {
                let f = self.form.selected_field();
                if is_choice(f) {
                    self.form.cycle(f, action == Action::FieldNext);
                }
            }
            Action::FieldEdit => {
                let f = self.form.selected_field();
                if is_choice(f) {
                    self.form.cycle(f, true);
                } else {
                    let v = self.form.get(f).to_string();
                    shell.edit(EditTarget::Field(f), &v);
                }
            }
            Action::StartRun => self.start_run(shell),
            Action::NewRun => {
                if self.active_run().is_some() {
                    shell.set_status("a run is training; x stops it", true);
                } else {
                    self.form_open = true;
                    self.focus = TrainFocus::Main;
                    self.form
                        .set(Setting::Output, next_output(Path::new("runs")));
                }
            }
            Action::HistoryUp | Action::HistoryDown if !self.runs.is_empty() => {
                self.run_selected = if action == Action::HistoryUp {
                    self.run_selected.saturating_sub(1)
                } else {
                    (self.run_selected + 1).min(self.runs.len() - 1)
                };
                self.form_open = false;
            }
            Action::HistoryUp | Action::HistoryDown => {}
            _ => return false,
        }
        true
    }

    /// Fills the form for a lesson's run (data, evaluation file, loss, epochs) and shows it;
    /// the teacher checks it and starts the run with `s`.
    pub fn prepare(&mut self, step: &crate::lessons::TrainStep, shell: &mut Shell) {
        if self.active_run().is_some() {
            return shell.set_status("a run is training; x stops it", true);
        }
        self.form_open = true;
        self.focus = TrainFocus::Main;
        self.form
            .set(Setting::Output, next_output(Path::new("runs")));
        self.form.set(Setting::Data, step.data.clone());
        self.form
            .set(Setting::Eval, step.eval.clone().unwrap_or_default());
        self.form.set(Setting::Loss, step.loss.clone());
        if let Some(e) = step.epochs {
            self.form.set(Setting::Epochs, e.to_string());
        }
        self.form.data = None;
        self.form.eval = None;
        self.form.selected = 0;
        self.inspect_files(shell);
    }

    /// A form field's input line was accepted.
    pub fn commit_field(&mut self, f: Setting, text: String, shell: &mut Shell) {
        self.form.set(f, text.trim().to_string());
        match f {
            Setting::Data => {
                self.form.data = None;
                self.inspect_files(shell);
            }
            Setting::Eval => {
                self.form.eval = None;
                self.inspect_files(shell);
            }
            _ => {}
        }
    }

    fn start_run(&mut self, shell: &mut Shell) {
        if self.active_run().is_some() {
            return shell.set_status("a run is already training", true);
        }
        let Some((config, preloaded)) = self.form.validate() else {
            if let Some(e) = self.form.errors.first().cloned() {
                self.form.selected = self
                    .form
                    .visible()
                    .iter()
                    .position(|x| *x == e.setting)
                    .unwrap_or(0);
                shell.set_status(format!("{}: {}", e.setting.label(), e.reason), true);
            }
            return;
        };
        let id = self.runs.len() + 1;
        self.runs.push(RunView::new(id, config.clone()));
        self.run_selected = self.runs.len() - 1;
        self.form_open = false;
        self.focus = TrainFocus::Main;
        shell.effect(Effect::StartTraining {
            config: Box::new(config),
            preloaded,
        });
        shell.set_status(format!("run {id} starting…"), false);
    }

    /// Asks the running run to stop at the end of its step.
    pub fn stop_run(&mut self, keep_checkpoint: bool, shell: &mut Shell) {
        if let Some(run) = self.active_run_mut() {
            run.status = RunStatus::Stopping;
            shell.effect(Effect::StopTraining { keep_checkpoint });
            let how = if keep_checkpoint {
                "saving a checkpoint"
            } else {
                "without a checkpoint"
            };
            shell.set_status(format!("stopping at the end of this step, {how}…"), false);
        }
    }

    /// An event from the training run. True when the run has ended.
    pub fn on_train(&mut self, event: &TrainEvent, shell: &mut Shell) -> bool {
        let Some(run) = self.active_run_mut() else {
            return false;
        };
        let stopping = run.status == RunStatus::Stopping;
        run.on_event(event);
        if stopping && run.status == RunStatus::Running {
            run.status = RunStatus::Stopping;
        }
        let id = run.id;
        match event {
            TrainEvent::Started {
                total_steps,
                device,
                ..
            } => shell.set_status(format!("run {id}: {total_steps} steps on {device}"), false),
            TrainEvent::Finished {
                output, metrics, ..
            } => {
                let m = metrics
                    .first()
                    .map(|(k, v)| format!(" · {k} {v:.4}"))
                    .unwrap_or_default();
                shell.set_status(
                    format!(
                        "run {id} finished: {}{m} · l loads it next to the base model",
                        output.display()
                    ),
                    false,
                );
            }
            TrainEvent::Failed { message, .. } => {
                shell.set_status(format!("run {id} failed: {message}"), true)
            }
            TrainEvent::Cancelled { checkpoint, .. } => {
                let kept = checkpoint
                    .as_ref()
                    .map_or("no checkpoint".to_string(), |p| {
                        format!("checkpoint {}", p.display())
                    });
                shell.set_status(format!("run {id} stopped · {kept}"), false);
            }
            _ => {}
        }
        matches!(
            event,
            TrainEvent::Finished { .. } | TrainEvent::Failed { .. } | TrainEvent::Cancelled { .. }
        )
    }

    /// The training thread ended with an error before it could report one (for example, the
    /// model could not be loaded).
    pub fn on_train_error(&mut self, message: &str, shell: &mut Shell) {
        if let Some(run) = self.active_run_mut() {
            run.status = RunStatus::Failed(message.to_string());
            let id = run.id;
            shell.set_status(format!("run {id} failed: {message}"), true);
        }
    }

    /// A data file asked for by the form was read.
    pub fn on_data(&mut self, path: &str, eval: bool, result: Result<Arc<Dataset>, String>) {
        self.form.data_inspected(path, result, eval);
    }
}
