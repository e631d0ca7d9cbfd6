//! What the UI and the embedding worker say to each other. Everything here is owned, plain
//! data: the UI never sees a tensor.

pub use crate::model::Prompt;

/// Which of the two models a message is about: the one being explored, or a fine-tuned one
/// shown next to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    Base,
    Tuned,
}

/// From the UI to the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Load a model (folder or Hub id), optionally with a pooling override, and the prompt its
    /// texts get.
    Load {
        slot: Slot,
        generation: u64,
        spec: String,
        pooling: Option<String>,
        prompt: Prompt,
    },
    /// Change a loaded model's pooling.
    SetPooling {
        slot: Slot,
        generation: u64,
        pooling: String,
    },
    /// Change the prompt a loaded model's texts get.
    SetPrompt {
        slot: Slot,
        generation: u64,
        prompt: Prompt,
    },
    /// Forget a model.
    Unload { slot: Slot },
    /// Two texts under each of the model's prompts (and none).
    PromptTable {
        slot: Slot,
        generation: u64,
        pair: (String, String),
    },
    /// Time N bi-encoder passes against the N(N-1)/2 passes of a cross-encoder; with a
    /// sentence-transformers CrossEncoder folder, run it too and keep its scores.
    Cost {
        slot: Slot,
        generation: u64,
        texts: Vec<String>,
        cross_encoder: Option<String>,
    },
    /// The similarity of two texts under every pooling mode (one transformer pass).
    PoolingTable {
        slot: Slot,
        generation: u64,
        pair: (String, String),
    },
    /// One text through every step of the model: tokens, token vectors, pooling weights, each
    /// module's output.
    Pipeline {
        slot: Slot,
        generation: u64,
        text: String,
    },
    /// One text encoded `copies` times with dropout on (SimCSE's noise), masks from `seed`.
    Dropout {
        slot: Slot,
        generation: u64,
        text: String,
        copies: usize,
        seed: u64,
    },
    /// Embed these texts with the model of `generation`.
    Embed {
        slot: Slot,
        id: u64,
        generation: u64,
        texts: Vec<String>,
    },
}

/// A loaded model, as the status bar shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    pub name: String,
    pub device: String,
    pub dim: usize,
    pub pooling: String,
    pub max_seq_length: usize,
    pub normalize: bool,
    /// How the model compares vectors (`cosine`, `dot`, `euclidean`, `manhattan`).
    pub similarity: String,
    /// The names of the model's prompts.
    pub prompts: Vec<String>,
    /// The prompt its texts get now (its name, or the text itself), if any.
    pub prompt: Option<String>,
}

/// A text's evaluation-mode vector and its copies with dropout on.
#[derive(Debug, Clone, PartialEq)]
pub struct DropoutCloud {
    pub eval: Vec<f32>,
    pub copies: Vec<Vec<f32>>,
}

/// One embedded text.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub text: String,
    pub vector: Vec<f32>,
    pub tokens: TokenCount,
}

/// What the tokenizer made of one text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCount {
    /// Tokens after truncation, special tokens included.
    pub total: usize,
    /// True when the text was longer than the model's max sequence length.
    pub truncated: bool,
    /// Tokens other than the special ones (`[CLS]`, `[SEP]`, ...), unknown ones included.
    pub content: usize,
    /// Pieces the model's vocabulary has no entry for (`[UNK]`).
    pub unknown: usize,
}

impl TokenCount {
    /// A text of `total` tokens, nothing cut, nothing unknown (two of them special).
    pub fn plain(total: usize) -> Self {
        Self {
            total,
            truncated: false,
            content: total.saturating_sub(2),
            unknown: 0,
        }
    }

    /// True when at least half of the text's tokens are unknown to the model: its vector says
    /// little about the text (a script the vocabulary lacks, say).
    pub fn mostly_unknown(&self) -> bool {
        self.unknown > 0 && self.unknown * 2 >= self.content
    }
}

/// From the worker to the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    Progress {
        slot: Slot,
        generation: u64,
        message: String,
    },
    Loaded {
        slot: Slot,
        generation: u64,
        model: ModelSummary,
    },
    LoadFailed {
        slot: Slot,
        generation: u64,
        error: String,
    },
    Embedded {
        slot: Slot,
        id: u64,
        generation: u64,
        items: Vec<Embedded>,
        millis: f64,
    },
    EmbedFailed {
        slot: Slot,
        id: u64,
        error: String,
    },
    /// The answer to [`Request::PromptTable`]: the prompt labels and the similarity of the
    /// first text under prompt `i` to the second under prompt `j`.
    PromptTable {
        slot: Slot,
        generation: u64,
        pair: (String, String),
        table: Result<(Vec<String>, Vec<Vec<f32>>), String>,
    },
    /// The answer to [`Request::Cost`].
    Cost {
        slot: Slot,
        generation: u64,
        report: Result<crate::model::cost::CostReport, String>,
    },
    /// The answer to [`Request::Pipeline`].
    Pipeline {
        slot: Slot,
        generation: u64,
        text: String,
        pipeline: Result<crate::model::Pipeline, String>,
    },
    /// The answer to [`Request::Dropout`]: the evaluation-mode vector and the dropout copies.
    Dropout {
        slot: Slot,
        generation: u64,
        text: String,
        cloud: Result<DropoutCloud, String>,
    },
    /// The answer to [`Request::PoolingTable`]: (pooling mode, similarity) rows, or why not.
    PoolingTable {
        slot: Slot,
        generation: u64,
        pair: (String, String),
        rows: Result<Vec<(String, f32)>, String>,
        /// The model has a Dense layer after pooling (the table is of the pooled vectors).
        dense: bool,
    },
}
