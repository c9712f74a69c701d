//! AttnBlock: x + proj_out(attention(q(h), k(h), v(h))) with h = norm(x);
//! single head over the H*W positions, scale C^-0.5. The attention's
//! matrix products run at the run's precision (`ParamStore::precision`),
//! as the convolutions do.

use super::{Builder, Conv2d, GroupNorm, GroupNormCache};
use crate::params::{ParamId, ParamStore};
use crate::Result;
use diffuse_tensor::ops::{self, Conv2dParams, ConvEpilogue};
use diffuse_tensor::{DType, Tensor};

pub struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

pub struct AttnCache {
    x: Tensor,
    n: GroupNormCache,
    h: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
}

impl AttnCache {
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x, &self.h, &self.q, &self.k, &self.v, &self.out, &self.lse];
        v.extend(self.n.tensors());
        v
    }
}

impl AttnBlock {
    pub fn new(b: &mut Builder, name: &str, c: usize, groups: usize) -> Result<Self> {
        let p = Conv2dParams::same(1);
        Ok(AttnBlock {
            norm: GroupNorm::new(b, &format!("{name}.norm"), c, groups, false)?,
            q: Conv2d::new(b, &format!("{name}.q"), c, c, 1, p, 1.0)?,
            k: Conv2d::new(b, &format!("{name}.k"), c, c, 1, p, 1.0)?,
            v: Conv2d::new(b, &format!("{name}.v"), c, c, 1, p, 1.0)?,
            proj_out: Conv2d::new(b, &format!("{name}.proj_out"), c, c, 1, p, 0.0)?,
        })
    }

    pub fn forward(&self, ps: &ParamStore, x: &Tensor, train: bool) -> Result<(Tensor, Option<AttnCache>)> {
        let (n, c, hh, ww) = x.shape().nchw("AttnBlock")?;
        let tokens = [n, c, hh * ww];
        let (h, nc) = self.norm.forward(ps, x)?;
        // h is read by the q, k and v convolutions only: a bf16 cache keeps
        // it in bf16 when none of them has a LoRA adapter
        let bf16_only = [&self.q, &self.k, &self.v].iter().all(|c| c.lora.is_none());
        let h = if train && bf16_only { self.q.cacheable_input(ps, h)? } else { h };
        let q = self.q.forward(ps, &h)?.reshape(tokens)?;
        let k = self.k.forward(ps, &h)?.reshape(tokens)?;
        let v = self.v.forward(ps, &h)?.reshape(tokens)?;
        // q, k, v are read by the attention's tensor-core products only
        let (q, k, v) = match train && ps.keeps_bf16_activations() && !x.device().is_cpu() {
            true => (q.to_dtype(DType::BF16)?, k.to_dtype(DType::BF16)?, v.to_dtype(DType::BF16)?),
            false => (q, k, v),
        };
        let att = ops::attention_forward_with(&q, &k, &v, ps.precision())?;
        let out = att.out.reshape([n, c, hh, ww])?;
        let y = self.proj_out.forward_fused(ps, &out, ConvEpilogue { sample_bias: None, residual: Some(x) })?;
        let cache = train.then(|| AttnCache { x: x.clone(), n: nc, h, q, k, v, out, lse: att.lse });
        Ok((y, cache))
    }

    pub fn first_param(&self) -> ParamId {
        self.norm.first_param()
    }

    pub fn last_param(&self) -> ParamId {
        self.proj_out.last_param()
    }

    pub fn backward(&self, ps: &mut ParamStore, c: &AttnCache, dy: &Tensor) -> Result<Tensor> {
        let img = c.x.dims().to_vec();
        let tokens = c.q.dims().to_vec();
        let dout = self.proj_out.backward(ps, &c.out, dy)?.reshape(tokens)?;
        let out_tokens = c.out.clone().reshape(c.q.dims().to_vec())?;
        let g = ops::attention_backward_with(&dout, &c.q, &c.k, &c.v, &out_tokens, &c.lse, ps.precision())?;
        let mut dh = self.q.backward(ps, &c.h, &g.dq.reshape(img.clone())?)?;
        ops::add_in_place(&mut dh, &self.k.backward(ps, &c.h, &g.dk.reshape(img.clone())?)?)?;
        ops::add_in_place(&mut dh, &self.v.backward(ps, &c.h, &g.dv.reshape(img)?)?)?;
        let mut dx = self.norm.backward(ps, &c.x, &c.n, &dh)?;
        ops::add_in_place(&mut dx, dy)?;
        Ok(dx)
    }
}
