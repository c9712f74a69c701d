//! Group normalisation (optionally fused with SiLU), forward and backward:
//! `y = silu?((x - mean_g) * rstd_g * gamma_c + beta_c)`, `rstd = 1/sqrt(var + eps)`
//! with the biased variance of each (image, group).

use super::{check_same, gpu_of, DropoutAt, DropoutMask};
use crate::geom::GroupNormDims;
use crate::gpu::launch;
use crate::{cpu, with_element, Result, Shape, Storage, Tensor, TensorError};

/// The forward's output and the statistics its backward needs.
#[derive(Clone, Debug)]
pub struct GroupNormOutput {
    pub y: Tensor,
    /// [N, G]
    pub mean: Tensor,
    /// [N, G]
    pub rstd: Tensor,
}

#[derive(Clone, Debug)]
pub struct GroupNormGrads {
    pub dx: Tensor,
    pub dgamma: Tensor,
    pub dbeta: Tensor,
}

/// Reads (N, C, H*W) from a [N, C, H, W] or [N, C] shape.
fn nc_hw(op: &'static str, s: &Shape) -> Result<(usize, usize, usize)> {
    match *s.dims() {
        [n, c, h, w] => Ok((n, c, h * w)),
        [n, c] => Ok((n, c, 1)),
        _ => Err(TensorError::shape(op, "a [N, C, H, W] or [N, C] tensor", s)),
    }
}

/// Checks x, gamma, beta and `groups`; returns the problem sizes.
fn check_input(op: &'static str, x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize) -> Result<GroupNormDims> {
    check_same(op, &[x, gamma, beta])?;
    let (n, c, hw) = nc_hw(op, x.shape())?;
    if groups == 0 || c % groups != 0 {
        return Err(TensorError::invalid(
            op,
            format!("groups ({groups}) must be positive and divide the channels ({c})"),
        ));
    }
    if c == 0 || hw == 0 {
        return Err(TensorError::invalid(op, format!("empty groups: input shape {}", x.shape())));
    }
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if t.dims() != [c] {
            return Err(TensorError::shape(op, format!("{name} of shape [{c}]"), t.shape()));
        }
    }
    Ok(GroupNormDims { n, c, hw, groups })
}

/// Group norm of `x` ([N, C, H, W] or [N, C]) with per-channel `gamma`,
/// `beta` ([C]); SiLU applied to the result when `fuse_silu`.
pub fn group_norm_forward(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    fuse_silu: bool,
) -> Result<GroupNormOutput> {
    forward(x, gamma, beta, groups, eps, fuse_silu, None)
}

/// [`group_norm_forward`] whose output `y` then goes through
/// `dropout.forward` (the same values, bit for bit); the statistics are
/// those of the group norm. On the CPU both run in one pass (each slab is
/// masked while it is in cache); on a GPU as the two ops.
pub fn group_norm_forward_dropout(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    fuse_silu: bool,
    dropout: &DropoutAt,
) -> Result<GroupNormOutput> {
    forward(x, gamma, beta, groups, eps, fuse_silu, Some(dropout))
}

fn forward(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    fuse_silu: bool,
    dropout: Option<&DropoutAt>,
) -> Result<GroupNormOutput> {
    let _timer = crate::profile::op("group_norm_forward");
    const OP: &str = "group_norm_forward";
    let d = check_input(OP, x, gamma, beta, groups)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(TensorError::invalid(OP, format!("eps must be finite and non-negative, got {eps}")));
    }
    match x.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mask = dropout.map(|dr| Ok::<_, TensorError>((dr.cpu_args(OP)?, dr.offset))).transpose()?;
            let mut y = crate::cpu::recycle::output::<T>(x.numel());
            let mut mean = vec![T::default(); d.slabs()];
            let mut rstd = vec![T::default(); d.slabs()];
            cpu::group_norm::group_norm_forward(
                x.cpu_slice::<T>()?,
                gamma.cpu_slice::<T>()?,
                beta.cpu_slice::<T>()?,
                d,
                eps,
                fuse_silu,
                mask,
                &mut y,
                &mut mean,
                &mut rstd,
            );
            let stats = Shape::new([d.n, d.groups]);
            Ok(GroupNormOutput {
                y: Tensor::from_cpu(x.shape().clone(), y),
                mean: Tensor::from_cpu(stats.clone(), mean),
                rstd: Tensor::from_cpu(stats, rstd),
            })
        }),
        Storage::Gpu(xs) => {
            let (gs, bs) = (gpu_of(OP, gamma)?, gpu_of(OP, beta)?);
            let (y, mean, rstd) = launch::group_norm::group_norm_forward(xs.device(), xs, gs, bs, d, eps, fuse_silu)?;
            let stats = Shape::new([d.n, d.groups]);
            let y = Tensor::from_gpu(x.shape().clone(), y);
            Ok(GroupNormOutput {
                y: match dropout {
                    Some(dr) => dr.forward(&y)?,
                    None => y,
                },
                mean: Tensor::from_gpu(stats.clone(), mean),
                rstd: Tensor::from_gpu(stats, rstd),
            })
        }
    }
}

/// The forward's saved statistics must be [N, G].
fn check_stats(op: &'static str, d: GroupNormDims, mean: &Tensor, rstd: &Tensor) -> Result<()> {
    for (name, t) in [("mean", mean), ("rstd", rstd)] {
        if t.dims() != [d.n, d.groups] {
            return Err(TensorError::shape(op, format!("{name} of shape [{}, {}]", d.n, d.groups), t.shape()));
        }
    }
    Ok(())
}

/// The output of [`group_norm_forward`] recomputed from its saved `mean` and
/// `rstd` ([N, G]), bit for bit, without the statistics passes: lets a layer
/// drop its normalised output after the forward and rebuild it in the
/// backward (less memory for one elementwise pass). CPU tensors only: on a
/// GPU the U-Net keeps the forward's output, and this returns an error.
pub fn group_norm_apply(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    groups: usize,
    fuse_silu: bool,
) -> Result<Tensor> {
    Ok(apply(x, gamma, beta, mean, rstd, groups, fuse_silu, None)?.0)
}

/// [`group_norm_apply`] then `dropout.forward_keeping_mask` on its output,
/// in one pass where the mask's offset is a multiple of 64 (whole keep
/// words per task; otherwise as the two ops): the same values and mask, bit
/// for bit. CPU tensors only, as `group_norm_apply`.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_apply_dropout_keeping_mask(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    groups: usize,
    fuse_silu: bool,
    dropout: &DropoutAt,
) -> Result<(Tensor, DropoutMask)> {
    let (y, mask) = if dropout.offset.is_multiple_of(64) {
        apply(x, gamma, beta, mean, rstd, groups, fuse_silu, Some(dropout))?
    } else {
        dropout.forward_keeping_mask(&group_norm_apply(x, gamma, beta, mean, rstd, groups, fuse_silu)?)?
    };
    // Both paths keep the mask of a CPU tensor, and apply refuses others.
    let mask = mask.ok_or_else(|| TensorError::invalid("group_norm_apply", "runs on the CPU only"))?;
    Ok((y, mask))
}

/// The apply pass, with the dropout (offset on a keep word) when given.
#[allow(clippy::too_many_arguments)]
fn apply(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    groups: usize,
    fuse_silu: bool,
    dropout: Option<&DropoutAt>,
) -> Result<(Tensor, Option<DropoutMask>)> {
    let _timer = crate::profile::op("group_norm_apply");
    const OP: &str = "group_norm_apply";
    let d = check_input(OP, x, gamma, beta, groups)?;
    check_same(OP, &[x, mean, rstd])?;
    check_stats(OP, d, mean, rstd)?;
    let args = dropout.map(|dr| dr.cpu_args(OP)).transpose()?;
    match x.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut y = crate::cpu::recycle::output::<T>(x.numel());
            let mut keep = vec![0u64; if dropout.is_some() { cpu::dropout::keep_words(x.numel()) } else { 0 }];
            let kept = dropout.zip(args).map(|(dr, mask)| cpu::group_norm::KeptDropout {
                mask,
                offset: dr.offset,
                keep: &mut keep,
            });
            cpu::group_norm::group_norm_apply(
                x.cpu_slice::<T>()?,
                gamma.cpu_slice::<T>()?,
                beta.cpu_slice::<T>()?,
                mean.cpu_slice::<T>()?,
                rstd.cpu_slice::<T>()?,
                d,
                fuse_silu,
                kept,
                &mut y,
            );
            let mask = dropout.map(|dr| DropoutMask::from_keep_bits(keep, x.numel(), dr.p));
            Ok((Tensor::from_cpu(x.shape().clone(), y), mask))
        }),
        Storage::Gpu(_) => {
            Err(TensorError::invalid(OP, "runs on the CPU only (GPU layers keep group_norm_forward's output instead)"))
        }
    }
}

/// Gradients of group norm given `dy` (shaped like `x`) and the forward's
/// saved `mean`, `rstd` ([N, G]). `beta` is needed to recompute the pre-SiLU
/// value when `fuse_silu`.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    dy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    groups: usize,
    fuse_silu: bool,
) -> Result<GroupNormGrads> {
    group_norm_backward_fused(dy, x, gamma, beta, mean, rstd, groups, fuse_silu, GroupNormBackwardFusion::default())
}

/// The ops a group norm's backward can take into its pass.
#[derive(Clone, Copy, Default)]
pub struct GroupNormBackwardFusion<'a> {
    /// `dy` is the gradient of a dropout applied to the norm's output, with
    /// this kept mask: `dropout_backward_with_mask` runs first (CPU only, as
    /// kept masks are).
    pub dy_mask: Option<&'a DropoutMask>,
    /// Added to dx (shaped like `x`): a residual branch's gradient, the
    /// values of `add_in_place(dx, residual)` afterwards.
    pub residual: Option<&'a Tensor>,
}

/// [`group_norm_backward`] of `dropout_backward_with_mask(dy, mask)` plus a
/// residual gradient, as `fused` says: one pass over the data on the CPU,
/// bit for bit the separate ops' values; on a GPU the residual is added after.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward_fused(
    dy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    groups: usize,
    fuse_silu: bool,
    fused: GroupNormBackwardFusion<'_>,
) -> Result<GroupNormGrads> {
    let _timer = crate::profile::op("group_norm_backward");
    const OP: &str = "group_norm_backward";
    let d = check_input(OP, x, gamma, beta, groups)?;
    check_same(OP, &[x, dy, mean, rstd])?;
    if dy.shape() != x.shape() {
        return Err(TensorError::shape(OP, format!("dy shaped like x {}", x.shape()), dy.shape()));
    }
    check_stats(OP, d, mean, rstd)?;
    if let Some(r) = fused.residual {
        check_same(OP, &[x, r])?;
        if r.shape() != x.shape() {
            return Err(TensorError::shape(OP, format!("a residual gradient shaped like x {}", x.shape()), r.shape()));
        }
    }
    if let Some(m) = fused.dy_mask {
        if m.len != x.numel() {
            return Err(TensorError::invalid(
                OP,
                format!("a dropout mask of {} elements for dy of {}", m.len, x.numel()),
            ));
        }
    }
    match x.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut dx = crate::cpu::recycle::output::<T>(x.numel());
            let mut dgamma = vec![T::default(); d.c];
            let mut dbeta = vec![T::default(); d.c];
            let cpu_fused = cpu::group_norm::BackwardFusion {
                dy_keep: fused.dy_mask.map(|m| cpu::group_norm::DyKeep { keep: &m.keep, p: m.p }),
                residual: fused.residual.map(|r| r.cpu_slice::<T>()).transpose()?,
            };
            cpu::group_norm::group_norm_backward(
                dy.cpu_slice::<T>()?,
                cpu_fused,
                x.cpu_slice::<T>()?,
                gamma.cpu_slice::<T>()?,
                beta.cpu_slice::<T>()?,
                mean.cpu_slice::<T>()?,
                rstd.cpu_slice::<T>()?,
                d,
                fuse_silu,
                &mut dx,
                &mut dgamma,
                &mut dbeta,
            );
            Ok(GroupNormGrads {
                dx: Tensor::from_cpu(x.shape().clone(), dx),
                dgamma: Tensor::from_cpu(Shape::new([d.c]), dgamma),
                dbeta: Tensor::from_cpu(Shape::new([d.c]), dbeta),
            })
        }),
        Storage::Gpu(xs) => {
            if fused.dy_mask.is_some() {
                return Err(TensorError::invalid(OP, "a kept dropout mask applies to CPU tensors only"));
            }
            let (dx, dgamma, dbeta) = launch::group_norm::group_norm_backward(
                xs.device(),
                gpu_of(OP, dy)?,
                xs,
                gpu_of(OP, gamma)?,
                gpu_of(OP, beta)?,
                gpu_of(OP, mean)?,
                gpu_of(OP, rstd)?,
                d,
                fuse_silu,
            )?;
            let mut dx = Tensor::from_gpu(x.shape().clone(), dx);
            if let Some(r) = fused.residual {
                super::add_in_place(&mut dx, r)?;
            }
            Ok(GroupNormGrads {
                dx,
                dgamma: Tensor::from_gpu(Shape::new([d.c]), dgamma),
                dbeta: Tensor::from_gpu(Shape::new([d.c]), dbeta),
            })
        }
    }
}
