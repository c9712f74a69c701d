//! The training loop and its run directory:
//!
//! ```text
//! <out>/config.json        the resolved TrainConfig
//! <out>/metrics.jsonl      one JSON line per logged step
//! <out>/checkpoints/       ckpt-<step>.safetensors, the newest K kept
//! <out>/samples/           DDIM sample grids (EMA weights) every N steps
//! <out>/loss.png           the loss curve, redrawn at every log
//! ```

use crate::checkpoint::{self, Checkpoint, TrainState};
use crate::config::TrainConfig;
use crate::data::{Dataset, Loader, LoaderConfig};
use crate::diffusion::Diffusion;
use crate::finetune;
use crate::image_grid::save_grid;
use crate::optim::{clip_grad_norm, warmup_lr, AdamW, Ema};
use crate::plot::{save_loss_plot, PlotOptions};
use crate::raster::ValueRange;
use crate::sampler::{sample, SampleSpec, Sampler};
use crate::{Error, Result};
use diffuse_tensor::ops::{self, AdamWParams};
use diffuse_tensor::{Device, Tensor};
use diffuse_unet::atomic_file::write_atomic;
use diffuse_unet::{ForwardMode, UNet};
use std::io::Write;
use std::path::{Path, PathBuf};
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
}

/// An observer that prints nothing.
pub struct Silent;
impl Observer for Silent {}

/// Where a run starts from.
pub enum Start {
    Fresh,
    /// Continue a run exactly where its checkpoint stopped (optionally
    /// reading its data from a new path).
    Resume {
        checkpoint: PathBuf,
        data: Option<PathBuf>,
    },
    /// Start a new run from a checkpoint's weights (fresh optimiser).
    FineTune(PathBuf),
}

pub struct RunSummary {
    pub out: PathBuf,
    pub steps_done: u64,
    pub last_loss: f64,
    pub last_checkpoint: Option<PathBuf>,
}

/// Philox salt of the dropout masks, apart from the noise and timesteps.
const DROPOUT_SALT: u64 = 0x5eed_d409;

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
}

impl Trainer {
    /// Builds a run: loads the data, builds or restores the model, and
    /// prepares the run directory (nothing in it is overwritten but the
    /// config, metrics and plot).
    pub fn new(mut cfg: TrainConfig, start: Start, out: PathBuf, device: Device) -> Result<Trainer> {
        let ckpt = match &start {
            Start::Fresh => None,
            Start::Resume { checkpoint: p, .. } | Start::FineTune(p) => Some(Checkpoint::open(p)?),
        };
        if let (Start::Resume { data, .. }, Some(c)) = (&start, &ckpt) {
            // The run's own settings win; only the length and the data's
            // location may change.
            let steps = cfg.steps;
            let data = data.clone().unwrap_or_else(|| c.train_config.data.clone());
            cfg = TrainConfig { steps: steps.max(c.state.step), data, ..c.train_config.clone() };
        }
        if let (Start::FineTune(_), Some(c)) = (&start, &ckpt) {
            // Fine-tuning keeps the checkpoint's architecture.
            cfg.model = c.model_config().clone();
        }
        cfg.validate()?;
        let mut dataset = Dataset::open(&cfg.data, cfg.model.in_ch, cfg.model.image_size)?;
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

        let (model, ema, mut opt, step) = match (&start, &ckpt) {
            (Start::Resume { .. }, Some(c)) => {
                let model = c.load_model(&device, false)?;
                let mut ema = Ema::new(&model.params, cfg.ema_decay, cfg.ema_warmup)?;
                let mut opt = AdamW::new(&model.params, hyper)?;
                c.load_training_state(&model, &mut ema, &mut opt)?;
                loader.set_state(c.state.loader)?;
                (model, ema, opt, c.state.step)
            }
            (Start::FineTune(_), Some(c)) => {
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

        for sub in ["checkpoints", "samples"] {
            let d = out.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        write_atomic(&out.join("config.json"), cfg.to_json().as_bytes())?;
        let history = restore_metrics(&out.join("metrics.jsonl"), step)?;
        Ok(Trainer { cfg, model, ema, opt, loader, diffusion, step, out, device, history })
    }

    /// One optimiser step (with `grad_accum` micro-batches); returns (loss, grad norm, lr).
    pub fn train_step(&mut self) -> Result<(f64, f64, f64)> {
        let accum = self.cfg.grad_accum;
        let mut loss_sum = 0.0;
        self.model.params.zero_grads();
        for micro in 0..accum {
            let batch = self.loader.next_batch();
            let idx = (self.step * accum as u64 + micro as u64) as u32;
            let x0 = Tensor::from_vec(batch.images, batch.shape)?.to_device(&self.device)?;
            let ts = self.diffusion.draw_timesteps(batch.shape[0], self.cfg.seed, idx);
            let (x_t, eps) = self.diffusion.q_sample(&x0, &ts, self.cfg.seed, idx)?;
            let target = self.diffusion.target_of(&x0, &eps, &ts)?;
            let t = Tensor::from_vec(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), [ts.len()])?
                .to_device(&self.device)?;
            let mode = ForwardMode::train(self.cfg.seed ^ DROPOUT_SALT, idx);
            let (pred, cache) = self.model.forward_train(&x_t, &t, mode)?;
            loss_sum += ops::mse_loss_forward(&pred, &target)?.scalar_f64()?;
            let dpred = ops::mse_loss_backward(&pred, &target, 1.0 / accum as f64)?;
            drop(pred);
            self.model.backward(&cache, &dpred)?;
        }
        let loss = loss_sum / accum as f64;
        if !loss.is_finite() {
            return Err(Error::Config(format!(
                "loss is {loss} at step {}: the run diverged (try a lower --lr)",
                self.step + 1
            )));
        }
        let grad_norm = clip_grad_norm(&mut self.model.params, self.cfg.grad_clip)?;
        let lr = warmup_lr(self.cfg.lr, self.cfg.warmup_steps, self.step + 1);
        self.opt.step(&mut self.model.params, lr)?;
        self.ema.update(&self.model.params)?;
        self.model.params.zero_grads();
        self.step += 1;
        Ok((loss, grad_norm, lr))
    }

    fn state(&self) -> TrainState {
        TrainState { step: self.step, loader: self.loader.state(), ema_updates: self.ema.updates }
    }

    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let dir = self.out.join("checkpoints");
        let path = dir.join(checkpoint::checkpoint_name(self.step));
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

    pub fn save_samples(&self) -> Result<PathBuf> {
        let model = self.ema_model()?;
        let spec = SampleSpec::new(
            self.cfg.sample_count,
            Sampler::Ddim { steps: self.cfg.sample_ddim_steps, eta: 0.0 },
            self.cfg.seed,
        );
        let s = sample(&model, &self.diffusion, &spec, |_, _| {})?;
        let path = self.out.join("samples").join(format!("step-{:08}.png", self.step));
        let shape = s.images.dims().try_into().map_err(|_| Error::Shape("samples are not 4-D".into()))?;
        let nrow = (self.cfg.sample_count as f64).sqrt().ceil() as usize;
        save_grid(&path, &s.images.to_vec_f32()?, shape, nrow, ValueRange::Signed)?;
        Ok(path)
    }

    /// Trains until `cfg.steps`, logging, checkpointing and sampling on the way.
    pub fn run(&mut self, obs: &mut dyn Observer) -> Result<RunSummary> {
        obs.start(self.step, self.cfg.steps);
        let metrics_path = self.out.join("metrics.jsonl");
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| Error::io(&metrics_path, e))?;
        let mut last_loss = f64::NAN;
        let mut last_ckpt = None;
        let mut timer = Instant::now();
        let mut images_since = 0usize;
        while self.step < self.cfg.steps {
            let (loss, grad_norm, lr) = self.train_step()?;
            last_loss = loss;
            images_since += self.cfg.batch_size * self.cfg.grad_accum;
            let done = self.step == self.cfg.steps;
            if self.step.is_multiple_of(self.cfg.log_every.max(1)) || done || self.step == 1 {
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
                let line = serde_json::to_string(&m).unwrap_or_default();
                writeln!(metrics, "{line}").map_err(|e| Error::io(&metrics_path, e))?;
                self.history.push((m.step, m.loss));
                let plot = self.out.join("loss.png");
                save_loss_plot(&plot, &self.history, &PlotOptions::default())?;
                obs.step(&m);
            }
            if self.cfg.checkpoint_every > 0 && (self.step.is_multiple_of(self.cfg.checkpoint_every) || done) {
                let p = self.save_checkpoint()?;
                obs.message(&format!("checkpoint {}", p.display()));
                last_ckpt = Some(p);
            }
            if self.cfg.sample_every > 0 && (self.step.is_multiple_of(self.cfg.sample_every) || done) {
                let p = self.save_samples()?;
                obs.message(&format!("samples {}", p.display()));
            }
        }
        Ok(RunSummary { out: self.out.clone(), steps_done: self.step, last_loss, last_checkpoint: last_ckpt })
    }
}

/// The loss history of an earlier run up to `step`; later lines (from a run
/// that went past the checkpoint we resume) are dropped from the file.
fn restore_metrics(path: &Path, step: u64) -> Result<Vec<(u64, f64)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let kept: Vec<StepMetrics> =
        text.lines().filter_map(|l| serde_json::from_str::<StepMetrics>(l).ok()).filter(|m| m.step <= step).collect();
    let mut out = String::new();
    for m in &kept {
        out.push_str(&serde_json::to_string(m).unwrap_or_default());
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())?;
    Ok(kept.iter().map(|m| (m.step, m.loss)).collect())
}
