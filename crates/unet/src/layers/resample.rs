//! Downsample (3x3 stride-2 conv, padding bottom/right only) and Upsample
//! (nearest 2x, then a 3x3 conv).

use super::{Builder, Conv2d};
use crate::params::{ParamId, ParamStore};
use crate::Result;
use diffuse_tensor::ops::{self, Conv2dParams};
use diffuse_tensor::Tensor;

pub struct Downsample {
    conv: Conv2d,
}

impl Downsample {
    pub fn new(b: &mut Builder, name: &str, c: usize) -> Result<Self> {
        Ok(Downsample { conv: Conv2d::new(b, &format!("{name}.conv"), c, c, 3, Conv2dParams::down2(), 1.0)? })
    }

    pub fn forward(&self, ps: &ParamStore, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(ps, x)
    }

    pub fn first_param(&self) -> ParamId {
        self.conv.first_param()
    }

    pub fn last_param(&self) -> ParamId {
        self.conv.last_param()
    }

    /// `x` is the forward's input.
    pub fn backward(&self, ps: &mut ParamStore, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        self.conv.backward(ps, x, dy)
    }
}

pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn new(b: &mut Builder, name: &str, c: usize) -> Result<Self> {
        Ok(Upsample { conv: Conv2d::new(b, &format!("{name}.conv"), c, c, 3, Conv2dParams::same(3), 1.0)? })
    }

    /// Returns the output and the upsampled input (the conv's input, which
    /// the backward needs; in bf16 in a bf16 GPU training cache, see
    /// `Conv2d::cacheable_input`).
    pub fn forward(&self, ps: &ParamStore, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let u = ops::upsample_nearest2x_forward(x)?;
        let u = if train { self.conv.cacheable_input(ps, u)? } else { u };
        Ok((self.conv.forward(ps, &u)?, u))
    }

    pub fn first_param(&self) -> ParamId {
        self.conv.first_param()
    }

    pub fn last_param(&self) -> ParamId {
        self.conv.last_param()
    }

    pub fn backward(&self, ps: &mut ParamStore, upsampled: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let du = self.conv.backward(ps, upsampled, dy)?;
        Ok(ops::upsample_nearest2x_backward(&du)?)
    }
}
