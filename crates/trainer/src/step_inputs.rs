//! What the host makes for one micro-batch — the images, their timesteps,
//! the noise coefficients sqrt(abar_t) and sqrt(1 - abar_t) and the square
//! roots of the loss weights, and for a class-conditional model the class
//! labels after class dropout — and how it reaches the device. On a GPU the
//! values are packed into one pinned host buffer and moved by ONE
//! asynchronous copy into one fixed device buffer, whose views are the
//! step's input tensors; the next micro-batch is prepared and its copy
//! queued as soon as the current one's kernels are queued, so the host
//! loads and packs while the device computes (the copy itself is queued on
//! the device's one stream behind the current step: a batch is well under a
//! MiB, microseconds of DMA). The values are those the CPU path computes,
//! rounded to f32 the same way, so the bits of a step do not change.

use crate::config::TrainConfig;
use crate::data::{Loader, LoaderState};
use crate::diffusion::{Diffusion, TIMESTEP_STREAM};
use crate::loss_weighting::LossWeighting;
use crate::Result;
use diffuse_tensor::gpu::{GpuStorage, PinnedBuffer};
use diffuse_tensor::{ops, philox, Device, Shape, Storage, Tensor};

/// One micro-batch's inputs on the training device.
pub struct MicroBatch {
    pub x0: Tensor,
    /// The timesteps as f32 (the model's input).
    pub t: Tensor,
    /// sqrt(abar_t), sqrt(1 - abar_t) per sample.
    pub a: Tensor,
    pub b: Tensor,
    /// sqrt of the loss weights (None without loss weighting).
    pub sqrt_w: Option<Tensor>,
    pub ts: Vec<usize>,
    /// A class-conditional model's labels, each replaced by the null class
    /// with probability `class_dropout` (None for an unconditional model).
    pub labels: Option<Vec<usize>>,
    /// Where they are on the GPU (f32, staged with the batch).
    pub labels_at: Option<u64>,
    /// The batch index of this micro-batch's first sample (a data-parallel
    /// rank's shard starts there; 0 alone).
    pub first: usize,
}

/// Philox salt and stream of class dropout (apart from the noise, timesteps
/// and dropout masks; see ARCHITECTURE.md).
const CLASS_DROPOUT_SALT: u64 = 0xc1a5_5d40;
const CLASS_DROPOUT_STREAM: u32 = 16;

/// The class labels a micro-batch trains with: each replaced by "no class"
/// (`null`) with probability `class_dropout`, a Philox draw per (seed,
/// micro-batch, sample index in the whole batch): the same on every device
/// and after a resume.
fn dropped_labels(labels: &[u8], cfg: &TrainConfig, null: usize, idx: u32, first: usize) -> Vec<usize> {
    let threshold = philox::dropout_threshold(cfg.class_dropout as f32);
    labels
        .iter()
        .enumerate()
        .map(|(j, &l)| {
            let j = (first + j) as u64;
            let word = philox::bits(cfg.seed ^ CLASS_DROPOUT_SALT, idx, CLASS_DROPOUT_STREAM, j);
            if philox::keep(word, threshold) {
                l as usize
            } else {
                null
            }
        })
        .collect()
}

/// Which samples of each batch this trainer takes: `[rank * n / world,
/// (rank + 1) * n / world)` (the whole batch alone).
#[derive(Clone, Copy, Debug)]
struct Shard {
    rank: usize,
    world: usize,
}

/// The host values of a micro-batch, before they reach a device.
struct HostValues {
    images: Vec<f32>,
    shape: [usize; 4],
    ts: Vec<usize>,
    a: Vec<f64>,
    b: Vec<f64>,
    sqrt_w: Option<Vec<f64>>,
    labels: Option<Vec<usize>>,
    first: usize,
    /// The loader's state before this batch (what a checkpoint saves while
    /// it is prefetched).
    state: LoaderState,
}

/// The shard's values of the next batch. Every rank follows the whole
/// batch's data order but copies (and flips) only its own samples' images
/// and draws only their timesteps, each the value of its index in the
/// whole batch, so a shard sees exactly what one device would for those
/// samples at 1/world of the host work.
fn host_values(loader: &mut Loader, cfg: &TrainConfig, diffusion: &Diffusion, idx: u32, shard: Shard) -> HostValues {
    let n = loader.config().batch_size;
    let local = n / shard.world.max(1);
    let first = shard.rank * local;
    let part = first..first + local;
    let batch = loader.next_batch_part(part.clone());
    let ts = cfg.timestep_sampling.draw_part(diffusion.timesteps, n, part, cfg.seed, idx, TIMESTEP_STREAM);
    let (images, labels) = (batch.images, batch.labels);
    let (a, b) = diffusion.noise_coefficients(&ts);
    let sqrt_w = (cfg.loss_weighting != LossWeighting::None).then(|| {
        let w = cfg.loss_weighting;
        ts.iter().map(|&t| w.weight(cfg.target, diffusion.abar(t as isize)).sqrt()).collect()
    });
    let shape = [ts.len(), batch.shape[1], batch.shape[2], batch.shape[3]];
    // a conditional model's null class is its last embedding row
    let labels = match cfg.model.is_conditional() {
        true => labels.map(|l| dropped_labels(&l, cfg, cfg.model.num_classes, idx, first)),
        false => None,
    };
    HostValues { images, shape, ts, a, b, sqrt_w, labels, first, state: batch.state }
}

/// Prepares micro-batches for one device; on a GPU through pinned staging
/// buffers, the next one prefetched.
pub struct StepInputs {
    device: Device,
    shard: Shard,
    staging: Option<Staging>,
}

struct Staging {
    /// Two pinned buffers used in turn: one is filled while the other's copy may still be queued.
    pinned: [PinnedBuffer; 2],
    turn: usize,
    /// The fixed device buffer and its views: x0, t, a, b, sqrt_w, labels.
    _whole: Tensor,
    views: Vec<Tensor>,
    offsets: Vec<usize>,
    /// Which views hold sqrt_w and the labels.
    sqrt_w_view: Option<usize>,
    labels_view: Option<usize>,
    /// The micro-batch already copied into the device buffer.
    ready: Option<Ready>,
}

struct Ready {
    idx: u32,
    ts: Vec<usize>,
    labels: Option<Vec<usize>>,
    first: usize,
    state: LoaderState,
}

impl StepInputs {
    /// Inputs of micro-batches of `[C, H, W]` images on `device`, for rank
    /// `rank_world.0` of `rank_world.1` (its shard of each batch).
    pub fn new(device: &Device, cfg: &TrainConfig, chw: [usize; 3], rank_world: (usize, usize)) -> Result<StepInputs> {
        let shard = Shard { rank: rank_world.0, world: rank_world.1.max(1) };
        let Device::Gpu(g) = device else { return Ok(StepInputs { device: device.clone(), shard, staging: None }) };
        let n = cfg.batch_size / shard.world;
        let mut shapes: Vec<Shape> = vec![vec![n, chw[0], chw[1], chw[2]].into()];
        shapes.extend([vec![n].into(), vec![n].into(), vec![n].into()]); // t, a, b
        let mut sqrt_w_view = None;
        if cfg.loss_weighting != LossWeighting::None {
            sqrt_w_view = Some(shapes.len());
            shapes.push(vec![n].into());
        }
        let mut labels_view = None;
        if cfg.model.is_conditional() {
            labels_view = Some(shapes.len());
            shapes.push(vec![n].into());
        }
        let lens: Vec<usize> = shapes.iter().map(Shape::numel).collect();
        let (offsets, total) = GpuStorage::view_offsets(&lens);
        let Some((whole, views)) = ops::flat_zeros(&shapes, device)? else {
            return Ok(StepInputs { device: device.clone(), shard, staging: None });
        };
        let pinned = [PinnedBuffer::new(g, total)?, PinnedBuffer::new(g, total)?];
        let staging = Staging { pinned, turn: 0, _whole: whole, views, offsets, sqrt_w_view, labels_view, ready: None };
        Ok(StepInputs { device: device.clone(), shard, staging: Some(staging) })
    }

    /// The inputs of micro-batch `idx` (the prefetched ones when they are
    /// for `idx`; a prefetch for another index is undone first).
    pub fn take(
        &mut self,
        idx: u32,
        loader: &mut Loader,
        cfg: &TrainConfig,
        diffusion: &Diffusion,
    ) -> Result<MicroBatch> {
        let Some(st) = self.staging.as_mut() else {
            return on_cpu(host_values(loader, cfg, diffusion, idx, self.shard), &self.device);
        };
        if let Some(r) = st.ready.take_if(|r| r.idx != idx) {
            loader.set_state(r.state)?; // the loader gives that batch again
        }
        if st.ready.is_none() {
            st.stage(idx, host_values(loader, cfg, diffusion, idx, self.shard))?;
        }
        let r = st.ready.take().ok_or_else(|| crate::Error::Config("no staged micro-batch".into()))?;
        let v = &st.views;
        let labels_at = match (st.labels_view, &r.labels) {
            (Some(k), Some(_)) => Some(gpu_ptr(&v[k])?),
            _ => None,
        };
        Ok(MicroBatch {
            x0: v[0].clone(),
            t: v[1].clone(),
            a: v[2].clone(),
            b: v[3].clone(),
            sqrt_w: st.sqrt_w_view.map(|k| v[k].clone()),
            ts: r.ts,
            labels: r.labels,
            labels_at,
            first: r.first,
        })
    }

    /// Prepares micro-batch `idx` and queues its copy (a GPU only; the
    /// caller has queued every kernel reading the current inputs and keeps
    /// none of their tensors).
    pub fn prefetch(&mut self, idx: u32, loader: &mut Loader, cfg: &TrainConfig, diffusion: &Diffusion) -> Result<()> {
        if let Some(st) = self.staging.as_mut() {
            if st.ready.is_none() {
                st.stage(idx, host_values(loader, cfg, diffusion, idx, self.shard))?;
            }
        }
        Ok(())
    }

    /// The loader's state as a checkpoint must save it: before a prefetched batch.
    pub fn loader_state(&self, loader: &Loader) -> LoaderState {
        self.staging.as_ref().and_then(|s| s.ready.as_ref()).map_or(loader.state(), |r| r.state)
    }
}

impl Staging {
    fn stage(&mut self, idx: u32, h: HostValues) -> Result<()> {
        let buf = &mut self.pinned[self.turn];
        self.turn ^= 1;
        let total = buf.len();
        let out = buf.write()?;
        let o = &self.offsets;
        let n = h.ts.len();
        out[o[0]..o[0] + h.images.len()].copy_from_slice(&h.images);
        for (k, &t) in h.ts.iter().enumerate() {
            out[o[1] + k] = t as f32;
            out[o[2] + k] = h.a[k] as f32;
            out[o[3] + k] = h.b[k] as f32;
        }
        if let (Some(sw), Some(v)) = (&h.sqrt_w, self.sqrt_w_view) {
            for k in 0..n {
                out[o[v] + k] = sw[k] as f32;
            }
        }
        if let (Some(l), Some(v)) = (&h.labels, self.labels_view) {
            for (k, &c) in l.iter().enumerate() {
                out[o[v] + k] = c as f32; // exact below 2^24
            }
        }
        let Storage::Gpu(dst) = self._whole.storage() else {
            return Err(crate::Error::Config("staging buffer is not on the GPU".into()));
        };
        buf.copy_to(total, dst, 0)?;
        self.ready = Some(Ready { idx, ts: h.ts, labels: h.labels, first: h.first, state: h.state });
        Ok(())
    }
}

/// The CPU path: tensors made as `Diffusion::q_sample` and `weighted_mse` make them.
fn on_cpu(h: HostValues, device: &Device) -> Result<MicroBatch> {
    let x0 = Tensor::from_vec(h.images, h.shape)?.to_device(device)?;
    let dt = x0.dtype();
    let per_sample = |v: Vec<f64>| -> Result<Tensor> {
        let n = v.len();
        Ok(Tensor::from_vec(v, [n])?.to_dtype(dt)?.to_device(device)?)
    };
    let t = Tensor::from_vec(h.ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), [h.ts.len()])?.to_device(device)?;
    let (a, b) = (per_sample(h.a)?, per_sample(h.b)?);
    let sqrt_w = h.sqrt_w.map(per_sample).transpose()?;
    Ok(MicroBatch { x0, t, a, b, sqrt_w, ts: h.ts, labels: h.labels, labels_at: None, first: h.first })
}

/// The device address of a GPU tensor's first element.
fn gpu_ptr(t: &Tensor) -> Result<u64> {
    match t.storage() {
        Storage::Gpu(g) => Ok(g.ptr()),
        Storage::Cpu(_) => Err(crate::Error::Config("a staged input is not on the GPU".into())),
    }
}
