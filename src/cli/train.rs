//! `diffuse train`: train a DDPM on a dataset (the bundled MNIST digits by
//! default) into a run directory.

use super::data_parallel::{self, Devices, MultiNode};
use super::signals::{signal_name, Interrupted, Interruptible, StopSignals};
use super::{device::DeviceSpec, model_config::load_config, progress::Progress};
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use diffuse_tensor::Precision;
use diffuse_trainer::config::{LoraConfig, LrScale, TrainConfig, DEFAULT_LORA_TARGETS};
use diffuse_trainer::data_parallel::train_ranks;
use diffuse_trainer::diffusion::{Schedule, Target};
use diffuse_trainer::loss_weighting::{LossWeighting, TimestepSampling};
use diffuse_trainer::train::{NoiseChoice, Resume, Start, Trainer};
use std::path::PathBuf;

/// The model preset when `--config` is not given.
const DEFAULT_CONFIG: &str = "mnist";

/// `--schedule`: the trainer's [`Schedule`] as a clap value.
#[derive(Clone, Copy, ValueEnum)]
pub enum ScheduleArg {
    /// Betas linear from 1e-4 to 0.02 (Ho et al. 2020).
    Linear,
    /// Alpha-bar = cos^2 with offset 0.008 (Nichol & Dhariwal 2021).
    Cosine,
}

impl From<ScheduleArg> for Schedule {
    fn from(s: ScheduleArg) -> Self {
        match s {
            ScheduleArg::Linear => Schedule::Linear,
            ScheduleArg::Cosine => Schedule::Cosine,
        }
    }
}

/// `--target`: the trainer's [`Target`] as a clap value.
#[derive(Clone, Copy, ValueEnum)]
pub enum TargetArg {
    /// The noise (Ho et al. 2020).
    Eps,
    /// The clean image.
    #[value(name = "x0")]
    X0,
    /// The velocity sqrt(alpha-bar) eps - sqrt(1 - alpha-bar) x0 (Salimans & Ho 2022).
    V,
}

impl From<TargetArg> for Target {
    fn from(t: TargetArg) -> Self {
        match t {
            TargetArg::Eps => Target::Eps,
            TargetArg::X0 => Target::X0,
            TargetArg::V => Target::V,
        }
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// Model: mnist (default), cifar10, tiny, tiny-mnist, or a JSON file of UNetConfig fields.
    #[arg(long)]
    pub config: Option<String>,
    /// Dataset: MNIST IDX (file or folder, plain or .gz), CIFAR-10 data_batch_*.bin folder, or a folder of PNG/JPEG.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Optimiser steps to train (with --resume: the total to reach; default the run's own).
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches accumulated per optimiser step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub warmup: Option<u64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient norm (0 disables).
    #[arg(long)]
    pub grad_clip: Option<f64>,
    #[arg(long)]
    pub ema_decay: Option<f64>,
    /// Noise schedule [default: linear; with --init-from, the checkpoint's]
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Diffusion steps T [default: 1000; with --init-from, the checkpoint's]
    #[arg(long)]
    pub timesteps: Option<usize>,
    /// Regression target [default: eps; with --init-from, the checkpoint's]
    #[arg(long, value_enum)]
    pub target: Option<TargetArg>,
    /// Loss weighting: none, min-snr (gamma 5) or min-snr:GAMMA (Hang et al. 2023)
    /// [default: min-snr]
    #[arg(long, value_parser = parse_weighting)]
    pub loss_weighting: Option<LossWeighting>,
    /// Training timesteps: uniform, or stratified (one per 1/batch of [0, T)).
    #[arg(long, value_parser = parse_timestep_sampling)]
    pub timestep_sampling: Option<TimestepSampling>,
    /// Arithmetic of the convolutions and linear layers: fp32, tf32 or bf16
    /// (tensor-core inputs, fp32 accumulation and weights) [default: bf16 on
    /// GPUs of compute capability 8.0 and newer, else fp32].
    #[arg(long, value_parser = parse_precision)]
    pub precision: Option<Precision>,
    /// Dropout probability (overrides the model config).
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Random horizontal flips.
    #[arg(long)]
    pub hflip: bool,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run directory (default runs/<config>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Device to run on.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// Data parallelism: train on these GPUs, `all` or numbers (0,1,3), one
    /// worker thread each, the batch split evenly (several need NCCL). With
    /// --device emu: that many emulated devices (0,1 is two).
    #[arg(long, value_name = "all|N,N,...")]
    pub gpus: Option<String>,
    /// Run the training step as a CUDA graph (GPU devices): one step eager,
    /// the next captured, every later one a replay after one copy of the
    /// step's scalars; bit-identical to eager. Where a graph cannot hold the
    /// step (gradient accumulation, several GPUs, the CPU) the run stays
    /// eager and says why.
    #[arg(long)]
    pub graph: bool,
    /// Several machines: how many nodes run this same command (each with its --node-rank).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub nodes: usize,
    /// Several machines: this node's number, 0 to nodes - 1 (node 0 serves the rendezvous and writes the run).
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub node_rank: usize,
    /// Several machines: HOST:PORT where node 0 hands out NCCL's id (DIFFUSE_RENDEZVOUS_TIMEOUT_S, default 300).
    #[arg(long, value_name = "HOST:PORT")]
    pub rendezvous: Option<String>,
    /// Continue a run (its directory or a checkpoint file) exactly where it stopped.
    #[arg(long, conflicts_with = "init_from")]
    pub resume: Option<PathBuf>,
    /// With --resume: when the newest checkpoint is damaged, resume from the newest good one.
    #[arg(long, requires = "resume")]
    pub resume_from_last_good: bool,
    /// Fine-tune: start from a checkpoint's EMA weights with a fresh optimiser.
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Stop as diverged when the loss exceeds this factor times its running mean (0: only a non-finite loss stops).
    #[arg(long)]
    pub divergence_factor: Option<f64>,
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Keep this many newest checkpoints.
    #[arg(long)]
    pub keep: Option<usize>,
    /// Write a DDIM sample grid every N steps (0: never).
    #[arg(long)]
    pub sample_every: Option<u64>,
    #[arg(long)]
    pub sample_count: Option<usize>,
    /// DDIM steps of the sample grids written during training.
    #[arg(long)]
    pub sample_steps: Option<usize>,
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Train only on images with these labels, e.g. 0,1,2,3,4 (MNIST digits, CIFAR-10 classes).
    #[arg(long, value_delimiter = ',', value_name = "LABELS", conflicts_with = "resume")]
    pub labels: Vec<u8>,
    /// Keep these parameters fixed: glob patterns over names (`*` crosses dots; see `diffuse info --params`).
    #[arg(long, num_args = 1.., value_name = "PATTERN", conflicts_with = "resume")]
    pub freeze: Vec<String>,
    /// Train only these parameters (glob patterns); --freeze then removes from them.
    #[arg(long, num_args = 1.., value_name = "PATTERN", conflicts_with = "resume")]
    pub train_only: Vec<String>,
    /// Learning-rate factor for the parameters a pattern matches, e.g. 'up.*=0.1' (repeatable; the last match wins).
    #[arg(long, value_name = "PATTERN=FACTOR", conflicts_with = "resume")]
    pub lr_scale: Vec<LrScale>,
    /// Train a class-conditional model (one class per class of the data:
    /// MNIST digits, CIFAR-10 classes, or an image folder's subfolders), for
    /// `diffuse sample --class K --guidance W`.
    #[arg(long, conflicts_with = "resume")]
    pub conditional: bool,
    /// Conditional training: the probability that a label is replaced by
    /// "no class" (the unconditional model guidance needs).
    #[arg(long, value_name = "P", requires = "conditional")]
    pub class_dropout: Option<f64>,
    /// Train LoRA adapters of this rank on the frozen --init-from model.
    #[arg(long, requires = "init_from", conflicts_with_all = ["freeze", "train_only"])]
    pub lora_rank: Option<usize>,
    /// LoRA alpha: adapters are scaled by alpha/rank (default: alpha = rank).
    #[arg(long, requires = "lora_rank")]
    pub lora_alpha: Option<f64>,
    /// Layers that get adapters, glob patterns over layer names (default: the attention projections q, k, v, proj_out).
    #[arg(long, num_args = 1.., value_name = "PATTERN", requires = "lora_rank")]
    pub lora_targets: Vec<String>,
}

/// The bundled digits, found next to the executable's source tree or the
/// current directory.
fn default_data() -> PathBuf {
    let here = PathBuf::from("data/mnist10k");
    if here.exists() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist10k")
}

fn parse_weighting(s: &str) -> std::result::Result<LossWeighting, String> {
    s.parse().map_err(|e: diffuse_trainer::Error| e.to_string())
}

fn parse_timestep_sampling(s: &str) -> std::result::Result<TimestepSampling, String> {
    s.parse().map_err(|e: diffuse_trainer::Error| e.to_string())
}

pub fn run(a: TrainArgs) -> Result<()> {
    let config_name = a.config.as_deref().unwrap_or(DEFAULT_CONFIG);
    let mut model = load_config(config_name)?;
    if let Some(p) = a.dropout {
        model.dropout = p;
    }
    let mut cfg = TrainConfig::for_model(model, a.data.clone().unwrap_or_else(default_data));
    macro_rules! set {
        ($($field:ident <- $arg:expr),* $(,)?) => { $( if let Some(v) = $arg { cfg.$field = v; } )* };
    }
    set!(steps <- a.steps, batch_size <- a.batch_size, grad_accum <- a.grad_accum, lr <- a.lr,
         warmup_steps <- a.warmup, weight_decay <- a.weight_decay, grad_clip <- a.grad_clip,
         ema_decay <- a.ema_decay, timesteps <- a.timesteps, seed <- a.seed,
         checkpoint_every <- a.checkpoint_every, keep_checkpoints <- a.keep,
         sample_every <- a.sample_every, sample_count <- a.sample_count, log_every <- a.log_every,
         divergence_factor <- a.divergence_factor);
    // The grids' DDIM cannot take more steps than the diffusion has.
    cfg.sample_ddim_steps = a.sample_steps.unwrap_or(cfg.sample_ddim_steps.min(cfg.timesteps));
    if let Some(s) = a.schedule {
        cfg.schedule = s.into();
    }
    if let Some(t) = a.target {
        cfg.target = t.into();
    }
    if let Some(w) = a.loss_weighting {
        cfg.loss_weighting = w;
    }
    if let Some(s) = a.timestep_sampling {
        cfg.timestep_sampling = s;
    }
    if a.precision.is_some() {
        cfg.precision = a.precision;
    }
    cfg.hflip |= a.hflip;
    cfg.labels = a.labels.clone();
    cfg.conditional = a.conditional;
    if let Some(p) = a.class_dropout {
        cfg.class_dropout = p;
    }
    cfg.freeze = a.freeze.clone();
    cfg.train_only = a.train_only.clone();
    cfg.lr_scale = a.lr_scale.clone();
    if let Some(rank) = a.lora_rank {
        let targets = if a.lora_targets.is_empty() {
            DEFAULT_LORA_TARGETS.iter().map(|s| s.to_string()).collect()
        } else {
            a.lora_targets.clone()
        };
        // The base's path and hash are filled in when it is loaded.
        cfg.lora = Some(LoraConfig {
            rank,
            alpha: a.lora_alpha.unwrap_or(rank as f64),
            targets,
            base: PathBuf::new(),
            base_sha256: String::new(),
        });
    }
    // Checked before a device is opened or any directory is made.
    cfg.validate()?;
    let multi = MultiNode { nodes: a.nodes, node_rank: a.node_rank, rendezvous: a.rendezvous.clone() };
    let devices = data_parallel::open(a.device, a.gpus.as_deref(), &multi)?;
    let (start, out) = match (&a.resume, &a.init_from) {
        (Some(r), _) => {
            let file = diffuse_trainer::checkpoint::resolve(r)?;
            // <run>/checkpoints/ckpt-N.safetensors -> <run>
            let run_dir =
                file.parent().and_then(|p| p.parent()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            let resume = Resume {
                data: a.data.clone(),
                steps: a.steps,
                divergence_factor: a.divergence_factor,
                last_good: a.resume_from_last_good,
                model: a.config.is_some().then(|| cfg.model.clone()),
                ..Resume::new(file)
            };
            (Start::Resume(resume), a.out.clone().unwrap_or(run_dir))
        }
        (None, Some(i)) => (
            Start::FineTune {
                checkpoint: i.clone(),
                model: a.config.is_some().then(|| cfg.model.clone()),
                dropout: a.dropout,
                noise: NoiseChoice {
                    schedule: a.schedule.map(Into::into),
                    timesteps: a.timesteps,
                    target: a.target.map(Into::into),
                },
            },
            a.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{}-finetune", sanitize(config_name)))),
        ),
        (None, None) => {
            (Start::Fresh, a.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{}", sanitize(config_name)))))
        }
    };
    if matches!(start, Start::Fresh)
        && out.join("checkpoints").is_dir()
        && !diffuse_trainer::checkpoint::list(&out.join("checkpoints"))?.is_empty()
    {
        bail!(
            "{} already holds a run with checkpoints: pass --resume {} to continue it, or --out <new dir>",
            out.display(),
            out.display()
        );
    }
    let signals = StopSignals::install()?;
    let mut obs = Interruptible { progress: Progress::new(), signals: &signals };
    let summary = match devices {
        Devices::One(device) => {
            println!("device: {device}");
            let mut trainer = Trainer::new(cfg, start, out, device)?;
            describe(&trainer);
            if let Some(why) = a.graph.then(|| trainer.use_graph()).flatten() {
                println!("note: {why}");
            }
            trainer.run(&mut obs)?
        }
        Devices::Group { ranks, describe: what } => {
            let world = ranks.len() * a.nodes;
            if !cfg.batch_size.is_multiple_of(world) {
                bail!(
                    "--batch-size {} does not split evenly over {world} devices: use a multiple of {world}",
                    cfg.batch_size
                );
            }
            println!("devices: {what}");
            if a.graph {
                println!("note: training without a CUDA graph: the all-reduce of several GPUs is not captured");
            }
            train_ranks(cfg, start, out, ranks, &mut obs, &mut describe)?
        }
    };
    if let (true, Some(sig)) = (summary.interrupted, signals.received()) {
        let ckpt = summary.last_checkpoint.as_ref().map_or("none".into(), |p| p.display().to_string());
        return Err(Interrupted {
            signal: sig,
            message: format!(
                "interrupted by {} after step {} of {}: checkpoint {ckpt}; resume with: diffuse train --resume {}",
                signal_name(sig),
                summary.steps_done,
                summary.steps_total,
                summary.out.display()
            ),
        }
        .into());
    }
    match summary.last_loss {
        Some(loss) => {
            println!("done: {} steps, last loss {loss:.5}, run directory {}", summary.steps_done, summary.out.display())
        }
        None => println!(
            "done: the run had already reached step {}; nothing trained (pass a larger --steps to go on), \
             run directory {}",
            summary.steps_done,
            summary.out.display()
        ),
    }
    Ok(())
}

/// The run's notes and a line about the model, the data and the directory.
fn describe(trainer: &Trainer) {
    for note in &trainer.notes {
        println!("note: {note}");
    }
    let ps = &trainer.model.params;
    let trainable: usize = ps.ids().filter(|&id| ps.is_trainable(id)).map(|id| ps.value(id).numel()).sum();
    println!(
        "model: {} parameters ({trainable} trainable); data: {} ({} images); run directory: {}",
        trainer.model.num_params(),
        trainer.cfg.data.display(),
        trainer.loader.dataset().len(),
        trainer.out.display()
    );
    let precision = trainer.model.params.precision();
    if precision != Precision::Fp32 {
        println!("precision: {precision} (tensor-core GEMM inputs; fp32 accumulation, weights and optimiser)");
    }
}

/// `--precision` values: fp32, tf32 or bf16.
pub fn parse_precision(s: &str) -> std::result::Result<Precision, String> {
    s.parse()
}

fn sanitize(s: &str) -> String {
    let base =
        std::path::Path::new(s).file_stem().map(|x| x.to_string_lossy().into_owned()).unwrap_or_else(|| s.to_string());
    base.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}
