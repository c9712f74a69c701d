//! Optimiser ops, all in place: AdamW (PyTorch semantics), the EMA of the
//! weights, and the global gradient norm.

use super::{check_same, check_same_shape, gpu_of, gpu_of_mut};
use crate::cpu::optim as kernels;
use crate::geom::AdamWConsts;
use crate::gpu::{launch, GpuDevice, GpuStorage};
use crate::{with_element, Result, Storage, Tensor, TensorError};

/// AdamW hyper-parameters (PyTorch names and meaning).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWParams {
    /// Errors on values for which the update is meaningless (as PyTorch does).
    fn validate(&self, op: &'static str) -> Result<()> {
        let bad = |what: &str, v: f64| Err(TensorError::invalid(op, format!("invalid {what}: {v}")));
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("learning rate (must be finite and >= 0)", self.lr);
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(&format!("{name} (must be in [0, 1))"), b);
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad("eps (must be finite and >= 0)", self.eps);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay (must be finite and >= 0)", self.weight_decay);
        }
        Ok(())
    }
}

/// One AdamW step at `step` (1-based), updating param, m and v in place:
/// p -= lr*wd*p ; m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2 ;
/// p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps).
pub fn adamw_step(
    param: &mut Tensor,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    h: &AdamWParams,
    step: u64,
) -> Result<()> {
    const OP: &str = "adamw_step";
    h.validate(OP)?;
    if step == 0 {
        return Err(TensorError::invalid(OP, "step is 1-based (the bias corrections divide by 1 - beta^step)"));
    }
    check_same(OP, &[param, grad, m, v])?;
    check_same_shape(OP, param, grad)?;
    check_same_shape(OP, param, m)?;
    check_same_shape(OP, param, v)?;
    let c = AdamWConsts::new(h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, step);
    match param.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let (g, m, v) = (grad.cpu_slice::<T>()?, m.cpu_slice_mut::<T>()?, v.cpu_slice_mut::<T>()?);
            kernels::adamw_step(param.cpu_slice_mut::<T>()?, g, m, v, &c);
            Ok(())
        }),
        Storage::Gpu(g) => {
            let dev = g.device().clone();
            let gs = gpu_of(OP, grad)?;
            let (ms, vs) = (gpu_of_mut(OP, m)?, gpu_of_mut(OP, v)?);
            launch::optim::adamw_step(&dev, gpu_of_mut(OP, param)?, gs, ms, vs, &c)
        }
    }
}

/// ema = decay * ema + (1 - decay) * param, with decay in [0, 1].
pub fn ema_update(ema: &mut Tensor, param: &Tensor, decay: f64) -> Result<()> {
    const OP: &str = "ema_update";
    if !(0.0..=1.0).contains(&decay) {
        return Err(TensorError::invalid(OP, format!("decay must be in [0, 1], got {decay}")));
    }
    check_same(OP, &[ema, param])?;
    check_same_shape(OP, ema, param)?;
    match ema.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            kernels::ema_update(ema.cpu_slice_mut::<T>()?, param.cpu_slice::<T>()?, decay);
            Ok(())
        }),
        Storage::Gpu(g) => {
            let dev = g.device().clone();
            let ps = gpu_of(OP, param)?;
            launch::optim::ema_update(&dev, gpu_of_mut(OP, ema)?, ps, decay)
        }
    }
}

/// sqrt of the sum of squares of every element of every tensor, in f64,
/// tensors summed in the order given (0 for no tensors). Dtypes may differ.
/// Consecutive GPU tensors on one device are summed in one launch
/// (`launch::optim::sum_squares`); runs are added in the order given.
pub fn global_l2_norm(grads: &[&Tensor]) -> Result<f64> {
    let mut sum = 0.0f64;
    // the current run of GPU tensors on one device, not yet summed
    let mut run: Vec<&GpuStorage> = Vec::new();
    let mut run_dev: Option<GpuDevice> = None;
    for t in grads {
        match t.storage() {
            Storage::Cpu(s) => {
                if let Some(dev) = run_dev.take() {
                    sum += launch::optim::sum_squares(&dev, &run)?;
                    run.clear();
                }
                sum += with_element!(s.dtype(), T, { kernels::sum_squares(t.cpu_slice::<T>()?) });
            }
            Storage::Gpu(g) => {
                if run_dev.as_ref().is_some_and(|d| !d.same(g.device())) {
                    let dev = run_dev.take().expect("checked above");
                    sum += launch::optim::sum_squares(&dev, &run)?;
                    run.clear();
                }
                run_dev.get_or_insert_with(|| g.device().clone());
                run.push(g);
            }
        }
    }
    if let Some(dev) = run_dev {
        sum += launch::optim::sum_squares(&dev, &run)?;
    }
    Ok(sum.sqrt())
}
