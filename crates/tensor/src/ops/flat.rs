//! Flat buffers: the tensors of a model (parameters, gradients, optimiser
//! moments, EMA) placed as views into ONE device allocation each, every view
//! 256-byte aligned ([`GpuDevice::view_layout`](crate::gpu::GpuDevice::view_layout)).
//! One allocation means one pointer per model for a multi-tensor kernel,
//! one buffer for an all-reduce, and pointers that never change, so the
//! tables of the multi-tensor launches are uploaded once. In the emulator's
//! no-reuse mode a guard gap follows every view, so an overrun into a
//! neighbour is a launch error. CPU tensors are left as they are (their
//! results are the same either way).

use super::{check_same, check_same_shape, copy_into, gpu_of, gpu_of_mut};
use crate::gpu::launch;
use crate::gpu::GpuStorage;
use crate::{Result, Shape, Storage, Tensor, TensorError};

/// Moves GPU tensors into one new flat allocation (their values copied
/// device to device; the padding between views zeroed) and returns the flat
/// tensor, a view of the whole buffer. None (nothing changed) for CPU
/// tensors or no tensors. Every tensor must be on one device.
pub fn flatten(tensors: &mut [&mut Tensor]) -> Result<Option<Tensor>> {
    const OP: &str = "flatten";
    let Some(first) = tensors.first() else { return Ok(None) };
    let Storage::Gpu(g) = first.storage() else { return Ok(None) };
    let dev = g.device().clone();
    check_same(OP, &tensors.iter().map(|t| &**t).collect::<Vec<_>>())?;
    let lens: Vec<usize> = tensors.iter().map(|t| t.numel()).collect();
    let (_, total) = dev.view_layout(&lens);
    let base = dev.zeros_f32(total)?;
    let (whole, views) = base.views(&lens)?;
    for (t, view) in tensors.iter_mut().zip(views) {
        let Storage::Gpu(src) = t.storage() else {
            return Err(TensorError::invalid(OP, "a CPU tensor among GPU tensors"));
        };
        dev.driver().dtod(src.ptr(), view.ptr(), 4 * view.len())?;
        **t = Tensor::from_gpu(t.shape().clone(), view);
    }
    Ok(Some(Tensor::from_gpu(Shape::from(vec![total]), whole)))
}

/// Zeroed views of `shapes` into one new flat allocation on `device`, and
/// the flat tensor; None on the CPU (the caller keeps separate tensors).
pub fn flat_zeros(shapes: &[Shape], device: &crate::Device) -> Result<Option<(Tensor, Vec<Tensor>)>> {
    flat_zeros_with(shapes, device, false)
}

/// As [`flat_zeros`], packed with no guard gaps between the views: for a
/// buffer written as a whole (a staging buffer filled by one copy).
pub fn flat_zeros_packed(shapes: &[Shape], device: &crate::Device) -> Result<Option<(Tensor, Vec<Tensor>)>> {
    flat_zeros_with(shapes, device, true)
}

fn flat_zeros_with(shapes: &[Shape], device: &crate::Device, packed: bool) -> Result<Option<(Tensor, Vec<Tensor>)>> {
    let crate::Device::Gpu(dev) = device else { return Ok(None) };
    let lens: Vec<usize> = shapes.iter().map(Shape::numel).collect();
    let (_, total) = match packed {
        true => GpuStorage::view_offsets(&lens),
        false => dev.view_layout(&lens),
    };
    let base = dev.zeros_f32(total)?;
    let (whole, views) = match packed {
        true => base.views_packed(&lens)?,
        false => base.views(&lens)?,
    };
    let views = shapes.iter().zip(views).map(|(s, v)| Tensor::from_gpu(s.clone(), v)).collect();
    Ok(Some((Tensor::from_gpu(Shape::from(vec![total]), whole), views)))
}

/// Whether the tensor is a view into a flat buffer (see [`flatten`]).
pub fn is_flat_view(t: &Tensor) -> bool {
    matches!(t.storage(), Storage::Gpu(g) if g.is_view())
}

/// `dsts[k] = srcs[k]` for every k (same shapes, one device and dtype); on
/// one GPU a single launch for all of them (a gradient per parameter into
/// the flat gradient buffer), elsewhere a copy each. Exact.
pub fn copy_many(dsts: &mut [&mut Tensor], srcs: &[&Tensor]) -> Result<()> {
    const OP: &str = "copy_many";
    if dsts.len() != srcs.len() {
        return Err(TensorError::invalid(OP, "destinations and sources differ in count"));
    }
    for (d, s) in dsts.iter().zip(srcs) {
        check_same(OP, &[d, s])?;
        check_same_shape(OP, d, s)?;
    }
    let Some(Storage::Gpu(first)) = dsts.first().map(|d| d.storage()) else {
        for (d, s) in dsts.iter_mut().zip(srcs) {
            copy_into(d, 0, s)?;
        }
        return Ok(());
    };
    let dev = first.device().clone();
    for d in dsts.iter_mut() {
        let g = gpu_of_mut(OP, d)?;
        if !g.device().same(&dev) {
            return Err(TensorError::DeviceMismatch { op: OP, a: dev.name(), b: g.device().name() });
        }
        g.make_unique()?; // written in place
    }
    let pairs: Vec<_> =
        dsts.iter().zip(srcs).map(|(d, s)| Ok((gpu_of(OP, d)?, gpu_of(OP, s)?))).collect::<Result<_>>()?;
    launch::optim::copy_multi(&dev, &pairs)
}
