//! The memory budget: every allocation whose size comes from input (dataset
//! headers, model configs, `--n`, checkpoint files) is first compared with
//! this limit, and refused with one line saying what it needs, when the
//! limit would be passed, instead of aborting in the allocator.
//!
//! The limit is, in order: `diffuse --memory-limit SIZE`, the environment
//! variable `DIFFUSE_MEMORY_LIMIT=SIZE` (sizes such as `512M`, `8G`, `1.5GiB`
//! or plain bytes), or 80% of the physical memory (`MemTotal` of
//! /proc/meminfo; 8 GiB where that cannot be read).
//!
//! The needs are estimates from [`Footprint`] (exact parameter counts and
//! cached activations, upper bounds for the transient buffers) and from the
//! copies the code makes (checkpoints, sample grids, .npy files).

use crate::config::TrainConfig;
use crate::{Error, Result};
use diffuse_unet::{Footprint, UNetConfig};
use std::fmt;
use std::sync::OnceLock;

/// The environment variable that sets the limit.
pub const ENV_VAR: &str = "DIFFUSE_MEMORY_LIMIT";
/// Share of the physical memory used when no limit is given.
pub const PHYSICAL_FRACTION: f64 = 0.8;
/// The limit when neither a setting nor the physical memory is known.
pub const FALLBACK_LIMIT: u64 = 8 << 30;

/// Where the limit came from (named in every refusal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BudgetSource {
    /// `--memory-limit`.
    Flag,
    /// The environment variable [`ENV_VAR`].
    Env,
    /// [`PHYSICAL_FRACTION`] of this much physical memory.
    Physical { total: u64 },
    /// [`FALLBACK_LIMIT`]: the physical memory could not be read.
    Fallback,
}

impl fmt::Display for BudgetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetSource::Flag => write!(f, "set by --memory-limit"),
            BudgetSource::Env => write!(f, "set by {ENV_VAR}"),
            BudgetSource::Physical { total } => {
                write!(f, "{:.0}% of {} of physical memory", PHYSICAL_FRACTION * 100.0, format_bytes(*total))
            }
            BudgetSource::Fallback => write!(f, "a default: the physical memory is unknown"),
        }
    }
}

/// A limit on the bytes one command may allocate for data, models and outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    pub limit: u64,
    pub source: BudgetSource,
}

static GLOBAL: OnceLock<MemoryBudget> = OnceLock::new();

impl MemoryBudget {
    pub fn new(limit: u64, source: BudgetSource) -> Self {
        MemoryBudget { limit, source }
    }

    /// A limit given as text (`--memory-limit`).
    pub fn from_flag(text: &str) -> Result<Self> {
        let limit = parse_size(text).ok_or_else(|| {
            Error::InvalidArgument(format!("--memory-limit {text:?} is not a size (e.g. 512M, 8G, 1.5GiB, 1000000)"))
        })?;
        Ok(MemoryBudget::new(limit, BudgetSource::Flag))
    }

    /// [`ENV_VAR`] if it is set (an unreadable value is an error), else the
    /// physical memory's share.
    pub fn from_env() -> Result<Self> {
        match std::env::var(ENV_VAR) {
            Ok(text) => {
                let limit = parse_size(&text).ok_or_else(|| {
                    Error::InvalidArgument(format!("{ENV_VAR}={text:?} is not a size (e.g. 512M, 8G, 1.5GiB, 1000000)"))
                })?;
                Ok(MemoryBudget::new(limit, BudgetSource::Env))
            }
            Err(_) => Ok(Self::physical()),
        }
    }

    /// [`PHYSICAL_FRACTION`] of the physical memory, or [`FALLBACK_LIMIT`].
    pub fn physical() -> Self {
        match physical_memory() {
            Some(total) => {
                MemoryBudget::new((total as f64 * PHYSICAL_FRACTION) as u64, BudgetSource::Physical { total })
            }
            None => MemoryBudget::new(FALLBACK_LIMIT, BudgetSource::Fallback),
        }
    }

    /// Makes `budget` the process's budget; false if one was already in use.
    /// The command line calls this once, before anything is loaded.
    pub fn set_global(budget: MemoryBudget) -> bool {
        GLOBAL.set(budget).is_ok()
    }

    /// The process's budget: the one set by [`MemoryBudget::set_global`], or
    /// [`MemoryBudget::from_env`].
    pub fn global() -> Result<MemoryBudget> {
        if let Some(b) = GLOBAL.get() {
            return Ok(b.clone());
        }
        let b = Self::from_env()?;
        Ok(GLOBAL.get_or_init(|| b).clone())
    }

    /// Refuses `need` bytes for `what` when they pass the limit.
    pub fn check(&self, what: impl fmt::Display, need: &Need) -> Result<()> {
        if need.total() <= self.limit {
            return Ok(());
        }
        Err(Error::Memory {
            what: what.to_string(),
            need: need.to_string(),
            limit: format_bytes(self.limit),
            origin: self.source.to_string(),
        })
    }

    /// [`MemoryBudget::check`] for a need of one part.
    pub fn check_bytes(&self, what: impl fmt::Display, bytes: u64) -> Result<()> {
        self.check(what, &Need::one("", bytes))
    }
}

/// A need in bytes, with its parts (for the message).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Need {
    parts: Vec<(String, u64)>,
}

impl Need {
    pub fn one(what: impl Into<String>, bytes: u64) -> Self {
        Need { parts: vec![(what.into(), bytes)] }
    }

    pub fn add(mut self, what: impl Into<String>, bytes: u64) -> Self {
        self.parts.push((what.into(), bytes));
        self
    }

    pub fn total(&self) -> u64 {
        self.parts.iter().fold(0u64, |a, (_, b)| a.saturating_add(*b))
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", format_bytes(self.total()))?;
        let named: Vec<String> = self
            .parts
            .iter()
            .filter(|(w, _)| !w.is_empty())
            .map(|(w, b)| format!("{w} {}", format_bytes(*b)))
            .collect();
        if !named.is_empty() {
            write!(f, " ({})", named.join(" + "))?;
        }
        Ok(())
    }
}

/// `a * b`, saturating (sizes past u64 are refused anyway).
pub fn mul(a: u64, b: u64) -> u64 {
    a.saturating_mul(b)
}

/// Bytes of a dataset of `images` images of `values_per_image` values: the
/// f32 values, plus the raw bytes they are converted from.
pub fn dataset_need(images: u64, values_per_image: u64) -> Need {
    let values = mul(images, values_per_image);
    Need::one("f32 images", mul(values, 4)).add("raw bytes", values)
}

/// What a training run holds in host memory: the weights five times
/// (weights, gradients, EMA, two AdamW moments), one more model for the
/// sample grids, a checkpoint being written (all four groups, copied once
/// more when serialised), and on the CPU the activations of one micro-batch
/// or of the sample grid's batch, whichever is larger. The dataset is
/// checked when it is read.
pub fn training_need(cfg: &TrainConfig, on_cpu: bool) -> Result<Need> {
    let fp = Footprint::of(&cfg.model)?;
    let w = fp.weight_bytes();
    let threads = rayon::current_num_threads();
    let sample_batch = cfg.sample_count.clamp(1, 64);
    let activations = if on_cpu {
        fp.training_activation_bytes(cfg.batch_size, threads).max(fp.inference_activation_bytes(sample_batch, threads))
    } else {
        0
    };
    let per_image = mul(cfg.model.in_ch as u64, mul(cfg.model.image_size as u64, cfg.model.image_size as u64));
    Ok(Need::one("model, gradients, EMA and AdamW state", mul(w, 5))
        .add("sampling model", w)
        .add("checkpoint being written", mul(w, 8))
        .add(format!("activations (batch {})", cfg.batch_size), activations)
        .add("sample grid", mul(mul(cfg.sample_count as u64, per_image), 12)))
}

/// What `diffuse sample` holds: the checkpoint file, the model, the
/// activations of one batch (on the CPU), and `n` images about five times
/// over (the samples, their copy for the grid, the grid, the .npy values
/// and their bytes).
pub fn sampling_need(model: &UNetConfig, checkpoint_bytes: u64, n: usize, batch: usize, on_cpu: bool) -> Result<Need> {
    let fp = Footprint::of(model)?;
    let threads = rayon::current_num_threads();
    let per_image = mul(model.in_ch as u64, mul(model.image_size as u64, model.image_size as u64));
    let activations = if on_cpu { fp.inference_activation_bytes(batch.min(n), threads) } else { 0 };
    Ok(Need::one("checkpoint file", checkpoint_bytes)
        .add("model", fp.weight_bytes())
        .add(format!("activations (batch {})", batch.min(n)), activations)
        .add(format!("{n} images and their copies"), mul(mul(n as u64, per_image), 20)))
}

/// Parses `123`, `512K`, `512M`, `8G`, `1T`, `1.5GiB`, `8 GB` (binary
/// multiples in every spelling); None for anything else or a size past u64.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    let bytes = value * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// `1536` -> `1.5 KiB`; whole bytes below 1 KiB.
pub fn format_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
