//! The model families against the Python library: token ids exact and sentence embeddings within
//! 1e-5 on tiny random-init models of each family (`families2_reference.json`, made by
//! sentence-transformers 6.2.0 / transformers 5.24 / torch 2.15; see
//! `tests/fixtures/README-shared.md`), and what every family must do: a sentence alone equals the
//! same sentence in a padded batch, dropout acts in training and not in evaluation, every weight
//! gets a gradient, a short run lowers the loss, a saved model loads back the same.

mod common;

use candle_core::{D, Tensor};
use common::*;
use sbert_tui::model::save::save;
use sbert_tui::model::{DropoutRng, LoadOptions, Mode, Prompt, SentenceEncoder};
use serde_json::Value;

/// The families checked here, by their key in `families2_reference.json` (and `t5`, whose
/// reference is `tiny-t5_reference.json`).
const FAMILIES: [&str; 5] = ["distilbert", "mpnet", "t5", "modernbert", "qwen3"];

fn reference(key: &str) -> Value {
    match key {
        "t5" => json("tiny-t5_reference.json"),
        _ => json("families2_reference.json")[key].clone(),
    }
}

fn load(key: &str) -> SentenceEncoder {
    let r = reference(key);
    let dir = fixture(r["model_dir"].as_str().unwrap());
    SentenceEncoder::load(&dir, &LoadOptions::default()).unwrap_or_else(|e| panic!("{key}: {e}"))
}

#[test]
fn token_ids_and_embeddings_equal_the_librarys() {
    for key in FAMILIES {
        let r = reference(key);
        let enc = load(key);
        let sentences = strings(&r["sentences"]);
        let got: Vec<Vec<u32>> = enc
            .tokenize(&sentences)
            .unwrap()
            .into_iter()
            .map(|t| t.ids)
            .collect();
        assert_eq!(got, ids(&r["token_ids"]), "{key}: token ids");
        let emb = enc.encode(&sentences, 4, &mut |_, _| {}).unwrap();
        assert_close(&emb, &matrix(&r["sentence_embedding"]), 1e-5, key);
    }
}

#[test]
fn qwen3_with_its_query_prompt_equals_the_library() {
    // `qwen3_query_prompt`: prompt_name="query" puts the instruction before each sentence; the
    // tokenizer appends <|endoftext|> and the last token is pooled.
    let r = json("families2_reference.json")["qwen3_query_prompt"].clone();
    let enc = load("qwen3");
    let sentences = strings(&r["sentences"]);
    let prompt = Prompt::Name("query".into());
    let got: Vec<Vec<u32>> = enc
        .tokenize_prompted(&sentences, &prompt)
        .unwrap()
        .into_iter()
        .map(|t| t.ids)
        .collect();
    assert_eq!(got, ids(&r["token_ids"]), "token ids");
    let emb = enc
        .encode_prompted(&sentences, &prompt, 4, &mut |_, _| {})
        .unwrap();
    assert_close(&emb, &matrix(&r["sentence_embedding"]), 1e-5, "qwen3 query");
}

#[test]
fn a_sentence_alone_equals_it_in_a_padded_batch() {
    for key in FAMILIES {
        let enc = load(key);
        let texts = [
            "short",
            "a much longer sentence with many more words in it than the first",
        ];
        let batch = enc.encode(&texts, 2, &mut |_, _| {}).unwrap();
        let alone = enc.encode(&texts[..1], 1, &mut |_, _| {}).unwrap();
        assert_close(&batch[..1], &alone, 1e-5, key);
    }
}

/// The family's tiny model; where its config has no dropout (ModernBERT and Qwen3 set theirs to
/// 0), a copy with every dropout of the config at 0.1, so that the test sees them act.
fn with_dropout(key: &str) -> (tempfile::TempDir, SentenceEncoder) {
    let from = fixture(reference(key)["model_dir"].as_str().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_dir(&from, &dir);
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for name in [
        "embedding_dropout",
        "attention_dropout",
        "mlp_dropout",
        "hidden_dropout_prob",
        "dropout",
        "dropout_rate",
    ] {
        if config.get(name).and_then(Value::as_f64) == Some(0.0) {
            config[name] = 0.1.into();
        }
    }
    std::fs::write(&path, config.to_string()).unwrap();
    let enc = SentenceEncoder::load(&dir, &LoadOptions::default()).unwrap();
    (tmp, enc)
}

/// The sentence vectors of `texts` in one forward pass of `mode`.
fn forward(enc: &SentenceEncoder, texts: &[&str], mode: Mode) -> Tensor {
    let tokenized = enc.tokenize(texts).unwrap();
    let items: Vec<_> = tokenized.iter().collect();
    let input = enc.batch(&items).unwrap();
    enc.forward(&input, mode).unwrap()
}

#[test]
fn dropout_acts_in_training_only_and_every_weight_gets_a_gradient() {
    let texts = ["the cat sits on the mat", "a dog runs in the park"];
    for key in FAMILIES {
        let (_dir, enc) = with_dropout(key);
        let eval1 = forward(&enc, &texts, Mode::EVAL);
        let eval2 = forward(&enc, &texts, Mode::EVAL);
        let diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_keepdim(D::Minus1)
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert_eq!(
            diff(&eval1, &eval2),
            0.0,
            "{key}: evaluation is deterministic"
        );
        let rng = DropoutRng::new(7);
        let train = forward(&enc, &texts, Mode::train(&rng));
        assert!(
            diff(&train, &eval1) > 1e-4,
            "{key}: dropout changes training outputs"
        );
        // Every weight of the transformer receives a gradient.
        let out = forward(&enc, &texts, Mode::train_without_dropout());
        let grads = (out.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
        let map = enc.transformer().varmap().data().lock().unwrap();
        let mut missing: Vec<&String> = map
            .iter()
            .filter(|(name, var)| {
                // The pooler is kept for Python but not used by sentence-transformers.
                !name.starts_with("pooler.") && grads.get(var.as_tensor()).is_none()
            })
            .map(|(name, _)| name)
            .collect();
        missing.sort();
        assert!(missing.is_empty(), "{key}: no gradient for {missing:?}");
    }
}

#[test]
fn a_saved_model_loads_back_with_the_same_vectors() {
    for key in FAMILIES {
        let enc = load(key);
        let dir = tempfile::tempdir().unwrap();
        save(&enc, &dir.path().join("m"), None).unwrap();
        let back = SentenceEncoder::load(&dir.path().join("m"), &LoadOptions::default()).unwrap();
        let texts = ["hello world", "机器学习"];
        assert_eq!(
            back.encode(&texts, 2, &mut |_, _| {}).unwrap(),
            enc.encode(&texts, 2, &mut |_, _| {}).unwrap(),
            "{key}"
        );
        assert!(back.info().unexpected_weights.is_empty(), "{key}");
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("m/config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["model_type"], key);
        assert!(dir.path().join("m/tokenizer.json").is_file(), "{key}");
    }
}

/// A copy of a fixture folder with `tokenizer.json` replaced by `vocab.txt`.
fn vocab_only(from: &std::path::Path, vocab: &std::path::Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(from, tmp.path());
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    std::fs::copy(vocab, tmp.path().join("vocab.txt")).unwrap();
    tmp
}

#[test]
fn a_folder_with_only_vocab_txt_tokenizes_and_embeds_as_the_library() {
    // `vocab_only_reference.json`: the Python library builds these tokenizers from vocab.txt
    // (made by tests/fixtures/generate/make_vocab_reference.py): accents, Chinese, control
    // whitespace, the empty text and a word too long for WordPiece included.
    let r = json("vocab_only_reference.json");
    let sentences = strings(&r["sentences"]);
    for name in ["tiny-distilbert-st", "tiny-mpnet-st"] {
        let vocab = fixture("vocab-only").join(name).join("vocab.txt");
        let dir = vocab_only(&fixture(name), &vocab);
        let enc = SentenceEncoder::load(dir.path(), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<Vec<u32>> = enc
            .tokenize(&sentences)
            .unwrap()
            .into_iter()
            .map(|t| t.ids)
            .collect();
        assert_eq!(got, ids(&r[name]["token_ids"]), "{name}: token ids");
        let emb = enc.encode(&sentences, 4, &mut |_, _| {}).unwrap();
        assert_close(&emb, &matrix(&r[name]["sentence_embedding"]), 1e-5, name);
        // Saved, the folder keeps its vocab.txt and loads back the same.
        let out = tempfile::tempdir().unwrap();
        save(&enc, &out.path().join("m"), None).unwrap();
        assert!(out.path().join("m/vocab.txt").is_file(), "{name}");
        let back = SentenceEncoder::load(&out.path().join("m"), &LoadOptions::default()).unwrap();
        assert_eq!(
            back.encode(&sentences, 4, &mut |_, _| {}).unwrap(),
            emb,
            "{name}"
        );
    }
}

#[test]
fn minilm_without_tokenizer_json_tokenizes_as_with_it() {
    // The real all-MiniLM-L6-v2 folder ships both files: the tokenizer built from its vocab.txt
    // must give the ids its tokenizer.json gives.
    let dir = minilm_dir();
    let copy = vocab_only(&dir, &dir.join("vocab.txt"));
    let built = SentenceEncoder::load(copy.path(), &LoadOptions::default()).unwrap();
    let full = minilm();
    let texts: Vec<String> = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_data/scored-pairs.csv"),
    )
    .unwrap()
    .lines()
    .skip(1)
    .take(200)
    .map(str::to_string)
    .chain(strings(&json("vocab_only_reference.json")["sentences"]))
    .collect();
    assert_eq!(
        built.tokenize(&texts).unwrap(),
        full.tokenize(&texts).unwrap()
    );
}

#[test]
fn a_folder_without_any_tokenizer_file_names_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-xlmr-st"), tmp.path());
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    let e = SentenceEncoder::load(tmp.path(), &LoadOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    // A vocab.txt cannot make an XLM-R tokenizer: that is said, not guessed.
    std::fs::write(tmp.path().join("vocab.txt"), "[UNK]\n[CLS]\n[SEP]\n").unwrap();
    let e = SentenceEncoder::load(tmp.path(), &LoadOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("vocab.txt") && e.contains("xlm-roberta"), "{e}");
}

#[test]
fn an_unknown_model_type_names_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-bert-st"), tmp.path());
    let path = tmp.path().join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["model_type"] = "gpt2".into();
    std::fs::write(&path, config.to_string()).unwrap();
    let e = SentenceEncoder::load(tmp.path(), &LoadOptions::default())
        .err()
        .expect("refused")
        .to_string();
    for t in [
        "gpt2",
        "bert",
        "mpnet",
        "t5",
        "modernbert",
        "qwen3",
        "distilbert",
    ] {
        assert!(e.contains(t), "{t} in: {e}");
    }
}

fn encdec(pooling: Option<&str>) -> SentenceEncoder {
    let options = LoadOptions {
        pooling: pooling.map(|p| p.parse().unwrap()),
        ..LoadOptions::default()
    };
    SentenceEncoder::load(&fixture("tiny-t5-encdec-st"), &options).unwrap()
}

#[test]
fn st5_encdec_pooling_is_the_first_decoder_output() {
    // `tiny-t5-encdec_reference.json` (tests/fixtures/generate/make_st5_encdec.py): a full T5
    // checkpoint; `st5_encdec` from transformers' T5Model with the decoder start token, `mean`
    // from the Python library (which loads the encoder half).
    let r = json("tiny-t5-encdec_reference.json");
    let sentences = strings(&r["sentences"]);
    let mean = encdec(None);
    let got: Vec<Vec<u32>> = mean
        .tokenize(&sentences)
        .unwrap()
        .into_iter()
        .map(|t| t.ids)
        .collect();
    assert_eq!(got, ids(&r["token_ids"]));
    let emb = mean.encode(&sentences, 4, &mut |_, _| {}).unwrap();
    assert_close(&emb, &matrix(&r["mean"]), 1e-5, "mean pooling of a full T5");

    let enc = encdec(Some("st5_encdec"));
    let emb = enc.encode(&sentences, 3, &mut |_, _| {}).unwrap();
    assert_close(&emb, &matrix(&r["st5_encdec"]), 1e-5, "st5_encdec");
    // Alone equals in a padded batch.
    let alone = enc.encode(&sentences[..1], 1, &mut |_, _| {}).unwrap();
    assert_close(&alone, &emb[..1], 1e-5, "st5_encdec alone");
    // Concatenated with a Python mode, each part is its own.
    let both = encdec(Some("mean+st5_encdec"));
    let v = both.encode(&sentences, 4, &mut |_, _| {}).unwrap();
    assert_eq!(v[0].len(), 64);
}

#[test]
fn st5_encdec_trains_the_decoder_and_saves_it() {
    let enc = encdec(Some("st5_encdec"));
    let texts = ["the cat sits on the mat", "a dog runs in the park"];
    let rng = DropoutRng::new(3);
    let eval = forward(&enc, &texts, Mode::EVAL);
    let train = forward(&enc, &texts, Mode::train(&rng));
    let d = (&train - &eval)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d > 1e-4, "dropout acts in training");
    let out = forward(&enc, &texts, Mode::train_without_dropout());
    let grads = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let map = enc.transformer().varmap().data().lock().unwrap();
    let mut missing: Vec<&String> = map
        .iter()
        .filter(|(name, var)| {
            // One decoder token: the softmax over its one score is 1 whatever the decoder's
            // position bias is, so that table gets no gradient (as in Python).
            !name.starts_with("decoder.block.0.layer.0.SelfAttention.relative_attention_bias")
                && grads.get(var.as_tensor()).is_none()
        })
        .map(|(name, _)| name)
        .collect();
    missing.sort();
    assert!(missing.is_empty(), "no gradient for {missing:?}");
    assert!(map.keys().any(|k| k.starts_with("decoder.")));
    drop(map);

    let dir = tempfile::tempdir().unwrap();
    save(&enc, &dir.path().join("m"), None).unwrap();
    let back = SentenceEncoder::load(&dir.path().join("m"), &LoadOptions::default()).unwrap();
    assert_eq!(back.info().pooling.to_string(), "st5_encdec");
    assert_eq!(
        back.encode(&texts, 2, &mut |_, _| {}).unwrap(),
        enc.encode(&texts, 2, &mut |_, _| {}).unwrap()
    );
}

#[test]
fn st5_encdec_without_a_decoder_is_refused_at_load() {
    let options = LoadOptions {
        pooling: Some("st5_encdec".parse().unwrap()),
        ..LoadOptions::default()
    };
    for name in ["tiny-t5-st", "tiny-bert-st"] {
        let e = SentenceEncoder::load(&fixture(name), &options)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("st5_encdec") && e.contains("decoder"), "{e}");
    }
}
