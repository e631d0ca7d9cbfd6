//! Prompts (`config_sentence_transformers.json`): E5-style `query: ` / `passage: ` on the real
//! all-MiniLM-L6-v2 against the Python library (`families2_reference.json`, `minilm_prompts`),
//! the default prompt, names the model lacks, prompts kept when saving, and `include_prompt`.

mod common;

use std::path::Path;

use common::*;
use sbert_tui::model::save::save;
use sbert_tui::model::{LoadOptions, Prompt, SentenceEncoder};

const TOL: f32 = 1e-4;

/// A folder that is all-MiniLM-L6-v2 (linked, not copied) with `config` as its
/// `config_sentence_transformers.json`.
fn minilm_with(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(minilm_dir()).unwrap().flatten() {
        let name = e.file_name();
        if name == "config_sentence_transformers.json" {
            continue;
        }
        std::os::unix::fs::symlink(e.path(), dir.path().join(&name)).unwrap();
    }
    std::fs::write(dir.path().join("config_sentence_transformers.json"), config).unwrap();
    dir
}

fn load(dir: &Path) -> SentenceEncoder {
    SentenceEncoder::load(dir, &LoadOptions::default()).unwrap()
}

#[test]
fn e5_prompts_on_minilm_equal_the_librarys() {
    let r = &json("families2_reference.json")["minilm_prompts"];
    let sentences = strings(&r["sentences"]);
    let enc = minilm();
    let run = |p: Prompt| {
        enc.encode_prompted(&sentences, &p, 8, &mut |_, _| {})
            .unwrap()
    };
    assert_close(&run(Prompt::None), &matrix(&r["plain"]), TOL, "plain");
    assert_close(
        &run(Prompt::Text("query: ".into())),
        &matrix(&r["query"]),
        TOL,
        "query: ",
    );
    assert_close(
        &run(Prompt::Text("passage: ".into())),
        &matrix(&r["passage"]),
        TOL,
        "passage: ",
    );
}

#[test]
fn the_default_prompt_applies_unless_another_is_asked_for() {
    let r = &json("families2_reference.json")["minilm_prompts"];
    let sentences = strings(&r["sentences"]);
    let dir = minilm_with(
        r#"{"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"}"#,
    );
    let enc = load(dir.path());
    // encode() without a prompt gives the `query` rows, as in Python.
    let got = enc.encode(&sentences, 8, &mut |_, _| {}).unwrap();
    assert_close(&got, &matrix(&r["query"]), TOL, "default");
    let named = enc
        .encode_prompted(
            &sentences,
            &Prompt::Name("passage".into()),
            8,
            &mut |_, _| {},
        )
        .unwrap();
    assert_close(&named, &matrix(&r["passage"]), TOL, "by name");
    let none = enc
        .encode_prompted(&sentences, &Prompt::None, 8, &mut |_, _| {})
        .unwrap();
    assert_close(&none, &matrix(&r["plain"]), TOL, "none");

    // A name the model lacks is an error listing the ones it has.
    let err = enc
        .encode_prompted(&sentences, &Prompt::Name("doc".into()), 8, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("prompt `doc` is not one of the model's prompts (`passage`, `query`)"),
        "{err}"
    );

    // A saved model keeps its prompts (fine-tuning once wrote `"prompts": {}`).
    let out = tempfile::tempdir().unwrap();
    save(&enc, &out.path().join("m"), None).unwrap();
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("m/config_sentence_transformers.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["prompts"]["query"], "query: ");
    assert_eq!(saved["default_prompt_name"], "query");
    assert_eq!(saved["similarity_fn_name"], "cosine");
}

#[test]
fn a_default_prompt_that_is_not_a_prompt_is_refused_at_load() {
    let dir = minilm_with(r#"{"prompts": {"query": "query: "}, "default_prompt_name": "passage"}"#);
    let err = SentenceEncoder::load(dir.path(), &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("default_prompt_name `passage` is not one of the prompts (`query`)"),
        "{err}"
    );
}

#[test]
fn include_prompt_false_leaves_the_prompt_out_of_pooling() {
    // The tiny model (mean pooling, then Dense and Normalize) with include_prompt off: its vector
    // of "q: " + text is the Dense/Normalize of the mean of the token vectors after the prompt.
    let dir = with_pooling_config("tiny-bert-st", |c| c["include_prompt"] = false.into());
    let with = load(dir.path());
    let text = "a cat sits";
    let prompt = Prompt::Text("q: ".into());
    let tokenized = with.tokenize_prompted(&[text], &prompt).unwrap();
    let p = tokenized[0].prompt_len;
    assert!(p >= 2, "[CLS] and the prompt's pieces: {p}");
    // Pooled by hand: mean over the tokens after the prompt.
    let tokens = with.encode_tokens(&["q: a cat sits"]).unwrap().remove(0);
    let kept = &tokens[p..];
    let mean: Vec<f32> = (0..kept[0].len())
        .map(|j| kept.iter().map(|t| t[j]).sum::<f32>() / kept.len() as f32)
        .collect();
    let by_hand = with
        .encode_pooled(&["q: a cat sits"], &"mean".parse().unwrap(), 1)
        .unwrap();
    assert_ne!(by_hand[0], mean, "the full mean includes the prompt");
    let got = with
        .encode_prompted(&[text], &prompt, 1, &mut |_, _| {})
        .unwrap();
    // Compare through the same Dense + Normalize: embed the mean by hand.
    let dense = std::fs::read(dir.path().join("2_Dense/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&dense).unwrap();
    let w: Vec<f32> = st
        .tensor("linear.weight")
        .unwrap()
        .data()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let bias: Vec<f32> = st
        .tensor("linear.bias")
        .unwrap()
        .data()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let (out, inp) = (bias.len(), mean.len());
    let y: Vec<f32> = (0..out)
        .map(|o| (bias[o] + (0..inp).map(|i| w[o * inp + i] * mean[i]).sum::<f32>()).tanh())
        .collect();
    let norm = y.iter().map(|v| v * v).sum::<f32>().sqrt();
    let expected: Vec<f32> = y.iter().map(|v| v / norm).collect();
    assert_close(&got, &[expected], 1e-5, "include_prompt false");
    // And a saved copy keeps the setting.
    let out = tempfile::tempdir().unwrap();
    save(&with, &out.path().join("m"), None).unwrap();
    let saved = std::fs::read_to_string(out.path().join("m/1_Pooling/config.json")).unwrap();
    assert!(saved.contains("\"include_prompt\": false"), "{saved}");
}

/// The explorer's "prompts side by side": the tiny Qwen3 model's similarity of two sentences,
/// each under no prompt or the `query` prompt, equals the cosine of the Python library's vectors
/// (`qwen3` and `qwen3_query_prompt` in `families2_reference.json`, sentence-transformers 6.2.0).
#[test]
fn prompts_side_by_side_match_the_python_vectors() {
    let r = json("families2_reference.json");
    let (plain, query) = (&r["qwen3"], &r["qwen3_query_prompt"]);
    assert_eq!(plain["sentences"], query["sentences"]);
    let sentences = strings(&plain["sentences"]);
    let (p, q) = (
        matrix(&plain["sentence_embedding"]),
        matrix(&query["sentence_embedding"]),
    );
    let enc = sbert_tui::model::SentenceEncoder::load(
        &fixture("tiny-qwen3-st"),
        &sbert_tui::model::LoadOptions::default(),
    )
    .unwrap();
    let (labels, table) = enc.prompt_table(&sentences[0], &sentences[1]).unwrap();
    assert_eq!(labels, ["none", "document", "query"]);
    let cos = sbert_tui::analysis::similarity::cosine;
    let want = [
        ((0, 0), cos(&p[0], &p[1])),
        ((2, 2), cos(&q[0], &q[1])),
        ((2, 0), cos(&q[0], &p[1])),
        ((0, 2), cos(&p[0], &q[1])),
        // The `document` prompt is empty: the same as none.
        ((1, 1), cos(&p[0], &p[1])),
    ];
    for ((i, j), w) in want {
        assert!(
            (table[i][j] - w).abs() < 1e-5,
            "{} / {}: {} against Python's {w}",
            labels[i],
            labels[j],
            table[i][j]
        );
    }
}
