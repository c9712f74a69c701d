//! Checkpoints: one safetensors file holding the weights (`model.*`), the
//! EMA weights (`ema.*`) and the AdamW moments (`adam_m.*`, `adam_v.*`),
//! with the step, the configuration and the data-order state as metadata.
//! Files are written to a temporary name, synced and renamed, so an
//! interrupted write never damages an earlier checkpoint.

use crate::config::TrainConfig;
use crate::data::LoaderState;
use crate::finetune;
use crate::optim::{AdamW, Ema};
use crate::{Error, Result};
use diffuse_tensor::{Device, Tensor};
use diffuse_unet::atomic_file::write_atomic;
use diffuse_unet::io::{parse, serialize, tensor_bytes, view_to_tensor};
use diffuse_unet::{ParamId, UNet, UNetConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "diffuse-checkpoint";
pub const VERSION: &str = "1";

/// The training position a checkpoint restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainState {
    /// Optimiser steps completed.
    pub step: u64,
    pub loader: LoaderState,
    pub ema_updates: u64,
}

/// A LoRA run stores only its adapters (the base is referenced by path and
/// hash in its config); AdamW moments exist only for trainable tensors.
pub fn save(path: &Path, cfg: &TrainConfig, model: &UNet, ema: &Ema, opt: &AdamW, state: TrainState) -> Result<()> {
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
    let meta = HashMap::from([
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
    bytes: Vec<u8>,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), reason: reason.into() }
}

impl Checkpoint {
    /// Reads `path`, or the newest checkpoint when `path` is a run directory
    /// (or its `checkpoints/` folder).
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let file = resolve(path)?;
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
        parse(&bytes).map_err(|e| bad(&file, format!("truncated or corrupt: {e}")))?;
        let num = |k: &str| -> Result<u64> {
            meta.get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad(&file, format!("metadata {k:?} is missing or not a number")))
        };
        let train_config = TrainConfig::from_json(meta.get("train_config").map(String::as_str).unwrap_or(""))
            .map_err(|e| bad(&file, e.to_string()))?;
        let state = TrainState {
            step: num("step")?,
            loader: LoaderState { epoch: num("loader_epoch")?, position: num("loader_position")? },
            ema_updates: num("ema_updates")?,
        };
        let adam_step = num("adam_step")?;
        Ok(Checkpoint { path: file, train_config, state, adam_step, bytes })
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
                let t = view_to_tensor(&name, &view)?;
                if t.dims() != like.dims() {
                    return Err(bad(
                        &self.path,
                        format!("tensor {name} has shape {:?}, the model needs {:?}", t.dims(), like.dims()),
                    ));
                }
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

pub fn checkpoint_name(step: u64) -> String {
    format!("ckpt-{step:08}.safetensors")
}

/// The checkpoints in a folder, oldest first.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<(u64, PathBuf)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let step = name.strip_prefix("ckpt-")?.strip_suffix(".safetensors")?.parse().ok()?;
                Some((step, e.path()))
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
