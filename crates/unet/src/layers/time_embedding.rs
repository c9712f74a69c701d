//! temb = dense1(silu(dense0(sinusoid(t, ch)))).

use super::{Builder, Linear};
use crate::params::{ParamId, ParamStore};
use crate::Result;
use diffuse_tensor::{ops, Tensor};

pub struct TimeEmbedding {
    ch: usize,
    dense0: Linear,
    dense1: Linear,
}

pub struct TimeEmbeddingCache {
    sinusoid: Tensor,
    h0: Tensor,
    a0: Tensor,
}

impl TimeEmbeddingCache {
    pub fn tensors(&self) -> Vec<&Tensor> {
        vec![&self.sinusoid, &self.h0, &self.a0]
    }
}

impl TimeEmbedding {
    pub fn new(b: &mut Builder, ch: usize) -> Result<Self> {
        let dense0 = Linear::new(b, "temb_dense0", ch, 4 * ch)?;
        let dense1 = Linear::new(b, "temb_dense1", 4 * ch, 4 * ch)?;
        Ok(TimeEmbedding { ch, dense0, dense1 })
    }

    /// `t` holds one timestep per image as floats, shape [N].
    pub fn forward(&self, ps: &ParamStore, t: &Tensor, train: bool) -> Result<(Tensor, Option<TimeEmbeddingCache>)> {
        let sinusoid = ops::timestep_embedding(t, self.ch)?;
        let h0 = self.dense0.forward(ps, &sinusoid)?;
        let a0 = ops::silu_forward(&h0)?;
        let temb = self.dense1.forward(ps, &a0)?;
        let cache = train.then_some(TimeEmbeddingCache { sinusoid, h0, a0 });
        Ok((temb, cache))
    }

    pub fn first_param(&self) -> ParamId {
        self.dense0.first_param()
    }

    pub fn last_param(&self) -> ParamId {
        self.dense1.last_param()
    }

    /// Accumulates the dense layers' gradients (t itself has none).
    pub fn backward(&self, ps: &mut ParamStore, cache: &TimeEmbeddingCache, dtemb: &Tensor) -> Result<()> {
        let da0 = self.dense1.backward(ps, &cache.a0, dtemb)?;
        let dh0 = ops::silu_backward(&da0, &cache.h0)?;
        self.dense0.backward(ps, &cache.sinusoid, &dh0)?;
        Ok(())
    }
}
