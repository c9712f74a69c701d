//! `diffuse`: train and sample denoising diffusion models on CPUs and
//! NVIDIA GPUs.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "diffuse", version, about = "Train and sample DDPM diffusion models (CPU, CUDA, CUDA emulator)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Train a U-Net DDPM (default: the mnist preset on the bundled digits).
    Train(cli::train::TrainArgs),
    /// Generate images from a checkpoint with DDPM or DDIM.
    Sample(cli::sample::SampleArgs),
    /// Denoising quality of a checkpoint on held-out images (MSE, PSNR, SSIM).
    Eval(cli::eval::EvalArgs),
    /// Show devices (CPU, CUDA, emulator), a model config's parameter count, or its parameters (--params).
    Info(cli::info::InfoArgs),
    /// Check one training step against a PyTorch test-vector file.
    VerifyStep(cli::verify::VerifyArgs),
    /// Fold a LoRA run's adapters into its base: a plain checkpoint.
    MergeLora(cli::merge_lora::MergeLoraArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cli::train::run(a),
        Command::Sample(a) => cli::sample::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Info(a) => cli::info::run(a),
        Command::VerifyStep(a) => cli::verify::run(a),
        Command::MergeLora(a) => cli::merge_lora::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
