//! Checkpoints: one safetensors file holding the weights (`model.*`), the
//! EMA weights (`ema.*`) and the AdamW moments (`adam_m.*`, `adam_v.*`),
//! with the step, the configuration and the data-order state as metadata.
//! Files are written to a temporary name, synced and renamed, so an
//! interrupted write never damages an earlier checkpoint.
//!
//! Integrity: the metadata holds a CRC-32 of every tensor's bytes
//! (`checksums`, a JSON object name -> 8 hex digits); [`Checkpoint::open`]
//! verifies them and refuses NaN or infinite values, naming the tensor.
//! Checkpoints written before checksums existed still load
//! ([`Checkpoint::verified`] is false, and the command line says so).

use crate::config::TrainConfig;
use crate::data::LoaderState;
use crate::divergence::LossWatch;
use crate::finetune;
use crate::memory_budget::{MemoryBudget, Need};
use crate::optim::{AdamW, Ema};
use crate::sampler::Variance;
use crate::{Error, Result};
use diffuse_tensor::{Device, Tensor};
use diffuse_unet::atomic_file::write_atomic;
use diffuse_unet::io::{parse, serialize, tensor_bytes, view_to_tensor};
use diffuse_unet::{Footprint, ParamId, UNet, UNetConfig};
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "diffuse-checkpoint";
pub const VERSION: &str = "1";

/// The training position a checkpoint restores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainState {
    /// Optimiser steps completed.
    pub step: u64,
    pub loader: LoaderState,
    pub ema_updates: u64,
    /// The divergence watch's running mean (default in older checkpoints).
    pub loss_watch: LossWatch,
}

/// The metadata key of the per-tensor checksums.
const CHECKSUMS: &str = "checksums";

fn checksum(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// Metadata key of the DDPM sampling variance a model was trained for
/// ("large" or "small"), when known (imported models); `diffuse sample`
/// uses it unless told otherwise.
pub const SAMPLE_VARIANCE_KEY: &str = "sample_variance";

/// A LoRA run stores only its adapters (the base is referenced by path and
/// hash in its config); AdamW moments exist only for trainable tensors.
pub fn save(path: &Path, cfg: &TrainConfig, model: &UNet, ema: &Ema, opt: &AdamW, state: TrainState) -> Result<()> {
    save_with_variance(path, cfg, model, ema, opt, state, None)
}

/// [`save`], recording the model's preferred DDPM sampling variance.
pub fn save_with_variance(
    path: &Path,
    cfg: &TrainConfig,
    model: &UNet,
    ema: &Ema,
    opt: &AdamW,
    state: TrainState,
    variance: Option<Variance>,
) -> Result<()> {
    let mut entries = Vec::new();
    let names: Vec<String> = model.params.iter().map(|(n, _)| n.to_string()).collect();
    let stored: Vec<bool> = model.params.ids().map(|id| cfg.lora.is_none() || model.params.is_adapter(id)).collect();
    let mut push = |prefix: &str, tensors: Vec<Option<&Tensor>>| -> Result<()> {
        for ((n, t), keep) in names.iter().zip(tensors).zip(&stored) {
            if let (Some(t), true) = (t, keep) {
                entries.push((format!("{prefix}.{n}"), t.dims().to_vec(), tensor_bytes(t)?));
            }
        }
        Ok(())
    };
    push("model", model.params.iter().map(|(_, t)| Some(t)).collect())?;
    push("ema", ema.values.iter().map(Some).collect())?;
    push("adam_m", opt.m.iter().map(Option::as_ref).collect())?;
    push("adam_v", opt.v.iter().map(Option::as_ref).collect())?;
    let sums: BTreeMap<&str, String> = entries.iter().map(|(n, _, b)| (n.as_str(), checksum(b))).collect();
    let mut meta = HashMap::from([
        (CHECKSUMS.to_string(), serde_json::to_string(&sums).unwrap_or_default()),
        // Bits, so that a resumed run's watch is exactly the one saved.
        ("loss_mean_bits".to_string(), state.loss_watch.average.to_bits().to_string()),
        ("loss_count".to_string(), state.loss_watch.count.to_string()),
        ("loss_lowest_mean_bits".to_string(), state.loss_watch.lowest_mean.to_bits().to_string()),
        ("format".to_string(), FORMAT.to_string()),
        ("version".to_string(), VERSION.to_string()),
        ("step".to_string(), state.step.to_string()),
        ("adam_step".to_string(), opt.step.to_string()),
        ("ema_updates".to_string(), state.ema_updates.to_string()),
        ("loader_epoch".to_string(), state.loader.epoch.to_string()),
        ("loader_position".to_string(), state.loader.position.to_string()),
        ("config".to_string(), serde_json::to_string(&cfg.model).unwrap_or_default()),
        ("train_config".to_string(), cfg.to_json()),
    ]);
    if let Some(v) = variance {
        meta.insert(SAMPLE_VARIANCE_KEY.to_string(), variance_name(v).to_string());
    }
    let bytes = serialize(&entries, meta)?;
    write_atomic(path, &bytes)?;
    Ok(())
}

/// A checkpoint read from disk, checked to be ours and whole.
pub struct Checkpoint {
    pub path: PathBuf,
    pub train_config: TrainConfig,
    pub state: TrainState,
    pub adam_step: u64,
    /// The DDPM sampling variance recorded with the model, if any.
    pub sample_variance: Option<Variance>,
    /// Whether the file had checksums (older checkpoints have none).
    pub verified: bool,
    bytes: Vec<u8>,
}

fn variance_name(v: Variance) -> &'static str {
    match v {
        Variance::FixedLarge => "large",
        Variance::FixedSmall => "small",
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), reason: reason.into() }
}

impl Checkpoint {
    /// Reads `path`, or the newest checkpoint when `path` is a run directory
    /// (or its `checkpoints/` folder).
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let file = resolve(path)?;
        let len = std::fs::metadata(&file).map_err(|e| Error::io(&file, e))?.len();
        MemoryBudget::global()?.check_bytes(format!("reading checkpoint {}", file.display()), len)?;
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let meta = diffuse_unet::io::metadata(&bytes)
            .map_err(|e| bad(&file, format!("not a readable checkpoint (truncated or corrupt?): {e}")))?;
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(&file, "not a diffuse checkpoint (no \"format\": \"diffuse-checkpoint\" in its metadata)"));
        }
        if meta.get("version").map(String::as_str) != Some(VERSION) {
            return Err(bad(
                &file,
                format!("checkpoint version {:?} is not supported (expected {VERSION})", meta.get("version")),
            ));
        }
        // Parse the whole file now, so a truncated body fails here and not midway.
        let st = parse(&bytes).map_err(|e| bad(&file, format!("truncated or corrupt: {e}")))?;
        let verified = verify_tensors(&file, &st, meta.get(CHECKSUMS))?;
        let num = |k: &str| -> Result<u64> {
            meta.get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad(&file, format!("metadata {k:?} is missing or not a number")))
        };
        let train_config = TrainConfig::from_json(meta.get("train_config").map(String::as_str).unwrap_or(""))
            .map_err(|e| bad(&file, e.to_string()))?;
        // The architecture sizes every later allocation: refuse a bad one here.
        train_config.model.validate().map_err(|e| bad(&file, e.to_string()))?;
        let state = TrainState {
            step: num("step")?,
            loader: LoaderState { epoch: num("loader_epoch")?, position: num("loader_position")? },
            ema_updates: num("ema_updates")?,
            loss_watch: match meta.get("loss_count") {
                Some(_) => LossWatch {
                    average: f64::from_bits(num("loss_mean_bits")?),
                    count: num("loss_count")?,
                    lowest_mean: f64::from_bits(num("loss_lowest_mean_bits")?),
                },
                None => LossWatch::default(),
            },
        };
        let adam_step = num("adam_step")?;
        let sample_variance = match meta.get(SAMPLE_VARIANCE_KEY).map(String::as_str) {
            None => None,
            Some("large") => Some(Variance::FixedLarge),
            Some("small") => Some(Variance::FixedSmall),
            Some(other) => return Err(bad(&file, format!("metadata {SAMPLE_VARIANCE_KEY:?} is {other:?}"))),
        };
        Ok(Checkpoint { path: file, train_config, state, adam_step, sample_variance, verified, bytes })
    }

    pub fn model_config(&self) -> &UNetConfig {
        &self.train_config.model
    }

    /// The tensors `{prefix}.<name>` for the parameters `want` picks (None for the others).
    fn load_group(&self, prefix: &str, model: &UNet, want: impl Fn(ParamId) -> bool) -> Result<Vec<Option<Tensor>>> {
        let st = parse(&self.bytes).map_err(|e| bad(&self.path, e.to_string()))?;
        model
            .params
            .ids()
            .map(|id| {
                if !want(id) {
                    return Ok(None);
                }
                let (n, like) = (model.params.name(id), model.params.value(id));
                let name = format!("{prefix}.{n}");
                let view = st.tensor(&name).map_err(|_| bad(&self.path, format!("tensor {name} is missing")))?;
                // Shapes before values: nothing is converted for a tensor that does not fit.
                if view.shape() != like.dims() {
                    return Err(bad(
                        &self.path,
                        format!("tensor {name} has shape {:?}, the model needs {:?}", view.shape(), like.dims()),
                    ));
                }
                let t = view_to_tensor(&name, &view)?;
                Ok(Some(t.to_dtype(like.dtype())?.to_device(&like.device())?))
            })
            .collect()
    }

    /// Whether the file holds this parameter's weights (a LoRA run: adapters only).
    fn stores(&self, model: &UNet, id: ParamId) -> bool {
        self.train_config.lora.is_none() || model.params.is_adapter(id)
    }

    /// A model with the checkpoint's weights (`ema` picks the EMA weights).
    /// A LoRA checkpoint's base is loaded from the path it records and
    /// checked against its hash. Parameters come out trainable or frozen as
    /// the run's config says.
    pub fn load_model(&self, device: &Device, ema: bool) -> Result<UNet> {
        // The model is built, then each tensor converted: twice the weights.
        let weights = Footprint::of(&self.train_config.model)?.weight_bytes();
        MemoryBudget::global()?.check(
            format!("the model of {}", self.path.display()),
            &Need::one("weights and their conversion", weights.saturating_mul(2)),
        )?;
        let mut model = finetune::build_model(&self.train_config, 0, device)?;
        if let Some(l) = &self.train_config.lora {
            finetune::copy_base(&finetune::load_lora_base(l, device)?, &mut model)?;
        }
        let values = self.load_group(if ema { "ema" } else { "model" }, &model, |id| self.stores(&model, id))?;
        let ids: Vec<_> = model.params.ids().collect();
        for (id, v) in ids.into_iter().zip(values) {
            if let Some(v) = v {
                model.params.set(id, v)?;
            }
        }
        Ok(model)
    }

    /// Restores the EMA and optimiser state for `model` (built by `load_model(.., false)`).
    pub fn load_training_state(&self, model: &UNet, ema: &mut Ema, opt: &mut AdamW) -> Result<()> {
        let stored = self.load_group("ema", model, |id| self.stores(model, id))?;
        ema.values =
            stored.into_iter().zip(model.params.iter()).map(|(e, (_, p))| e.unwrap_or_else(|| p.clone())).collect();
        ema.updates = self.state.ema_updates;
        opt.m = self.load_group("adam_m", model, |id| model.params.is_trainable(id))?;
        opt.v = self.load_group("adam_v", model, |id| model.params.is_trainable(id))?;
        opt.step = self.adam_step;
        Ok(())
    }
}

/// Checks every tensor against its checksum (when the file has them) and
/// refuses non-finite f32 values; true when checksums were verified.
fn verify_tensors(file: &Path, st: &safetensors::SafeTensors<'_>, sums: Option<&String>) -> Result<bool> {
    let sums: Option<HashMap<String, String>> = sums
        .map(|s| serde_json::from_str(s))
        .transpose()
        .map_err(|e| bad(file, format!("metadata {CHECKSUMS:?} is not a JSON object of strings: {e}")))?;
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in &tensors {
        let data = view.data();
        if let Some(sums) = &sums {
            let stored = sums.get(name).ok_or_else(|| bad(file, format!("tensor {name} has no checksum")))?;
            let computed = checksum(data);
            if *stored != computed {
                return Err(bad(
                    file,
                    format!(
                        "corrupt: tensor {name} fails its checksum (stored {stored}, computed {computed}); \
                         the file was changed after it was written"
                    ),
                ));
            }
        }
        if view.dtype() == Dtype::F32 {
            let first_bad =
                data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).position(|x| !x.is_finite());
            if let Some(i) = first_bad {
                return Err(bad(
                    file,
                    format!("corrupt: tensor {name} holds non-finite values (the first at element {i}); refusing to load it"),
                ));
            }
        }
    }
    Ok(sums.is_some())
}

/// Opens the checkpoint a resume starts from: `path` itself, or the newest
/// checkpoint of a run directory. When that one is damaged, the error says
/// so and names the newest whole checkpoint before it; with `last_good`
/// that one is opened instead, and the returned notes say what was skipped.
pub fn open_for_resume(path: &Path, last_good: bool) -> Result<(Checkpoint, Vec<String>)> {
    let newest = resolve(path)?;
    let first_err = match Checkpoint::open(&newest) {
        Ok(c) => return Ok((c, Vec::new())),
        Err(e @ Error::Checkpoint { .. }) => e,
        Err(e) => return Err(e),
    };
    let dir = newest.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let older: Vec<PathBuf> = list(&dir)?.into_iter().take_while(|p| *p != newest).collect();
    let mut notes = vec![format!("skipping {first_err}")];
    for p in older.iter().rev() {
        match Checkpoint::open(p) {
            Ok(c) if last_good => return Ok((c, notes)),
            Ok(c) => {
                let good = c.path.display();
                return Err(bad(
                    &newest,
                    format!(
                        "{}; the newest good checkpoint of this run is {good}: resume from it with \
                         --resume {good} (or --resume-from-last-good)",
                        reason_of(&first_err)
                    ),
                ));
            }
            Err(e @ Error::Checkpoint { .. }) => notes.push(format!("skipping {e}")),
            Err(e) => return Err(e),
        }
    }
    Err(bad(&newest, format!("{}; no older checkpoint of this run is whole either", reason_of(&first_err))))
}

fn reason_of(e: &Error) -> String {
    match e {
        Error::Checkpoint { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

pub fn checkpoint_name(step: u64) -> String {
    format!("ckpt-{step:08}.safetensors")
}

/// The step of a checkpoint file named by [`checkpoint_name`].
pub fn step_of(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_prefix("ckpt-")?.strip_suffix(".safetensors")?.parse().ok()
}

/// The checkpoints in a folder, oldest first.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<(u64, PathBuf)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let path = e.path();
                Some((step_of(&path)?, path))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(dir, e)),
    };
    v.sort();
    Ok(v.into_iter().map(|(_, p)| p).collect())
}

/// A checkpoint file, or the newest one in a run directory.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.exists() {
        return Err(Error::NotFound { path: path.to_path_buf() });
    }
    let dir = if path.join("checkpoints").is_dir() { path.join("checkpoints") } else { path.to_path_buf() };
    list(&dir)?.pop().ok_or_else(|| bad(path, "no checkpoint (ckpt-*.safetensors) found in this directory"))
}

/// Deletes all but the newest `keep` checkpoints of a folder.
pub fn prune(dir: &Path, keep: usize) -> Result<()> {
    let all = list(dir)?;
    if all.len() > keep {
        for p in &all[..all.len() - keep] {
            std::fs::remove_file(p).map_err(|e| Error::io(p, e))?;
        }
    }
    Ok(())
}
