//! Corpora: reading columns, the on-disk vector cache (reopening, resuming an interrupted
//! embedding, keys by pooling, prompt and precision), and the headless corpus commands
//! (`search` with the cache, `mine`, `cluster`, `export`) on the tiny model, with their errors.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use sbert_tui::analysis::embeddings::Embeddings;
use sbert_tui::corpus::embed::{EmbedOptions, embed_texts};
use sbert_tui::model::{LoadOptions, PoolingSpec, Precision, Prompt, SentenceEncoder};

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "sentence number {i} about {}",
                ["cats", "dogs", "rain", "music"][i % 4]
            )
        })
        .collect()
}

/// Embeds `texts` through the cache in `root` (no cancel).
fn embed_all(
    enc: &SentenceEncoder,
    texts: &[String],
    prompt: &Prompt,
    root: &Path,
) -> sbert_tui::corpus::embed::Embedded {
    embed_texts(enc, texts, prompt, &options(root), &mut |_| true)
        .unwrap()
        .unwrap()
}

fn options(root: &Path) -> EmbedOptions {
    EmbedOptions {
        batch_size: 8,
        chunk: 16,
        cache_root: Some(root.to_path_buf()),
    }
}

#[test]
fn an_interrupted_embedding_resumes_from_the_cache_with_the_same_vectors() {
    let enc = tiny();
    let cache = tempfile::tempdir().unwrap();
    let texts = texts(70);
    let plain = enc.encode(&texts, 8, &mut |_, _| {}).unwrap();
    // Cancel once the first chunk (16 texts) is done: the call gives nothing back, the cache
    // keeps what was encoded.
    let mut calls = 0;
    let cancelled = embed_texts(
        &enc,
        &texts,
        &Prompt::None,
        &options(cache.path()),
        &mut |p| {
            calls += 1;
            p.done < 16
        },
    )
    .unwrap();
    assert!(cancelled.is_none());
    assert!(calls > 1);
    let resumed = embed_all(&enc, &texts, &Prompt::None, cache.path());
    assert!(
        resumed.cached >= 16 && resumed.cached < 70,
        "{}",
        resumed.cached
    );
    assert_eq!(resumed.cached + resumed.encoded, 70);
    assert_close(&resumed.vectors.to_rows(), &plain, 1e-5, "resumed vs plain");
    // A third opening reads everything from disk.
    let again = embed_all(&enc, &texts, &Prompt::None, cache.path());
    assert_eq!((again.cached, again.encoded), (70, 0));
    assert_eq!(again.vectors, resumed.vectors);
}

#[test]
fn duplicates_are_encoded_once_and_keys_follow_pooling_and_prompt() {
    let cache = tempfile::tempdir().unwrap();
    let mut texts = texts(10);
    texts.extend(texts.clone());
    let enc = tiny();
    let first = embed_all(&enc, &texts, &Prompt::None, cache.path());
    assert_eq!((first.cached, first.encoded), (0, 10));
    assert_eq!(first.vectors.row(3), first.vectors.row(13));
    // Another prompt and another pooling are other keys: nothing comes from the cache.
    let prompted = embed_all(&enc, &texts, &Prompt::Text("query: ".into()), cache.path());
    assert_eq!(prompted.cached, 0);
    assert_ne!(prompted.vectors, first.vectors);
    let cls = SentenceEncoder::load(
        &fixture("tiny-bert-st"),
        &LoadOptions {
            pooling: Some("cls".parse::<PoolingSpec>().unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    let pooled = embed_all(&cls, &texts, &Prompt::None, cache.path());
    assert_eq!(pooled.cached, 0);
    let dirs = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(dirs, 3, "one cache folder per model, pooling and prompt");
}

#[test]
fn each_precision_keeps_its_own_vectors() {
    let cache = tempfile::tempdir().unwrap();
    let texts = texts(12);
    let f32_enc = tiny();
    let first = embed_all(&f32_enc, &texts, &Prompt::None, cache.path());
    assert_eq!((first.cached, first.encoded), (0, 12));
    for precision in [Precision::Int8, Precision::Bf16] {
        let enc = SentenceEncoder::load(
            &fixture("tiny-bert-st"),
            &LoadOptions {
                precision,
                ..Default::default()
            },
        )
        .unwrap();
        // An f32 run's rows never answer another precision (nor the other way round).
        let low = embed_all(&enc, &texts, &Prompt::None, cache.path());
        assert_eq!(low.cached, 0, "{precision}");
        let direct = enc.encode(&texts, 8, &mut |_, _| {}).unwrap();
        assert_eq!(low.vectors.to_rows(), direct, "{precision}");
        assert_ne!(low.vectors, first.vectors, "{precision}");
        let again = embed_all(&enc, &texts, &Prompt::None, cache.path());
        assert_eq!((again.cached, again.encoded), (12, 0), "{precision}");
    }
    let back = embed_all(&f32_enc, &texts, &Prompt::None, cache.path());
    assert_eq!((back.cached, back.encoded), (12, 0));
    assert_eq!(back.vectors, first.vectors, "f32 reads its own rows");
    let dirs = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(dirs, 3, "one cache folder per precision");
}

fn run(cmd: &str, cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sbert-tui"))
        .arg(cmd)
        .arg("--model")
        .arg(fixture("tiny-bert-st"))
        .args(args)
        .env("SBERT_TUI_CACHE", cache)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn search_reuses_the_cache_and_reads_columns() {
    let cache = tempfile::tempdir().unwrap();
    let corpus = fixture("search_corpus.txt");
    let args = [
        "--corpus",
        corpus.to_str().unwrap(),
        "--format",
        "json",
        "-k",
        "3",
        "A man is playing a guitar.",
    ];
    let first = run("search", cache.path(), &args);
    let second = run("search", cache.path(), &args);
    assert_eq!(ok(&first), ok(&second));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("352 of 352 vectors from the cache"), "{err}");
    // The same texts as a CSV column and as JSON Lines: the same hits, ids by row / line.
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&corpus)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut csv = csv::Writer::from_path(dir.path().join("c.csv")).unwrap();
    csv.write_record(["id", "sentence"]).unwrap();
    for (i, l) in lines.iter().enumerate() {
        csv.write_record([i.to_string().as_str(), l]).unwrap();
    }
    csv.flush().unwrap();
    let jsonl: String = lines
        .iter()
        .map(|l| serde_json::json!({"_id": "x", "text": l}).to_string() + "\n")
        .collect();
    std::fs::write(dir.path().join("c.jsonl"), jsonl).unwrap();
    let hits = |out: &str| -> Vec<(u64, String)> {
        let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["corpus_id"].as_u64().unwrap(), h["text"].to_string()))
            .collect()
    };
    let want = hits(&ok(&first));
    for (file, extra) in [("c.csv", vec!["--column", "sentence"]), ("c.jsonl", vec![])] {
        let path = dir.path().join(file);
        let mut a = vec![
            "--corpus",
            path.to_str().unwrap(),
            "--format",
            "json",
            "-k",
            "3",
        ];
        a.extend(extra);
        a.push("A man is playing a guitar.");
        let out = run("search", cache.path(), &a);
        assert_eq!(hits(&ok(&out)), want, "{file}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("from the cache"), "{file}: {err}");
    }
}

#[test]
fn corpus_errors_name_the_file_and_line() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let cases = [
        (
            write("empty.txt", b"\n \n"),
            vec![],
            "empty.txt: no texts (an empty corpus)",
        ),
        (
            write("bad.txt", b"ok\n\xffno\n"),
            vec![],
            "bad.txt:2: not valid UTF-8",
        ),
        (
            write("c.csv", b"a,b\n1,2\n"),
            vec![],
            "c.csv:1: which column? give --column (the header has: a, b)",
        ),
        (
            write("d.csv", b"a,b\n1,2\n"),
            vec!["--column", "text"],
            "d.csv:1: no column `text` (the header has: a, b)",
        ),
        (
            write("e.jsonl", b"{\"text\": \"a\"}\n{\"title\": \"b\"}\n"),
            vec![],
            "e.jsonl:2: no field `text`",
        ),
    ];
    for (path, extra, want) in cases {
        for cmd in ["search", "mine", "cluster"] {
            let mut args = vec!["--corpus", path.as_str()];
            args.extend(extra.iter().copied());
            if cmd == "search" {
                args.push("q");
            }
            let out = run(cmd, cache.path(), &args);
            assert_eq!(out.status.code(), Some(1), "{cmd} {args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(want), "{cmd}: {err} should say {want}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
    }
}

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (shape, data)
}

#[test]
fn export_writes_npy_safetensors_and_projector_tsv_of_the_same_vectors() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.txt");
    std::fs::write(&corpus, "a cat\n\nthe dog\twith a tab\nrain today\n").unwrap();
    let c = corpus.to_str().unwrap();
    let enc = tiny();
    let want = enc
        .encode(
            &["a cat", "the dog\twith a tab", "rain today"],
            8,
            &mut |_, _| {},
        )
        .unwrap();
    let npy = dir.path().join("v.npy");
    ok(&run(
        "export",
        cache.path(),
        &["--corpus", c, "-o", npy.to_str().unwrap()],
    ));
    let (shape, data) = read_npy(&npy);
    assert_eq!(shape, [3, want[0].len()]);
    let got = Embeddings::from_flat(shape[1], data).to_rows();
    assert_close(&got, &want, 1e-6, "npy");

    let st = dir.path().join("v.safetensors");
    ok(&run(
        "export",
        cache.path(),
        &["--corpus", c, "-o", st.to_str().unwrap()],
    ));
    let bytes = std::fs::read(&st).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = tensors.tensor("embeddings").unwrap();
    assert_eq!(t.shape(), [3, want[0].len()]);
    let data: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_close(
        &Embeddings::from_flat(shape[1], data).to_rows(),
        &want,
        1e-6,
        "safetensors",
    );

    let tsv = dir.path().join("projector");
    ok(&run(
        "export",
        cache.path(),
        &["--corpus", c, "-o", tsv.to_str().unwrap()],
    ));
    let vectors = std::fs::read_to_string(tsv.join("vectors.tsv")).unwrap();
    let rows: Vec<Vec<f32>> = vectors
        .lines()
        .map(|l| l.split('\t').map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_close(&rows, &want, 1e-6, "vectors.tsv");
    let meta = std::fs::read_to_string(tsv.join("metadata.tsv")).unwrap();
    let meta: Vec<&str> = meta.lines().collect();
    // A header (two columns), then the line index and the text (its tab made a space).
    assert_eq!(
        meta,
        [
            "corpus_id\ttext",
            "0\ta cat",
            "2\tthe dog with a tab",
            "3\train today"
        ]
    );
}

#[test]
fn mine_and_cluster_write_json_lines() {
    let cache = tempfile::tempdir().unwrap();
    let corpus = fixture("search_corpus.txt");
    let c = corpus.to_str().unwrap();
    let out = ok(&run(
        "mine",
        cache.path(),
        &["--corpus", c, "--top-k", "2", "--max-pairs", "20"],
    ));
    let pairs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(pairs.len(), 20);
    let scores: Vec<f64> = pairs.iter().map(|p| p["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    for p in &pairs {
        assert!(p["corpus_id_1"].as_u64() < p["corpus_id_2"].as_u64());
        assert!(p["text_1"].is_string() && p["text_2"].is_string());
    }
    let out = ok(&run(
        "cluster",
        cache.path(),
        &["--corpus", c, "--method", "kmeans", "-k", "5"],
    ));
    let clusters: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(clusters.len(), 5);
    let total: u64 = clusters.iter().map(|c| c["size"].as_u64().unwrap()).sum();
    assert_eq!(total, 352, "k-means puts every text in a cluster");
    for c in &clusters {
        assert_eq!(
            c["members"].as_array().unwrap().len() as u64,
            c["size"].as_u64().unwrap()
        );
        assert_eq!(
            c["central"].as_array().unwrap().len(),
            3.min(c["size"].as_u64().unwrap() as usize)
        );
    }
}
