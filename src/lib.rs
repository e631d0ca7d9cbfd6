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

/// Tunes the process for this engine's threads and allocations ([`tune_allocator`], and candle's
/// thread pool below). Call once, early, before other threads start.
///
/// candle runs its element-wise operations (from 65,536 values) on a pool of its own, beside the
/// rayon pool our kernels run on. The families that compose candle's operations (T5,
/// ModernBERT, Qwen3) alternate between the two thousands of times a pass, and each hand-over
/// woke a sleeping thread and waited for it. With candle's pool at one thread (the calling one),
/// on two cores, alternating runs of `cargo bench --bench train` (batch 16):
/// ModernBERT-base sized 0.34-0.36 → 0.41-0.44 steps/s, Sentence-T5-base 0.56-0.57 → 0.61-0.64,
/// Qwen3-0.6B 0.107 → 0.120; encoding and the BERT family (whose passes are our kernels) the
/// same either way. Before, its threads spun for 25,000 rounds after each task and took a core
/// from the kernels (Sentence-T5-base sized, float32 101 → 112 sentences/s with the spinning
/// off), hence the spin limit 0 should a user give it more threads. `CANDLE_NUM_THREADS` and
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT` set by the user are kept.
pub fn tune_runtime() {
    tune_allocator();
    for (name, value) in [
        ("CANDLE_NUM_THREADS", "1"),
        ("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0"),
    ] {
        if std::env::var_os(name).is_none() {
            // SAFETY: called once at start-up, before any other thread reads the environment.
            unsafe { std::env::set_var(name, value) };
        }
    }
}

/// Makes glibc's allocator keep freed memory for reuse. candle allocates a fresh buffer for every
/// intermediate tensor; by default glibc maps each large one (over 128 KiB) with mmap and unmaps
/// it on free, so every operation paid for page faults on fresh zeroed pages (about a fifth of a
/// training step in a profile). Served from the heap and kept, they are reused. Each thread keeps
/// glibc's arena of its own: with one arena for all, the threads that tokenise in parallel queue
/// for its lock (5,000 sentences took 175 ms on 2 threads instead of 65, and encoding on a GPU
/// with a 16-core host ran at a third of its speed). The encoder's fused pass always runs on the
/// pool's first thread (`Bert::forward`), so only that thread's arena holds its buffers, and
/// what loading a model freed is given back ([`release_freed_memory`]). Call once, early
/// (through [`tune_runtime`]).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Freed memory at the top of the heap beyond which glibc gives it back ([`tune_allocator`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 1 << 30;

/// How many [`KeepFreedMemory`] are held.
static KEEPERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// While one is held, the allocator gives no freed memory back to the system on its own: for a
/// loop whose every round reaches the same peak, a training run. candle's autograd (the families
/// without a hand-written backward pass) holds more than the gigabyte [`tune_allocator`] keeps
/// between the forward pass and the backward pass; then every step gave it back and faulted it
/// in again, zeroed (ModernBERT-base sized: 110,000 page faults a step, 0.28-0.31 → 0.33
/// steps/s). When the last is dropped the usual threshold returns and what is free goes back.
pub struct KeepFreedMemory(());

impl KeepFreedMemory {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        if KEEPERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: mallopt only sets an allocator parameter (it takes the arena's lock); -1
            // turns trimming off.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
            }
        }
        Self(())
    }
}

impl Drop for KeepFreedMemory {
    fn drop(&mut self) {
        if KEEPERS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: as in `new`.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            }
            release_freed_memory();
        }
    }
}

/// Gives the memory freed so far back to the system (glibc keeps up to a gigabyte of it per
/// arena, [`tune_allocator`]); for after a one-time peak such as loading a model.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
