//! What the host makes for one micro-batch — the images, their timesteps,
//! the noise coefficients sqrt(abar_t) and sqrt(1 - abar_t) and the square
//! roots of the loss weights, and for a class-conditional model the class
//! labels after class dropout — and how it reaches the device. On a GPU the
//! values are packed into pinned host memory and moved by ONE asynchronous
//! copy on the device's copy stream into one of two device buffers (slots,
//! `gpu::UploadSlots`), whose views are the step's input tensors: the next
//! micro-batch is prepared and its copy queued as soon as the current one's
//! kernels are queued, so the host loads and packs, and the copy runs,
//! while the device computes. Events order the copy after the kernels that
//! last read its slot and the kernels after the copy. A training graph
//! reads one fixed buffer instead: each step's slot is copied into it on
//! the compute stream (one device-to-device copy, outside the graph) before
//! the replay. The values are those the CPU path computes, rounded to f32
//! the same way, so the bits of a step do not change.

use crate::config::TrainConfig;
use crate::data::{Loader, LoaderState};
use crate::diffusion::{Diffusion, TIMESTEP_STREAM};
use crate::loss_weighting::LossWeighting;
use crate::Result;
use diffuse_tensor::gpu::{GpuStorage, UploadSlots};
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
    /// Two device buffers filled in turn on the copy stream: one is read by
    /// the current step while the next batch is copied into the other.
    slots: UploadSlots,
    /// Each slot's views: x0, t, a, b, sqrt_w, labels (and the whole buffer).
    views: [Vec<Tensor>; 2],
    /// For a training graph: one buffer every step's slot is copied into
    /// (on the compute stream), so the captured kernels read one address;
    /// its whole storage and views.
    fixed: Option<(GpuStorage, Vec<Tensor>)>,
    offsets: Vec<usize>,
    /// Which views hold sqrt_w and the labels.
    sqrt_w_view: Option<usize>,
    labels_view: Option<usize>,
    /// The micro-batch already copied (or queued) into a slot.
    ready: Option<Ready>,
    shapes: Vec<Shape>,
}

struct Ready {
    idx: u32,
    slot: usize,
    ts: Vec<usize>,
    labels: Option<Vec<usize>>,
    first: usize,
    state: LoaderState,
}

/// The storage of a flat GPU tensor.
fn gpu_storage(t: &Tensor) -> Result<GpuStorage> {
    match t.storage() {
        Storage::Gpu(g) => Ok(g.clone()),
        Storage::Cpu(_) => Err(crate::Error::Config("a staging buffer is not on the GPU".into())),
    }
}

impl StepInputs {
    /// Inputs of micro-batches of `[C, H, W]` images on `device`, for rank
    /// `rank_world.0` of `rank_world.1` (its shard of each batch).
    pub fn new(device: &Device, cfg: &TrainConfig, chw: [usize; 3], rank_world: (usize, usize)) -> Result<StepInputs> {
        let shard = Shard { rank: rank_world.0, world: rank_world.1.max(1) };
        if device.is_cpu() {
            return Ok(StepInputs { device: device.clone(), shard, staging: None });
        }
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
        // packed: each slot is written by one whole copy
        let (offsets, _) = GpuStorage::view_offsets(&lens);
        let (Some((whole_a, views_a)), Some((whole_b, views_b))) =
            (ops::flat_zeros_packed(&shapes, device)?, ops::flat_zeros_packed(&shapes, device)?)
        else {
            return Ok(StepInputs { device: device.clone(), shard, staging: None });
        };
        let slots = UploadSlots::new([gpu_storage(&whole_a)?, gpu_storage(&whole_b)?])?;
        let staging = Staging {
            slots,
            views: [views_a, views_b],
            fixed: None,
            offsets,
            sqrt_w_view,
            labels_view,
            ready: None,
            shapes,
        };
        Ok(StepInputs { device: device.clone(), shard, staging: Some(staging) })
    }

    /// Makes every later micro-batch's tensors views of ONE fixed device
    /// buffer (a captured training graph reads them there): each staged
    /// slot is copied into it on the compute stream when taken. A no-op on
    /// the CPU or when already on.
    pub fn use_fixed_buffer(&mut self) -> Result<()> {
        let Some(st) = self.staging.as_mut() else { return Ok(()) };
        if st.fixed.is_none() {
            if let Some((whole, views)) = ops::flat_zeros_packed(&st.shapes, &self.device)? {
                st.fixed = Some((gpu_storage(&whole)?, views));
            }
        }
        Ok(())
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
        // the compute stream waits for the slot's copy before any kernel reads it
        let slot = st.slots.acquire(r.slot)?;
        let v = match &st.fixed {
            None => &st.views[r.slot],
            Some((fixed, views)) => {
                let d = fixed.device().driver();
                d.dtod(slot.ptr(), fixed.ptr(), 4 * slot.len().min(fixed.len()))?;
                st.slots.release()?; // that copy was the slot's one reader
                views
            }
        };
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
        let o = &self.offsets;
        let (sqrt_w_view, labels_view) = (self.sqrt_w_view, self.labels_view);
        let slot = self.slots.send(|out| {
            let n = h.ts.len();
            out[o[0]..o[0] + h.images.len()].copy_from_slice(&h.images);
            for (k, &t) in h.ts.iter().enumerate() {
                out[o[1] + k] = t as f32;
                out[o[2] + k] = h.a[k] as f32;
                out[o[3] + k] = h.b[k] as f32;
            }
            if let (Some(sw), Some(v)) = (&h.sqrt_w, sqrt_w_view) {
                for k in 0..n {
                    out[o[v] + k] = sw[k] as f32;
                }
            }
            if let (Some(l), Some(v)) = (&h.labels, labels_view) {
                for (k, &c) in l.iter().enumerate() {
                    out[o[v] + k] = c as f32; // exact below 2^24
                }
            }
        })?;
        self.ready = Some(Ready { idx, slot, ts: h.ts, labels: h.labels, first: h.first, state: h.state });
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
