//! Errors of the model layer, tagged by the stage that failed.

use std::path::PathBuf;

/// What went wrong while finding, reading or running a model.
///
/// Every variant names the file or the field involved so that the binary can print it as one
/// readable line.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model folder `{}` does not exist", .0.display())]
    MissingFolder(PathBuf),

    #[error("`{}` is not a folder (pass the folder that holds config.json)", .0.display())]
    NotAFolder(PathBuf),

    #[error("{}: missing {what}", .folder.display())]
    MissingFile { folder: PathBuf, what: String },

    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: invalid JSON: {source}", .path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{}: {message}", .path.display())]
    Config { path: PathBuf, message: String },

    #[error("{}: cannot load weights: {message}", .path.display())]
    Weights { path: PathBuf, message: String },

    #[error("{}: cannot load tokenizer: {message}", .path.display())]
    Tokenizer { path: PathBuf, message: String },

    #[error("tokenization failed: {0}")]
    Tokenize(String),

    #[error("device: {0}")]
    Device(String),

    #[error("{0}")]
    Source(String),

    #[error(
        "the model gives non-finite values (NaN or infinity) for text {} of {total}: its weights \
         are not usable (a training run that diverged?)",
        .index + 1
    )]
    NonFinite { index: usize, total: usize },

    #[error("invalid argument: {0}")]
    Invalid(String),

    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Write {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ModelError::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Reads and parses a JSON file, naming the file in either error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}
