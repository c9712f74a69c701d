//! `diffuse info`: the devices this machine offers, and model sizes.

use super::device::DeviceSpec;
use super::model_config::load_config;
use anyhow::Result;
use clap::Args;
use diffuse_tensor::{DType, Device};
use diffuse_trainer::checkpoint::Checkpoint;
use diffuse_trainer::config::TrainConfig;
use diffuse_trainer::memory_budget::{self, format_bytes, MemoryBudget};
use diffuse_trainer::{finetune, param_select};
use diffuse_unet::Footprint;
use diffuse_unet::UNet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// Print the parameter count of a model config (tiny, mnist, cifar10 or a JSON file).
    #[arg(long)]
    pub config: Option<String>,
    /// Also open this device and report on it.
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// List every parameter tensor (name, shape, count) and the groups a
    /// --freeze/--train-only/--lr-scale pattern can name (model: --config,
    /// --checkpoint, or the mnist preset).
    #[arg(long)]
    pub params: bool,
    /// With --params: the model of this checkpoint (file or run directory),
    /// with its adapters and which tensors its run trains.
    #[arg(long, requires = "params", conflicts_with = "config")]
    pub checkpoint: Option<PathBuf>,
}

pub fn run(a: InfoArgs) -> Result<()> {
    if a.params {
        return print_params(&a);
    }
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

/// `diffuse info --params`.
fn print_params(a: &InfoArgs) -> Result<()> {
    let (model, show_trainable) = match &a.checkpoint {
        Some(k) => {
            let ckpt = Checkpoint::open(k)?;
            eprintln!("checkpoint: {}", ckpt.path.display());
            (finetune::build_model(&ckpt.train_config, 0, &Device::Cpu)?, true)
        }
        None => {
            let cfg = load_config(a.config.as_deref().unwrap_or("mnist"))?;
            (UNet::new(cfg, 0, DType::F32, &Device::Cpu)?, false)
        }
    };
    let mut out = String::new();
    let ps = &model.params;
    let width = ps.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for id in ps.ids() {
        let t = ps.value(id);
        let state = match (show_trainable, ps.is_trainable(id)) {
            (false, _) => "",
            (true, true) => "  trainable",
            (true, false) => "  frozen",
        };
        writeln!(out, "{:width$}  {:<18} {:>9}{state}", ps.name(id), format!("{:?}", t.dims()), t.numel())?;
    }
    let trainable: usize = ps.ids().filter(|&id| ps.is_trainable(id)).map(|id| ps.value(id).numel()).sum();
    writeln!(out, "{} tensors, {} parameters ({trainable} trainable)", ps.len(), model.num_params())?;
    out.push('\n');
    writeln!(out, "groups (glob patterns for --freeze, --train-only, --lr-scale; `*` crosses dots):")?;
    let counts: Vec<(&str, usize)> = ps.iter().map(|(n, t)| (n, t.numel())).collect();
    for g in param_select::groups(&counts) {
        writeln!(out, "  {:<24} {:<28} {:>4} tensors {:>9} parameters", g.kind, g.pattern, g.tensors, g.scalars)?;
    }
    let layers = finetune::conv_layer_names(&model);
    out.push('\n');
    writeln!(out, "LoRA targets (--lora-targets patterns match these layer names): {}", layers.join(" "))?;
    // A reader that stops early (`| head`) is not an error.
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
