//! The explorer with the real worker thread and the real all-MiniLM-L6-v2: what a workshop sees
//! when it switches pooling or model.

mod common;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use common::tui_support::key;
use common::*;
use sbert_tui::model::DeviceChoice;
use sbert_tui::tui::app::App;
use sbert_tui::tui::messages::{Request, WorkerEvent};
use sbert_tui::tui::worker;

struct Live {
    app: App,
    requests: Sender<Request>,
    events: Receiver<WorkerEvent>,
}

impl Live {
    fn new(sentences: &[&str], model: &str) -> Self {
        let (tx, events) = channel();
        let requests = worker::spawn(
            tx,
            |e| e,
            worker::WorkerOptions {
                device: DeviceChoice::Cpu,
                ..Default::default()
            },
        );
        let mut app = App::new(sentences.iter().map(|s| s.to_string()).collect(), false);
        app.load_model(model, None);
        let mut live = Live {
            app,
            requests,
            events,
        };
        live.settle();
        live
    }

    /// Passes requests to the worker and its answers to the app until nothing is pending.
    fn settle(&mut self) {
        let start = Instant::now();
        loop {
            for r in self.app.take_requests() {
                self.requests.send(r).unwrap();
            }
            let e = &self.app.explorer;
            let waiting = e.pending()
                || !e.base.ready()
                || e.analysis
                    .as_ref()
                    .is_none_or(|a| a.generations.0 != e.base.generation);
            if !waiting {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the worker did not answer"
            );
            if let Ok(e) = self.events.recv_timeout(Duration::from_millis(100)) {
                self.app.on_worker(e);
            }
        }
    }

    fn cell(&self, i: usize, j: usize) -> f32 {
        let a = self.app.explorer.analysis.as_ref().unwrap();
        a.value(self.app.explorer.view, i, j)
    }
}

#[test]
fn switching_pooling_or_model_changes_the_matrix() {
    // all-MiniLM-L6-v2 gives these two 0.69 with mean pooling and 0.85 with max pooling
    // (`sbert-tui similarity --pooling max` gives the same; the pooled vectors are checked against
    // Python in tests/parity_minilm.rs).
    let pair = [
        "A man is playing a guitar.",
        "A person is playing a musical instrument.",
        "The stock market fell today.",
    ];
    let minilm = minilm_dir();
    let mut live = Live::new(&pair, minilm.to_str().unwrap());
    let mean = live.cell(0, 1);
    assert!((mean - 0.69).abs() < 0.01, "mean pooling: {mean}");
    live.app.on_key(key('p')); // mean -> max
    live.settle();
    let max = live.cell(0, 1);
    assert!((max - 0.85).abs() < 0.01, "max pooling: {max}");

    // Another model: the tiny fixture gives other numbers.
    let before = live.cell(0, 2);
    live.app
        .load_model(fixture("tiny-bert-st").to_str().unwrap(), None);
    live.settle();
    assert_ne!(live.cell(0, 2), before);
}
