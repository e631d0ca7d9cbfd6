//! The corpus screen: keys to requests, worker answers to the screen (snapshots in English and
//! Chinese, with and without colour), stale answers dropped; and the corpus worker itself driven
//! through its channel with the tiny model (open, search, map, clusters, mining, export, cancel).

mod common;

use std::sync::Arc;
use std::sync::mpsc::channel;
use std::time::Duration;

use common::tui_support::*;
use common::*;
use crossterm::event::KeyCode;
use sbert_tui::analysis::maps::MapMethod;
use sbert_tui::analysis::similarity::Similarity;
use sbert_tui::corpus::{Corpus, CorpusFormat};
use sbert_tui::lessons::Lang;
use sbert_tui::model::Prompt;
use sbert_tui::tui::app::{App, Screen};
use sbert_tui::tui::corpus::ListKind;
use sbert_tui::tui::corpus_worker::{
    ClusterMethod, ClusterSummary, CorpusEvent, CorpusRequest, CorpusTask, Worker,
};
use sbert_tui::tui::shell::{CorpusInput, EditTarget, Mode};
use sbert_tui::tui::worker::WorkerOptions;

const TEXTS: [&str; 12] = [
    "A man is playing a guitar.",
    "Someone strums a guitar.",
    "A man plays the violin.",
    "A woman is slicing an onion.",
    "A woman is cutting vegetables.",
    "Someone chops a tomato.",
    "The stock market fell today.",
    "Share prices dropped sharply.",
    "Investors sold their stocks.",
    "A cat sleeps on the sofa.",
    "A dog runs in the park.",
    "Kittens are playing with yarn.",
];

/// An app on the corpus screen with a corpus of [`TEXTS`] open and mapped.
fn open_app(lang: Lang, color: bool) -> App {
    let mut app = ready_app(&["a"], color);
    app.lang = lang;
    app.on_key(key('F'));
    assert_eq!(app.screen, Screen::Corpus);
    assert!(matches!(
        app.mode(),
        Mode::Editing(EditTarget::Corpus(CorpusInput::Path), _)
    ));
    type_str(&mut app, "corpus.txt");
    app.on_key(code(KeyCode::Enter));
    let requests = app.take_corpus_requests();
    let [
        CorpusRequest::Open {
            generation,
            path,
            model,
            pooling,
            ..
        },
    ] = requests.as_slice()
    else {
        panic!("{requests:?}");
    };
    assert_eq!(path.to_str(), Some("corpus.txt"));
    assert_eq!(model, "sentence-transformers/all-MiniLM-L6-v2");
    assert_eq!(pooling.as_deref(), Some("mean"));
    let generation = *generation;
    app.on_corpus(CorpusEvent::Progress {
        generation,
        task: CorpusTask::Embed,
        done: 6,
        total: 12,
        note: "4 from the cache".into(),
    });
    let corpus = Corpus {
        path: "corpus.txt".into(),
        column: None,
        texts: TEXTS.iter().map(|s| s.to_string()).collect(),
        ids: (0..12).map(|i| i * 2).collect(),
    };
    app.on_corpus(CorpusEvent::Opened {
        generation,
        corpus: Arc::new(corpus),
        dim: 384,
        similarity: Similarity::Cosine,
        cached: 4,
        encoded: 8,
        millis: 1234.0,
        cache: Ok("cache".into()),
    });
    // Three groups of four on a plane.
    let points = (0..12)
        .map(|i| {
            let (cx, cy) = [(0.0, 0.0), (10.0, 2.0), (4.0, 9.0)][i / 4 % 3];
            [cx + (i % 4) as f32 * 0.7, cy + (i % 2) as f32 * 0.9]
        })
        .collect();
    app.on_corpus(CorpusEvent::Map {
        generation,
        method: MapMethod::Pca,
        rows: (0..12).collect(),
        points,
        millis: 12.0,
    });
    app
}

fn generation(app: &App) -> u64 {
    app.corpus.generation
}

#[test]
fn typing_a_query_searches_live_and_hits_show_in_the_list_and_on_the_map() {
    let mut app = open_app(Lang::En, false);
    app.on_key(key('/'));
    type_str(&mut app, "gui");
    let searches: Vec<String> = app
        .take_corpus_requests()
        .into_iter()
        .map(|r| match r {
            CorpusRequest::Search { query, .. } => query,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(searches, ["g", "gu", "gui"]);
    let g = generation(&app);
    // An answer to an older query is dropped; the newest is shown.
    app.on_corpus(CorpusEvent::Hits {
        generation: g,
        query: "gu".into(),
        hits: vec![(5, 0.1)],
        millis: 1.0,
    });
    assert!(app.corpus.hits.is_empty());
    app.on_corpus(CorpusEvent::Hits {
        generation: g,
        query: "gui".into(),
        hits: vec![(0, 0.71), (1, 0.64), (2, 0.31)],
        millis: 2.5,
    });
    app.on_key(code(KeyCode::Enter));
    app.on_key(key('j'));
    assert_eq!(app.corpus.selected_rows(), [1]);
    let t = render(&mut app, 100, 24);
    insta::assert_snapshot!("corpus_hits", t.backend());
}

#[test]
fn clusters_and_pairs_lists_in_chinese() {
    let mut app = open_app(Lang::Zh, true);
    app.on_key(key('g'));
    app.on_key(code(KeyCode::Enter)); // the default: 0.75 10
    let requests = app.take_corpus_requests();
    assert!(
        matches!(
            requests.as_slice(),
            [CorpusRequest::Cluster {
                method: ClusterMethod::Communities { min_size: 10, .. },
                ..
            }]
        ),
        "{requests:?}"
    );
    let g = generation(&app);
    app.on_corpus(CorpusEvent::Clusters {
        generation: g,
        method: ClusterMethod::Communities {
            threshold: 0.75,
            min_size: 3,
        },
        labels: (0..12)
            .map(|i| (i < 9).then_some((i / 4) as u32 % 3))
            .collect(),
        clusters: vec![
            ClusterSummary {
                size: 4,
                central: vec![0, 1, 2],
            },
            ClusterSummary {
                size: 4,
                central: vec![4, 3, 5],
            },
            ClusterSummary {
                size: 1,
                central: vec![8],
            },
        ],
        millis: 300.0,
    });
    assert_eq!(app.corpus.list, ListKind::Clusters);
    let t = render(&mut app, 100, 24);
    insta::assert_snapshot!("corpus_clusters_zh", t.backend());
    app.on_key(key('M'));
    assert!(matches!(
        app.take_corpus_requests().as_slice(),
        [CorpusRequest::Mine { .. }]
    ));
    // While it runs: the progress line, and x cancels.
    app.on_corpus(CorpusEvent::Progress {
        generation: g,
        task: CorpusTask::Mine,
        done: 3,
        total: 12,
        note: String::new(),
    });
    let t = render(&mut app, 100, 24);
    insta::assert_snapshot!("corpus_mining_progress_zh", t.backend());
    app.on_key(key('x'));
    assert_eq!(app.take_corpus_requests(), [CorpusRequest::Cancel]);
    app.on_corpus(CorpusEvent::Pairs {
        generation: g,
        pairs: vec![(0.93, 0, 1), (0.88, 6, 7), (0.8, 3, 4)],
        total: 3,
        millis: 40.0,
    });
    assert_eq!(app.corpus.list, ListKind::Pairs);
    assert!(app.corpus.task.is_none());
    let t = render(&mut app, 100, 24);
    insta::assert_snapshot!("corpus_pairs_zh", t.backend());
}

#[test]
fn answers_about_a_closed_corpus_are_dropped_and_bad_input_is_refused() {
    let mut app = open_app(Lang::En, false);
    let old = generation(&app);
    app.on_key(key('o'));
    app.on_key(code(KeyCode::Enter)); // the same path again: a new generation
    assert!(generation(&app) > old);
    app.on_corpus(CorpusEvent::Hits {
        generation: old,
        query: String::new(),
        hits: vec![(0, 1.0)],
        millis: 1.0,
    });
    assert!(app.corpus.hits.is_empty());
    assert!(app.corpus.open.is_none(), "the new corpus is not open yet");
    // Keys that need an open corpus say so.
    app.take_corpus_requests();
    app.on_key(key('M'));
    assert!(app.take_corpus_requests().is_empty());
    assert!(app.status().is_some_and(|s| s.error));
    let mut app = open_app(Lang::En, false);
    app.on_key(key('K'));
    for _ in 0..3 {
        app.on_key(code(KeyCode::Backspace));
    }
    type_str(&mut app, "zero");
    app.on_key(code(KeyCode::Enter));
    assert!(app.take_corpus_requests().is_empty());
    assert!(app.status().unwrap().text.contains("number of clusters"));
    // `a` adds the selected hit to the explorer's sentences.
    let g = generation(&app);
    app.on_corpus(CorpusEvent::Hits {
        generation: g,
        query: String::new(),
        hits: vec![(3, 0.5)],
        millis: 1.0,
    });
    app.on_key(key('a'));
    assert!(app.explorer.sentences.contains(&TEXTS[3].to_string()));
}

/// Drives the worker on its own thread; returns the request sender and the event receiver.
fn worker(
    cache: &std::path::Path,
) -> (
    std::sync::mpsc::Sender<CorpusRequest>,
    std::sync::mpsc::Receiver<CorpusEvent>,
) {
    let (tx, rx) = channel();
    let (etx, erx) = channel();
    let cache = cache.to_path_buf();
    std::thread::spawn(move || {
        Worker::new(
            rx,
            move |e| etx.send(e).is_ok(),
            WorkerOptions::default(),
            Some(cache),
        )
        .run()
    });
    (tx, erx)
}

/// Events until one that `done` accepts (progress skipped); panics after a minute.
fn until(
    rx: &std::sync::mpsc::Receiver<CorpusEvent>,
    done: impl Fn(&CorpusEvent) -> bool,
) -> CorpusEvent {
    loop {
        let e = rx.recv_timeout(Duration::from_secs(60)).expect("an answer");
        if let CorpusEvent::Failed { error, .. } = &e {
            panic!("{error}");
        }
        if done(&e) {
            return e;
        }
    }
}

#[test]
fn the_worker_opens_searches_clusters_mines_and_exports_with_the_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.txt");
    std::fs::write(&path, TEXTS.join("\n")).unwrap();
    let (tx, rx) = worker(cache.path());
    let open = |generation| CorpusRequest::Open {
        generation,
        path: path.clone(),
        format: CorpusFormat::Auto,
        column: None,
        model: fixture("tiny-bert-st").to_string_lossy().into_owned(),
        pooling: None,
        prompt: Prompt::ModelDefault,
    };
    tx.send(open(1)).unwrap();
    let CorpusEvent::Opened {
        corpus,
        cached,
        encoded,
        ..
    } = until(&rx, |e| matches!(e, CorpusEvent::Opened { .. }))
    else {
        unreachable!()
    };
    assert_eq!((corpus.len(), cached, encoded), (12, 0, 12));
    let CorpusEvent::Map { points, rows, .. } =
        until(&rx, |e| matches!(e, CorpusEvent::Map { .. }))
    else {
        unreachable!()
    };
    assert_eq!((points.len(), rows.len()), (12, 12));
    // The search ranks the query's own text first.
    tx.send(CorpusRequest::Search {
        generation: 1,
        query: TEXTS[6].into(),
    })
    .unwrap();
    let CorpusEvent::Hits { hits, .. } = until(&rx, |e| matches!(e, CorpusEvent::Hits { .. }))
    else {
        unreachable!()
    };
    assert_eq!(hits.len(), 10);
    // The query's own text scores 1 (the random tiny model may score another as high).
    let own = hits
        .iter()
        .find(|h| h.0 == 6)
        .expect("its own text is a hit");
    assert!(
        (own.1 - 1.0).abs() < 1e-5 && (hits[0].1 - own.1).abs() < 1e-5,
        "{hits:?}"
    );
    tx.send(CorpusRequest::Cluster {
        generation: 1,
        method: ClusterMethod::KMeans { k: 3 },
    })
    .unwrap();
    let CorpusEvent::Clusters {
        labels, clusters, ..
    } = until(&rx, |e| matches!(e, CorpusEvent::Clusters { .. }))
    else {
        unreachable!()
    };
    assert_eq!(clusters.len(), 3);
    assert!(labels.iter().all(Option::is_some));
    assert_eq!(clusters.iter().map(|c| c.size).sum::<usize>(), 12);
    tx.send(CorpusRequest::Mine { generation: 1 }).unwrap();
    let CorpusEvent::Pairs { total, pairs, .. } =
        until(&rx, |e| matches!(e, CorpusEvent::Pairs { .. }))
    else {
        unreachable!()
    };
    assert_eq!(
        total, 66,
        "every pair of 12 texts is a candidate at top_k 100"
    );
    assert!(pairs.windows(2).all(|w| w[0].0 >= w[1].0));
    let npy = dir.path().join("v.npy");
    tx.send(CorpusRequest::Export {
        generation: 1,
        path: npy.clone(),
    })
    .unwrap();
    until(&rx, |e| matches!(e, CorpusEvent::Exported { .. }));
    assert!(npy.is_file());
    // A request about another corpus is refused; reopening comes from the cache.
    tx.send(CorpusRequest::Mine { generation: 7 }).unwrap();
    let e = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(
        matches!(e, CorpusEvent::Failed { generation: 7, .. }),
        "{e:?}"
    );
    tx.send(open(2)).unwrap();
    let CorpusEvent::Opened {
        cached, encoded, ..
    } = until(&rx, |e| matches!(e, CorpusEvent::Opened { .. }))
    else {
        unreachable!()
    };
    assert_eq!((cached, encoded), (12, 0));
    // A file that cannot be read: one failure naming it.
    tx.send(CorpusRequest::Open {
        generation: 3,
        path: dir.path().join("missing.txt"),
        format: CorpusFormat::Auto,
        column: None,
        model: fixture("tiny-bert-st").to_string_lossy().into_owned(),
        pooling: None,
        prompt: Prompt::ModelDefault,
    })
    .unwrap();
    let e = loop {
        let e = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        if matches!(e, CorpusEvent::Failed { .. }) {
            break e;
        }
    };
    let CorpusEvent::Failed {
        error, generation, ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(generation, 3);
    assert!(error.contains("missing.txt"), "{error}");
}
