//! Classifier-free guidance (Ho and Salimans 2022): a class-conditional
//! model's prediction for class c, pushed away from its "no class"
//! prediction: out = out_uncond + w (out_cond - out_uncond).
//!
//! The combination is applied to the model's raw output. Every training
//! target (eps, x0, v) converts to eps by an affine map with the same
//! coefficients for both branches (x_t and t are shared), so guiding the
//! output is guiding eps. w = 0 is the unconditional model, w = 1 the plain
//! conditional one; both are computed with one branch, exactly. Any other w
//! runs both branches in one batched call ([x; x] with [labels; null]).

use crate::{Error, Result};
use diffuse_tensor::{ops, Tensor};
use diffuse_unet::UNet;

/// The guidance scale `diffuse sample --class` uses unless told otherwise
/// (and the training run's sample grids of a conditional model).
pub const DEFAULT_SCALE: f64 = 2.0;

/// Class labels and guidance scale for one batch; `labels: None` is the
/// plain (unconditional) forward.
#[derive(Clone, Copy, Debug)]
pub struct Conditioning<'a> {
    pub labels: Option<&'a [usize]>,
    pub scale: f64,
}

impl Conditioning<'_> {
    pub const NONE: Conditioning<'static> = Conditioning { labels: None, scale: 1.0 };
}

/// Checks what `sample` is asked for against the model: labels need a
/// conditional model, each a class (or the null class) of it, and the scale
/// must be finite.
pub fn check(model: &UNet, labels: Option<&[usize]>, scale: f64) -> Result<()> {
    if !scale.is_finite() {
        return Err(Error::Config(format!("guidance scale must be a finite number, got {scale}")));
    }
    match (model.null_class(), labels) {
        (_, None) => Ok(()),
        (None, Some(_)) => Err(Error::Config(
            "this model is unconditional (no class embedding): --class needs a model trained with --conditional".into(),
        )),
        (Some(null), Some(l)) => match l.iter().find(|&&k| k > null) {
            Some(k) => Err(Error::Config(format!("class {k} is outside the model's classes 0..{null}"))),
            None => Ok(()),
        },
    }
}

/// The model's (guided) prediction for x at timesteps t.
pub fn predict(model: &UNet, x: &Tensor, t: &Tensor, cond: Conditioning<'_>) -> Result<Tensor> {
    let (Some(labels), Some(null)) = (cond.labels, model.null_class()) else {
        return Ok(model.forward(x, t)?);
    };
    let w = cond.scale;
    if w == 0.0 {
        return Ok(model.forward_cond(x, t, None)?);
    }
    if w == 1.0 {
        return Ok(model.forward_cond(x, t, Some(labels))?);
    }
    let dims = x.dims().to_vec();
    let n = dims[0];
    let per = x.numel() / n.max(1);
    // [x; x] as a channel concat of [1, n, per, 1] views (the batch is the
    // outer dimension of a contiguous NCHW tensor).
    let as_rows = |v: &Tensor| v.clone().reshape([1, n, per, 1]);
    let x2 = ops::concat_channels(&as_rows(x)?, &as_rows(x)?)?.reshape([2 * n, dims[1], dims[2], dims[3]])?;
    let t2 =
        ops::concat_channels(&t.clone().reshape([1, n, 1, 1])?, &t.clone().reshape([1, n, 1, 1])?)?.reshape([2 * n])?;
    let labels2: Vec<usize> = labels.iter().copied().chain(std::iter::repeat_n(null, n)).collect();
    let out2 = model.forward_cond(&x2, &t2, Some(&labels2))?;
    let (cond_out, uncond_out) = ops::split_channels(&out2.reshape([1, 2 * n, per, 1])?, n)?;
    let diff = ops::sub(&cond_out, &uncond_out)?;
    Ok(ops::add_scaled(&uncond_out, &diff, w)?.reshape(dims)?)
}
