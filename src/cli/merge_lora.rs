//! `diffuse merge-lora BASE ADAPTER --out K`: folds LoRA adapters into their
//! base, writing a plain checkpoint (weights and EMA weights each become
//! W + (alpha/rank) B A) that `sample`, `eval` and `--init-from` accept.

use anyhow::{bail, Result};
use clap::Args;
use diffuse_tensor::ops::AdamWParams;
use diffuse_tensor::Device;
use diffuse_trainer::checkpoint::{self, Checkpoint, TrainState};
use diffuse_trainer::config::TrainConfig;
use diffuse_trainer::finetune;
use diffuse_trainer::optim::{AdamW, Ema};
use std::path::PathBuf;

#[derive(Args)]
pub struct MergeLoraArgs {
    /// The base checkpoint the adapters were trained on (its weights must hash as the adapters recorded).
    pub base: PathBuf,
    /// The LoRA run's checkpoint (file or run directory).
    pub adapter: PathBuf,
    /// The plain checkpoint to write.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: MergeLoraArgs) -> Result<()> {
    let mut adapter = Checkpoint::open(&a.adapter)?;
    let Some(lora) = adapter.train_config.lora.as_mut() else {
        bail!("{} holds no LoRA adapters (it is a plain checkpoint already)", adapter.path.display());
    };
    // The base named here replaces the path the run recorded; its hash is still checked.
    lora.base = a.base.clone();
    let lora = lora.clone();
    let device = Device::Cpu;
    let merged = finetune::merge_adapters(&adapter.load_model(&device, false)?, &lora)?;
    let merged_ema = finetune::merge_adapters(&adapter.load_model(&device, true)?, &lora)?;

    let tc = &adapter.train_config;
    let cfg =
        TrainConfig { lora: None, freeze: Vec::new(), train_only: Vec::new(), lr_scale: Vec::new(), ..tc.clone() };
    let ema = Ema {
        decay: cfg.ema_decay,
        warmup: cfg.ema_warmup,
        values: merged_ema.params.iter().map(|(_, t)| t.clone()).collect(),
        updates: adapter.state.ema_updates,
    };
    let hyper = AdamWParams {
        lr: cfg.lr,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.adam_eps,
        weight_decay: cfg.weight_decay,
    };
    let opt = AdamW::new(&merged.params, hyper)?;
    let state = TrainState { step: adapter.state.step, ..adapter.state };
    checkpoint::save(&a.out, &cfg, &merged, &ema, &opt, state)?;
    println!(
        "merged {} (rank {}, alpha {}) into {}: wrote {}",
        adapter.path.display(),
        lora.rank,
        lora.alpha,
        a.base.display(),
        a.out.display()
    );
    Ok(())
}
