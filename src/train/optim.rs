//! AdamW as `torch.optim.AdamW`, with weight decay excluded from biases and LayerNorm (as the
//! Python library's trainer does), the linear warm-up / decay schedule of transformers, and
//! gradient-norm clipping as `torch.nn.utils.clip_grad_norm_`.
//!
//! Our own rather than candle-nn's `AdamW`: that one applies one weight decay to every parameter
//! and keeps its moments private, so they could not be checkpointed for `--resume`.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{
    CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Storage, Tensor, TensorId, Var,
};
use rayon::prelude::*;

use crate::model::cpu::kernels;

pub use crate::model::transformer::RowGrad;

type R<T> = candle_core::Result<T>;

/// One step's gradients: candle's store, and the lookup tables' gradients kept as the rows the
/// batch reached ([`RowGrad`], from the encoder's hand-written backward pass). A weight is in
/// one or the other.
pub struct Grads {
    pub dense: GradStore,
    pub rows: HashMap<TensorId, RowGrad>,
    /// The sums of squares of dense gradients known from where they were made, by gradient
    /// tensor ([`Grads::known_squares`]): a gradient replaced since (by a sum or a scaling) is
    /// another tensor, and its sum is computed again.
    pub squares: HashMap<TensorId, f64>,
}

impl From<GradStore> for Grads {
    fn from(dense: GradStore) -> Self {
        Self {
            dense,
            rows: HashMap::new(),
            squares: HashMap::new(),
        }
    }
}

impl Grads {
    /// Sets `var`'s dense gradient to `grad`, whose sum of squares is `squares`.
    pub fn insert_with_squares(&mut self, var: &Tensor, grad: Tensor, squares: f64) {
        self.squares.insert(grad.id(), squares);
        self.dense.insert(var, grad);
    }

    /// Notes sums of squares of gradient tensors, known from where they were made (as
    /// `autograd::take_weight_grad_squares` gives them).
    pub fn note_squares(&mut self, known: impl IntoIterator<Item = (TensorId, f64)>) {
        self.squares.extend(known);
    }

    /// The sum of squares recorded with the very tensor `grad`, if any.
    fn known_squares(&self, grad: &Tensor) -> Option<f64> {
        self.squares.get(&grad.id()).copied()
    }

    /// The gradient of `var` laid out as `var` (a row gradient made whole).
    pub fn whole(&self, var: &Tensor) -> R<Option<Tensor>> {
        if let Some(g) = self.dense.get(var) {
            return Ok(Some(g.clone()));
        }
        self.rows
            .get(&var.id())
            .map(|r| made_whole(r, var))
            .transpose()
    }

    /// Adds `grad` to the gradient of `var` (a row gradient, unless `var` has a whole one).
    pub fn add_rows(&mut self, var: &Tensor, grad: RowGrad) -> R<()> {
        if let Some(d) = self.dense.remove(var) {
            self.dense.insert(var, (d + made_whole(&grad, var)?)?);
        } else if let Some(mine) = self.rows.get_mut(&var.id()) {
            mine.add(&grad);
        } else {
            self.rows.insert(var.id(), grad);
        }
        Ok(())
    }

    /// Adds the gradients of `vars` in `other` into these.
    pub fn add(&mut self, other: &Grads, vars: &[Tensor]) -> R<()> {
        for var in vars {
            if let Some(r) = other.rows.get(&var.id()) {
                self.add_rows(var, r.clone())?;
            } else if let Some(g) = other.dense.get(var) {
                let total = match (self.dense.remove(var), self.rows.remove(&var.id())) {
                    (Some(s), _) => (s + g)?,
                    (None, Some(r)) => (made_whole(&r, var)? + g)?,
                    (None, None) => g.clone(),
                };
                self.dense.insert(var, total);
            }
        }
        Ok(())
    }
}

/// A row gradient of the table `var` as a tensor laid out as `var`.
fn made_whole(r: &RowGrad, var: &Tensor) -> R<Tensor> {
    Tensor::from_vec(r.to_dense(var.dims()[0]), var.shape(), var.device())
}

/// A trainable parameter with its qualified name (`0.encoder.layer.0...`, `2.linear.weight`,
/// `classifier.weight`).
#[derive(Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub decay: bool,
}

/// transformers excludes every bias and every LayerNorm parameter from weight decay.
pub fn decays(name: &str) -> bool {
    !(name.ends_with("bias") || name.contains("LayerNorm") || name.contains("layer_norm"))
}

#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// The two moments of one parameter: plain vectors for `f32` parameters on the CPU (updated in
/// one fused pass), tensors elsewhere.
enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Device { m: Tensor, v: Tensor },
}

struct State {
    moments: Moments,
    steps: u64,
    /// For a table updated from row gradients: which rows have ever had a gradient. The others
    /// have both moments 0, so AdamW only decays them (see [`SparseUpdate`]). `None` until the
    /// first row update, and again after a whole one.
    seen: Option<Vec<bool>>,
}

fn on_host(var: &Var) -> bool {
    var.device().is_cpu() && var.dtype() == DType::F32
}

pub struct AdamW {
    params: Vec<Param>,
    state: Vec<Option<State>>,
    config: AdamWConfig,
}

impl AdamW {
    pub fn new(params: Vec<Param>, config: AdamWConfig) -> Self {
        // The moments of CPU parameters are made now, before the first forward pass: made at the
        // first update instead, they land among that step's activations and gradients, and the
        // next step grows the heap around them (page faults worth half a step on MPNet).
        let state = params
            .iter()
            .map(|p| {
                on_host(&p.var).then(|| State {
                    moments: Moments::Host {
                        m: vec![0.0; p.var.elem_count()],
                        v: vec![0.0; p.var.elem_count()],
                    },
                    steps: 0,
                    seen: None,
                })
            })
            .collect();
        Self {
            params,
            state,
            config,
        }
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left alone (and
    /// their step count does not advance), as in PyTorch.
    pub fn step(&mut self, grads: &Grads, lr: f64) -> R<()> {
        self.step_scaled(grads, lr, 1.0)
    }

    /// [`AdamW::step`] with every gradient multiplied by `grad_scale` first (gradient clipping
    /// without a pass of its own).
    pub fn step_scaled(&mut self, grads: &Grads, lr: f64, grad_scale: f64) -> R<()> {
        let c = self.config;
        for (p, slot) in self.params.iter().zip(self.state.iter_mut()) {
            let var = p.var.as_tensor();
            let rows = grads.rows.get(&var.id());
            if rows.is_none() && grads.dense.get(var).is_none() {
                continue;
            }
            let state = match slot {
                Some(s) => s,
                None => slot.insert(State {
                    moments: if on_host(&p.var) {
                        Moments::Host {
                            m: vec![0.0; var.elem_count()],
                            v: vec![0.0; var.elem_count()],
                        }
                    } else {
                        Moments::Device {
                            m: var.zeros_like()?,
                            v: var.zeros_like()?,
                        }
                    },
                    steps: 0,
                    seen: None,
                }),
            };
            state.steps += 1;
            let bc1 = 1.0 - c.beta1.powi(state.steps as i32);
            let bc2 = 1.0 - c.beta2.powi(state.steps as i32);
            let wd = if p.decay { c.weight_decay } else { 0.0 };
            let fused = |m, v| FusedUpdate {
                m: Mutex::new(m),
                v: Mutex::new(v),
                beta1: c.beta1 as f32,
                beta2: c.beta2 as f32,
                grad_scale: grad_scale as f32,
                decay: (1.0 - lr * wd) as f32,
                step: (lr / bc1) as f32,
                inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
                eps: c.eps as f32,
            };
            match (&mut state.moments, rows) {
                (Moments::Host { m, v }, Some(rows)) => {
                    let width = rows.width;
                    let seen = state.seen.get_or_insert_with(|| rows_seen(m, v, width));
                    let update = SparseUpdate {
                        dense: fused(m, v),
                        grad: rows,
                        seen: Mutex::new(seen),
                    };
                    var.inplace_op1(&update)?;
                }
                (Moments::Host { m, v }, None) => {
                    // One pass over parameter, gradient and moments, in place, on all threads.
                    state.seen = None;
                    let g = grads.whole(var)?.expect("a gradient").contiguous()?;
                    var.inplace_op2(&g, &fused(m, v))?;
                }
                (Moments::Device { m, v }, _) => {
                    let g = grads.whole(var)?.expect("a gradient");
                    let g = if grad_scale != 1.0 {
                        (g * grad_scale)?
                    } else {
                        g
                    };
                    *m = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
                    *v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                    let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
                    let update = (m.div(&denom)? * (lr / bc1))?;
                    let theta = var.detach();
                    let theta = if wd > 0.0 {
                        (theta * (1.0 - lr * wd))?
                    } else {
                        theta
                    };
                    p.var.set(&(theta - update)?)?;
                }
            }
        }
        Ok(())
    }

    /// The moments and step counts by parameter name, for a checkpoint.
    pub fn state_tensors(&self) -> R<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (p, s) in self.params.iter().zip(&self.state) {
            if let Some(s) = s.as_ref().filter(|s| s.steps > 0) {
                let dev = p.var.device();
                let (m, v) = match &s.moments {
                    Moments::Host { m, v } => (
                        Tensor::from_slice(m, p.var.shape(), dev)?,
                        Tensor::from_slice(v, p.var.shape(), dev)?,
                    ),
                    Moments::Device { m, v } => (m.clone(), v.clone()),
                };
                out.insert(format!("m.{}", p.name), m);
                out.insert(format!("v.{}", p.name), v);
                out.insert(
                    format!("steps.{}", p.name),
                    Tensor::new(&[s.steps as f32], dev)?,
                );
            }
        }
        Ok(out)
    }

    /// Restores what [`Self::state_tensors`] saved.
    pub fn load_state(&mut self, saved: &HashMap<String, Tensor>) -> R<()> {
        for (p, slot) in self.params.iter().zip(self.state.iter_mut()) {
            let (Some(m), Some(v), Some(steps)) = (
                saved.get(&format!("m.{}", p.name)),
                saved.get(&format!("v.{}", p.name)),
                saved.get(&format!("steps.{}", p.name)),
            ) else {
                continue;
            };
            let dev = p.var.device();
            let steps = steps.to_dtype(DType::F32)?.to_vec1::<f32>()?[0] as u64;
            let moments = if on_host(&p.var) {
                let host = |t: &Tensor| -> R<Vec<f32>> {
                    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
                };
                Moments::Host {
                    m: host(m)?,
                    v: host(v)?,
                }
            } else {
                Moments::Device {
                    m: m.to_device(dev)?,
                    v: v.to_device(dev)?,
                }
            };
            *slot = Some(State {
                moments,
                steps,
                seen: None,
            });
        }
        Ok(())
    }
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> R<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: not contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what}: expected f32"),
    }
}

fn contiguous_f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> R<&'a mut [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: not contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{what}: expected f32"),
    }
}

/// One AdamW update of a CPU parameter, in place, as torch computes it:
/// `g = scale g; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g²;`
/// `p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)`.
struct FusedUpdate<'a> {
    m: Mutex<&'a mut Vec<f32>>,
    v: Mutex<&'a mut Vec<f32>>,
    beta1: f32,
    beta2: f32,
    grad_scale: f32,
    decay: f32,
    step: f32,
    inv_sqrt_bc2: f32,
    eps: f32,
}

impl FusedUpdate<'_> {
    fn run(&self, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        let (b1, c1) = (self.beta1, 1.0 - self.beta1);
        let (b2, c2) = (self.beta2, 1.0 - self.beta2);
        for (((p, m), v), g) in p.iter_mut().zip(m).zip(v).zip(g) {
            let g = if self.grad_scale == 1.0 {
                *g
            } else {
                g * self.grad_scale
            };
            *m = b1 * *m + c1 * g;
            *v = b2 * *v + c2 * (g * g);
            let denom = v.sqrt() * self.inv_sqrt_bc2 + self.eps;
            *p = *p * self.decay - self.step * (*m / denom);
        }
    }
}

impl InplaceOp2 for FusedUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, g: &CpuStorage, g_l: &Layout) -> R<()> {
        const CHUNK: usize = 1 << 14;
        let p = contiguous_f32_mut(dst, dst_l, "parameter")?;
        let g = contiguous_f32(g, g_l, "gradient")?;
        let mut m_guard = self.m.lock().expect("moment lock");
        let mut v_guard = self.v.lock().expect("moment lock");
        let (m, v): (&mut [f32], &mut [f32]) = (&mut m_guard[..], &mut v_guard[..]);
        if m.len() != p.len() || v.len() != p.len() || g.len() != p.len() {
            candle_core::bail!("adamw: parameter, gradient and moments differ in size");
        }
        if p.len() < 4 * CHUNK {
            self.run(p, m, v, g);
        } else {
            p.par_chunks_mut(CHUNK)
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(|(((p, m), v), g)| self.run(p, m, v, g));
        }
        Ok(())
    }
}

/// Which rows of a `width`-wide table have a moment that is not +0 (have had a gradient).
fn rows_seen(m: &[f32], v: &[f32], width: usize) -> Vec<bool> {
    m.par_chunks(width)
        .zip(v.par_chunks(width))
        .map(|(m, v)| m.iter().chain(v).any(|x| x.to_bits() != 0))
        .collect()
}

/// [`FusedUpdate`] of a table from a [`RowGrad`], with the same bits as the whole update from
/// the gradient made whole, without that gradient:
/// - a row with a gradient is updated from it, as the whole update would;
/// - a row that has had one before is updated from a zero gradient (its moments decay and it
///   keeps moving), from a row of zeros, as the whole update would;
/// - a row that never had one has both moments +0, and there the whole update computes
///   `m = +0, v = +0, p = p (1 - lr wd) - step · (0 / eps) = p (1 - lr wd)`: only that
///   product is computed, and the moments are not read. (With `eps` 0 the whole update makes
///   NaN of `0 / 0`; so would this, as every row then takes the first two ways.)
///
/// For all-MiniLM-L6-v2 the table is 30,522 rows, of which a run on STS-B reaches a third.
struct SparseUpdate<'a> {
    dense: FusedUpdate<'a>,
    grad: &'a RowGrad,
    seen: Mutex<&'a mut Vec<bool>>,
}

impl InplaceOp1 for SparseUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw-rows"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout) -> R<()> {
        const ROWS: usize = 64;
        let u = &self.dense;
        let p = contiguous_f32_mut(dst, dst_l, "parameter")?;
        let mut m_guard = u.m.lock().expect("moment lock");
        let mut v_guard = u.v.lock().expect("moment lock");
        let mut seen_guard = self.seen.lock().expect("rows lock");
        let (m, v): (&mut [f32], &mut [f32]) = (&mut m_guard[..], &mut v_guard[..]);
        let seen: &mut [bool] = &mut seen_guard[..];
        let w = self.grad.width;
        if w == 0 || m.len() != p.len() || v.len() != p.len() || seen.len() * w != p.len() {
            candle_core::bail!("adamw: table, row gradient and moments differ in size");
        }
        // Where each table row's gradient is stored, if it has one.
        let mut slot = vec![u32::MAX; seen.len()];
        for (i, &r) in self.grad.rows.iter().enumerate() {
            match slot.get_mut(r as usize) {
                Some(s) => *s = i as u32,
                None => candle_core::bail!("adamw: gradient for row {r} of {}", seen.len()),
            }
        }
        let zeros = vec![0f32; w];
        let only_decay = u.eps > 0.0 && u.step.is_finite();
        p.par_chunks_mut(ROWS * w)
            .zip(m.par_chunks_mut(ROWS * w))
            .zip(v.par_chunks_mut(ROWS * w))
            .zip(seen.par_chunks_mut(ROWS))
            .zip(slot.par_chunks(ROWS))
            .for_each(|((((p, m), v), seen), slot)| {
                for (r, (seen, &slot)) in seen.iter_mut().zip(slot).enumerate() {
                    let span = r * w..(r + 1) * w;
                    let (p, m, v) = (&mut p[span.clone()], &mut m[span.clone()], &mut v[span]);
                    if slot != u32::MAX {
                        u.run(p, m, v, self.grad.row(slot as usize));
                        *seen = true;
                    } else if *seen || !only_decay {
                        u.run(p, m, v, &zeros);
                    } else if u.decay != 1.0 {
                        p.iter_mut().for_each(|x| *x *= u.decay);
                    }
                }
            });
        Ok(())
    }
}

/// The learning-rate factor of transformers' `get_linear_schedule_with_warmup` at `step`
/// (0-based): rises linearly over `warmup` steps, then falls linearly to 0 at `total`.
pub fn linear_schedule(step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    ((total.saturating_sub(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64).max(0.0)
}

/// Sum of squares of a gradient: in `f32` chunks summed in `f64` on the CPU, through candle
/// elsewhere.
fn sum_of_squares(g: &Tensor) -> R<f64> {
    {
        let (storage, layout) = g.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(kernels::sum_of_squares(&data[a..b]));
        }
    }
    g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// The global L2 norm of all parameters' gradients.
pub fn grad_norm(grads: &Grads, params: &[Param]) -> R<f64> {
    let mut total = 0f64;
    for p in params {
        let var = p.var.as_tensor();
        if let Some(r) = grads.rows.get(&var.id()) {
            total += kernels::sum_of_squares(&r.values);
        } else if let Some(g) = grads.dense.get(var) {
            total += match grads.known_squares(g) {
                Some(s) => s,
                None => sum_of_squares(g)?,
            };
        }
    }
    Ok(total.sqrt())
}

/// The factor `torch.nn.utils.clip_grad_norm_` scales gradients by for a norm of `norm`
/// (with its 1e-6 in the denominator), or 1 when they are within `max_norm`.
pub fn clip_coefficient(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`; returns the norm
/// before clipping (`torch.nn.utils.clip_grad_norm_`, with its 1e-6 in the denominator).
pub fn clip_grad_norm(grads: &mut Grads, params: &[Param], max_norm: f64) -> R<f64> {
    let norm = grad_norm(grads, params)?;
    let coef = clip_coefficient(norm, max_norm);
    if coef < 1.0 {
        for p in params {
            let var = p.var.as_tensor();
            if let Some(g) = grads.dense.remove(var) {
                grads.dense.insert(var, (g * coef)?);
            }
            if let Some(r) = grads.rows.get_mut(&var.id()) {
                r.values.iter_mut().for_each(|x| *x *= coef as f32);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        // transformers: lr_lambda(step) for warmup 2, total 10.
        let f: Vec<f64> = (0..=10).map(|s| linear_schedule(s, 2, 10)).collect();
        assert_eq!(f[0], 0.0);
        assert_eq!(f[1], 0.5);
        assert_eq!(f[2], 1.0);
        assert!((f[6] - 0.5).abs() < 1e-12);
        assert_eq!(f[10], 0.0);
    }

    #[test]
    fn decay_excludes_bias_and_layer_norm() {
        assert!(decays("0.encoder.layer.0.attention.self.query.weight"));
        assert!(!decays("0.encoder.layer.0.attention.self.query.bias"));
        assert!(!decays("0.embeddings.LayerNorm.weight"));
        assert!(decays("classifier.weight"));
    }

    /// Two steps on f(x) = sum(x^2) against torch:
    /// ```python
    /// x = torch.tensor([1.0, -2.0], requires_grad=True)
    /// opt = torch.optim.AdamW([x], lr=0.1, weight_decay=0.01)
    /// for _ in range(2):
    ///     opt.zero_grad(); (x**2).sum().backward(); opt.step()
    /// print(x.tolist())  # [0.7985190749168396, -1.7962726354599]
    /// ```
    #[test]
    fn adamw_matches_torch() {
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(
            vec![Param {
                name: "x".into(),
                var: var.clone(),
                decay: true,
            }],
            AdamWConfig::default(),
        );
        for _ in 0..2 {
            let loss = var.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap().into(), 0.1).unwrap();
        }
        let x: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        let want = [0.798_519_1f32, -1.796_272_6];
        for (g, w) in x.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{x:?} vs {want:?}");
        }
        let state = opt.state_tensors().unwrap();
        let fresh = Var::new(&[0f32, 0.], &Device::Cpu).unwrap();
        let mut again = AdamW::new(
            vec![Param {
                name: "x".into(),
                var: fresh,
                decay: true,
            }],
            AdamWConfig::default(),
        );
        again.load_state(&state).unwrap();
        assert_eq!(again.state_tensors().unwrap().len(), 3);
    }

    #[test]
    fn a_scaled_step_equals_clipping_then_stepping() {
        // Large enough for the parallel path of the fused update.
        let n = 100_000;
        let init: Vec<f32> = (0..n).map(|i| (i as f32 * 0.01).sin()).collect();
        let run = |fold: bool| -> Vec<f32> {
            let var = Var::from_vec(init.clone(), n, &Device::Cpu).unwrap();
            let params = vec![Param {
                name: "x".into(),
                var: var.clone(),
                decay: true,
            }];
            let mut opt = AdamW::new(params.clone(), AdamWConfig::default());
            for _ in 0..3 {
                let loss = var.as_tensor().sqr().unwrap().sum_all().unwrap();
                let mut grads = Grads::from(loss.backward().unwrap());
                if fold {
                    let norm = grad_norm(&grads, &params).unwrap();
                    opt.step_scaled(&grads, 0.01, clip_coefficient(norm, 1.0))
                        .unwrap();
                } else {
                    clip_grad_norm(&mut grads, &params, 1.0).unwrap();
                    opt.step(&grads, 0.01).unwrap();
                }
            }
            var.as_tensor().to_vec1().unwrap()
        };
        let (a, b) = (run(true), run(false));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst < 1e-6, "{worst}");
        assert!(a.iter().zip(&init).any(|(x, y)| x != y), "parameters moved");
    }

    #[test]
    fn a_known_sum_of_squares_serves_only_its_own_gradient() {
        let var = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let params = [Param {
            name: "x".into(),
            var: var.clone(),
            decay: true,
        }];
        let loss = var.as_tensor().sqr().unwrap().sum_all().unwrap();
        let mut grads: Grads = loss.backward().unwrap().into();
        // The gradient is [2, 4]: its squares sum to 20.
        assert!((grad_norm(&grads, &params).unwrap() - 20f64.sqrt()).abs() < 1e-12);
        let g = grads.dense.get(var.as_tensor()).unwrap().clone();
        // A sum recorded with this very gradient is taken as it is (7 here, to tell it apart).
        grads.insert_with_squares(var.as_tensor(), g.clone(), 7.0);
        assert!((grad_norm(&grads, &params).unwrap() - 7f64.sqrt()).abs() < 1e-12);
        // A gradient replaced since is summed again.
        grads.dense.insert(var.as_tensor(), (g * 1.0).unwrap());
        assert!((grad_norm(&grads, &params).unwrap() - 20f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let var = Var::new(&[3.0f32, 4.0], &Device::Cpu).unwrap();
        let params = vec![Param {
            name: "x".into(),
            var: var.clone(),
            decay: true,
        }];
        // d/dx of 0.5 * |x|^2 is x: norm 5.
        let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        let mut grads = Grads::from(loss.backward().unwrap());
        let norm = clip_grad_norm(&mut grads, &params, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let g: Vec<f32> = grads.dense.get(var.as_tensor()).unwrap().to_vec1().unwrap();
        assert!(
            (g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5,
            "{g:?}"
        );
    }

    /// A gradient store holding only `var`'s gradient, `values`.
    fn store_of(var: &Var, values: Vec<f32>) -> GradStore {
        // candle makes a store only from a backward pass: of sum(var * values), whose gradient
        // with respect to `var` is `values`.
        let g = Tensor::from_vec(values, var.shape(), var.device()).unwrap();
        let loss = (var.as_tensor() * g).unwrap().sum_all().unwrap();
        let store = loss.backward().unwrap();
        assert!(store.get(var.as_tensor()).is_some());
        store
    }

    /// Bits of a table's values, its moments, and its step count.
    fn bits(opt: &AdamW, var: &Var) -> (Vec<u32>, Vec<u32>) {
        let p: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let st = opt.state_tensors().unwrap();
        let mut moments: Vec<f32> = Vec::new();
        for key in ["m.t", "v.t"] {
            moments.extend(st[key].flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
        (
            p.iter().map(|x| x.to_bits()).collect(),
            moments.iter().map(|x| x.to_bits()).collect(),
        )
    }

    /// An update from a row gradient is the update from that gradient made whole, to the bit:
    /// rows with a gradient, rows that had one in an earlier step, rows that never had one,
    /// with and without a scale, across a checkpoint's reload; and not the update that skips
    /// the rows without a gradient (a wrong zero-gradient update fails it).
    #[test]
    fn a_row_gradient_updates_as_the_whole_gradient() {
        let (rows, width) = (300, 24);
        let init: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let steps: Vec<(Vec<usize>, f64)> = vec![
            (vec![3, 3, 17, 250, 0], 1.0),
            (vec![17, 299, 64, 65, 66, 3], 0.25),
            (vec![1, 2, 250], 1.0),
            (vec![299], 0.5),
        ];
        let grad_of = |ids: &[usize], step: usize| -> RowGrad {
            let g: Vec<f32> = (0..ids.len() * width)
                .map(|i| ((i * 31 + step * 17) % 23) as f32 / 23.0 - 0.4)
                .collect();
            RowGrad::gather(ids, &g, width)
        };
        let run = |sparse: bool, reload_after: Option<usize>| {
            let var = Var::from_vec(init.clone(), (rows, width), &Device::Cpu).unwrap();
            let params = vec![Param {
                name: "t".into(),
                var: var.clone(),
                decay: true,
            }];
            let mut opt = AdamW::new(params.clone(), AdamWConfig::default());
            for (k, (ids, scale)) in steps.iter().enumerate() {
                let rg = grad_of(ids, k);
                let grads = if sparse {
                    let mut g = Grads::from(store_of(&var, vec![0.0; rows * width]));
                    g.dense.remove(var.as_tensor());
                    g.add_rows(var.as_tensor(), rg).unwrap();
                    g
                } else {
                    Grads::from(store_of(&var, rg.to_dense(rows)))
                };
                opt.step_scaled(&grads, 1e-2 * (k + 1) as f64, *scale)
                    .unwrap();
                if reload_after == Some(k) {
                    let saved = opt.state_tensors().unwrap();
                    opt = AdamW::new(params.clone(), AdamWConfig::default());
                    opt.load_state(&saved).unwrap();
                }
            }
            bits(&opt, &var)
        };
        let whole = run(false, None);
        assert_eq!(run(true, None), whole, "row updates");
        assert_eq!(run(true, Some(1)), whole, "row updates across a reload");
        // Row 100 never had a gradient: weight decay still moved it.
        let never = 100 * width..101 * width;
        let before: Vec<u32> = init[never.clone()].iter().map(|x| x.to_bits()).collect();
        assert_ne!(whole.0[never], before[..]);
    }
}
