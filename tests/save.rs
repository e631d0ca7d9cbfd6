//! Saving: the classic sentence-transformers layout, read back as Python reads it, and atomic
//! replacement (a failed save leaves the previous model intact).

mod common;

use common::*;
use sbert_tui::model::save::{save, write_folder_atomically, write_model};
use sbert_tui::model::{LoadOptions, SentenceEncoder};
use serde_json::Value;

const TEXTS: [&str; 3] = ["A man is playing a guitar.", "机器学习", ""];

fn embed(enc: &SentenceEncoder) -> Vec<Vec<f32>> {
    enc.encode(&TEXTS, 8, &mut |_, _| {}).unwrap()
}

fn read(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_saved_model_loads_back_with_identical_embeddings_in_the_classic_layout() {
    let enc = tiny();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("saved");
    save(&enc, &out, Some("# card\n")).unwrap();

    let back = SentenceEncoder::load(&out, &LoadOptions::default()).unwrap();
    assert_eq!(
        embed(&back),
        embed(&enc),
        "bit-identical after a round trip"
    );
    assert!(back.info().unexpected_weights.is_empty());

    // modules.json with the classic type names, as sentence-transformers 2.x wrote them.
    let modules = read(&out.join("modules.json"));
    let types: Vec<&str> = modules
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "sentence_transformers.models.Transformer",
            "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Dense",
            "sentence_transformers.models.Normalize"
        ]
    );
    let paths: Vec<&str> = modules
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["", "1_Pooling", "2_Dense", "3_Normalize"]);
    // The classic pooling flags.
    let pooling = read(&out.join("1_Pooling/config.json"));
    assert_eq!(pooling["word_embedding_dimension"], 32);
    assert_eq!(pooling["pooling_mode_mean_tokens"], true);
    assert_eq!(pooling["pooling_mode_cls_token"], false);
    assert!(pooling.get("pooling_mode").is_none());
    let sbert = read(&out.join("sentence_bert_config.json"));
    assert_eq!(sbert["max_seq_length"], 64);
    assert_eq!(sbert["do_lower_case"], false);
    let dense = read(&out.join("2_Dense/config.json"));
    assert_eq!(
        dense["activation_function"],
        "torch.nn.modules.activation.Tanh"
    );
    assert!(out.join("3_Normalize").is_dir());
    assert!(out.join("tokenizer.json").is_file() && out.join("config.json").is_file());
    assert_eq!(
        std::fs::read_to_string(out.join("README.md")).unwrap(),
        "# card\n"
    );

    // safetensors with the metadata transformers looks for, and PyTorch's names.
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
    let names: Vec<String> = meta.tensors().keys().cloned().collect();
    assert!(names.contains(&"encoder.layer.1.attention.self.query.weight".to_string()));
    assert!(
        names.contains(&"pooler.dense.weight".to_string()),
        "the pooler is kept for Python"
    );
    let dense_bytes = std::fs::read(out.join("2_Dense/model.safetensors")).unwrap();
    let dense = safetensors::SafeTensors::deserialize(&dense_bytes).unwrap();
    let mut dn: Vec<String> = dense.names().into_iter().map(str::to_string).collect();
    dn.sort();
    assert_eq!(dn, ["linear.bias", "linear.weight"]);
}

#[test]
fn a_save_that_fails_midway_leaves_the_previous_model_intact() {
    let enc = tiny();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    save(&enc, &out, None).unwrap();
    let before = embed(&SentenceEncoder::load(&out, &LoadOptions::default()).unwrap());
    let files_before = std::fs::read_dir(&out).unwrap().count();

    // Another model (the XLM-R fixture) is being saved over it and the write fails after three files.
    let other = SentenceEncoder::load(&fixture("tiny-xlmr-st"), &LoadOptions::default()).unwrap();
    for fail_after in [0, 1, 3, 6] {
        let err = write_folder_atomically(&out, &[], Some(fail_after), |w| {
            write_model(&other, w, None)
        })
        .unwrap_err();
        assert!(err.to_string().contains("simulated failure"), "{err}");
        let after = embed(&SentenceEncoder::load(&out, &LoadOptions::default()).unwrap());
        assert_eq!(after, before, "fail after {fail_after} files");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), files_before);
    }
    // Nothing is left behind beside it.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("model")]);

    // A save that completes replaces it, keeping the entries asked for.
    std::fs::create_dir(out.join("checkpoints")).unwrap();
    write_folder_atomically(&out, &["checkpoints"], None, |w| {
        write_model(&other, w, None)
    })
    .unwrap();
    assert!(out.join("checkpoints").is_dir());
    assert_ne!(
        embed(&SentenceEncoder::load(&out, &LoadOptions::default()).unwrap()),
        before
    );
}
