//! One optimisation step at a time: the model, the loss, the optimizer and the dropout generator.
//! The training loop (`run.rs`) drives it; tests drive it directly.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::data::Example;
use super::events::{BATCH_VIEW_ROWS, BatchView};
use super::losses::{self, LossKind, TripletDistance};
use super::optim::{AdamW, AdamWConfig, Grads, Param, clip_coefficient, decays, grad_norm};
use crate::model::cpu::autograd;
use crate::model::transformer::Tape;
use crate::model::{
    DropoutRng, Lookup, Lookups, Mode, ModelError, Prompt, Result, SentenceEncoder,
};

/// Adversarial training on the word embeddings (FGM, or PGD with several steps), as the
/// SBERT v2 notes' `FGM` / `PGD` helpers: the clean loss's gradient with respect to the word
/// embedding matrix gives the direction; the matrix is moved by `epsilon` along it (PGD: `steps`
/// moves of `alpha`, kept within `epsilon` of the original), the perturbed batch's gradient is
/// added to the clean one, and the matrix is put back. The step trains on clean plus perturbed
/// loss; the loss reported is the clean one.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Adversarial {
    pub epsilon: f64,
    /// 1: FGM.
    pub steps: usize,
    /// PGD's step size (FGM moves by `epsilon` at once).
    pub alpha: f64,
}

impl Adversarial {
    /// FGM with the command line's default epsilon.
    pub const FGM: Adversarial = Adversarial {
        epsilon: 1.0,
        steps: 1,
        alpha: 0.3,
    };
    /// PGD with the command line's defaults: 3 steps of 0.3 within epsilon 1.
    pub const PGD: Adversarial = Adversarial {
        epsilon: 1.0,
        steps: 3,
        alpha: 0.3,
    };

    pub fn describe(&self) -> String {
        if self.steps <= 1 {
            format!("FGM on the word embeddings, epsilon {}", self.epsilon)
        } else {
            format!(
                "PGD on the word embeddings, {} steps of {}, epsilon {}",
                self.steps, self.alpha, self.epsilon
            )
        }
    }
}

/// Loss settings beyond its kind.
#[derive(Debug, Clone)]
pub struct LossSetup {
    pub kind: LossKind,
    pub triplet_distance: TripletDistance,
    pub margin: Option<f64>,
    pub scale: Option<f64>,
    /// `MatryoshkaLoss` around the loss: (width, weight) pairs; empty: off.
    pub matryoshka: Vec<(usize, f64)>,
    /// Rows per forward pass of `cached-mnr`.
    pub mini_batch_size: usize,
}

impl LossSetup {
    pub fn new(kind: LossKind) -> Self {
        Self {
            kind,
            triplet_distance: TripletDistance::Euclidean,
            margin: None,
            scale: None,
            matryoshka: Vec::new(),
            mini_batch_size: 32,
        }
    }

    fn scale(&self) -> f64 {
        self.scale.unwrap_or(losses::MNR_SCALE)
    }

    fn margin(&self) -> f64 {
        self.margin.unwrap_or(match self.kind {
            LossKind::Triplet => match self.triplet_distance {
                TripletDistance::Euclidean => losses::TRIPLET_MARGIN_EUCLIDEAN,
                TripletDistance::Cosine => losses::TRIPLET_MARGIN_COSINE,
            },
            _ => losses::CONTRASTIVE_MARGIN,
        })
    }

    /// The arguments as the model card states them.
    pub fn describe(&self) -> String {
        let inner = self.describe_inner();
        if self.matryoshka.is_empty() {
            return inner;
        }
        let (dims, weights): (Vec<String>, Vec<String>) = self
            .matryoshka
            .iter()
            .map(|(d, w)| (d.to_string(), w.to_string()))
            .unzip();
        format!(
            "{inner}; wrapped in MatryoshkaLoss(matryoshka_dims=[{}], matryoshka_weights=[{}])",
            dims.join(", "),
            weights.join(", ")
        )
    }

    fn describe_inner(&self) -> String {
        match self.kind {
            LossKind::Cosine => "loss_fct=MSELoss".into(),
            LossKind::CoSent | LossKind::Angle => {
                format!("scale={}", self.scale.unwrap_or(losses::COSENT_SCALE))
            }
            LossKind::Mnr | LossKind::MnrSymmetric | LossKind::SimCse => {
                format!("scale={}, similarity_fct=cos_sim", self.scale())
            }
            LossKind::CachedMnr => format!(
                "scale={}, similarity_fct=cos_sim, mini_batch_size={} (rows)",
                self.scale(),
                self.mini_batch_size
            ),
            LossKind::Triplet => format!(
                "distance_metric={}, triplet_margin={}",
                self.triplet_distance,
                self.margin()
            ),
            LossKind::Contrastive | LossKind::OnlineContrastive => {
                format!("distance_metric=cosine_distance, margin={}", self.margin())
            }
            LossKind::Softmax => "concatenation=(u, v, |u-v|), num_labels=3".into(),
            LossKind::Mse => "targets=teacher embeddings".into(),
            LossKind::MarginMse => "similarity_fct=pairwise_dot_score".into(),
        }
    }
}

/// The softmax loss's classifier: trained along, never saved into the model.
pub struct Classifier {
    pub weight: Var,
    pub bias: Var,
}

impl Classifier {
    /// `nn.Linear(3 * dim, 3)` initialisation: uniform in ±1/sqrt(fan_in), from our seed.
    pub fn new(dim: usize, classes: usize, seed: u64, device: &Device) -> Result<Self> {
        let fan_in = 3 * dim;
        let bound = 1.0 / (fan_in as f32).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c1a5);
        let mut uniform =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let w = Tensor::from_vec(uniform(classes * fan_in), (classes, fan_in), device)?;
        let b = Tensor::from_vec(uniform(classes), classes, device)?;
        Ok(Self {
            weight: Var::from_tensor(&w)?,
            bias: Var::from_tensor(&b)?,
        })
    }

    pub fn tensors(&self) -> HashMap<String, Tensor> {
        HashMap::from([
            ("weight".to_string(), self.weight.as_tensor().clone()),
            ("bias".to_string(), self.bias.as_tensor().clone()),
        ])
    }

    pub fn load(&self, saved: &HashMap<String, Tensor>) -> Result<()> {
        for (name, var) in [("weight", &self.weight), ("bias", &self.bias)] {
            let t = saved.get(name).ok_or_else(|| {
                ModelError::Invalid(format!("checkpoint classifier lacks `{name}`"))
            })?;
            var.set(&t.to_device(var.device())?)?;
        }
        Ok(())
    }
}

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub loss: f64,
    /// Gradient norm before clipping (when clipping is on).
    pub grad_norm: Option<f64>,
    /// Sentences that went through the encoder.
    pub sentences: usize,
    /// The numbers the loss saw (ranking and triplet losses).
    pub batch: Option<BatchView>,
}

/// Why a step could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("the loss is {0}")]
    NonFinite(f64),
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<candle_core::Error> for StepError {
    fn from(e: candle_core::Error) -> Self {
        StepError::Model(e.into())
    }
}

pub struct Session {
    pub encoder: SentenceEncoder,
    pub setup: LossSetup,
    pub classifier: Option<Classifier>,
    /// Teacher vectors by text, for distillation.
    pub targets: Option<HashMap<String, Vec<f32>>>,
    pub optimizer: AdamW,
    pub dropout: Option<DropoutRng>,
    pub max_grad_norm: Option<f64>,
    /// Use the encoder's hand-written CPU backward pass where it applies (the default); off,
    /// candle's autograd runs the whole graph (kept for comparison and tests).
    pub hand_backward: bool,
    /// The prompt of each column of the data (by the position of [`Example::texts`]); no prompt
    /// for a column past the end.
    pub column_prompts: Vec<Prompt>,
    /// Adversarial training on the word embeddings; `None`: off.
    pub adversarial: Option<Adversarial>,
    /// The allocator keeps what a step frees for the next (`crate::KeepFreedMemory`).
    _keep: crate::KeepFreedMemory,
}

/// What a training pass recorded for [`Session::backward`].
enum Recorded {
    /// The token vectors' leaf variable and the encoder's tape: its hand-written backward pass.
    Tape(Var, Tape),
    /// The table lookups of a pass candle's autograd differentiates, whose gradients are taken
    /// as rows.
    Lookups(Vec<Lookup>),
}

/// Every trainable variable of the encoder (and classifier), named as in the checkpoint files:
/// `0.<transformer weight>`, `<module index>.<dense weight>`, `classifier.<name>`.
pub fn parameters(encoder: &SentenceEncoder, classifier: Option<&Classifier>) -> Vec<Param> {
    let mut params = Vec::new();
    for (i, map) in encoder.varmaps().into_iter().enumerate() {
        let data = map.data().lock().expect("varmap poisoned");
        for (name, var) in data.iter() {
            let name = format!("{i}.{name}");
            params.push(Param {
                decay: decays(&name),
                name,
                var: var.clone(),
            });
        }
    }
    if let Some(c) = classifier {
        for (name, var) in [
            ("classifier.weight", &c.weight),
            ("classifier.bias", &c.bias),
        ] {
            params.push(Param {
                name: name.into(),
                var: var.clone(),
                decay: decays(name),
            });
        }
    }
    params.sort_by(|a, b| a.name.cmp(&b.name));
    params
}

impl Session {
    /// Sets up training of `encoder` with `setup`. `dropout_seed` turns dropout on.
    pub fn new(
        encoder: SentenceEncoder,
        setup: LossSetup,
        adamw: AdamWConfig,
        dropout_seed: Option<u64>,
        seed: u64,
        max_grad_norm: Option<f64>,
    ) -> Result<Self> {
        let mut encoder = encoder;
        encoder.set_trainable();
        let classifier = if setup.kind == LossKind::Softmax {
            Some(Classifier::new(
                encoder.info().embedding_dim,
                3,
                seed,
                encoder.device(),
            )?)
        } else {
            None
        };
        let optimizer = AdamW::new(parameters(&encoder, classifier.as_ref()), adamw);
        Ok(Self {
            encoder,
            setup,
            classifier,
            targets: None,
            optimizer,
            dropout: dropout_seed.map(DropoutRng::new),
            max_grad_norm,
            hand_backward: true,
            column_prompts: Vec::new(),
            adversarial: None,
            _keep: crate::KeepFreedMemory::new(),
        })
    }

    /// Embeds the columns of `batch` in one forward pass (training mode) and splits them again.
    pub fn embed_columns(&self, batch: &[&Example]) -> Result<Vec<Tensor>> {
        Ok(self.embed_columns_recorded(batch, false)?.0)
    }

    /// [`Session::embed_columns`] for a pass [`Session::backward`] differentiates (`recorded`):
    /// through the encoder's hand-written backward pass where it applies and is on
    /// (`hand_backward`), else with its table lookups collected; what it recorded comes back too.
    fn embed_columns_recorded(
        &self,
        batch: &[&Example],
        recorded: bool,
    ) -> Result<(Vec<Tensor>, Option<Recorded>)> {
        let n = batch.len();
        let mut columns: Vec<Vec<&str>> = Vec::new();
        for (row, ex) in batch.iter().enumerate() {
            let mut texts = ex.texts();
            if self.setup.kind == LossKind::SimCse {
                // The same sentence twice: the two dropout masks make the two views.
                texts = vec![texts[0], texts[0]];
            }
            if row == 0 {
                columns = vec![Vec::with_capacity(n); texts.len()];
            }
            for (c, t) in texts.into_iter().enumerate() {
                columns[c].push(t);
            }
        }
        // Each column with its prompt (SimCSE's two views are both the first column).
        let mut tokenized = Vec::with_capacity(n * columns.len());
        for (c, texts) in columns.iter().enumerate() {
            let c = if self.setup.kind == LossKind::SimCse {
                0
            } else {
                c
            };
            match self.column_prompts.get(c) {
                Some(p) if *p != Prompt::None => {
                    tokenized.extend(self.encoder.tokenize_prompted(texts, p)?)
                }
                _ => tokenized.extend(self.encoder.tokenize(texts)?),
            }
        }
        let refs: Vec<_> = tokenized.iter().collect();
        let input = self.encoder.batch(&refs)?;
        let mode = match &self.dropout {
            Some(rng) => Mode::train(rng),
            None => Mode::train_without_dropout(),
        };
        let (emb, tape) = match (recorded && self.hand_backward)
            .then(|| self.encoder.forward_recorded(&input, self.dropout.as_ref()))
            .transpose()?
            .flatten()
        {
            Some((emb, leaf, tape)) => (emb, Some(Recorded::Tape(leaf, tape))),
            None if recorded => {
                let lookups = Lookups::default();
                let emb = self.encoder.forward(&input, mode.with_lookups(&lookups))?;
                (emb, Some(Recorded::Lookups(lookups.into_inner())))
            }
            None => (self.encoder.forward(&input, mode)?, None),
        };
        let cols = (0..columns.len())
            .map(|c| Ok(emb.narrow(0, c * n, n)?))
            .collect::<Result<Vec<_>>>()?;
        Ok((cols, tape))
    }

    fn loss(&self, batch: &[&Example], cols: &[Tensor]) -> Result<Tensor> {
        let m = &self.setup.matryoshka;
        if m.is_empty() {
            return self.plain_loss(batch, cols);
        }
        let (dims, weights): (Vec<usize>, Vec<f64>) = m.iter().copied().unzip();
        losses::matryoshka_loss(cols, &dims, &weights, |c| self.plain_loss(batch, c))
    }

    /// The loss without a Matryoshka wrapper.
    fn plain_loss(&self, batch: &[&Example], cols: &[Tensor]) -> Result<Tensor> {
        let dev = cols[0].device();
        let floats = |f: &dyn Fn(&Example) -> f32| -> Result<Tensor> {
            let v: Vec<f32> = batch.iter().map(|e| f(e)).collect();
            Ok(losses::labels_tensor(&v, dev)?)
        };
        let score = |e: &Example| match e {
            Example::Scored { score, .. } => *score,
            Example::Labeled { label, .. } => *label,
            _ => f32::NAN,
        };
        let s = &self.setup;
        let cosent_scale = s.scale.unwrap_or(losses::COSENT_SCALE);
        let docs: Vec<&Tensor> = cols[1..].iter().collect();
        let loss = match s.kind {
            LossKind::Cosine => losses::cosine_loss(&cols[0], &cols[1], &floats(&score)?)?,
            LossKind::CoSent => {
                losses::cosent_loss(&cols[0], &cols[1], &floats(&score)?, cosent_scale)?
            }
            LossKind::Angle => {
                losses::angle_loss(&cols[0], &cols[1], &floats(&score)?, cosent_scale)?
            }
            LossKind::Contrastive => {
                losses::contrastive_loss(&cols[0], &cols[1], &floats(&score)?, s.margin())?
            }
            LossKind::OnlineContrastive => {
                losses::online_contrastive_loss(&cols[0], &cols[1], &floats(&score)?, s.margin())?
            }
            LossKind::Triplet => {
                losses::triplet_loss(&cols[0], &cols[1], &cols[2], s.triplet_distance, s.margin())?
            }
            LossKind::Mnr | LossKind::SimCse | LossKind::CachedMnr => {
                losses::mnr_loss(&cols[0], &docs, s.scale())?
            }
            LossKind::MnrSymmetric => losses::mnr_symmetric_loss(&cols[0], &docs, s.scale())?,
            LossKind::Softmax => {
                let c = self.classifier.as_ref().expect("softmax has a classifier");
                let labels: Vec<u32> = batch
                    .iter()
                    .map(|e| match e {
                        Example::Nli { label, .. } => *label,
                        _ => 0,
                    })
                    .collect();
                let labels = Tensor::new(labels, dev)?;
                losses::softmax_loss(
                    &cols[0],
                    &cols[1],
                    &labels,
                    c.weight.as_tensor(),
                    c.bias.as_tensor(),
                )?
            }
            LossKind::Mse => {
                let targets = self.targets.as_ref().expect("mse has teacher targets");
                let rows: Vec<f32> = batch
                    .iter()
                    .flat_map(|e| targets[e.texts()[0]].iter().copied())
                    .collect();
                let t = Tensor::from_vec(rows, cols[0].dims(), dev)?;
                // Every column against the teacher's vector of the first (MSELoss: the mean over
                // the columns): a source and its translation both learn the source's vector.
                let terms = cols
                    .iter()
                    .map(|c| losses::mse_loss(c, &t))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::stack(&terms, 0)?.mean(0)?
            }
            LossKind::MarginMse => {
                let margin = |e: &Example| match e {
                    Example::MarginTriplet { margin, .. } => *margin,
                    _ => f32::NAN,
                };
                losses::margin_mse_loss(&cols[0], &cols[1], &cols[2], &floats(&margin)?)?
            }
        };
        Ok(loss)
    }

    /// The numbers a ranking or triplet loss turned into its value, detached from the graph.
    fn batch_view(&self, batch: &[&Example], cols: &[Tensor]) -> Result<Option<BatchView>> {
        let rows = batch.len();
        let shown = rows.min(BATCH_VIEW_ROWS);
        let anchors = || -> Vec<String> {
            batch[..shown]
                .iter()
                .map(|e| e.texts()[0].to_string())
                .collect()
        };
        let s = &self.setup;
        Ok(match s.kind {
            LossKind::Mnr | LossKind::SimCse | LossKind::MnrSymmetric | LossKind::CachedMnr => {
                let a = cols[0].detach();
                let docs: Vec<Tensor> = cols[1..].iter().map(|c| c.detach()).collect();
                let all = Tensor::cat(&docs, 0)?;
                let cos: Vec<Vec<f32>> = losses::cos_sim_matrix(&a, &all)?
                    .to_dtype(DType::F32)?
                    .to_vec2()?;
                let correct = cos
                    .iter()
                    .enumerate()
                    .filter(|(i, row)| row.iter().all(|&x| x <= row[*i]))
                    .count();
                Some(BatchView::Ranking {
                    anchors: anchors(),
                    cosines: cos[..shown].iter().map(|r| r[..shown].to_vec()).collect(),
                    scale: s.scale(),
                    rows,
                    correct,
                })
            }
            LossKind::Triplet => {
                let (a, p, n) = (cols[0].detach(), cols[1].detach(), cols[2].detach());
                let d = |x: &Tensor, y: &Tensor| -> Result<Vec<f32>> {
                    let t = match s.triplet_distance {
                        TripletDistance::Euclidean => losses::pairwise_euclidean(x, y)?,
                        TripletDistance::Cosine => losses::pairwise_cos(x, y)?.affine(-1.0, 1.0)?,
                    };
                    Ok(t.to_dtype(DType::F32)?.to_vec1()?)
                };
                let (ap, an) = (d(&a, &p)?, d(&a, &n)?);
                let margin = s.margin();
                let violating = ap
                    .iter()
                    .zip(&an)
                    .filter(|(p, n)| (**p - **n) as f64 + margin > 0.0)
                    .count();
                Some(BatchView::Triplet {
                    anchors: anchors(),
                    distances: ap.into_iter().zip(an).take(shown).collect(),
                    margin,
                    distance: s.triplet_distance.to_string(),
                    rows,
                    violating,
                })
            }
            _ => None,
        })
    }

    /// Forward, loss, backward, clipping and one AdamW update at learning rate `lr`. A
    /// non-finite loss is reported before anything is updated.
    pub fn step(
        &mut self,
        batch: &[&Example],
        lr: f64,
    ) -> std::result::Result<StepOutcome, StepError> {
        self.step_accumulated(&[batch], lr)
    }

    /// One AdamW update from the mean gradient of several micro-batches (gradient accumulation,
    /// as the Hugging Face trainer's `gradient_accumulation_steps`: each micro-batch's loss is
    /// divided by their number). Clipping applies to the mean gradient; the loss reported is the
    /// mean of the micro-batches' losses. One micro-batch is exactly [`Session::step`].
    pub fn step_accumulated(
        &mut self,
        micro_batches: &[&[&Example]],
        lr: f64,
    ) -> std::result::Result<StepOutcome, StepError> {
        let n = micro_batches.len();
        assert!(n >= 1, "at least one micro-batch");
        let vars = self.variables();
        let (mut loss, mut sentences, mut view) = (0.0, 0, None);
        let mut total: Option<Grads> = None;
        for batch in micro_batches {
            let (value, grads, cols, batch_view) = self.gradients(batch)?;
            loss += value / n as f64;
            sentences += batch.len() * cols;
            view = batch_view;
            accumulate(&mut total, grads, &vars)?;
        }
        let grads = total.expect("at least one micro-batch");
        // The mean gradient is the sum over n: its norm is the sum's over n, and the 1/n folds
        // into the scale the optimizer applies (with clipping).
        let inv = 1.0 / n as f64;
        let (grad_norm, scale) = match self.max_grad_norm {
            Some(max) => {
                let norm = grad_norm(&grads, self.optimizer.params())? * inv;
                (Some(norm), clip_coefficient(norm, max) * inv)
            }
            None => (None, inv),
        };
        self.optimizer.step_scaled(&grads, lr, scale)?;
        Ok(StepOutcome {
            loss,
            grad_norm,
            sentences,
            batch: view,
        })
    }

    /// The loss of `batch` and the gradient of every trainable variable, by checkpoint name,
    /// without updating anything (for comparing losses and checking gradients).
    pub fn named_gradients(
        &self,
        batch: &[&Example],
    ) -> std::result::Result<(f64, NamedGradients), StepError> {
        let (value, grads, _, _) = self.gradients(batch)?;
        let mut named = Vec::new();
        for p in self.optimizer.params() {
            if let Some(g) = grads.whole(p.var.as_tensor())? {
                let g = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                named.push((p.name.clone(), g));
            }
        }
        Ok((value, named))
    }

    /// The optimizer's variables, as the gradient store keys them.
    fn variables(&self) -> Vec<Tensor> {
        self.optimizer
            .params()
            .iter()
            .map(|p| p.var.as_tensor().clone())
            .collect()
    }

    /// Forward, loss and backward of one batch: the loss, every gradient, the number of columns
    /// embedded, and what the loss saw. A non-finite loss is an error before any backward.
    fn gradients(&self, batch: &[&Example]) -> std::result::Result<Gradients, StepError> {
        let clean = self.clean_gradients(batch)?;
        match self.adversarial {
            Some(adv) => self.adversarial_gradients(batch, clean, adv),
            None => Ok(clean),
        }
    }

    /// The word embedding matrix: the transformer's `*word_embeddings.weight` (BERT family),
    /// `tok_embeddings` (ModernBERT), `embed_tokens` (Qwen3) or `shared` (T5).
    fn word_embeddings(&self) -> Option<Var> {
        let params = self.optimizer.params();
        params
            .iter()
            .find(|p| {
                p.name.starts_with("0.")
                    && [
                        "word_embeddings.weight",
                        "tok_embeddings.weight",
                        "embed_tokens.weight",
                        "shared.weight",
                    ]
                    .iter()
                    .any(|s| p.name.ends_with(s))
            })
            .map(|p| p.var.clone())
    }

    /// FGM / PGD (see [`Adversarial`]): the clean gradients plus those of the batch under the
    /// perturbed word embeddings. With epsilon 0 the perturbed pass is the clean pass again.
    fn adversarial_gradients(
        &self,
        batch: &[&Example],
        clean: Gradients,
        adv: Adversarial,
    ) -> std::result::Result<Gradients, StepError> {
        let Some(emb) = self.word_embeddings() else {
            return Err(ModelError::Invalid(
                "adversarial training: the model has no word embedding matrix to perturb".into(),
            )
            .into());
        };
        let (value, mut grads, cols, view) = clean;
        let original = emb.as_tensor().copy()?;
        let norm = |t: &Tensor| -> Result<f64> {
            Ok(t.sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?
                .sqrt())
        };
        let mut direction = match grads.whole(emb.as_tensor())? {
            Some(g) => g,
            None => original.zeros_like()?,
        };
        let mut r = original.zeros_like()?;
        let steps = adv.steps.max(1);
        let step_size = if steps == 1 { adv.epsilon } else { adv.alpha };
        let mut last = None;
        for _ in 0..steps {
            let n = norm(&direction)?;
            if n > 0.0 && n.is_finite() {
                r = (r + direction.affine(step_size / n, 0.0)?)?;
                let rn = norm(&r)?;
                if rn > adv.epsilon {
                    r = r.affine(adv.epsilon / rn, 0.0)?;
                }
            }
            emb.set(&(&original + &r)?)?;
            let pass = self.clean_gradients(batch);
            let (_, g, _, _) = match pass {
                Ok(p) => p,
                Err(e) => {
                    emb.set(&original)?;
                    return Err(e);
                }
            };
            direction = match g.whole(emb.as_tensor())? {
                Some(d) => d,
                None => original.zeros_like()?,
            };
            last = Some(g);
        }
        emb.set(&original)?;
        let vars = self.variables();
        grads.add(&last.expect("at least one step"), &vars)?;
        Ok((value, grads, cols, view))
    }

    /// [`Session::gradients`] without adversarial training.
    fn clean_gradients(&self, batch: &[&Example]) -> std::result::Result<Gradients, StepError> {
        if self.setup.kind == LossKind::CachedMnr && batch.len() > self.setup.mini_batch_size {
            return self.cached_gradients(batch);
        }
        let (cols, recorded) = self.embed_columns_recorded(batch, true)?;
        let loss = self.loss(batch, &cols)?;
        let value = finite_value(&loss)?;
        let view = self.batch_view(batch, &cols)?;
        let grads = self.backward(&loss, recorded)?;
        Ok((value, grads, cols.len(), view))
    }

    /// GradCache (Gao et al. 2021; the Python library's `CachedMultipleNegativesRankingLoss`):
    /// 1. embed the batch a mini-batch at a time, keeping only the vectors;
    /// 2. the loss over the whole batch, and its gradient with respect to each vector;
    /// 3. each mini-batch again, with the same dropout masks (the generator is put back where
    ///    it was), backward from `sum(vectors * their gradient)`, and the weight gradients add up.
    ///
    /// The value and the gradients are the whole batch's; only one mini-batch's activations are
    /// held at a time.
    fn cached_gradients(&self, batch: &[&Example]) -> std::result::Result<Gradients, StepError> {
        let rows = self.setup.mini_batch_size.max(1);
        let mut starts = Vec::new();
        let mut parts: Vec<Vec<Tensor>> = Vec::new();
        for chunk in batch.chunks(rows) {
            starts.push(self.dropout.as_ref().map(DropoutRng::position));
            // The same call as the replay below, so that the dropout masks are drawn alike.
            let (cols, _tape) = self.embed_columns_recorded(chunk, true)?;
            parts.push(cols.iter().map(Tensor::detach).collect());
        }
        let vectors = (0..parts[0].len())
            .map(|c| {
                let col: Vec<&Tensor> = parts.iter().map(|p| &p[c]).collect();
                Ok(Var::from_tensor(&Tensor::cat(&col, 0)?)?)
            })
            .collect::<Result<Vec<Var>>>()?;
        drop(parts);
        let cols: Vec<Tensor> = vectors.iter().map(|v| v.as_tensor().clone()).collect();
        let loss = self.loss(batch, &cols)?;
        let value = finite_value(&loss)?;
        let view = self.batch_view(batch, &cols)?;
        let upstream = loss.backward()?;
        let upstream = cols
            .iter()
            .map(|c| match upstream.get(c) {
                Some(g) => Ok(g.clone()),
                None => Ok(c.zeros_like()?),
            })
            .collect::<Result<Vec<Tensor>>>()?;
        let vars = self.variables();
        let mut total: Option<Grads> = None;
        for (k, chunk) in batch.chunks(rows).enumerate() {
            if let (Some(rng), Some(pos)) = (&self.dropout, starts[k]) {
                rng.set_position(pos);
            }
            let (cols, recorded) = self.embed_columns_recorded(chunk, true)?;
            #[cfg(debug_assertions)]
            for (col, cached) in cols.iter().zip(&vectors) {
                // The replay must see the same dropout masks as the first pass.
                let cached = cached.as_tensor().narrow(0, k * rows, chunk.len())?;
                let diff = (col.detach() - cached)?.abs()?.max_all()?;
                let diff = diff.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                debug_assert!(diff < 1e-4, "GradCache replay differs by {diff}");
            }
            let mut surrogate: Option<Tensor> = None;
            for (col, grad) in cols.iter().zip(&upstream) {
                let term = (col * grad.narrow(0, k * rows, chunk.len())?)?.sum_all()?;
                surrogate = Some(match surrogate {
                    Some(s) => (s + term)?,
                    None => term,
                });
            }
            let surrogate = surrogate.expect("a batch has columns");
            let grads = self.backward(&surrogate, recorded)?;
            accumulate(&mut total, grads, &vars)?;
        }
        let grads = total.expect("a batch has rows");
        Ok((value, grads, upstream.len(), view))
    }

    /// Backward from `loss`, through the encoder's hand-written pass when it was recorded.
    fn backward(&self, loss: &Tensor, recorded: Option<Recorded>) -> Result<Grads> {
        // Sums of squares left over from a backward pass that was not this session's.
        autograd::take_weight_grad_squares();
        let mut grads = Grads::from(loss.backward()?);
        grads.note_squares(autograd::take_weight_grad_squares());
        if let Some(Recorded::Lookups(lookups)) = &recorded {
            for lookup in lookups {
                if let Some(rows) = lookup.row_grad(&mut grads.dense)? {
                    grads.add_rows(&lookup.table, rows)?;
                }
            }
        }
        if let Some(Recorded::Tape(leaf, tape)) = recorded {
            // The encoder's part of the backward pass, from the token vectors' gradient.
            let leaf = leaf.as_tensor();
            let grad_tokens = match grads.dense.remove(leaf) {
                Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
                None => vec![0.0; leaf.elem_count()],
            };
            let weights = self.encoder.backward(tape, &grad_tokens)?;
            for (weight, grad, squares) in weights.dense {
                let g = Tensor::from_vec(grad, weight.shape(), weight.device())?;
                match squares {
                    Some(s) => grads.insert_with_squares(&weight, g, s),
                    None => _ = grads.dense.insert(&weight, g),
                }
            }
            for (weight, grad) in weights.rows {
                grads.add_rows(&weight, grad)?;
            }
        }
        Ok(grads)
    }
}

/// Gradients by checkpoint name, flattened.
pub type NamedGradients = Vec<(String, Vec<f32>)>;

/// What [`Session::gradients`] gives: the loss, every gradient, the number of columns embedded,
/// and what the loss saw.
type Gradients = (f64, Grads, usize, Option<BatchView>);

/// The loss as a number; a non-finite one is an error.
fn finite_value(loss: &Tensor) -> std::result::Result<f64, StepError> {
    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !value.is_finite() {
        return Err(StepError::NonFinite(value));
    }
    Ok(value)
}

/// Starts `total` with `grads`, or adds them into it.
fn accumulate(total: &mut Option<Grads>, grads: Grads, vars: &[Tensor]) -> Result<()> {
    match total {
        Some(sum) => Ok(sum.add(&grads, vars)?),
        None => {
            *total = Some(grads);
            Ok(())
        }
    }
}
