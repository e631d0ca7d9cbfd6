//! `train` and `eval` as a user runs them: Ctrl-C saves a checkpoint and `--resume` continues,
//! bad data gets one line naming file, line and column, `eval` prints the metrics.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sbert-tui"));
    c.env("HF_HUB_OFFLINE", "1");
    c
}

fn sample(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample_data")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Ctrl-C, as the terminal sends it: SIGINT.
fn interrupt(pid: u32) {
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "kill failed");
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_resume_continues_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let tiny = fixture("tiny-bert-st");
    let child = bin()
        .args([
            "train",
            "--model",
            tiny.to_str().unwrap(),
            "--data",
            &sample("scored-pairs.csv"),
        ])
        .args([
            "--loss",
            "cosine",
            "--epochs",
            "400",
            "--batch-size",
            "4",
            "--output",
            out.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is training (the log has steps), then interrupt it.
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
        if log.lines().filter(|l| l.contains("\"step\"")).count() > 5 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no steps logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    interrupt(child.id());
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(
        err.contains("continue with: sbert-tui train --resume"),
        "{err}"
    );
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "cancelled");
    let stopped_at = last["step"].as_u64().unwrap();
    assert!(last["checkpoint"].as_str().unwrap().contains("checkpoint-"));

    // Resume with the saved settings: it starts where it stopped (tests/train_run.rs checks that
    // a resumed run ends with the same model as an uninterrupted one); interrupt it again.
    let mut child = bin()
        .args(["train", "--resume", out.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let started: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["event"] == "started")
            .collect();
        if started.len() == 2 {
            assert_eq!(started[1]["start_step"].as_u64().unwrap(), stopped_at);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "did not resume");
        std::thread::sleep(Duration::from_millis(20));
    }
    interrupt(child.id());
    assert_eq!(child.wait().unwrap().code(), Some(130));
}

#[test]
fn bad_training_data_is_one_line_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.csv");
    std::fs::write(&data, "sentence1,sentence2,score\na,b,4\nc,d,very\n").unwrap();
    let out = bin()
        .args([
            "train",
            "--model",
            fixture("tiny-bert-st").to_str().unwrap(),
        ])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--loss",
            "cosine",
            "--output",
        ])
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.csv:3: column `score`: `very` is not a number"),
        "{err}"
    );
    assert!(!dir.path().join("o").exists());
}

/// The metrics `eval` prints, against sentence-transformers' own evaluators on the same model
/// and files (tests/fixtures/eval_sample_reference.json, made by
/// tests/fixtures/generate/make_eval_reference.py; every kind of data is checked through the
/// library in tests/eval_reference.rs).
#[test]
fn eval_prints_the_python_librarys_metrics() {
    let minilm = minilm_dir();
    let tiny = fixture("tiny-bert-st");
    let reference = json("eval_sample_reference.json");
    let expected = &reference["models"]["all-MiniLM-L6-v2"];
    for file in ["scored-pairs-dev.csv", "labeled-pairs.csv"] {
        let out = bin()
            .args([
                "eval",
                "--model",
                minilm.to_str().unwrap(),
                "--data",
                &sample(file),
                "--format",
                "json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = expected[file].as_object().unwrap();
        assert!(!want.is_empty());
        for (name, value) in want {
            let got = v["metrics"][name]
                .as_f64()
                .unwrap_or_else(|| panic!("{file}: no {name} in {}", v["metrics"]));
            let want = value.as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-4,
                "{file}: {name} = {got}, Python gives {want}"
            );
        }
    }
    let out = bin()
        .args([
            "eval",
            "--model",
            tiny.to_str().unwrap(),
            "--data",
            &sample("texts.csv"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unlabelled sentences, which have no metric"),
        "{err}"
    );
}

/// A Python with sentence-transformers, for running exported scripts: `$SBERT_TUI_PYTHON_REF`,
/// else the repository's `.venv-ref` (see the README's benchmarks) when it exists.
fn python_reference() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("SBERT_TUI_PYTHON_REF") {
        return Some(p.into());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-ref/bin/python");
    venv.is_file().then_some(venv)
}

/// `--export-python`: the script and its data are written instead of a run (no output folder),
/// the script compiles, and its rows are the rows we read. With the Python reference at hand the
/// script runs, and `sbert-tui encode` loads the model it saves.
#[test]
fn export_python_writes_a_script_that_runs_and_whose_model_loads_here() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = fixture("tiny-bert-st");
    let tiny = tiny.to_str().unwrap();
    let cases: [(&str, &[&str]); 4] = [
        (
            "cosent",
            &[
                "--data",
                &sample("scored-pairs.csv"),
                "--eval",
                &sample("scored-pairs-dev.csv"),
                "--loss",
                "cosent",
                "--add-dense",
                "8",
                "--matryoshka-dims",
                "8,4",
            ],
        ),
        (
            "mnr",
            &[
                "--data",
                &sample("pairs.tsv"),
                "--data",
                &sample("triplets.csv"),
                "--multi-dataset-sampler",
                "round-robin",
                "--eval",
                &sample("triplets-dev.csv"),
                "--loss",
                "cached-mnr",
                "--mini-batch-size",
                "4",
                "--prompts",
                "anchor=query: ",
                "--pooling",
                "cls",
            ],
        ),
        (
            "simcse",
            &[
                "--data",
                &sample("texts.csv"),
                "--loss",
                "simcse",
                "--no-dropout",
            ],
        ),
        (
            "distil",
            &[
                "--data",
                &sample("texts.csv"),
                "--loss",
                "mse",
                "--teacher",
                tiny,
            ],
        ),
    ];
    let python = python_reference();
    for (name, extra) in cases {
        let script = dir.path().join(format!("{name}.py"));
        let output = dir.path().join(format!("{name}-model"));
        let mut args = vec![
            "train",
            "--model",
            tiny,
            "--output",
            output.to_str().unwrap(),
            "--export-python",
            script.to_str().unwrap(),
            "--epochs",
            "1",
        ];
        args.extend_from_slice(extra);
        let o = bin().args(&args).output().unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!output.exists(), "{name}: exported, not trained");
        let rows = std::fs::read_to_string(dir.path().join(format!("{name}.train.jsonl"))).unwrap();
        let data = extra[1];
        let expected = sbert_tui::train::data::load(Path::new(data))
            .unwrap()
            .examples
            .len();
        assert_eq!(rows.lines().count(), expected, "{name}: one line per row");
        // A second --data file: its own rows file, and a DatasetDict with the sampler.
        let second = dir.path().join(format!("{name}.train2.jsonl"));
        assert_eq!(second.exists(), name == "mnr", "{name}");
        if name == "mnr" {
            let rows = std::fs::read_to_string(&second).unwrap();
            assert_eq!(rows.lines().count(), 200);
            assert!(rows.starts_with("{\"anchor\":"), "{rows}");
        }
        let text = std::fs::read_to_string(&script).unwrap();
        if name == "mnr" {
            assert!(
                text.contains("DatasetDict({")
                    && text.contains("multi_dataset_batch_sampler=\"round_robin\"")
                    && text.contains("\"data2\": {\"anchor\": \"query: \"}"),
                "{text}"
            );
        }
        let compiled = Command::new("python3")
            .args(["-m", "py_compile", script.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            compiled.status.success(),
            "{name}: {}\n{text}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        let Some(python) = &python else { continue };
        let ran = Command::new(python)
            .arg(&script)
            .env("CUDA_VISIBLE_DEVICES", "")
            .output()
            .unwrap();
        assert!(
            ran.status.success(),
            "{name}: the script failed:\n{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        let enc = bin()
            .args(["encode", "--model", output.to_str().unwrap(), "-i", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(b"A man plays a flute.\n")?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            enc.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&enc.stderr)
        );
        assert!(String::from_utf8_lossy(&enc.stdout).contains("\"embedding\""));
    }
    if python.is_none() {
        eprintln!("no Python reference: the scripts were compiled, not run");
    }
}

#[test]
fn export_python_refuses_what_python_lacks_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run.py");
    let o = bin()
        .args([
            "train",
            "--model",
            fixture("tiny-bert-st").to_str().unwrap(),
            "--data",
            &sample("scored-pairs.csv"),
            "--loss",
            "cosine",
            "--pooling",
            "attention",
            "--output",
            dir.path().join("out").to_str().unwrap(),
            "--export-python",
            script.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--pooling") && e.contains("cannot be exported"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

/// `--eda-rates SR,RI,RS,RD` reads four numbers; the augmented copies go into exported rows.
#[test]
fn eda_rates_are_four_comma_separated_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run.py");
    let args = |rates: &str| {
        bin()
            .args([
                "train",
                "--model",
                fixture("tiny-bert-st").to_str().unwrap(),
                "--data",
                &sample("scored-pairs.csv"),
                "--loss",
                "cosine",
                "--output",
                dir.path().join("out").to_str().unwrap(),
                "--augment-copies",
                "1",
                "--eda-rates",
                rates,
                "--export-python",
                script.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let o = args("0.2,0,0,0.1");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = std::fs::read_to_string(dir.path().join("run.train.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 600, "each row and its copy");
    let o = args("0.2,0.1");
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--eda-rates") && e.contains("four rates"), "{e}");
    let o = args("0,0,0,0");
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("nothing would change"), "{e}");
}
