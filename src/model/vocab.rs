//! A WordPiece tokenizer built from `vocab.txt` and `tokenizer_config.json`, for model folders
//! saved without `tokenizer.json` (older BERT, DistilBERT and MPNet copies). Built as
//! `transformers` converts the slow tokenizer to a fast one (`BertConverter`, `MPNetConverter`):
//! the BERT normalizer and pre-tokenizer, WordPiece with `##` pieces of up to 100 characters, and
//! `[CLS] A [SEP]` (BERT, DistilBERT) or `<s> A </s>` (MPNet) around each text.

use std::path::Path;

use serde_json::Value;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// The families whose tokenizer can be built from `vocab.txt`.
pub const VOCAB_FAMILIES: [&str; 3] = ["bert", "distilbert", "mpnet"];

/// The string of a `tokenizer_config.json` entry: a plain string or `{"content": ...}`.
fn token(config: &Value, key: &str, default: &str) -> String {
    match config.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string(),
        _ => default.to_string(),
    }
}

/// Builds the tokenizer of the model in `dir` (of `model_type`) from its `vocab.txt`.
pub fn wordpiece_tokenizer(dir: &Path, model_type: &str) -> Result<Tokenizer, String> {
    if !VOCAB_FAMILIES.contains(&model_type) {
        return Err(format!(
            "there is no tokenizer.json, and a `{model_type}` tokenizer cannot be built from \
             vocab.txt (only {}); save the tokenizer with a recent transformers version",
            VOCAB_FAMILIES.join(", ")
        ));
    }
    let vocab_path = dir.join("vocab.txt");
    let config: Value = match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| format!("tokenizer_config.json is not valid JSON: {e}"))?,
        Err(_) => Value::Null,
    };
    let mpnet = model_type == "mpnet";
    let (cls_d, sep_d, unk_d, pad_d, mask_d) = if mpnet {
        ("<s>", "</s>", "[UNK]", "<pad>", "<mask>")
    } else {
        ("[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]")
    };
    let cls = token(&config, "cls_token", cls_d);
    let sep = token(&config, "sep_token", sep_d);
    let unk = token(&config, "unk_token", unk_d);
    let pad = token(&config, "pad_token", pad_d);
    let mask = token(&config, "mask_token", mask_d);
    let flag =
        |key: &str, default: bool| config.get(key).and_then(Value::as_bool).unwrap_or(default);
    let lowercase = flag("do_lower_case", true);
    let chinese = flag("tokenize_chinese_chars", true);
    let strip_accents = config.get("strip_accents").and_then(Value::as_bool);

    let vocab = WordPiece::read_file(&vocab_path.to_string_lossy())
        .map_err(|e| format!("{}: {e}", vocab_path.display()))?;
    let id = |t: &str| {
        vocab.get(t).copied().ok_or_else(|| {
            format!(
                "{}: the token `{t}` is not in the vocabulary",
                vocab_path.display()
            )
        })
    };
    let (cls_id, sep_id) = (id(&cls)?, id(&sep)?);
    id(&unk)?;
    let mut specials = vec![cls.clone(), sep.clone(), unk.clone()];
    for t in [&pad, &mask] {
        if vocab.contains_key(t.as_str()) {
            specials.push(t.clone());
        }
    }
    let model = WordPiece::builder()
        .vocab(vocab)
        .unk_token(unk)
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| e.to_string())?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(
            true,
            chinese,
            strip_accents,
            lowercase,
        )))
        .map_err(|e| e.to_string())?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    if mpnet {
        tokenizer.with_post_processor(Some(RobertaProcessing::new((sep, sep_id), (cls, cls_id))));
    } else {
        tokenizer.with_post_processor(Some(BertProcessing::new((sep, sep_id), (cls, cls_id))));
    }
    tokenizer
        .add_special_tokens(specials.into_iter().map(|t| AddedToken::from(t, true)))
        .map_err(|e| e.to_string())?;
    Ok(tokenizer)
}
