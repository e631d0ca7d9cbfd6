//! What the fuzz targets run (`fuzz/fuzz_targets/`), shared with the test that replays their
//! corpus (`tests/fuzz_corpus.rs`): each entry point takes arbitrary bytes and must return,
//! whatever they hold, without panicking. Errors are the expected answer to bad input.

use std::path::Path;

use crate::model::{LoadOptions, SentenceEncoder};
use crate::sentence_file::{self, InputFormat};
use crate::train::data::{self, Format};

/// A training or evaluation data file: the first byte picks the format, the rest is the file.
pub fn data_file(bytes: &[u8]) {
    let Some((&pick, body)) = bytes.split_first() else {
        return;
    };
    let (name, format) = match pick % 3 {
        0 => ("fuzz.csv", Format::Csv),
        1 => ("fuzz.tsv", Format::Tsv),
        _ => ("fuzz.jsonl", Format::Jsonl),
    };
    if let Ok(d) = data::parse(Path::new(name), body, format) {
        // What the form shows of a file it has read.
        for e in d.examples.iter().take(3) {
            let _ = e.texts();
        }
        for loss in d.kind.losses() {
            crate::train::rules::check_data(d.kind, &d.path, *loss).expect("a loss that fits");
        }
    }
}

/// A sentence file, read as `encode` reads it (plain and JSON Lines) and as the explorer does.
pub fn sentence_file(bytes: &[u8]) {
    let _ = sentence_file::parse_list("fuzz.txt", bytes);
    let _ = sentence_file::parse_sentences("fuzz.txt", bytes, InputFormat::Text);
    let _ = sentence_file::parse_sentences("fuzz.jsonl", bytes, InputFormat::Jsonl);
}

/// The JSON files of a model folder, in the order the fuzz input gives them (parts separated by
/// a 0xFF byte, which UTF-8 never holds). A missing part keeps the tiny fixture's file.
pub const MODEL_FILES: [&str; 9] = [
    "modules.json",
    "config.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "2_Dense/config.json",
    "3_Normalize/config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "config_sentence_transformers.json",
];

/// The tiny fixture model's folder, for the weights and the files the input leaves out.
pub fn tiny_model() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert-st")
}

/// A model folder whose JSON files come from `bytes` (see [`MODEL_FILES`]) and whose weights are
/// the tiny fixture model's, written into `dir` and loaded; when it loads, two sentences are
/// embedded.
pub fn model_folder(bytes: &[u8], dir: &Path) {
    let tiny = tiny_model();
    let mut parts = bytes.split(|&b| b == 0xFF);
    for name in MODEL_FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let content = match parts.next() {
            Some(p) => p.to_vec(),
            None => std::fs::read(tiny.join(name)).unwrap_or_default(),
        };
        std::fs::write(&path, content).expect("a scratch folder");
    }
    for weights in ["model.safetensors", "2_Dense/model.safetensors"] {
        let path = dir.join(weights);
        if !path.exists() {
            std::fs::copy(tiny.join(weights), &path).expect("the tiny model's weights");
        }
    }
    if let Ok(enc) = SentenceEncoder::load(dir, &LoadOptions::default()) {
        let _ = enc.encode(&["a sentence", ""], 2, &mut |_, _| {});
    }
}

/// The tiny fixture model's JSON files as one fuzz input (the seed of the `model_folder`
/// corpus).
pub fn tiny_model_input() -> Vec<u8> {
    let tiny = tiny_model();
    let files: Vec<Vec<u8>> = MODEL_FILES
        .iter()
        .map(|n| std::fs::read(tiny.join(n)).unwrap_or_default())
        .collect();
    files.join(&0xFF)
}
