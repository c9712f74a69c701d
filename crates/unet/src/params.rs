//! The parameter store: every weight of the model under its PyTorch
//! state_dict name, with an optional accumulated gradient.

use crate::{Result, UNetError};
use diffuse_tensor::{ops, DType, Device, Precision, Tensor};
use std::collections::HashMap;

/// Index of one parameter in its store (ordered as registered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParamId(usize);

impl ParamId {
    /// The position in registration order.
    pub fn index(self) -> usize {
        self.0
    }
}

pub struct ParamStore {
    names: Vec<String>,
    values: Vec<Tensor>,
    grads: Vec<Option<Tensor>>,
    /// False for a frozen parameter: its gradient is never computed or kept.
    trainable: Vec<bool>,
    /// True for a LoRA adapter tensor (what an adapter checkpoint holds).
    adapter: Vec<bool>,
    by_name: HashMap<String, usize>,
    /// Where each gradient lives when the store has gradient buffers
    /// ([`ParamStore::set_grad_buffers`]): a view into one flat allocation,
    /// None while it is the gradient in `grads` (or without buffers).
    grad_home: Vec<Option<Tensor>>,
    /// The arithmetic of the convolutions' and linear layers' GEMMs (fp32,
    /// or tensor-core inputs rounded to tf32 / bf16); a run setting, not
    /// part of the model's file.
    precision: Precision,
    /// Whether a GPU training cache keeps the activations only bf16 tensor
    /// cores read in bf16 (at `Precision::Bf16`; on by default).
    bf16_activations: bool,
    /// True while `grads[i]` is the buffer taken from `grad_home[i]`.
    home_in_use: Vec<bool>,
}

impl ParamStore {
    pub(crate) fn new() -> Self {
        ParamStore {
            names: Vec::new(),
            values: Vec::new(),
            grads: Vec::new(),
            trainable: Vec::new(),
            adapter: Vec::new(),
            by_name: HashMap::new(),
            grad_home: Vec::new(),
            home_in_use: Vec::new(),
            precision: Precision::Fp32,
            bf16_activations: true,
        }
    }

    /// The precision the layers run their GEMMs at.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// Whether training caches on a GPU keep bf16-only activations (the
    /// inputs of convolutions without a LoRA adapter, the attention's q, k,
    /// v) in bf16: true at
    /// `Precision::Bf16` unless turned off with [`Self::set_bf16_activations`].
    /// The results are the same bits either way; only the memory differs.
    pub fn keeps_bf16_activations(&self) -> bool {
        self.precision == Precision::Bf16 && self.bf16_activations
    }

    /// Turns bf16 activation storage on (the default) or off.
    pub fn set_bf16_activations(&mut self, on: bool) {
        self.bf16_activations = on;
    }

    pub(crate) fn add(&mut self, name: String, value: Tensor, adapter: bool) -> ParamId {
        let id = self.values.len();
        self.by_name.insert(name.clone(), id);
        self.names.push(name);
        self.values.push(value);
        self.grads.push(None);
        self.trainable.push(true);
        self.adapter.push(adapter);
        self.grad_home.push(None);
        self.home_in_use.push(false);
        ParamId(id)
    }

    /// Whether the backward computes this parameter's gradient.
    pub fn is_trainable(&self, id: ParamId) -> bool {
        self.trainable[id.0]
    }

    /// Freezes (`false`) or unfreezes a parameter; a frozen one loses its gradient.
    pub fn set_trainable(&mut self, id: ParamId, trainable: bool) {
        self.trainable[id.0] = trainable;
        if !trainable {
            self.drop_grad(id.0);
        }
    }

    /// Gives gradients a fixed buffer (`buffers[i]` for parameter i, its
    /// shape, or None; one flat allocation: `ops::flat_zeros`). Gradients accumulate
    /// as before; [`ParamStore::settle_grads`] then moves them into their
    /// buffers in one launch, so that the optimiser and an all-reduce find
    /// them where the buffers are. Current gradients are dropped.
    pub fn set_grad_buffers(&mut self, buffers: Vec<Option<Tensor>>) -> Result<()> {
        if buffers.len() != self.values.len() {
            return Err(UNetError::Config(format!(
                "{} gradient buffers for {} parameters",
                buffers.len(),
                self.values.len()
            )));
        }
        for (i, b) in buffers.iter().enumerate().filter_map(|(i, b)| Some((i, b.as_ref()?))) {
            if b.dims() != self.values[i].dims() {
                return Err(UNetError::ParamShape {
                    name: self.names[i].clone(),
                    expected: self.values[i].dims().to_vec(),
                    got: b.dims().to_vec(),
                });
            }
        }
        self.zero_grads();
        self.grad_home = buffers;
        Ok(())
    }

    /// Copies every gradient not yet in its buffer there (one launch on a
    /// GPU: `ops::copy_many`; exact, so the bits do not change). A no-op
    /// without gradient buffers. Call after the backward passes of a step.
    pub fn settle_grads(&mut self) -> Result<()> {
        let pending: Vec<usize> =
            (0..self.grads.len()).filter(|&i| self.grad_home[i].is_some() && self.grads[i].is_some()).collect();
        if pending.is_empty() {
            return Ok(());
        }
        let mut homes: Vec<Tensor> = pending.iter().filter_map(|&i| self.grad_home[i].take()).collect();
        let srcs: Vec<&Tensor> = pending.iter().filter_map(|&i| self.grads[i].as_ref()).collect();
        let copied = ops::copy_many(&mut homes.iter_mut().collect::<Vec<_>>(), &srcs);
        for (&i, home) in pending.iter().zip(homes) {
            if copied.is_ok() {
                self.grads[i] = Some(home);
                self.home_in_use[i] = true;
            } else {
                self.grad_home[i] = Some(home);
            }
        }
        copied?;
        Ok(())
    }

    /// Drops parameter i's gradient (its buffer goes home).
    fn drop_grad(&mut self, i: usize) {
        let g = self.grads[i].take();
        if std::mem::take(&mut self.home_in_use[i]) {
            self.grad_home[i] = g;
        }
    }

    /// Whether any parameter registered before `id` (or `id` itself) trains.
    /// Parameters are registered in forward order, so when this is false the
    /// backward has nothing left to do below this parameter's layer.
    pub fn any_trainable_through(&self, id: ParamId) -> bool {
        self.trainable[..=id.0].iter().any(|&t| t)
    }

    /// Whether this is a LoRA adapter tensor (`*.lora_A.weight`, `*.lora_B.weight`).
    pub fn is_adapter(&self, id: ParamId) -> bool {
        self.adapter[id.0]
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The number of scalar weights.
    pub fn num_scalars(&self) -> usize {
        self.values.iter().map(|t| t.numel()).sum()
    }

    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.values[id.0]
    }

    pub fn grad(&self, id: ParamId) -> Option<&Tensor> {
        self.grads[id.0].as_ref()
    }

    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.by_name.get(name).copied().map(ParamId)
    }

    pub fn name(&self, id: ParamId) -> &str {
        &self.names[id.0]
    }

    pub fn ids(&self) -> impl Iterator<Item = ParamId> {
        (0..self.values.len()).map(ParamId)
    }

    /// (name, value) in registration order (PyTorch's named_parameters order).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(String::as_str).zip(self.values.iter())
    }

    /// Adds `g` to the parameter's gradient, so that several backward passes
    /// accumulate (gradient accumulation). A frozen parameter drops `g`.
    pub fn accumulate_grad(&mut self, id: ParamId, g: Tensor) -> Result<()> {
        if !self.trainable[id.0] {
            return Ok(());
        }
        let slot = &mut self.grads[id.0];
        match slot {
            Some(acc) => ops::add_in_place(acc, &g)?,
            None => {
                let want = self.values[id.0].dims();
                if g.dims() != want {
                    return Err(UNetError::ParamShape {
                        name: self.names[id.0].clone(),
                        expected: want.to_vec(),
                        got: g.dims().to_vec(),
                    });
                }
                // with gradient buffers, `settle_grads` copies it there later
                *slot = Some(g);
            }
        }
        Ok(())
    }

    /// Multiplies one gradient by `s` in place (gradient clipping).
    pub fn scale_grad(&mut self, id: ParamId, s: f64) -> Result<()> {
        if let Some(g) = &mut self.grads[id.0] {
            ops::scale_in_place(g, s)?;
        }
        Ok(())
    }

    /// Every value (mutable) beside its gradient, in registration order (for
    /// multi-tensor optimiser steps).
    pub fn values_mut_and_grads(&mut self) -> (Vec<&mut Tensor>, Vec<Option<&Tensor>>) {
        (self.values.iter_mut().collect(), self.grads.iter().map(Option::as_ref).collect())
    }

    /// Every gradient present, in registration order (for multi-tensor ops).
    pub fn grads_mut(&mut self) -> Vec<&mut Tensor> {
        self.grads.iter_mut().flatten().collect()
    }

    /// The gradients present of `ids`, in that order (an id twice counts once).
    pub fn grads_of_mut(&mut self, ids: &[ParamId]) -> Vec<&mut Tensor> {
        let mut slots: Vec<Option<&mut Tensor>> = self.grads.iter_mut().map(Option::as_mut).collect();
        ids.iter().filter_map(|id| slots.get_mut(id.0).and_then(Option::take)).collect()
    }

    pub fn zero_grads(&mut self) {
        for i in 0..self.grads.len() {
            self.drop_grad(i);
        }
    }

    /// Replaces a parameter's value, checking its shape.
    pub fn set(&mut self, id: ParamId, value: Tensor) -> Result<()> {
        let want = self.values[id.0].dims();
        if value.dims() != want {
            return Err(UNetError::ParamShape {
                name: self.names[id.0].clone(),
                expected: want.to_vec(),
                got: value.dims().to_vec(),
            });
        }
        let dev = self.values[id.0].device();
        let dtype = self.values[id.0].dtype();
        self.values[id.0] = value.to_dtype_on(dtype, &dev)?;
        Ok(())
    }

    pub fn value_mut(&mut self, id: ParamId) -> &mut Tensor {
        &mut self.values[id.0]
    }

    /// Mutable value and shared gradient of one parameter (for optimisers).
    pub fn value_and_grad_mut(&mut self, id: ParamId) -> (&mut Tensor, Option<&Tensor>) {
        (&mut self.values[id.0], self.grads[id.0].as_ref())
    }

    /// Moves every value (and gradient) to `device` in `dtype`.
    pub fn convert(&mut self, dtype: DType, device: &Device) -> Result<()> {
        for v in self.values.iter_mut() {
            *v = v.to_dtype_on(dtype, device)?;
        }
        for g in self.grads.iter_mut().flatten() {
            *g = g.to_dtype_on(dtype, device)?;
        }
        // converted gradients no longer lie in their buffers
        self.grad_home.iter_mut().for_each(|h| *h = None);
        self.home_in_use.iter_mut().for_each(|u| *u = false);
        Ok(())
    }
}

/// Conversion helpers the tensor crate leaves to its users.
pub(crate) trait TensorExt {
    fn to_dtype_on(&self, dtype: DType, device: &Device) -> diffuse_tensor::Result<Tensor>;
}

impl TensorExt for Tensor {
    fn to_dtype_on(&self, dtype: DType, device: &Device) -> diffuse_tensor::Result<Tensor> {
        if self.dtype() == dtype {
            return self.to_device(device);
        }
        self.to_device(&Device::Cpu)?.to_dtype(dtype)?.to_device(device)
    }
}
