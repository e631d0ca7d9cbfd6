//! sentence-transformers CrossEncoder folders: tokenization of pairs, scores and logits against
//! what Python's `CrossEncoder.predict` gives (tests/fixtures/cross_encoder_reference.json, made
//! by tests/fixtures/generate/make_cross_encoder.py), the legacy file layout, bad folders, and
//! the cost measurement with a real cross-encoder.
//!
//! Self-contained (no `mod common`): it needs none of the terminal-UI test support.

use std::path::{Path, PathBuf};

use sbert_tui::model::cross_encoder::{CrossEncoder, ScoreActivation};
use sbert_tui::model::{DeviceChoice, LoadOptions, Prompt, SentenceEncoder, cost};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn numbers<T>(v: &Value, f: impl Fn(&Value) -> T) -> Vec<T> {
    v.as_array().unwrap().iter().map(f).collect()
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    numbers(v, |row| numbers(row, |x| x.as_f64().unwrap() as f32))
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    numbers(v, |row| numbers(row, |x| x.as_u64().unwrap() as u32))
}

fn strings(v: &Value) -> Vec<String> {
    numbers(v, |s| s.as_str().unwrap().to_string())
}

fn copy_dir(from: &Path, to: &Path) {
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

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>], what: &str) -> f32 {
    assert_eq!(a.len(), b.len(), "{what}: row count");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "{what}: row width");
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max)
        })
        .fold(0f32, f32::max)
}

const MODELS: [&str; 5] = [
    "tiny-ce-bert",
    "tiny-ce-bert3",
    "tiny-ce-xlmr",
    "tiny-ce-distilbert",
    "tiny-ce-mpnet",
];

fn load(dir: &Path) -> CrossEncoder {
    CrossEncoder::load(dir, DeviceChoice::Cpu).expect("cross-encoder loads")
}

fn reference() -> Value {
    json("cross_encoder_reference.json")
}

fn pairs(r: &Value) -> Vec<(String, String)> {
    r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// One row per pair: a one-label model's scores are a flat list in the fixture.
fn rows(v: &Value) -> Vec<Vec<f32>> {
    if v[0].is_array() {
        matrix(v)
    } else {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| vec![x.as_f64().unwrap() as f32])
            .collect()
    }
}

#[test]
fn pairs_are_tokenized_as_python_tokenizes_them() {
    let r = reference();
    let pairs = pairs(&r);
    for name in MODELS {
        let want = &r["models"][name];
        let ce = load(&fixture(name));
        let max = want["max_length"].as_u64().unwrap() as usize;
        assert_eq!(ce.info().max_seq_length, max, "{name}: max length");
        let got = ce.tokenize_pairs(&pairs).unwrap();
        let got_ids: Vec<Vec<u32>> = got.iter().map(|t| t.ids.clone()).collect();
        assert_eq!(got_ids, ids(&want["token_ids"]), "{name}: token ids");
        if !want["token_type_ids"].is_null() {
            let got_types: Vec<Vec<u32>> = got.iter().map(|t| t.type_ids.clone()).collect();
            assert_eq!(
                got_types,
                ids(&want["token_type_ids"]),
                "{name}: token types"
            );
        }
        // The three long pairs are cut to the max length, and say so.
        for (i, t) in got.iter().enumerate() {
            assert_eq!(t.truncated, i >= 5, "{name}: pair {i} truncated");
            assert!(t.ids.len() <= max);
        }
    }
}

#[test]
fn scores_and_logits_equal_pythons() {
    let r = reference();
    let pairs = pairs(&r);
    let mut worst = 0f32;
    for name in MODELS {
        let want = &r["models"][name];
        let ce = load(&fixture(name));
        let info = ce.info();
        assert_eq!(
            info.architecture,
            want["architecture"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            info.num_labels,
            want["num_labels"].as_u64().unwrap() as usize
        );
        assert_eq!(info.labels, strings(&want["labels"]), "{name}");
        assert_eq!(
            info.activation.name(),
            want["activation_fn"].as_str().unwrap(),
            "{name}"
        );
        assert!(
            info.unexpected_weights.is_empty(),
            "{name}: {:?}",
            info.unexpected_weights
        );

        let scores = ce.predict(&pairs).unwrap();
        let d = max_abs_diff(&scores, &rows(&want["scores"]), name);
        assert!(d <= 1e-5, "{name}: scores differ by {d:e}");
        worst = worst.max(d);
        let logits = ce.logits_with(&pairs, 3, &mut |_, _| {}).unwrap();
        let d = max_abs_diff(&logits, &rows(&want["logits"]), name);
        assert!(d <= 1e-5, "{name}: logits differ by {d:e}");
        worst = worst.max(d);

        // Batching changes nothing: one pair at a time gives the same numbers.
        let mut seen = Vec::new();
        let single = ce
            .predict_with(&pairs, 1, &mut |done, total| seen.push((done, total)))
            .unwrap();
        assert!(
            max_abs_diff(&single, &scores, name) <= 1e-6,
            "{name}: batch size"
        );
        assert_eq!(seen.last(), Some(&(8, 8)));
    }
    eprintln!("largest difference from Python: {worst:e}");
}

/// sentence-transformers 4 and 5 wrote no modules.json and kept the activation in config.json's
/// `sentence_transformers` block; Python 6.2 honours it (Identity here: the logits).
#[test]
fn the_legacy_layout_and_its_activation_block_load() {
    let r = reference();
    let pairs = pairs(&r);
    for name in ["tiny-ce-bert", "tiny-ce-xlmr"] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixture(name), dir.path());
        for f in [
            "modules.json",
            "sentence_bert_config.json",
            "config_sentence_transformers.json",
        ] {
            std::fs::remove_file(dir.path().join(f)).unwrap();
        }
        let path = dir.path().join("config.json");
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["sentence_transformers"] = serde_json::json!({
            "activation_fn": "torch.nn.modules.linear.Identity",
            "version": "5.1.0"
        });
        std::fs::write(&path, config.to_string()).unwrap();
        let ce = load(dir.path());
        assert_eq!(ce.info().activation, ScoreActivation::Identity);
        let got = ce.predict(&pairs).unwrap();
        let want = rows(&r["models"][name]["legacy_identity_scores"]);
        let d = max_abs_diff(&got, &want, name);
        assert!(d <= 1e-5, "{name}: legacy layout differs by {d:e}");
    }
}

/// Loads a changed copy of a fixture and returns the error, one line.
fn load_error(name: &str, change: impl FnOnce(&Path)) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join(name);
    copy_dir(&fixture(name), &folder);
    change(&folder);
    let err = match CrossEncoder::load(&folder, DeviceChoice::Cpu) {
        Ok(_) => panic!("{name}: the changed folder loaded"),
        Err(e) => e.to_string(),
    };
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(
        err.contains(&folder.display().to_string()),
        "names the folder: {err}"
    );
    (dir, err)
}

fn edit_config(folder: &Path, edit: impl FnOnce(&mut Value)) {
    let path = folder.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
}

#[test]
fn a_missing_head_weight_is_named() {
    for (name, weight) in [
        ("tiny-ce-bert", "classifier.weight"),
        ("tiny-ce-bert", "bert.pooler.dense.weight"),
        ("tiny-ce-xlmr", "classifier.out_proj.weight"),
    ] {
        let (_dir, err) = load_error(name, |folder| {
            let path = folder.join("model.safetensors");
            let mut tensors =
                candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
            assert!(tensors.remove(weight).is_some(), "{weight} in {name}");
            candle_core::safetensors::save(&tensors, &path).unwrap();
        });
        let short = weight.strip_prefix("bert.").unwrap_or(weight);
        assert!(
            err.contains(&format!("missing weight `{short}`")),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_head_of_the_wrong_size_is_named() {
    let (_dir, err) = load_error("tiny-ce-bert", |folder| {
        edit_config(folder, |c| {
            c["id2label"] = serde_json::json!({"0": "a", "1": "b"});
        });
    });
    assert!(
        err.contains("`classifier.weight` has shape [1, 16]"),
        "{err}"
    );
}

#[test]
fn an_unknown_architecture_is_named() {
    let (_dir, err) = load_error("tiny-ce-bert", |folder| {
        edit_config(folder, |c| {
            c["architectures"] = serde_json::json!(["ElectraForSequenceClassification"]);
        });
    });
    assert!(
        err.contains("architecture `ElectraForSequenceClassification` is not supported"),
        "{err}"
    );
    let (_dir, err) = load_error("tiny-ce-bert", |folder| {
        edit_config(folder, |c| {
            c["architectures"] = serde_json::json!(["Qwen3ForCausalLM"]);
        });
    });
    assert!(
        err.contains("`Qwen3ForCausalLM` has no sequence-classification head"),
        "{err}"
    );
    let (_dir, err) = load_error("tiny-ce-bert", |folder| {
        edit_config(folder, |c| {
            c.as_object_mut().unwrap().remove("architectures");
        });
    });
    assert!(err.contains("no `architectures`"), "{err}");
    let (_dir, err) = load_error("tiny-ce-bert", |folder| {
        std::fs::write(
            folder.join("sentence_bert_config.json"),
            r#"{"transformer_task": "text-generation"}"#,
        )
        .unwrap();
    });
    assert!(err.contains("transformer_task `text-generation`"), "{err}");
}

#[test]
fn a_bi_encoder_folder_is_not_a_cross_encoder() {
    let err = CrossEncoder::load(&fixture("tiny-bert-st"), DeviceChoice::Cpu)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("tiny-bert-st"), "{err}");
    assert!(err.contains("not supported in a cross-encoder"), "{err}");
    let err = CrossEncoder::load(&fixture("no-such-folder"), DeviceChoice::Cpu)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}

/// With a cross-encoder the cost measurement runs it over the same capped pairs, times it, and
/// keeps its score of each pair next to the bi-encoder's similarity.
#[test]
fn the_cost_measure_runs_a_real_cross_encoder() {
    let enc = SentenceEncoder::load(&fixture("tiny-bert-st"), &LoadOptions::default()).unwrap();
    let ce = load(&fixture("tiny-ce-bert"));
    let texts: Vec<String> = [
        "A man is playing a guitar.",
        "A man is playing music.",
        "A woman is slicing an onion.",
        "The sky is clear today.",
        "Machine learning is my passion.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = cost::measure_with_cross(&enc, &texts, &Prompt::None, 7, Some(&ce)).unwrap();
    assert_eq!((r.cross_passes, r.cross_measured), (10, 7));
    let c = r.cross_encoder.as_ref().expect("cross-encoder measured");
    assert_eq!(
        (c.model.as_str(), c.measured, c.pairs.len()),
        ("tiny-ce-bert", 7, 7)
    );
    assert!(c.measured_seconds > 0.0);
    assert!((c.seconds - c.measured_seconds / 7.0 * 10.0).abs() <= 1e-9 * c.seconds);
    let order: Vec<(usize, usize)> = c.pairs.iter().map(|p| (p.i, p.j)).collect();
    assert_eq!(
        order,
        [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4)]
    );
    let asked: Vec<(&str, &str)> = order
        .iter()
        .map(|&(i, j)| (texts[i].as_str(), texts[j].as_str()))
        .collect();
    let want = ce.predict(&asked).unwrap();
    let vectors = enc.encode(&texts, 8, &mut |_, _| {}).unwrap();
    for (p, w) in c.pairs.iter().zip(&want) {
        assert!((p.cross[0] - w[0]).abs() <= 1e-6);
        let cos = enc.info().similarity.score(&vectors[p.i], &vectors[p.j]);
        assert!((p.bi - cos).abs() <= 1e-5, "{} vs {cos}", p.bi);
    }
    let top = c.top(0, 3);
    assert_eq!(top.len(), 3);
    assert!(top.windows(2).all(|w| w[0].cross[0] >= w[1].cross[0]));
    let best = c.pairs.iter().map(|p| p.cross[0]).fold(f32::MIN, f32::max);
    assert_eq!(top[0].cross[0], best);

    // Without one, nothing changes.
    let plain = cost::measure(&enc, &texts, &Prompt::None, 7).unwrap();
    assert!(plain.cross_encoder.is_none());
    assert_eq!(plain.cross_measured, 7);
}
