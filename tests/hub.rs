//! Models by Hub id, against a stand-in for the Hugging Face Hub on localhost (`HF_ENDPOINT`):
//! the files land in Python's cache layout under `HF_HOME`, and `HF_HUB_OFFLINE=1` then loads
//! them from there without a network.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn files_of(dir: &Path, prefix: &str, out: &mut HashMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type().unwrap().is_dir() {
            files_of(&entry.path(), &format!("{name}/"), out);
        } else {
            out.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
}

/// Serves `files` as the Hub serves repo `repo`; returns the endpoint and a request counter.
fn serve(repo: &'static str, files: HashMap<String, Vec<u8>>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let mut range = None;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = v.trim().split_once('-').unwrap();
                    range = Some((a.parse::<usize>().unwrap(), b.parse::<usize>().ok()));
                }
            }
            let api = format!("/api/models/{repo}/revision/main");
            let resolve = format!("/{repo}/resolve/main/");
            let (status, headers, body) = if path == api {
                let siblings: Vec<_> = files
                    .keys()
                    .map(|f| serde_json::json!({ "rfilename": f }))
                    .collect();
                let body = serde_json::json!({ "sha": COMMIT, "siblings": siblings }).to_string();
                ("200 OK", String::new(), body.into_bytes())
            } else if let Some(file) = path.strip_prefix(&resolve).and_then(|f| files.get(f)) {
                let (start, end) = range.unwrap_or((0, None));
                let end = end.unwrap_or(file.len() - 1).min(file.len() - 1);
                let headers = format!(
                    "Content-Range: bytes {start}-{end}/{}\r\nETag: \"etag-{}-{}\"\r\nX-Repo-Commit: {COMMIT}\r\n",
                    file.len(),
                    path.len(),
                    file.len()
                );
                ("206 Partial Content", headers, file[start..=end].to_vec())
            } else {
                ("404 Not Found", String::new(), b"not found".to_vec())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    (endpoint, hits)
}

fn encode(model: &str, envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sbert-tui"));
    cmd.args([
        "similarity",
        "--format",
        "json",
        "--model",
        model,
        "I love machine learning!",
        "The sky is clear today.",
    ]);
    cmd.env_remove("HF_HUB_OFFLINE").env_remove("HF_ENDPOINT");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn a_hub_id_downloads_into_the_python_cache_then_works_offline() {
    let mut files = HashMap::new();
    files_of(&fixture("tiny-bert-st"), "", &mut files);
    let (endpoint, hits) = serve("test-org/tiny-bert", files);
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_str().unwrap();

    let o = encode(
        "test-org/tiny-bert",
        &[("HF_ENDPOINT", &endpoint), ("HF_HOME", home_s)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Cosine of tiny_reference.json sentences 0 and 2, computed from their reference embeddings.
    let r = matrix(&json("tiny_reference.json")["sentence_embedding"]);
    let want = sbert_tui::analysis::similarity::cosine(&r[0], &r[2]);
    let got = v["matrix"][0][1].as_f64().unwrap() as f32;
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");

    // Python's cache layout: models--org--name/snapshots/<commit>/...
    let snapshot = home
        .path()
        .join("hub/models--test-org--tiny-bert/snapshots")
        .join(COMMIT);
    for f in [
        "modules.json",
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "1_Pooling/config.json",
        "2_Dense/model.safetensors",
    ] {
        assert!(snapshot.join(f).exists(), "{f} not in the cache");
    }

    // Offline: no request reaches the server, the cache is enough.
    let before = hits.load(Ordering::SeqCst);
    let o = encode(
        "test-org/tiny-bert",
        &[
            ("HF_ENDPOINT", &endpoint),
            ("HF_HOME", home_s),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(hits.load(Ordering::SeqCst), before);

    // A repo the hub does not have: the error says what was tried.
    let o = encode(
        "test-org/missing",
        &[("HF_ENDPOINT", &endpoint), ("HF_HOME", home_s)],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Hugging Face Hub `test-org/missing`"), "{err}");
    assert!(err.contains("404"), "{err}");
}
