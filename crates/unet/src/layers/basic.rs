//! Conv2d, GroupNorm (optionally fused with SiLU) and Linear: thin layers
//! over the tensor ops, owning their parameter ids.

use super::{Builder, LoraAdapter};
use crate::params::{ParamId, ParamStore};
use crate::Result;
use diffuse_tensor::ops::{self, Conv2dParams, ConvEpilogue, DropoutAt, DropoutMask};
use diffuse_tensor::{DType, Tensor};

pub struct Conv2d {
    pub weight: ParamId,
    pub bias: ParamId,
    params: Conv2dParams,
    /// A LoRA adapter, when the builder's plan targets this layer.
    pub lora: Option<LoraAdapter>,
}

impl Conv2d {
    pub fn new(
        b: &mut Builder,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        params: Conv2dParams,
        scale: f64,
    ) -> Result<Self> {
        let weight = b.xavier(format!("{name}.weight"), vec![cout, cin, k, k], cin * k * k, cout * k * k, scale)?;
        let bias = b.constant(format!("{name}.bias"), vec![cout], 0.0)?;
        let lora = match b.lora_for(name) {
            Some(spec) => Some(LoraAdapter::new(b, name, cin, cout, k, params, spec)?),
            None => None,
        };
        Ok(Conv2d { weight, bias, params, lora })
    }

    pub fn forward(&self, ps: &ParamStore, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(ps, x, ConvEpilogue::default())
    }

    /// The conv followed by `epi`'s adds (see `ops::conv2d_forward_fused`).
    /// With a LoRA adapter the adapter's output comes first, as the separate
    /// ops would order it.
    pub fn forward_fused(&self, ps: &ParamStore, x: &Tensor, epi: ConvEpilogue<'_>) -> Result<Tensor> {
        let (w, b, prec) = (ps.value(self.weight), Some(ps.value(self.bias)), ps.precision());
        let Some(l) = &self.lora else {
            return Ok(ops::conv2d_forward_fused(x, w, b, &self.params, prec, epi)?);
        };
        let mut y = l.add_to(ps, x, &ops::conv2d_forward_with(x, w, b, &self.params, prec)?)?;
        if let Some(sb) = epi.sample_bias {
            y = ops::add_channel_bias(&y, sb)?;
        }
        if let Some(r) = epi.residual {
            y = ops::add(&y, r)?;
        }
        Ok(y)
    }

    /// Accumulates dW and db (and the adapter's gradients); returns dx.
    pub fn backward(&self, ps: &mut ParamStore, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let mut dx =
            ops::conv2d_backward_data_with(dy, ps.value(self.weight), x.shape(), &self.params, ps.precision())?;
        if let Some(l) = &self.lora {
            if let Some(d) = l.backward(ps, x, dy, true)? {
                ops::add_in_place(&mut dx, &d)?;
            }
        }
        self.weight_grads(ps, x, dy)?;
        Ok(dx)
    }

    /// Accumulates dW and db only (for the first layer, whose input needs no
    /// gradient); a frozen weight or bias is skipped, not computed.
    pub fn backward_params(&self, ps: &mut ParamStore, x: &Tensor, dy: &Tensor) -> Result<()> {
        if let Some(l) = &self.lora {
            l.backward(ps, x, dy, false)?;
        }
        self.weight_grads(ps, x, dy)
    }

    fn weight_grads(&self, ps: &mut ParamStore, x: &Tensor, dy: &Tensor) -> Result<()> {
        if ps.is_trainable(self.weight) && ps.is_trainable(self.bias) {
            // one pass over dy for both on the CPU
            let w_shape = ps.value(self.weight).shape().clone();
            let (dw, db) = ops::conv2d_backward_weight_and_bias_with(dy, x, &w_shape, &self.params, ps.precision())?;
            ps.accumulate_grad(self.weight, dw)?;
            return ps.accumulate_grad(self.bias, db);
        }
        if ps.is_trainable(self.weight) {
            let dw =
                ops::conv2d_backward_weight_with(dy, x, ps.value(self.weight).shape(), &self.params, ps.precision())?;
            ps.accumulate_grad(self.weight, dw)?;
        }
        if ps.is_trainable(self.bias) {
            ps.accumulate_grad(self.bias, ops::conv2d_backward_bias(dy)?)?;
        }
        Ok(())
    }

    /// The last parameter registered for this layer (its adapter's B, if any).
    pub fn last_param(&self) -> ParamId {
        self.lora.as_ref().map(|l| l.b).unwrap_or(self.bias)
    }

    /// `x`, this layer's input, as a training cache should keep it: in bf16
    /// on a GPU when the store keeps bf16 activations and nothing but this
    /// layer's bf16 tensor-core products reads it (no LoRA adapter, whose
    /// products take f32). The forward then reads the bf16 copy too: the
    /// values the tensor cores would have rounded `x` to, so the same bits.
    pub fn cacheable_input(&self, ps: &ParamStore, x: Tensor) -> Result<Tensor> {
        let keep_bf16 =
            ps.keeps_bf16_activations() && self.lora.is_none() && !x.device().is_cpu() && x.dtype() == DType::F32;
        Ok(if keep_bf16 { x.to_dtype(DType::BF16)? } else { x })
    }

    /// The first parameter registered for this layer.
    pub fn first_param(&self) -> ParamId {
        self.weight
    }
}

/// GroupNorm with eps 1e-6, per-channel affine, optionally followed by SiLU
/// in the same op.
pub struct GroupNorm {
    pub weight: ParamId,
    pub bias: ParamId,
    groups: usize,
    silu: bool,
}

/// What GroupNorm's backward needs besides its input.
pub struct GroupNormCache {
    pub mean: Tensor,
    pub rstd: Tensor,
}

pub const GROUP_NORM_EPS: f64 = 1e-6;

impl GroupNormCache {
    pub fn tensors(&self) -> Vec<&Tensor> {
        vec![&self.mean, &self.rstd]
    }
}

impl GroupNorm {
    /// The first parameter registered for this layer.
    pub fn first_param(&self) -> ParamId {
        self.weight
    }

    pub fn new(b: &mut Builder, name: &str, channels: usize, groups: usize, silu: bool) -> Result<Self> {
        let weight = b.constant(format!("{name}.weight"), vec![channels], 1.0)?;
        let bias = b.constant(format!("{name}.bias"), vec![channels], 0.0)?;
        Ok(GroupNorm { weight, bias, groups, silu })
    }

    pub fn forward(&self, ps: &ParamStore, x: &Tensor) -> Result<(Tensor, GroupNormCache)> {
        self.forward_dropout(ps, x, None)
    }

    /// [`GroupNorm::forward`], its output then dropped out as `dropout`
    /// draws it when given (one pass on the CPU: `ops::group_norm_forward_dropout`).
    pub fn forward_dropout(
        &self,
        ps: &ParamStore,
        x: &Tensor,
        dropout: Option<&DropoutAt>,
    ) -> Result<(Tensor, GroupNormCache)> {
        let (gamma, beta) = (ps.value(self.weight), ps.value(self.bias));
        let o = match dropout {
            Some(dr) => ops::group_norm_forward_dropout(x, gamma, beta, self.groups, GROUP_NORM_EPS, self.silu, dr)?,
            None => ops::group_norm_forward(x, gamma, beta, self.groups, GROUP_NORM_EPS, self.silu)?,
        };
        Ok((o.y, GroupNormCache { mean: o.mean, rstd: o.rstd }))
    }

    /// The forward's output rebuilt from `x` and the saved statistics, bit
    /// for bit (CPU only; see `ops::group_norm_apply`).
    pub fn recompute(&self, ps: &ParamStore, x: &Tensor, cache: &GroupNormCache) -> Result<Tensor> {
        Ok(self.recompute_dropout(ps, x, cache, None)?.0)
    }

    /// The output of [`GroupNorm::forward_dropout`] rebuilt as `recompute`
    /// does, bit for bit, with the dropout's keep mask when there is one
    /// (CPU only; `ops::group_norm_apply_dropout_keeping_mask`).
    pub fn recompute_dropout(
        &self,
        ps: &ParamStore,
        x: &Tensor,
        cache: &GroupNormCache,
        dropout: Option<&DropoutAt>,
    ) -> Result<(Tensor, Option<DropoutMask>)> {
        let (gamma, beta, c) = (ps.value(self.weight), ps.value(self.bias), cache);
        Ok(match dropout {
            Some(dr) => {
                let (y, mask) = ops::group_norm_apply_dropout_keeping_mask(
                    x,
                    gamma,
                    beta,
                    &c.mean,
                    &c.rstd,
                    self.groups,
                    self.silu,
                    dr,
                )?;
                (y, Some(mask))
            }
            None => (ops::group_norm_apply(x, gamma, beta, &c.mean, &c.rstd, self.groups, self.silu)?, None),
        })
    }

    pub fn backward(&self, ps: &mut ParamStore, x: &Tensor, cache: &GroupNormCache, dy: &Tensor) -> Result<Tensor> {
        self.backward_fused(ps, x, cache, dy, ops::GroupNormBackwardFusion::default())
    }

    /// [`GroupNorm::backward`] with a dropout's backward before it and a
    /// residual gradient added to dx in the same pass, as `fused` says
    /// (`ops::group_norm_backward_fused`).
    pub fn backward_fused(
        &self,
        ps: &mut ParamStore,
        x: &Tensor,
        cache: &GroupNormCache,
        dy: &Tensor,
        fused: ops::GroupNormBackwardFusion<'_>,
    ) -> Result<Tensor> {
        let g = ops::group_norm_backward_fused(
            dy,
            x,
            ps.value(self.weight),
            ps.value(self.bias),
            &cache.mean,
            &cache.rstd,
            self.groups,
            self.silu,
            fused,
        )?;
        ps.accumulate_grad(self.weight, g.dgamma)?;
        ps.accumulate_grad(self.bias, g.dbeta)?;
        Ok(g.dx)
    }
}

pub struct Linear {
    pub weight: ParamId,
    pub bias: ParamId,
}

impl Linear {
    /// The first parameter registered for this layer.
    pub fn first_param(&self) -> ParamId {
        self.weight
    }

    pub fn new(b: &mut Builder, name: &str, fan_in: usize, fan_out: usize) -> Result<Self> {
        let weight = b.xavier(format!("{name}.weight"), vec![fan_out, fan_in], fan_in, fan_out, 1.0)?;
        let bias = b.constant(format!("{name}.bias"), vec![fan_out], 0.0)?;
        Ok(Linear { weight, bias })
    }

    pub fn forward(&self, ps: &ParamStore, x: &Tensor) -> Result<Tensor> {
        Ok(ops::linear_forward_with(x, ps.value(self.weight), Some(ps.value(self.bias)), ps.precision())?)
    }

    pub fn is_frozen(&self, ps: &ParamStore) -> bool {
        !ps.is_trainable(self.weight) && !ps.is_trainable(self.bias)
    }

    pub fn last_param(&self) -> ParamId {
        self.bias
    }

    /// The op computes dx, dW and db in one pass; frozen parameters drop theirs.
    pub fn backward(&self, ps: &mut ParamStore, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let g = ops::linear_backward_with(dy, x, ps.value(self.weight), ps.precision())?;
        ps.accumulate_grad(self.weight, g.dw)?;
        ps.accumulate_grad(self.bias, g.db)?;
        Ok(g.dx)
    }
}
