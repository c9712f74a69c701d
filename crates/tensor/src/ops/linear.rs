//! Fully connected layer, forward and backward: `y = x w^T + b` with
//! `x` [N, In], `w` [Out, In] (PyTorch's layout), `b` [Out].

use super::conv2d::rounded;
use super::{check_same, gpu_of};
use crate::geom::LinearDims;
use crate::gpu::launch;
use crate::{cpu, with_element, Precision, Result, Shape, Storage, Tensor, TensorError};

#[derive(Clone, Debug)]
pub struct LinearGrads {
    pub dx: Tensor,
    pub dw: Tensor,
    pub db: Tensor,
}

/// Checks that `x` is [N, In] and `w` is [Out, In]; returns the sizes.
fn check_xw(op: &'static str, x: &Tensor, w: &Tensor) -> Result<LinearDims> {
    check_same(op, &[x, w])?;
    let (n, d_in) = x.shape().dims2(op)?;
    let (d_out, w_in) = w.shape().dims2(op)?;
    if w_in != d_in {
        return Err(TensorError::shape(op, format!("weight [Out, {d_in}] (x has {d_in} features)"), w.shape()));
    }
    Ok(LinearDims { n, d_in, d_out })
}

/// `y = x w^T (+ b)`, [N, Out].
pub fn linear_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    linear_forward_with(x, w, b, Precision::Fp32)
}

/// [`linear_forward`] with the GEMM inputs rounded to `prec` (tensor cores on
/// a GPU; on the CPU the inputs rounded the same way into the f32 GEMM). `Precision::Fp32`
/// is exactly `linear_forward`.
pub fn linear_forward_with(x: &Tensor, w: &Tensor, b: Option<&Tensor>, prec: Precision) -> Result<Tensor> {
    let _timer = crate::profile::op("linear_forward");
    const OP: &str = "linear_forward";
    let d = check_xw(OP, x, w)?;
    if let Some(b) = b {
        check_same(OP, &[x, b])?;
        if b.dims() != [d.d_out] {
            return Err(TensorError::shape(OP, format!("bias of shape [{}]", d.d_out), b.shape()));
        }
    }
    match x.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut y = crate::cpu::recycle::output::<T>(d.n * d.d_out);
            let bias = match b {
                Some(b) => Some(b.cpu_slice::<T>()?),
                None => None,
            };
            let (xs, ws) = (x.cpu_slice::<T>()?, w.cpu_slice::<T>()?);
            if prec == Precision::Fp32 {
                cpu::linear::linear_forward(xs, ws, bias, d, &mut y);
            } else {
                cpu::linear::linear_forward(&rounded(prec, xs), &rounded(prec, ws), bias, d, &mut y);
            }
            Ok(Tensor::from_cpu(Shape::new([d.n, d.d_out]), y))
        }),
        Storage::Gpu(xs) => {
            let bias = match b {
                Some(b) => Some(gpu_of(OP, b)?),
                None => None,
            };
            let y = launch::linear_tc::linear_forward(xs.device(), xs, gpu_of(OP, w)?, bias, d, prec)?;
            Ok(Tensor::from_gpu(Shape::new([d.n, d.d_out]), y))
        }
    }
}

/// Gradients of `linear_forward` given `dy` [N, Out]: dx [N, In], dw [Out, In], db [Out].
pub fn linear_backward(dy: &Tensor, x: &Tensor, w: &Tensor) -> Result<LinearGrads> {
    linear_backward_with(dy, x, w, Precision::Fp32)
}

/// [`linear_backward`] with the GEMM inputs rounded to `prec` (the bias
/// gradient, a column sum, is the same in every precision).
pub fn linear_backward_with(dy: &Tensor, x: &Tensor, w: &Tensor, prec: Precision) -> Result<LinearGrads> {
    let _timer = crate::profile::op("linear_backward");
    const OP: &str = "linear_backward";
    let d = check_xw(OP, x, w)?;
    check_same(OP, &[x, dy])?;
    if dy.dims() != [d.n, d.d_out] {
        return Err(TensorError::shape(OP, format!("dy of shape [{}, {}]", d.n, d.d_out), dy.shape()));
    }
    match x.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut dx = crate::cpu::recycle::output::<T>(d.n * d.d_in);
            let mut dw = vec![T::default(); d.d_out * d.d_in];
            let mut db = vec![T::default(); d.d_out];
            let (dys, xs, ws) = (dy.cpu_slice::<T>()?, x.cpu_slice::<T>()?, w.cpu_slice::<T>()?);
            if prec == Precision::Fp32 {
                cpu::linear::linear_backward(dys, xs, ws, d, &mut dx, &mut dw, &mut db);
            } else {
                let (rdy, rx, rw) = (rounded(prec, dys), rounded(prec, xs), rounded(prec, ws));
                cpu::linear::linear_backward(&rdy, &rx, &rw, d, &mut dx, &mut dw, &mut db);
                // the bias gradient is no GEMM: from the unrounded dy, as fp32's
                cpu::linear::linear_backward_bias(dys, d, &mut db);
            }
            Ok(LinearGrads {
                dx: Tensor::from_cpu(x.shape().clone(), dx),
                dw: Tensor::from_cpu(w.shape().clone(), dw),
                db: Tensor::from_cpu(Shape::new([d.d_out]), db),
            })
        }),
        Storage::Gpu(xs) => {
            let (dx, dw, db) =
                launch::linear_tc::linear_backward(xs.device(), gpu_of(OP, dy)?, xs, gpu_of(OP, w)?, d, prec)?;
            Ok(LinearGrads {
                dx: Tensor::from_gpu(x.shape().clone(), dx),
                dw: Tensor::from_gpu(w.shape().clone(), dw),
                db: Tensor::from_gpu(Shape::new([d.d_out]), db),
            })
        }
    }
}
