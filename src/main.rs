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
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
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
    /// Show devices (CPU, CUDA, emulator), a model config's parameter count, or its parameters (--params).
    Info(cli::info::InfoArgs),
    /// Check one training step against a PyTorch test-vector file.
    VerifyStep(cli::verify::VerifyArgs),
    /// Import a model from another framework (diffusers UNet2DModel) as a checkpoint.
    Import(cli::import::ImportArgs),
    /// Export a checkpoint for another framework (a diffusers UNet2DModel folder).
    Export(cli::export::ExportArgs),
    /// One model call on inputs from a safetensors file (for interop checks).
    #[command(hide = true)]
    Forward(cli::forward::ForwardArgs),
    /// Fold a LoRA run's adapters into its base: a plain checkpoint.
    MergeLora(cli::merge_lora::MergeLoraArgs),
    /// Check a device against the CPU reference: every op forward and backward, a U-Net step, sampling.
    Selftest(cli::selftest::SelftestArgs),
    /// Benchmarks: `bench kernels` counts or times every op at the presets' sizes; `bench step` times whole training or sampling steps.
    Bench(cli::bench::BenchArgs),
}

/// Keeps freed tensor buffers inside the process (glibc's allocator): a
/// step frees and reallocates the same large activations, and by default
/// each one goes back to the kernel and returns as fresh zeroed pages (page
/// faults and page clearing, 5-10% of a CPU sampling step). Peak resident
/// memory stays the same (measured: the mnist training step's 532 MB).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's tuning parameters; it runs
    // first in main, before any other thread exists. A value it rejects
    // leaves the default in place, which is only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = set_memory_budget(cli.memory_limit.as_deref()).and_then(|()| match cli.command {
        Command::Train(a) => cli::train::run(a),
        Command::Sample(a) => cli::sample::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Denoise(a) => cli::denoise::run(a),
        Command::Inpaint(a) => cli::inpaint::run(a),
        Command::Img2img(a) => cli::img2img::run(a),
        Command::Info(a) => cli::info::run(a),
        Command::VerifyStep(a) => cli::verify::run(a),
        Command::Import(a) => cli::import::run(a),
        Command::Export(a) => cli::export::run(a),
        Command::Forward(a) => cli::forward::run(a),
        Command::MergeLora(a) => cli::merge_lora::run(a),
        Command::Selftest(a) => cli::selftest::run(a),
        Command::Bench(a) => cli::bench::run(a),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A signal's stop exits with 128 + the signal, as the shell expects.
            e.downcast_ref::<cli::signals::Interrupted>().map_or(ExitCode::FAILURE, |i| ExitCode::from(i.exit_code()))
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
