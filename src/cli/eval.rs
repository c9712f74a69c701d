//! `diffuse eval`: how well a checkpoint denoises held-out images. For each
//! timestep t, images are noised with q_sample and the model's one-step
//! estimate of x0 is compared with the clean image (MSE, PSNR, SSIM in
//! [0, 1] pixel units), plus the training loss at that t.

use super::device::DeviceSpec;
use anyhow::{bail, Result};
use clap::Args;
use diffuse_tensor::{ops, Tensor};
use diffuse_trainer::checkpoint::Checkpoint;
use diffuse_trainer::diffusion::Diffusion;
use diffuse_trainer::metrics;
use diffuse_trainer::Dataset;
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    /// A checkpoint file or a run directory (its newest checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Held-out images (default: the bundled MNIST test split).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Images to evaluate (the first N).
    #[arg(long, default_value_t = 256)]
    pub n: usize,
    /// Comma-separated timesteps.
    #[arg(long, default_value = "50,250,500,750")]
    pub t: String,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use the raw weights instead of the EMA weights.
    #[arg(long)]
    pub no_ema: bool,
    /// Device to run on.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
}

fn default_test_data() -> PathBuf {
    let rel = PathBuf::from("data/mnist10k/t10k-images-idx3-ubyte.gz");
    if rel.exists() {
        rel
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
    }
}

pub fn run(a: EvalArgs) -> Result<()> {
    let device = a.device.open()?;
    let ckpt = Checkpoint::open(&a.checkpoint)?;
    let model = ckpt.load_model(&device, !a.no_ema)?;
    let tc = &ckpt.train_config;
    let d = Diffusion::new(tc.schedule, tc.timesteps, tc.target)?;
    let cfg = &model.config;
    let data = Dataset::open(a.data.clone().unwrap_or_else(default_test_data), cfg.in_ch, cfg.image_size)?;
    let n = a.n.min(data.len());
    if n == 0 || a.batch == 0 {
        bail!("nothing to evaluate: --n and --batch must be positive");
    }
    let ts: Vec<usize> =
        a.t.split(',')
            .map(|s| s.trim().parse::<usize>().map_err(|_| anyhow::anyhow!("bad timestep {s:?} in --t")))
            .collect::<Result<_>>()?;
    if let Some(&bad) = ts.iter().find(|&&t| t >= d.timesteps) {
        bail!("timestep {bad} is outside 0..{}", d.timesteps);
    }
    let per = data.image_len();
    let to_unit = |v: &[f32]| v.iter().map(|&x| ((x + 1.0) * 0.5).clamp(0.0, 1.0)).collect::<Vec<f32>>();
    for &t in &ts {
        let (mut loss_sum, mut clean, mut est) = (0.0, Vec::with_capacity(n * per), Vec::with_capacity(n * per));
        for (k, start) in (0..n).step_by(a.batch).enumerate() {
            let b = a.batch.min(n - start);
            let shape = [b, cfg.in_ch, cfg.image_size, cfg.image_size];
            let x0 = Tensor::from_slice(&data.images()[start * per..(start + b) * per], shape)?.to_device(&device)?;
            let tt = vec![t; b];
            let (x_t, eps) = d.q_sample(&x0, &tt, a.seed, k as u32)?;
            let target = d.target_of(&x0, &eps, &tt)?;
            let t_tensor = Tensor::full([b], t as f64, diffuse_tensor::DType::F32, &device)?;
            let out = model.forward(&x_t, &t_tensor)?;
            loss_sum += ops::mse_loss_forward(&out, &target)?.scalar_f64()? * b as f64;
            let (_, x0_hat) = d.split_prediction(&x_t, &out, t)?;
            clean.extend(to_unit(&x0.to_vec_f32()?));
            est.extend(to_unit(&x0_hat.to_vec_f32()?));
        }
        let shape = [n, cfg.in_ch, cfg.image_size, cfg.image_size];
        let mse = metrics::mse(&est, &clean)?;
        let psnr = metrics::psnr_per_image(&est, &clean, shape, 1.0)?;
        let psnr = psnr.iter().filter(|p| p.is_finite()).sum::<f64>() / psnr.len() as f64;
        let ssim = metrics::ssim(&est, &clean, shape)?;
        println!(
            "{}",
            serde_json::json!({"t": t, "images": n, "loss": loss_sum / n as f64, "x0_mse": mse, "x0_psnr_db": psnr, "x0_ssim": ssim})
        );
    }
    Ok(())
}
