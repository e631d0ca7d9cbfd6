//! The explorer screen: the sentences, the models that embed them (the model being explored and,
//! for a before / after comparison, a fine-tuned one), and what is computed from their vectors
//! (the similarity matrices, the PCA map). Pure and synchronous: vectors arrive as worker events,
//! requests for more leave through the [`Shell`].

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::hits::{Hit, Pane};
use super::keys::{Action, Context};
use super::messages::{
    DropoutCloud, Embedded, ModelSummary, Prompt, Request, Slot, TokenCount, WorkerEvent,
};
use super::shell::{EditTarget, Mode, PipelineView, PoolingView, PromptView, Shell};
use crate::analysis::pca::{PcaBasis, PcaError};
use crate::analysis::similarity::Similarity;
use crate::model::PoolingMode;
use crate::sentence_file;

/// The most sentences the explorer holds. Its matrix and map are recomputed on every change, on
/// the UI thread: N² cosines and an SVD of N vectors stay well under a frame's time at this size
/// (20,000 sentences once made a 3 GB matrix). `sbert-tui encode` takes any number.
pub const MAX_SENTENCES: usize = 500;

impl Pane {
    const ORDER: [Pane; 3] = [Pane::Sentences, Pane::Matrix, Pane::Map];

    pub fn context(self) -> Context {
        match self {
            Pane::Sentences => Context::Sentences,
            Pane::Matrix => Context::Matrix,
            Pane::Map => Context::Map,
        }
    }
}

/// What the similarity pane shows once a fine-tuned model is loaded next to the base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixView {
    Base,
    Tuned,
    /// Fine-tuned minus base.
    Difference,
}

/// Which principal components the map shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapAxes {
    Pc1Pc2,
    Pc2Pc3,
}

impl MapAxes {
    /// The components on x and y (0-based).
    pub fn components(self) -> (usize, usize) {
        match self {
            MapAxes::Pc1Pc2 => (0, 1),
            MapAxes::Pc2Pc3 => (1, 2),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ModelState {
    Loading { spec: String, message: String },
    Ready(ModelSummary),
    Failed { spec: String, error: String },
}

/// One model's vectors for the current sentences.
#[derive(Debug, Clone)]
pub struct Side {
    pub vectors: Vec<Vec<f32>>,
    /// What the tokenizer made of each text (its length, whether it was cut, unknown pieces).
    pub tokens: Vec<TokenCount>,
    pub matrix: Vec<Vec<f32>>,
}

/// Everything the panes show, computed once per change of the sentences or the models.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub texts: Vec<String>,
    /// The model generations the vectors came from (base, fine-tuned).
    pub generations: (u64, Option<u64>),
    /// How the matrices compare vectors (the base model's `similarity_fn_name`).
    pub similarity: Similarity,
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
    /// Cell (i, j) of the similarity matrix of `view` (the base model's when nothing else is
    /// loaded).
    pub fn value(&self, view: MatrixView, i: usize, j: usize) -> f32 {
        match (view, &self.tuned) {
            (MatrixView::Tuned, Some(t)) => t.matrix[i][j],
            (MatrixView::Difference, Some(t)) => t.matrix[i][j] - self.base.matrix[i][j],
            _ => self.base.matrix[i][j],
        }
    }

    /// Row `i` of the similarity matrix of `view`.
    pub fn row(&self, view: MatrixView, i: usize) -> Vec<f32> {
        (0..self.texts.len())
            .map(|j| self.value(view, i, j))
            .collect()
    }
}

/// One model as the explorer tracks it: its state, and the vectors it has given.
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
    /// Why the last request failed (for this generation and these texts): not asked again.
    failed: Option<(Vec<String>, String)>,
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
            failed: None,
        }
    }

    pub fn ready(&self) -> bool {
        matches!(self.model, ModelState::Ready(_))
    }

    /// Why the vectors of the current sentences cannot be had, if they cannot.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_ref().map(|f| f.1.as_str())
    }

    pub fn cached(&self, text: &str) -> bool {
        self.cache.contains_key(text)
    }

    /// The last request cannot be served: remember why, so it is not asked again.
    fn fail(&mut self, error: String) {
        self.failed = Some((std::mem::take(&mut self.requested), error));
    }

    fn forget(&mut self) {
        self.generation += 1;
        self.cache.clear();
        self.pending = false;
        self.failed = None;
    }

    /// The texts this slot has no vector for.
    fn missing(&self, texts: &[String]) -> Vec<String> {
        let mut seen = HashSet::new();
        texts
            .iter()
            .filter(|t| !self.cache.contains_key(*t) && seen.insert(*t))
            .cloned()
            .collect()
    }

    /// The model's similarity function (`similarity_fn_name`).
    pub fn similarity(&self) -> Similarity {
        self.summary()
            .and_then(|m| m.similarity.parse().ok())
            .unwrap_or_default()
    }

    fn side(&self, texts: &[String], similarity: Similarity) -> Side {
        let items: Vec<&Embedded> = texts.iter().map(|t| &self.cache[t]).collect();
        let vectors: Vec<Vec<f32>> = items.iter().map(|e| e.vector.clone()).collect();
        Side {
            tokens: items.iter().map(|e| e.tokens).collect(),
            matrix: similarity.matrix(&vectors),
            vectors,
        }
    }

    fn trim_cache(&mut self, keep: &[String]) {
        if self.cache.len() > 2 * MAX_SENTENCES {
            let keep: HashSet<&String> = keep.iter().collect();
            self.cache.retain(|k, _| keep.contains(k));
        }
    }

    fn summary(&self) -> Option<&ModelSummary> {
        match &self.model {
            ModelState::Ready(m) => Some(m),
            _ => None,
        }
    }
}

pub struct Explorer {
    pub sentences: Vec<String>,
    /// The selected sentence, highlighted in every pane; also the matrix cursor's row.
    pub selected: usize,
    /// The matrix cursor's column.
    pub matrix_col: usize,
    pub focus: Pane,
    pub axes: MapAxes,
    /// The model being explored.
    pub base: ModelSlot,
    /// A fine-tuned model shown next to it.
    pub tuned: Option<ModelSlot>,
    pub view: MatrixView,
    /// The prompt the models' texts get (the model's default unless chosen).
    pub prompt: Prompt,
    pub analysis: Option<Analysis>,
    pub last_embed_ms: Option<f64>,
    /// Results that arrived too late to matter (for tests and diagnostics).
    pub dropped_results: usize,
    /// SimCSE's dropout copies of one sentence, drawn on the map around it.
    pub cloud: Option<DropoutCloudView>,
    /// How many clouds were asked for: each draws new dropout masks.
    clouds_asked: u64,
    /// A sentence-transformers CrossEncoder folder the cost demonstration runs too.
    pub cross_encoder: Option<String>,
}

/// Copies of one sentence encoded with dropout on, projected on the map's axes.
#[derive(Debug, Clone, PartialEq)]
pub struct DropoutCloudView {
    pub text: String,
    /// The sentences the map showed when the copies were projected: the cloud is drawn only
    /// while the map is the same (the same basis).
    pub texts: Vec<String>,
    /// Each copy on every principal component.
    pub points: Vec<Vec<f64>>,
    /// Mean cosine between two copies, and of a copy with the evaluation-mode vector.
    pub between: f32,
    pub to_eval: f32,
    /// The lowest cosine of a copy with the evaluation-mode vector.
    pub lowest: f32,
}

/// How many dropout copies a SimCSE cloud has.
pub const CLOUD_COPIES: usize = 16;

impl Explorer {
    pub fn new(sentences: Vec<String>) -> Self {
        Self {
            sentences,
            selected: 0,
            matrix_col: 0,
            focus: Pane::Sentences,
            axes: MapAxes::Pc1Pc2,
            base: ModelSlot::new(),
            tuned: None,
            view: MatrixView::Base,
            prompt: Prompt::ModelDefault,
            analysis: None,
            last_embed_ms: None,
            dropped_results: 0,
            cloud: None,
            clouds_asked: 0,
            cross_encoder: None,
        }
    }

    /// True while any model is embedding.
    pub fn pending(&self) -> bool {
        self.base.pending || self.tuned.as_ref().is_some_and(|t| t.pending)
    }

    /// The base model's name (or what is loading).
    pub fn model_spec(&self) -> String {
        match &self.base.model {
            ModelState::Ready(m) => m.name.clone(),
            ModelState::Loading { spec, .. } | ModelState::Failed { spec, .. } => spec.clone(),
        }
    }

    fn slot_mut(&mut self, slot: Slot) -> Option<&mut ModelSlot> {
        match slot {
            Slot::Base => Some(&mut self.base),
            Slot::Tuned => self.tuned.as_mut(),
        }
    }

    /// The sentences as shown right now: the one being typed counts, live.
    pub fn texts(&self, mode: &Mode) -> Vec<String> {
        let mut texts = self.sentences.clone();
        if let Mode::Editing(target, editor) = mode {
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

    /// Starts loading the model to explore; everything embedded so far is forgotten.
    pub fn load_model(&mut self, spec: &str, pooling: Option<String>, shell: &mut Shell) {
        let s = &mut self.base;
        s.forget();
        // If the load fails, the worker keeps the model it had; so does the UI.
        s.previous_model = s.summary().cloned();
        s.model = ModelState::Loading {
            spec: spec.to_string(),
            message: format!("loading {spec}…"),
        };
        shell.request(Request::Load {
            slot: Slot::Base,
            generation: s.generation,
            spec: spec.to_string(),
            pooling,
            prompt: self.prompt.clone(),
        });
    }

    /// Loads a fine-tuned model (or checkpoint) next to the base model, with the base model's
    /// pooling, and shows the difference.
    pub fn load_tuned(&mut self, spec: &str, shell: &mut Shell) {
        let mut slot = self.tuned.take().unwrap_or_else(ModelSlot::new);
        slot.forget();
        slot.model = ModelState::Loading {
            spec: spec.to_string(),
            message: format!("loading {spec}…"),
        };
        shell.request(Request::Load {
            slot: Slot::Tuned,
            generation: slot.generation,
            spec: spec.to_string(),
            pooling: self.base.summary().map(|m| m.pooling.clone()),
            prompt: self.prompt.clone(),
        });
        self.tuned = Some(slot);
        self.view = MatrixView::Difference;
        shell.set_status(
            format!("loading {spec} to compare with the base model…"),
            false,
        );
    }

    fn unload_tuned(&mut self, shell: &mut Shell) {
        if self.tuned.take().is_some() {
            shell.request(Request::Unload { slot: Slot::Tuned });
            self.view = MatrixView::Base;
            self.analysis = None;
            shell.set_status("comparison closed", false);
            self.refresh(shell);
        }
    }

    /// Asks each model for the vectors it lacks, or rebuilds the analysis when none are missing.
    pub fn refresh(&mut self, shell: &mut Shell) {
        if !self.base.ready() {
            return;
        }
        let texts = self.texts(&shell.mode);
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
            if s.failed
                .as_ref()
                .is_some_and(|(texts, _)| *texts == missing)
            {
                continue; // the same request failed: asking again would fail again
            }
            s.last_request += 1;
            s.pending = true;
            s.requested = missing.clone();
            shell.request(Request::Embed {
                slot,
                id: s.last_request,
                generation: s.generation,
                texts: missing,
            });
        }
        if waiting {
            return;
        }
        let tuned_ready = self.tuned.as_ref().filter(|t| t.ready());
        let generations = (self.base.generation, tuned_ready.map(|t| t.generation));
        if self
            .analysis
            .as_ref()
            .is_some_and(|a| a.texts == texts && a.generations == generations)
        {
            return;
        }
        self.analysis = Some(self.analyse(texts, generations));
    }

    fn analyse(&mut self, texts: Vec<String>, generations: (u64, Option<u64>)) -> Analysis {
        // Both models are compared the base model's way, so their matrices can be subtracted.
        let similarity = self.base.similarity();
        let base = self.base.side(&texts, similarity);
        let tuned = self
            .tuned
            .as_ref()
            .filter(|t| t.ready())
            .map(|t| t.side(&texts, similarity));
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
            generations,
            similarity,
            base,
            tuned,
            pca,
            coords,
            tuned_coords,
        }
    }

    pub fn on_worker(&mut self, event: WorkerEvent, shell: &mut Shell) {
        let slot = match &event {
            WorkerEvent::Progress { slot, .. }
            | WorkerEvent::Loaded { slot, .. }
            | WorkerEvent::LoadFailed { slot, .. }
            | WorkerEvent::Embedded { slot, .. }
            | WorkerEvent::EmbedFailed { slot, .. }
            | WorkerEvent::PoolingTable { slot, .. }
            | WorkerEvent::Cost { slot, .. }
            | WorkerEvent::Pipeline { slot, .. }
            | WorkerEvent::Dropout { slot, .. }
            | WorkerEvent::PromptTable { slot, .. } => *slot,
        };
        let Some(s) = self.slot_mut(slot) else {
            self.dropped_results += 1;
            return;
        };
        match event {
            WorkerEvent::Pipeline {
                generation,
                text,
                pipeline,
                ..
            } if generation == s.generation => match pipeline {
                Ok(pipeline) => {
                    if matches!(shell.mode, Mode::Normal) {
                        let model = s.summary().map(|m| m.name.clone()).unwrap_or_default();
                        shell.mode = Mode::Pipeline(PipelineView {
                            text,
                            model,
                            pipeline,
                        });
                        shell.clear_status();
                    }
                }
                Err(e) => shell.set_status(format!("pipeline: {e}"), true),
            },
            WorkerEvent::Dropout {
                generation,
                text,
                cloud,
                ..
            } if generation == s.generation => match cloud {
                Ok(c) => self.show_cloud(text, c, shell),
                Err(e) => shell.set_status(format!("dropout copies: {e}"), true),
            },
            WorkerEvent::PromptTable {
                generation,
                pair,
                table,
                ..
            } if generation == s.generation => match table {
                Ok((labels, matrix)) => {
                    if matches!(shell.mode, Mode::Normal) {
                        let similarity = s
                            .summary()
                            .map(|m| m.similarity.clone())
                            .unwrap_or_default();
                        shell.mode = Mode::Prompts(PromptView {
                            pair,
                            labels,
                            matrix,
                            similarity,
                        });
                        shell.clear_status();
                    }
                }
                Err(e) => shell.set_status(format!("prompts side by side: {e}"), true),
            },
            WorkerEvent::Cost {
                generation, report, ..
            } if generation == s.generation => match report {
                Ok(r) => {
                    if matches!(shell.mode, Mode::Normal) {
                        shell.mode = Mode::Cost(r);
                        shell.clear_status();
                    }
                }
                Err(e) => shell.set_status(format!("cost: {e}"), true),
            },
            WorkerEvent::PoolingTable {
                generation,
                pair,
                rows,
                dense,
                ..
            } if generation == s.generation => match rows {
                Ok(rows) => {
                    if matches!(shell.mode, Mode::Normal) {
                        let model = s.summary();
                        shell.mode = Mode::Poolings(PoolingView {
                            pair,
                            rows,
                            current: model.map(|m| m.pooling.clone()).unwrap_or_default(),
                            dense,
                        });
                        shell.clear_status();
                    }
                }
                Err(e) => shell.set_status(format!("pooling side by side: {e}"), true),
            },
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
                    shell.set_status(
                        "comparing: v switches base / fine-tuned / difference",
                        false,
                    );
                } else {
                    shell.clear_status();
                }
                self.refresh(shell);
            }
            WorkerEvent::LoadFailed {
                generation, error, ..
            } if generation == s.generation => match s.previous_model.take() {
                // A pooling change or another model was refused: the old one is still loaded.
                Some(prev) => {
                    let msg = format!("{error} (still using {})", prev.name);
                    s.model = ModelState::Ready(prev);
                    shell.set_status(msg, true);
                    self.refresh(shell);
                }
                None if slot == Slot::Tuned => {
                    self.tuned = None;
                    self.view = MatrixView::Base;
                    shell.set_status(format!("cannot compare: {error}"), true);
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
                    shell.set_status(error, true);
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
                s.pending = false;
                // Non-finite vectors are reported, never analysed (the worker checks too).
                if let Some(bad) = items
                    .iter()
                    .find(|e| e.vector.iter().any(|v| !v.is_finite()))
                {
                    let error = format!(
                        "the model gives non-finite values (NaN or infinity) for \"{}\": its weights are not usable",
                        crate::text::clip(&bad.text, 40)
                    );
                    s.fail(error.clone());
                    self.failed(error, shell);
                    return;
                }
                for item in items {
                    s.cache.insert(item.text.clone(), item);
                }
                s.failed = None;
                self.last_embed_ms = Some(millis);
                self.refresh(shell);
            }
            WorkerEvent::EmbedFailed { id, error, .. } if id == s.last_request => {
                s.pending = false;
                s.fail(error.clone());
                self.failed(error, shell);
            }
            _ => {} // an event about an older generation
        }
    }

    /// Projects SimCSE's dropout copies onto the map's basis and keeps them for drawing.
    fn show_cloud(&mut self, text: String, cloud: DropoutCloud, shell: &mut Shell) {
        let Some(a) = &self.analysis else {
            return;
        };
        let Ok(pca) = &a.pca else {
            return shell.set_status("the map needs three sentences or more", true);
        };
        if !a.texts.contains(&text) {
            return; // the sentence went away meanwhile
        }
        let cos = crate::analysis::similarity::cosine;
        let k = cloud.copies.len();
        let to: Vec<f32> = cloud.copies.iter().map(|c| cos(c, &cloud.eval)).collect();
        let mut pairs = Vec::new();
        for i in 0..k {
            for j in i + 1..k {
                pairs.push(cos(&cloud.copies[i], &cloud.copies[j]));
            }
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
        let view = DropoutCloudView {
            points: pca.project(&cloud.copies),
            texts: a.texts.clone(),
            between: mean(&pairs),
            to_eval: mean(&to),
            lowest: to.iter().copied().fold(f32::INFINITY, f32::min),
            text,
        };
        if view.lowest >= 0.999_999 {
            shell.set_status(
                format!(
                    "{k} copies with dropout on are all the same point: this model has no dropout"
                ),
                true,
            );
        } else {
            shell.clear_status(); // the map's legend has the numbers
        }
        self.cloud = Some(view);
    }

    /// The cloud to draw now: only while the map shows the sentences it was projected with.
    pub fn visible_cloud(&self) -> Option<&DropoutCloudView> {
        let a = self.analysis.as_ref()?;
        self.cloud.as_ref().filter(|c| c.texts == a.texts)
    }

    /// Asks for the selected sentence through every step of the model.
    pub fn request_pipeline(&mut self, shell: &mut Shell) {
        let Some(text) = self.sentences.get(self.selected).cloned() else {
            return shell.set_status("add a sentence first (a)", true);
        };
        if !self.base.ready() {
            return shell.set_status("no model loaded yet", true);
        }
        shell.request(Request::Pipeline {
            slot: Slot::Base,
            generation: self.base.generation,
            text,
        });
        shell.set_status(format!("pipeline of [{}]…", self.selected), false);
    }

    /// Asks for SimCSE's dropout copies of the selected sentence (new masks each time); the
    /// same key on the same sentence while its cloud shows hides it.
    pub fn request_dropout_cloud(&mut self, shell: &mut Shell) {
        let Some(text) = self.sentences.get(self.selected).cloned() else {
            return shell.set_status("add a sentence first (a)", true);
        };
        if self.visible_cloud().is_some_and(|c| c.text == text) {
            self.cloud = None;
            return shell.clear_status();
        }
        if !self.base.ready() {
            return shell.set_status("no model loaded yet", true);
        }
        if self.analysis.as_ref().is_none_or(|a| a.pca.is_err()) {
            return shell.set_status("the map needs three sentences or more", true);
        }
        self.clouds_asked += 1;
        shell.request(Request::Dropout {
            slot: Slot::Base,
            generation: self.base.generation,
            text,
            copies: CLOUD_COPIES,
            seed: self.clouds_asked,
        });
        shell.set_status(
            format!(
                "encoding [{}] {CLOUD_COPIES} times with dropout on…",
                self.selected
            ),
            false,
        );
    }

    /// Vectors cannot be had: say why, and show nothing computed from the old ones.
    fn failed(&mut self, error: String, shell: &mut Shell) {
        shell.set_status(error, true);
        self.analysis = None;
    }

    /// Switches every loaded model to the next pooling mode.
    fn next_pooling(&mut self, shell: &mut Shell) {
        let Some(model) = self.base.summary() else {
            return shell.set_status("no model loaded yet", true);
        };
        let current = model.pooling.parse::<PoolingMode>().ok();
        let i = current
            .and_then(|m| PoolingMode::FROM_TOKENS.iter().position(|x| *x == m))
            .map_or(0, |i| (i + 1) % PoolingMode::FROM_TOKENS.len());
        self.set_pooling(PoolingMode::FROM_TOKENS[i], shell);
    }

    /// Switches every loaded model to `next` pooling (a lesson's step, or `p`).
    pub fn set_pooling(&mut self, next: PoolingMode, shell: &mut Shell) {
        if self.base.summary().is_none() {
            return shell.set_status("no model loaded yet", true);
        }
        for slot in [Slot::Base, Slot::Tuned] {
            let Some(s) = self.slot_mut(slot).filter(|s| s.ready()) else {
                continue;
            };
            s.previous_model = s.summary().cloned();
            s.forget();
            let generation = s.generation;
            shell.request(Request::SetPooling {
                slot,
                generation,
                pooling: next.name().to_string(),
            });
        }
        shell.set_status(format!("switching pooling to {next}…"), false);
    }

    /// Moves to the model's next prompt: no prompt, then each named prompt in turn.
    fn next_prompt(&mut self, shell: &mut Shell) {
        let Some(model) = self.base.summary() else {
            return shell.set_status("no model loaded yet", true);
        };
        if model.prompts.is_empty() {
            return shell.set_status("this model has no prompts", true);
        }
        let choices: Vec<Option<String>> = std::iter::once(None)
            .chain(model.prompts.iter().cloned().map(Some))
            .collect();
        let i = choices
            .iter()
            .position(|c| *c == model.prompt)
            .map_or(0, |i| (i + 1) % choices.len());
        self.set_prompt(choices[i].clone(), shell);
    }

    /// Puts the model's prompt `name` (or none) before every sentence (a lesson's step, or `P`).
    pub fn set_prompt(&mut self, name: Option<String>, shell: &mut Shell) {
        let Some(model) = self.base.summary() else {
            return shell.set_status("no model loaded yet", true);
        };
        if let Some(n) = &name
            && !model.prompts.contains(n)
        {
            let has = if model.prompts.is_empty() {
                "it has none".to_string()
            } else {
                format!("its prompts: {}", model.prompts.join(", "))
            };
            return shell.set_status(format!("this model has no prompt `{n}` ({has})"), true);
        }
        self.prompt = name.clone().map_or(Prompt::None, Prompt::Name);
        for slot in [Slot::Base, Slot::Tuned] {
            let Some(s) = self.slot_mut(slot).filter(|s| s.ready()) else {
                continue;
            };
            s.previous_model = s.summary().cloned();
            s.forget();
            let generation = s.generation;
            shell.request(Request::SetPrompt {
                slot,
                generation,
                prompt: self.prompt.clone(),
            });
        }
        shell.set_status(
            match &name {
                Some(n) => format!("prompt `{n}` before every sentence…"),
                None => "no prompt…".to_string(),
            },
            false,
        );
    }

    /// The pair the side-by-side views show: the matrix cell under the cursor (when the matrix
    /// has the focus), else the selected sentence and its nearest neighbour. `None` (and a
    /// message) without two sentences.
    fn selected_pair(&self, shell: &mut Shell) -> Option<((String, String), usize, usize)> {
        let Some(a) = self.analysis.as_ref().filter(|a| a.texts.len() >= 2) else {
            shell.set_status("a side-by-side view needs two sentences", true);
            return None;
        };
        let i = self.selected.min(a.texts.len() - 1);
        let j = if self.focus == Pane::Matrix && self.matrix_col != i {
            self.matrix_col.min(a.texts.len() - 1)
        } else {
            match crate::analysis::similarity::top_neighbours(&a.base.matrix, i, 1).first() {
                Some(&(j, _)) => j,
                None => {
                    shell.set_status("no neighbour to compare with", true);
                    return None;
                }
            }
        };
        Some(((a.texts[i].clone(), a.texts[j].clone()), i, j))
    }

    /// Asks for the similarity under every pooling mode of the matrix cell under the cursor
    /// (when the matrix has the focus) or of the selected sentence and its nearest neighbour.
    pub fn request_pooling_table(&mut self, shell: &mut Shell) {
        let Some((pair, i, j)) = self.selected_pair(shell) else {
            return;
        };
        let generation = self.base.generation;
        shell.request(Request::PoolingTable {
            slot: Slot::Base,
            generation,
            pair,
        });
        shell.set_status(format!("pooling side by side: [{i}] and [{j}]…"), false);
    }

    /// Asks for the selected pair (as for [`Explorer::request_pooling_table`]) under each of the
    /// model's prompts.
    pub fn request_prompt_table(&mut self, shell: &mut Shell) {
        if self.base.summary().is_some_and(|m| m.prompts.is_empty()) {
            return shell.set_status(
                "this model has no prompts (an E5, BGE or Qwen3-Embedding model has)",
                true,
            );
        }
        let Some((pair, i, j)) = self.selected_pair(shell) else {
            return;
        };
        let generation = self.base.generation;
        shell.request(Request::PromptTable {
            slot: Slot::Base,
            generation,
            pair,
        });
        shell.set_status(format!("prompts side by side: [{i}] and [{j}]…"), false);
    }

    /// Asks for the bi-encoder / cross-encoder cost on the current sentences.
    pub fn request_cost(&mut self, shell: &mut Shell) {
        let texts: Vec<String> = self.sentences.clone();
        if texts.len() < 2 {
            return shell.set_status("the cost needs two sentences or more", true);
        }
        if !self.base.ready() {
            return shell.set_status("no model loaded yet", true);
        }
        let generation = self.base.generation;
        let n = texts.len();
        shell.request(Request::Cost {
            slot: Slot::Base,
            generation,
            texts,
            cross_encoder: self.cross_encoder.clone(),
        });
        shell.set_status(
            format!("timing {n} passes against {} pair passes…", n * (n - 1) / 2),
            false,
        );
    }

    /// Carries out an explorer action; false when `action` is not the explorer's.
    pub fn act(&mut self, action: Action, shell: &mut Shell) -> bool {
        let n = self.sentences.len();
        match action {
            Action::NextPane | Action::PrevPane => {
                let i = Pane::ORDER
                    .iter()
                    .position(|p| *p == self.focus)
                    .unwrap_or(0);
                let step = if action == Action::NextPane { 1 } else { 2 };
                self.focus = Pane::ORDER[(i + step) % 3];
            }
            Action::CycleView => {
                if self.tuned.as_ref().is_some_and(|t| t.ready()) {
                    self.view = match self.view {
                        MatrixView::Base => MatrixView::Tuned,
                        MatrixView::Tuned => MatrixView::Difference,
                        MatrixView::Difference => MatrixView::Base,
                    };
                } else {
                    shell.set_status(
                        "no fine-tuned model loaded (L loads one, or l after a run)",
                        true,
                    );
                }
            }
            Action::CloseCompare => self.unload_tuned(shell),
            Action::Add => {
                if n >= MAX_SENTENCES {
                    shell.set_status(
                        format!("the explorer holds at most {MAX_SENTENCES} sentences"),
                        true,
                    );
                } else {
                    self.focus = Pane::Sentences;
                    self.selected = n;
                    shell.edit(EditTarget::NewSentence, "");
                }
            }
            Action::Edit if n > 0 => {
                let text = self.sentences[self.selected].clone();
                shell.edit(EditTarget::Sentence(self.selected), &text);
            }
            Action::Delete if n > 0 => {
                self.sentences.remove(self.selected);
                self.clamp_selection();
                self.refresh(shell);
            }
            Action::MoveUp if self.selected > 0 && self.selected < n => {
                self.sentences.swap(self.selected, self.selected - 1);
                self.selected -= 1;
                self.refresh(shell);
            }
            Action::MoveDown if self.selected + 1 < n => {
                self.sentences.swap(self.selected, self.selected + 1);
                self.selected += 1;
                self.refresh(shell);
            }
            Action::Up => self.selected = self.selected.saturating_sub(1),
            Action::Down => self.selected = (self.selected + 1).min(n.saturating_sub(1)),
            Action::Left => self.matrix_col = self.matrix_col.saturating_sub(1),
            Action::Right => self.matrix_col = (self.matrix_col + 1).min(n.saturating_sub(1)),
            Action::NextPooling => self.next_pooling(shell),
            Action::NextPrompt => self.next_prompt(shell),
            Action::LoadModel => {
                let current = self.model_spec();
                shell.edit(EditTarget::ModelSpec, &current);
            }
            Action::OpenFile => shell.edit(EditTarget::OpenPath, ""),
            Action::SaveFile => shell.edit(EditTarget::SavePath, "sentences.txt"),
            Action::SwitchComponents => {
                let available = self
                    .analysis
                    .as_ref()
                    .and_then(|a| a.pca.as_ref().ok())
                    .map_or(0, PcaBasis::components);
                if available >= 3 {
                    self.axes = match self.axes {
                        MapAxes::Pc1Pc2 => MapAxes::Pc2Pc3,
                        MapAxes::Pc2Pc3 => MapAxes::Pc1Pc2,
                    };
                } else {
                    self.axes = MapAxes::Pc1Pc2;
                    shell.set_status("PC3 needs at least 4 sentences", true);
                }
            }
            Action::Edit | Action::Delete | Action::MoveUp | Action::MoveDown => {} // nothing to act on
            _ => return false,
        }
        true
    }

    /// The input line was accepted (targets of the explorer only).
    pub fn commit(&mut self, target: EditTarget, text: String, shell: &mut Shell) {
        match target {
            EditTarget::NewSentence | EditTarget::Sentence(_) if text.trim().is_empty() => {
                shell.set_status("an empty sentence is not kept (d deletes a sentence)", true);
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
            EditTarget::OpenPath => {
                let path = text.trim();
                match sentence_file::read_list(Path::new(path)) {
                    Ok(lines) => {
                        let n = lines.len();
                        self.replace_sentences(lines, shell);
                        if n <= MAX_SENTENCES {
                            shell.set_status(format!("opened {path} ({n} sentences)"), false);
                        }
                    }
                    Err(e) => shell.set_status(e.to_string(), true),
                }
            }
            EditTarget::SavePath => {
                let path = text.trim();
                match sentence_file::write_list(Path::new(path), &self.sentences) {
                    Ok(()) => shell.set_status(
                        format!("saved {} sentences to {path}", self.sentences.len()),
                        false,
                    ),
                    Err(e) => shell.set_status(e.to_string(), true),
                }
            }
            EditTarget::ModelSpec => {
                if !text.trim().is_empty() {
                    self.load_model(text.trim(), None, shell);
                }
            }
            EditTarget::TunedSpec => {
                if !text.trim().is_empty() {
                    self.load_tuned(text.trim(), shell);
                }
            }
            EditTarget::Field(_) | EditTarget::Corpus(_) => {}
        }
        self.clamp_selection();
        self.refresh(shell);
    }

    /// Replaces the sentences (a file, a demo set), keeping at most [`MAX_SENTENCES`].
    pub fn replace_sentences(&mut self, mut sentences: Vec<String>, shell: &mut Shell) {
        if sentences.len() > MAX_SENTENCES {
            shell.set_status(
                format!(
                    "kept the first {MAX_SENTENCES} of {} sentences: the explorer holds at most \
                     {MAX_SENTENCES} (`sbert-tui encode` embeds any number)",
                    sentences.len()
                ),
                true,
            );
            sentences.truncate(MAX_SENTENCES);
        }
        self.sentences = sentences;
        self.selected = 0;
        self.matrix_col = 0;
        self.refresh(shell);
    }

    fn clamp_selection(&mut self) {
        let n = self.sentences.len();
        self.selected = self.selected.min(n.saturating_sub(1));
        self.matrix_col = self.matrix_col.min(n.saturating_sub(1));
    }

    /// The input line was closed without accepting it.
    pub fn cancel_edit(&mut self, shell: &mut Shell) {
        self.clamp_selection();
        self.refresh(shell);
    }

    /// Pasted lines outside the input line: each non-empty one becomes a sentence.
    pub fn paste_lines(&mut self, text: &str, shell: &mut Shell) {
        let mut lines: Vec<String> = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        if lines.is_empty() {
            return;
        }
        let room = MAX_SENTENCES - self.sentences.len().min(MAX_SENTENCES);
        let pasted = lines.len();
        lines.truncate(room);
        let n = lines.len();
        self.sentences.extend(lines);
        self.selected = self.sentences.len().saturating_sub(1);
        if n < pasted {
            shell.set_status(
                format!(
                    "added {n} of {pasted} pasted sentences: the explorer holds at most {MAX_SENTENCES}"
                ),
                true,
            );
        } else {
            shell.set_status(format!("pasted {n} sentence(s)"), false);
        }
        self.refresh(shell);
    }

    /// A click, resolved from the last frame's layout.
    pub fn click(&mut self, hit: Hit) {
        match hit {
            Hit::Pane(p) => self.focus = p,
            Hit::Sentence(i) => {
                self.focus = Pane::Sentences;
                self.selected = i;
            }
            Hit::Cell(r, c) => {
                self.focus = Pane::Matrix;
                self.selected = r;
                self.matrix_col = c;
            }
        }
    }
}
