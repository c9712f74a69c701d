//! Fine-tuning setups a `TrainConfig` describes: which parameters train
//! (`freeze`, `train_only`), their learning-rate factors (`lr_scale`), and
//! LoRA adapters on a frozen base, identified by a SHA-256 of its weights.

use crate::checkpoint::Checkpoint;
use crate::config::{LoraConfig, TrainConfig};
use crate::param_select::{self, Pattern};
use crate::{Error, Result};
use diffuse_tensor::{DType, Device};
use diffuse_unet::layers::{merged_weight, LoraPlan};
use diffuse_unet::UNet;
use sha2::{Digest, Sha256};

/// The layers an adapter can attach to: every convolution (its weight is 4-D),
/// named without the `.weight` suffix (`mid_attn.q`, `down.0.blocks.0.conv1`).
pub fn conv_layer_names(model: &UNet) -> Vec<String> {
    model
        .params
        .iter()
        .filter(|(n, t)| t.dims().len() == 4 && !n.contains(".lora_"))
        .filter_map(|(n, _)| n.strip_suffix(".weight").map(str::to_string))
        .collect()
}

/// A model for `cfg`: with LoRA adapters when `cfg.lora` is set, and with
/// its trainable mask and learning-rate factors known. Weights are freshly
/// initialised; loading is the caller's business.
pub fn build_model(cfg: &TrainConfig, seed: u64, device: &Device) -> Result<UNet> {
    let mut model = match &cfg.lora {
        None => UNet::new(cfg.model.clone(), seed, DType::F32, device)?,
        Some(l) => {
            let plain = UNet::new(cfg.model.clone(), seed, DType::F32, &Device::Cpu)?;
            let layers = conv_layer_names(&plain);
            let names: Vec<&str> = layers.iter().map(String::as_str).collect();
            let targets = param_select::compile(&l.targets, &names, "--lora-targets")?;
            let is_target = |name: &str| targets.iter().any(|p: &Pattern| p.is_match(name));
            let plan = LoraPlan { rank: l.rank, alpha: l.alpha, targets: &is_target };
            UNet::with_lora(cfg.model.clone(), seed, DType::F32, device, plan)?
        }
    };
    apply_trainable(&mut model, cfg)?;
    model.params.set_precision(cfg.precision.unwrap_or_else(|| diffuse_tensor::Precision::default_for(device)));
    Ok(model)
}

/// A fresh run's model (LoRA needs a base, so it is refused here).
pub fn fresh_model(cfg: &TrainConfig, device: &Device) -> Result<UNet> {
    if cfg.lora.is_some() {
        return Err(Error::Config("LoRA adapts a trained model: pass its checkpoint with --init-from".into()));
    }
    build_model(cfg, cfg.seed, device)
}

/// The model of a run started from `base`'s EMA weights (`--init-from`):
/// its parameters frozen or trainable as `cfg` says, fresh adapters when
/// `cfg.lora` is set, whose base path and hash this records in `cfg`.
pub fn init_from(cfg: &mut TrainConfig, base: &Checkpoint, device: &Device) -> Result<UNet> {
    check_plain(base)?;
    let weights = base.load_model(device, true)?;
    if let Some(l) = &mut cfg.lora {
        l.base = std::fs::canonicalize(&base.path).map_err(|e| Error::io(&base.path, e))?;
        l.base_sha256 = base_sha256(&weights)?;
    }
    let mut model = build_model(cfg, cfg.seed, device)?;
    copy_base(&weights, &mut model)?;
    Ok(model)
}

/// Freezes what `cfg` says: with LoRA everything but the adapters, else
/// the `train_only` / `freeze` selection.
pub fn apply_trainable(model: &mut UNet, cfg: &TrainConfig) -> Result<()> {
    let ids: Vec<_> = model.params.ids().collect();
    let mask: Vec<bool> = if cfg.lora.is_some() {
        ids.iter().map(|&id| model.params.is_adapter(id)).collect()
    } else {
        let names: Vec<&str> = model.params.iter().map(|(n, _)| n).collect();
        param_select::trainable_mask(&names, &cfg.freeze, &cfg.train_only)?
    };
    if !mask.iter().any(|&t| t) {
        return Err(Error::Config("the patterns freeze every parameter: nothing would train".into()));
    }
    for (id, t) in ids.into_iter().zip(mask) {
        model.params.set_trainable(id, t);
    }
    Ok(())
}

/// The learning-rate factor of every parameter.
pub fn lr_scales(model: &UNet, cfg: &TrainConfig) -> Result<Vec<f64>> {
    let names: Vec<&str> = model.params.iter().map(|(n, _)| n).collect();
    param_select::lr_scales(&names, &cfg.lr_scale)
}

/// SHA-256 (hex) over the base weights (adapters excluded) in registration
/// order: each name, its dims and its values as little-endian f32.
pub fn base_sha256(model: &UNet) -> Result<String> {
    let mut h = Sha256::new();
    for id in model.params.ids().filter(|&id| !model.params.is_adapter(id)) {
        let t = model.params.value(id);
        h.update(model.params.name(id).as_bytes());
        h.update([0u8]);
        for d in t.dims() {
            h.update((*d as u64).to_le_bytes());
        }
        for v in t.to_vec_f32()? {
            h.update(v.to_le_bytes());
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Copies every base (non-adapter) weight of `to` from the same name in `from`.
pub fn copy_base(from: &UNet, to: &mut UNet) -> Result<()> {
    let ids: Vec<_> = to.params.ids().filter(|&id| !to.params.is_adapter(id)).collect();
    for id in ids {
        let name = to.params.name(id).to_string();
        let src =
            from.params.id(&name).ok_or_else(|| Error::Config(format!("the base model has no parameter {name}")))?;
        to.params.set(id, from.params.value(src).clone())?;
    }
    Ok(())
}

/// The base model of a LoRA run: the EMA weights of `lora.base`, refused
/// unless their SHA-256 is the one the run recorded.
pub fn load_lora_base(lora: &LoraConfig, device: &Device) -> Result<UNet> {
    let ckpt = Checkpoint::open(&lora.base)?;
    check_plain(&ckpt)?;
    let base = ckpt.load_model(device, true)?;
    let got = base_sha256(&base)?;
    if got != lora.base_sha256 {
        return Err(Error::Config(format!(
            "{} is not the base these adapters were trained on (its weights hash to {}, the adapters need {})",
            ckpt.path.display(),
            &got[..16],
            &lora.base_sha256[..lora.base_sha256.len().min(16)]
        )));
    }
    Ok(base)
}

/// Refuses a LoRA checkpoint where a plain one is needed.
pub fn check_plain(ckpt: &Checkpoint) -> Result<()> {
    if ckpt.train_config.lora.is_some() {
        return Err(Error::Config(format!(
            "{} holds LoRA adapters, not a whole model: merge them first (diffuse merge-lora)",
            ckpt.path.display()
        )));
    }
    Ok(())
}

/// A plain model computing what `model` (base plus adapters) computes: each
/// adapted weight becomes W + (alpha / rank) B A.
pub fn merge_adapters(model: &UNet, lora: &LoraConfig) -> Result<UNet> {
    let scale = lora.alpha / lora.rank as f64;
    let mut plain = UNet::new(model.config.clone(), 0, DType::F32, &model.device())?;
    copy_base(model, &mut plain)?;
    let lora = |name: &str, which: &str| model.params.id(&format!("{name}.lora_{which}.weight"));
    for layer in conv_layer_names(model) {
        let (Some(a), Some(b)) = (lora(&layer, "A"), lora(&layer, "B")) else { continue };
        let w_name = format!("{layer}.weight");
        let (Some(w), Some(target)) = (model.params.id(&w_name), plain.params.id(&w_name)) else {
            return Err(Error::Config(format!("adapter {layer} has no base weight {w_name}")));
        };
        let merged = merged_weight(model.params.value(w), model.params.value(a), model.params.value(b), scale)?;
        plain.params.set(target, merged)?;
    }
    Ok(plain)
}
