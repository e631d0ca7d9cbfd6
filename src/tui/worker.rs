//! The embedding worker: a thread that owns the model. It takes requests from a channel, keeps
//! only the newest of each kind (a burst of keystrokes becomes one embedding pass), and sends
//! owned results back. It stops when either channel closes.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use crate::model::{self, LoadOptions, PoolingSpec, Prompt, SentenceEncoder, SourceOptions};

use super::messages::{
    DropoutCloud, Embedded, ModelSummary, Request, Slot, TokenCount, WorkerEvent,
};

/// How the worker loads models (the command line's choices).
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerOptions {
    pub device: model::DeviceChoice,
    pub max_seq_length: Option<usize>,
    pub truncate_dim: Option<usize>,
    pub precision: model::Precision,
}

/// Starts the worker; events go through `send` (wrapped by `wrap` into the UI's event type).
pub fn spawn<E: Send + 'static>(
    send: Sender<E>,
    wrap: fn(WorkerEvent) -> E,
    options: WorkerOptions,
) -> Sender<Request> {
    let (tx, rx) = channel::<Request>();
    std::thread::Builder::new()
        .name("embedding-worker".into())
        .spawn(move || run(rx, move |e| send.send(wrap(e)).is_ok(), options))
        .expect("spawn the embedding worker");
    tx
}

/// A loaded model: its name, the encoder, and the prompt its texts get.
struct Loaded {
    name: String,
    encoder: SentenceEncoder,
    prompt: Prompt,
}

fn summary(m: &Loaded) -> ModelSummary {
    let i = m.encoder.info();
    ModelSummary {
        name: m.name.clone(),
        // `cpu int8` where the explorer runs quantised.
        device: match i.precision {
            model::Precision::F32 => i.device.clone(),
            p => format!("{} {p}", i.device),
        },
        dim: i.embedding_dim,
        pooling: i.pooling.to_string(),
        max_seq_length: i.max_seq_length,
        normalize: i.normalize,
        similarity: i.similarity.name().to_string(),
        prompts: i.prompts.keys().cloned().collect(),
        prompt: match &m.prompt {
            Prompt::Name(n) => Some(n.clone()),
            Prompt::Text(t) if !t.is_empty() => Some(format!("{t:?}")),
            Prompt::ModelDefault => i.default_prompt_name.clone(),
            Prompt::None | Prompt::Text(_) => None,
        },
    }
}

/// Pairs the cost demonstration runs through the transformer at most (the rest extrapolated):
/// a few seconds on two cores with all-MiniLM-L6-v2.
pub const COST_MAX_PAIRS: usize = 300;

/// The worker loop, separate from the thread so tests can drive it.
pub fn run(rx: Receiver<Request>, send: impl Fn(WorkerEvent) -> bool, options: WorkerOptions) {
    let mut encoders: HashMap<Slot, Loaded> = HashMap::new();
    let mut cross = CrossCache::default();
    while let Ok(first) = rx.recv() {
        // Drain what has queued up meanwhile: per slot, only the newest of each kind matters,
        // in the order load, pooling, embed.
        let mut work: Vec<(Slot, Pending)> = Vec::new();
        for req in std::iter::once(first).chain(rx.try_iter()) {
            let slot = match &req {
                Request::Load { slot, .. }
                | Request::SetPooling { slot, .. }
                | Request::SetPrompt { slot, .. }
                | Request::PoolingTable { slot, .. }
                | Request::Cost { slot, .. }
                | Request::PromptTable { slot, .. }
                | Request::Pipeline { slot, .. }
                | Request::Dropout { slot, .. }
                | Request::Unload { slot }
                | Request::Embed { slot, .. } => *slot,
            };
            let p = match work.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, p)) => p,
                None => {
                    work.push((slot, Pending::default()));
                    &mut work.last_mut().expect("just pushed").1
                }
            };
            match req {
                r @ (Request::Load { .. } | Request::Unload { .. }) => {
                    *p = Pending::default();
                    p.load = Some(r);
                }
                r @ Request::SetPooling { .. } => p.pooling = Some(r),
                r @ Request::SetPrompt { .. } => p.prompt = Some(r),
                r @ Request::Embed { .. } => p.embed = Some(r),
                r @ (Request::PoolingTable { .. }
                | Request::Cost { .. }
                | Request::PromptTable { .. }
                | Request::Pipeline { .. }
                | Request::Dropout { .. }) => p.demo = Some(r),
            }
        }
        for (slot, p) in work {
            // A panic while loading or embedding (a malformed model file, say) is reported as a
            // failure of that request; the worker, and the app, go on.
            let failed = request_ids(&p);
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve(slot, p, &mut encoders, &mut cross, &send, options)
            }));
            match served {
                Ok(true) => {}
                Ok(false) => return,
                Err(panic) => {
                    encoders.remove(&slot);
                    let error = format!("the model crashed: {}", super::panic_message(&panic));
                    let event = match failed {
                        (Some(generation), _) => WorkerEvent::LoadFailed {
                            slot,
                            generation,
                            error,
                        },
                        (None, Some(id)) => WorkerEvent::EmbedFailed { slot, id, error },
                        (None, None) => continue,
                    };
                    if !send(event) {
                        return;
                    }
                }
            }
        }
    }
}

/// The generation of a pending load or pooling change, and the id of a pending embedding.
fn request_ids(p: &Pending) -> (Option<u64>, Option<u64>) {
    let generation = match (&p.load, &p.pooling, &p.prompt) {
        (Some(Request::Load { generation, .. }), _, _)
        | (_, Some(Request::SetPooling { generation, .. }), _)
        | (_, _, Some(Request::SetPrompt { generation, .. })) => Some(*generation),
        _ => None,
    };
    let id = match &p.embed {
        Some(Request::Embed { id, .. }) => Some(*id),
        _ => None,
    };
    (generation, id)
}

#[derive(Default)]
struct Pending {
    load: Option<Request>,
    pooling: Option<Request>,
    prompt: Option<Request>,
    embed: Option<Request>,
    /// A demonstration (pooling table, prompt table, cost): only the newest is served, as the
    /// UI shows one at a time.
    demo: Option<Request>,
}

/// The cross-encoder the cost demonstration last loaded, kept for the next one.
#[derive(Default)]
struct CrossCache(Option<(String, model::cross_encoder::CrossEncoder)>);

impl CrossCache {
    fn get(
        &mut self,
        folder: &str,
        device: model::DeviceChoice,
    ) -> Result<&model::cross_encoder::CrossEncoder, String> {
        if self.0.as_ref().is_none_or(|(f, _)| f != folder) {
            self.0 = None;
            let ce = model::cross_encoder::CrossEncoder::load(std::path::Path::new(folder), device)
                .map_err(|e| format!("cross-encoder: {e}"))?;
            self.0 = Some((folder.to_string(), ce));
        }
        Ok(&self.0.as_ref().expect("just loaded").1)
    }
}

/// The answer to a demonstration request, computed on the model in `slot` (`m`).
fn demo_event(
    slot: Slot,
    req: Request,
    m: Option<&Loaded>,
    cross: &mut CrossCache,
    device: model::DeviceChoice,
) -> Option<WorkerEvent> {
    let model = m.ok_or_else(|| "no model is loaded".to_string());
    let err = |e: model::ModelError| e.to_string();
    Some(match req {
        Request::PoolingTable {
            generation, pair, ..
        } => WorkerEvent::PoolingTable {
            rows: model.and_then(|m| {
                let rows = m.encoder.pooling_table(&pair.0, &pair.1, &m.prompt);
                rows.map_err(err).map(|rows| {
                    rows.into_iter()
                        .map(|(mode, v)| (mode.name().to_string(), v))
                        .collect()
                })
            }),
            dense: m.is_some_and(|m| m.encoder.info().dense_layers > 0),
            slot,
            generation,
            pair,
        },
        Request::PromptTable {
            generation, pair, ..
        } => WorkerEvent::PromptTable {
            table: model.and_then(|m| m.encoder.prompt_table(&pair.0, &pair.1).map_err(err)),
            slot,
            generation,
            pair,
        },
        Request::Pipeline {
            generation, text, ..
        } => WorkerEvent::Pipeline {
            pipeline: model.and_then(|m| m.encoder.pipeline(&text, &m.prompt).map_err(err)),
            slot,
            generation,
            text,
        },
        Request::Dropout {
            generation,
            text,
            copies,
            seed,
            ..
        } => WorkerEvent::Dropout {
            cloud: model.and_then(|m| {
                let eval = m
                    .encoder
                    .encode_prompted(&[&text], &m.prompt, 1, &mut |_, _| {})
                    .map_err(err)?
                    .remove(0);
                let copies = m
                    .encoder
                    .dropout_views(&text, &m.prompt, copies, seed)
                    .map_err(err)?;
                Ok(DropoutCloud { eval, copies })
            }),
            slot,
            generation,
            text,
        },
        Request::Cost {
            generation,
            texts,
            cross_encoder,
            ..
        } => WorkerEvent::Cost {
            report: model.and_then(|m| {
                let ce = match &cross_encoder {
                    Some(folder) => Some(cross.get(folder, device)?),
                    None => None,
                };
                model::cost::measure_with_cross(&m.encoder, &texts, &m.prompt, COST_MAX_PAIRS, ce)
                    .map_err(err)
            }),
            slot,
            generation,
        },
        _ => return None,
    })
}

/// Serves one slot's requests; false when the UI has gone.
fn serve(
    slot: Slot,
    p: Pending,
    encoders: &mut HashMap<Slot, Loaded>,
    cross: &mut CrossCache,
    send: &impl Fn(WorkerEvent) -> bool,
    options: WorkerOptions,
) -> bool {
    match p.load {
        Some(Request::Unload { .. }) => {
            encoders.remove(&slot);
        }
        Some(Request::Load {
            generation,
            spec,
            pooling,
            prompt,
            ..
        }) => {
            // The current model stays until the new one has loaded, so a failed load leaves
            // the explorer working.
            if !send(WorkerEvent::Progress {
                slot,
                generation,
                message: format!("loading {spec}…"),
            }) {
                return false;
            }
            let result = pooling
                .as_deref()
                .map(str::parse::<PoolingSpec>)
                .transpose()
                .map_err(|e| e.to_string())
                .and_then(|pooling| {
                    let mut source = SourceOptions::from_env();
                    source.progress = false; // never write to the terminal the UI owns
                    let options = LoadOptions {
                        device: options.device,
                        pooling,
                        max_seq_length: options.max_seq_length,
                        truncate_dim: options.truncate_dim,
                        precision: options.precision,
                    };
                    let enc = model::load(&spec, &source, &options).map_err(|e| e.to_string())?;
                    enc.prompt_text(&prompt).map_err(|e| e.to_string())?;
                    Ok(enc)
                });
            let event = match result {
                Ok(encoder) => {
                    let loaded = Loaded {
                        name: spec,
                        encoder,
                        prompt,
                    };
                    let event = WorkerEvent::Loaded {
                        slot,
                        generation,
                        model: summary(&loaded),
                    };
                    encoders.insert(slot, loaded);
                    event
                }
                Err(error) => WorkerEvent::LoadFailed {
                    slot,
                    generation,
                    error,
                },
            };
            if !send(event) {
                return false;
            }
        }
        _ => {}
    }
    if let Some(Request::SetPooling {
        generation,
        pooling,
        ..
    }) = p.pooling
    {
        let event = match (encoders.get_mut(&slot), pooling.parse::<PoolingSpec>()) {
            (None, _) => WorkerEvent::LoadFailed {
                slot,
                generation,
                error: "no model is loaded".into(),
            },
            (_, Err(e)) => WorkerEvent::LoadFailed {
                slot,
                generation,
                error: e,
            },
            (Some(m), Ok(spec)) => match m.encoder.set_pooling(spec) {
                Ok(()) => WorkerEvent::Loaded {
                    slot,
                    generation,
                    model: summary(m),
                },
                Err(e) => WorkerEvent::LoadFailed {
                    slot,
                    generation,
                    error: e.to_string(),
                },
            },
        };
        if !send(event) {
            return false;
        }
    }
    if let Some(Request::SetPrompt {
        generation, prompt, ..
    }) = p.prompt
    {
        let event = match encoders.get_mut(&slot) {
            None => WorkerEvent::LoadFailed {
                slot,
                generation,
                error: "no model is loaded".into(),
            },
            Some(m) => match m.encoder.prompt_text(&prompt) {
                Ok(_) => {
                    m.prompt = prompt;
                    WorkerEvent::Loaded {
                        slot,
                        generation,
                        model: summary(m),
                    }
                }
                Err(e) => WorkerEvent::LoadFailed {
                    slot,
                    generation,
                    error: e.to_string(),
                },
            },
        };
        if !send(event) {
            return false;
        }
    }
    if let Some(req) = p.demo
        && let Some(event) = demo_event(slot, req, encoders.get(&slot), cross, options.device)
        && !send(event)
    {
        return false;
    }
    if let Some(Request::Embed {
        id,
        generation,
        texts,
        ..
    }) = p.embed
    {
        let Some(m) = encoders.get(&slot) else {
            return true;
        };
        let start = Instant::now();
        let event = match embed_texts(&m.encoder, &m.prompt, texts) {
            Ok(items) => WorkerEvent::Embedded {
                slot,
                id,
                generation,
                items,
                millis: start.elapsed().as_secs_f64() * 1000.0,
            },
            Err(e) => WorkerEvent::EmbedFailed {
                slot,
                id,
                error: e.to_string(),
            },
        };
        if !send(event) {
            return false;
        }
    }
    true
}

fn embed_texts(
    enc: &SentenceEncoder,
    prompt: &Prompt,
    texts: Vec<String>,
) -> model::Result<Vec<Embedded>> {
    let tokenized = enc.tokenize_prompted(&texts, prompt)?;
    let vectors = enc.encode_tokenized(&tokenized, 32, &mut |_, _| {})?;
    Ok(texts
        .into_iter()
        .zip(vectors)
        .zip(tokenized)
        .map(|((text, vector), t)| Embedded {
            text,
            vector,
            tokens: TokenCount {
                total: t.ids.len(),
                truncated: t.truncated,
                content: t.content,
                unknown: t.unknown,
            },
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
            WorkerOptions {
                device: model::DeviceChoice::Cpu,
                ..Default::default()
            },
        );
        events.into_inner().unwrap()
    }

    #[test]
    fn only_the_newest_embed_request_is_served() {
        let embed = |id, t: &str| Request::Embed {
            slot: Slot::Base,
            id,
            generation: 1,
            texts: vec![t.to_string()],
        };
        let events = run_all(vec![
            Request::Load {
                slot: Slot::Base,
                generation: 1,
                spec: tiny(),
                pooling: None,
                prompt: Prompt::ModelDefault,
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
            slot: Slot::Base,
            generation: 4,
            spec: "./no/such/model".into(),
            pooling: None,
            prompt: Prompt::ModelDefault,
        }]);
        assert!(
            matches!(&events[1], WorkerEvent::LoadFailed { generation: 4, error, .. } if error.contains("does not exist"))
        );
        let events = run_all(vec![
            Request::Load {
                slot: Slot::Base,
                generation: 1,
                spec: tiny(),
                pooling: None,
                prompt: Prompt::ModelDefault,
            },
            Request::SetPooling {
                slot: Slot::Base,
                generation: 2,
                pooling: "cls+max".into(),
            },
        ]);
        assert!(
            matches!(&events[2], WorkerEvent::LoadFailed { generation: 2, error, .. } if error.contains("Dense module expects 32")),
            "{events:?}"
        );
    }

    #[test]
    fn two_models_side_by_side() {
        let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut requests = Vec::new();
        for (slot, dir) in [(Slot::Base, "tiny-bert-st"), (Slot::Tuned, "tiny-xlmr-st")] {
            requests.push(Request::Load {
                slot,
                generation: 1,
                spec: tiny.join(dir).to_string_lossy().into_owned(),
                pooling: None,
                prompt: Prompt::ModelDefault,
            });
            requests.push(Request::Embed {
                slot,
                id: 1,
                generation: 1,
                texts: vec!["hello".into()],
            });
        }
        let dims: Vec<(Slot, usize)> = run_all(requests)
            .into_iter()
            .filter_map(|e| match e {
                WorkerEvent::Embedded { slot, items, .. } => Some((slot, items[0].vector.len())),
                _ => None,
            })
            .collect();
        assert_eq!(dims, vec![(Slot::Base, 16), (Slot::Tuned, 32)]);
    }
}
