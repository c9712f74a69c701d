//! LoRA (Hu et al. 2021) on a convolution, as peft does it: the layer
//! computes conv(x, W) + b + s * B(A(x)) with s = alpha / rank, where A is a
//! convolution with the base's kernel, stride and padding to `rank`
//! channels (no bias) and B a 1x1 convolution back to the output channels
//! (no bias). On the U-Net's 1x1 attention projections that is exactly
//! W + s B A of a linear layer. A starts Kaiming-uniform (bound
//! 1/sqrt(fan_in), PyTorch's default for a = sqrt(5)), B at zero, so a
//! fresh adapter leaves the base's output unchanged.

use super::Builder;
use crate::params::{ParamId, ParamStore};
use crate::{Result, UNetError};
use diffuse_tensor::ops::{self, Conv2dParams};
use diffuse_tensor::{Device, Tensor};

/// Rank, alpha, and which layers (by name, e.g. `mid_attn.q`) get adapters.
#[derive(Clone, Copy)]
pub struct LoraPlan<'a> {
    pub rank: usize,
    pub alpha: f64,
    pub targets: &'a dyn Fn(&str) -> bool,
}

pub struct LoraAdapter {
    /// [rank, Cin, K, K]
    pub a: ParamId,
    /// [Cout, rank, 1, 1]
    pub b: ParamId,
    params: Conv2dParams,
    scale: f64,
}

impl LoraAdapter {
    /// Registers `{name}.lora_A.weight` and `{name}.lora_B.weight` (peft's names)
    /// for a conv `cin -> cout` with a `k`x`k` kernel, given (rank, alpha).
    pub fn new(
        b: &mut Builder,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        params: Conv2dParams,
        (rank, alpha): (usize, f64),
    ) -> Result<Self> {
        if rank == 0 {
            return Err(UNetError::Config("LoRA rank must be at least 1".into()));
        }
        let fan_in = cin * k * k;
        let a =
            b.adapter_uniform(format!("{name}.lora_A.weight"), vec![rank, cin, k, k], 1.0 / (fan_in as f64).sqrt())?;
        let bw = b.adapter_zeros(format!("{name}.lora_B.weight"), vec![cout, rank, 1, 1])?;
        Ok(LoraAdapter { a, b: bw, params, scale: alpha / rank as f64 })
    }

    /// alpha / rank.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    fn a_out(&self, ps: &ParamStore, x: &Tensor) -> Result<Tensor> {
        Ok(ops::conv2d_forward(x, ps.value(self.a), None, &self.params)?)
    }

    /// Adds s * B(A(x)) to the base layer's output `y`.
    pub fn add_to(&self, ps: &ParamStore, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let u = ops::conv2d_forward(&self.a_out(ps, x)?, ps.value(self.b), None, &Conv2dParams::same(1))?;
        Ok(ops::add_scaled(y, &u, self.scale)?)
    }

    /// Accumulates dA and dB for the layer's output gradient `dy`; returns
    /// the adapter's share of dx when `need_dx`. A(x) (rank channels, cheap)
    /// is recomputed here rather than kept in every layer's cache.
    pub fn backward(&self, ps: &mut ParamStore, x: &Tensor, dy: &Tensor, need_dx: bool) -> Result<Option<Tensor>> {
        let du = ops::scale(dy, self.scale)?;
        let a = self.a_out(ps, x)?;
        let one = Conv2dParams::same(1);
        if ps.is_trainable(self.b) {
            let db = ops::conv2d_backward_weight(&du, &a, ps.value(self.b).shape(), &one)?;
            ps.accumulate_grad(self.b, db)?;
        }
        if !need_dx && !ps.is_trainable(self.a) {
            return Ok(None);
        }
        let da = ops::conv2d_backward_data(&du, ps.value(self.b), a.shape(), &one)?;
        if ps.is_trainable(self.a) {
            let dw = ops::conv2d_backward_weight(&da, x, ps.value(self.a).shape(), &self.params)?;
            ps.accumulate_grad(self.a, dw)?;
        }
        if !need_dx {
            return Ok(None);
        }
        Ok(Some(ops::conv2d_backward_data(&da, ps.value(self.a), x.shape(), &self.params)?))
    }
}

/// W + s * B A for a conv weight W [Cout, Cin, K, K], A [r, Cin, K, K] and
/// B [Cout, r, 1, 1] (the same layout for a linear layer with K = 1): the
/// plain weight that computes what base plus adapter compute. Summed in f64
/// on the CPU and rounded once to W's dtype.
pub fn merged_weight(w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    let (cout, cin, kh, kw) = w.shape().nchw("LoRA base weight")?;
    let (r, a_cin, a_kh, a_kw) = a.shape().nchw("lora_A")?;
    let (b_cout, b_r, b_kh, b_kw) = b.shape().nchw("lora_B")?;
    if (a_cin, a_kh, a_kw) != (cin, kh, kw) || (b_cout, b_r, b_kh, b_kw) != (cout, r, 1, 1) {
        return Err(UNetError::Config(format!(
            "LoRA shapes do not fit the base weight {:?}: A {:?}, B {:?}",
            w.dims(),
            a.dims(),
            b.dims()
        )));
    }
    let cpu = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(t.to_device(&Device::Cpu)?.to_vec_f32()?.into_iter().map(f64::from).collect())
    };
    let (wv, av, bv) = (cpu(w)?, cpu(a)?, cpu(b)?);
    let inner = cin * kh * kw;
    let merged: Vec<f32> = (0..cout * inner)
        .map(|i| {
            let (o, j) = (i / inner, i % inner);
            let ba: f64 = (0..r).map(|k| bv[o * r + k] * av[k * inner + j]).sum();
            (wv[i] + scale * ba) as f32
        })
        .collect();
    let t = Tensor::from_vec(merged, w.dims().to_vec())?;
    Ok(t.to_dtype(w.dtype())?.to_device(&w.device())?)
}
