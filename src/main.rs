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
enum Command {
    /// Train a U-Net DDPM (default: the mnist preset on the bundled digits).
    Train(cli::train::TrainArgs),
    /// Generate images from a checkpoint with DDPM or DDIM.
    Sample(cli::sample::SampleArgs),
    /// Denoising quality of a checkpoint on held-out images (MSE, PSNR, SSIM).
    Eval(cli::eval::EvalArgs),
    /// Denoise images: the input is x_t at its noise level; original | noisy | denoised, PSNR/SSIM.
    Denoise(cli::denoise::DenoiseArgs),
    /// Fill a masked region of images (RePaint).
    Inpaint(cli::inpaint::InpaintArgs),
    /// Image to image (SDEdit): noise to t = strength x T, then denoise.
    Img2img(cli::img2img::Img2ImgArgs),
    /// Show devices (CPU, CUDA, emulator) or a model config's parameter count.
    Info(cli::info::InfoArgs),
    /// Check one training step against a PyTorch test-vector file.
    VerifyStep(cli::verify::VerifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cli::train::run(a),
        Command::Sample(a) => cli::sample::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Denoise(a) => cli::denoise::run(a),
        Command::Inpaint(a) => cli::inpaint::run(a),
        Command::Img2img(a) => cli::img2img::run(a),
        Command::Info(a) => cli::info::run(a),
        Command::VerifyStep(a) => cli::verify::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
