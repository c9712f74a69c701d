//! `diffuse info`: the devices this machine offers, and model sizes.

use super::device::DeviceSpec;
use super::model_config::load_config;
use anyhow::Result;
use clap::Args;
use diffuse_trainer::config::TrainConfig;
use diffuse_trainer::memory_budget::{self, format_bytes, MemoryBudget};
use diffuse_unet::Footprint;
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// Print the parameter count of a model config (tiny, mnist, cifar10 or a JSON file).
    #[arg(long)]
    pub config: Option<String>,
    /// Also open this device and report on it.
    #[arg(long)]
    pub device: Option<DeviceSpec>,
}

pub fn run(a: InfoArgs) -> Result<()> {
    if let Some(c) = &a.config {
        // Counted from the config alone: nothing is allocated, whatever its size.
        let cfg = load_config(c)?;
        let fp = Footprint::of(&cfg)?;
        println!("config: {}", serde_json::to_string(&cfg)?);
        println!("parameters: {}", fp.params);
        let train = TrainConfig::for_model(cfg.clone(), PathBuf::new());
        println!("weights: {}", format_bytes(fp.weight_bytes()));
        println!(
            "training on the CPU at batch {}: about {}",
            train.batch_size,
            memory_budget::training_need(&train, true)?
        );
        println!("sampling 64 images on the CPU: about {}", memory_budget::sampling_need(&cfg, 0, 64, 64, true)?);
        let budget = MemoryBudget::global()?;
        println!("memory limit: {} ({})", format_bytes(budget.limit), budget.source);
        return Ok(());
    }
    println!("diffuse {}", env!("CARGO_PKG_VERSION"));
    println!("cpu: {}", cpu_model());
    println!("simd: {}", simd_features());
    println!("threads: {}", rayon::current_num_threads());
    println!("{}", super::device::cuda_probe());
    println!("emu: {}", super::device::emu_probe());
    if let Some(d) = &a.device {
        let dev = d.open()?;
        println!("device {d}: {dev} ready");
    }
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn simd_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut v = Vec::new();
        macro_rules! feat {
            ($($f:tt),*) => { $( if std::arch::is_x86_feature_detected!($f) { v.push($f); } )* };
        }
        feat!("sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512bf16");
        v.join(" ")
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon".to_string()
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "none detected".to_string()
    }
}
