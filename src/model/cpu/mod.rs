//! The CPU's fast paths: vectorised kernels (`kernels.rs`) shared by every family's fused
//! inference and hand-written training passes (`bert/fused.rs`, `bert/backprop.rs`) and by the
//! optimizer; float32 products on weights packed at load (`packed.rs`); the int8 products of
//! `--precision int8` (`quant.rs`) and the bf16 ones of `--precision bf16` (`bf16.rs`); the
//! linear layer's product and the row operations (norms, softmax, gated activations, rotary
//! positions, gathering the real tokens) with their backward passes as candle operations, for
//! the families trained through candle's autograd (`autograd.rs`).

#[cfg(target_arch = "x86_64")]
pub mod amx;
pub mod autograd;
pub mod bf16;
pub mod kernels;
pub mod packed;
pub mod prepared;
pub mod quant;
