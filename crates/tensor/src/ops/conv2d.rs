//! 2-D convolution (NCHW, cross-correlation as in PyTorch): forward with an
//! optional bias, and the three backward products (data, weight, bias).
//!
//! These functions check shapes, dtypes and devices and build a
//! [`geom::ConvGeom`]; the CPU twin is `cpu/conv2d.rs` (im2col + gemm);
//! tests are `crates/tensor/tests/conv2d.rs` (f64 oracle, finite differences,
//! adjoint and determinism properties). The `_with` variants take a
//! [`Precision`]: tf32 / bf16 run the tensor-core kernels on a GPU and, on
//! the CPU, the f32 GEMM on inputs rounded the same way; both are held to
//! the f64 rounding oracle (`cpu/reduced.rs`) in `tests/tensor_core.rs`.

use super::{check_same, check_same_bf16_input, gpu_of};
use crate::geom::ConvGeom;
use crate::gpu::launch;
use crate::{cpu, with_element, Element, Precision, Result, Shape, Storage, Tensor, TensorError};

/// Stride and per-side zero padding of a 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    pub stride: usize,
    pub pad_top: usize,
    pub pad_bottom: usize,
    pub pad_left: usize,
    pub pad_right: usize,
}

impl Conv2dParams {
    /// Stride 1 and `k / 2` padding on every side: a k x k kernel (k odd)
    /// keeps the spatial size (3x3 -> pad 1, 1x1 -> pad 0).
    pub fn same(k: usize) -> Self {
        let p = k / 2;
        Conv2dParams { stride: 1, pad_top: p, pad_bottom: p, pad_left: p, pad_right: p }
    }

    /// Stride 2, padding only at the bottom and right (TensorFlow 'SAME' for a
    /// 3x3 kernel on an even size, as in the reference Downsample): H -> H / 2.
    pub fn down2() -> Self {
        Conv2dParams { stride: 2, pad_top: 0, pad_bottom: 1, pad_left: 0, pad_right: 1 }
    }

    /// The output size for an `h x w` input and a `kh x kw` kernel, or an
    /// error when the stride is 0, the kernel is empty or larger than the
    /// padded input.
    pub fn output_hw(&self, h: usize, w: usize, kh: usize, kw: usize) -> Result<(usize, usize)> {
        const OP: &str = "conv2d output size";
        if self.stride == 0 {
            return Err(TensorError::invalid(OP, "stride must be at least 1"));
        }
        if kh == 0 || kw == 0 {
            return Err(TensorError::invalid(OP, format!("empty {kh}x{kw} kernel")));
        }
        let ho = out_len(h, self.pad_top, self.pad_bottom, kh, self.stride, "height")?;
        let wo = out_len(w, self.pad_left, self.pad_right, kw, self.stride, "width")?;
        Ok((ho, wo))
    }
}

/// Output length along one axis: (len + pads - k) / stride + 1.
fn out_len(len: usize, pad_a: usize, pad_b: usize, k: usize, stride: usize, axis: &str) -> Result<usize> {
    const OP: &str = "conv2d output size";
    let padded = len
        .checked_add(pad_a)
        .and_then(|v| v.checked_add(pad_b))
        .ok_or_else(|| TensorError::invalid(OP, format!("padded {axis} overflows")))?;
    if k > padded {
        return Err(TensorError::invalid(
            OP,
            format!("kernel {axis} {k} is larger than the padded input {axis} {padded} ({len} + {pad_a} + {pad_b})"),
        ));
    }
    Ok((padded - k) / stride + 1)
}

/// Checks an input shape [N, Ci, H, W] against a weight shape [Co, Ci, KH, KW]
/// and builds the geometry every kernel works from.
fn geometry(op: &'static str, x: &Shape, w: &Shape, p: &Conv2dParams) -> Result<ConvGeom> {
    let (n, ci, h, wd) = x.nchw(op)?;
    let (co, wci, kh, kw) = match w.dims() {
        &[a, b, c, d] => (a, b, c, d),
        _ => return Err(TensorError::shape(op, "a rank-4 weight (Co, Ci, KH, KW)", w)),
    };
    if wci != ci {
        return Err(TensorError::shape(
            op,
            format!("a weight with {ci} input channels (the input's), [{co}, {ci}, {kh}, {kw}]"),
            w,
        ));
    }
    let (ho, wo) = p.output_hw(h, wd, kh, kw).map_err(|e| TensorError::invalid(op, e.to_string()))?;
    // User-given shapes (backward) may be absurd: sizes must not overflow.
    for (what, dims) in [("input", [n, ci, h, wd]), ("weight", [co, ci, kh, kw]), ("output", [n, co, ho, wo])] {
        if dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).is_none() {
            return Err(TensorError::invalid(op, format!("{what} {dims:?} is too large")));
        }
    }
    Ok(ConvGeom { n, ci, h, w: wd, co, kh, kw, stride: p.stride, pad_top: p.pad_top, pad_left: p.pad_left, ho, wo })
}

/// A CPU slice as f32 values (the reduced-precision oracle's input).
pub(crate) fn f32s<T: Element>(v: &[T]) -> Vec<f32> {
    v.iter().map(|&t| t.to_f32()).collect()
}

/// A CPU slice with each value rounded to `prec` as the tensor cores read
/// it. Products of two such values are exact in f32, so the f32 GEMM that
/// follows errs only in its sums, within the bound the tensor cores' f32
/// accumulation is held to (`cpu::reduced` is the f64 oracle of both).
pub(crate) fn rounded<T: Element>(prec: Precision, v: &[T]) -> Vec<T> {
    v.iter().map(|&t| T::from_f64(f64::from(prec.round(t.to_f32())))).collect()
}

fn check_bias(op: &'static str, b: &Tensor, co: usize) -> Result<()> {
    if b.dims() != [co] {
        return Err(TensorError::shape(op, format!("a bias of shape [{co}] (one per output channel)"), b.shape()));
    }
    Ok(())
}

fn check_dy(op: &'static str, dy: &Tensor, g: &ConvGeom) -> Result<()> {
    dy.shape().expect(op, &[g.n, g.co, g.ho, g.wo])
}

/// y[n, o, :, :] = sum_c w[o, c] * x[n, c] (cross-correlation, zero padding)
/// + b[o]. x [N, Ci, H, W], w [Co, Ci, KH, KW], b [Co] -> y [N, Co, Ho, Wo].
pub fn conv2d_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: &Conv2dParams) -> Result<Tensor> {
    conv2d_forward_with(x, w, b, p, Precision::Fp32)
}

/// [`conv2d_forward`] with the GEMM inputs rounded to `prec` (tensor cores on
/// a GPU; on the CPU the inputs rounded the same way into the f32 GEMM).
/// `Precision::Fp32` is exactly `conv2d_forward`. On a GPU at
/// `Precision::Bf16`, `x` may be stored in bf16 (the same result, bit for
/// bit, as its f32 original: see `launch::conv2d_tc`); so may
/// [`conv2d_backward_weight_with`]'s.
pub fn conv2d_forward_with(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    p: &Conv2dParams,
    prec: Precision,
) -> Result<Tensor> {
    conv2d_forward_fused(x, w, b, p, prec, ConvEpilogue::default())
}

/// What [`conv2d_forward_fused`] adds to the convolution before returning it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvEpilogue<'a> {
    /// `[N, Co]`, added to every pixel of image n's channel c after the bias
    /// (a time-embedding projection): `add_channel_bias` fused.
    pub sample_bias: Option<&'a Tensor>,
    /// `[N, Co, Ho, Wo]`, added last (a residual connection): `add` fused.
    pub residual: Option<&'a Tensor>,
}

/// `((conv(x, w) + b[c]) + sample_bias[n, c]) + residual`: the same values,
/// bit for bit, as [`conv2d_forward_with`] followed by [`add_channel_bias`]
/// and [`add`](super::add), without the two extra passes over the output
/// (the CPU finishes each image while it is in cache; a GPU runs the adds as
/// their own kernels).
pub fn conv2d_forward_fused(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    p: &Conv2dParams,
    prec: Precision,
    epi: ConvEpilogue<'_>,
) -> Result<Tensor> {
    let _timer = crate::profile::op("conv2d_forward");
    const OP: &str = "conv2d_forward";
    let mut rest = vec![w];
    rest.extend(b.iter().chain(&epi.sample_bias).chain(&epi.residual).copied());
    check_same_bf16_input(OP, x, &rest)?;
    let g = geometry(OP, x.shape(), w.shape(), p)?;
    if let Some(b) = b {
        check_bias(OP, b, g.co)?;
    }
    if let Some(sb) = epi.sample_bias {
        sb.shape().expect(OP, &[g.n, g.co])?;
    }
    if let Some(r) = epi.residual {
        r.shape().expect(OP, &[g.n, g.co, g.ho, g.wo])?;
    }
    match x.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let cpu_epi = cpu::conv2d::Epilogue {
                bias: b.map(|t| t.cpu_slice::<T>()).transpose()?,
                sample_bias: epi.sample_bias.map(|t| t.cpu_slice::<T>()).transpose()?,
                residual: epi.residual.map(|t| t.cpu_slice::<T>()).transpose()?,
            };
            let mut y = crate::cpu::recycle::output::<T>(g.n * g.co * g.p());
            let (xs, ws) = (x.cpu_slice::<T>()?, w.cpu_slice::<T>()?);
            if prec == Precision::Fp32 {
                cpu::conv2d::conv2d_forward_epilogue(&g, xs, ws, &cpu_epi, &mut y);
            } else {
                cpu::conv2d::conv2d_forward_epilogue(&g, &rounded(prec, xs), &rounded(prec, ws), &cpu_epi, &mut y);
            }
            Ok(Tensor::from_cpu(Shape::new([g.n, g.co, g.ho, g.wo]), y))
        }),
        Storage::Gpu(xs) => {
            let bias = match b {
                Some(b) => Some(gpu_of(OP, b)?),
                None => None,
            };
            let y = launch::conv2d_tc::conv2d_forward(xs.device(), xs, gpu_of(OP, w)?, bias, &g, prec)?;
            let mut y = Tensor::from_gpu(Shape::new([g.n, g.co, g.ho, g.wo]), y);
            if let Some(sb) = epi.sample_bias {
                y = super::add_channel_bias(&y, sb)?;
            }
            if let Some(r) = epi.residual {
                y = super::add(&y, r)?;
            }
            Ok(y)
        }
    }
}

/// dx = d<conv(x, w), dy>/dx: dy [N, Co, Ho, Wo], w, and the input's shape
/// [N, Ci, H, W] -> dx [N, Ci, H, W].
pub fn conv2d_backward_data(dy: &Tensor, w: &Tensor, x_shape: &Shape, p: &Conv2dParams) -> Result<Tensor> {
    conv2d_backward_data_with(dy, w, x_shape, p, Precision::Fp32)
}

/// [`conv2d_backward_data`] with the GEMM inputs rounded to `prec`.
pub fn conv2d_backward_data_with(
    dy: &Tensor,
    w: &Tensor,
    x_shape: &Shape,
    p: &Conv2dParams,
    prec: Precision,
) -> Result<Tensor> {
    let _timer = crate::profile::op("conv2d_backward_data");
    const OP: &str = "conv2d_backward_data";
    check_same(OP, &[dy, w])?;
    let g = geometry(OP, x_shape, w.shape(), p)?;
    check_dy(OP, dy, &g)?;
    match dy.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut dx = crate::cpu::recycle::output::<T>(x_shape.numel());
            let (dys, ws) = (dy.cpu_slice::<T>()?, w.cpu_slice::<T>()?);
            if prec == Precision::Fp32 {
                cpu::conv2d::conv2d_backward_data(&g, dys, ws, &mut dx);
            } else {
                cpu::conv2d::conv2d_backward_data(&g, &rounded(prec, dys), &rounded(prec, ws), &mut dx);
            }
            Ok(Tensor::from_cpu(x_shape.clone(), dx))
        }),
        Storage::Gpu(dys) => {
            let dx = launch::conv2d_tc::conv2d_backward_data(dys.device(), dys, gpu_of(OP, w)?, &g, prec)?;
            Ok(Tensor::from_gpu(x_shape.clone(), dx))
        }
    }
}

/// dw = d<conv(x, w), dy>/dw: dy [N, Co, Ho, Wo], x [N, Ci, H, W], and the
/// weight's shape [Co, Ci, KH, KW] -> dw [Co, Ci, KH, KW].
pub fn conv2d_backward_weight(dy: &Tensor, x: &Tensor, w_shape: &Shape, p: &Conv2dParams) -> Result<Tensor> {
    conv2d_backward_weight_with(dy, x, w_shape, p, Precision::Fp32)
}

/// [`conv2d_backward_weight`] with the GEMM inputs rounded to `prec`.
pub fn conv2d_backward_weight_with(
    dy: &Tensor,
    x: &Tensor,
    w_shape: &Shape,
    p: &Conv2dParams,
    prec: Precision,
) -> Result<Tensor> {
    let _timer = crate::profile::op("conv2d_backward_weight");
    const OP: &str = "conv2d_backward_weight";
    check_same_bf16_input(OP, x, &[dy])?;
    let g = geometry(OP, x.shape(), w_shape, p)?;
    check_dy(OP, dy, &g)?;
    match dy.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut dw = crate::cpu::recycle::output::<T>(w_shape.numel());
            let (dys, xs) = (dy.cpu_slice::<T>()?, x.cpu_slice::<T>()?);
            if prec == Precision::Fp32 {
                cpu::conv2d::conv2d_backward_weight(&g, dys, xs, &mut dw);
            } else {
                cpu::conv2d::conv2d_backward_weight(&g, &rounded(prec, dys), &rounded(prec, xs), &mut dw);
            }
            Ok(Tensor::from_cpu(w_shape.clone(), dw))
        }),
        Storage::Gpu(dys) => {
            let dw = launch::conv2d_tc::conv2d_backward_weight(dys.device(), dys, gpu_of(OP, x)?, &g, prec)?;
            Ok(Tensor::from_gpu(w_shape.clone(), dw))
        }
    }
}

/// ([`conv2d_backward_weight_with`], [`conv2d_backward_bias`]) in one call:
/// on the CPU in f32 the Winograd paths take the bias sums while their dy
/// transform has dy in cache (bit-identical to the separate call; profiled as
/// the weight gradient). Elsewhere it is the two calls.
pub fn conv2d_backward_weight_and_bias_with(
    dy: &Tensor,
    x: &Tensor,
    w_shape: &Shape,
    p: &Conv2dParams,
    prec: Precision,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "conv2d_backward_weight";
    let (Storage::Cpu(s), Precision::Fp32) = (dy.storage(), prec) else {
        return Ok((conv2d_backward_weight_with(dy, x, w_shape, p, prec)?, conv2d_backward_bias(dy)?));
    };
    let _timer = crate::profile::op(OP);
    check_same_bf16_input(OP, x, &[dy])?;
    let g = geometry(OP, x.shape(), w_shape, p)?;
    check_dy(OP, dy, &g)?;
    with_element!(s.dtype(), T, {
        let mut dw = crate::cpu::recycle::output::<T>(w_shape.numel());
        let mut db = vec![T::default(); g.co];
        cpu::conv2d::conv2d_backward_weight_and_bias(&g, dy.cpu_slice::<T>()?, x.cpu_slice::<T>()?, &mut dw, &mut db);
        Ok((Tensor::from_cpu(w_shape.clone(), dw), Tensor::from_cpu(Shape::new([g.co]), db)))
    })
}

/// db[o] = sum over n, y, x of dy[n, o, y, x]: dy [N, Co, Ho, Wo] -> db [Co].
pub fn conv2d_backward_bias(dy: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("conv2d_backward_bias");
    const OP: &str = "conv2d_backward_bias";
    let (n, co, ho, wo) = dy.shape().nchw(OP)?;
    match dy.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut db = vec![T::default(); co];
            cpu::conv2d::conv2d_backward_bias(n, co, ho * wo, dy.cpu_slice::<T>()?, &mut db);
            Ok(Tensor::from_cpu(Shape::new([co]), db))
        }),
        Storage::Gpu(dys) => {
            let db = launch::conv2d::conv2d_backward_bias(dys.device(), dys, n, co, ho * wo)?;
            Ok(Tensor::from_gpu(Shape::new([co]), db))
        }
    }
}
