//! AdamW as `torch.optim.AdamW`, with weight decay excluded from biases and LayerNorm (as the
//! Python library's trainer does), the linear warm-up / decay schedule of transformers, and
//! gradient-norm clipping as `torch.nn.utils.clip_grad_norm_`.
//!
//! Our own rather than candle-nn's `AdamW`: that one applies one weight decay to every parameter
//! and keeps its moments private, so they could not be checkpointed for `--resume`.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Storage, Tensor, Var};
use rayon::prelude::*;

type R<T> = candle_core::Result<T>;

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
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> R<()> {
        self.step_scaled(grads, lr, 1.0)
    }

    /// [`AdamW::step`] with every gradient multiplied by `grad_scale` first (gradient clipping
    /// without a pass of its own).
    pub fn step_scaled(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> R<()> {
        let c = self.config;
        for (p, slot) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let state = match slot {
                Some(s) => s,
                None => slot.insert(State {
                    moments: if on_host(&p.var) {
                        Moments::Host {
                            m: vec![0.0; g.elem_count()],
                            v: vec![0.0; g.elem_count()],
                        }
                    } else {
                        Moments::Device {
                            m: g.zeros_like()?,
                            v: g.zeros_like()?,
                        }
                    },
                    steps: 0,
                }),
            };
            state.steps += 1;
            let bc1 = 1.0 - c.beta1.powi(state.steps as i32);
            let bc2 = 1.0 - c.beta2.powi(state.steps as i32);
            let wd = if p.decay { c.weight_decay } else { 0.0 };
            let g = g.contiguous()?;
            match &mut state.moments {
                Moments::Host { m, v } => {
                    // One pass over parameter, gradient and moments, in place, on all threads:
                    // the word-embedding table alone is 47 MB for all-MiniLM-L6-v2.
                    let update = FusedUpdate {
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
                    p.var.as_tensor().inplace_op2(&g, &update)?;
                }
                Moments::Device { m, v } => {
                    let g = if grad_scale != 1.0 {
                        (g * grad_scale)?
                    } else {
                        g
                    };
                    *m = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
                    *v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                    let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
                    let update = (m.div(&denom)? * (lr / bc1))?;
                    let theta = p.var.as_tensor().detach();
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
            *slot = Some(State { moments, steps });
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
            return Ok(data[a..b]
                .par_chunks(1 << 12)
                .map(|c| crate::model::cpu::kernels::dot(c, c) as f64)
                .sum());
        }
    }
    g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// The global L2 norm of all parameters' gradients.
pub fn grad_norm(grads: &GradStore, params: &[Param]) -> R<f64> {
    let mut total = 0f64;
    for p in params {
        if let Some(g) = grads.get(p.var.as_tensor()) {
            total += sum_of_squares(g)?;
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
pub fn clip_grad_norm(grads: &mut GradStore, params: &[Param], max_norm: f64) -> R<f64> {
    let norm = grad_norm(grads, params)?;
    let coef = clip_coefficient(norm, max_norm);
    if coef < 1.0 {
        for p in params {
            if let Some(g) = grads.remove(p.var.as_tensor()) {
                grads.insert(p.var.as_tensor(), (g * coef)?);
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
            opt.step(&loss.backward().unwrap(), 0.1).unwrap();
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
                let mut grads = loss.backward().unwrap();
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
    fn clipping_scales_to_the_max_norm() {
        let var = Var::new(&[3.0f32, 4.0], &Device::Cpu).unwrap();
        let params = vec![Param {
            name: "x".into(),
            var: var.clone(),
            decay: true,
        }];
        // d/dx of 0.5 * |x|^2 is x: norm 5.
        let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        let mut grads = loss.backward().unwrap();
        let norm = clip_grad_norm(&mut grads, &params, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let g: Vec<f32> = grads.get(var.as_tensor()).unwrap().to_vec1().unwrap();
        assert!(
            (g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5,
            "{g:?}"
        );
    }
}
