//! The training state in flat device buffers (issue 12): the parameters,
//! their gradients, the AdamW moments and the EMA each in ONE allocation,
//! every tensor a 256-byte-aligned view into it (`ops::flatten`). The
//! multi-tensor AdamW/EMA/norm/clip launches then see the same pointers
//! every step (their tables are uploaded once), and an all-reduce of the
//! gradients is one buffer. On the CPU nothing changes.

use crate::optim::{AdamW, Ema};
use crate::Result;
use diffuse_tensor::{ops, Device, Shape, Tensor};
use diffuse_unet::ParamStore;

/// The flat buffers (each a view of its whole allocation; the model's
/// tensors are views into them). Padding between views is zero, or a
/// canary-filled guard gap in the emulator's no-reuse mode.
pub struct FlatState {
    pub params: Tensor,
    pub grads: Tensor,
    pub adam_m: Option<Tensor>,
    pub adam_v: Option<Tensor>,
    pub ema: Option<Tensor>,
}

/// Moves a GPU model's parameters, AdamW moments and EMA into flat buffers
/// (values copied on the device, bits unchanged) and gives the store a flat
/// gradient buffer for the parameters that train; None on the CPU. Call
/// once the state is loaded and the trainable parameters are chosen.
pub fn flatten_training_state(
    device: &Device,
    store: &mut ParamStore,
    opt: &mut AdamW,
    ema: &mut Ema,
) -> Result<Option<FlatState>> {
    if device.is_cpu() {
        return Ok(None);
    }
    let ids: Vec<_> = store.ids().collect();
    let mut values: Vec<&mut Tensor> = Vec::with_capacity(ids.len());
    let (all, _) = store.values_mut_and_grads();
    values.extend(all);
    let Some(params) = ops::flatten(&mut values)? else { return Ok(None) };
    // gradients only for the parameters that train (a LoRA fine-tune keeps a
    // small gradient buffer)
    let trains: Vec<bool> = ids.iter().map(|&id| store.is_trainable(id)).collect();
    let shapes: Vec<Shape> =
        store.iter().zip(&trains).filter(|(_, &t)| t).map(|((_, v), _)| v.shape().clone()).collect();
    let Some((grads, views)) = ops::flat_zeros(&shapes, device)? else { return Ok(None) };
    let mut views = views.into_iter();
    store.set_grad_buffers(trains.iter().map(|&t| if t { views.next() } else { None }).collect())?;
    let adam_m = ops::flatten(&mut opt.m.iter_mut().flatten().collect::<Vec<_>>())?;
    let adam_v = ops::flatten(&mut opt.v.iter_mut().flatten().collect::<Vec<_>>())?;
    let ema = ops::flatten(&mut ema.values.iter_mut().collect::<Vec<_>>())?;
    Ok(Some(FlatState { params, grads, adam_m, adam_v, ema }))
}
