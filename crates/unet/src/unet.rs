//! The U-Net of Ho et al. 2020, wired exactly as
//! ../shared/reference/ddpm_unet.py: a down path whose every output is kept
//! as a skip connection, a middle of ResnetBlock-AttnBlock-ResnetBlock, and
//! an up path that concatenates [h, skip] before each ResnetBlock.

use crate::config::UNetConfig;
use crate::layers::*;
use crate::params::{ParamId, ParamStore};
use crate::{Result, UNetError};
use diffuse_tensor::ops::{self, Conv2dParams};
use diffuse_tensor::{DType, Device, Tensor};

pub struct UNet {
    pub config: UNetConfig,
    pub params: ParamStore,
    arch: Arch,
}

struct Level {
    blocks: Vec<(ResnetBlock, Option<AttnBlock>)>,
    resample: Option<Resample>,
}

enum Resample {
    Down(Downsample),
    Up(Upsample),
}

struct Arch {
    temb: TimeEmbedding,
    /// Present in a class-conditional model; added to the time embedding.
    class_emb: Option<ClassEmbedding>,
    conv_in: Conv2d,
    down: Vec<Level>,
    mid_block1: ResnetBlock,
    mid_attn: AttnBlock,
    mid_block2: ResnetBlock,
    /// `up[i]` is level i, run from the last level to the first.
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// One step of the down path: it maps skip i-1 to skip i. (A cache holds a
/// few of these per forward, so boxing the large variant would buy nothing.)
#[allow(clippy::large_enum_variant)]
enum DownStep {
    Block(ResCache, Option<AttnCache>),
    Down(Tensor),
}

/// One step of the up path, in forward order.
#[allow(clippy::large_enum_variant)]
enum UpStep {
    /// `h_channels`: how many channels of the concatenated input came from h
    /// (the rest is the skip `skip_index`).
    Block { res: ResCache, attn: Option<AttnCache>, h_channels: usize, skip_index: usize },
    /// An upsampling layer, with its conv's input (a GPU keeps it; bf16 at
    /// bf16 precision).
    Up(Tensor),
    /// An upsampling layer with the map before upsampling (the CPU keeps a
    /// quarter of the memory and upsamples again in the backward).
    UpFrom(Tensor),
}

/// Everything a training forward keeps for the backward.
pub struct UNetCache {
    temb: TimeEmbeddingCache,
    /// The class labels of a conditional forward (the null class filled in).
    labels: Vec<usize>,
    /// Where the GPU kernels read them (`ForwardMode::labels_at`).
    labels_at: Option<u64>,
    temb_out: Tensor,
    silu_temb: Tensor,
    x: Tensor,
    down: Vec<DownStep>,
    mid1: ResCache,
    mid_attn: AttnCache,
    mid2: ResCache,
    up: Vec<UpStep>,
    out_h: Tensor,
    out_norm: GroupNormCache,
    /// silu(norm_out(out_h)), conv_out's input: kept on a GPU (bf16 at bf16
    /// precision), rebuilt on the CPU.
    out_a: Option<Tensor>,
}

impl UNetCache {
    /// Bytes of activations this cache holds (what a training forward keeps).
    pub fn bytes(&self) -> usize {
        // Counted by the tensors' element counts; every cached tensor is
        // reachable from `tensors()`.
        self.tensors().iter().map(|t| t.numel() * t.dtype().size_in_bytes()).sum()
    }

    /// Bytes of the cached tensors stored as `dtype` (bf16: the activations
    /// a bf16 GPU run keeps at half size, `ParamStore::keeps_bf16_activations`).
    pub fn bytes_of(&self, dtype: DType) -> usize {
        self.tensors().iter().filter(|t| t.dtype() == dtype).map(|t| t.numel() * dtype.size_in_bytes()).sum()
    }

    fn tensors(&self) -> Vec<&Tensor> {
        let mut v: Vec<&Tensor> = vec![&self.temb_out, &self.silu_temb, &self.x, &self.out_h];
        v.extend(&self.out_a);
        v.extend(self.out_norm.tensors());
        v.extend(self.temb.tensors());
        for s in &self.down {
            match s {
                DownStep::Block(r, a) => {
                    v.extend(r.tensors());
                    if let Some(a) = a {
                        v.extend(a.tensors());
                    }
                }
                DownStep::Down(x) => v.push(x),
            }
        }
        v.extend(self.mid1.tensors());
        v.extend(self.mid_attn.tensors());
        v.extend(self.mid2.tensors());
        for s in &self.up {
            match s {
                UpStep::Block { res, attn, .. } => {
                    v.extend(res.tensors());
                    if let Some(a) = attn {
                        v.extend(a.tensors());
                    }
                }
                UpStep::Up(u) | UpStep::UpFrom(u) => v.push(u),
            }
        }
        v
    }
}

impl UNet {
    /// A freshly initialised model (the reference's initialisation) on `device`.
    pub fn new(config: UNetConfig, seed: u64, dtype: DType, device: &Device) -> Result<UNet> {
        Self::build(config, seed, dtype, device, None)
    }

    /// The same model with LoRA adapters on the convolutions `plan` targets
    /// (base weights initialised exactly as by `new`).
    pub fn with_lora(config: UNetConfig, seed: u64, dtype: DType, device: &Device, plan: LoraPlan) -> Result<UNet> {
        Self::build(config, seed, dtype, device, Some(plan))
    }

    fn build(config: UNetConfig, seed: u64, dtype: DType, device: &Device, plan: Option<LoraPlan>) -> Result<UNet> {
        config.validate()?;
        let mut params = ParamStore::new();
        let arch = Arch::build(&config, &mut Builder::new(&mut params, seed, dtype, device.clone(), plan))?;
        Ok(UNet { config, params, arch })
    }

    pub fn num_params(&self) -> usize {
        self.params.num_scalars()
    }

    pub fn device(&self) -> Device {
        self.params.iter().next().map(|(_, t)| t.device()).unwrap_or(Device::Cpu)
    }

    pub fn dtype(&self) -> DType {
        self.params.iter().next().map(|(_, t)| t.dtype()).unwrap_or(DType::F32)
    }

    /// The row of "no class" in a conditional model's class table.
    pub fn null_class(&self) -> Option<usize> {
        self.arch.class_emb.as_ref().map(ClassEmbedding::null_class)
    }

    /// Checks x and t, and returns the labels the forward uses (the null
    /// class for every image when a conditional model gets none; empty for an
    /// unconditional model).
    fn check_input(&self, x: &Tensor, t: &Tensor, labels: Option<&[usize]>) -> Result<Vec<usize>> {
        let c = &self.config;
        let (n, ch, h, w) = x.shape().nchw("UNet input")?;
        if ch != c.in_ch || h != c.image_size || w != c.image_size {
            return Err(UNetError::Config(format!(
                "input is {}x{}x{} but the model takes {}x{}x{}",
                ch, h, w, c.in_ch, c.image_size, c.image_size
            )));
        }
        if t.dims() != [n] {
            return Err(UNetError::Config(format!("timesteps have shape {:?}, expected [{n}]", t.dims())));
        }
        match (&self.arch.class_emb, labels) {
            (None, None) => Ok(Vec::new()),
            (None, Some(_)) => Err(UNetError::Config("class labels given to an unconditional model".into())),
            (Some(ce), None) => Ok(vec![ce.null_class(); n]),
            (Some(ce), Some(l)) => {
                if l.len() != n {
                    return Err(UNetError::Config(format!("{} class labels for a batch of {n}", l.len())));
                }
                ce.check_labels(l)?;
                Ok(l.to_vec())
            }
        }
    }

    /// Inference: eps prediction for x_t at timesteps t (floats, shape [N]).
    /// A class-conditional model predicts for "no class" (its unconditional
    /// branch).
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.forward_cond(x, t, None)
    }

    /// Inference with class labels (one per image; `None` or the null class
    /// [`UNet::null_class`] = unconditional). Labels given to an
    /// unconditional model are an error.
    pub fn forward_cond(&self, x: &Tensor, t: &Tensor, labels: Option<&[usize]>) -> Result<Tensor> {
        let labels = self.check_input(x, t, labels)?;
        Ok(self.arch.forward(&self.params, x, t, &labels, ForwardMode::inference())?.0)
    }

    /// Training forward: the output and the cache for `backward`.
    pub fn forward_train(&self, x: &Tensor, t: &Tensor, mode: ForwardMode) -> Result<(Tensor, UNetCache)> {
        self.forward_train_cond(x, t, None, mode)
    }

    /// Training forward with class labels (see [`UNet::forward_cond`]).
    pub fn forward_train_cond(
        &self,
        x: &Tensor,
        t: &Tensor,
        labels: Option<&[usize]>,
        mode: ForwardMode,
    ) -> Result<(Tensor, UNetCache)> {
        let labels = self.check_input(x, t, labels)?;
        let mode = ForwardMode { train: true, ..mode };
        let (y, cache) = self.arch.forward(&self.params, x, t, &labels, mode)?;
        let cache = cache.ok_or_else(|| UNetError::Config("training forward kept no cache".into()))?;
        Ok((y, cache))
    }

    /// Accumulates d loss / d param into the parameter store's gradients.
    pub fn backward(&mut self, cache: &UNetCache, dy: &Tensor) -> Result<()> {
        self.arch.backward(&mut self.params, cache, dy, None)
    }

    /// [`UNet::backward`] telling `hook`, after each layer's backward, which
    /// gradients are now final (for an all-reduce that overlaps the rest of
    /// the backward). Parameters whose layer the backward skips (frozen, or
    /// below the lowest trainable layer) are never reported.
    pub fn backward_with(&mut self, cache: &UNetCache, dy: &Tensor, hook: &mut dyn GradReady) -> Result<()> {
        self.arch.backward(&mut self.params, cache, dy, Some(hook))
    }
}

/// Told by [`UNet::backward_with`] which gradients are final as the
/// backward goes. The backward visits the layers in the reverse of their
/// registration order, and each layer's parameters get their whole
/// gradient in that layer's backward (the time embedding, which every block
/// reads, is one layer: its backward runs last, on the summed gradient).
pub trait GradReady {
    /// Every parameter registered at or after `first` has its final
    /// gradient of this backward. An error stops the backward
    /// ([`UNetError::GradHook`]).
    fn grads_final_from(&mut self, ps: &mut ParamStore, first: ParamId) -> std::result::Result<(), String>;
}

impl Arch {
    fn build(c: &UNetConfig, b: &mut Builder) -> Result<Arch> {
        let ch = c.ch;
        let temb_ch = 4 * ch;
        let g = c.groups;
        let temb = TimeEmbedding::new(b, ch)?;
        // Registered right after the time embedding (forward order, which the
        // backward's early exits rely on); an unconditional model has no
        // table, so its initialisation is unchanged.
        let class_emb = if c.num_classes > 0 { Some(ClassEmbedding::new(b, c.num_classes, temb_ch)?) } else { None };
        let conv_in = Conv2d::new(b, "conv_in", c.in_ch, ch, 3, Conv2dParams::same(3), 1.0)?;
        let levels = c.ch_mult.len();
        let mut res = c.image_size;
        let mut skip_ch = vec![ch];
        let mut cin = ch;
        let mut down = Vec::with_capacity(levels);
        for (i, &mult) in c.ch_mult.iter().enumerate() {
            let mut blocks = Vec::new();
            for j in 0..c.num_res_blocks {
                let cout = ch * mult;
                let block = ResnetBlock::new(b, &format!("down.{i}.blocks.{j}"), cin, cout, temb_ch, c.dropout, g)?;
                cin = cout;
                let attn = if c.attn_resolutions.contains(&res) {
                    Some(AttnBlock::new(b, &format!("down.{i}.attns.{j}"), cin, g)?)
                } else {
                    None
                };
                blocks.push((block, attn));
                skip_ch.push(cin);
            }
            let resample = if i + 1 != levels {
                skip_ch.push(cin);
                res = res.div_ceil(2);
                Some(Resample::Down(Downsample::new(b, &format!("down.{i}.downsample"), cin)?))
            } else {
                None
            };
            down.push(Level { blocks, resample });
        }
        let mid_block1 = ResnetBlock::new(b, "mid_block1", cin, cin, temb_ch, c.dropout, g)?;
        let mid_attn = AttnBlock::new(b, "mid_attn", cin, g)?;
        let mid_block2 = ResnetBlock::new(b, "mid_block2", cin, cin, temb_ch, c.dropout, g)?;
        let mut up: Vec<Level> = Vec::with_capacity(levels);
        for i in (0..levels).rev() {
            let mut blocks = Vec::new();
            for j in 0..=c.num_res_blocks {
                let skip = skip_ch.pop().ok_or_else(|| UNetError::Config("skip channels ran out".into()))?;
                let cout = ch * c.ch_mult[i];
                let block =
                    ResnetBlock::new(b, &format!("up.{i}.blocks.{j}"), cin + skip, cout, temb_ch, c.dropout, g)?;
                cin = cout;
                let attn = if c.attn_resolutions.contains(&res) {
                    Some(AttnBlock::new(b, &format!("up.{i}.attns.{j}"), cin, g)?)
                } else {
                    None
                };
                blocks.push((block, attn));
            }
            let resample = if i != 0 {
                res *= 2;
                Some(Resample::Up(Upsample::new(b, &format!("up.{i}.upsample"), cin)?))
            } else {
                None
            };
            up.insert(0, Level { blocks, resample });
        }
        let norm_out = GroupNorm::new(b, "norm_out", cin, g, true)?;
        let conv_out = Conv2d::new(b, "conv_out", cin, c.in_ch, 3, Conv2dParams::same(3), 0.0)?;
        Ok(Arch { temb, class_emb, conv_in, down, mid_block1, mid_attn, mid_block2, up, norm_out, conv_out })
    }

    fn forward(
        &self,
        ps: &ParamStore,
        x: &Tensor,
        t: &Tensor,
        labels: &[usize],
        mode: ForwardMode,
    ) -> Result<(Tensor, Option<UNetCache>)> {
        let train = mode.train;
        let (mut temb_out, temb_cache) = self.temb.forward(ps, t, train)?;
        if let Some(ce) = &self.class_emb {
            temb_out = ops::add(&temb_out, &ce.forward(ps, labels, mode.labels_at)?)?;
        }
        let silu_temb = ops::silu_forward(&temb_out)?;

        let mut hs = vec![self.conv_in.forward(ps, x)?];
        let mut down_steps = Vec::new();
        for level in &self.down {
            for (block, attn) in &level.blocks {
                let prev = hs.last().expect("hs starts non-empty");
                let (mut h, rc) = block.forward(ps, prev, &silu_temb, mode)?;
                let mut ac = None;
                if let Some(attn) = attn {
                    let (h2, c) = attn.forward(ps, &h, train)?;
                    h = h2;
                    ac = c;
                }
                if let Some(rc) = rc {
                    down_steps.push(DownStep::Block(rc, ac));
                }
                hs.push(h);
            }
            if let Some(Resample::Down(d)) = &level.resample {
                let prev = hs.last().expect("hs starts non-empty");
                let h = d.forward(ps, prev)?;
                if train {
                    down_steps.push(DownStep::Down(prev.clone()));
                }
                hs.push(h);
            }
        }

        let last = hs.last().expect("hs starts non-empty");
        let (h, mid1) = self.mid_block1.forward(ps, last, &silu_temb, mode)?;
        let (h, mid_attn) = self.mid_attn.forward(ps, &h, train)?;
        let (mut h, mid2) = self.mid_block2.forward(ps, &h, &silu_temb, mode)?;

        let mut up_steps = Vec::new();
        for level in self.up.iter().rev() {
            for (block, attn) in &level.blocks {
                let skip_index = hs.len() - 1;
                let skip = hs.pop().ok_or_else(|| UNetError::Config("skip connections ran out".into()))?;
                let h_channels = h.dims()[1];
                let cat = ops::concat_channels(&h, &skip)?;
                let (mut hn, mut rc) = block.forward(ps, &cat, &silu_temb, mode)?;
                if let (Some(rc), true) = (&mut rc, cat.device().is_cpu()) {
                    // The cache keeps h and the skip (which the down path's
                    // cache holds anyway) instead of their concatenation.
                    rc.keep_input_as_concat(h.clone(), skip)?;
                }
                drop(cat);
                let mut ac = None;
                if let Some(attn) = attn {
                    let (h2, c) = attn.forward(ps, &hn, train)?;
                    hn = h2;
                    ac = c;
                }
                if let Some(res) = rc {
                    up_steps.push(UpStep::Block { res, attn: ac, h_channels, skip_index });
                }
                h = hn;
            }
            if let Some(Resample::Up(u)) = &level.resample {
                let (hn, upsampled) = u.forward(ps, &h, train)?;
                if train {
                    up_steps.push(if h.device().is_cpu() { UpStep::UpFrom(h.clone()) } else { UpStep::Up(upsampled) });
                }
                h = hn;
            }
        }

        let (out_a, out_norm) = self.norm_out.forward(ps, &h)?;
        let out_a = if train { self.conv_out.cacheable_input(ps, out_a)? } else { out_a };
        let y = self.conv_out.forward(ps, &out_a)?;
        let cache = match (train, temb_cache, mid1, mid_attn, mid2) {
            (true, Some(temb), Some(mid1), Some(mid_attn), Some(mid2)) => Some(UNetCache {
                temb,
                labels: labels.to_vec(),
                labels_at: mode.labels_at,
                temb_out,
                silu_temb,
                x: x.clone(),
                down: down_steps,
                mid1,
                mid_attn,
                mid2,
                up: up_steps,
                out_h: h,
                out_norm,
                out_a: (!out_a.device().is_cpu()).then_some(out_a),
            }),
            _ => None,
        };
        Ok((y, cache))
    }

    /// The backward skips what frozen parameters make unnecessary: the weight
    /// and bias gradients of frozen convolutions (never computed), temb_proj
    /// and the time embedding when both are frozen, and everything below the
    /// lowest layer that still trains (parameters are registered in forward
    /// order, so once none at or before a layer trains, the data gradient has
    /// nowhere left to go and the backward stops).
    fn backward(
        &self,
        ps: &mut ParamStore,
        c: &UNetCache,
        dy: &Tensor,
        mut hook: Option<&mut dyn GradReady>,
    ) -> Result<()> {
        let mut done = |ps: &mut ParamStore, first: ParamId| -> Result<()> {
            match hook.as_deref_mut() {
                Some(h) => h.grads_final_from(ps, first).map_err(UNetError::GradHook),
                None => Ok(()),
            }
        };
        if !ps.any_trainable_through(self.conv_out.last_param()) {
            return Ok(());
        }
        let temb_last = self.class_emb.as_ref().map(ClassEmbedding::last_param).unwrap_or(self.temb.last_param());
        let need_dtemb = ps.any_trainable_through(temb_last);
        let da = match &c.out_a {
            Some(a) => self.conv_out.backward(ps, a, dy)?,
            None => self.conv_out.backward(ps, &self.norm_out.recompute(ps, &c.out_h, &c.out_norm)?, dy)?,
        };
        done(ps, self.conv_out.first_param())?;
        let mut dh = self.norm_out.backward(ps, &c.out_h, &c.out_norm, &da)?;
        done(ps, self.norm_out.first_param())?;
        let mut dsilu_temb: Option<Tensor> = None;
        let mut add_temb = |d: Option<Tensor>| -> Result<()> {
            match (&mut dsilu_temb, d) {
                (Some(acc), Some(d)) => ops::add_in_place(acc, &d)?,
                (None, d) => dsilu_temb = d,
                (Some(_), None) => {}
            }
            Ok(())
        };
        // Gradients arriving at each skip connection from the up path.
        let mut dskips: Vec<Option<Tensor>> = (0..=c.down.len()).map(|_| None).collect();

        let up_blocks = self.up.iter().rev().flat_map(|l| {
            l.blocks.iter().map(UpLayer::Block).chain(l.resample.iter().map(|r| match r {
                Resample::Up(u) => UpLayer::Up(u),
                Resample::Down(_) => unreachable!("up levels only upsample"),
            }))
        });
        let up_pairs: Vec<(UpLayer, &UpStep)> = up_blocks.zip(c.up.iter()).collect();
        for (layer, step) in up_pairs.into_iter().rev() {
            if !ps.any_trainable_through(layer.last_param()) {
                return Ok(());
            }
            let first = layer.first_param();
            match (layer, step) {
                (UpLayer::Up(u), UpStep::Up(upsampled)) => dh = u.backward(ps, upsampled, &dh)?,
                (UpLayer::Up(u), UpStep::UpFrom(x)) => {
                    dh = u.backward(ps, &ops::upsample_nearest2x_forward(x)?, &dh)?;
                }
                (UpLayer::Block((block, attn)), UpStep::Block { res, attn: ac, h_channels, skip_index }) => {
                    if let (Some(attn), Some(ac)) = (attn, ac) {
                        dh = attn.backward(ps, ac, &dh)?;
                    }
                    let (dcat, dt) = block.backward(ps, res, &c.silu_temb, &dh, need_dtemb)?;
                    add_temb(dt)?;
                    let (dhh, dskip) = ops::split_channels(&dcat, *h_channels)?;
                    dh = dhh;
                    accumulate(&mut dskips[*skip_index], dskip)?;
                }
                _ => return Err(UNetError::Config("up-path cache does not match the model".into())),
            }
            done(ps, first)?;
        }

        if !ps.any_trainable_through(self.mid_block2.last_param()) {
            return Ok(());
        }
        let (d, dt) = self.mid_block2.backward(ps, &c.mid2, &c.silu_temb, &dh, need_dtemb)?;
        add_temb(dt)?;
        done(ps, self.mid_block2.first_param())?;
        let d = self.mid_attn.backward(ps, &c.mid_attn, &d)?;
        done(ps, self.mid_attn.first_param())?;
        let (d, dt) = self.mid_block1.backward(ps, &c.mid1, &c.silu_temb, &d, need_dtemb)?;
        add_temb(dt)?;
        done(ps, self.mid_block1.first_param())?;

        // The down path is a chain: step i maps skip i-1 to skip i, and every
        // skip also receives its up-path gradient.
        let mut g = d;
        let down_layers: Vec<DownLayer> = self
            .down
            .iter()
            .flat_map(|l| {
                l.blocks.iter().map(DownLayer::Block).chain(l.resample.iter().map(|r| match r {
                    Resample::Down(d) => DownLayer::Down(d),
                    Resample::Up(_) => unreachable!("down levels only downsample"),
                }))
            })
            .collect();
        if down_layers.len() != c.down.len() {
            return Err(UNetError::Config("down-path cache does not match the model".into()));
        }
        for i in (0..c.down.len()).rev() {
            if !ps.any_trainable_through(down_layers[i].last_param()) {
                return Ok(());
            }
            if let Some(ds) = dskips[i + 1].take() {
                ops::add_in_place(&mut g, &ds)?;
            }
            g = match (&down_layers[i], &c.down[i]) {
                (DownLayer::Block((block, attn)), DownStep::Block(rc, ac)) => {
                    if let (Some(attn), Some(ac)) = (attn, ac) {
                        g = attn.backward(ps, ac, &g)?;
                    }
                    let (dx, dt) = block.backward(ps, rc, &c.silu_temb, &g, need_dtemb)?;
                    add_temb(dt)?;
                    dx
                }
                (DownLayer::Down(d), DownStep::Down(x)) => d.backward(ps, x, &g)?,
                _ => return Err(UNetError::Config("down-path cache does not match the model".into())),
            };
            done(ps, down_layers[i].first_param())?;
        }
        if let Some(ds) = dskips[0].take() {
            ops::add_in_place(&mut g, &ds)?;
        }
        self.conv_in.backward_params(ps, &c.x, &g)?;
        done(ps, self.conv_in.first_param())?;

        if need_dtemb {
            let dsilu_temb = dsilu_temb.ok_or_else(|| UNetError::Config("no block used the time embedding".into()))?;
            let dtemb = ops::silu_backward(&dsilu_temb, &c.temb_out)?;
            if let Some(ce) = &self.class_emb {
                ce.backward(ps, &c.labels, c.labels_at, &dtemb)?;
                done(ps, ce.first_param())?;
            }
            if ps.any_trainable_through(self.temb.last_param()) {
                self.temb.backward(ps, &c.temb, &dtemb)?;
                done(ps, self.temb.first_param())?;
            }
        }
        Ok(())
    }
}

enum UpLayer<'a> {
    Block(&'a (ResnetBlock, Option<AttnBlock>)),
    Up(&'a Upsample),
}

enum DownLayer<'a> {
    Block(&'a (ResnetBlock, Option<AttnBlock>)),
    Down(&'a Downsample),
}

/// The last parameter of a (block, attention) pair: the attention's when it has one.
fn pair_last_param((block, attn): &(ResnetBlock, Option<AttnBlock>)) -> ParamId {
    attn.as_ref().map(AttnBlock::last_param).unwrap_or_else(|| block.last_param())
}

impl UpLayer<'_> {
    fn last_param(&self) -> ParamId {
        match self {
            UpLayer::Block(pair) => pair_last_param(pair),
            UpLayer::Up(u) => u.last_param(),
        }
    }

    fn first_param(&self) -> ParamId {
        match self {
            UpLayer::Block((block, _)) => block.first_param(),
            UpLayer::Up(u) => u.first_param(),
        }
    }
}

impl DownLayer<'_> {
    fn last_param(&self) -> ParamId {
        match self {
            DownLayer::Block(pair) => pair_last_param(pair),
            DownLayer::Down(d) => d.last_param(),
        }
    }

    fn first_param(&self) -> ParamId {
        match self {
            DownLayer::Block((block, _)) => block.first_param(),
            DownLayer::Down(d) => d.first_param(),
        }
    }
}

fn accumulate(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    match slot {
        Some(acc) => ops::add_in_place(acc, &g)?,
        None => *slot = Some(g),
    }
    Ok(())
}
