//! `diffuse`: train and sample denoising diffusion models on CPUs and
//! NVIDIA GPUs.

mod cli;

use clap::{Parser, Subcommand};
use diffuse_trainer::memory_budget::MemoryBudget;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "diffuse", version, about = "Train and sample DDPM diffusion models (CPU, CUDA, CUDA emulator)")]
struct Cli {
    /// Memory limit for data, models and outputs, e.g. 8G (default: $DIFFUSE_MEMORY_LIMIT, else 80% of physical memory).
    #[arg(long, global = true, value_name = "SIZE")]
    memory_limit: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a U-Net DDPM (default: the mnist preset on the bundled digits).
    Train(cli::train::TrainArgs),
    /// Generate images from a checkpoint with DDPM or DDIM.
    Sample(cli::sample::SampleArgs),
    /// Denoising quality of a checkpoint on held-out images (MSE, PSNR, SSIM).
    Eval(cli::eval::EvalArgs),
    /// Show devices (CPU, CUDA, emulator) or a model config's parameter count.
    Info(cli::info::InfoArgs),
    /// Check one training step against a PyTorch test-vector file.
    VerifyStep(cli::verify::VerifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = set_memory_budget(cli.memory_limit.as_deref()).and_then(|()| match cli.command {
        Command::Train(a) => cli::train::run(a),
        Command::Sample(a) => cli::sample::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Info(a) => cli::info::run(a),
        Command::VerifyStep(a) => cli::verify::run(a),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The process's memory budget, from `--memory-limit`, else the environment
/// or the physical memory; set before anything is loaded.
fn set_memory_budget(flag: Option<&str>) -> anyhow::Result<()> {
    let budget = match flag {
        Some(text) => MemoryBudget::from_flag(text)?,
        None => MemoryBudget::from_env()?,
    };
    MemoryBudget::set_global(budget);
    Ok(())
}
