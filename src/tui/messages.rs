//! What the UI and the embedding worker say to each other. Everything here is owned, plain
//! data: the UI never sees a tensor.

/// From the UI to the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Load a model (folder or Hub id), optionally with a pooling override.
    Load {
        generation: u64,
        spec: String,
        pooling: Option<String>,
    },
    /// Change the loaded model's pooling.
    SetPooling { generation: u64, pooling: String },
    /// Embed these texts with the model of `generation`.
    Embed {
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
}

/// One embedded text.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub text: String,
    pub vector: Vec<f32>,
    /// Tokens after truncation, special tokens included.
    pub tokens: usize,
    /// True when the text was longer than the model's max sequence length.
    pub truncated: bool,
}

/// From the worker to the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    Progress {
        generation: u64,
        message: String,
    },
    Loaded {
        generation: u64,
        model: ModelSummary,
    },
    LoadFailed {
        generation: u64,
        error: String,
    },
    Embedded {
        id: u64,
        generation: u64,
        items: Vec<Embedded>,
        millis: f64,
    },
    EmbedFailed {
        id: u64,
        error: String,
    },
}
