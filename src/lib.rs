//! sbert-tui: explore sentence embeddings and fine-tune sentence-embedding models in the terminal.
//!
//! - [`model`]: text to vectors (the sentence-transformers folder format, encoder, pooling).
//! - [`train`]: fine-tuning (data, losses, the run, evaluators, checkpoints).
//! - [`analysis`]: similarity matrices, neighbours and PCA, computed from vectors.
//! - [`lessons`]: workshop lessons (English and Chinese) read from TOML files.
//! - [`sentence_file`]: reading and writing sentence files (the command line and the UI).
//! - [`text`]: text for display (control characters, widths, clipping).
//! - [`cli`]: the command line and the headless commands.
//! - [`tui`]: the terminal UI (knows the model only through its messages).

pub mod analysis;
pub mod cli;
pub mod corpus;
#[doc(hidden)]
pub mod fuzzing;
pub mod lessons;
pub mod model;
pub mod sentence_file;
pub mod text;
pub mod train;
pub mod tui;

// The interface's words in English and Chinese (`locales/app.yml`), looked up with an explicit
// language through `tui::i18n` (English when a Chinese text is missing).
// `build.rs` rebuilds the crate when `locales/` changes.
rust_i18n::i18n!("locales", fallback = "en");

/// Makes glibc's allocator keep freed memory for reuse. candle allocates a fresh buffer for every
/// intermediate tensor; by default glibc maps each large one (over 128 KiB) with mmap and unmaps
/// it on free, so every operation paid for page faults on fresh zeroed pages (about a fifth of a
/// training step in a profile). Served from the heap and kept, they are reused. One arena for all
/// threads: the encoder's pass runs on a thread of the pool, and with an arena of its own the
/// memory each thread keeps added up (all-mpnet-base-v2 encoding: 1,232 MB peak, 865 MB with
/// one; no change in speed). Call once, early.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
