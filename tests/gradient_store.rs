//! The one change this project carries in candle-core (`vendor/candle-core`, see
//! `vendor/README.md`): the backward pass stores a tensor's first gradient as it is, instead of
//! adding it to a fresh tensor of zeros. These tests fail if the published crate is used again
//! (the first one), and hold the behaviour the change must keep (the others).

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor, Var};

/// What a [`Pass`]'s backward pass returned.
type Returned = Arc<Mutex<Option<Tensor>>>;

/// The identity, whose backward pass returns `grad` transformed by `make` and keeps a handle to
/// what it returned.
struct Pass<F: Fn(&Tensor) -> Result<Tensor> + Send + Sync> {
    make: F,
    returned: Returned,
}

impl<F: Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static> Pass<F> {
    /// `x` through the op, and the handle.
    fn apply(x: &Var, make: F) -> (Tensor, Returned) {
        let returned = Returned::default();
        let op = Self {
            make,
            returned: returned.clone(),
        };
        (x.as_tensor().apply_op1(op).unwrap(), returned)
    }
}

impl<F: Fn(&Tensor) -> Result<Tensor> + Send + Sync> CustomOp1 for Pass<F> {
    fn name(&self) -> &'static str {
        "pass"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let values = storage.as_slice::<f32>()?;
        let (start, end) = layout
            .contiguous_offsets()
            .expect("a contiguous input in these tests");
        Ok((
            CpuStorage::F32(values[start..end].to_vec()),
            layout.shape().clone(),
        ))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let out = (self.make)(grad)?;
        *self.returned.lock().unwrap() = Some(out.clone());
        Ok(Some(out))
    }
}

fn var(rows: usize, cols: usize) -> Var {
    let values: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.25 - 1.0).collect();
    Var::from_vec(values, (rows, cols), &Device::Cpu).unwrap()
}

#[test]
fn a_first_gradient_is_stored_without_a_copy() {
    let x = var(3, 4);
    let (y, returned) = Pass::apply(&x, |g: &Tensor| g * 3.0);
    let grads = y.sum_all().unwrap().backward().unwrap();
    let stored = grads.get(x.as_tensor()).unwrap();
    let returned = returned.lock().unwrap().clone().unwrap();
    // The published candle-core adds every gradient to `zeros_like`, a new tensor.
    assert_eq!(
        stored.id(),
        returned.id(),
        "the gradient is not the tensor the op returned: is candle-core patched (vendor/README.md)?"
    );
    assert_eq!(stored.to_vec2::<f32>().unwrap(), vec![vec![3.0f32; 4]; 3]);
}

#[test]
fn gradients_of_a_tensor_used_twice_add_up() {
    // y = sum(x ⊙ x + 2x): dy/dx = 2x + 2.
    let x = var(2, 5);
    let t = x.as_tensor();
    let y = ((t * t).unwrap() + (t * 2.0).unwrap()).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    let got = grads.get(t).unwrap().to_vec2::<f32>().unwrap();
    let want = ((t * 2.0).unwrap() + 2.0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(got, want);
}

#[test]
fn a_strided_first_gradient_is_stored_contiguous() {
    // The op hands back a transposed view, as candle's own backward passes can; what is stored
    // must be contiguous, as it was when every gradient was a sum.
    let x = var(4, 4);
    let (y, _) = Pass::apply(&x, |g: &Tensor| g.t());
    let weights = Tensor::arange(0f32, 16.0, &Device::Cpu)
        .unwrap()
        .reshape((4, 4))
        .unwrap();
    let grads = (y * &weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let stored = grads.get(x.as_tensor()).unwrap();
    assert!(stored.is_contiguous());
    assert_eq!(
        stored.to_vec2::<f32>().unwrap(),
        weights.t().unwrap().to_vec2::<f32>().unwrap()
    );
}

#[test]
fn a_gradient_of_the_wrong_shape_still_fails() {
    // Upstream, `zeros_like(x) + grad` rejects a gradient of another shape; the change must not
    // store it silently.
    let x = var(2, 3);
    let (y, _) = Pass::apply(&x, |g: &Tensor| g.flatten_all());
    let err = y.sum_all().unwrap().backward().unwrap_err();
    assert!(err.to_string().contains("shape mismatch"), "{err}");
}
