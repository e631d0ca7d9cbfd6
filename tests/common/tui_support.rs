//! Driving the app without a model: worker answers made up here.
#![allow(dead_code)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sbert_tui::tui::app::App;
use sbert_tui::tui::messages::{Embedded, ModelSummary, Request, Slot, TokenCount, WorkerEvent};
use sbert_tui::tui::ui;

/// The "fine-tuned" stand-in: the same letter counts with vowels weighed three times, so
/// similarities move.
pub fn tuned_vector(text: &str) -> Vec<f32> {
    let mut v = fake_vector(text);
    for c in [b'a', b'e', b'i', b'o', b'u'] {
        v[(c - b'a') as usize] *= 3.0;
    }
    v
}

/// A stand-in embedding: letter counts (a..z) plus length, so similar spellings are similar.
pub fn fake_vector(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; 27];
    for c in text.to_lowercase().chars() {
        if c.is_ascii_lowercase() {
            v[(c as u8 - b'a') as usize] += 1.0;
        } else if !c.is_whitespace() {
            v[(c as u32 % 26) as usize] += 0.5;
        }
    }
    v[26] = text.chars().count() as f32 / 10.0;
    v
}

/// The stand-in tokenizer: a token per word and two special ones; a word with a character from
/// U+2E80 on (CJK, emoji) is unknown, as it is to all-MiniLM-L6-v2's vocabulary; cut past 200
/// bytes.
pub fn fake_tokens(text: &str) -> TokenCount {
    let words: Vec<&str> = text.split_whitespace().collect();
    TokenCount {
        total: words.len() + 2,
        truncated: text.len() > 200,
        content: words.len(),
        unknown: words
            .iter()
            .filter(|w| w.chars().any(|c| c >= '\u{2E80}'))
            .count(),
    }
}

/// The stand-in pipeline: `[CLS]`, a token per word (unknown as in [`fake_tokens`]), `[SEP]`;
/// each token's vector its fake vector, mean pooling, then Normalize.
pub fn fake_pipeline(text: &str) -> sbert_tui::model::Pipeline {
    use sbert_tui::model::PipelineToken;
    let mut pieces = vec!["[CLS]".to_string()];
    pieces.extend(text.split_whitespace().map(|w| w.to_lowercase()));
    pieces.push("[SEP]".to_string());
    let n = pieces.len();
    let tokens: Vec<PipelineToken> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let special = i == 0 || i == n - 1;
            let unknown = !special && p.chars().any(|c| c >= '\u{2E80}');
            PipelineToken {
                piece: if unknown { "[UNK]".into() } else { p.clone() },
                id: if unknown { 100 } else { 1000 + i as u32 },
                special,
                unknown,
                pooled: true,
                weight: Some(1.0 / n as f32),
                vector: fake_vector(p),
            }
        })
        .collect();
    let mut mean = vec![0f32; 27];
    for t in &tokens {
        for (m, v) in mean.iter_mut().zip(&t.vector) {
            *m += v / n as f32;
        }
    }
    let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    let unit = mean.iter().map(|x| x / norm).collect();
    sbert_tui::model::Pipeline {
        tokens,
        truncated: false,
        dropped: 0,
        max_seq_length: 256,
        prompt_len: 0,
        pooling: sbert_tui::model::PoolingMode::Mean,
        stages: vec![("pooling mean".into(), mean), ("normalize".into(), unit)],
    }
}

pub fn summary() -> ModelSummary {
    ModelSummary {
        name: "sentence-transformers/all-MiniLM-L6-v2".into(),
        device: "cpu".into(),
        dim: 27,
        pooling: "mean".into(),
        max_seq_length: 256,
        normalize: true,
        similarity: "cosine".into(),
        prompts: vec![],
        prompt: None,
    }
}

/// Answers every pending request as the worker would; returns how many texts were embedded.
pub fn serve(app: &mut App) -> usize {
    let mut embedded = 0;
    loop {
        let requests = app.take_requests();
        if requests.is_empty() {
            return embedded;
        }
        for r in requests {
            let event = match r {
                Request::Load {
                    slot, generation, ..
                }
                | Request::SetPooling {
                    slot, generation, ..
                }
                | Request::SetPrompt {
                    slot, generation, ..
                } => WorkerEvent::Loaded {
                    slot,
                    generation,
                    model: summary(),
                },
                Request::Unload { .. } => continue,
                // Stand-in prompts: none, query, passage, the fake cosine lowered off the
                // diagonal.
                Request::PromptTable {
                    slot,
                    generation,
                    pair,
                } => {
                    let labels: Vec<String> = ["none", "query", "passage"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                    let matrix = (0..3)
                        .map(|i| {
                            (0..3)
                                .map(|j| {
                                    if i == j {
                                        0.9
                                    } else {
                                        0.8 - 0.1 * (i + j) as f32
                                    }
                                })
                                .collect()
                        })
                        .collect();
                    WorkerEvent::PromptTable {
                        slot,
                        generation,
                        pair,
                        table: Ok((labels, matrix)),
                    }
                }
                Request::Pipeline {
                    slot,
                    generation,
                    text,
                } => WorkerEvent::Pipeline {
                    slot,
                    generation,
                    pipeline: Ok(fake_pipeline(&text)),
                    text,
                },
                // Stand-in copies: the fake vector with copy i's dimension i nudged.
                Request::Dropout {
                    slot,
                    generation,
                    text,
                    copies,
                    ..
                } => {
                    let eval = fake_vector(&text);
                    let copies = (0..copies)
                        .map(|i| {
                            let mut v = eval.clone();
                            v[i % 26] += 0.3;
                            v
                        })
                        .collect();
                    WorkerEvent::Dropout {
                        slot,
                        generation,
                        text,
                        cloud: Ok(sbert_tui::tui::messages::DropoutCloud { eval, copies }),
                    }
                }
                // Stand-in times: 10 ms a sentence, 20 ms a pair, 1 µs for the dot products.
                Request::Cost {
                    slot,
                    generation,
                    texts,
                    cross_encoder,
                } => {
                    let n = texts.len();
                    // A stand-in cross-encoder: 5 ms a pair, scoring a pair by its fake cosine
                    // raised a little.
                    let cross_encoder = cross_encoder.map(|folder| {
                        use sbert_tui::model::cost::{CrossEncoderCost, PairScore};
                        let cos = |a: &str, b: &str| {
                            let (a, b) = (fake_vector(a), fake_vector(b));
                            let d: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
                            let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
                            d / (n(&a) * n(&b))
                        };
                        let mut pairs = Vec::new();
                        for i in 0..n {
                            for j in i + 1..n {
                                let bi = cos(&texts[i], &texts[j]);
                                pairs.push(PairScore {
                                    i,
                                    j,
                                    cross: vec![(bi + 0.1).min(1.0)],
                                    bi,
                                });
                            }
                        }
                        CrossEncoderCost {
                            model: folder,
                            labels: vec!["LABEL_0".into()],
                            measured: pairs.len(),
                            measured_seconds: 0.005 * pairs.len() as f64,
                            seconds: 0.005 * pairs.len() as f64,
                            seconds_10k: 0.005 * 10_000f64 * 9_999f64 / 2.0,
                            pairs,
                        }
                    });
                    let pairs = n * (n - 1) / 2;
                    let big = 10_000f64;
                    WorkerEvent::Cost {
                        slot,
                        generation,
                        report: Ok(sbert_tui::model::cost::CostReport {
                            n,
                            bi_passes: n,
                            bi_seconds: 0.01 * n as f64,
                            dot_seconds: 1e-6,
                            cross_passes: pairs,
                            cross_measured: pairs.min(300),
                            cross_seconds: 0.02 * pairs as f64,
                            bi_seconds_10k: 0.01 * big,
                            cross_seconds_10k: 0.02 * big * (big - 1.0) / 2.0,
                            cross_encoder,
                        }),
                    }
                }
                // Stand-in numbers: the fake vectors' cosine, lowered a little per mode.
                Request::PoolingTable {
                    slot,
                    generation,
                    pair,
                } => {
                    let (a, b) = (fake_vector(&pair.0), fake_vector(&pair.1));
                    let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
                    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    let cos = dot / (norm(&a) * norm(&b));
                    let rows = sbert_tui::model::PoolingMode::FROM_TOKENS
                        .iter()
                        .enumerate()
                        .map(|(i, m)| (m.name().to_string(), cos - 0.05 * i as f32))
                        .collect();
                    WorkerEvent::PoolingTable {
                        slot,
                        generation,
                        pair,
                        rows: Ok(rows),
                        dense: false,
                    }
                }
                Request::Embed {
                    slot,
                    id,
                    generation,
                    texts,
                } => {
                    embedded += texts.len();
                    WorkerEvent::Embedded {
                        slot,
                        id,
                        generation,
                        items: texts
                            .into_iter()
                            .map(|t| Embedded {
                                vector: if slot == Slot::Tuned {
                                    tuned_vector(&t)
                                } else {
                                    fake_vector(&t)
                                },
                                tokens: fake_tokens(&t),
                                text: t,
                            })
                            .collect(),
                        millis: 12.0,
                    }
                }
            };
            app.on_worker(event);
        }
    }
}

pub fn ready_app(sentences: &[&str], color: bool) -> App {
    let mut app = App::new(sentences.iter().map(|s| s.to_string()).collect(), color);
    app.load_model("sentence-transformers/all-MiniLM-L6-v2", None);
    serve(&mut app);
    app
}

pub fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

pub fn code(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

pub fn type_str(app: &mut App, s: &str) {
    for c in s.chars() {
        app.on_key(key(c));
    }
}

pub fn render(app: &mut App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    let mut hits = Default::default();
    terminal.draw(|f| hits = ui::draw(app, f)).unwrap();
    app.hits = hits;
    terminal
}
