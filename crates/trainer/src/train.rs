//! The training loop and its run directory:
//!
//! ```text
//! <out>/config.json        the resolved TrainConfig
//! <out>/metrics.jsonl      one JSON line per logged step
//! <out>/checkpoints/       ckpt-<step>.safetensors, the newest K kept
//! <out>/samples/           DDIM sample grids (EMA weights) every N steps
//! <out>/loss.png           the loss curve, redrawn at every log
//! <out>/lock               the advisory lock of the one process writing here
//! ```

use crate::checkpoint::{self, Checkpoint, TrainState};
use crate::config::TrainConfig;
use crate::data::{Dataset, Loader, LoaderConfig};
use crate::diffusion::Diffusion;
use crate::divergence::LossWatch;
use crate::finetune;
use crate::flat_state::{flatten_training_state, FlatState};
use crate::grad_buckets::{bucket_elems_from_env, GradBuckets, OverlapReport};
use crate::image_grid::save_grid;
use crate::loss_weighting::weighted_mse_sqrt;
use crate::memory_budget::{self, MemoryBudget};
use crate::optim::{warmup_lr, AdamW, Ema};
use crate::plot::{save_loss_plot, PlotOptions};
use crate::raster::ValueRange;
use crate::run_lock::RunLock;
use crate::sampler::{sample, SampleSpec, Sampler};
use crate::step_inputs::{MicroBatch, StepInputs};
use crate::step_log::{StepLog, StepRecord};
use crate::step_scalars::{ScalarValues, StepScalars};
use crate::{Error, Result};
use diffuse_tensor::comm::Communicator;
use diffuse_tensor::gpu::GpuGraph;
use diffuse_tensor::ops::AdamWParams;
use diffuse_tensor::philox::PhiloxStep;
use diffuse_tensor::{ops, Device, Tensor};
use diffuse_unet::atomic_file::write_atomic;
use diffuse_unet::{ForwardMode, UNet, UNetConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// One logged step.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub images_per_s: f64,
}

/// Receives progress from the loop (the command line draws a progress bar).
pub trait Observer {
    fn start(&mut self, _first_step: u64, _total_steps: u64) {}
    fn step(&mut self, _m: &StepMetrics) {}
    fn message(&mut self, _msg: &str) {}
    /// Asked after every step (once it is logged, checkpointed and
    /// sampled): true ends the run there with a checkpoint (a signal).
    fn should_stop(&mut self, _step: u64) -> bool {
        false
    }
}

/// An observer that prints nothing.
pub struct Silent;
impl Observer for Silent {}

/// Where a run starts from.
#[derive(Clone)]
pub enum Start {
    Fresh,
    /// Continue a run exactly where its checkpoint stopped.
    Resume(Resume),
    /// Start a new run from a checkpoint's weights (fresh optimiser).
    FineTune {
        checkpoint: PathBuf,
        /// The model the user asked for: must be the checkpoint's (up to dropout).
        model: Option<UNetConfig>,
        /// A new dropout probability.
        dropout: Option<f32>,
        /// The noise process the user asked for; what is None is the
        /// checkpoint's (its model learnt that schedule, T and target).
        noise: NoiseChoice,
    },
}

/// Explicit choices of the noise process (`--schedule`, `--timesteps`,
/// `--target`); None keeps what the run or checkpoint has.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoiseChoice {
    pub schedule: Option<crate::diffusion::Schedule>,
    pub timesteps: Option<usize>,
    pub target: Option<crate::diffusion::Target>,
}

/// How to resume: the run's own settings win, except for these.
#[derive(Clone)]
pub struct Resume {
    /// A checkpoint file, or a run directory (its newest checkpoint).
    pub checkpoint: PathBuf,
    /// Read the data from a new path.
    pub data: Option<PathBuf>,
    /// A new total step count (default: the run's own).
    pub steps: Option<u64>,
    /// A new divergence factor.
    pub divergence_factor: Option<f64>,
    /// When the newest checkpoint is damaged, take the newest good one.
    pub last_good: bool,
    /// The model the user asked for: must be the run's (up to dropout).
    pub model: Option<UNetConfig>,
}

impl Resume {
    pub fn new(checkpoint: PathBuf) -> Self {
        Resume { checkpoint, data: None, steps: None, divergence_factor: None, last_good: false, model: None }
    }
}

pub struct RunSummary {
    pub out: PathBuf,
    pub steps_done: u64,
    /// The last step's loss; none when this call trained no step (a resume
    /// of a run that had already reached its step count).
    pub last_loss: Option<f64>,
    pub last_checkpoint: Option<PathBuf>,
    /// The observer asked to stop before the last step (a signal).
    pub interrupted: bool,
    /// The step count the run trains to.
    pub steps_total: u64,
}

/// Most training steps whose loss and gradient norm wait on the device
/// before the loop reads them (a larger `--log-every` reads this often).
const MAX_UNREAD_STEPS: u64 = 1024;

/// Philox salt of the dropout masks, apart from the noise and timesteps.
const DROPOUT_SALT: u64 = 0x5eed_d409;

/// Where a run is with its training graph.
enum GraphState {
    /// Eager steps.
    Off,
    /// The next step runs eagerly, the one after is captured.
    Warmup,
    Capture,
    Replay(GpuGraph),
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub model: UNet,
    pub ema: Ema,
    pub opt: AdamW,
    pub loader: Loader,
    pub diffusion: Diffusion,
    pub step: u64,
    pub out: PathBuf,
    device: Device,
    history: Vec<(u64, f64)>,
    loss_watch: LossWatch,
    /// Losses and gradient norms of the steps not yet read (on the device).
    log: StepLog,
    /// The newest step read from `log`.
    last: Option<StepRecord>,
    /// On a GPU: parameters, gradients, moments and EMA in flat buffers.
    flat: Option<FlatState>,
    /// The micro-batches' inputs (pinned staging and prefetch on a GPU).
    inputs: StepInputs,
    /// What changes between steps, in device memory (GPU only).
    scalars: Option<StepScalars>,
    /// Whether the steps run as a captured graph (`use_graph`).
    graph: GraphState,
    /// Things the user should know about how the run was opened (an
    /// unverified or skipped checkpoint, removed temporary files).
    pub notes: Vec<String>,
    /// The data-parallel group this trainer is one rank of (None: alone).
    comm: Option<Arc<dyn Communicator>>,
    /// Its gradient buckets, all-reduced while the backward goes on.
    buckets: Option<GradBuckets>,
    /// Held by the rank that writes the run directory (rank 0).
    _lock: Option<RunLock>,
}

impl Trainer {
    /// Builds a run: locks the run directory, loads the data, builds or
    /// restores the model, and prepares the directory (nothing in it is
    /// overwritten but the config, metrics and plot; temporary files of
    /// interrupted writes are removed). Nothing is created before the
    /// configuration and the data have been checked.
    pub fn new(cfg: TrainConfig, start: Start, out: PathBuf, device: Device) -> Result<Trainer> {
        Self::new_rank(cfg, start, out, device, None)
    }

    /// [`Trainer::new`] for one rank of a data-parallel group (see
    /// `crate::data_parallel`): the global batch `cfg.batch_size` is split
    /// evenly over the ranks; only rank 0 locks and writes the run directory.
    pub fn new_rank(
        mut cfg: TrainConfig,
        start: Start,
        out: PathBuf,
        device: Device,
        comm: Option<Arc<dyn Communicator>>,
    ) -> Result<Trainer> {
        let mut notes = Vec::new();
        let writer = comm.as_ref().is_none_or(|c| c.rank() == 0);
        // A resumed run's directory exists: lock it before reading its checkpoints.
        let early_lock = match &start {
            Start::Resume(_) if writer => Some(RunLock::acquire(&out)?),
            _ => None,
        };
        let ckpt = match &start {
            Start::Fresh => None,
            Start::Resume(r) => {
                let (c, skipped) = checkpoint::open_for_resume(&r.checkpoint, r.last_good)?;
                notes.extend(skipped);
                Some(c)
            }
            Start::FineTune { checkpoint: p, .. } => Some(Checkpoint::open(p)?),
        };
        if let Some(c) = ckpt.as_ref().filter(|c| !c.verified) {
            notes.push(format!(
                "{} has no checksums (written by an older diffuse): its values were checked to be finite, \
                 not verified against corruption",
                c.path.display()
            ));
        }
        if let (Start::Resume(r), Some(c)) = (&start, &ckpt) {
            if let Some(want) = &r.model {
                check_same_model(want, c, "a resumed run keeps its own model")?;
            }
            // The run's own settings win; only the length, the data's
            // location and the divergence factor may change.
            let steps = r.steps.unwrap_or(c.train_config.steps);
            if steps < c.state.step {
                // A run never goes back: say so rather than quietly keep the larger count.
                notes.push(format!(
                    "--steps {steps} is below the checkpoint's step {}: the run keeps its {} steps \
                     (to train from an earlier point, resume that checkpoint's file)",
                    c.state.step, c.state.step
                ));
            }
            cfg = TrainConfig {
                steps: steps.max(c.state.step),
                data: r.data.clone().unwrap_or_else(|| c.train_config.data.clone()),
                divergence_factor: r.divergence_factor.unwrap_or(c.train_config.divergence_factor),
                ..c.train_config.clone()
            };
        }
        if let (Start::FineTune { model, dropout, noise, .. }, Some(c)) = (&start, &ckpt) {
            // The weights predict the checkpoint's target under its schedule:
            // training them on another would silently start over.
            let base = &c.train_config;
            cfg.schedule = noise.schedule.unwrap_or(base.schedule);
            cfg.timesteps = noise.timesteps.unwrap_or(base.timesteps);
            cfg.target = noise.target.unwrap_or(base.target);
            cfg.sample_ddim_steps = cfg.sample_ddim_steps.min(cfg.timesteps);
            // Fine-tuning keeps the checkpoint's architecture; only dropout may change.
            let mut m = c.model_config().clone();
            if let Some(want) = model {
                check_same_model(want, c, "fine-tuning keeps the checkpoint's architecture")?;
                m.dropout = want.dropout;
            }
            if let Some(p) = dropout {
                m.dropout = *p;
            }
            cfg.model = m;
        }
        cfg.validate()?;
        if let Some(c) = &comm {
            let world = c.world_size();
            if !cfg.batch_size.is_multiple_of(world) {
                return Err(Error::Config(format!(
                    "the batch size {} does not split evenly over {world} devices: use a multiple of {world}",
                    cfg.batch_size
                )));
            }
        }
        let need = memory_budget::training_need(&cfg, device.is_cpu())?;
        MemoryBudget::global()?.check("training this model", &need)?;
        let mut dataset = Dataset::open(&cfg.data, cfg.model.in_ch, cfg.model.image_size)?;
        if cfg.conditional || cfg.model.is_conditional() {
            condition_on_classes(&mut cfg, &dataset)?;
        }
        if !cfg.labels.is_empty() {
            dataset = dataset.with_labels(&cfg.labels)?;
        }
        if dataset.len() < cfg.batch_size {
            return Err(Error::Config(format!(
                "batch size {} is larger than the dataset ({} images)",
                cfg.batch_size,
                dataset.len()
            )));
        }
        let loader_cfg = LoaderConfig::new(cfg.batch_size, cfg.seed).with_hflip(cfg.hflip);
        let mut loader = Loader::new(dataset, loader_cfg)?;
        let diffusion = Diffusion::new(cfg.schedule, cfg.timesteps, cfg.target)?;
        let hyper = AdamWParams {
            lr: cfg.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.adam_eps,
            weight_decay: cfg.weight_decay,
        };

        let (mut model, mut ema, mut opt, step) = match (&start, &ckpt) {
            (Start::Resume(_), Some(c)) => {
                let model = c.load_model(&device, false)?;
                let mut ema = Ema::new(&model.params, cfg.ema_decay, cfg.ema_warmup)?;
                let mut opt = AdamW::new(&model.params, hyper)?;
                c.load_training_state(&model, &mut ema, &mut opt)?;
                loader.set_state(c.state.loader)?;
                (model, ema, opt, c.state.step)
            }
            (Start::FineTune { .. }, Some(c)) => {
                let model = finetune::init_from(&mut cfg, c, &device)?;
                let ema = Ema::new(&model.params, cfg.ema_decay, cfg.ema_warmup)?;
                let opt = AdamW::new(&model.params, hyper)?;
                (model, ema, opt, 0)
            }
            _ => {
                let model = finetune::fresh_model(&cfg, &device)?;
                let ema = Ema::new(&model.params, cfg.ema_decay, cfg.ema_warmup)?;
                let opt = AdamW::new(&model.params, hyper)?;
                (model, ema, opt, 0)
            }
        };
        opt.lr_scale = finetune::lr_scales(&model, &cfg)?;
        let flat = flatten_training_state(&device, &mut model.params, &mut opt, &mut ema)?;

        let loss_watch = match (&start, &ckpt) {
            (Start::Resume(_), Some(c)) => c.state.loss_watch,
            _ => LossWatch::default(),
        };

        // Only the writing rank touches the run directory.
        let (lock, history) = if writer {
            let lock = match early_lock {
                Some(l) => l,
                None => RunLock::acquire(&out)?,
            };
            let removed = lock.remove_stale_temp_files()?;
            if !removed.is_empty() {
                notes.push(format!("removed {} temporary file(s) left by an interrupted write", removed.len()));
            }
            for sub in ["checkpoints", "samples"] {
                let d = out.join(sub);
                std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            }
            write_atomic(&out.join("config.json"), cfg.to_json().as_bytes())?;
            (Some(lock), restore_metrics(&out.join("metrics.jsonl"), step)?)
        } else {
            (None, Vec::new())
        };
        let log = StepLog::new(&device, cfg.grad_accum, cfg.log_every.clamp(1, MAX_UNREAD_STEPS) as usize)?;
        let chw = [cfg.model.in_ch, cfg.model.image_size, cfg.model.image_size];
        let inputs = StepInputs::new(&device, &cfg, chw, comm.as_ref().map_or((0, 1), |c| (c.rank(), c.world_size())))?;
        let adamw_tensors = model.params.ids().filter(|&id| model.params.is_trainable(id)).count();
        let scalars = StepScalars::new(&device, cfg.grad_accum, adamw_tensors)?;
        let buckets = comm.clone().map(|c| GradBuckets::new(c, &model.params, bucket_elems_from_env(), true));
        Ok(Trainer {
            buckets,
            log,
            scalars,
            graph: GraphState::Off,
            last: None,
            flat,
            inputs,
            cfg,
            model,
            ema,
            opt,
            loader,
            diffusion,
            step,
            out,
            device,
            history,
            loss_watch,
            notes,
            comm,
            _lock: lock,
        })
    }

    /// This trainer's rank and the group's size ((0, 1) alone).
    pub fn rank_and_world(&self) -> (usize, usize) {
        self.comm.as_ref().map_or((0, 1), |c| (c.rank(), c.world_size()))
    }

    /// Whether this trainer writes the run directory (rank 0).
    pub fn is_writer(&self) -> bool {
        self.rank_and_world().0 == 0
    }

    /// One optimiser step (with `grad_accum` micro-batches). Nothing waits
    /// for the device: the loss and the gradient norm stay in the step log
    /// until [`Trainer::read_log`] (the loop reads it on log, checkpoint and
    /// sample steps, and when it is full), which is also where a diverged
    /// step is reported.
    ///
    /// In a data-parallel group every rank follows the global batch's data
    /// order but loads only its shard of samples `[rank * b, (rank + 1) *
    /// b)` with `b = batch / world`, and draws the noise, timesteps, dropout
    /// masks and class dropout of those global sample indices; its loss
    /// gradient is scaled by `1 / world`, so the sum of the ranks' gradients
    /// (the bucketed all-reduce, started during the step's last backward:
    /// `grad_buckets`) is the global batch's mean gradient, and every rank
    /// takes the same optimiser step.
    pub fn train_step(&mut self) -> Result<()> {
        let accum = self.cfg.grad_accum;
        let (rank, _) = self.rank_and_world();
        check_injected_failure(rank, self.step + 1)?;
        let lr = warmup_lr(self.cfg.lr, self.cfg.warmup_steps, self.step + 1);
        let first_idx = (self.step * accum as u64) as u32;
        self.write_step_scalars(lr)?;
        let graph = std::mem::replace(&mut self.graph, GraphState::Off);
        self.graph = match graph {
            GraphState::Replay(g) => {
                drop(self.inputs.take(first_idx, &mut self.loader, &self.cfg, &self.diffusion)?);
                g.replay()?;
                self.opt.step += 1;
                self.ema.updates += 1;
                self.log.replayed();
                GraphState::Replay(g)
            }
            GraphState::Capture => {
                let g = self.scalars.as_ref().map(|s| s.gpu()).transpose()?;
                let g = g.ok_or_else(|| Error::Config("a training graph needs a GPU".into()))?;
                let mb = self.inputs.take(first_idx, &mut self.loader, &self.cfg, &self.diffusion)?;
                self.model.params.zero_grads();
                g.begin_capture()?;
                let work = self.micro_batch(mb, first_idx, 0).and_then(|()| self.update(lr));
                let graph = g.end_capture();
                work?;
                GraphState::Replay(graph?)
            }
            state => {
                self.model.params.zero_grads();
                for micro in 0..accum {
                    let idx = first_idx + micro as u32;
                    let mb = self.inputs.take(idx, &mut self.loader, &self.cfg, &self.diffusion)?;
                    self.micro_batch(mb, idx, micro)?;
                    // the next micro-batch is loaded and its copy queued while the device works
                    if micro + 1 < accum {
                        self.inputs.prefetch(idx + 1, &mut self.loader, &self.cfg, &self.diffusion)?;
                    }
                }
                self.update(lr)?;
                match state {
                    GraphState::Warmup => GraphState::Capture,
                    s => s,
                }
            }
        };
        // the next step's first micro-batch: its copy runs on the copy stream beside this step's work
        let next = first_idx + accum as u32;
        self.inputs.prefetch(next, &mut self.loader, &self.cfg, &self.diffusion)?;
        self.step += 1;
        self.log.finish_step(self.step, lr);
        if self.log.is_full() {
            self.read_log()?;
        }
        Ok(())
    }

    /// Writes this step's scalars (Philox steps, EMA factors, log row,
    /// AdamW constants) with one copy queued ahead of its work (GPU only).
    fn write_step_scalars(&mut self, lr: f64) -> Result<()> {
        let Some(sc) = self.scalars.as_mut() else { return Ok(()) };
        let accum = self.cfg.grad_accum as u64;
        let philox = (0..accum).map(|m| (self.step * accum + m) as u32).collect();
        let hypers = self.opt.hypers_for(&self.model.params, lr);
        sc.write(ScalarValues {
            philox,
            ema: ops::ema_factors(self.ema.effective_decay()),
            log_row: self.log.next_row(),
            adamw: ops::adamw_consts_words(&hypers, self.opt.step + 1),
        })
    }

    /// The forward and backward of one micro-batch (its loss recorded).
    fn micro_batch(&mut self, mb: MicroBatch, idx: u32, micro: usize) -> Result<()> {
        let (accum, world) = (self.cfg.grad_accum, self.rank_and_world().1);
        let step_at = self.scalars.as_ref().and_then(|s| s.philox_at(micro));
        let step = PhiloxStep { value: idx, at: step_at };
        // this shard's noise, dropout masks and class dropout are the batch's own for its samples
        let first = mb.first;
        let per_sample = (mb.x0.numel() / mb.ts.len().max(1)) as u64;
        let (x_t, eps) =
            self.diffusion.q_sample_with(&mb.x0, &mb.a, &mb.b, self.cfg.seed, step, first as u64 * per_sample)?;
        let target = self.diffusion.target_of_with(&mb.x0, &eps, &mb.a, &mb.b)?;
        let mode =
            ForwardMode::train(self.cfg.seed ^ DROPOUT_SALT, idx).shard(first as u64).on_device(step_at, mb.labels_at);
        if self.model.null_class().is_some() && mb.labels.is_none() {
            return Err(Error::Config("a class-conditional model needs labelled data".into()));
        }
        let (pred, cache) = self.model.forward_train_cond(&x_t, &mb.t, mb.labels.as_deref(), mode)?;
        let dloss = 1.0 / (accum * world) as f64;
        let (mut loss, dpred) = weighted_mse_sqrt(&pred, &target, mb.sqrt_w.as_ref(), dloss)?;
        if let Some(c) = &self.comm {
            // the loss itself is the shard's plain mean: the batch's is their mean
            c.all_reduce_sum(&mut [&mut loss])?;
            diffuse_tensor::ops::scale_in_place(&mut loss, 1.0 / world as f64)?;
        }
        self.log.record_loss(micro, &loss)?;
        drop(pred);
        match self.buckets.as_mut().filter(|_| micro + 1 == accum) {
            // the step's last backward starts each bucket once its gradients are final
            Some(buckets) => {
                if let Err(e) = self.model.backward_with(&cache, &dpred, buckets) {
                    return Err(buckets.take_failure().map_or_else(|| e.into(), Error::Comm));
                }
            }
            None => self.model.backward(&cache, &dpred)?,
        }
        drop((mb, cache, target));
        Ok(())
    }

    /// The optimiser's half of a step: gradients summed over the ranks and
    /// settled in their flat buffer, clipped, AdamW and the EMA.
    fn update(&mut self, lr: f64) -> Result<()> {
        if let Some(b) = &mut self.buckets {
            b.finish(&mut self.model.params)?; // the sums over the ranks
        }
        self.model.params.settle_grads()?; // into the flat gradient buffer (GPU)
        let row_at = self.scalars.as_ref().map(|s| s.log_row_at());
        self.log.clip(&mut self.model.params, self.cfg.grad_clip, row_at)?;
        let consts_at = self.scalars.as_ref().map(|s| s.adamw_at());
        self.opt.step_at(&mut self.model.params, lr, consts_at)?;
        self.ema.update_at(&self.model.params, self.scalars.as_ref().map(|s| s.ema_at()))?;
        self.model.params.zero_grads();
        Ok(())
    }

    /// Runs the following training steps as a CUDA graph (`train --graph`):
    /// the next step runs eagerly (memory and tables settle), the one after
    /// is captured, and every later step replays it after one copy of the
    /// step scalars (and the batch's). Where a graph cannot hold the step,
    /// the run stays eager and the returned line says why.
    pub fn use_graph(&mut self) -> Option<String> {
        let why = if self.scalars.is_none() {
            Some("the CPU runs no graphs")
        } else if self.cfg.grad_accum > 1 {
            Some("gradient accumulation copies each micro-batch between its kernels")
        } else if self.comm.is_some() {
            Some("the all-reduce of several GPUs is not captured")
        } else {
            None
        };
        let why = match why {
            Some(why) => Some(why.to_string()),
            // the graph reads the batch at one address: each step's slot is copied there
            None => self.inputs.use_fixed_buffer().err().map(|e| e.to_string()),
        };
        match why {
            Some(why) => Some(format!("training without a CUDA graph: {why}")),
            None => {
                self.graph = GraphState::Warmup;
                None
            }
        }
    }

    /// Kernel launches inside the captured training graph, once there is one.
    pub fn graph_launches(&self) -> Option<usize> {
        match &self.graph {
            GraphState::Replay(g) => Some(g.launches()),
            _ => None,
        }
    }

    /// Cuts the gradients into buckets of at most `max_elems` f32 (default
    /// 16 MiB, or `DIFFUSE_BUCKET_MB`), started during the backward
    /// (`overlap`, the default) or all after it; the sums are the same bits
    /// either way. A no-op alone.
    pub fn set_grad_buckets(&mut self, max_elems: usize, overlap: bool) {
        if let Some(c) = &self.comm {
            self.buckets = Some(GradBuckets::new(c.clone(), &self.model.params, max_elems.max(1), overlap));
        }
    }

    /// When each gradient bucket of the last step was started (None alone).
    pub fn overlap_report(&self) -> Option<&OverlapReport> {
        self.buckets.as_ref().map(GradBuckets::report)
    }

    /// Rank 0's answer to "stop here?", shared with every rank.
    fn agree_to_stop(&self, stop: bool) -> Result<bool> {
        let Some(c) = &self.comm else {
            return Ok(stop);
        };
        let mut flag = Tensor::from_vec(vec![f32::from(u8::from(stop))], [1])?.to_device(&self.device)?;
        c.broadcast(&mut [&mut flag], 0)?;
        Ok(flag.to_vec_f32()?.first().is_some_and(|&v| v != 0.0))
    }

    /// The flat gradient buffer (one allocation holding every gradient; GPU
    /// only), e.g. for an all-reduce between data-parallel replicas: it holds
    /// the step's gradients once `ParamStore::settle_grads` has run (in
    /// `train_step`, after the backward passes, before clipping).
    pub fn flat_grads(&mut self) -> Option<&mut Tensor> {
        self.flat.as_mut().map(|f| &mut f.grads)
    }

    /// Reads the steps logged since the last read (one host synchronisation
    /// on a GPU) and checks each in order as the step itself used to: a
    /// loss the divergence watch rejects, or a non-finite gradient norm, is
    /// [`Error::Diverged`] naming that step. Returns the newest step.
    pub fn read_log(&mut self) -> Result<Option<StepRecord>> {
        for r in self.log.read()? {
            if let Some(reason) = self.loss_watch.check(r.loss, self.cfg.divergence_factor) {
                return Err(Error::Diverged { step: r.step, reason, kept: String::new() });
            }
            if !r.grad_norm.is_finite() {
                let reason = format!("the gradient norm is {}", r.grad_norm);
                return Err(Error::Diverged { step: r.step, reason, kept: String::new() });
            }
            self.loss_watch.update(r.loss);
            self.last = Some(r);
        }
        Ok(self.last)
    }

    fn state(&self) -> TrainState {
        TrainState {
            step: self.step,
            loader: self.inputs.loader_state(&self.loader),
            ema_updates: self.ema.updates,
            loss_watch: self.loss_watch,
        }
    }

    /// Writes a checkpoint of the current step (the step log is read first:
    /// no checkpoint holds a diverged step, and the divergence watch saved
    /// is up to date).
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        self.read_log()?;
        let dir = self.out.join("checkpoints");
        let path = self.checkpoint_path();
        checkpoint::save(&path, &self.cfg, &self.model, &self.ema, &self.opt, self.state())?;
        checkpoint::prune(&dir, self.cfg.keep_checkpoints)?;
        Ok(path)
    }

    /// The model with the EMA weights (what sampling uses).
    pub fn ema_model(&self) -> Result<UNet> {
        let mut m = finetune::build_model(&self.cfg, 0, &self.device)?;
        self.ema.copy_to(&mut m.params)?;
        Ok(m)
    }

    /// Samples a grid with the EMA weights and writes it; an error from the
    /// write itself is [`SampleError::Write`] (training can go on without it).
    pub fn save_samples(&self) -> Result<PathBuf, SampleError> {
        let model = self.ema_model()?;
        let sampler = Sampler::Ddim { steps: self.cfg.sample_ddim_steps, eta: 0.0 };
        // A conditional model draws one row per class, guided.
        let (spec, nrow) = match model.null_class() {
            Some(classes) => {
                let per_class = (self.cfg.sample_count / classes).max(1);
                let mut spec = SampleSpec::new(per_class * classes, sampler, self.cfg.seed);
                spec.labels = Some((0..per_class * classes).map(|i| i / per_class).collect());
                spec.guidance = crate::guidance::DEFAULT_SCALE;
                (spec, per_class)
            }
            None => {
                let nrow = (self.cfg.sample_count as f64).sqrt().ceil() as usize;
                (SampleSpec::new(self.cfg.sample_count, sampler, self.cfg.seed), nrow)
            }
        };
        let s = sample(&model, &self.diffusion, &spec, |_, _| {})?;
        let path = self.out.join("samples").join(format!("step-{:08}.png", self.step));
        let shape = s.images.dims().try_into().map_err(|_| Error::Shape("samples are not 4-D".into()))?;
        let data = s.images.to_vec_f32()?;
        save_grid(&path, &data, shape, nrow, ValueRange::Signed).map_err(SampleError::Write)?;
        Ok(path)
    }

    /// The divergence error with the newest checkpoint on disk named (the
    /// run never writes one after it diverged).
    fn diverged(&self, step: u64, reason: String) -> Error {
        // Not one a longer earlier run left beyond this step (a resume from an older checkpoint).
        let newest = checkpoint::list(&self.out.join("checkpoints"))
            .ok()
            .and_then(|v| v.into_iter().rfind(|p| checkpoint::step_of(p).is_some_and(|s| s < step)));
        let kept = match newest {
            Some(p) => format!("the last checkpoint from before it is kept: {}", p.display()),
            None => "no checkpoint was written before it".to_string(),
        };
        Error::Diverged { step, reason, kept }
    }

    /// Trains until `cfg.steps` (or until the observer asks to stop),
    /// logging, checkpointing and sampling on the way; the last step always
    /// gets a checkpoint. A failed plot or sample grid is a warning.
    pub fn run(&mut self, obs: &mut dyn Observer) -> Result<RunSummary> {
        obs.start(self.step, self.cfg.steps);
        let writer = self.is_writer();
        let metrics_path = self.out.join("metrics.jsonl");
        let mut metrics = if writer {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path);
            Some(f.map_err(|e| Error::io(&metrics_path, e))?)
        } else {
            None
        };
        let mut last_ckpt = None;
        let mut timer = Instant::now();
        let mut images_since = 0usize;
        let mut interrupted = false;
        while self.step < self.cfg.steps {
            let stepped = self.train_step().and_then(|()| {
                let (step, c) = (self.step, &self.cfg);
                let every = |n: u64| n > 0 && step.is_multiple_of(n);
                let done = step == c.steps;
                let log = every(c.log_every.max(1)) || done || step == 1;
                let checkpoint = every(c.checkpoint_every) || done;
                let samples = every(c.sample_every) || (done && c.sample_every > 0);
                // Read only where something needs the values (one sync).
                let read = if log || checkpoint || samples { self.read_log()? } else { None };
                Ok((log, read))
            });
            let (log, read) = match stepped {
                Ok(r) => r,
                Err(Error::Diverged { step, reason, .. }) => return Err(self.diverged(step, reason)),
                Err(e) => return Err(e),
            };
            images_since += self.cfg.batch_size * self.cfg.grad_accum;
            let done = self.step == self.cfg.steps;
            if let (true, Some(r)) = (log, read) {
                let StepRecord { loss, grad_norm, lr, .. } = r;
                let secs = timer.elapsed().as_secs_f64();
                let m = StepMetrics {
                    step: self.step,
                    loss,
                    lr,
                    grad_norm,
                    images_per_s: images_since as f64 / secs.max(1e-9),
                };
                timer = Instant::now();
                images_since = 0;
                if let Some(metrics) = &mut metrics {
                    let line = serde_json::to_string(&m).unwrap_or_default();
                    writeln!(metrics, "{line}").map_err(|e| Error::io(&metrics_path, e))?;
                    self.history.push((m.step, m.loss));
                    let plot = self.out.join("loss.png");
                    if let Err(e) = save_loss_plot(&plot, &self.history, &PlotOptions::default()) {
                        obs.message(&format!("warning: the loss plot was not written: {e}"));
                    }
                }
                obs.step(&m);
            }
            let step = self.step;
            let every = |n: u64| n > 0 && step.is_multiple_of(n);
            if (every(self.cfg.checkpoint_every) || done) && writer {
                let p = self.save_checkpoint()?;
                obs.message(&format!("checkpoint {}", p.display()));
                last_ckpt = Some(p);
            }
            if (every(self.cfg.sample_every) || (done && self.cfg.sample_every > 0)) && writer {
                match self.save_samples() {
                    Ok(p) => obs.message(&format!("samples {}", p.display())),
                    Err(SampleError::Write(e)) => {
                        obs.message(&format!("warning: the sample grid was not written: {e}"))
                    }
                    Err(SampleError::Other(e)) => return Err(e),
                }
            }
            if !done && self.agree_to_stop(obs.should_stop(self.step))? {
                interrupted = true;
                if let Err(Error::Diverged { step, reason, .. }) = self.read_log() {
                    return Err(self.diverged(step, reason));
                }
                if writer && last_ckpt.as_ref().is_none_or(|p| *p != self.checkpoint_path()) {
                    last_ckpt = Some(self.save_checkpoint()?);
                }
                break;
            }
        }
        Ok(RunSummary {
            out: self.out.clone(),
            steps_done: self.step,
            last_loss: self.last.map(|r| r.loss),
            last_checkpoint: last_ckpt,
            interrupted,
            steps_total: self.cfg.steps,
        })
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.out.join("checkpoints").join(checkpoint::checkpoint_name(self.step))
    }
}

/// `DIFFUSE_TEST_RANK_FAIL=R@S`: rank R fails at step S (the tests' way to
/// show that one failing rank stops every rank, with its error).
fn check_injected_failure(rank: usize, step: u64) -> Result<()> {
    let Ok(spec) = std::env::var("DIFFUSE_TEST_RANK_FAIL") else {
        return Ok(());
    };
    let parsed =
        spec.split_once('@').and_then(|(r, s)| Some((r.trim().parse::<usize>().ok()?, s.trim().parse::<u64>().ok()?)));
    match parsed {
        Some((r, s)) if r == rank && s == step => {
            Err(Error::TestFailure(format!("rank {rank} failed at step {step} (DIFFUSE_TEST_RANK_FAIL={spec})")))
        }
        _ => Ok(()),
    }
}

/// Errors unless `want` is the checkpoint's model (dropout aside).
fn check_same_model(want: &UNetConfig, c: &Checkpoint, why: &str) -> Result<()> {
    let have = c.model_config();
    if (UNetConfig { dropout: have.dropout, ..want.clone() }) == *have {
        return Ok(());
    }
    Err(Error::Config(format!(
        "--config describes a different model than the checkpoint {} (config {}, checkpoint {}): {why}, so leave out --config",
        c.path.display(),
        serde_json::to_string(want).unwrap_or_default(),
        serde_json::to_string(have).unwrap_or_default()
    )))
}

/// Why [`Trainer::save_samples`] failed: writing the grid, or anything before.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Write(Error),
    #[error(transparent)]
    Other(#[from] Error),
}

impl From<diffuse_tensor::TensorError> for SampleError {
    fn from(e: diffuse_tensor::TensorError) -> Self {
        SampleError::Other(e.into())
    }
}

impl From<diffuse_unet::UNetError> for SampleError {
    fn from(e: diffuse_unet::UNetError) -> Self {
        SampleError::Other(e.into())
    }
}

/// The loss history of an earlier run up to `step`. The lines kept are
/// copied byte for byte; later lines (from a run that went past the
/// checkpoint we resume) and a torn last line are dropped from the file.
fn restore_metrics(path: &Path, step: u64) -> Result<Vec<(u64, f64)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut kept = String::new();
    let mut history = Vec::new();
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        match serde_json::from_str::<StepMetrics>(line) {
            Ok(m) if m.step <= step => {
                kept.push_str(line);
                history.push((m.step, m.loss));
            }
            _ => {}
        }
    }
    if kept != text {
        write_atomic(path, kept.as_bytes())?;
    }
    Ok(history)
}

/// Makes `cfg` class-conditional on the data's classes: a fresh
/// conditional run takes one class per class of the data; a model that
/// already has classes (a config, a checkpoint) must cover every label.
fn condition_on_classes(cfg: &mut TrainConfig, data: &Dataset) -> Result<()> {
    let names = data.class_names();
    if data.labels().is_none() || names.is_empty() {
        return Err(Error::Config(format!(
            "{}: a class-conditional model needs labelled data (MNIST with its labels file, CIFAR-10, or an \
             image folder with one subfolder per class)",
            data.source().display()
        )));
    }
    if cfg.model.num_classes == 0 {
        cfg.model.num_classes = names.len();
    } else if names.len() > cfg.model.num_classes {
        return Err(Error::Config(format!(
            "the data has {} classes but the model has {}",
            names.len(),
            cfg.model.num_classes
        )));
    }
    cfg.conditional = true;
    if cfg.class_names.is_empty() {
        cfg.class_names = names.to_vec();
    }
    Ok(())
}
