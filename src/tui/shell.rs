//! What the screens share: the mode the keys are in (an input line, a pop-up), the status line,
//! and what the app asks of the world (requests for the embedding worker, effects for training
//! and files). The screens (`explorer.rs`, `training/`) act through it; the app routes.

use std::sync::Arc;

use super::corpus_worker::CorpusRequest;
use super::editor::LineEditor;
use super::messages::Request;
use crate::train::config::TrainConfig;
use crate::train::data::Dataset;
use crate::train::rules::Setting;
use crate::train::run::Preloaded;

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
    /// A field of the training form.
    Field(Setting),
    /// A question of the corpus screen.
    Corpus(CorpusInput),
}

/// What an input line of the corpus screen is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorpusInput {
    /// The corpus file.
    Path,
    /// A search query (hits update as it is typed).
    Query,
    /// Community detection: `threshold [min_size]`.
    Communities,
    /// K-means: `k`.
    KMeans,
    /// Where to export the vectors.
    Export,
}

impl CorpusInput {
    /// The key of its prompt in `locales/app.yml`.
    pub fn prompt_key(self) -> &'static str {
        match self {
            CorpusInput::Path => "input.CorpusPath",
            CorpusInput::Query => "input.CorpusQuery",
            CorpusInput::Communities => "input.CorpusCommunities",
            CorpusInput::KMeans => "input.CorpusKMeans",
            CorpusInput::Export => "input.CorpusExport",
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

/// Where the keys go.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Editing(EditTarget, LineEditor),
    Help,
    Demo {
        selected: usize,
    },
    Confirm(Confirm),
    /// The similarity of a pair under every pooling mode (any key closes it).
    Poolings(PoolingView),
    /// A pair under each of the model's prompts (any key closes it).
    Prompts(PromptView),
    /// Bi-encoder against cross-encoder cost, measured (any key closes it).
    Cost(crate::model::cost::CostReport),
    /// One sentence through every step of the model (any key closes it).
    Pipeline(PipelineView),
}

/// A sentence through every step of the model, as the worker computed it.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineView {
    pub text: String,
    pub model: String,
    pub pipeline: crate::model::Pipeline,
}

/// A pair under each of the model's prompts: `matrix[i][j]` is the similarity of the first
/// text under prompt `labels[i]` to the second under `labels[j]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptView {
    pub pair: (String, String),
    pub labels: Vec<String>,
    pub matrix: Vec<Vec<f32>>,
    /// The model's similarity function.
    pub similarity: String,
}

/// A pair's similarity under every pooling mode, as the worker computed it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolingView {
    pub pair: (String, String),
    /// (pooling mode, cosine of the pooled vectors).
    pub rows: Vec<(String, f32)>,
    /// The model's pooling now.
    pub current: String,
    /// Whether the model has a Dense layer (the table is before it).
    pub dense: bool,
}

/// What the app asks of the world besides embeddings.
#[derive(Debug, Clone)]
pub enum Effect {
    StartTraining {
        config: Box<TrainConfig>,
        /// The data files as the form read them (not parsed again).
        preloaded: Preloaded,
    },
    StopTraining {
        keep_checkpoint: bool,
    },
    /// Read a data file for the form (kind, rows, preview).
    InspectData {
        path: String,
        eval: bool,
    },
}

/// A data file read for the form.
pub type DataRead = Result<Arc<Dataset>, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMessage {
    pub text: String,
    pub error: bool,
}

/// The state the screens share.
#[derive(Debug)]
pub struct Shell {
    pub mode: Mode,
    pub status: Option<StatusMessage>,
    requests: Vec<Request>,
    effects: Vec<Effect>,
    corpus: Vec<CorpusRequest>,
}

impl Default for Shell {
    fn default() -> Self {
        Self {
            mode: Mode::Normal,
            status: None,
            requests: Vec::new(),
            effects: Vec::new(),
            corpus: Vec::new(),
        }
    }
}

impl Shell {
    pub fn set_status(&mut self, text: impl Into<String>, error: bool) {
        self.status = Some(StatusMessage {
            text: text.into(),
            error,
        });
    }

    pub fn clear_status(&mut self) {
        self.status = None;
    }

    pub fn request(&mut self, r: Request) {
        self.requests.push(r);
    }

    pub fn effect(&mut self, e: Effect) {
        self.effects.push(e);
    }

    /// A request for the corpus worker.
    pub fn corpus_request(&mut self, r: CorpusRequest) {
        self.corpus.push(r);
    }

    pub fn take_corpus_requests(&mut self) -> Vec<CorpusRequest> {
        std::mem::take(&mut self.corpus)
    }

    /// Opens the input line for `target`, starting with `text`.
    pub fn edit(&mut self, target: EditTarget, text: &str) {
        self.mode = Mode::Editing(target, LineEditor::new(text));
    }

    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.requests)
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }
}
