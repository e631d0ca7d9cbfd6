//! Replays what the fuzzers found (`fuzz/`): every input of each target's corpus and seeds, and
//! every crash once found (`fuzz/regressions/`), goes through the same entry point the fuzz
//! target calls, and must come back without a panic. `fuzz/README.md` says how to fuzz.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use sbert_tui::fuzzing;

/// Panics anywhere in the process, caught or not (as libFuzzer counts them): one inside a
/// library's worker thread was once caught further up, and still printed its message.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files: Vec<PathBuf> = ["corpus", "seeds", "regressions"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(root.join(d).join(target))
                .into_iter()
                .flatten()
        })
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: impl Fn(&[u8])) {
    count_panics();
    let files = inputs(target);
    assert!(!files.is_empty(), "no inputs for {target}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&bytes)));
        assert!(caught.is_ok(), "{target}: {} panicked", f.display());
        assert_eq!(
            PANICS.load(Ordering::SeqCst),
            0,
            "{target}: {} panicked",
            f.display()
        );
    }
    eprintln!("{target}: {} inputs", files.len());
}

#[test]
fn data_file_inputs() {
    replay("data_file", fuzzing::data_file);
}

#[test]
fn sentence_file_inputs() {
    replay("sentence_file", fuzzing::sentence_file);
}

#[test]
fn model_folder_inputs() {
    let dir = tempfile::tempdir().unwrap();
    replay("model_folder", |b| fuzzing::model_folder(b, dir.path()));
}

#[test]
fn the_model_seed_is_the_tiny_model_and_it_loads() {
    count_panics();
    // The seed must be a working model, or the fuzzer starts from an error path.
    let dir = tempfile::tempdir().unwrap();
    fuzzing::model_folder(&fuzzing::tiny_model_input(), dir.path());
    let enc = sbert_tui::model::SentenceEncoder::load(dir.path(), &Default::default()).unwrap();
    assert_eq!(enc.info().embedding_dim, 16);
}
