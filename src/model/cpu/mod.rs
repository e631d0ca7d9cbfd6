//! The CPU's fast paths: vectorised kernels (`kernels.rs`) shared by every family's fused
//! inference and hand-written training passes (`bert/fused.rs`, `bert/backprop.rs`) and by the
//! optimizer, and the int8 products of `--precision int8` (`quant.rs`).

pub mod kernels;
pub mod quant;
