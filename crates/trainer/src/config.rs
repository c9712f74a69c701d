//! The resolved configuration of a training run: what `diffuse train`
//! writes to `config.json` in the run directory and into every checkpoint.

use crate::diffusion::{Schedule, Target};
use crate::loss_weighting::{LossWeighting, TimestepSampling, DEFAULT_GAMMA};
use crate::{Error, Result};
use diffuse_tensor::Precision;
use diffuse_unet::UNetConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: UNetConfig,
    /// Dataset path: an MNIST IDX file or folder, CIFAR-10 batches, or images.
    pub data: PathBuf,
    pub steps: u64,
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed before one optimiser step.
    pub grad_accum: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 disables).
    pub grad_clip: f64,
    pub ema_decay: f64,
    pub ema_warmup: bool,
    pub schedule: Schedule,
    pub timesteps: usize,
    pub target: Target,
    /// Per-image loss weight; new runs default to min-SNR-5 (the best
    /// measured recipe, BENCHMARKS.md issue 20); older runs lack it: none.
    #[serde(default)]
    pub loss_weighting: LossWeighting,
    /// How training timesteps are drawn; older runs lack it: uniform.
    #[serde(default)]
    pub timestep_sampling: TimestepSampling,
    /// The GEMMs' arithmetic (fp32, tf32, bf16 tensor-core inputs); None:
    /// the device's default ([`Precision::default_for`]). Older runs lack it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "precision_name")]
    pub precision: Option<Precision>,
    pub seed: u64,
    pub hflip: bool,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub sample_every: u64,
    pub sample_count: usize,
    pub sample_ddim_steps: usize,
    pub log_every: u64,
    /// Stop when the loss exceeds this factor times its running mean (0
    /// disables; a non-finite loss always stops). Older runs lack it.
    #[serde(default = "default_divergence_factor")]
    pub divergence_factor: f64,
    /// Train only on images with these labels (e.g. digits 0-4); empty: all.
    #[serde(default)]
    pub labels: Vec<u8>,
    /// Glob patterns over parameter names: these parameters stay fixed.
    #[serde(default)]
    pub freeze: Vec<String>,
    /// Glob patterns: only these parameters train (applied before `freeze`).
    #[serde(default)]
    pub train_only: Vec<String>,
    /// Learning-rate factors by pattern; a later entry wins over an earlier one.
    #[serde(default)]
    pub lr_scale: Vec<LrScale>,
    /// LoRA adapters on a frozen base (Hu et al. 2021).
    #[serde(default)]
    pub lora: Option<LoraConfig>,
    /// Train a class-conditional model: a fresh model gets one class per
    /// class of the data (`model.num_classes`), named in `class_names`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conditional: bool,
    /// The probability that a training label is replaced by "no class"
    /// (classifier-free guidance needs the unconditional model too).
    #[serde(default = "default_class_dropout")]
    pub class_dropout: f64,
    /// The data's class names, label order (a conditional run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
}

/// Ho and Salimans 2022 trained with p_uncond 0.1 or 0.2.
pub const DEFAULT_CLASS_DROPOUT: f64 = 0.1;

fn default_class_dropout() -> f64 {
    DEFAULT_CLASS_DROPOUT
}

fn default_divergence_factor() -> f64 {
    crate::divergence::DEFAULT_FACTOR
}

/// `--lr-scale PATTERN=x`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrScale {
    pub pattern: String,
    pub scale: f64,
}

impl std::str::FromStr for LrScale {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (pattern, x) = s.rsplit_once('=').ok_or_else(|| format!("{s:?} is not PATTERN=FACTOR"))?;
        let scale: f64 = x.trim().parse().map_err(|_| format!("{x:?} in {s:?} is not a number"))?;
        if !(scale >= 0.0 && scale.is_finite()) {
            return Err(format!("learning-rate factor {scale} must be finite and >= 0"));
        }
        Ok(LrScale { pattern: pattern.trim().to_string(), scale })
    }
}

/// LoRA: W + (alpha / rank) B A on the layers whose names match `targets`,
/// everything else frozen. `base` is the checkpoint whose EMA weights are
/// the frozen base; `base_sha256` identifies those weights, so an adapter is
/// never applied to a different base.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
    pub base: PathBuf,
    pub base_sha256: String,
}

/// The attention projections of every attention block.
pub const DEFAULT_LORA_TARGETS: [&str; 4] = ["*attn*.q", "*attn*.k", "*attn*.v", "*attn*.proj_out"];

impl TrainConfig {
    /// Defaults for a model config: the paper's optimiser, shorter warmup,
    /// min-SNR-5 loss weighting.
    pub fn for_model(model: UNetConfig, data: PathBuf) -> Self {
        TrainConfig {
            model,
            data,
            steps: 2000,
            batch_size: 64,
            grad_accum: 1,
            lr: 5e-4,
            warmup_steps: 100,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            weight_decay: 0.0,
            grad_clip: 1.0,
            ema_decay: 0.9999,
            ema_warmup: true,
            schedule: Schedule::Linear,
            timesteps: 1000,
            target: Target::Eps,
            loss_weighting: LossWeighting::MinSnr { gamma: DEFAULT_GAMMA },
            timestep_sampling: TimestepSampling::Uniform,
            precision: None,
            seed: 0,
            hflip: false,
            checkpoint_every: 500,
            keep_checkpoints: 3,
            sample_every: 500,
            sample_count: 64,
            sample_ddim_steps: 50,
            log_every: 10,
            divergence_factor: default_divergence_factor(),
            labels: Vec::new(),
            freeze: Vec::new(),
            train_only: Vec::new(),
            lr_scale: Vec::new(),
            lora: None,
            conditional: false,
            class_dropout: DEFAULT_CLASS_DROPOUT,
            class_names: Vec::new(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let bad = |m: String| Err(Error::Config(m));
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if self.grad_accum == 0 {
            return bad("grad_accum must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("learning rate {} must be positive", self.lr));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("Adam betas must be in [0, 1)".into());
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return bad(format!("grad_clip {} must be finite and >= 0 (0 disables clipping)", self.grad_clip));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!("weight_decay {} must be finite and >= 0", self.weight_decay));
        }
        if !(self.adam_eps >= 0.0 && self.adam_eps.is_finite()) {
            return bad(format!("adam_eps {} must be finite and >= 0", self.adam_eps));
        }
        if !(0.0..=1.0).contains(&self.ema_decay) {
            return bad(format!("ema_decay {} must be in [0, 1]", self.ema_decay));
        }
        if !(self.divergence_factor >= 0.0 && self.divergence_factor.is_finite()) {
            return bad(format!(
                "divergence factor {} must be finite and >= 0 (0 disables the test)",
                self.divergence_factor
            ));
        }
        if !(0.0..=1.0).contains(&self.class_dropout) {
            return bad(format!("class dropout {} must be in [0, 1]", self.class_dropout));
        }
        self.loss_weighting.validate()?;
        if self.timesteps < 2 {
            return bad("timesteps must be at least 2".into());
        }
        if self.sample_ddim_steps == 0 || self.sample_ddim_steps > self.timesteps {
            return bad(format!("sample_ddim_steps must be in 1..={}", self.timesteps));
        }
        if self.keep_checkpoints == 0 {
            return bad("keep_checkpoints must be at least 1".into());
        }
        if let Some(l) = &self.lora {
            if l.rank == 0 {
                return bad("LoRA rank must be at least 1".into());
            }
            if !(l.alpha > 0.0 && l.alpha.is_finite()) {
                return bad(format!("LoRA alpha {} must be positive", l.alpha));
            }
            if !self.freeze.is_empty() || !self.train_only.is_empty() {
                return bad("LoRA trains only its adapters: it cannot be combined with --freeze/--train-only".into());
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Result<Self> {
        serde_json::from_str(s).map_err(|e| Error::Config(format!("cannot parse training config: {e}")))
    }
}

/// A precision in a run's config.json as its name ("bf16").
mod precision_name {
    use diffuse_tensor::Precision;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Option<Precision>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => s.serialize_some(&p.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Precision>, D::Error> {
        let name: Option<String> = Option::deserialize(d)?;
        name.map(|n| n.parse().map_err(serde::de::Error::custom)).transpose()
    }
}
