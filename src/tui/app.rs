//! The explorer's state and how it changes: keys, mouse, paste and worker messages in; requests
//! for the worker out. Pure and synchronous, so tests drive it by hand.

use std::collections::HashMap;
use std::path::Path;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use crate::analysis::pca::{PcaBasis, PcaError};
use crate::analysis::similarity::cosine_matrix;
use crate::model::PoolingMode;

use super::demo::DEMO_SETS;
use super::editor::LineEditor;
use super::keys::{self, Action, Context};
use super::messages::{Embedded, ModelSummary, Request, WorkerEvent};
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

/// What the input line is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditTarget {
    NewSentence,
    Sentence(usize),
    OpenPath,
    SavePath,
    ModelSpec,
}

impl EditTarget {
    pub fn prompt(&self) -> &'static str {
        match self {
            EditTarget::NewSentence => "new sentence",
            EditTarget::Sentence(_) => "edit sentence",
            EditTarget::OpenPath => "open file",
            EditTarget::SavePath => "save to file",
            EditTarget::ModelSpec => "model (folder or Hub id)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Editing(EditTarget, LineEditor),
    Help,
    Demo { selected: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ModelState {
    Loading { spec: String, message: String },
    Ready(ModelSummary),
    Failed { spec: String, error: String },
}

/// Everything the panes show, computed once per change of the sentences' vectors.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub texts: Vec<String>,
    pub vectors: Vec<Vec<f32>>,
    /// Tokens per text and whether it was cut at the model's max sequence length.
    pub tokens: Vec<(usize, bool)>,
    pub matrix: Vec<Vec<f32>>,
    pub pca: Result<PcaBasis, PcaError>,
    /// Coordinates of each text in the PCA basis (empty without a basis).
    pub coords: Vec<Vec<f64>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMessage {
    pub text: String,
    pub error: bool,
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
    pub model: ModelState,
    /// Changes whenever the model or its pooling changes; older results are ignored.
    pub generation: u64,
    pub analysis: Option<Analysis>,
    pub status: Option<StatusMessage>,
    pub pending: bool,
    pub last_embed_ms: Option<f64>,
    pub color: bool,
    pub quit: bool,
    /// Last known terminal size, for mouse hit tests.
    pub size: Rect,
    /// Results that arrived too late to matter (for tests and diagnostics).
    pub dropped_results: usize,
    cache: HashMap<String, Embedded>,
    last_request: u64,
    requested: Vec<String>,
    previous_model: Option<ModelSummary>,
    outbox: Vec<Request>,
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
            model: ModelState::Loading {
                spec: String::new(),
                message: "starting…".into(),
            },
            generation: 0,
            analysis: None,
            status: None,
            pending: false,
            last_embed_ms: None,
            color,
            quit: false,
            size: Rect::default(),
            dropped_results: 0,
            cache: HashMap::new(),
            last_request: 0,
            requested: Vec::new(),
            previous_model: None,
            outbox: Vec::new(),
        }
    }

    /// Requests for the worker, in order; empties the outbox.
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.outbox)
    }

    pub fn cached(&self, text: &str) -> bool {
        self.cache.contains_key(text)
    }

    /// Starts loading a model; everything embedded so far is forgotten.
    pub fn load_model(&mut self, spec: &str, pooling: Option<String>) {
        self.generation += 1;
        self.cache.clear();
        self.pending = false;
        // If the load fails, the worker keeps the model it had; so does the UI.
        self.previous_model = match &self.model {
            ModelState::Ready(m) => Some(m.clone()),
            _ => None,
        };
        self.model = ModelState::Loading {
            spec: spec.to_string(),
            message: format!("loading {spec}…"),
        };
        self.outbox.push(Request::Load {
            generation: self.generation,
            spec: spec.to_string(),
            pooling,
        });
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

    /// Asks for the vectors that are missing, or rebuilds the analysis when none are.
    fn refresh(&mut self) {
        let ModelState::Ready(_) = self.model else {
            return;
        };
        let texts = self.texts();
        let mut missing: Vec<String> = Vec::new();
        for t in &texts {
            if !self.cache.contains_key(t) && !missing.contains(t) {
                missing.push(t.clone());
            }
        }
        if !missing.is_empty() {
            if self.pending && missing == self.requested {
                return; // already asked
            }
            self.last_request += 1;
            self.pending = true;
            self.requested = missing.clone();
            self.outbox.push(Request::Embed {
                id: self.last_request,
                generation: self.generation,
                texts: missing,
            });
            return;
        }
        self.pending = false;
        if self.analysis.as_ref().is_some_and(|a| a.texts == texts) {
            return;
        }
        self.analysis = Some(self.analyse(texts));
        // Typing leaves a trail of prefixes in the cache; keep it bounded.
        if self.cache.len() > 512 {
            let keep: std::collections::HashSet<String> = self.texts().into_iter().collect();
            self.cache.retain(|k, _| keep.contains(k));
        }
    }

    fn analyse(&self, texts: Vec<String>) -> Analysis {
        let items: Vec<&Embedded> = texts.iter().map(|t| &self.cache[t]).collect();
        let vectors: Vec<Vec<f32>> = items.iter().map(|e| e.vector.clone()).collect();
        let tokens = items.iter().map(|e| (e.tokens, e.truncated)).collect();
        let matrix = cosine_matrix(&vectors);
        let pca = PcaBasis::fit(&vectors);
        let coords = pca
            .as_ref()
            .map(|b| b.project(&vectors))
            .unwrap_or_default();
        Analysis {
            texts,
            vectors,
            tokens,
            matrix,
            pca,
            coords,
        }
    }

    pub fn on_worker(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Progress {
                generation,
                message,
            } if generation == self.generation => {
                if let ModelState::Loading { message: m, .. } = &mut self.model {
                    *m = message;
                }
            }
            WorkerEvent::Loaded { generation, model } if generation == self.generation => {
                self.status = None;
                self.model = ModelState::Ready(model);
                self.previous_model = None;
                self.refresh();
            }
            WorkerEvent::LoadFailed { generation, error } if generation == self.generation => {
                match self.previous_model.take() {
                    // A pooling change or another model was refused: the old one is still loaded.
                    Some(prev) => {
                        self.set_status(format!("{error} (still using {})", prev.name), true);
                        self.model = ModelState::Ready(prev);
                        self.refresh();
                    }
                    None => {
                        self.set_status(error.clone(), true);
                        let spec = match &self.model {
                            ModelState::Loading { spec, .. } => spec.clone(),
                            _ => String::new(),
                        };
                        self.model = ModelState::Failed { spec, error };
                    }
                }
            }
            WorkerEvent::Embedded {
                id,
                generation,
                items,
                millis,
            } => {
                if generation != self.generation || id != self.last_request {
                    self.dropped_results += 1;
                    return;
                }
                for item in items {
                    self.cache.insert(item.text.clone(), item);
                }
                self.pending = false;
                self.last_embed_ms = Some(millis);
                self.refresh();
            }
            WorkerEvent::EmbedFailed { id, error } if id == self.last_request => {
                self.pending = false;
                self.set_status(error, true);
            }
            _ => {} // an event about an older generation
        }
    }

    fn context(&self) -> Context {
        match self.mode {
            Mode::Editing(..) => Context::Editing,
            _ => self.focus.context(),
        }
    }

    pub fn on_key(&mut self, ev: KeyEvent) {
        match &mut self.mode {
            Mode::Help => {
                if keys::is_ctrl_c(&ev) {
                    self.quit = true;
                }
                self.mode = Mode::Normal;
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
                Some(Action::Quit) => self.quit = true,
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

    fn act(&mut self, action: Action) {
        let n = self.sentences.len();
        match action {
            Action::Quit => self.quit = true,
            Action::NextPane | Action::PrevPane => {
                let i = Pane::ORDER
                    .iter()
                    .position(|p| *p == self.focus)
                    .unwrap_or(0);
                let step = if action == Action::NextPane { 1 } else { 2 };
                self.focus = Pane::ORDER[(i + step) % 3];
            }
            Action::Help => self.mode = Mode::Help,
            Action::DemoSets => self.mode = Mode::Demo { selected: 0 },
            Action::Add => {
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
                let current = match &self.model {
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
            _ => {}
        }
    }

    fn next_pooling(&mut self) {
        let ModelState::Ready(model) = &self.model else {
            return self.set_status("no model loaded yet", true);
        };
        let current = model.pooling.parse::<PoolingMode>().ok();
        let i = current
            .and_then(|m| PoolingMode::ALL.iter().position(|x| *x == m))
            .map_or(0, |i| (i + 1) % PoolingMode::ALL.len());
        let next = PoolingMode::ALL[i];
        self.previous_model = Some(model.clone());
        self.generation += 1;
        self.cache.clear();
        self.pending = false;
        self.set_status(format!("switching pooling to {next}…"), false);
        self.outbox.push(Request::SetPooling {
            generation: self.generation,
            pooling: next.name().to_string(),
        });
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
        if ev.kind != MouseEventKind::Down(MouseButton::Left) || self.mode != Mode::Normal {
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
