//! The DDPM loss: mean squared error between predicted and true noise.

use super::{check_same, check_same_shape, gpu_of};
use crate::cpu::loss as kernels;
use crate::gpu::launch;
use crate::{with_element, Element, Result, Storage, Tensor, TensorError};

/// [1] = mean((pred - target)^2), accumulated in f64 in a fixed order.
pub fn mse_loss_forward(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("mse_loss_forward");
    const OP: &str = "mse_loss_forward";
    check_operands(OP, pred, target)?;
    match pred.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let loss = kernels::mse_loss_forward(pred.cpu_slice::<T>()?, target.cpu_slice::<T>()?);
            Ok(Tensor::from_cpu([1].into(), vec![T::from_f64(loss)]))
        }),
        Storage::Gpu(g) => {
            let loss = launch::loss::mse_loss_forward(g.device(), g, gpu_of(OP, target)?)?;
            Ok(Tensor::from_gpu([1].into(), loss))
        }
    }
}

/// dpred = dloss * 2 (pred - target) / numel.
pub fn mse_loss_backward(pred: &Tensor, target: &Tensor, dloss: f64) -> Result<Tensor> {
    let _timer = crate::profile::op("mse_loss_backward");
    const OP: &str = "mse_loss_backward";
    check_operands(OP, pred, target)?;
    match pred.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut dpred = crate::cpu::recycle::output::<T>(pred.numel());
            kernels::mse_loss_backward(pred.cpu_slice::<T>()?, target.cpu_slice::<T>()?, dloss, &mut dpred);
            Ok(Tensor::from_cpu(pred.shape().clone(), dpred))
        }),
        Storage::Gpu(g) => {
            let dpred = launch::loss::mse_loss_backward(g.device(), g, gpu_of(OP, target)?, dloss)?;
            Ok(Tensor::from_gpu(pred.shape().clone(), dpred))
        }
    }
}

/// Same shape, dtype, device, and at least one element (a mean of nothing is undefined).
fn check_operands(op: &'static str, pred: &Tensor, target: &Tensor) -> Result<()> {
    check_same(op, &[pred, target])?;
    check_same_shape(op, pred, target)?;
    if pred.numel() == 0 {
        return Err(TensorError::invalid(op, format!("the mean of an empty tensor {} is undefined", pred.shape())));
    }
    Ok(())
}
