//! What `denoise`, `inpaint` and `img2img` share: the model flags
//! (checkpoint or run directory, EMA weights by default, device), the input
//! images (PNG/JPEG files, folders of them, or a dataset file), the sampler
//! flags, where outputs go, and writing panels side by side.
//!
//! Everything is read and checked before anything is written: a bad input
//! gives one `error:` line and leaves no file behind.

use super::device::DeviceSpec;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use diffuse_tensor::{Device, Tensor};
use diffuse_trainer::checkpoint::Checkpoint;
use diffuse_trainer::data::list_images;
use diffuse_trainer::diffusion::Diffusion;
use diffuse_trainer::image_grid::make_grid;
use diffuse_trainer::raster::{load_image, looks_like_image, Resize, ValueRange};
use diffuse_trainer::sampler::{Sampler, Variance};
use diffuse_trainer::Dataset;
use diffuse_unet::atomic_file::write_atomic;
use diffuse_unet::UNet;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ModelArgs {
    /// A checkpoint file or a run directory (its newest checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Use the raw weights instead of the EMA weights.
    #[arg(long)]
    pub no_ema: bool,
    /// Device to run on.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// Seed of every random draw (added noise, sampler noise, masks).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per model call.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
}

pub struct Model {
    pub unet: UNet,
    pub diffusion: Diffusion,
    pub checkpoint: Checkpoint,
    pub device: Device,
}

impl Model {
    pub fn load(a: &ModelArgs) -> Result<Model> {
        if a.batch == 0 {
            bail!("--batch must be at least 1");
        }
        let device = a.device.open()?;
        let checkpoint = Checkpoint::open(&a.checkpoint)?;
        let unet = checkpoint.load_model(&device, !a.no_ema)?;
        let tc = &checkpoint.train_config;
        let diffusion = Diffusion::new(tc.schedule, tc.timesteps, tc.target)?;
        Ok(Model { unet, diffusion, checkpoint, device })
    }

    /// `[channels, size, size]` of the model's images.
    pub fn image_dims(&self) -> [usize; 3] {
        let c = &self.unet.config;
        [c.in_ch, c.image_size, c.image_size]
    }

    pub fn describe(&self, ema: bool) -> String {
        format!(
            "{} (step {}, {} weights) on {}",
            self.checkpoint.path.display(),
            self.checkpoint.state.step,
            if ema { "EMA" } else { "raw" },
            self.device
        )
    }
}

#[derive(Args)]
pub struct InputArgs {
    /// Input images: PNG/JPEG files, folders of them, or a dataset file (MNIST IDX, CIFAR-10 .bin); several allowed.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// At most this many images from each folder or dataset (the first ones).
    #[arg(long, default_value_t = 16)]
    pub n: usize,
}

/// The input images, converted to the model's shape, in `[-1, 1]`.
pub struct Inputs {
    pub names: Vec<String>,
    /// `[width, height]` of each image before resizing.
    pub sizes: Vec<[usize; 2]>,
    /// N x C x H x W values.
    pub values: Vec<f32>,
    pub dims: [usize; 3],
}

impl Inputs {
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn image(&self, i: usize) -> &[f32] {
        let per = self.per_image();
        &self.values[i * per..(i + 1) * per]
    }

    pub fn per_image(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn shape(&self) -> [usize; 4] {
        [self.len(), self.dims[0], self.dims[1], self.dims[2]]
    }
}

fn stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into())
}

/// Reads every input; warns (on stderr, once all were read) about resized
/// images and converted channels.
pub fn load_inputs(a: &InputArgs, dims: [usize; 3]) -> Result<Inputs> {
    let [channels, size, _] = dims;
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    let mut inputs = Inputs { names: Vec::new(), sizes: Vec::new(), values: Vec::new(), dims };
    let (mut resized, mut converted) = (Vec::new(), Vec::new());
    let mut add_file = |path: &Path, inputs: &mut Inputs| -> Result<()> {
        let img = load_image(path, channels, size, Resize::Smooth)?;
        if img.resized(size) {
            resized.push(format!("{} ({}x{})", path.display(), img.width, img.height));
        }
        if img.channels != channels {
            converted.push(path.display().to_string());
        }
        inputs.names.push(stem(path));
        inputs.sizes.push([img.width, img.height]);
        inputs.values.extend(img.values);
        Ok(())
    };
    for path in &a.input {
        if !path.exists() {
            bail!("{}: no such file or directory", path.display());
        }
        let files = if path.is_dir() { list_images(path)? } else { Vec::new() };
        if !files.is_empty() {
            for f in files.iter().take(a.n) {
                add_file(f, &mut inputs)?;
            }
        } else if path.is_file() && (looks_like_image(path) || has_image_extension(path)) {
            add_file(path, &mut inputs)?;
        } else {
            let ds = Dataset::open(path, channels, size).map_err(|e| {
                anyhow!("{}: neither a PNG/JPEG image nor a dataset the model can read ({e})", path.display())
            })?;
            let take = ds.len().min(a.n);
            let per = ds.image_len();
            for i in 0..take {
                inputs.names.push(format!("{}-{i:05}", stem(path).trim_end_matches(".gz").replace('.', "_")));
                inputs.sizes.push([size, size]);
                inputs.values.extend_from_slice(&ds.images()[i * per..(i + 1) * per]);
            }
        }
    }
    dedup_names(&mut inputs.names);
    let what = if channels == 1 { "grey" } else { "RGB" };
    if !resized.is_empty() {
        eprintln!(
            "warning: {} image(s) resized to the model's {size}x{size} (shorter side scaled, centre cropped): {}",
            resized.len(),
            resized.join(", ")
        );
    }
    if !converted.is_empty() {
        eprintln!(
            "warning: {} image(s) converted to {what} ({channels} channel(s), as the model): {}",
            converted.len(),
            converted.join(", ")
        );
    }
    Ok(inputs)
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["png", "jpg", "jpeg"].iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Makes names unique by appending -2, -3, ...
fn dedup_names(names: &mut [String]) {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for n in names.iter_mut() {
        let k = seen.entry(n.clone()).or_insert(0);
        *k += 1;
        if *k > 1 {
            *n = format!("{n}-{k}");
        }
    }
}

/// The samplers that step through timesteps, so can start from any x_t.
#[derive(Clone, Copy, ValueEnum)]
pub enum SamplerKind {
    Ddpm,
    Ddim,
}

#[derive(Args)]
pub struct SamplerArgs {
    /// Reverse process: DDPM (every step, posterior variance) or DDIM.
    #[arg(long, value_enum, default_value = "ddim")]
    pub sampler: SamplerKind,
    /// DDIM steps of a full T-step run; a run from t < T takes the same step size.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// DDIM eta: 0 is deterministic, 1 is DDPM-like.
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
}

impl SamplerArgs {
    pub fn sampler(&self) -> Sampler {
        match self.sampler {
            SamplerKind::Ddpm => Sampler::Ddpm { variance: Variance::FixedSmall },
            SamplerKind::Ddim => Sampler::Ddim { steps: self.steps, eta: self.eta },
        }
    }

    pub fn name(&self) -> &'static str {
        match self.sampler {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
        }
    }
}

/// Where the outputs go: one PNG, or a folder of them.
pub enum OutPlan {
    File(PathBuf),
    Dir(PathBuf),
}

impl OutPlan {
    /// A folder when there are several images, when `out` is a folder, or
    /// when it has no extension; otherwise a `.png` file.
    pub fn new(out: &Path, count: usize) -> Result<OutPlan> {
        if count > 1 || out.is_dir() || out.extension().is_none() {
            if out.exists() && !out.is_dir() {
                bail!("--out {}: {count} images need a folder, and this is a file", out.display());
            }
            return Ok(OutPlan::Dir(out.to_path_buf()));
        }
        if !out.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("png")) {
            bail!("--out {}: the output is a PNG; name it *.png (or give a folder)", out.display());
        }
        Ok(OutPlan::File(out.to_path_buf()))
    }

    /// The PNG of the image called `name`.
    pub fn image_path(&self, name: &str) -> PathBuf {
        match self {
            OutPlan::File(p) => p.clone(),
            OutPlan::Dir(d) => d.join(format!("{name}.png")),
        }
    }

    /// A side file (`metrics.json`, `overview.png`): next to the PNG as
    /// `<out stem>-<name>` for a file, in the folder otherwise.
    pub fn side_path(&self, name: &str) -> PathBuf {
        match self {
            OutPlan::File(p) => p.with_file_name(format!("{}-{name}", stem(p))),
            OutPlan::Dir(d) => d.join(name),
        }
    }

    /// Creates the folder (only once everything was computed).
    pub fn prepare(&self) -> Result<()> {
        if let OutPlan::Dir(d) = self {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(())
    }
}

/// Panels (each one image of `dims`, model units) side by side.
pub fn panels_png(path: &Path, panels: &[&[f32]], dims: [usize; 3]) -> Result<()> {
    let all: Vec<f32> = panels.iter().flat_map(|p| p.iter().copied()).collect();
    let [c, h, w] = dims;
    make_grid(&all, [panels.len(), c, h, w], panels.len(), ValueRange::Signed)?.save_png(path)?;
    Ok(())
}

/// The first few images side by side: one row per kind of panel (input,
/// noisy, result, ...), one column per image.
pub fn overview_png(path: &Path, images: &[Vec<&[f32]>], dims: [usize; 3]) -> Result<()> {
    let kinds = images.first().map_or(0, Vec::len);
    let all: Vec<f32> =
        (0..kinds).flat_map(|k| images.iter().flat_map(move |panels| panels[k].iter().copied())).collect();
    let [c, h, w] = dims;
    make_grid(&all, [images.len() * kinds, c, h, w], images.len(), ValueRange::Signed)?.save_png(path)?;
    Ok(())
}

/// How many images the overview shows.
pub const OVERVIEW_IMAGES: usize = 10;

/// Writes JSON atomically.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, format!("{text}\n").as_bytes())?;
    Ok(())
}

/// Runs `f` on batches of at most `batch` images (model units) and joins the
/// results; `f` gets the batch tensor on the model's device and the index of
/// its first image.
pub fn by_batches(
    values: &[f32],
    dims: [usize; 3],
    batch: usize,
    device: &Device,
    mut f: impl FnMut(&Tensor, usize) -> Result<Tensor>,
) -> Result<Vec<f32>> {
    let per: usize = dims.iter().product();
    let n = values.len() / per;
    let mut out = Vec::with_capacity(values.len());
    for start in (0..n).step_by(batch) {
        let b = batch.min(n - start);
        let x = Tensor::from_slice(&values[start * per..(start + b) * per], [b, dims[0], dims[1], dims[2]])?
            .to_device(device)?;
        out.extend(f(&x, start)?.to_vec_f32()?);
    }
    Ok(out)
}

/// A progress bar on a terminal (nothing otherwise), fed `(done, total)`.
pub struct StepBar(Option<ProgressBar>);

impl StepBar {
    pub fn new() -> Self {
        StepBar(std::io::stdout().is_terminal().then(|| {
            let b = ProgressBar::new(1);
            b.set_style(
                ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} {elapsed_precise}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        }))
    }

    pub fn update(&self, done: usize, total: usize) {
        if let Some(b) = &self.0 {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    }

    pub fn finish(self) {
        if let Some(b) = self.0 {
            b.finish_and_clear();
        }
    }
}

/// `[-1, 1]` values to `[0, 1]` (not clamped).
pub fn to_unit(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| (x + 1.0) * 0.5).collect()
}
