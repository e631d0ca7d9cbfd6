//! A model folder's JSON files (modules, configs, pooling, Dense, tokenizer) around the tiny
//! model's weights: `sbert_tui::fuzzing::model_folder`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("a scratch folder"));
    sbert_tui::fuzzing::model_folder(data, dir.path());
});
