//! The optimiser side of a training step: global-norm gradient clipping,
//! AdamW with linear warmup, and an EMA of the weights with warmup.

use crate::{Error, Result};
use diffuse_tensor::ops::{self, AdamWParams};
use diffuse_tensor::{DType, Tensor};
use diffuse_unet::ParamStore;

/// AdamW state: first and second moments per trainable parameter (frozen
/// ones have none), a learning-rate factor per parameter (`--lr-scale`, as
/// PyTorch's parameter groups), and the step count.
pub struct AdamW {
    pub hyper: AdamWParams,
    pub m: Vec<Option<Tensor>>,
    pub v: Vec<Option<Tensor>>,
    pub lr_scale: Vec<f64>,
    /// Steps taken so far (the next step is `step + 1`).
    pub step: u64,
}

impl AdamW {
    /// Zero moments for the parameters that are trainable now.
    pub fn new(store: &ParamStore, hyper: AdamWParams) -> Result<Self> {
        let moments = || -> Result<Vec<Option<Tensor>>> {
            store
                .ids()
                .map(|id| {
                    let t = store.value(id);
                    let z = store.is_trainable(id).then(|| Tensor::zeros(t.dims().to_vec(), t.dtype(), &t.device()));
                    Ok(z.transpose()?)
                })
                .collect()
        };
        Ok(AdamW { hyper, m: moments()?, v: moments()?, lr_scale: vec![1.0; store.len()], step: 0 })
    }

    /// One update of every parameter that has a gradient, at learning rate
    /// `lr` times its factor (one launch for the whole model on a GPU).
    pub fn step(&mut self, store: &mut ParamStore, lr: f64) -> Result<()> {
        self.step_at(store, lr, None)
    }

    /// The hyper-parameters of each trainable parameter at learning rate
    /// `lr`, in order: what a step gives the parameters that have gradients
    /// (all trainable ones in a training step).
    pub fn hypers_for(&self, store: &ParamStore, lr: f64) -> Vec<AdamWParams> {
        store
            .ids()
            .enumerate()
            .filter(|&(_, id)| store.is_trainable(id))
            .map(|(k, _)| AdamWParams { lr: lr * self.lr_scale[k], ..self.hyper })
            .collect()
    }

    /// [`AdamW::step`] whose GPU kernel reads its constants at device
    /// address `consts_at` (the step scalars, written with
    /// `ops::adamw_consts_words(&self.hypers_for(store, lr), self.step + 1)`);
    /// when the parameters with gradients are not the trainable ones, the
    /// constants are uploaded instead.
    pub fn step_at(&mut self, store: &mut ParamStore, lr: f64, consts_at: Option<u64>) -> Result<()> {
        let expected = consts_at.map(|_| self.hypers_for(store, lr));
        self.step += 1;
        let (values, grads) = store.values_mut_and_grads();
        let (mut ps, mut gs, mut hs) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ms, mut vs) = (Vec::new(), Vec::new());
        for (k, ((value, grad), (m, v))) in
            values.into_iter().zip(grads).zip(self.m.iter_mut().zip(self.v.iter_mut())).enumerate()
        {
            let Some(grad) = grad else { continue };
            let (Some(m), Some(v)) = (m.as_mut(), v.as_mut()) else {
                return Err(Error::Config(format!("parameter {k} has a gradient but no AdamW state")));
            };
            ps.push(value);
            gs.push(grad);
            ms.push(m);
            vs.push(v);
            hs.push(AdamWParams { lr: lr * self.lr_scale[k], ..self.hyper });
        }
        let consts_at = consts_at.filter(|_| expected.as_ref() == Some(&hs));
        ops::adamw_step_many_at(&mut ps, &gs, &mut ms, &mut vs, &hs, self.step, consts_at)?;
        Ok(())
    }
}

/// Scales every gradient so their global L2 norm is at most `max_norm`;
/// returns the norm before clipping. `max_norm <= 0` disables clipping.
pub fn clip_grad_norm(store: &mut ParamStore, max_norm: f64) -> Result<f64> {
    let grads: Vec<&Tensor> = store.ids().filter_map(|id| store.grad(id)).collect();
    let norm = ops::global_l2_norm(&grads)?;
    if !norm.is_finite() {
        // The caller knows the step and the checkpoint to name.
        return Err(Error::Diverged { step: 0, reason: format!("the gradient norm is {norm}"), kept: String::new() });
    }
    clip_grad_norm_unchecked(store, max_norm)
}

/// As [`clip_grad_norm`] without the finiteness check (the training loop
/// checks the norm when it reads its step log): a non-finite norm scales
/// nothing when NaN, and zeroes the gradients when infinite.
pub fn clip_grad_norm_unchecked(store: &mut ParamStore, max_norm: f64) -> Result<f64> {
    let grads: Vec<&Tensor> = store.ids().filter_map(|id| store.grad(id)).collect();
    let norm = ops::global_l2_norm(&grads)?;
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        let ids: Vec<_> = store.ids().collect();
        for id in ids {
            store.scale_grad(id, s)?;
        }
    }
    Ok(norm)
}

/// Linear warmup from 0 to `lr` over `warmup` steps (step is 1-based).
pub fn warmup_lr(lr: f64, warmup: u64, step: u64) -> f64 {
    if warmup == 0 {
        lr
    } else {
        lr * (step as f64 / warmup as f64).min(1.0)
    }
}

/// Exponential moving average of the weights. With warmup the effective
/// decay is min(decay, (1 + n) / (10 + n)) after n updates, so early
/// averages are not dominated by the random initialisation.
pub struct Ema {
    pub decay: f64,
    pub warmup: bool,
    pub values: Vec<Tensor>,
    pub updates: u64,
}

impl Ema {
    pub fn new(store: &ParamStore, decay: f64, warmup: bool) -> Result<Self> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(Error::Config(format!("EMA decay {decay} is outside [0, 1]")));
        }
        Ok(Ema { decay, warmup, values: store.iter().map(|(_, t)| t.clone()).collect(), updates: 0 })
    }

    pub fn effective_decay(&self) -> f64 {
        if self.warmup {
            let n = self.updates as f64;
            self.decay.min((1.0 + n) / (10.0 + n))
        } else {
            self.decay
        }
    }

    /// Averages the trainable parameters; a frozen one keeps its value (its
    /// average would be itself, but `d*p + (1-d)*p` need not round to p).
    pub fn update(&mut self, store: &ParamStore) -> Result<()> {
        self.update_at(store, None)
    }

    /// [`Ema::update`] whose GPU kernel reads its two factors at device
    /// address `dk_at` (the step scalars, holding
    /// `ops::ema_factors(self.effective_decay())`).
    pub fn update_at(&mut self, store: &ParamStore, dk_at: Option<u64>) -> Result<()> {
        let d = self.effective_decay();
        let (mut emas, mut params) = (Vec::new(), Vec::new());
        for (e, id) in self.values.iter_mut().zip(store.ids()) {
            if store.is_trainable(id) {
                emas.push(e);
                params.push(store.value(id));
            }
        }
        ops::ema_update_many_at(&mut emas, &params, d, dk_at)?; // one launch on a GPU
        self.updates += 1;
        Ok(())
    }

    /// Copies the averaged weights into `store` (for sampling or export).
    pub fn copy_to(&self, store: &mut ParamStore) -> Result<()> {
        let ids: Vec<_> = store.ids().collect();
        for (id, e) in ids.into_iter().zip(&self.values) {
            store.set(id, e.clone())?;
        }
        Ok(())
    }
}

/// Zero tensors like every parameter (used when a checkpoint lacks a state).
pub fn zeros_like_params(store: &ParamStore) -> Result<Vec<Tensor>> {
    Ok(store
        .iter()
        .map(|(_, t)| Tensor::zeros(t.dims().to_vec(), t.dtype(), &t.device()))
        .collect::<diffuse_tensor::Result<Vec<_>>>()?)
}

pub fn dtype_of(store: &ParamStore) -> DType {
    store.iter().next().map(|(_, t)| t.dtype()).unwrap_or(DType::F32)
}
