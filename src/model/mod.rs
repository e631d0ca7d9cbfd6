//! Text to vectors: the sentence-transformers folder format, the encoder, pooling, Dense and
//! Normalize, model sources and devices. Knows nothing about terminals.

pub mod atomic;
pub mod bert;
pub mod cost;
pub mod cpu;
pub mod cross_encoder;
pub mod dense;
pub mod device;
pub mod encoder;
pub mod error;
pub mod families;
pub mod folder;
pub mod guard;
pub mod layers;
pub mod modernbert;
pub mod pooling;
pub mod qwen3;
pub mod save;
pub mod source;
pub mod t5;
pub mod tokenize;
pub mod transformer;
pub mod vocab;
pub mod weights;

pub use device::DeviceChoice;
pub use encoder::{
    LoadOptions, ModelInfo, Pipeline, PipelineToken, Precision, Prompt, SentenceEncoder,
};
pub use error::{ModelError, Result};
pub use layers::{DropoutRng, Lookup, Lookups, Mode};
pub use pooling::{PoolingMode, PoolingSpec};
pub use source::{DEFAULT_MODEL, SourceOptions};

/// Finds a model by `--model` (folder or Hub id) and loads it.
pub fn load(spec: &str, source: &SourceOptions, options: &LoadOptions) -> Result<SentenceEncoder> {
    let resolved = source::resolve(spec, source)?;
    SentenceEncoder::load(&resolved.folder, options)
}
