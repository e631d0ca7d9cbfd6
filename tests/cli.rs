//! The headless commands, run as a user runs them: the real binary, stdout and stderr.
//! Bad input must give one clear line on stderr and exit status 1, never a panic.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

fn sbert(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sbert-tui"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        // The command may fail before reading its input; that is not this helper's business.
        let _ = pipe.write_all(bytes);
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Asserts a clean failure: status 1, one line on stderr containing `needle`, nothing on stdout.
fn assert_fails_with(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(o.stdout.is_empty());
}

fn tiny_path() -> String {
    fixture("tiny-bert-st").to_string_lossy().into_owned()
}

/// A copy of the tiny model that a test may break.
fn tiny_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-bert-st"), dir.path());
    dir
}

fn encode_tiny_stdin(input: &[u8], extra: &[&str]) -> Output {
    encode_stdin(&tiny_path(), input, extra)
}

fn encode_stdin(model: &str, input: &[u8], extra: &[&str]) -> Output {
    let mut args = vec!["encode", "--model", model];
    args.extend_from_slice(extra);
    sbert(&args, Some(input))
}

#[test]
fn encode_jsonl_matches_the_library_in_input_order() {
    let o = encode_tiny_stdin(b"The sky is clear today.\nI love machine learning!\n", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["text"], "The sky is clear today.");
    assert_eq!(rows[1]["text"], "I love machine learning!");
    let got: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| matrix(&serde_json::json!([r["embedding"]])).remove(0))
        .collect();
    // tiny_reference.json: sentence 2 is "The sky is clear today.", sentence 0 "I love machine learning!".
    let want = matrix(&json("tiny_reference.json")["sentence_embedding"]);
    assert_close(
        &got,
        &[want[2].clone(), want[0].clone()],
        1e-5,
        "encode output",
    );
}

#[test]
fn encode_csv_and_jsonl_input_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"a, b\"}\n{\"text\": \"c\"}\n").unwrap();
    let model = tiny_path();
    let o = sbert(
        &[
            "encode",
            "--model",
            &model,
            "--input",
            input.to_str().unwrap(),
            "--format",
            "csv",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("text,dim_0,dim_1,"));
    assert_eq!(lines[0].split(',').count(), 17, "text + 16 dimensions");
    assert!(lines[1].starts_with("\"a, b\","));
}

#[test]
fn an_empty_line_is_the_empty_sentence() {
    let o = encode_tiny_stdin(b"first\n\nthird\n", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["text"], "");
    // tiny_reference.json sentence 5 is the empty string.
    let want = matrix(&json("tiny_reference.json")["sentence_embedding"])[5].clone();
    let got = matrix(&serde_json::json!([rows[1]["embedding"]])).remove(0);
    assert_close(&[got], &[want], 1e-5, "empty sentence");
}

#[test]
fn pooling_override_and_normalize_flag() {
    // Without Dense in the way: the XLM-R fixture has Pooling + Normalize only.
    let model = fixture("tiny-xlmr-st").to_string_lossy().into_owned();
    let o = sbert(
        &["encode", "--model", &model, "--pooling", "cls"],
        Some(b"hello world\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let cls: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let o = sbert(&["encode", "--model", &model], Some(b"hello world\n"));
    let mean: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_ne!(cls["embedding"], mean["embedding"]);
    // Multi-mode pooling doubles the width in front of a Dense layer that expects 32: refused.
    let o = encode_tiny_stdin(b"x\n", &["--pooling", "cls+mean"]);
    assert_fails_with(
        &o,
        "Dense expects 32 inputs but the previous module gives 64",
    );
    let o = encode_tiny_stdin(b"x\n", &["--pooling", "median"]);
    assert_eq!(o.status.code(), Some(2), "a usage error from clap");
    assert!(stderr(&o).contains("unknown pooling mode `median`"));
}

#[test]
fn similarity_table_and_json() {
    let model = tiny_path();
    let o = sbert(
        &["similarity", "--model", &model, "机器学习", "cat", "dog"],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[1].starts_with("0  机器学习 "), "{out}");
    assert!(lines[1].contains("1.0000"));
    let o = sbert(
        &[
            "similarity",
            "--model",
            &model,
            "--format",
            "json",
            "a",
            "b",
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let m = matrix(&v["matrix"]);
    assert!((m[0][0] - 1.0).abs() < 1e-5 && (m[0][1] - m[1][0]).abs() < 1e-7);
}

#[test]
fn missing_model_folder() {
    let o = encode_stdin("./does/not/exist", b"x\n", &[]);
    assert_fails_with(&o, "model folder `./does/not/exist` does not exist");
}

#[test]
fn unknown_hub_id_offline_says_what_was_tried() {
    let o = sbert(&["encode", "--model", "nobody/no-such-model"], Some(b"x\n"));
    assert_fails_with(
        &o,
        "Tried: local folder `nobody/no-such-model`: not found; Hugging Face Hub",
    );
    assert!(stderr(&o).contains("Pass --model with a folder"));
}

#[test]
fn folder_without_weights() {
    let dir = tiny_copy();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let o = encode_stdin(dir.path().to_str().unwrap(), b"x\n", &[]);
    assert_fails_with(
        &o,
        "missing weights (model.safetensors or pytorch_model.bin)",
    );
}

#[test]
fn corrupt_safetensors() {
    let dir = tiny_copy();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let o = encode_stdin(dir.path().to_str().unwrap(), b"x\n", &[]);
    assert_fails_with(&o, "model.safetensors: cannot load weights");
}

#[test]
fn unknown_model_type() {
    let dir = tiny_copy();
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"bert\"", "\"gpt2\"");
    std::fs::write(&path, text).unwrap();
    let o = encode_stdin(dir.path().to_str().unwrap(), b"x\n", &[]);
    assert_fails_with(
        &o,
        "config.json: model_type `gpt2` is not supported (supported: bert",
    );
}

#[test]
fn missing_tokenizer() {
    let dir = tiny_copy();
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let o = encode_stdin(dir.path().to_str().unwrap(), b"x\n", &[]);
    assert_fails_with(&o, "missing tokenizer.json");
}

#[test]
fn missing_weight_names_are_listed() {
    let dir = tiny_copy();
    // Rename one tensor inside the checkpoint.
    let path = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let t = tensors.remove("encoder.layer.1.output.dense.bias").unwrap();
    tensors.insert("encoder.layer.1.output.dense.b".into(), t);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let o = encode_stdin(dir.path().to_str().unwrap(), b"x\n", &[]);
    assert_fails_with(&o, "missing weight `encoder.layer.1.output.dense.bias`");
}

#[test]
fn empty_input_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("empty.txt");
    std::fs::write(&input, "").unwrap();
    let model = tiny_path();
    let o = sbert(
        &[
            "encode",
            "--model",
            &model,
            "--input",
            input.to_str().unwrap(),
        ],
        None,
    );
    assert_fails_with(&o, "empty.txt: the input is empty: nothing to encode");
}

#[test]
fn invalid_utf8_input() {
    let o = encode_tiny_stdin(b"good line\nbad \xc3\x28 line\n", &[]);
    assert_fails_with(&o, "<stdin>:2: invalid UTF-8");
}

#[test]
fn device_not_compiled_in() {
    if cfg!(feature = "cuda") {
        return;
    }
    let o = encode_tiny_stdin(b"x\n", &["--device", "cuda"]);
    assert_fails_with(&o, "this build has no CUDA support");
}

#[test]
fn info_describes_the_model() {
    let model = tiny_path();
    let o = sbert(&["info", "--model", &model], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("architecture    bert (2 layers, hidden 32)"),
        "{out}"
    );
    assert!(out.contains("pooling         mean"), "{out}");
    assert!(out.contains("dimension       16"), "{out}");
    assert!(out.contains("max seq length  64"), "{out}");
    assert!(
        out.contains("cpu paths       inference: the fused pass"),
        "{out}"
    );
    assert!(
        !out.contains("last layer"),
        "mean pooling reads every token: {out}"
    );
    let qwen3 = fixture("tiny-qwen3-st");
    let o = sbert(&["info", "--model", qwen3.to_str().unwrap()], None);
    assert!(
        stdout(&o).contains(
            "last layer      for the pooled token alone past its keys and values (lasttoken \
             pooling)"
        ),
        "{}",
        stdout(&o)
    );
    let t5 = fixture("tiny-t5-st");
    let o = sbert(
        &["info", "--model", t5.to_str().unwrap(), "--pooling", "cls"],
        None,
    );
    assert!(
        stdout(&o)
            .contains("last layer      for every token (cls pooling; t5 has no shorter pass)"),
        "{}",
        stdout(&o)
    );
    let o = sbert(&["info", "--model", t5.to_str().unwrap()], None);
    assert!(
        stdout(&o).contains(
            "inference: the composition with its linear layers, norms, activations and attention \
             on the kernels, on the real tokens alone; training: candle's autograd, its linear \
             layers, norms, activations, attention and their gradients"
        ),
        "{}",
        stdout(&o)
    );
}

/// A copy of the tiny model with one weight full of NaN (what a diverged run could save).
fn nan_model() -> tempfile::TempDir {
    let dir = tiny_copy();
    let path = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let name = "encoder.layer.0.output.dense.weight";
    let t = &tensors[name];
    let nan = candle_core::Tensor::full(f32::NAN, t.shape(), &candle_core::Device::Cpu).unwrap();
    tensors.insert(name.into(), nan);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    dir
}

#[test]
fn a_model_with_nan_weights_is_reported_not_printed() {
    let dir = nan_model();
    let model = dir.path().to_str().unwrap();
    let o = encode_stdin(model, b"a sentence\n", &[]);
    assert_fails_with(&o, "non-finite values (NaN or infinity) for text 1 of 1");
    assert!(stdout(&o).is_empty(), "no null vectors on stdout");
    // `eval` once reported a Spearman of 0.0991 from all-NaN cosines.
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_data/scored-pairs-dev.csv");
    let o = sbert(
        &["eval", "--model", model, "--data", data.to_str().unwrap()],
        None,
    );
    assert_fails_with(&o, "non-finite values");
    assert!(!stdout(&o).contains("spearman"), "{}", stdout(&o));
}

#[test]
fn an_error_names_its_cause_once() {
    // Once: "... No such file or directory (os error 2): No such file or directory (os error 2)".
    let dir = tiny_copy();
    std::fs::remove_file(dir.path().join("1_Pooling/config.json")).unwrap();
    let o = encode_stdin(dir.path().to_str().unwrap(), b"x\n", &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert!(err.contains("1_Pooling/config.json"), "{err}");
}

#[test]
fn a_write_failure_says_write() {
    // Write failures were called "cannot read".
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "not a folder").unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_data/scored-pairs.csv");
    let o = sbert(
        &[
            "train",
            "--model",
            &tiny_path(),
            "--data",
            data.to_str().unwrap(),
            "--loss",
            "cosine",
            "--output",
            blocker.join("run").to_str().unwrap(),
        ],
        None,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write"), "{err}");
    assert!(!err.contains("cannot read"), "{err}");
}

#[test]
fn a_malformed_tokenizer_is_an_error_not_a_crash() {
    // Found by fuzzing (fuzz/regressions/model_folder): the tokenizers crate panicked on this
    // `decoder` entry instead of returning an error.
    let dir = tiny_copy();
    let path = dir.path().join("tokenizer.json");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "\"type\": \"WordPiece\",\n    \"prefix\"",
        "\"t\"y\":p eWordPiece\",\n    \"prefix\"",
    );
    assert!(text.contains("\"t\"y\":p eWordPiece"));
    std::fs::write(&path, text).unwrap();
    let o = encode_stdin(dir.path().to_str().unwrap(), b"x\n", &[]);
    assert_fails_with(&o, "tokenizer.json: cannot load tokenizer: malformed");
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}
