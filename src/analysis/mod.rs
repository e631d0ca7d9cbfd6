//! Numbers computed from embeddings: similarity matrices, neighbours, PCA. Knows nothing about
//! models or terminals; works on plain `f32` vectors.

pub mod ann;
pub mod embeddings;
pub mod export;
pub mod halfscan;
pub mod hard_negatives;
pub mod maps;
pub mod mining;
pub mod pca;
pub mod search;
mod simd;
pub mod similarity;
