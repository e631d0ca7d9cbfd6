//! AdamW as `torch.optim.AdamW`, with weight decay excluded from biases and LayerNorm (as the
//! Python library's trainer does), the linear warm-up / decay schedule of transformers, and
//! gradient-norm clipping as `torch.nn.utils.clip_grad_norm_`.
//!
//! Our own rather than candle-nn's `AdamW`: that one applies one weight decay to every parameter
//! and keeps its moments private, so they could not be checkpointed for `--resume`.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor, Var};

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

struct State {
    m: Tensor,
    v: Tensor,
    steps: u64,
}

pub struct AdamW {
    params: Vec<Param>,
    state: Vec<Option<State>>,
    config: AdamWConfig,
}

impl AdamW {
    pub fn new(params: Vec<Param>, config: AdamWConfig) -> Self {
        let state = params.iter().map(|_| None).collect();
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
        let c = self.config;
        for (p, slot) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let state = match slot {
                Some(s) => s,
                None => slot.insert(State {
                    m: g.zeros_like()?,
                    v: g.zeros_like()?,
                    steps: 0,
                }),
            };
            state.steps += 1;
            let bc1 = 1.0 - c.beta1.powi(state.steps as i32);
            let bc2 = 1.0 - c.beta2.powi(state.steps as i32);
            let wd = if p.decay { c.weight_decay } else { 0.0 };
            let g = g.contiguous()?;
            if p.var.device().is_cpu() && p.var.dtype() == DType::F32 {
                // In place, with no temporary tensors: the word-embedding table alone is 47 MB
                // for all-MiniLM-L6-v2, and the tensor formula below allocates several copies.
                let moment = |beta: f64, square| MomentUpdate {
                    beta: beta as f32,
                    square,
                };
                state.m.inplace_op2(&g, &moment(c.beta1, false))?;
                state.v.inplace_op2(&g, &moment(c.beta2, true))?;
                let update = ParamUpdate {
                    decay: (1.0 - lr * wd) as f32,
                    step: (lr / bc1) as f32,
                    inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
                    eps: c.eps as f32,
                };
                p.var.as_tensor().inplace_op3(&state.m, &state.v, &update)?;
                continue;
            }
            state.m = ((&state.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            state.v = ((&state.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((state.v.sqrt()? / bc2.sqrt())? + c.eps)?;
            let update = (state.m.div(&denom)? * (lr / bc1))?;
            let theta = p.var.as_tensor().detach();
            let theta = if wd > 0.0 {
                (theta * (1.0 - lr * wd))?
            } else {
                theta
            };
            p.var.set(&(theta - update)?)?;
        }
        Ok(())
    }

    /// The moments and step counts by parameter name, for a checkpoint.
    pub fn state_tensors(&self) -> R<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (p, s) in self.params.iter().zip(&self.state) {
            if let Some(s) = s {
                out.insert(format!("m.{}", p.name), s.m.clone());
                out.insert(format!("v.{}", p.name), s.v.clone());
                let dev = s.m.device();
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
            *slot = Some(State {
                m: m.to_device(dev)?,
                v: v.to_device(dev)?,
                steps,
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

/// `m = beta m + (1 - beta) g` (or `g^2`), in place.
struct MomentUpdate {
    beta: f32,
    square: bool,
}

impl InplaceOp2 for MomentUpdate {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, g: &CpuStorage, g_l: &Layout) -> R<()> {
        let m = contiguous_f32_mut(dst, dst_l, "moment")?;
        let g = contiguous_f32(g, g_l, "gradient")?;
        let (b, one_minus_b) = (self.beta, 1.0 - self.beta);
        if self.square {
            m.iter_mut()
                .zip(g)
                .for_each(|(m, g)| *m = b * *m + one_minus_b * (g * g));
        } else {
            m.iter_mut()
                .zip(g)
                .for_each(|(m, g)| *m = b * *m + one_minus_b * g);
        }
        Ok(())
    }
}

/// `p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)`, in place (as torch).
struct ParamUpdate {
    decay: f32,
    step: f32,
    inv_sqrt_bc2: f32,
    eps: f32,
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "adamw-param"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        m_l: &Layout,
        v: &CpuStorage,
        v_l: &Layout,
    ) -> R<()> {
        let p = contiguous_f32_mut(dst, dst_l, "parameter")?;
        let m = contiguous_f32(m, m_l, "first moment")?;
        let v = contiguous_f32(v, v_l, "second moment")?;
        for ((p, m), v) in p.iter_mut().zip(m).zip(v) {
            let denom = v.sqrt() * self.inv_sqrt_bc2 + self.eps;
            *p = *p * self.decay - self.step * (m / denom);
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

/// Scales all gradients so that their global L2 norm is at most `max_norm`; returns the norm
/// before clipping (`torch.nn.utils.clip_grad_norm_`, with its 1e-6 in the denominator).
pub fn clip_grad_norm(grads: &mut GradStore, params: &[Param], max_norm: f64) -> R<f64> {
    let mut total = 0f64;
    for p in params {
        if let Some(g) = grads.get(p.var.as_tensor()) {
            total += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = total.sqrt();
    let coef = max_norm / (norm + 1e-6);
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
