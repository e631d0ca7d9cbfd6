//! sbert-tui: explore sentence embeddings and fine-tune sentence-embedding models in the terminal.
//!
//! - [`model`]: text to vectors (the sentence-transformers folder format, encoder, pooling).
//! - [`analysis`]: similarity matrices and other numbers computed from vectors.
//! - [`cli`]: the headless commands.
//! - [`tui`]: the terminal UI (knows the model only through its messages).

pub mod analysis;
pub mod cli;
pub mod model;
pub mod text;
pub mod train;
pub mod tui;
