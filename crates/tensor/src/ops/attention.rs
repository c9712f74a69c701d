//! Single-head self-attention over the H*W positions of a feature map,
//! forward and backward. q, k, v are [B, C, N] (channel-major, as a 1x1 conv
//! in NCHW produces them): `s_ij = C^-0.5 sum_c q[c,i] k[c,j]`,
//! `p_ij = softmax_j(s_ij)`, `out[c,i] = sum_j p_ij v[c,j]`.
//!
//! [`Precision`]: tf32 / bf16 run the matrix products on tensor cores on a
//! GPU (kernels/attention_tc.cu) and the rounding oracle `cpu::reduced` on
//! the CPU; fp32 is the SIMT kernels / CPU reference, unchanged.

use super::conv2d::f32s;
use super::{check_same, check_same_bf16_input, gpu_of};
use crate::geom::AttentionDims;
use crate::gpu::launch;
use crate::{cpu, with_element, Element, Precision, Result, Shape, Storage, Tensor, TensorError};

#[derive(Clone, Debug)]
pub struct AttentionOutput {
    /// [B, C, N]
    pub out: Tensor,
    /// [B, N]: log-sum-exp of the scaled scores of each query.
    pub lse: Tensor,
}

#[derive(Clone, Debug)]
pub struct AttentionGrads {
    pub dq: Tensor,
    pub dk: Tensor,
    pub dv: Tensor,
}

/// Checks that `q` is a non-empty [B, C, N] and every other tensor has its
/// shape, dtype and device; returns the sizes.
fn check_qkv(op: &'static str, q: &Tensor, others: &[(&'static str, &Tensor)]) -> Result<AttentionDims> {
    let (b, c, n) = q.shape().dims3(op)?;
    if c == 0 || n == 0 {
        return Err(TensorError::invalid(op, format!("q {} needs at least one channel and one token", q.shape())));
    }
    for &(name, t) in others {
        check_same(op, &[q, t])?;
        if t.shape() != q.shape() {
            return Err(TensorError::shape(op, format!("{name} shaped like q {}", q.shape()), t.shape()));
        }
    }
    Ok(AttentionDims { b, c, n })
}

/// Attention output and the per-query log-sum-exp the backward needs.
pub fn attention_forward(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<AttentionOutput> {
    attention_forward_with(q, k, v, Precision::Fp32)
}

/// [`attention_forward`] with the matrix products' inputs (q, k, v and the
/// softmax weights) rounded to `prec`; `Precision::Fp32` is exactly
/// `attention_forward`. On a GPU at `Precision::Bf16`, q, k and v may be
/// stored in bf16 (all three; so may the backward's): the same bits as
/// their f32 originals.
pub fn attention_forward_with(q: &Tensor, k: &Tensor, v: &Tensor, prec: Precision) -> Result<AttentionOutput> {
    let _timer = crate::profile::op("attention_forward");
    const OP: &str = "attention_forward";
    let d = check_qkv(OP, q, &[("k", k), ("v", v)])?;
    match q.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut out = crate::cpu::recycle::output::<T>(q.numel());
            let mut lse = vec![T::default(); d.b * d.n];
            let (qs, ks, vs) = (q.cpu_slice::<T>()?, k.cpu_slice::<T>()?, v.cpu_slice::<T>()?);
            if prec == Precision::Fp32 {
                cpu::attention::attention_forward(qs, ks, vs, d, &mut out, &mut lse);
            } else {
                let f = cpu::reduced::attention_forward(prec, d, &f32s(qs), &f32s(ks), &f32s(vs));
                out = f.out.value.into_iter().map(T::from_f64).collect();
                lse = f.lse.into_iter().map(T::from_f64).collect();
            }
            Ok(AttentionOutput {
                out: Tensor::from_cpu(q.shape().clone(), out),
                lse: Tensor::from_cpu(Shape::new([d.b, d.n]), lse),
            })
        }),
        Storage::Gpu(qs) => {
            let (ks, vs) = (gpu_of(OP, k)?, gpu_of(OP, v)?);
            let (out, lse) = launch::attention_tc::attention_forward(qs.device(), qs, ks, vs, d, prec)?;
            Ok(AttentionOutput {
                out: Tensor::from_gpu(q.shape().clone(), out),
                lse: Tensor::from_gpu(Shape::new([d.b, d.n]), lse),
            })
        }
    }
}

/// Gradients with respect to q, k, v given `dout` and the forward's `out`, `lse`.
pub fn attention_backward(
    dout: &Tensor,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
) -> Result<AttentionGrads> {
    attention_backward_with(dout, q, k, v, out, lse, Precision::Fp32)
}

/// [`attention_backward`] with the matrix products' inputs (q, k, v, dout,
/// the weights and the score gradients) rounded to `prec`.
pub fn attention_backward_with(
    dout: &Tensor,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    prec: Precision,
) -> Result<AttentionGrads> {
    let _timer = crate::profile::op("attention_backward");
    const OP: &str = "attention_backward";
    // q, k, v may be stored in bf16 (a bf16 training cache), beside f32 dout, out and lse
    let d = check_qkv(OP, q, &[("k", k), ("v", v)])?;
    for (name, t) in [("dout", dout), ("out", out)] {
        if t.shape() != q.shape() {
            return Err(TensorError::shape(OP, format!("{name} shaped like q {}", q.shape()), t.shape()));
        }
    }
    check_same_bf16_input(OP, q, &[dout, out, lse])?;
    if lse.dims() != [d.b, d.n] {
        return Err(TensorError::shape(OP, format!("lse of shape [{}, {}]", d.b, d.n), lse.shape()));
    }
    match q.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let (mut dq, mut dk, mut dv) = (
                crate::cpu::recycle::output::<T>(q.numel()),
                crate::cpu::recycle::output::<T>(q.numel()),
                crate::cpu::recycle::output::<T>(q.numel()),
            );
            let (ds, qs, ks, vs) =
                (dout.cpu_slice::<T>()?, q.cpu_slice::<T>()?, k.cpu_slice::<T>()?, v.cpu_slice::<T>()?);
            let (os, ls) = (out.cpu_slice::<T>()?, lse.cpu_slice::<T>()?);
            if prec == Precision::Fp32 {
                cpu::attention::attention_backward(ds, qs, ks, vs, os, ls, d, &mut dq, &mut dk, &mut dv);
            } else {
                let g = cpu::reduced::attention_backward(
                    prec,
                    d,
                    &f32s(ds),
                    &f32s(qs),
                    &f32s(ks),
                    &f32s(vs),
                    &f32s(os),
                    &f32s(ls),
                );
                let back = |b: cpu::reduced::Bounded| b.value.into_iter().map(T::from_f64).collect::<Vec<T>>();
                (dq, dk, dv) = (back(g.dq), back(g.dk), back(g.dv));
            }
            let shape = q.shape().clone();
            Ok(AttentionGrads {
                dq: Tensor::from_cpu(shape.clone(), dq),
                dk: Tensor::from_cpu(shape.clone(), dk),
                dv: Tensor::from_cpu(shape, dv),
            })
        }),
        Storage::Gpu(qs) => {
            let (dq, dk, dv) = launch::attention_tc::attention_backward(
                qs.device(),
                gpu_of(OP, dout)?,
                qs,
                gpu_of(OP, k)?,
                gpu_of(OP, v)?,
                gpu_of(OP, out)?,
                gpu_of(OP, lse)?,
                d,
                prec,
            )?;
            let shape = q.shape().clone();
            Ok(AttentionGrads {
                dq: Tensor::from_gpu(shape.clone(), dq),
                dk: Tensor::from_gpu(shape.clone(), dk),
                dv: Tensor::from_gpu(shape, dv),
            })
        }
    }
}

/// The softmax weights `p` [B, N, N] (row i: query i's weights over keys).
pub fn attention_weights(q: &Tensor, k: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("attention_weights");
    const OP: &str = "attention_weights";
    let d = check_qkv(OP, q, &[("k", k)])?;
    match q.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut p = crate::cpu::recycle::output::<T>(d.b * d.n * d.n);
            cpu::attention::attention_weights(q.cpu_slice::<T>()?, k.cpu_slice::<T>()?, d, &mut p);
            Ok(Tensor::from_cpu(Shape::new([d.b, d.n, d.n]), p))
        }),
        Storage::Gpu(qs) => {
            let p = launch::attention::attention_weights(qs.device(), qs, gpu_of(OP, k)?, d)?;
            Ok(Tensor::from_gpu(Shape::new([d.b, d.n, d.n]), p))
        }
    }
}
