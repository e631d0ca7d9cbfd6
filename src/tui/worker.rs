//! The embedding worker: a thread that owns the model. It takes requests from a channel, keeps
//! only the newest of each kind (a burst of keystrokes becomes one embedding pass), and sends
//! owned results back. It stops when either channel closes.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use crate::model::{self, LoadOptions, PoolingSpec, SentenceEncoder, SourceOptions};

use super::messages::{Embedded, ModelSummary, Request, WorkerEvent};

/// Starts the worker; events go through `send` (wrapped by `wrap` into the UI's event type).
pub fn spawn<E: Send + 'static>(
    send: Sender<E>,
    wrap: fn(WorkerEvent) -> E,
    device: model::DeviceChoice,
    max_seq_length: Option<usize>,
) -> Sender<Request> {
    let (tx, rx) = channel::<Request>();
    std::thread::Builder::new()
        .name("embedding-worker".into())
        .spawn(move || {
            run(
                rx,
                move |e| send.send(wrap(e)).is_ok(),
                device,
                max_seq_length,
            )
        })
        .expect("spawn the embedding worker");
    tx
}

fn summary(name: &str, enc: &SentenceEncoder) -> ModelSummary {
    let i = enc.info();
    ModelSummary {
        name: name.to_string(),
        device: i.device.clone(),
        dim: i.embedding_dim,
        pooling: i.pooling.to_string(),
        max_seq_length: i.max_seq_length,
        normalize: i.normalize,
    }
}

/// The worker loop, separate from the thread so tests can drive it.
pub fn run(
    rx: Receiver<Request>,
    send: impl Fn(WorkerEvent) -> bool,
    device: model::DeviceChoice,
    max_seq_length: Option<usize>,
) {
    let mut encoder: Option<(String, SentenceEncoder)> = None;
    while let Ok(first) = rx.recv() {
        // Drain what has queued up meanwhile: only the newest of each kind matters.
        let mut load = None;
        let mut pooling = None;
        let mut embed = None;
        for req in std::iter::once(first).chain(rx.try_iter()) {
            match req {
                r @ Request::Load { .. } => {
                    load = Some(r);
                    pooling = None;
                    embed = None;
                }
                r @ Request::SetPooling { .. } => pooling = Some(r),
                r @ Request::Embed { .. } => embed = Some(r),
            }
        }
        if let Some(Request::Load {
            generation,
            spec,
            pooling: pool,
        }) = load
        {
            // The current model stays until the new one has loaded, so a failed load leaves
            // the explorer working.
            if !send(WorkerEvent::Progress {
                generation,
                message: format!("loading {spec}…"),
            }) {
                return;
            }
            let result = pool
                .as_deref()
                .map(str::parse::<PoolingSpec>)
                .transpose()
                .map_err(|e| e.to_string())
                .and_then(|pooling| {
                    let mut source = SourceOptions::from_env();
                    source.progress = false; // never write to the terminal the UI owns
                    let options = LoadOptions {
                        device,
                        pooling,
                        max_seq_length,
                    };
                    model::load(&spec, &source, &options).map_err(|e| e.to_string())
                });
            let event = match result {
                Ok(enc) => {
                    let event = WorkerEvent::Loaded {
                        generation,
                        model: summary(&spec, &enc),
                    };
                    encoder = Some((spec, enc));
                    event
                }
                Err(error) => WorkerEvent::LoadFailed { generation, error },
            };
            if !send(event) {
                return;
            }
        }
        if let Some(Request::SetPooling {
            generation,
            pooling,
        }) = pooling
        {
            let event = match (&mut encoder, pooling.parse::<PoolingSpec>()) {
                (None, _) => WorkerEvent::LoadFailed {
                    generation,
                    error: "no model is loaded".into(),
                },
                (_, Err(e)) => WorkerEvent::LoadFailed {
                    generation,
                    error: e,
                },
                (Some((name, enc)), Ok(spec)) => match enc.set_pooling(spec) {
                    Ok(()) => WorkerEvent::Loaded {
                        generation,
                        model: summary(name, enc),
                    },
                    Err(e) => WorkerEvent::LoadFailed {
                        generation,
                        error: e.to_string(),
                    },
                },
            };
            if !send(event) {
                return;
            }
        }
        if let Some(Request::Embed {
            id,
            generation,
            texts,
        }) = embed
        {
            let Some((_, enc)) = &encoder else {
                continue;
            };
            let start = Instant::now();
            let event = match embed_texts(enc, texts) {
                Ok(items) => WorkerEvent::Embedded {
                    id,
                    generation,
                    items,
                    millis: start.elapsed().as_secs_f64() * 1000.0,
                },
                Err(e) => WorkerEvent::EmbedFailed {
                    id,
                    error: e.to_string(),
                },
            };
            if !send(event) {
                return;
            }
        }
    }
}

fn embed_texts(enc: &SentenceEncoder, texts: Vec<String>) -> model::Result<Vec<Embedded>> {
    let tokenized = enc.tokenize(&texts)?;
    let vectors = enc.encode(&texts, 32, &mut |_, _| {})?;
    Ok(texts
        .into_iter()
        .zip(vectors)
        .zip(tokenized)
        .map(|((text, vector), t)| Embedded {
            text,
            vector,
            tokens: t.ids.len(),
            truncated: t.truncated,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tiny() -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny-bert-st")
            .to_string_lossy()
            .into_owned()
    }

    /// Queues requests before the worker starts, so the coalescing is deterministic.
    fn run_all(requests: Vec<Request>) -> Vec<WorkerEvent> {
        let (tx, rx) = channel();
        for r in requests {
            tx.send(r).unwrap();
        }
        drop(tx);
        let events = std::sync::Mutex::new(Vec::new());
        run(
            rx,
            |e| {
                events.lock().unwrap().push(e);
                true
            },
            model::DeviceChoice::Cpu,
            None,
        );
        events.into_inner().unwrap()
    }

    #[test]
    fn only_the_newest_embed_request_is_served() {
        let embed = |id, t: &str| Request::Embed {
            id,
            generation: 1,
            texts: vec![t.to_string()],
        };
        let events = run_all(vec![
            Request::Load {
                generation: 1,
                spec: tiny(),
                pooling: None,
            },
            embed(1, "a"),
            embed(2, "ab"),
            embed(3, "abc"),
        ]);
        assert!(matches!(events[0], WorkerEvent::Progress { .. }));
        let WorkerEvent::Loaded { model, .. } = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(model.dim, 16);
        assert_eq!(events.len(), 3, "one embedding pass: {events:?}");
        let WorkerEvent::Embedded { id, items, .. } = &events[2] else {
            panic!()
        };
        assert_eq!(*id, 3);
        assert_eq!(items[0].text, "abc");
        assert_eq!(items[0].vector.len(), 16);
    }

    #[test]
    fn a_bad_model_and_a_bad_pooling_are_reported() {
        let events = run_all(vec![Request::Load {
            generation: 4,
            spec: "./no/such/model".into(),
            pooling: None,
        }]);
        assert!(
            matches!(&events[1], WorkerEvent::LoadFailed { generation: 4, error } if error.contains("does not exist"))
        );
        let events = run_all(vec![
            Request::Load {
                generation: 1,
                spec: tiny(),
                pooling: None,
            },
            Request::SetPooling {
                generation: 2,
                pooling: "cls+max".into(),
            },
        ]);
        assert!(
            matches!(&events[2], WorkerEvent::LoadFailed { generation: 2, error } if error.contains("Dense module expects 32")),
            "{events:?}"
        );
    }
}
