//! Saving: the classic sentence-transformers layout, read back as Python reads it, and atomic
//! replacement (a failed save leaves the previous model intact; a killed one is finished or
//! undone by the next writer, and nothing is left behind).

mod common;

use common::*;
use sbert_tui::model::atomic::{
    Hooks, KillPoint, recover, recover_all, write_folder_atomically, write_folder_atomically_with,
};
use sbert_tui::model::save::{save, write_model};
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

/// The names in a folder, sorted.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_save_killed_at_any_point_is_finished_by_the_next_writer() {
    let old = tiny();
    let new = SentenceEncoder::load(&fixture("tiny-xlmr-st"), &LoadOptions::default()).unwrap();
    for at in [
        KillPoint::Ready,
        KillPoint::Carried,
        KillPoint::OldMoved,
        KillPoint::Swapped,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        save(&old, &out, None).unwrap();
        std::fs::create_dir_all(out.join("checkpoints/checkpoint-000010")).unwrap();
        std::fs::write(
            out.join("checkpoints/checkpoint-000010/trainer_state.json"),
            "{}",
        )
        .unwrap();
        std::fs::write(out.join("metrics.jsonl"), "{\"event\":\"started\"}\n").unwrap();
        let hooks = Hooks {
            fail_after: None,
            kill_at: Some(at),
        };
        let err =
            write_folder_atomically_with(&out, &["checkpoints", "metrics.jsonl"], hooks, |w| {
                write_model(&new, w, None)
            })
            .unwrap_err();
        assert!(err.to_string().contains("simulated kill"), "{at:?}: {err}");
        // The next writer (or a resume, or a new run here) puts the folder in order first: the
        // complete new model, with the checkpoints and the log carried over.
        let done = recover(&out).unwrap();
        assert!(!done.is_empty(), "{at:?}: something to recover");
        assert_eq!(
            embed(&SentenceEncoder::load(&out, &LoadOptions::default()).unwrap()),
            embed(&new),
            "{at:?}"
        );
        assert!(
            out.join("checkpoints/checkpoint-000010/trainer_state.json")
                .is_file(),
            "{at:?}: checkpoints carried"
        );
        assert!(out.join("metrics.jsonl").is_file(), "{at:?}");
        assert_eq!(names(dir.path()), ["run"], "{at:?}: nothing left beside it");
        assert!(
            !names(&out).iter().any(|n| n.starts_with('.')),
            "{at:?}: no marker left inside"
        );
        assert!(recover(&out).unwrap().is_empty(), "{at:?}: once is enough");
    }
}

#[test]
fn an_unfinished_save_of_a_dead_writer_is_removed_and_others_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    save(&tiny(), &out, None).unwrap();
    // A writer that died while filling (no process has the id 999999999: Linux ids stay below
    // 2^22).
    let dead = dir.path().join(".model.tmp-999999999");
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join(".sbert-tui-write"), "partial\n").unwrap();
    std::fs::write(dead.join("model.safetensors"), "half").unwrap();
    // A folder that looks like a leftover but is not ours (no note): untouched.
    let foreign = dir.path().join(".model.tmp-999999998");
    std::fs::create_dir(&foreign).unwrap();
    // A leftover of a live process (pid 1): untouched.
    let live = dir.path().join(".model.tmp-1");
    std::fs::create_dir(&live).unwrap();
    std::fs::write(live.join(".sbert-tui-write"), "partial\n").unwrap();
    let done = recover_all(dir.path()).unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(!dead.exists());
    assert!(foreign.exists() && live.exists());
    SentenceEncoder::load(&out, &LoadOptions::default()).unwrap();
}
