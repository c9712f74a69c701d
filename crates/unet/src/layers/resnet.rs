//! ResnetBlock: conv1(silu(norm1(x))) + temb_proj(silu(temb)), then
//! conv2(dropout(silu(norm2(.)))), plus x (through a 1x1 conv when the
//! channel count changes).

use super::{Builder, Conv2d, ForwardMode, GroupNorm, GroupNormCache, Linear};
use crate::params::{ParamId, ParamStore};
use crate::Result;
use diffuse_tensor::ops::{self, Conv2dParams, ConvEpilogue, DropoutAt};
use diffuse_tensor::Tensor;
use std::borrow::Cow;

pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    temb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
    dropout: f32,
    dropout_stream: u32,
}

/// The block's input as a cache holds it.
enum Input {
    Whole(Tensor),
    /// The two tensors it was concatenated from along channels.
    Concat(Tensor, Tensor),
}

/// What the block's backward needs. `x` is the block's input.
pub struct ResCache {
    x: Input,
    n1: GroupNormCache,
    /// silu(norm1(x)), conv1's input: kept on a GPU (in bf16 at bf16
    /// precision: `Conv2d::cacheable_input`); on the CPU rebuilt from `x`
    /// and `n1` in the backward (one elementwise pass for the memory of
    /// every block's widest activation).
    a1: Option<Tensor>,
    h2: Tensor,
    n2: GroupNormCache,
    /// dropout(silu(norm2(h2))), conv2's input: kept on a GPU (bf16 as a1);
    /// on the CPU rebuilt from `h2`, `n2` and the dropout's Philox
    /// coordinates (the same mask, bit for bit) when the backward reaches
    /// conv2.
    a2: Option<Tensor>,
    mode: ForwardMode,
}

impl ResCache {
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut v = match &self.x {
            Input::Whole(x) => vec![x],
            Input::Concat(a, b) => vec![a, b],
        };
        v.push(&self.h2);
        v.extend(&self.a1);
        v.extend(&self.a2);
        v.extend(self.n1.tensors());
        v.extend(self.n2.tensors());
        v
    }

    /// Keeps the block's input as the two tensors it was concatenated from
    /// (an up block's hidden state and its skip connection, which the down
    /// path's cache holds anyway), so that the concatenated copy is freed
    /// after the forward; the backward concatenates them again.
    pub(crate) fn keep_input_as_concat(&mut self, a: Tensor, b: Tensor) -> Result<()> {
        // Batch and spatial sizes are checked by the backward's concat_channels.
        let channels = |t: &Tensor| t.dims().get(1).copied();
        let fits = matches!(&self.x, Input::Whole(x)
            if channels(x).is_some() && channels(x) == channels(&a).zip(channels(&b)).map(|(ca, cb)| ca + cb));
        if !fits {
            return Err(crate::UNetError::Config("a block's input is not the concatenation of these tensors".into()));
        }
        self.x = Input::Concat(a, b);
        Ok(())
    }

    /// The block's input.
    fn input(&self) -> Result<Cow<'_, Tensor>> {
        Ok(match &self.x {
            Input::Whole(x) => Cow::Borrowed(x),
            Input::Concat(a, b) => Cow::Owned(ops::concat_channels(a, b)?),
        })
    }
}

impl ResnetBlock {
    pub fn new(
        b: &mut Builder,
        name: &str,
        cin: usize,
        cout: usize,
        temb_ch: usize,
        dropout: f32,
        groups: usize,
    ) -> Result<Self> {
        let norm1 = GroupNorm::new(b, &format!("{name}.norm1"), cin, groups, true)?;
        let conv1 = Conv2d::new(b, &format!("{name}.conv1"), cin, cout, 3, Conv2dParams::same(3), 1.0)?;
        let temb_proj = Linear::new(b, &format!("{name}.temb_proj"), temb_ch, cout)?;
        let norm2 = GroupNorm::new(b, &format!("{name}.norm2"), cout, groups, true)?;
        let conv2 = Conv2d::new(b, &format!("{name}.conv2"), cout, cout, 3, Conv2dParams::same(3), 0.0)?;
        let nin_shortcut = if cin != cout {
            Some(Conv2d::new(b, &format!("{name}.nin_shortcut"), cin, cout, 1, Conv2dParams::same(1), 1.0)?)
        } else {
            None
        };
        let dropout_stream = b.dropout_stream();
        Ok(ResnetBlock { norm1, conv1, temb_proj, norm2, conv2, nin_shortcut, dropout, dropout_stream })
    }

    fn dropout_on(&self, mode: &ForwardMode) -> bool {
        mode.train && self.dropout > 0.0
    }

    /// The dropout on conv2's input `a` (or a tensor of its shape) in this
    /// mode, when it is on.
    fn dropout_at(&self, mode: &ForwardMode, a: &Tensor) -> Option<DropoutAt> {
        self.dropout_on(mode).then(|| DropoutAt {
            p: self.dropout,
            seed: mode.seed,
            step: mode.philox_step(),
            stream: self.dropout_stream,
            offset: mode.element_offset(a),
        })
    }

    /// `silu_temb` is silu(temb), computed once for all blocks by the U-Net.
    pub fn forward(
        &self,
        ps: &ParamStore,
        x: &Tensor,
        silu_temb: &Tensor,
        mode: ForwardMode,
    ) -> Result<(Tensor, Option<ResCache>)> {
        let (a1, n1) = self.norm1.forward(ps, x)?;
        let a1 = if mode.train { self.conv1.cacheable_input(ps, a1)? } else { a1 };
        let tp = self.temb_proj.forward(ps, silu_temb)?;
        let h2 = self.conv1.forward_fused(ps, &a1, ConvEpilogue { sample_bias: Some(&tp), residual: None })?;
        // a2 has h2's shape; dropout runs in group norm's pass
        let (a2, n2) = self.norm2.forward_dropout(ps, &h2, self.dropout_at(&mode, &h2).as_ref())?;
        let a2 = if mode.train { self.conv2.cacheable_input(ps, a2)? } else { a2 };
        let shortcut = match &self.nin_shortcut {
            Some(nin) => nin.forward(ps, x)?,
            None => x.clone(),
        };
        let y = self.conv2.forward_fused(ps, &a2, ConvEpilogue { sample_bias: None, residual: Some(&shortcut) })?;
        let on_gpu = !x.device().is_cpu();
        let (a1, a2) = (on_gpu.then_some(a1), on_gpu.then_some(a2));
        let cache = mode.train.then(|| ResCache { x: Input::Whole(x.clone()), n1, a1, h2, n2, a2, mode });
        Ok((y, cache))
    }

    /// The first parameter this block registered.
    pub fn first_param(&self) -> ParamId {
        self.norm1.first_param()
    }

    /// The last parameter this block registered (see `ParamStore::any_trainable_through`).
    pub fn last_param(&self) -> ParamId {
        self.nin_shortcut.as_ref().unwrap_or(&self.conv2).last_param()
    }

    /// conv2's input as the forward made it: silu(norm2(h2)) from the saved
    /// statistics with the dropout mask drawn again at the same Philox
    /// coordinates, in one pass (bit for bit: `ops::group_norm_apply_dropout_keeping_mask`).
    /// Also the drawn mask, for the dropout's backward.
    fn rebuild_a2(&self, ps: &ParamStore, c: &ResCache) -> Result<(Tensor, Option<ops::DropoutMask>)> {
        self.norm2.recompute_dropout(ps, &c.h2, &c.n2, self.dropout_at(&c.mode, &c.h2).as_ref())
    }

    /// Returns (dx, d silu_temb); accumulates every trainable parameter's
    /// gradient. `need_dtemb` false (the time embedding is frozen) with a
    /// frozen temb_proj skips temb_proj's backward and returns no d silu_temb.
    pub fn backward(
        &self,
        ps: &mut ParamStore,
        c: &ResCache,
        silu_temb: &Tensor,
        dy: &Tensor,
        need_dtemb: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (mut da2, mask) = match &c.a2 {
            Some(a2) => (self.conv2.backward(ps, a2, dy)?, None),
            None => {
                let (a2, mask) = self.rebuild_a2(ps, c)?;
                (self.conv2.backward(ps, &a2, dy)?, mask)
            }
        };
        if self.dropout_on(&c.mode) && mask.is_none() {
            let (m, offset) = (&c.mode, c.mode.element_offset(&da2));
            da2 = ops::dropout_backward_at(&da2, self.dropout, m.seed, m.philox_step(), self.dropout_stream, offset)?;
        }
        // the rebuild's mask (one bit an element) saves drawing it a third
        // time, and its backward runs in the norm's pass
        let fused = ops::GroupNormBackwardFusion { dy_mask: mask.as_ref(), residual: None };
        let dh2 = self.norm2.backward_fused(ps, &c.h2, &c.n2, &da2, fused)?;
        drop(da2);
        let dsilu_temb = if need_dtemb || !self.temb_proj.is_frozen(ps) {
            let dtp = ops::channel_bias_backward(&dh2)?;
            Some(self.temb_proj.backward(ps, silu_temb, &dtp)?)
        } else {
            None
        };
        let x = c.input()?;
        let da1 = match &c.a1 {
            Some(a1) => self.conv1.backward(ps, a1, &dh2)?,
            None => self.conv1.backward(ps, &self.norm1.recompute(ps, &x, &c.n1)?, &dh2)?,
        };
        // An identity shortcut's gradient is added in the norm's pass. A 1x1
        // conv's comes after it: computed first, it would push da1 and x
        // out of cache before the norm reads them (measured slower).
        let residual = self.nin_shortcut.is_none().then_some(dy);
        let fused = ops::GroupNormBackwardFusion { dy_mask: None, residual };
        let mut dx = self.norm1.backward_fused(ps, &x, &c.n1, &da1, fused)?;
        if let Some(nin) = &self.nin_shortcut {
            ops::add_in_place(&mut dx, &nin.backward(ps, &x, dy)?)?;
        }
        Ok((dx, dsilu_temb.filter(|_| need_dtemb)))
    }
}
