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
    let _timer = crate::profile::op("adamw_step");
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
    let _timer = crate::profile::op("ema_update");
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
    let _timer = crate::profile::op("global_l2_norm");
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

/// Global-norm gradient clipping without a host round trip: the sum of
/// squares of every element of `grads` (f64, the order and chunks of
/// [`global_l2_norm`]) is written into `log` at f32 element `slot` (two
/// slots: the f64's bytes; `slot` even), and when `max_norm > 0` and
/// sqrt(sum) > max_norm every gradient is scaled in place by
/// max_norm / (norm + 1e-6), as `scale_in_place` would with the host's
/// factor. GPU tensors on one device; three launches however many tensors.
pub fn clip_grad_norm_on_device(grads: &mut [&mut Tensor], max_norm: f64, log: &mut Tensor, slot: usize) -> Result<()> {
    let _timer = crate::profile::op("clip_grad_norm_on_device");
    const OP: &str = "clip_grad_norm_on_device";
    if !slot.is_multiple_of(2) || slot + 2 > log.numel() {
        return Err(TensorError::invalid(
            OP,
            format!("slot {slot} is not an even index with two slots left in the log"),
        ));
    }
    let dev = gpu_of(OP, log)?.device().clone();
    let mut stores = Vec::with_capacity(grads.len());
    for g in grads.iter_mut() {
        let s = gpu_of_mut(OP, g)?;
        if !s.device().same(&dev) {
            return Err(TensorError::DeviceMismatch { op: OP, a: dev.name(), b: s.device().name() });
        }
        if max_norm > 0.0 {
            s.make_unique()?; // scaled in place below
        }
        stores.push(&*s);
    }
    let log_s = gpu_of_mut(OP, log)?;
    log_s.make_unique()?;
    let out = log_s.ptr() + 4 * slot as u64;
    match launch::optim::ChunkTable::new(&dev, &stores)? {
        None => dev.driver().memset_zero(out, 8),
        Some(table) => {
            launch::optim::queue_sum_squares(&dev, &table, out)?;
            if max_norm > 0.0 {
                launch::optim::queue_clip(&dev, &table, out, max_norm)?;
            }
            Ok(())
        }
    }
}

/// Copies `src` into `dst` from element `offset` on (same device and dtype;
/// a device-to-device copy on a GPU, no host synchronisation).
pub fn copy_into(dst: &mut Tensor, offset: usize, src: &Tensor) -> Result<()> {
    let _timer = crate::profile::op("copy_into");
    const OP: &str = "copy_into";
    check_same(OP, &[dst, src])?;
    let n = src.numel();
    if offset.checked_add(n).is_none_or(|end| end > dst.numel()) {
        return Err(TensorError::invalid(OP, format!("{n} elements at {offset} overrun {} elements", dst.numel())));
    }
    match src.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let from = src.cpu_slice::<T>()?.to_vec();
            dst.cpu_slice_mut::<T>()?[offset..offset + n].copy_from_slice(&from);
            Ok(())
        }),
        Storage::Gpu(g) => {
            let from = g.ptr();
            let d = gpu_of_mut(OP, dst)?;
            d.make_unique()?;
            d.device().driver().dtod(from, d.ptr() + 4 * offset as u64, 4 * n)
        }
    }
}

/// [`adamw_step`] of many tensors at once: tensor k gets `hypers[k]`. On one
/// GPU this is one launch for all of them (multi-tensor apply), with the
/// bits of one `adamw_step` per tensor; elsewhere a loop of `adamw_step`.
pub fn adamw_step_many(
    params: &mut [&mut Tensor],
    grads: &[&Tensor],
    m: &mut [&mut Tensor],
    v: &mut [&mut Tensor],
    hypers: &[AdamWParams],
    step: u64,
) -> Result<()> {
    adamw_step_many_at(params, grads, m, v, hypers, step, None)
}

/// The constants [`adamw_step_many`] gives its GPU kernel for these
/// hyper-parameters at `step`: 6 u64 words per tensor (f64 bit patterns).
/// A training graph writes them into its per-step scalars each step.
pub fn adamw_consts_words(hypers: &[AdamWParams], step: u64) -> Vec<u64> {
    launch::optim::adamw_consts_words(
        hypers.iter().map(|h| AdamWConsts::new(h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, step)),
    )
}

/// [`adamw_step_many`] whose GPU kernel reads its per-step constants at
/// device address `consts_at` when set: the caller wrote
/// [`adamw_consts_words`]`(hypers, step)` there (one copy a step) and keeps
/// it alive; the host still checks `hypers`. Same bits.
#[allow(clippy::too_many_arguments)]
pub fn adamw_step_many_at(
    params: &mut [&mut Tensor],
    grads: &[&Tensor],
    m: &mut [&mut Tensor],
    v: &mut [&mut Tensor],
    hypers: &[AdamWParams],
    step: u64,
    consts_at: Option<u64>,
) -> Result<()> {
    let _timer = crate::profile::op("adamw_step_many");
    const OP: &str = "adamw_step_many";
    let n = params.len();
    if grads.len() != n || m.len() != n || v.len() != n || hypers.len() != n {
        return Err(TensorError::invalid(OP, "params, grads, m, v and hyper-parameters differ in count"));
    }
    let Some(dev) = one_gpu(params.iter().map(|p| &**p)) else {
        for k in 0..n {
            adamw_step(params[k], grads[k], m[k], v[k], &hypers[k], step)?;
        }
        return Ok(());
    };
    if step == 0 {
        return Err(TensorError::invalid(OP, "step is 1-based (the bias corrections divide by 1 - beta^step)"));
    }
    for k in 0..n {
        hypers[k].validate(OP)?;
        check_same(OP, &[params[k], grads[k], m[k], v[k]])?;
        check_same_shape(OP, params[k], grads[k])?;
        check_same_shape(OP, params[k], m[k])?;
        check_same_shape(OP, params[k], v[k])?;
        for t in [&mut *params[k], &mut *m[k], &mut *v[k]] {
            gpu_of_mut(OP, t)?.make_unique()?; // written in place
        }
    }
    let mut tensors = Vec::with_capacity(n);
    for k in 0..n {
        let h = &hypers[k];
        tensors.push(launch::optim::AdamWTensor {
            param: gpu_of(OP, params[k])?,
            grad: gpu_of(OP, grads[k])?,
            m: gpu_of(OP, m[k])?,
            v: gpu_of(OP, v[k])?,
            consts: AdamWConsts::new(h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, step),
        });
    }
    launch::optim::adamw_multi(&dev, &tensors, consts_at)
}

/// [`ema_update`] of many tensors with one decay; one launch on one GPU.
pub fn ema_update_many(emas: &mut [&mut Tensor], params: &[&Tensor], decay: f64) -> Result<()> {
    ema_update_many_at(emas, params, decay, None)
}

/// The two f32 a GPU EMA kernel reads at `dk_at` ([`ema_update_many_at`]):
/// decay and 1 - decay, each rounded to f32 as the CPU rounds them.
pub fn ema_factors(decay: f64) -> [f32; 2] {
    [decay as f32, (1.0 - decay) as f32]
}

/// [`ema_update_many`] whose GPU kernel reads its factors at device address
/// `dk_at` when set: the caller wrote [`ema_factors`]`(decay)` there and
/// keeps it alive (training graphs). Same bits.
pub fn ema_update_many_at(emas: &mut [&mut Tensor], params: &[&Tensor], decay: f64, dk_at: Option<u64>) -> Result<()> {
    let _timer = crate::profile::op("ema_update_many");
    const OP: &str = "ema_update_many";
    if emas.len() != params.len() {
        return Err(TensorError::invalid(OP, "emas and params differ in count"));
    }
    let Some(dev) = one_gpu(emas.iter().map(|e| &**e)) else {
        for (e, p) in emas.iter_mut().zip(params) {
            ema_update(e, p, decay)?;
        }
        return Ok(());
    };
    if !(0.0..=1.0).contains(&decay) {
        return Err(TensorError::invalid(OP, format!("decay must be in [0, 1], got {decay}")));
    }
    for (e, p) in emas.iter_mut().zip(params) {
        check_same(OP, &[e, p])?;
        check_same_shape(OP, e, p)?;
        gpu_of_mut(OP, e)?.make_unique()?;
    }
    let pairs: Vec<(&GpuStorage, &GpuStorage)> =
        emas.iter().zip(params).map(|(e, p)| Ok((gpu_of(OP, e)?, gpu_of(OP, p)?))).collect::<Result<_>>()?;
    launch::optim::ema_multi(&dev, &pairs, decay, dk_at)
}

/// The GPU all these tensors live on, if they all live on one.
fn one_gpu<'a>(mut ts: impl Iterator<Item = &'a Tensor>) -> Option<GpuDevice> {
    let Storage::Gpu(g) = ts.next()?.storage() else { return None };
    let dev = g.device().clone();
    ts.all(|t| matches!(t.storage(), Storage::Gpu(h) if h.device().same(&dev))).then_some(dev)
}

/// Copies `src` into row `row` of `dst` (rows of `src.numel()` elements),
/// with `row` the u64 at device address `row_at`, which the caller keeps
/// alive: a copy whose destination changes between a graph's replays (the
/// step log's slot). Nothing is written when the row is past `dst`'s end.
/// GPU tensors on one device.
pub fn copy_to_row_at(dst: &mut Tensor, src: &Tensor, row_at: u64) -> Result<()> {
    let _timer = crate::profile::op("copy_to_row_at");
    const OP: &str = "copy_to_row_at";
    check_same(OP, &[dst, src])?;
    let s = gpu_of(OP, src)?.clone();
    let d = gpu_of_mut(OP, dst)?;
    d.make_unique()?;
    launch::optim::copy_to_row(&d.device().clone(), d, &s, row_at)
}
