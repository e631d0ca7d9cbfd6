//! The app's state and how it changes: keys, mouse, paste, worker and training messages in;
//! requests for the embedding worker and effects (start / stop a run, read a data file) out.
//! Pure and synchronous, so tests drive it by hand.

use std::collections::HashMap;
use std::path::Path;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use crate::analysis::pca::{PcaBasis, PcaError};
use crate::analysis::similarity::cosine_matrix;
use crate::model::PoolingMode;
use crate::train::config::TrainConfig;
use crate::train::events::TrainEvent;

use super::demo::DEMO_SETS;
use super::editor::LineEditor;
use super::keys::{self, Action, Context};
use super::messages::{Embedded, ModelSummary, Request, Slot, WorkerEvent};
use super::training::{DataSummary, FieldId, Form, RunStatus, RunView, next_output};
use super::ui;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Sentences,
    Matrix,
    Map,
}

impl Pane {
    const ORDER: [Pane; 3] = [Pane::Sentences, Pane::Matrix, Pane::Map];

    fn context(self) -> Context {
        match self {
            Pane::Sentences => Context::Sentences,
            Pane::Matrix => Context::Matrix,
            Pane::Map => Context::Map,
        }
    }
}

/// The explorer, or the training pane (the explorer keeps working while a run trains).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Explorer,
    Training,
}

/// Which part of the training screen has the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainFocus {
    /// The form, or the selected run when the form is closed.
    Main,
    History,
}

/// What the similarity pane shows once a fine-tuned model is loaded next to the base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixView {
    Base,
    Tuned,
    /// Fine-tuned minus base.
    Difference,
}

/// What the input line is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditTarget {
    NewSentence,
    Sentence(usize),
    OpenPath,
    SavePath,
    ModelSpec,
    /// A fine-tuned model (or checkpoint) to compare with the base model.
    TunedSpec,
    Field(FieldId),
}

impl EditTarget {
    pub fn prompt(&self) -> &'static str {
        match self {
            EditTarget::NewSentence => "new sentence",
            EditTarget::Sentence(_) => "edit sentence",
            EditTarget::OpenPath => "open file",
            EditTarget::SavePath => "save to file",
            EditTarget::ModelSpec => "model (folder or Hub id)",
            EditTarget::TunedSpec => "compare with (fine-tuned folder or checkpoint)",
            EditTarget::Field(f) => f.label(),
        }
    }
}

/// A question that needs an answer before going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// Stop the running training run.
    StopRun,
    /// Quit while a run is training.
    QuitDuringRun,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Editing(EditTarget, LineEditor),
    Help,
    Demo { selected: usize },
    Confirm(Confirm),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ModelState {
    Loading { spec: String, message: String },
    Ready(ModelSummary),
    Failed { spec: String, error: String },
}

/// What the app asks of the world besides embeddings.
#[derive(Debug, Clone)]
pub enum Effect {
    StartTraining(Box<TrainConfig>),
    StopTraining {
        keep_checkpoint: bool,
    },
    /// Read a data file for the form (kind, rows, preview).
    InspectData {
        path: String,
        eval: bool,
    },
}

/// One model's vectors for the current sentences.
#[derive(Debug, Clone)]
pub struct Side {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens per text and whether it was cut at the model's max sequence length.
    pub tokens: Vec<(usize, bool)>,
    pub matrix: Vec<Vec<f32>>,
}

/// Everything the panes show, computed once per change of the sentences' vectors.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub texts: Vec<String>,
    pub base: Side,
    /// The fine-tuned model's side, when one is loaded.
    pub tuned: Option<Side>,
    /// Fitted on the base model's vectors; the fine-tuned ones are drawn in the same basis.
    pub pca: Result<PcaBasis, PcaError>,
    pub coords: Vec<Vec<f64>>,
    /// The fine-tuned vectors in the base basis (empty when the widths differ).
    pub tuned_coords: Vec<Vec<f64>>,
}

impl Analysis {
    /// The similarity matrix of `view` (base when nothing else is available).
    pub fn matrix(&self, view: MatrixView) -> Vec<Vec<f32>> {
        match (view, &self.tuned) {
            (MatrixView::Tuned, Some(t)) => t.matrix.clone(),
            (MatrixView::Difference, Some(t)) => t
                .matrix
                .iter()
                .zip(&self.base.matrix)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x - y).collect())
                .collect(),
            _ => self.base.matrix.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMessage {
    pub text: String,
    pub error: bool,
}

/// One model as the app tracks it: its state, and the vectors it has given.
#[derive(Debug, Clone)]
pub struct ModelSlot {
    pub model: ModelState,
    /// Changes whenever the model or its pooling changes; older results are ignored.
    pub generation: u64,
    pub pending: bool,
    cache: HashMap<String, Embedded>,
    last_request: u64,
    requested: Vec<String>,
    previous_model: Option<ModelSummary>,
}

impl ModelSlot {
    fn new() -> Self {
        Self {
            model: ModelState::Loading {
                spec: String::new(),
                message: "starting…".into(),
            },
            generation: 0,
            pending: false,
            cache: HashMap::new(),
            last_request: 0,
            requested: Vec::new(),
            previous_model: None,
        }
    }

    fn ready(&self) -> bool {
        matches!(self.model, ModelState::Ready(_))
    }

    fn forget(&mut self) {
        self.generation += 1;
        self.cache.clear();
        self.pending = false;
    }

    /// The texts this slot has no vector for.
    fn missing(&self, texts: &[String]) -> Vec<String> {
        let mut missing: Vec<String> = Vec::new();
        for t in texts {
            if !self.cache.contains_key(t) && !missing.contains(t) {
                missing.push(t.clone());
            }
        }
        missing
    }

    fn side(&self, texts: &[String]) -> Side {
        let items: Vec<&Embedded> = texts.iter().map(|t| &self.cache[t]).collect();
        let vectors: Vec<Vec<f32>> = items.iter().map(|e| e.vector.clone()).collect();
        Side {
            tokens: items.iter().map(|e| (e.tokens, e.truncated)).collect(),
            matrix: cosine_matrix(&vectors),
            vectors,
        }
    }

    fn trim_cache(&mut self, keep: &[String]) {
        if self.cache.len() > 512 {
            let keep: std::collections::HashSet<&String> = keep.iter().collect();
            self.cache.retain(|k, _| keep.contains(k));
        }
    }
}

pub struct App {
    pub sentences: Vec<String>,
    /// The selected sentence, highlighted in every pane; also the matrix cursor's row.
    pub selected: usize,
    /// The matrix cursor's column.
    pub matrix_col: usize,
    pub focus: Pane,
    pub mode: Mode,
    /// 0: PC1 / PC2, 1: PC2 / PC3.
    pub components: usize,
    /// The model being explored.
    pub base: ModelSlot,
    /// A fine-tuned model shown next to it.
    pub tuned: Option<ModelSlot>,
    pub view: MatrixView,
    pub analysis: Option<Analysis>,
    pub status: Option<StatusMessage>,
    pub last_embed_ms: Option<f64>,
    pub color: bool,
    pub quit: bool,
    /// Last known terminal size, for mouse hit tests.
    pub size: Rect,
    /// Results that arrived too late to matter (for tests and diagnostics).
    pub dropped_results: usize,
    pub screen: Screen,
    pub form: Form,
    /// The form is shown (else the selected run).
    pub form_open: bool,
    pub train_focus: TrainFocus,
    /// Every run of this session, oldest first.
    pub runs: Vec<RunView>,
    /// The run shown in the training pane.
    pub run_selected: usize,
    /// Quit as soon as the running run has stopped.
    pub quit_after_stop: bool,
    outbox: Vec<Request>,
    effects: Vec<Effect>,
}

impl App {
    pub fn new(sentences: Vec<String>, color: bool) -> Self {
        Self {
            sentences,
            selected: 0,
            matrix_col: 0,
            focus: Pane::Sentences,
            mode: Mode::Normal,
            components: 0,
            base: ModelSlot::new(),
            tuned: None,
            view: MatrixView::Base,
            analysis: None,
            status: None,
            last_embed_ms: None,
            color,
            quit: false,
            size: Rect::default(),
            dropped_results: 0,
            screen: Screen::Explorer,
            form: Form::new("", next_output(Path::new("runs"))),
            form_open: true,
            train_focus: TrainFocus::Main,
            runs: Vec::new(),
            run_selected: 0,
            quit_after_stop: false,
            outbox: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// Requests for the embedding worker, in order; empties the outbox.
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.outbox)
    }

    /// Effects for the training side, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn cached(&self, text: &str) -> bool {
        self.base.cache.contains_key(text)
    }

    /// True while any model is embedding.
    pub fn pending(&self) -> bool {
        self.base.pending || self.tuned.as_ref().is_some_and(|t| t.pending)
    }

    /// The run that is training now, if any.
    pub fn active_run(&self) -> Option<&RunView> {
        self.runs.iter().rev().find(|r| r.status.is_active())
    }

    fn slot_mut(&mut self, slot: Slot) -> Option<&mut ModelSlot> {
        match slot {
            Slot::Base => Some(&mut self.base),
            Slot::Tuned => self.tuned.as_mut(),
        }
    }

    /// Starts loading the model to explore; everything embedded so far is forgotten.
    pub fn load_model(&mut self, spec: &str, pooling: Option<String>) {
        if self.form.get(FieldId::Model).is_empty() || self.runs.is_empty() {
            self.form.set(FieldId::Model, spec.to_string());
        }
        let s = &mut self.base;
        s.forget();
        // If the load fails, the worker keeps the model it had; so does the UI.
        s.previous_model = match &s.model {
            ModelState::Ready(m) => Some(m.clone()),
            _ => None,
        };
        s.model = ModelState::Loading {
            spec: spec.to_string(),
            message: format!("loading {spec}…"),
        };
        self.outbox.push(Request::Load {
            slot: Slot::Base,
            generation: s.generation,
            spec: spec.to_string(),
            pooling,
        });
    }

    /// Loads a fine-tuned model (or checkpoint) next to the base model, with the base model's
    /// pooling, and shows the difference.
    pub fn load_tuned(&mut self, spec: &str) {
        let mut slot = self.tuned.take().unwrap_or_else(ModelSlot::new);
        slot.forget();
        slot.model = ModelState::Loading {
            spec: spec.to_string(),
            message: format!("loading {spec}…"),
        };
        let pooling = match &self.base.model {
            ModelState::Ready(m) => Some(m.pooling.clone()),
            _ => None,
        };
        self.outbox.push(Request::Load {
            slot: Slot::Tuned,
            generation: slot.generation,
            spec: spec.to_string(),
            pooling,
        });
        self.tuned = Some(slot);
        self.view = MatrixView::Difference;
        self.screen = Screen::Explorer;
        self.set_status(
            format!("loading {spec} to compare with the base model…"),
            false,
        );
    }

    fn unload_tuned(&mut self) {
        if self.tuned.take().is_some() {
            self.outbox.push(Request::Unload { slot: Slot::Tuned });
            self.view = MatrixView::Base;
            self.analysis = None;
            self.set_status("comparison closed", false);
            self.refresh();
        }
    }

    fn set_status(&mut self, text: impl Into<String>, error: bool) {
        self.status = Some(StatusMessage {
            text: text.into(),
            error,
        });
    }

    /// The sentences as shown right now: the one being typed counts, live.
    pub fn texts(&self) -> Vec<String> {
        let mut texts = self.sentences.clone();
        if let Mode::Editing(target, editor) = &self.mode {
            match target {
                EditTarget::Sentence(i) if *i < texts.len() => {
                    texts[*i] = editor.text().to_string()
                }
                EditTarget::NewSentence if !editor.text().is_empty() => {
                    texts.push(editor.text().to_string())
                }
                _ => {}
            }
        }
        texts
    }

    /// Asks each model for the vectors it lacks, or rebuilds the analysis when none are missing.
    fn refresh(&mut self) {
        if !self.base.ready() {
            return;
        }
        let texts = self.texts();
        let mut waiting = false;
        for slot in [Slot::Base, Slot::Tuned] {
            let Some(s) = (match slot {
                Slot::Base => Some(&mut self.base),
                Slot::Tuned => self.tuned.as_mut().filter(|t| t.ready()),
            }) else {
                continue;
            };
            let missing = s.missing(&texts);
            if missing.is_empty() {
                s.pending = false;
                continue;
            }
            waiting = true;
            if s.pending && missing == s.requested {
                continue; // already asked
            }
            s.last_request += 1;
            s.pending = true;
            s.requested = missing.clone();
            self.outbox.push(Request::Embed {
                slot,
                id: s.last_request,
                generation: s.generation,
                texts: missing,
            });
        }
        if waiting {
            return;
        }
        let tuned_ready = self.tuned.as_ref().is_some_and(|t| t.ready());
        if self
            .analysis
            .as_ref()
            .is_some_and(|a| a.texts == texts && a.tuned.is_some() == tuned_ready)
        {
            return;
        }
        self.analysis = Some(self.analyse(texts));
    }

    fn analyse(&mut self, texts: Vec<String>) -> Analysis {
        let base = self.base.side(&texts);
        let tuned = self
            .tuned
            .as_ref()
            .filter(|t| t.ready())
            .map(|t| t.side(&texts));
        let pca = PcaBasis::fit(&base.vectors);
        let (coords, tuned_coords) = match &pca {
            Ok(b) => (
                b.project(&base.vectors),
                tuned
                    .as_ref()
                    .map(|t| b.project(&t.vectors))
                    .unwrap_or_default(),
            ),
            Err(_) => (Vec::new(), Vec::new()),
        };
        self.base.trim_cache(&texts);
        if let Some(t) = self.tuned.as_mut() {
            t.trim_cache(&texts);
        }
        Analysis {
            texts,
            base,
            tuned,
            pca,
            coords,
            tuned_coords,
        }
    }

    pub fn on_worker(&mut self, event: WorkerEvent) {
        let slot = match &event {
            WorkerEvent::Progress { slot, .. }
            | WorkerEvent::Loaded { slot, .. }
            | WorkerEvent::LoadFailed { slot, .. }
            | WorkerEvent::Embedded { slot, .. }
            | WorkerEvent::EmbedFailed { slot, .. } => *slot,
        };
        let Some(s) = self.slot_mut(slot) else {
            self.dropped_results += 1;
            return;
        };
        match event {
            WorkerEvent::Progress {
                generation,
                message,
                ..
            } if generation == s.generation => {
                if let ModelState::Loading { message: m, .. } = &mut s.model {
                    *m = message;
                }
            }
            WorkerEvent::Loaded {
                generation, model, ..
            } if generation == s.generation => {
                s.model = ModelState::Ready(model);
                s.previous_model = None;
                if slot == Slot::Tuned {
                    self.set_status(
                        "comparing: v switches base / fine-tuned / difference",
                        false,
                    );
                } else {
                    self.status = None;
                }
                self.refresh();
            }
            WorkerEvent::LoadFailed {
                generation, error, ..
            } if generation == s.generation => match s.previous_model.take() {
                // A pooling change or another model was refused: the old one is still loaded.
                Some(prev) => {
                    let msg = format!("{error} (still using {})", prev.name);
                    s.model = ModelState::Ready(prev);
                    self.set_status(msg, true);
                    self.refresh();
                }
                None if slot == Slot::Tuned => {
                    self.tuned = None;
                    self.view = MatrixView::Base;
                    self.set_status(format!("cannot compare: {error}"), true);
                }
                None => {
                    let spec = match &s.model {
                        ModelState::Loading { spec, .. } => spec.clone(),
                        _ => String::new(),
                    };
                    s.model = ModelState::Failed {
                        spec,
                        error: error.clone(),
                    };
                    self.set_status(error, true);
                }
            },
            WorkerEvent::Embedded {
                id,
                generation,
                items,
                millis,
                ..
            } => {
                if generation != s.generation || id != s.last_request {
                    self.dropped_results += 1;
                    return;
                }
                for item in items {
                    s.cache.insert(item.text.clone(), item);
                }
                s.pending = false;
                self.last_embed_ms = Some(millis);
                self.refresh();
            }
            WorkerEvent::EmbedFailed { id, error, .. } if id == s.last_request => {
                s.pending = false;
                self.set_status(error, true);
            }
            _ => {} // an event about an older generation
        }
    }

    /// An event from the training run.
    pub fn on_train(&mut self, event: &TrainEvent) {
        let Some(run) = self.runs.iter_mut().rev().find(|r| r.status.is_active()) else {
            return;
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
            } => self.set_status(format!("run {id}: {total_steps} steps on {device}"), false),
            TrainEvent::Finished {
                output, metrics, ..
            } => {
                let m = metrics
                    .first()
                    .map(|(k, v)| format!(" · {k} {v:.4}"))
                    .unwrap_or_default();
                self.set_status(
                    format!(
                        "run {id} finished: {}{m} · l loads it next to the base model",
                        output.display()
                    ),
                    false,
                );
            }
            TrainEvent::Failed { message, .. } => {
                self.set_status(format!("run {id} failed: {message}"), true)
            }
            TrainEvent::Cancelled { checkpoint, .. } => {
                let kept = checkpoint
                    .as_ref()
                    .map_or("no checkpoint".to_string(), |p| {
                        format!("checkpoint {}", p.display())
                    });
                self.set_status(format!("run {id} stopped · {kept}"), false);
            }
            _ => {}
        }
        if matches!(
            event,
            TrainEvent::Finished { .. } | TrainEvent::Failed { .. } | TrainEvent::Cancelled { .. }
        ) && self.quit_after_stop
        {
            self.quit = true;
        }
    }

    /// The training thread ended with an error before it could report one (for example, the
    /// model could not be loaded).
    pub fn on_train_error(&mut self, message: &str) {
        if let Some(run) = self.runs.iter_mut().rev().find(|r| r.status.is_active()) {
            run.status = RunStatus::Failed(message.to_string());
            let id = run.id;
            self.set_status(format!("run {id} failed: {message}"), true);
        }
        if self.quit_after_stop {
            self.quit = true;
        }
    }

    /// A data file asked for by the form was read.
    pub fn on_data(&mut self, path: &str, eval: bool, result: Result<DataSummary, String>) {
        self.form.data_inspected(path, result, eval);
    }

    fn context(&self) -> Context {
        match (&self.mode, self.screen) {
            (Mode::Editing(..), _) => Context::Editing,
            (_, Screen::Explorer) => self.focus.context(),
            (_, Screen::Training) => match (self.train_focus, self.form_open) {
                (TrainFocus::History, _) => Context::History,
                (TrainFocus::Main, true) => Context::Form,
                (TrainFocus::Main, false) => Context::Run,
            },
        }
    }

    pub fn on_key(&mut self, ev: KeyEvent) {
        match &mut self.mode {
            Mode::Help => {
                if keys::is_ctrl_c(&ev) {
                    self.request_quit();
                }
                if !matches!(self.mode, Mode::Confirm(_)) {
                    self.mode = Mode::Normal;
                }
                return;
            }
            Mode::Demo { selected } => {
                match ev.code {
                    KeyCode::Up | KeyCode::Char('k') => *selected = selected.saturating_sub(1),
                    KeyCode::Down | KeyCode::Char('j') => {
                        *selected = (*selected + 1).min(DEMO_SETS.len() - 1)
                    }
                    KeyCode::Enter => {
                        let set = &DEMO_SETS[*selected];
                        self.replace_sentences(set.sentences());
                        self.set_status(format!("demo set: {}", set.name), false);
                        self.mode = Mode::Normal;
                    }
                    _ if keys::is_ctrl_c(&ev) => self.quit = true,
                    _ => self.mode = Mode::Normal,
                }
                return;
            }
            Mode::Confirm(what) => {
                let what = *what;
                self.mode = Mode::Normal;
                let keep = match ev.code {
                    KeyCode::Char('k') | KeyCode::Char('y') => Some(true),
                    KeyCode::Char('d') => Some(false),
                    _ if keys::is_ctrl_c(&ev) => {
                        // Ctrl-C twice: quit now, the run stops without a checkpoint.
                        self.effects.push(Effect::StopTraining {
                            keep_checkpoint: false,
                        });
                        self.quit = true;
                        return;
                    }
                    _ => None, // c, Esc, anything else: carry on
                };
                if let Some(keep) = keep {
                    self.stop_run(keep);
                    if what == Confirm::QuitDuringRun {
                        self.quit_after_stop = true;
                        self.set_status("stopping the run, then quitting…", false);
                    }
                }
                return;
            }
            _ => {}
        }
        let action = keys::lookup(&ev, self.context());
        if let Mode::Editing(_, editor) = &mut self.mode {
            let before = editor.text().to_string();
            match action {
                Some(Action::Commit) => return self.commit(),
                Some(Action::Cancel) => {
                    self.mode = Mode::Normal;
                    self.clamp_selection();
                }
                Some(Action::Quit) => self.request_quit(),
                Some(Action::CursorLeft) => editor.left(),
                Some(Action::CursorRight) => editor.right(),
                Some(Action::CursorHome) => editor.home(),
                Some(Action::CursorEnd) => editor.end(),
                Some(Action::Backspace) => editor.backspace(),
                Some(Action::DeleteForward) => editor.delete(),
                Some(Action::KillLine) => editor.kill_to_start(),
                Some(Action::DeleteWord) => editor.delete_word_back(),
                _ => {
                    if let KeyCode::Char(c) = ev.code
                        && !ev
                            .modifiers
                            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
                    {
                        editor.insert_char(c);
                    }
                }
            }
            let changed = match &self.mode {
                Mode::Editing(_, e) => e.text() != before,
                _ => true,
            };
            if changed {
                self.refresh();
            }
            return;
        }
        if let Some(action) = action {
            self.act(action);
        }
    }

    /// Quit, unless a run is training: then ask what to do with it.
    fn request_quit(&mut self) {
        if self.active_run().is_some() {
            if self.quit_after_stop {
                // Asked twice: leave now.
                self.effects.push(Effect::StopTraining {
                    keep_checkpoint: false,
                });
                self.quit = true;
            } else {
                self.mode = Mode::Confirm(Confirm::QuitDuringRun);
            }
        } else {
            self.quit = true;
        }
    }

    fn stop_run(&mut self, keep_checkpoint: bool) {
        if let Some(run) = self.runs.iter_mut().rev().find(|r| r.status.is_active()) {
            run.status = RunStatus::Stopping;
            self.effects.push(Effect::StopTraining { keep_checkpoint });
            let how = if keep_checkpoint {
                "saving a checkpoint"
            } else {
                "without a checkpoint"
            };
            self.set_status(format!("stopping at the end of this step, {how}…"), false);
        }
    }

    fn act(&mut self, action: Action) {
        let n = self.sentences.len();
        match action {
            Action::Quit => self.request_quit(),
            Action::NextPane | Action::PrevPane if self.screen == Screen::Training => {
                self.train_focus = match self.train_focus {
                    TrainFocus::Main => TrainFocus::History,
                    TrainFocus::History => TrainFocus::Main,
                };
            }
            Action::NextPane | Action::PrevPane => {
                let i = Pane::ORDER
                    .iter()
                    .position(|p| *p == self.focus)
                    .unwrap_or(0);
                let step = if action == Action::NextPane { 1 } else { 2 };
                self.focus = Pane::ORDER[(i + step) % 3];
            }
            Action::Help => self.mode = Mode::Help,
            Action::ToggleScreen => {
                self.screen = match self.screen {
                    Screen::Explorer => Screen::Training,
                    Screen::Training => Screen::Explorer,
                };
                if self.screen == Screen::Training && self.form.data.is_none() {
                    self.inspect_form_files();
                }
            }
            Action::CycleView => {
                if self.tuned.as_ref().is_some_and(|t| t.ready()) {
                    self.view = match self.view {
                        MatrixView::Base => MatrixView::Tuned,
                        MatrixView::Tuned => MatrixView::Difference,
                        MatrixView::Difference => MatrixView::Base,
                    };
                } else {
                    self.set_status(
                        "no fine-tuned model loaded (L loads one, or l after a run)",
                        true,
                    );
                }
            }
            Action::Compare => {
                let start = self
                    .runs
                    .iter()
                    .rev()
                    .find_map(|r| r.loadable())
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.mode = Mode::Editing(EditTarget::TunedSpec, LineEditor::new(&start));
            }
            Action::CloseCompare => self.unload_tuned(),
            Action::DemoSets => self.mode = Mode::Demo { selected: 0 },
            Action::Add => {
                self.screen = Screen::Explorer;
                self.focus = Pane::Sentences;
                self.selected = n;
                self.mode = Mode::Editing(EditTarget::NewSentence, LineEditor::default());
            }
            Action::Edit if n > 0 => {
                let text = &self.sentences[self.selected];
                self.mode =
                    Mode::Editing(EditTarget::Sentence(self.selected), LineEditor::new(text));
            }
            Action::Delete if n > 0 => {
                self.sentences.remove(self.selected);
                self.clamp_selection();
                self.refresh();
            }
            Action::MoveUp if self.selected > 0 && self.selected < n => {
                self.sentences.swap(self.selected, self.selected - 1);
                self.selected -= 1;
                self.refresh();
            }
            Action::MoveDown if self.selected + 1 < n => {
                self.sentences.swap(self.selected, self.selected + 1);
                self.selected += 1;
                self.refresh();
            }
            Action::Up => self.selected = self.selected.saturating_sub(1),
            Action::Down => self.selected = (self.selected + 1).min(n.saturating_sub(1)),
            Action::Left => self.matrix_col = self.matrix_col.saturating_sub(1),
            Action::Right => self.matrix_col = (self.matrix_col + 1).min(n.saturating_sub(1)),
            Action::NextPooling => self.next_pooling(),
            Action::LoadModel => {
                let current = match &self.base.model {
                    ModelState::Ready(m) => m.name.clone(),
                    ModelState::Loading { spec, .. } | ModelState::Failed { spec, .. } => {
                        spec.clone()
                    }
                };
                self.mode = Mode::Editing(EditTarget::ModelSpec, LineEditor::new(&current));
            }
            Action::OpenFile => {
                self.mode = Mode::Editing(EditTarget::OpenPath, LineEditor::default())
            }
            Action::SaveFile => {
                self.mode = Mode::Editing(EditTarget::SavePath, LineEditor::new("sentences.txt"))
            }
            Action::SwitchComponents => {
                let available = self
                    .analysis
                    .as_ref()
                    .and_then(|a| a.pca.as_ref().ok())
                    .map_or(0, PcaBasis::components);
                if available >= 3 {
                    self.components = 1 - self.components;
                } else {
                    self.components = 0;
                    self.set_status("PC3 needs at least 4 sentences", true);
                }
            }
            Action::FieldUp => self.form.selected = self.form.selected.saturating_sub(1),
            Action::FieldDown => {
                self.form.selected = (self.form.selected + 1).min(self.form.visible().len() - 1)
            }
            Action::FieldPrev | Action::FieldNext => {
                let f = self.form.selected_field();
                if f.is_choice() {
                    self.form.cycle(f, action == Action::FieldNext);
                }
            }
            Action::FieldEdit => {
                let f = self.form.selected_field();
                if f.is_choice() {
                    self.form.cycle(f, true);
                } else {
                    let v = self.form.get(f).to_string();
                    self.mode = Mode::Editing(EditTarget::Field(f), LineEditor::new(&v));
                }
            }
            Action::StartRun => self.start_run(),
            Action::StopRun if self.active_run().is_some() => {
                self.mode = Mode::Confirm(Confirm::StopRun);
            }
            Action::NewRun => {
                if self.active_run().is_some() {
                    self.set_status("a run is training; x stops it", true);
                } else {
                    self.form_open = true;
                    self.train_focus = TrainFocus::Main;
                    self.form
                        .set(FieldId::Output, next_output(Path::new("runs")));
                }
            }
            Action::LoadRun => {
                let run = self.runs.get(self.run_selected);
                match run.and_then(RunView::loadable) {
                    Some(path) => self.load_tuned(&path.to_string_lossy()),
                    None => self.set_status("this run has no model or checkpoint to load", true),
                }
            }
            Action::HistoryUp => {
                self.run_selected = self.run_selected.saturating_sub(1);
                self.form_open = false;
            }
            Action::HistoryDown => {
                self.run_selected = (self.run_selected + 1).min(self.runs.len().saturating_sub(1));
                self.form_open = false;
            }
            _ => {}
        }
    }

    fn inspect_form_files(&mut self) {
        for (field, eval) in [(FieldId::Data, false), (FieldId::Eval, true)] {
            let path = self.form.get(field).trim().to_string();
            if path.is_empty() {
                if eval {
                    self.form.eval = None;
                } else {
                    self.form.data = None;
                }
            } else {
                self.effects.push(Effect::InspectData { path, eval });
            }
        }
    }

    fn start_run(&mut self) {
        if self.active_run().is_some() {
            return self.set_status("a run is already training", true);
        }
        let Some(config) = self.form.validate() else {
            let first = self.form.errors.first().map(|e| e.0);
            if let Some(f) = first {
                self.form.selected = self
                    .form
                    .visible()
                    .iter()
                    .position(|x| *x == f)
                    .unwrap_or(0);
                self.set_status(
                    format!("{}: {}", f.label(), self.form.error(f).unwrap_or_default()),
                    true,
                );
            }
            return;
        };
        let id = self.runs.len() + 1;
        self.runs.push(RunView::new(id, config.clone()));
        self.run_selected = self.runs.len() - 1;
        self.form_open = false;
        self.train_focus = TrainFocus::Main;
        self.effects.push(Effect::StartTraining(Box::new(config)));
        self.set_status(format!("run {id} starting…"), false);
    }

    fn next_pooling(&mut self) {
        let ModelState::Ready(model) = &self.base.model else {
            return self.set_status("no model loaded yet", true);
        };
        let current = model.pooling.parse::<PoolingMode>().ok();
        let i = current
            .and_then(|m| PoolingMode::ALL.iter().position(|x| *x == m))
            .map_or(0, |i| (i + 1) % PoolingMode::ALL.len());
        let next = PoolingMode::ALL[i];
        for slot in [Slot::Base, Slot::Tuned] {
            let Some(s) = self.slot_mut(slot).filter(|s| s.ready()) else {
                continue;
            };
            if let ModelState::Ready(m) = &s.model {
                s.previous_model = Some(m.clone());
            }
            s.forget();
            let generation = s.generation;
            self.outbox.push(Request::SetPooling {
                slot,
                generation,
                pooling: next.name().to_string(),
            });
        }
        self.set_status(format!("switching pooling to {next}…"), false);
    }

    fn commit(&mut self) {
        let Mode::Editing(target, editor) = std::mem::replace(&mut self.mode, Mode::Normal) else {
            return;
        };
        let text = editor.text().to_string();
        match target {
            EditTarget::NewSentence | EditTarget::Sentence(_) if text.trim().is_empty() => {
                self.set_status("an empty sentence is not kept (d deletes a sentence)", true);
            }
            EditTarget::NewSentence => {
                self.sentences.push(text);
                self.selected = self.sentences.len() - 1;
            }
            EditTarget::Sentence(i) => {
                if let Some(s) = self.sentences.get_mut(i) {
                    *s = text;
                }
            }
            EditTarget::OpenPath => match read_sentence_file(Path::new(text.trim())) {
                Ok(lines) => {
                    let n = lines.len();
                    self.replace_sentences(lines);
                    self.set_status(format!("opened {} ({n} sentences)", text.trim()), false);
                }
                Err(e) => self.set_status(e, true),
            },
            EditTarget::SavePath => {
                match write_sentence_file(Path::new(text.trim()), &self.sentences) {
                    Ok(()) => self.set_status(
                        format!(
                            "saved {} sentences to {}",
                            self.sentences.len(),
                            text.trim()
                        ),
                        false,
                    ),
                    Err(e) => self.set_status(e, true),
                }
            }
            EditTarget::ModelSpec => {
                if !text.trim().is_empty() {
                    self.load_model(text.trim(), None);
                }
            }
            EditTarget::TunedSpec => {
                if !text.trim().is_empty() {
                    self.load_tuned(text.trim());
                }
            }
            EditTarget::Field(f) => {
                self.form.set(f, text.trim().to_string());
                match f {
                    FieldId::Data => {
                        self.form.data = None;
                        self.inspect_form_files();
                    }
                    FieldId::Eval => {
                        self.form.eval = None;
                        self.inspect_form_files();
                    }
                    _ => {}
                }
            }
        }
        self.clamp_selection();
        self.refresh();
    }

    fn replace_sentences(&mut self, sentences: Vec<String>) {
        self.sentences = sentences;
        self.selected = 0;
        self.matrix_col = 0;
        self.refresh();
    }

    fn clamp_selection(&mut self) {
        let n = self.sentences.len();
        self.selected = self.selected.min(n.saturating_sub(1));
        self.matrix_col = self.matrix_col.min(n.saturating_sub(1));
    }

    /// Pasted text: while typing it goes into the line; otherwise each non-empty line becomes a
    /// sentence.
    pub fn on_paste(&mut self, text: &str) {
        if let Mode::Editing(_, editor) = &mut self.mode {
            editor.insert_str(text);
            self.refresh();
            return;
        }
        let lines: Vec<String> = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        if lines.is_empty() {
            return;
        }
        let n = lines.len();
        self.sentences.extend(lines);
        self.selected = self.sentences.len() - 1;
        self.set_status(format!("pasted {n} sentence(s)"), false);
        self.refresh();
    }

    /// Clicks select: a sentence in the list, a cell in the matrix; any click focuses its pane.
    pub fn on_mouse(&mut self, ev: MouseEvent) {
        if ev.kind != MouseEventKind::Down(MouseButton::Left)
            || self.mode != Mode::Normal
            || self.screen != Screen::Explorer
        {
            return;
        }
        let at = Position::new(ev.column, ev.row);
        let areas = ui::layout(self.size);
        if areas.sentences.contains(at) {
            self.focus = Pane::Sentences;
            if let Some(i) = ui::sentences::hit(self, areas.sentences, at) {
                self.selected = i;
            }
        } else if areas.matrix.contains(at) {
            self.focus = Pane::Matrix;
            if let Some((r, c)) = ui::matrix::hit(self, areas.matrix, at) {
                self.selected = r;
                self.matrix_col = c;
            }
        } else if areas.map.contains(at) {
            self.focus = Pane::Map;
        }
    }
}

/// Sentences from a text file, one per line, blank lines skipped.
pub fn read_sentence_file(path: &Path) -> Result<Vec<String>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        format!("{}:{line}: invalid UTF-8", path.display())
    })?;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            l.strip_prefix('\u{feff}')
                .unwrap_or(l)
                .trim_end()
                .to_string()
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return Err(format!("{} holds no sentences", path.display()));
    }
    Ok(lines)
}

/// Writes one sentence per line through a temporary file renamed into place.
pub fn write_sentence_file(path: &Path, sentences: &[String]) -> Result<(), String> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| format!("cannot save {}: {e}", path.display());
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    for s in sentences {
        writeln!(tmp, "{}", s.replace(['\n', '\r'], " ")).map_err(fail)?;
    }
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}
