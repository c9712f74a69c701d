//! The ops of one training step of a U-Net config, with how often each
//! occurs: a walk that mirrors `Arch::forward` in crates/unet/src/unet.rs
//! (as crates/unet/src/footprint.rs does for memory). Each op has its
//! passes (forward, the backward kernels, the optimiser update), the FLOP
//! and DRAM bytes of each pass (as KERNELS.md counts them: a multiply-add
//! is 2 FLOP, each tensor is read or written once), and a runner that calls
//! the pass on a device with seeded inputs.

use anyhow::Result;
use diffuse_tensor::ops::{self, AdamWParams, Conv2dParams};
use diffuse_tensor::{DType, Device, Precision, Tensor};
use diffuse_unet::{Footprint, UNetConfig};
use std::collections::BTreeMap;

/// One op at one size.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// A convolution of an N x Ci x side x side input; `down` is stride 2.
    Conv {
        n: usize,
        ci: usize,
        co: usize,
        side: usize,
        k: usize,
        down: bool,
    },
    GroupNorm {
        n: usize,
        c: usize,
        side: usize,
        groups: usize,
        silu: bool,
    },
    Attention {
        n: usize,
        c: usize,
        tokens: usize,
    },
    Linear {
        rows: usize,
        din: usize,
        dout: usize,
    },
    Silu {
        len: usize,
    },
    /// A residual add (its backward: one gradient accumulation).
    Add {
        len: usize,
    },
    Dropout {
        len: usize,
        p: u32,
    },
    /// Nearest 2x upsampling of an N x C x side x side input.
    Upsample {
        n: usize,
        c: usize,
        side: usize,
    },
    Concat {
        n: usize,
        ca: usize,
        cb: usize,
        side: usize,
    },
    /// The time embedding's per-channel bias on a feature map.
    ChannelBias {
        n: usize,
        c: usize,
        side: usize,
    },
    Embedding {
        n: usize,
        dim: usize,
    },
    NoiseAdd {
        n: usize,
        per: usize,
    },
    MseLoss {
        len: usize,
    },
    AdamW {
        params: usize,
    },
    Ema {
        params: usize,
    },
    GlobalNorm {
        params: usize,
    },
    /// Gradient clipping's scale of every gradient.
    ClipScale {
        params: usize,
    },
}

const F: f64 = 4.0; // bytes of an f32

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "conv2d",
            Op::GroupNorm { .. } => "group_norm",
            Op::Attention { .. } => "attention",
            Op::Linear { .. } => "linear",
            Op::Silu { .. } => "silu",
            Op::Add { .. } => "add",
            Op::Dropout { .. } => "dropout",
            Op::Upsample { .. } => "upsample_nearest2x",
            Op::Concat { .. } => "concat_channels",
            Op::ChannelBias { .. } => "add_channel_bias",
            Op::Embedding { .. } => "timestep_embedding",
            Op::NoiseAdd { .. } => "noise_add",
            Op::MseLoss { .. } => "mse_loss",
            Op::AdamW { .. } => "adamw_step",
            Op::Ema { .. } => "ema_update",
            Op::GlobalNorm { .. } => "global_l2_norm",
            Op::ClipScale { .. } => "scale_in_place (grad clip)",
        }
    }

    /// The sizes, as the JSON and the table show them.
    pub fn sizes(&self) -> String {
        match *self {
            Op::Conv { n, ci, co, side, k, down } => {
                format!("N{n} {ci}->{co} {k}x{k}{} @{side}x{side}", if down { " s2" } else { "" })
            }
            Op::GroupNorm { n, c, side, groups, silu } => {
                format!("N{n} C{c} @{side}x{side} G{groups}{}", if silu { " +SiLU" } else { "" })
            }
            Op::Attention { n, c, tokens } => format!("B{n} C{c} N{tokens}"),
            Op::Linear { rows, din, dout } => format!("{rows} rows {din}->{dout}"),
            Op::Silu { len } | Op::Add { len } | Op::MseLoss { len } => format!("{len} values"),
            Op::Dropout { len, p } => format!("{len} values p 0.{p}"),
            Op::Upsample { n, c, side } => format!("N{n} C{c} {side}->{}", 2 * side),
            Op::Concat { n, ca, cb, side } => format!("N{n} {ca}+{cb} @{side}x{side}"),
            Op::ChannelBias { n, c, side } => format!("N{n} C{c} @{side}x{side}"),
            Op::Embedding { n, dim } => format!("N{n} dim {dim}"),
            Op::NoiseAdd { n, per } => format!("N{n} x {per}"),
            Op::AdamW { params } | Op::Ema { params } | Op::GlobalNorm { params } | Op::ClipScale { params } => {
                format!("{params} params")
            }
        }
    }

    /// The passes one training step runs.
    pub fn passes(&self) -> &'static [&'static str] {
        match self {
            Op::Conv { .. } => &["forward", "backward_data", "backward_weight", "backward_bias"],
            Op::Embedding { .. } | Op::NoiseAdd { .. } => &["forward"],
            Op::AdamW { .. } | Op::Ema { .. } | Op::GlobalNorm { .. } | Op::ClipScale { .. } => &["update"],
            _ => &["forward", "backward"],
        }
    }

    /// Whether the pass has a tensor-core kernel (`--precision tf32|bf16`):
    /// the matrix products of the convolutions, linear layers and attention.
    pub fn has_tensor_core_kernel(&self, pass: &str) -> bool {
        match self {
            Op::Conv { .. } => pass != "backward_bias",
            Op::Linear { .. } | Op::Attention { .. } => true,
            _ => false,
        }
    }

    /// (FLOP, DRAM bytes) of one pass.
    pub fn cost(&self, pass: &str) -> (f64, f64) {
        let fwd = pass == "forward";
        match *self {
            Op::Conv { n, ci, co, side, k, down } => {
                let out = if down { side.div_ceil(2) } else { side };
                let (x, w, y) = ((n * ci * side * side) as f64, (co * ci * k * k) as f64, (n * co * out * out) as f64);
                let macs = y * (ci * k * k) as f64;
                match pass {
                    "forward" => (2.0 * macs, F * (x + w + co as f64 + y)),
                    // the stride-2 backward-data GEMM also multiplies the zero taps
                    "backward_data" => (2.0 * macs * if down { 4.0 } else { 1.0 }, F * (y + w + x)),
                    "backward_weight" => (2.0 * macs, F * (y + x + w)),
                    _ => (y, F * (y + co as f64)),
                }
            }
            Op::GroupNorm { n, c, side, silu, .. } => {
                let v = (n * c * side * side) as f64;
                if fwd {
                    (v * if silu { 12.0 } else { 8.0 }, F * 2.0 * v)
                } else {
                    (v * 30.0, F * 3.0 * v)
                }
            }
            Op::Attention { n, c, tokens } => {
                let (qk, m) = ((n * tokens * tokens * c) as f64, (n * c * tokens) as f64);
                if fwd {
                    (4.0 * qk, F * (4.0 * m + (n * tokens) as f64))
                } else {
                    // the scores are recomputed in both backward passes
                    (14.0 * qk, F * (12.0 * m))
                }
            }
            Op::Linear { rows, din, dout } => {
                let (mac, io) = ((rows * din * dout) as f64, (rows * din + din * dout + dout + rows * dout) as f64);
                if fwd {
                    (2.0 * mac, F * io)
                } else {
                    (4.0 * mac, F * 2.0 * io)
                }
            }
            Op::Silu { len } => {
                let v = len as f64;
                if fwd {
                    (4.0 * v, F * 2.0 * v)
                } else {
                    (7.0 * v, F * 3.0 * v)
                }
            }
            Op::Add { len } => (len as f64, F * 3.0 * len as f64),
            // Philox: 10 rounds per 4 values
            Op::Dropout { len, .. } => (25.0 * len as f64, F * 2.0 * len as f64),
            Op::Upsample { n, c, side } => {
                let v = (n * c * side * side) as f64;
                (if fwd { 0.0 } else { 3.0 * v }, F * 5.0 * v)
            }
            Op::Concat { n, ca, cb, side } => (0.0, F * 2.0 * (n * (ca + cb) * side * side) as f64),
            Op::ChannelBias { n, c, side } => {
                let v = (n * c * side * side) as f64;
                (v, F * if fwd { 2.0 } else { 1.0 } * v)
            }
            Op::Embedding { n, dim } => (10.0 * (n * dim) as f64, F * (n + n * dim) as f64),
            Op::NoiseAdd { n, per } => (30.0 * (n * per) as f64, F * 3.0 * (n * per) as f64),
            Op::MseLoss { len } => {
                let v = len as f64;
                if fwd {
                    (3.0 * v, F * 2.0 * v)
                } else {
                    (2.0 * v, F * 3.0 * v)
                }
            }
            Op::AdamW { params } => (20.0 * params as f64, F * 7.0 * params as f64),
            Op::Ema { params } => (3.0 * params as f64, F * 3.0 * params as f64),
            Op::GlobalNorm { params } => (2.0 * params as f64, F * params as f64),
            Op::ClipScale { params } => (params as f64, F * 2.0 * params as f64),
        }
    }

    /// A closure that runs `pass` once on `device`, its inputs made once:
    /// seeded normal values made on the CPU and copied to the device, or,
    /// when `seeded` is false (counting, where values do not matter), zeros
    /// made on the device. `prec` is the arithmetic of the passes that have
    /// a tensor-core kernel (the others ignore it).
    pub fn runner(
        &self,
        pass: &str,
        device: &Device,
        seeded: bool,
        prec: Precision,
    ) -> Result<Box<dyn FnMut() -> Result<()>>> {
        let mut seed = 0u64;
        let mut input = |shape: &[usize]| -> Result<Tensor> {
            seed += 1;
            if !seeded {
                return Ok(Tensor::zeros(shape.to_vec(), DType::F32, device)?);
            }
            Ok(Tensor::randn(shape.to_vec(), seed, 0, DType::F32, &Device::Cpu)?.to_device(device)?)
        };
        let pass = pass.to_string();
        Ok(match *self {
            Op::Conv { n, ci, co, side, k, down } => {
                let p = if down { Conv2dParams::down2() } else { Conv2dParams::same(k) };
                let out = if down { side.div_ceil(2) } else { side };
                let (x, w, b, dy) =
                    (input(&[n, ci, side, side])?, input(&[co, ci, k, k])?, input(&[co])?, input(&[n, co, out, out])?);
                Box::new(move || {
                    match pass.as_str() {
                        "forward" => drop(ops::conv2d_forward_with(&x, &w, Some(&b), &p, prec)?),
                        "backward_data" => drop(ops::conv2d_backward_data_with(&dy, &w, x.shape(), &p, prec)?),
                        "backward_weight" => drop(ops::conv2d_backward_weight_with(&dy, &x, w.shape(), &p, prec)?),
                        _ => drop(ops::conv2d_backward_bias(&dy)?),
                    }
                    Ok(())
                })
            }
            Op::GroupNorm { n, c, side, groups, silu } => {
                let (x, g, b, dy) =
                    (input(&[n, c, side, side])?, input(&[c])?, input(&[c])?, input(&[n, c, side, side])?);
                let f = ops::group_norm_forward(&x, &g, &b, groups, 1e-6, silu)?;
                Box::new(move || {
                    if pass == "forward" {
                        drop(ops::group_norm_forward(&x, &g, &b, groups, 1e-6, silu)?);
                    } else {
                        drop(ops::group_norm_backward(&dy, &x, &g, &b, &f.mean, &f.rstd, groups, silu)?);
                    }
                    Ok(())
                })
            }
            Op::Attention { n, c, tokens } => {
                let s = [n, c, tokens];
                let (q, k, v, dout) = (input(&s)?, input(&s)?, input(&s)?, input(&s)?);
                let f = ops::attention_forward_with(&q, &k, &v, prec)?;
                Box::new(move || {
                    if pass == "forward" {
                        drop(ops::attention_forward_with(&q, &k, &v, prec)?);
                    } else {
                        drop(ops::attention_backward_with(&dout, &q, &k, &v, &f.out, &f.lse, prec)?);
                    }
                    Ok(())
                })
            }
            Op::Linear { rows, din, dout } => {
                let (x, w, b, dy) =
                    (input(&[rows, din])?, input(&[dout, din])?, input(&[dout])?, input(&[rows, dout])?);
                Box::new(move || {
                    if pass == "forward" {
                        drop(ops::linear_forward_with(&x, &w, Some(&b), prec)?);
                    } else {
                        drop(ops::linear_backward_with(&dy, &x, &w, prec)?);
                    }
                    Ok(())
                })
            }
            Op::Silu { len } => {
                let (x, dy) = (input(&[len])?, input(&[len])?);
                Box::new(move || {
                    if pass == "forward" {
                        drop(ops::silu_forward(&x)?);
                    } else {
                        drop(ops::silu_backward(&dy, &x)?);
                    }
                    Ok(())
                })
            }
            Op::Add { len } => {
                let (a, b, mut acc) = (input(&[len])?, input(&[len])?, input(&[len])?);
                Box::new(move || {
                    if pass == "forward" {
                        drop(ops::add(&a, &b)?);
                    } else {
                        ops::add_in_place(&mut acc, &b)?;
                    }
                    Ok(())
                })
            }
            Op::Dropout { len, p } => {
                let x = input(&[len])?;
                let p = p as f32 / 10.0;
                Box::new(move || {
                    if pass == "forward" {
                        drop(ops::dropout_forward(&x, p, 1, 2, 3)?);
                    } else {
                        drop(ops::dropout_backward(&x, p, 1, 2, 3)?);
                    }
                    Ok(())
                })
            }
            Op::Upsample { n, c, side } => {
                let (x, dy) = (input(&[n, c, side, side])?, input(&[n, c, 2 * side, 2 * side])?);
                Box::new(move || {
                    if pass == "forward" {
                        drop(ops::upsample_nearest2x_forward(&x)?);
                    } else {
                        drop(ops::upsample_nearest2x_backward(&dy)?);
                    }
                    Ok(())
                })
            }
            Op::Concat { n, ca, cb, side } => {
                let (a, b) = (input(&[n, ca, side, side])?, input(&[n, cb, side, side])?);
                let cat = ops::concat_channels(&a, &b)?;
                Box::new(move || {
                    if pass == "forward" {
                        drop(ops::concat_channels(&a, &b)?);
                    } else {
                        drop(ops::split_channels(&cat, ca)?);
                    }
                    Ok(())
                })
            }
            Op::ChannelBias { n, c, side } => {
                let (x, bias) = (input(&[n, c, side, side])?, input(&[n, c])?);
                Box::new(move || {
                    if pass == "forward" {
                        drop(ops::add_channel_bias(&x, &bias)?);
                    } else {
                        drop(ops::channel_bias_backward(&x)?);
                    }
                    Ok(())
                })
            }
            Op::Embedding { n, dim } => {
                let t: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32).collect();
                let t = Tensor::from_vec(t, [n])?.to_device(device)?;
                Box::new(move || ops::timestep_embedding(&t, dim).map(drop).map_err(Into::into))
            }
            Op::NoiseAdd { n, per } => {
                let x0 = input(&[n, per])?;
                let a = Tensor::from_vec(vec![0.6f32; n], [n])?.to_device(device)?;
                let b = Tensor::from_vec(vec![0.8f32; n], [n])?.to_device(device)?;
                Box::new(move || ops::noise_add(&x0, &a, &b, 1, 2, 0).map(drop).map_err(Into::into))
            }
            Op::MseLoss { len } => {
                let (p, t) = (input(&[len])?, input(&[len])?);
                Box::new(move || {
                    if pass == "forward" {
                        drop(ops::mse_loss_forward(&p, &t)?);
                    } else {
                        drop(ops::mse_loss_backward(&p, &t, 1.0)?);
                    }
                    Ok(())
                })
            }
            Op::AdamW { params } => {
                let h = AdamWParams { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
                let (mut p, g) = (input(&[params])?, input(&[params])?);
                let mut m = Tensor::zeros([params], DType::F32, device)?;
                let mut v = Tensor::zeros([params], DType::F32, device)?;
                let mut step = 0;
                Box::new(move || {
                    step += 1;
                    Ok(ops::adamw_step(&mut p, &g, &mut m, &mut v, &h, step)?)
                })
            }
            Op::Ema { params } => {
                let (mut e, p) = (input(&[params])?, input(&[params])?);
                Box::new(move || Ok(ops::ema_update(&mut e, &p, 0.9999)?))
            }
            Op::GlobalNorm { params } => {
                let g = input(&[params])?;
                Box::new(move || ops::global_l2_norm(&[&g]).map(|_| ()).map_err(Into::into))
            }
            Op::ClipScale { params } => {
                let mut g = input(&[params])?;
                Box::new(move || Ok(ops::scale_in_place(&mut g, 0.999_999)?))
            }
        })
    }
}

/// The ops of one training step of `config` at `batch` images, each with
/// the number of times it occurs.
pub fn training_step(config: &UNetConfig, batch: usize) -> Result<BTreeMap<Op, u32>> {
    let params = Footprint::of(config)?.params as usize;
    let mut w = Walk { c: config, n: batch, ops: BTreeMap::new() };
    w.run(params);
    Ok(w.ops)
}

struct Walk<'a> {
    c: &'a UNetConfig,
    n: usize,
    ops: BTreeMap<Op, u32>,
}

impl Walk<'_> {
    fn add(&mut self, op: Op) {
        *self.ops.entry(op).or_insert(0) += 1;
    }

    fn conv(&mut self, ci: usize, co: usize, side: usize, k: usize, down: bool) {
        self.add(Op::Conv { n: self.n, ci, co, side, k, down });
    }

    fn norm(&mut self, c: usize, side: usize, silu: bool) {
        self.add(Op::GroupNorm { n: self.n, c, side, groups: self.c.groups, silu });
    }

    fn resnet(&mut self, cin: usize, cout: usize, side: usize) {
        let n = self.n;
        self.norm(cin, side, true);
        self.conv(cin, cout, side, 3, false);
        self.add(Op::Linear { rows: n, din: 4 * self.c.ch, dout: cout });
        self.add(Op::ChannelBias { n, c: cout, side });
        self.norm(cout, side, true);
        if self.c.dropout > 0.0 {
            let p = (self.c.dropout * 10.0).round() as u32;
            self.add(Op::Dropout { len: n * cout * side * side, p });
        }
        self.conv(cout, cout, side, 3, false);
        if cin != cout {
            self.conv(cin, cout, side, 1, false);
        }
        self.add(Op::Add { len: n * cout * side * side });
    }

    fn attention(&mut self, c: usize, side: usize) {
        self.norm(c, side, false);
        for _ in 0..4 {
            self.conv(c, c, side, 1, false); // q, k, v, proj_out
        }
        self.add(Op::Attention { n: self.n, c, tokens: side * side });
        self.add(Op::Add { len: self.n * c * side * side });
    }

    fn run(&mut self, params: usize) {
        let (c, n) = (self.c, self.n);
        let (ch, size) = (c.ch, c.image_size);
        self.add(Op::NoiseAdd { n, per: c.in_ch * size * size });
        self.add(Op::Embedding { n, dim: ch });
        self.add(Op::Linear { rows: n, din: ch, dout: 4 * ch });
        self.add(Op::Silu { len: n * 4 * ch });
        self.add(Op::Linear { rows: n, din: 4 * ch, dout: 4 * ch });
        self.add(Op::Silu { len: n * 4 * ch });
        self.conv(c.in_ch, ch, size, 3, false);
        let levels = c.ch_mult.len();
        let mut side = size;
        let mut skips = vec![ch];
        let mut cin = ch;
        for (i, &mult) in c.ch_mult.iter().enumerate() {
            let cout = ch * mult;
            for _ in 0..c.num_res_blocks {
                self.resnet(cin, cout, side);
                cin = cout;
                if c.attn_resolutions.contains(&side) {
                    self.attention(cin, side);
                }
                skips.push(cin);
            }
            if i + 1 != levels {
                self.conv(cin, cin, side, 3, true);
                skips.push(cin);
                side = side.div_ceil(2);
            }
        }
        self.resnet(cin, cin, side);
        self.attention(cin, side);
        self.resnet(cin, cin, side);
        for i in (0..levels).rev() {
            let cout = ch * c.ch_mult[i];
            for _ in 0..=c.num_res_blocks {
                let skip = skips.pop().unwrap_or(0);
                self.add(Op::Concat { n, ca: cin, cb: skip, side });
                self.resnet(cin + skip, cout, side);
                cin = cout;
                if c.attn_resolutions.contains(&side) {
                    self.attention(cin, side);
                }
            }
            if i != 0 {
                self.add(Op::Upsample { n, c: cin, side });
                side *= 2;
                self.conv(cin, cin, side, 3, false);
            }
        }
        self.norm(cin, side, true);
        self.conv(cin, c.in_ch, side, 3, false);
        self.add(Op::MseLoss { len: n * c.in_ch * size * size });
        self.add(Op::GlobalNorm { params });
        self.add(Op::ClipScale { params });
        self.add(Op::AdamW { params });
        self.add(Op::Ema { params });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffuse_unet::UNet;

    /// The walk against a built model: one conv op per 4-D weight, one
    /// linear per 2-D weight, one group norm per norm layer.
    fn matches_the_built_model(config: UNetConfig) {
        let ops = training_step(&config, 2).unwrap_or_default();
        let count = |f: &dyn Fn(&Op) -> bool| ops.iter().filter(|(o, _)| f(o)).map(|(_, &c)| c as usize).sum::<usize>();
        let convs = count(&|o| matches!(o, Op::Conv { .. }));
        let linears = count(&|o| matches!(o, Op::Linear { .. }));
        let norms = count(&|o| matches!(o, Op::GroupNorm { .. }));
        let model = match UNet::new(config.clone(), 1, DType::F32, &Device::Cpu) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        let dims = |k: usize| model.params.ids().filter(|&id| model.params.value(id).dims().len() == k).count();
        let norm_layers = model
            .params
            .ids()
            .filter(|&id| model.params.name(id).contains("norm") && model.params.name(id).ends_with("weight"))
            .count();
        assert_eq!(convs, dims(4), "convolutions");
        assert_eq!(linears, dims(2), "linear layers");
        assert_eq!(norms, norm_layers, "group norms");
        let params = Footprint::of(&config).map(|f| f.params as usize).unwrap_or(0);
        assert!(ops.contains_key(&Op::AdamW { params }));
    }

    #[test]
    fn the_walk_matches_the_built_models() {
        matches_the_built_model(UNetConfig::mnist());
        matches_the_built_model(UNetConfig::tiny());
        matches_the_built_model(UNetConfig::tiny_mnist());
    }
}
