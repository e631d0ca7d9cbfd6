//! The corpus screen: a whole file of texts, embedded once (through the vector cache) by the
//! corpus worker, then searched as you type, clustered, mined for paraphrases and mapped. It
//! owns what the worker answered and the list on show; it asks through the shell's corpus
//! outbox and knows nothing of models.

use std::path::PathBuf;
use std::sync::Arc;

use super::corpus_worker::{ClusterMethod, ClusterSummary, CorpusEvent, CorpusRequest, CorpusTask};
use super::i18n::{tr, tr_with};
use super::keys::Action;
use super::shell::{CorpusInput, EditTarget, Shell};
use crate::analysis::maps::MapMethod;
use crate::analysis::similarity::Similarity;
use crate::corpus::{Corpus, CorpusFormat};
use crate::lessons::Lang;
use crate::model::Prompt;

/// Which list the left pane shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListKind {
    #[default]
    Hits,
    Clusters,
    Pairs,
}

impl ListKind {
    fn next(self) -> Self {
        match self {
            ListKind::Hits => ListKind::Clusters,
            ListKind::Clusters => ListKind::Pairs,
            ListKind::Pairs => ListKind::Hits,
        }
    }
}

/// The open corpus, as the worker described it.
#[derive(Debug, Clone)]
pub struct OpenCorpus {
    pub corpus: Arc<Corpus>,
    pub dim: usize,
    pub similarity: Similarity,
    pub cached: usize,
    pub encoded: usize,
    pub millis: f64,
    pub cache: Result<PathBuf, String>,
}

/// A task the worker is running, with its last progress.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    pub task: CorpusTask,
    pub done: usize,
    pub total: usize,
    pub note: String,
}

/// A map as the worker computed it.
#[derive(Debug, Clone, PartialEq)]
pub struct MapView {
    pub method: MapMethod,
    pub rows: Vec<usize>,
    pub points: Vec<[f32; 2]>,
    pub millis: f64,
}

/// Clusters as the worker computed them.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub method: ClusterMethod,
    pub labels: Vec<Option<u32>>,
    pub clusters: Vec<ClusterSummary>,
    pub millis: f64,
}

/// Mined pairs as the worker found them.
#[derive(Debug, Clone, PartialEq)]
pub struct PairsView {
    pub pairs: Vec<(f32, usize, usize)>,
    pub total: usize,
    pub millis: f64,
}

#[derive(Debug, Clone, Default)]
pub struct CorpusScreen {
    /// Changes with every corpus opened; older answers are dropped.
    pub generation: u64,
    /// The file being opened or open.
    pub path: Option<String>,
    pub open: Option<OpenCorpus>,
    pub task: Option<TaskState>,
    pub query: String,
    pub hits: Vec<(usize, f32)>,
    pub hits_millis: Option<f64>,
    pub map: Option<MapView>,
    pub map_method: Option<MapMethod>,
    pub clusters: Option<ClusterView>,
    pub pairs: Option<PairsView>,
    pub list: ListKind,
    pub cursor: usize,
    /// Last values typed for the cluster questions.
    pub communities_input: Option<String>,
    pub kmeans_input: Option<String>,
    pub export_input: Option<String>,
}

impl CorpusScreen {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens `path` with the explorer's model (`model`, its pooling and prompt).
    pub fn open_file(
        &mut self,
        path: &str,
        model: Option<(String, String)>,
        prompt: Prompt,
        shell: &mut Shell,
        lang: Lang,
    ) {
        let Some((spec, pooling)) = model else {
            return shell.set_status(tr(lang, "corpus.no_model"), true);
        };
        self.generation += 1;
        let generation = self.generation;
        *self = CorpusScreen {
            generation,
            path: Some(path.to_string()),
            task: Some(TaskState {
                task: CorpusTask::Embed,
                done: 0,
                total: 0,
                note: String::new(),
            }),
            communities_input: self.communities_input.take(),
            kmeans_input: self.kmeans_input.take(),
            export_input: self.export_input.take(),
            ..CorpusScreen::default()
        };
        shell.corpus_request(CorpusRequest::Open {
            generation,
            path: PathBuf::from(path),
            format: CorpusFormat::Auto,
            column: None,
            model: spec,
            pooling: Some(pooling),
            prompt,
        });
    }

    /// The rows of the list on show.
    pub fn list_len(&self) -> usize {
        match self.list {
            ListKind::Hits => self.hits.len(),
            ListKind::Clusters => self.clusters.as_ref().map_or(0, |c| c.clusters.len()),
            ListKind::Pairs => self.pairs.as_ref().map_or(0, |p| p.pairs.len()),
        }
    }

    /// The corpus rows the cursor stands for: a hit, a cluster's central members, a pair.
    pub fn selected_rows(&self) -> Vec<usize> {
        match self.list {
            ListKind::Hits => self
                .hits
                .get(self.cursor)
                .map(|h| h.0)
                .into_iter()
                .collect(),
            ListKind::Clusters => self
                .clusters
                .as_ref()
                .and_then(|c| c.clusters.get(self.cursor))
                .map_or_else(Vec::new, |c| c.central.clone()),
            ListKind::Pairs => self
                .pairs
                .as_ref()
                .and_then(|p| p.pairs.get(self.cursor))
                .map_or_else(Vec::new, |&(_, i, j)| vec![i, j]),
        }
    }

    fn ready(&self) -> bool {
        self.open.is_some()
    }

    /// Whether a key is one the screen acts on now; asks the worker or opens an input line.
    pub fn act(&mut self, action: Action, shell: &mut Shell, lang: Lang) -> bool {
        let generation = self.generation;
        match action {
            Action::OpenFile => {
                let start = self.path.clone().unwrap_or_default();
                shell.edit(EditTarget::Corpus(CorpusInput::Path), &start);
            }
            Action::CancelTask => match &self.task {
                Some(_) => {
                    shell.corpus_request(CorpusRequest::Cancel);
                    shell.set_status(tr(lang, "corpus.cancelling"), false);
                }
                None => shell.set_status(tr(lang, "corpus.nothing_running"), false),
            },
            Action::Up => self.cursor = self.cursor.saturating_sub(1),
            Action::Down => {
                self.cursor = (self.cursor + 1).min(self.list_len().saturating_sub(1));
            }
            Action::NextList => {
                self.list = self.list.next();
                self.cursor = 0;
            }
            _ if !self.ready() => {
                let key = if self.task.is_some() {
                    "corpus.wait"
                } else {
                    "corpus.open_first"
                };
                shell.set_status(tr(lang, key), true);
            }
            Action::Search => {
                self.list = ListKind::Hits;
                shell.edit(EditTarget::Corpus(CorpusInput::Query), &self.query.clone());
            }
            Action::CycleView => {
                let method = match self.map_method.unwrap_or(MapMethod::Pca) {
                    MapMethod::Pca => MapMethod::Tsne,
                    MapMethod::Tsne => MapMethod::Umap,
                    MapMethod::Umap => MapMethod::Pca,
                };
                self.map_method = Some(method);
                self.start(CorpusTask::Map);
                shell.corpus_request(CorpusRequest::Map { generation, method });
            }
            Action::Communities => {
                let start = self
                    .communities_input
                    .clone()
                    .unwrap_or_else(|| "0.75 10".into());
                shell.edit(EditTarget::Corpus(CorpusInput::Communities), &start);
            }
            Action::KMeans => {
                let start = self.kmeans_input.clone().unwrap_or_else(|| "8".into());
                shell.edit(EditTarget::Corpus(CorpusInput::KMeans), &start);
            }
            Action::Mine => {
                self.start(CorpusTask::Mine);
                shell.corpus_request(CorpusRequest::Mine { generation });
            }
            Action::Export => {
                let start = self
                    .export_input
                    .clone()
                    .unwrap_or_else(|| "corpus-vectors.npy".into());
                shell.edit(EditTarget::Corpus(CorpusInput::Export), &start);
            }
            _ => return false,
        }
        true
    }

    fn start(&mut self, task: CorpusTask) {
        self.task = Some(TaskState {
            task,
            done: 0,
            total: 0,
            note: String::new(),
        });
    }

    /// The query line changed: search again (the worker keeps only the newest).
    pub fn query_changed(&mut self, text: &str, shell: &mut Shell) {
        if text == self.query || !self.ready() {
            return;
        }
        self.query = text.to_string();
        self.cursor = 0;
        shell.corpus_request(CorpusRequest::Search {
            generation: self.generation,
            query: self.query.clone(),
        });
    }

    /// An input line of this screen was accepted.
    pub fn commit(
        &mut self,
        input: CorpusInput,
        text: String,
        model: Option<(String, String)>,
        prompt: Prompt,
        shell: &mut Shell,
        lang: Lang,
    ) {
        let generation = self.generation;
        match input {
            CorpusInput::Path => {
                let path = text.trim();
                if !path.is_empty() {
                    self.open_file(path, model, prompt, shell, lang);
                }
            }
            CorpusInput::Query => self.query_changed(&text, shell),
            CorpusInput::Communities => {
                let mut parts = text.split_whitespace();
                let threshold = parts.next().map(str::parse::<f32>);
                let min_size = parts.next().map(str::parse::<usize>).unwrap_or(Ok(10));
                match (threshold, min_size) {
                    (Some(Ok(threshold)), Ok(min_size))
                        if (-1.0..=1.0).contains(&threshold) && min_size >= 1 =>
                    {
                        self.communities_input = Some(text.trim().to_string());
                        self.list = ListKind::Clusters;
                        self.cursor = 0;
                        self.start(CorpusTask::Cluster);
                        shell.corpus_request(CorpusRequest::Cluster {
                            generation,
                            method: ClusterMethod::Communities {
                                threshold,
                                min_size,
                            },
                        });
                    }
                    _ => shell.set_status(tr(lang, "corpus.bad_communities"), true),
                }
            }
            CorpusInput::KMeans => match text.trim().parse::<usize>() {
                Ok(k) if k >= 1 => {
                    self.kmeans_input = Some(text.trim().to_string());
                    self.list = ListKind::Clusters;
                    self.cursor = 0;
                    self.start(CorpusTask::Cluster);
                    shell.corpus_request(CorpusRequest::Cluster {
                        generation,
                        method: ClusterMethod::KMeans { k },
                    });
                }
                _ => shell.set_status(tr(lang, "corpus.bad_k"), true),
            },
            CorpusInput::Export => {
                let path = text.trim();
                if !path.is_empty() {
                    self.export_input = Some(path.to_string());
                    self.start(CorpusTask::Export);
                    shell.corpus_request(CorpusRequest::Export {
                        generation,
                        path: PathBuf::from(path),
                    });
                }
            }
        }
    }

    /// An answer from the corpus worker.
    pub fn on_event(&mut self, event: CorpusEvent, shell: &mut Shell, lang: Lang) {
        let generation = match &event {
            CorpusEvent::Progress { generation, .. }
            | CorpusEvent::Opened { generation, .. }
            | CorpusEvent::Hits { generation, .. }
            | CorpusEvent::Map { generation, .. }
            | CorpusEvent::Clusters { generation, .. }
            | CorpusEvent::Pairs { generation, .. }
            | CorpusEvent::Exported { generation, .. }
            | CorpusEvent::Cancelled { generation, .. }
            | CorpusEvent::Failed { generation, .. } => *generation,
        };
        if generation != self.generation {
            return;
        }
        match event {
            CorpusEvent::Progress {
                task,
                done,
                total,
                note,
                ..
            } => {
                self.task = Some(TaskState {
                    task,
                    done,
                    total,
                    note,
                })
            }
            CorpusEvent::Opened {
                corpus,
                dim,
                similarity,
                cached,
                encoded,
                millis,
                cache,
                ..
            } => {
                shell.set_status(
                    tr_with(
                        lang,
                        "corpus.opened",
                        &[
                            ("n", &corpus.len()),
                            ("cached", &cached),
                            ("encoded", &encoded),
                            ("s", &format!("{:.1}", millis / 1000.0)),
                        ],
                    ),
                    false,
                );
                self.open = Some(OpenCorpus {
                    corpus,
                    dim,
                    similarity,
                    cached,
                    encoded,
                    millis,
                    cache,
                });
                // The first map (PCA) follows.
                self.start(CorpusTask::Map);
                if !self.query.is_empty() {
                    shell.corpus_request(CorpusRequest::Search {
                        generation,
                        query: self.query.clone(),
                    });
                }
            }
            CorpusEvent::Hits {
                query,
                hits,
                millis,
                ..
            } => {
                if query == self.query {
                    self.hits = hits;
                    self.hits_millis = Some(millis);
                    if self.list == ListKind::Hits {
                        self.cursor = self.cursor.min(self.hits.len().saturating_sub(1));
                    }
                }
            }
            CorpusEvent::Map {
                method,
                rows,
                points,
                millis,
                ..
            } => {
                self.task = None;
                self.map_method = Some(method);
                self.map = Some(MapView {
                    method,
                    rows,
                    points,
                    millis,
                });
            }
            CorpusEvent::Clusters {
                method,
                labels,
                clusters,
                millis,
                ..
            } => {
                self.task = None;
                let n = clusters.len();
                self.clusters = Some(ClusterView {
                    method,
                    labels,
                    clusters,
                    millis,
                });
                self.list = ListKind::Clusters;
                self.cursor = 0;
                done_status(shell, lang, "corpus.clustered", n, millis);
            }
            CorpusEvent::Pairs {
                pairs,
                total,
                millis,
                ..
            } => {
                self.task = None;
                self.pairs = Some(PairsView {
                    pairs,
                    total,
                    millis,
                });
                self.list = ListKind::Pairs;
                self.cursor = 0;
                done_status(shell, lang, "corpus.mined", total, millis);
            }
            CorpusEvent::Exported { path, .. } => {
                self.task = None;
                shell.set_status(
                    tr_with(
                        lang,
                        "corpus.exported",
                        &[("path", &path.display().to_string())],
                    ),
                    false,
                );
            }
            CorpusEvent::Cancelled { task, .. } => {
                self.task = None;
                let key = if task == CorpusTask::Embed {
                    "corpus.cancelled_embed"
                } else {
                    "corpus.cancelled"
                };
                shell.set_status(tr(lang, key), false);
            }
            CorpusEvent::Failed { task, error, .. } => {
                if task.is_some() {
                    self.task = None;
                }
                shell.set_status(error, true);
            }
        }
    }
}

/// The status line when a task is done: `key` with its count `n` and the seconds it took.
fn done_status(shell: &mut Shell, lang: Lang, key: &str, n: usize, millis: f64) {
    shell.set_status(
        tr_with(
            lang,
            key,
            &[("n", &n), ("s", &format!("{:.1}", millis / 1000.0))],
        ),
        false,
    );
}
