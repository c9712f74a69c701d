//! The embeddings that condition the U-Net: the sinusoidal timestep
//! embedding (no backward: timesteps are data, not parameters) and the
//! learned class embedding (a table gathered by label, with its backward).

use crate::cpu::embedding as kernels;
use crate::gpu::launch;
use crate::{with_element, Result, Storage, Tensor, TensorError};

/// t [N] (timesteps as floats) -> [N, dim]: row n is
/// [sin(t_n f_0), .., sin(t_n f_{h-1}), cos(t_n f_0), .., cos(t_n f_{h-1})] (+ a zero if dim is odd)
/// with h = dim/2 and f_k = exp(-k ln(10000) / (h - 1)); for dim 2 or 3, f_0 = 1.
pub fn timestep_embedding(t: &Tensor, dim: usize) -> Result<Tensor> {
    let _timer = crate::profile::op("timestep_embedding");
    const OP: &str = "timestep_embedding";
    if t.shape().rank() != 1 {
        return Err(TensorError::shape(OP, "a rank-1 [N] tensor of timesteps", t.shape()));
    }
    if dim < 2 {
        return Err(TensorError::invalid(
            OP,
            format!("embedding dim must be at least 2 (one sine, one cosine), got {dim}"),
        ));
    }
    let n = t.numel();
    match t.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut emb = vec![T::default(); n * dim];
            kernels::timestep_embedding(t.cpu_slice::<T>()?, dim, &mut emb);
            Ok(Tensor::from_cpu([n, dim].into(), emb))
        }),
        Storage::Gpu(g) => {
            Ok(Tensor::from_gpu([n, dim].into(), launch::embedding::timestep_embedding(g.device(), g, n, dim)?))
        }
    }
}

/// Checks the labels against the table's row count (labels are host data:
/// a bad one is an error here, never an out-of-bounds read in a kernel).
fn check_labels(op: &'static str, labels: &[usize], rows: usize) -> Result<()> {
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l >= rows) {
        return Err(TensorError::invalid(op, format!("label {l} of sample {i} is outside the table's {rows} rows")));
    }
    if rows > 1 << 24 {
        // labels travel to the GPU as floats, exact up to 2^24
        return Err(TensorError::invalid(op, format!("{rows} classes is above the limit of 2^24")));
    }
    Ok(())
}

/// The labels as an f32 device buffer (exact: checked below 2^24).
fn labels_on(dev: &crate::gpu::GpuDevice, labels: &[usize]) -> Result<crate::gpu::GpuStorage> {
    let v: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
    dev.upload_f32(&v)
}

/// table [rows, dim], labels (N entries, each < rows) -> [N, dim]: row n is
/// table row labels[n] (a learned class embedding, diffusers' `class_embedding`).
pub fn class_embedding(table: &Tensor, labels: &[usize]) -> Result<Tensor> {
    class_embedding_at(table, labels, None)
}

/// [`class_embedding`] whose GPU kernel reads the labels (as f32) at device
/// address `labels_at` when set: a training graph's staged batch, which the
/// caller filled with `labels` and keeps alive. The host still checks them.
pub fn class_embedding_at(table: &Tensor, labels: &[usize], labels_at: Option<u64>) -> Result<Tensor> {
    let _timer = crate::profile::op("class_embedding");
    const OP: &str = "class_embedding";
    let &[rows, dim] = table.dims() else {
        return Err(TensorError::shape(OP, "a rank-2 [rows, dim] table", table.shape()));
    };
    check_labels(OP, labels, rows)?;
    let n = labels.len();
    match table.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut out = vec![T::default(); n * dim];
            kernels::class_embedding(table.cpu_slice::<T>()?, labels, dim, &mut out);
            Ok(Tensor::from_cpu([n, dim].into(), out))
        }),
        Storage::Gpu(g) => {
            let uploaded = match labels_at {
                Some(_) => None,
                None => Some(labels_on(g.device(), labels)?),
            };
            let l = labels_at.or(uploaded.as_ref().map(|u| u.ptr())).unwrap_or(0);
            Ok(Tensor::from_gpu([n, dim].into(), launch::embedding::class_embedding(g.device(), g, l, n, dim)?))
        }
    }
}

/// d table [rows, dim] from dout [N, dim]: row k sums the rows of dout whose
/// label is k, in increasing n (the same order on every device).
pub fn class_embedding_backward(dout: &Tensor, labels: &[usize], rows: usize) -> Result<Tensor> {
    class_embedding_backward_at(dout, labels, rows, None)
}

/// [`class_embedding_backward`] with the labels read at `labels_at` on a GPU
/// (see [`class_embedding_at`]).
pub fn class_embedding_backward_at(
    dout: &Tensor,
    labels: &[usize],
    rows: usize,
    labels_at: Option<u64>,
) -> Result<Tensor> {
    let _timer = crate::profile::op("class_embedding_backward");
    const OP: &str = "class_embedding_backward";
    let &[n, dim] = dout.dims() else {
        return Err(TensorError::shape(OP, "a rank-2 [N, dim] gradient", dout.shape()));
    };
    if n != labels.len() {
        return Err(TensorError::invalid(OP, format!("{} labels for a gradient of {n} rows", labels.len())));
    }
    check_labels(OP, labels, rows)?;
    match dout.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut dtable = vec![T::default(); rows * dim];
            kernels::class_embedding_backward(dout.cpu_slice::<T>()?, labels, dim, &mut dtable);
            Ok(Tensor::from_cpu([rows, dim].into(), dtable))
        }),
        Storage::Gpu(g) => {
            let uploaded = match labels_at {
                Some(_) => None,
                None => Some(labels_on(g.device(), labels)?),
            };
            let l = labels_at.or(uploaded.as_ref().map(|u| u.ptr())).unwrap_or(0);
            Ok(Tensor::from_gpu(
                [rows, dim].into(),
                launch::embedding::class_embedding_backward(g.device(), g, l, n, dim, rows)?,
            ))
        }
    }
}
