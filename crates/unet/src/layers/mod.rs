//! The layers of the U-Net, each with an explicit forward and a hand-written
//! backward. A training forward returns the cache its backward needs; an
//! inference forward returns only the output. Backward passes accumulate
//! parameter gradients into the `ParamStore` and return the input gradient.

mod attention;
mod basic;
mod class_embedding;
mod lora;
mod resample;
mod resnet;
mod time_embedding;

pub use attention::{AttnBlock, AttnCache};
pub use basic::{Conv2d, GroupNorm, GroupNormCache, Linear};
pub use class_embedding::ClassEmbedding;
pub use lora::{merged_weight, LoraAdapter, LoraPlan};
pub use resample::{Downsample, Upsample};
pub use resnet::{ResCache, ResnetBlock};
pub use time_embedding::{TimeEmbedding, TimeEmbeddingCache};

use crate::params::{ParamId, ParamStore};
use crate::Result;
use diffuse_tensor::{philox, DType, Device, Tensor};

/// How a forward pass runs: training (caches kept, dropout on) or inference.
#[derive(Clone, Copy, Debug)]
pub struct ForwardMode {
    pub train: bool,
    /// Seed and step of the dropout masks (Philox: the same on every device).
    pub seed: u64,
    pub step: u32,
    /// The global index of this batch's first sample: a shard of a batch
    /// (data parallelism) draws the masks the whole batch would give its
    /// samples. 0 for a whole batch.
    pub first_sample: u64,
    /// Where GPU kernels read the dropout step instead (device memory: a
    /// training graph's per-step scalars, equal to `step`; None: `step`).
    pub step_at: Option<u64>,
    /// Where GPU kernels read the class labels (f32, the null class filled
    /// in; a training graph's staged batch) instead of an upload per call.
    pub labels_at: Option<u64>,
}

impl ForwardMode {
    pub fn inference() -> Self {
        ForwardMode { train: false, seed: 0, step: 0, first_sample: 0, step_at: None, labels_at: None }
    }
    pub fn train(seed: u64, step: u32) -> Self {
        ForwardMode { train: true, seed, step, first_sample: 0, step_at: None, labels_at: None }
    }
    /// This mode with the dropout step and the labels read from device
    /// memory (see the fields).
    pub fn on_device(self, step_at: Option<u64>, labels_at: Option<u64>) -> Self {
        ForwardMode { step_at, labels_at, ..self }
    }
    /// The dropout masks' Philox step.
    pub fn philox_step(&self) -> philox::PhiloxStep {
        philox::PhiloxStep { value: self.step, at: self.step_at }
    }
    /// This mode for the shard of a batch that starts at sample `first`.
    pub fn shard(self, first: u64) -> Self {
        ForwardMode { first_sample: first, ..self }
    }
    /// The global element index of a batch activation's first element
    /// (Philox masks are drawn per element of the whole batch).
    pub fn element_offset(&self, x: &Tensor) -> u64 {
        let n = x.dims().first().copied().unwrap_or(1).max(1);
        self.first_sample * (x.numel() / n) as u64
    }
}

/// Creates parameters with the reference's initialisation: Xavier-uniform
/// weights (gain sqrt(scale)), zero biases, unit GroupNorm scales.
pub struct Builder<'a> {
    pub(crate) store: &'a mut ParamStore,
    seed: u64,
    dtype: DType,
    device: Device,
    next_dropout_stream: u32,
    lora: Option<LoraPlan<'a>>,
    /// Adapter tensors registered so far: base weights draw their Philox
    /// stream from their index among base weights, so adding adapters never
    /// changes the base's initialisation.
    adapters: usize,
}

/// Philox step reserved for initialisation, apart from any training step.
const INIT_STEP: u32 = u32::MAX;
/// Philox step of the LoRA adapters' initialisation.
const LORA_INIT_STEP: u32 = u32::MAX - 1;

impl<'a> Builder<'a> {
    pub(crate) fn new(
        store: &'a mut ParamStore,
        seed: u64,
        dtype: DType,
        device: Device,
        lora: Option<LoraPlan<'a>>,
    ) -> Self {
        Builder { store, seed, dtype, device, next_dropout_stream: 0, lora, adapters: 0 }
    }

    fn put(&mut self, name: String, shape: Vec<usize>, data: Vec<f32>) -> Result<ParamId> {
        let t = Tensor::from_vec(data, shape)?.to_dtype(self.dtype)?.to_device(&self.device)?;
        Ok(self.store.add(name, t, false))
    }

    fn put_adapter(&mut self, name: String, shape: Vec<usize>, data: Vec<f32>) -> Result<ParamId> {
        let t = Tensor::from_vec(data, shape)?.to_dtype(self.dtype)?.to_device(&self.device)?;
        self.adapters += 1;
        Ok(self.store.add(name, t, true))
    }

    /// An adapter tensor uniform in (-bound, bound).
    pub fn adapter_uniform(&mut self, name: String, shape: Vec<usize>, bound: f64) -> Result<ParamId> {
        let stream = self.store.len() as u32;
        let n: usize = shape.iter().product();
        let data = (0..n as u64)
            .map(|i| {
                let u = philox::uniform_open(philox::bits(self.seed, LORA_INIT_STEP, stream, i)) as f64;
                ((2.0 * u - 1.0) * bound) as f32
            })
            .collect();
        self.put_adapter(name, shape, data)
    }

    pub fn adapter_zeros(&mut self, name: String, shape: Vec<usize>) -> Result<ParamId> {
        let n = shape.iter().product();
        self.put_adapter(name, shape, vec![0.0; n])
    }

    /// The LoRA rank and alpha for the layer `name`, when the plan targets it.
    pub(crate) fn lora_for(&self, name: &str) -> Option<(usize, f64)> {
        self.lora.filter(|p| (p.targets)(name)).map(|p| (p.rank, p.alpha))
    }

    /// Xavier-uniform with gain sqrt(scale) (TF's variance_scaling fan_avg
    /// uniform); scale 0 means "near zero" as the reference does (1e-10).
    pub fn xavier(
        &mut self,
        name: String,
        shape: Vec<usize>,
        fan_in: usize,
        fan_out: usize,
        scale: f64,
    ) -> Result<ParamId> {
        let gain = if scale > 0.0 { scale } else { 1e-10 }.sqrt();
        let bound = gain * (6.0 / (fan_in + fan_out) as f64).sqrt();
        let stream = (self.store.len() - self.adapters) as u32;
        let n: usize = shape.iter().product();
        let data = (0..n as u64)
            .map(|i| {
                let u = philox::uniform_open(philox::bits(self.seed, INIT_STEP, stream, i)) as f64;
                ((2.0 * u - 1.0) * bound) as f32
            })
            .collect();
        self.put(name, shape, data)
    }

    /// Normal with standard deviation `std` (torch.nn.Embedding's N(0, 1)).
    pub fn normal(&mut self, name: String, shape: Vec<usize>, std: f64) -> Result<ParamId> {
        let stream = (self.store.len() - self.adapters) as u32;
        let n: usize = shape.iter().product();
        let data =
            (0..n as u64).map(|i| (philox::normal(self.seed, INIT_STEP, stream, i) as f64 * std) as f32).collect();
        self.put(name, shape, data)
    }

    pub fn constant(&mut self, name: String, shape: Vec<usize>, value: f32) -> Result<ParamId> {
        let n = shape.iter().product();
        self.put(name, shape, vec![value; n])
    }

    pub(crate) fn dropout_stream(&mut self) -> u32 {
        self.next_dropout_stream += 1;
        self.next_dropout_stream
    }
}
