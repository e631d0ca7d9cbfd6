//! The corpus worker: a thread of its own that holds a corpus, its vectors and a model to embed
//! queries, so that embedding a hundred thousand texts never stalls the explorer's worker. Long
//! tasks (embedding, maps, clustering, mining) report progress at most every 100 ms and look at
//! the request channel as they go: a [`CorpusRequest::Cancel`] stops them, other requests wait
//! their turn (only the newest search is kept).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use crate::analysis::embeddings::Embeddings;
use crate::analysis::maps::{MapMethod, MapOptions, MapProgress};
use crate::analysis::mining::{self, MiningOptions};
use crate::analysis::search::ExactIndex;
use crate::analysis::similarity::Similarity;
use crate::corpus::embed::{EmbedOptions, embed_texts};
use crate::corpus::{self, Corpus, CorpusFormat};
use crate::model::{self, LoadOptions, PoolingSpec, Prompt, SentenceEncoder, SourceOptions};

use super::worker::WorkerOptions;

/// The most points a t-SNE or UMAP map shows: a larger corpus is mapped through a seeded sample.
pub const MAP_MAX_POINTS: usize = 20_000;
/// Hits a search returns.
pub const SEARCH_K: usize = 10;
/// Mined pairs kept for the list.
pub const PAIRS_SHOWN: usize = 500;
/// Most central members kept per cluster.
pub const CENTRAL: usize = 3;

/// From the UI to the corpus worker.
#[derive(Debug, Clone, PartialEq)]
pub enum CorpusRequest {
    /// Read a corpus file and embed it (through the vector cache) with this model.
    Open {
        generation: u64,
        path: PathBuf,
        format: CorpusFormat,
        column: Option<String>,
        model: String,
        pooling: Option<String>,
        prompt: Prompt,
    },
    /// The corpus texts closest to `query`.
    Search { generation: u64, query: String },
    /// A 2-D map of the corpus.
    Map { generation: u64, method: MapMethod },
    /// Clusters: the Python library's community detection, or k-means.
    Cluster {
        generation: u64,
        method: ClusterMethod,
    },
    /// Paraphrase mining with the Python library's defaults.
    Mine { generation: u64 },
    /// Write the vectors: `.npy`, `.safetensors`, or (any other path) a folder of Embedding
    /// Projector TSV files.
    Export { generation: u64, path: PathBuf },
    /// Stop the task running now.
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClusterMethod {
    Communities { threshold: f32, min_size: usize },
    KMeans { k: usize },
}

/// What a long task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorpusTask {
    Embed,
    Map,
    Cluster,
    Mine,
    Export,
}

/// A cluster for the list: its size and its most central members (corpus rows).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSummary {
    pub size: usize,
    pub central: Vec<usize>,
}

/// From the corpus worker to the UI. Every answer carries the generation of the corpus it is
/// about; the UI drops answers about a corpus it has closed.
#[derive(Debug, Clone, PartialEq)]
pub enum CorpusEvent {
    Progress {
        generation: u64,
        task: CorpusTask,
        done: usize,
        total: usize,
        /// A stage (`neighbours`, `optimising`) or a note (`1,200 from the cache`).
        note: String,
    },
    Opened {
        generation: u64,
        corpus: Arc<Corpus>,
        dim: usize,
        similarity: Similarity,
        cached: usize,
        encoded: usize,
        millis: f64,
        /// The vector cache used, or why none was.
        cache: Result<PathBuf, String>,
    },
    Hits {
        generation: u64,
        query: String,
        hits: Vec<(usize, f32)>,
        millis: f64,
    },
    Map {
        generation: u64,
        method: MapMethod,
        /// The corpus rows shown (all, or a sample), and their points.
        rows: Vec<usize>,
        points: Vec<[f32; 2]>,
        millis: f64,
    },
    Clusters {
        generation: u64,
        method: ClusterMethod,
        /// The cluster of each corpus row (`None`: in no community).
        labels: Vec<Option<u32>>,
        clusters: Vec<ClusterSummary>,
        millis: f64,
    },
    Pairs {
        generation: u64,
        /// The best pairs (score, row, row), best first, at most [`PAIRS_SHOWN`].
        pairs: Vec<(f32, usize, usize)>,
        total: usize,
        millis: f64,
    },
    Exported {
        generation: u64,
        path: PathBuf,
    },
    Cancelled {
        generation: u64,
        task: CorpusTask,
    },
    Failed {
        generation: u64,
        task: Option<CorpusTask>,
        error: String,
    },
}

/// Starts the worker.
pub fn spawn<E: Send + 'static>(
    send: Sender<E>,
    wrap: fn(CorpusEvent) -> E,
    options: WorkerOptions,
    cache_root: Option<PathBuf>,
) -> Sender<CorpusRequest> {
    let (tx, rx) = channel::<CorpusRequest>();
    std::thread::Builder::new()
        .name("corpus-worker".into())
        .spawn(move || {
            Worker::new(rx, move |e| send.send(wrap(e)).is_ok(), options, cache_root).run()
        })
        .expect("spawn the corpus worker");
    tx
}

struct Model {
    key: (String, Option<String>),
    encoder: SentenceEncoder,
}

struct Open {
    generation: u64,
    corpus: Arc<Corpus>,
    index: ExactIndex,
    prompt: Prompt,
}

/// The worker's state, separate from the thread so tests can drive it.
pub struct Worker<F: Fn(CorpusEvent) -> bool> {
    rx: Receiver<CorpusRequest>,
    send: F,
    options: WorkerOptions,
    cache_root: Option<PathBuf>,
    queue: VecDeque<CorpusRequest>,
    model: Option<Model>,
    open: Option<Open>,
    closed: bool,
}

/// The answer to a progress callback: go on, or stop.
struct Gate {
    last: Instant,
}

impl Gate {
    /// Open at once: the first report goes out.
    fn new() -> Self {
        Gate {
            last: Instant::now() - Duration::from_secs(1),
        }
    }
}

impl<F: Fn(CorpusEvent) -> bool> Worker<F> {
    pub fn new(
        rx: Receiver<CorpusRequest>,
        send: F,
        options: WorkerOptions,
        cache_root: Option<PathBuf>,
    ) -> Self {
        Worker {
            rx,
            send,
            options,
            cache_root,
            queue: VecDeque::new(),
            model: None,
            open: None,
            closed: false,
        }
    }

    pub fn run(mut self) {
        loop {
            if self.queue.is_empty() {
                match self.rx.recv() {
                    Ok(r) => self.queue.push_back(r),
                    Err(_) => return,
                }
            }
            self.drain();
            let Some(req) = self.queue.pop_front() else {
                continue;
            };
            let generation = generation_of(&req);
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.serve(req);
            }));
            if let Err(p) = served {
                self.emit(CorpusEvent::Failed {
                    generation,
                    task: None,
                    error: format!("the corpus worker crashed: {}", super::panic_message(&p)),
                });
            }
            if self.closed {
                return;
            }
        }
    }

    /// Moves waiting requests into the queue: an open drops what was queued before it; only
    /// the newest search is kept; a cancel with nothing running is dropped.
    fn drain(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(r) => self.enqueue(r),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    fn enqueue(&mut self, r: CorpusRequest) {
        match &r {
            CorpusRequest::Open { .. } => self.queue.clear(),
            CorpusRequest::Search { .. } => self
                .queue
                .retain(|q| !matches!(q, CorpusRequest::Search { .. })),
            CorpusRequest::Cancel => return,
            _ => {}
        }
        self.queue.push_back(r);
    }

    fn emit(&mut self, e: CorpusEvent) {
        if !(self.send)(e) {
            self.closed = true;
        }
    }

    /// The progress callback of a long task that counts `done` of `total`: throttled
    /// [`CorpusEvent::Progress`] with `note`, and false once the task is to stop.
    fn progress(
        &mut self,
        generation: u64,
        task: CorpusTask,
        note: String,
    ) -> impl FnMut(usize, usize) -> bool + '_ {
        let mut gate = Gate::new();
        move |done, total| {
            self.tick(&mut gate, || CorpusEvent::Progress {
                generation,
                task,
                done,
                total,
                note: note.clone(),
            })
        }
    }

    /// Called from a long task's progress callback: reports (throttled) and says whether to go
    /// on. A cancel, or an open of another corpus, stops the task.
    fn tick(&mut self, gate: &mut Gate, event: impl FnOnce() -> CorpusEvent) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(CorpusRequest::Cancel) => return false,
                Ok(r @ CorpusRequest::Open { .. }) => {
                    self.enqueue(r);
                    return false;
                }
                Ok(r) => self.enqueue(r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    return false;
                }
            }
        }
        if gate.last.elapsed() >= Duration::from_millis(100) {
            gate.last = Instant::now();
            self.emit(event());
        }
        !self.closed
    }

    fn serve(&mut self, req: CorpusRequest) {
        match req {
            CorpusRequest::Open {
                generation,
                path,
                format,
                column,
                model,
                pooling,
                prompt,
            } => self.open(generation, path, format, column, model, pooling, prompt),
            CorpusRequest::Search { generation, query } => self.search(generation, query),
            CorpusRequest::Map { generation, method } => self.map(generation, method),
            CorpusRequest::Cluster { generation, method } => self.cluster(generation, method),
            CorpusRequest::Mine { generation } => self.mine(generation),
            CorpusRequest::Export { generation, path } => self.export(generation, path),
            CorpusRequest::Cancel => {}
        }
    }

    fn fail(&mut self, generation: u64, task: Option<CorpusTask>, error: impl Into<String>) {
        self.emit(CorpusEvent::Failed {
            generation,
            task,
            error: error.into(),
        });
    }

    fn encoder(&mut self, spec: &str, pooling: Option<String>) -> Result<(), String> {
        let key = (spec.to_string(), pooling.clone());
        if self.model.as_ref().is_some_and(|m| m.key == key) {
            return Ok(());
        }
        self.model = None;
        let pooling = pooling
            .map(|p| p.parse::<PoolingSpec>())
            .transpose()
            .map_err(|e| e.to_string())?;
        let source = SourceOptions {
            progress: false,
            ..SourceOptions::from_env()
        };
        let encoder = model::load(
            spec,
            &source,
            &LoadOptions {
                device: self.options.device,
                pooling,
                max_seq_length: self.options.max_seq_length,
                truncate_dim: self.options.truncate_dim,
                precision: self.options.precision,
            },
        )
        .map_err(|e| e.to_string())?;
        self.model = Some(Model { key, encoder });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        generation: u64,
        path: PathBuf,
        format: CorpusFormat,
        column: Option<String>,
        spec: String,
        pooling: Option<String>,
        prompt: Prompt,
    ) {
        self.open = None;
        let task = Some(CorpusTask::Embed);
        let started = Instant::now();
        let corpus = match corpus::read(&path, format, column.as_deref()) {
            Ok(c) => Arc::new(c),
            Err(e) => return self.fail(generation, task, e.to_string()),
        };
        if let Err(e) = self.encoder(&spec, pooling) {
            return self.fail(generation, task, e);
        }
        let model = self.model.take().expect("loaded above");
        let options = EmbedOptions {
            cache_root: self.cache_root.clone(),
            ..EmbedOptions::default()
        };
        let mut gate = Gate::new();
        let result = embed_texts(&model.encoder, &corpus.texts, &prompt, &options, &mut |p| {
            self.tick(&mut gate, || CorpusEvent::Progress {
                generation,
                task: CorpusTask::Embed,
                done: p.done,
                total: p.total,
                note: if p.cached > 0 {
                    format!("{} from the cache", p.cached)
                } else {
                    String::new()
                },
            })
        });
        let similarity = model.encoder.info().similarity;
        self.model = Some(model);
        let embedded = match result {
            Ok(Some(e)) => e,
            Ok(None) => {
                return self.emit(CorpusEvent::Cancelled {
                    generation,
                    task: CorpusTask::Embed,
                });
            }
            Err(e) => return self.fail(generation, task, format!("{e:#}")),
        };
        let dim = embedded.vectors.dim();
        self.open = Some(Open {
            generation,
            corpus: corpus.clone(),
            index: ExactIndex::new(embedded.vectors, similarity),
            prompt,
        });
        self.emit(CorpusEvent::Opened {
            generation,
            corpus,
            dim,
            similarity,
            cached: embedded.cached,
            encoded: embedded.encoded,
            millis: started.elapsed().as_secs_f64() * 1000.0,
            cache: embedded.cache,
        });
        // A first map straight away: PCA takes a moment even for a large corpus.
        self.map(generation, MapMethod::Pca);
    }

    /// The open corpus, if it is the one of `generation`.
    fn current(&mut self, generation: u64, task: Option<CorpusTask>) -> Option<()> {
        match &self.open {
            Some(o) if o.generation == generation => Some(()),
            _ => {
                self.fail(generation, task, "no corpus is open");
                None
            }
        }
    }

    fn search(&mut self, generation: u64, query: String) {
        if self.current(generation, None).is_none() {
            return;
        }
        let started = Instant::now();
        let (Some(o), Some(m)) = (&self.open, &self.model) else {
            return;
        };
        let hits = if query.trim().is_empty() {
            Ok(Vec::new())
        } else {
            m.encoder
                .encode_prompted(&[query.as_str()], &o.prompt, 1, &mut |_, _| {})
                .map(|v| {
                    o.index
                        .search(&v[0], SEARCH_K)
                        .into_iter()
                        .map(|h| (h.corpus_id, h.score))
                        .collect()
                })
        };
        match hits {
            Ok(hits) => self.emit(CorpusEvent::Hits {
                generation,
                query,
                hits,
                millis: started.elapsed().as_secs_f64() * 1000.0,
            }),
            Err(e) => self.fail(generation, None, e.to_string()),
        }
    }

    fn map(&mut self, generation: u64, method: MapMethod) {
        let task = CorpusTask::Map;
        if self.current(generation, Some(task)).is_none() {
            return;
        }
        let started = Instant::now();
        let vectors = self.open.as_ref().expect("checked").index.corpus();
        let n = vectors.len();
        // PCA maps every point; t-SNE and UMAP a seeded sample of at most MAP_MAX_POINTS.
        let rows: Vec<usize> = if method == MapMethod::Pca || n <= MAP_MAX_POINTS {
            (0..n).collect()
        } else {
            sample(n, MAP_MAX_POINTS, 42)
        };
        let subset = if rows.len() == n {
            None
        } else {
            let mut e = Embeddings::new(vectors.dim());
            rows.iter().for_each(|&r| e.push(vectors.row(r)));
            Some(e)
        };
        let options = MapOptions {
            method,
            ..MapOptions::default()
        };
        let mut gate = Gate::new();
        // The worker's own fields are borrowed by the callback; the vectors are not.
        let open = self.open.take().expect("checked");
        let input = subset.as_ref().unwrap_or(open.index.corpus());
        let result = crate::analysis::maps::project(input, &options, &mut |p: MapProgress| {
            self.tick(&mut gate, || CorpusEvent::Progress {
                generation,
                task,
                done: (p.overall() * 1000.0) as usize,
                total: 1000,
                note: format!("{} {}", p.method.label(), p.stage.label()),
            })
        });
        self.open = Some(open);
        match result {
            Ok(Some(points)) => self.emit(CorpusEvent::Map {
                generation,
                method,
                rows,
                points,
                millis: started.elapsed().as_secs_f64() * 1000.0,
            }),
            Ok(None) => self.emit(CorpusEvent::Cancelled { generation, task }),
            Err(e) => self.fail(generation, Some(task), e.to_string()),
        }
    }

    fn cluster(&mut self, generation: u64, method: ClusterMethod) {
        let task = CorpusTask::Cluster;
        if self.current(generation, Some(task)).is_none() {
            return;
        }
        let started = Instant::now();
        let open = self.open.take().expect("checked");
        let vectors = open.index.corpus();
        let n = vectors.len();
        let groups: Option<Vec<Vec<usize>>> = match method {
            ClusterMethod::Communities {
                threshold,
                min_size,
            } => mining::community_detection(
                vectors,
                threshold,
                min_size,
                1024,
                &mut self.progress(generation, task, String::new()),
            ),
            ClusterMethod::KMeans { k } => {
                self.emit(CorpusEvent::Progress {
                    generation,
                    task,
                    done: 0,
                    total: 1,
                    note: format!("k-means, k = {k}"),
                });
                let unit;
                let input = if open.index.similarity() == Similarity::Cosine {
                    unit = vectors.normalized();
                    &unit
                } else {
                    vectors
                };
                let note = format!("k-means, k = {k}");
                mining::kmeans_with_progress(
                    input,
                    k,
                    42,
                    300,
                    &mut self.progress(generation, task, note),
                )
                .map(|r| {
                    let mut groups = vec![Vec::new(); r.centroids.len()];
                    for (i, &l) in r.labels.iter().enumerate() {
                        groups[l].push(i);
                    }
                    groups.retain(|g| !g.is_empty());
                    groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
                    groups
                })
            }
        };
        let Some(groups) = groups else {
            self.open = Some(open);
            return self.emit(CorpusEvent::Cancelled { generation, task });
        };
        let mut labels = vec![None; n];
        let mut clusters = Vec::with_capacity(groups.len());
        for (c, members) in groups.iter().enumerate() {
            for &m in members {
                labels[m] = Some(c as u32);
            }
            clusters.push(ClusterSummary {
                size: members.len(),
                central: mining::central_members(vectors, members, CENTRAL),
            });
        }
        self.open = Some(open);
        self.emit(CorpusEvent::Clusters {
            generation,
            method,
            labels,
            clusters,
            millis: started.elapsed().as_secs_f64() * 1000.0,
        });
    }

    fn mine(&mut self, generation: u64) {
        let task = CorpusTask::Mine;
        if self.current(generation, Some(task)).is_none() {
            return;
        }
        let started = Instant::now();
        let open = self.open.take().expect("checked");
        let result = mining::paraphrase_mining(
            open.index.corpus(),
            open.index.similarity(),
            &MiningOptions::default(),
            &mut self.progress(generation, task, String::new()),
        );
        self.open = Some(open);
        match result {
            Some(pairs) => {
                let total = pairs.len();
                self.emit(CorpusEvent::Pairs {
                    generation,
                    pairs: pairs
                        .iter()
                        .take(PAIRS_SHOWN)
                        .map(|p| (p.score, p.i, p.j))
                        .collect(),
                    total,
                    millis: started.elapsed().as_secs_f64() * 1000.0,
                });
            }
            None => self.emit(CorpusEvent::Cancelled { generation, task }),
        }
    }

    fn export(&mut self, generation: u64, path: PathBuf) {
        let task = CorpusTask::Export;
        if self.current(generation, Some(task)).is_none() {
            return;
        }
        let open = self.open.as_ref().expect("checked");
        let model = self
            .model
            .as_ref()
            .map(|m| m.encoder.info().folder.display().to_string());
        let result =
            crate::corpus::export(&path, &open.corpus, open.index.corpus(), model.as_deref());
        match result {
            Ok(()) => self.emit(CorpusEvent::Exported { generation, path }),
            Err(e) => self.fail(generation, Some(task), format!("{e:#}")),
        }
    }
}

fn generation_of(r: &CorpusRequest) -> u64 {
    match r {
        CorpusRequest::Open { generation, .. }
        | CorpusRequest::Search { generation, .. }
        | CorpusRequest::Map { generation, .. }
        | CorpusRequest::Cluster { generation, .. }
        | CorpusRequest::Mine { generation }
        | CorpusRequest::Export { generation, .. } => *generation,
        CorpusRequest::Cancel => 0,
    }
}

/// `k` of `0..n`, sorted, chosen by a seeded shuffle.
pub fn sample(n: usize, k: usize, seed: u64) -> Vec<usize> {
    use rand::SeedableRng;
    use rand::seq::index;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut rows = index::sample(&mut rng, n, k.min(n)).into_vec();
    rows.sort_unstable();
    rows
}
