//! Import and export of Hugging Face diffusers models: a `UNet2DModel`
//! folder (config.json, diffusion_pytorch_model.safetensors and, when
//! present, scheduler_config.json) to a `diffuse` checkpoint and back.
//! The U-Net half (config fields, parameter names) is
//! `diffuse_unet::diffusers`; this module adds the noise schedule and the
//! files. Pickled `.bin` weights are never read.

use crate::checkpoint::{self, Checkpoint, TrainState};
use crate::config::TrainConfig;
use crate::diffusion::{Schedule, Target};
use crate::memory_budget::{mul, MemoryBudget, Need};
use crate::optim::{AdamW, Ema};
use crate::sampler::Variance;
use crate::{Error, LoaderState, Result};
use diffuse_tensor::ops::AdamWParams;
use diffuse_tensor::{DType, Device};
use diffuse_unet::atomic_file::write_atomic;
use diffuse_unet::diffusers as unet_diffusers;
use diffuse_unet::io::{parse, serialize};
use diffuse_unet::{Footprint, UNet, UNetError};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";
pub const SCHEDULER_FILE: &str = "scheduler_config.json";
const PICKLE_FILE: &str = "diffusion_pytorch_model.bin";

/// The diffusion process a diffusers scheduler config describes, in our terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SchedulerSettings {
    pub schedule: Schedule,
    pub timesteps: usize,
    pub target: Target,
    /// The DDPM sampling variance, when the config names one.
    pub variance: Option<Variance>,
}

impl Default for SchedulerSettings {
    /// The DDPM paper's: linear 1e-4..0.02 over 1000 steps, predicting eps.
    fn default() -> Self {
        SchedulerSettings { schedule: Schedule::Linear, timesteps: 1000, target: Target::Eps, variance: None }
    }
}

fn unsupported(file: &str, field: &str, value: &Value, why: &str) -> Error {
    Error::Model(UNetError::Diffusers(format!("{file}: unsupported {field} = {value}: {why}")))
}

/// Our linear schedule's end points for T steps (1e-4..0.02 scaled by 1000/T).
fn linear_betas(timesteps: usize) -> (f64, f64) {
    let scale = 1000.0 / timesteps as f64;
    (1e-4 * scale, (0.02 * scale).min(0.999))
}

/// Reads a diffusers scheduler config. Fields that change what the model's
/// output means (betas, steps, prediction type) must be ones we can
/// reproduce; sampling-only details we cannot honour become `notes`.
pub fn scheduler_from_diffusers(json: &Value, notes: &mut Vec<String>) -> Result<SchedulerSettings> {
    let file = SCHEDULER_FILE;
    let obj =
        json.as_object().ok_or_else(|| Error::Model(UNetError::Diffusers(format!("{file} is not a JSON object"))))?;
    let class = obj.get("_class_name").and_then(Value::as_str).unwrap_or("DDPMScheduler");
    // DDPMScheduler's defaults, which apply to fields the file leaves out.
    let get = |k: &str, default: Value| obj.get(k).cloned().unwrap_or(default);

    let t_value = get("num_train_timesteps", json!(1000));
    let timesteps = t_value
        .as_u64()
        .filter(|&t| t >= 2)
        .map(|t| t as usize)
        .ok_or_else(|| unsupported(file, "num_train_timesteps", &t_value, "expected an integer of at least 2"))?;
    let trained = get("trained_betas", Value::Null);
    if !trained.is_null() {
        return Err(unsupported(file, "trained_betas", &json!("[...]"), "diffuse uses the linear or cosine schedule"));
    }
    let zero_snr = get("rescale_betas_zero_snr", json!(false));
    if zero_snr != json!(false) {
        return Err(unsupported(file, "rescale_betas_zero_snr", &zero_snr, "zero terminal SNR is not supported"));
    }
    let schedule_value = get("beta_schedule", json!("linear"));
    let schedule = match schedule_value.as_str() {
        Some("linear") => {
            let (b0, b1) = linear_betas(timesteps);
            for (k, default, ours) in [("beta_start", 0.0001, b0), ("beta_end", 0.02, b1)] {
                let v = get(k, json!(default));
                if !v.as_f64().is_some_and(|x| (x - ours).abs() <= 1e-9 * ours) {
                    return Err(unsupported(
                        file,
                        k,
                        &v,
                        &format!(
                            "diffuse's linear schedule over {timesteps} steps runs from {b0} to {b1} (1e-4..0.02 \
                             scaled by 1000/T)"
                        ),
                    ));
                }
            }
            Schedule::Linear
        }
        Some("squaredcos_cap_v2") => Schedule::Cosine,
        _ => {
            return Err(unsupported(
                file,
                "beta_schedule",
                &schedule_value,
                "only \"linear\" and \"squaredcos_cap_v2\" (cosine) are supported",
            ))
        }
    };
    let pred = get("prediction_type", json!("epsilon"));
    let target = match pred.as_str() {
        Some("epsilon") => Target::Eps,
        Some("sample") => Target::X0,
        Some("v_prediction") => Target::V,
        _ => return Err(unsupported(file, "prediction_type", &pred, "expected epsilon, sample or v_prediction")),
    };
    let variance = match obj.get("variance_type") {
        None if class == "DDPMScheduler" => Some(Variance::FixedSmall),
        None => None,
        Some(v) => match v.as_str() {
            Some("fixed_small" | "fixed_small_log") => Some(Variance::FixedSmall),
            Some("fixed_large" | "fixed_large_log") => Some(Variance::FixedLarge),
            _ => {
                return Err(unsupported(file, "variance_type", v, "learned variances are not supported"));
            }
        },
    };
    if get("clip_sample", json!(true)) != json!(true) || get("clip_sample_range", json!(1.0)).as_f64() != Some(1.0) {
        notes.push(format!("{file}: x0 clipping differs; diffuse's samplers always clip x0 to [-1, 1]"));
    }
    if get("thresholding", json!(false)) != json!(false) {
        notes.push(format!("{file}: dynamic thresholding is ignored; diffuse clips x0 to [-1, 1]"));
    }
    Ok(SchedulerSettings { schedule, timesteps, target, variance })
}

/// A DDPMScheduler config for our diffusion settings.
pub fn scheduler_to_diffusers(s: &SchedulerSettings) -> Value {
    let (b0, b1) = linear_betas(s.timesteps);
    let (b0, b1) = if s.schedule == Schedule::Linear { (b0, b1) } else { (0.0001, 0.02) };
    json!({
        "_class_name": "DDPMScheduler",
        "_diffusers_version": unet_diffusers::TESTED_DIFFUSERS_VERSION,
        "beta_end": b1,
        "beta_schedule": match s.schedule { Schedule::Linear => "linear", Schedule::Cosine => "squaredcos_cap_v2" },
        "beta_start": b0,
        "clip_sample": true,
        "clip_sample_range": 1.0,
        "dynamic_thresholding_ratio": 0.995,
        "num_train_timesteps": s.timesteps,
        "prediction_type": match s.target { Target::Eps => "epsilon", Target::X0 => "sample", Target::V => "v_prediction" },
        "rescale_betas_zero_snr": false,
        "sample_max_value": 1.0,
        "steps_offset": 0,
        "thresholding": false,
        "timestep_spacing": "leading",
        "trained_betas": null,
        "variance_type": match s.variance.unwrap_or(Variance::FixedLarge) {
            Variance::FixedLarge => "fixed_large",
            Variance::FixedSmall => "fixed_small",
        },
    })
}

/// A diffusers model read into memory.
pub struct Imported {
    pub model: UNet,
    pub scheduler: SchedulerSettings,
    /// What could not be carried over exactly (printed by the CLI).
    pub notes: Vec<String>,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Model(UNetError::Diffusers(format!("{}: not valid JSON: {e}", path.display()))))
}

fn diffusers_error(path: &Path, e: UNetError) -> Error {
    Error::Model(UNetError::Diffusers(format!("{}: {e}", path.display())))
}

/// The U-Net folder and the scheduler config of `dir`: a model folder as
/// `UNet2DModel.save_pretrained` writes it (optionally with the scheduler's
/// config beside it), or a pipeline folder with `unet/` and `scheduler/`.
fn locate(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    if !dir.exists() {
        return Err(Error::NotFound { path: dir.to_path_buf() });
    }
    let unet = if dir.join(CONFIG_FILE).is_file() {
        dir.to_path_buf()
    } else if dir.join("unet").join(CONFIG_FILE).is_file() {
        dir.join("unet")
    } else {
        return Err(Error::Model(UNetError::Diffusers(format!(
            "{}: no {CONFIG_FILE} (nor unet/{CONFIG_FILE}): not a diffusers UNet2DModel folder",
            dir.display()
        ))));
    };
    let beside = dir.join(SCHEDULER_FILE);
    let scheduler = if beside.is_file() { beside } else { dir.join("scheduler").join(SCHEDULER_FILE) };
    Ok((unet, scheduler))
}

/// Reads a diffusers `UNet2DModel` folder (see [`locate`]) onto the CPU in f32.
pub fn read(dir: &Path) -> Result<Imported> {
    read_as(dir, DType::F32)
}

/// [`read`] with the weights in `dtype` (f64 for exact comparisons).
pub fn read_as(dir: &Path, dtype: DType) -> Result<Imported> {
    let (unet_dir, scheduler_path) = locate(dir)?;
    let config_path = unet_dir.join(CONFIG_FILE);
    let config = unet_diffusers::config_from_diffusers(&read_json(&config_path)?)
        .map_err(|e| diffusers_error(&config_path, e))?;
    let weights = unet_dir.join(WEIGHTS_FILE);
    if !weights.is_file() {
        let hint = if unet_dir.join(PICKLE_FILE).is_file() {
            format!(
                "only the pickled {PICKLE_FILE} is there, and diffuse never loads pickles; re-save it as safetensors \
                 with diffusers: UNet2DModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)"
            )
        } else {
            "the weights are missing".to_string()
        };
        return Err(Error::Model(UNetError::Diffusers(format!("{}: no {WEIGHTS_FILE}: {hint}", unet_dir.display()))));
    }
    let mut notes = Vec::new();
    let scheduler = if scheduler_path.is_file() {
        scheduler_from_diffusers(&read_json(&scheduler_path)?, &mut notes).map_err(|e| match e {
            Error::Model(inner) => diffusers_error(&scheduler_path, inner),
            other => other,
        })?
    } else {
        notes.push(format!(
            "no {SCHEDULER_FILE}: assuming the DDPM paper's linear schedule over 1000 steps, predicting the noise"
        ));
        SchedulerSettings::default()
    };
    // The file, the model built from config.json, and each tensor converted.
    let weight_bytes = Footprint::of(&config)?.weight_bytes();
    let file_bytes = std::fs::metadata(&weights).map_err(|e| Error::io(&weights, e))?.len();
    MemoryBudget::global()?.check(
        format!("the model of {}", unet_dir.display()),
        &Need::one("the weights file", file_bytes).add("weights and their conversion", mul(weight_bytes, 2)),
    )?;
    let bytes = std::fs::read(&weights).map_err(|e| Error::io(&weights, e))?;
    let st = parse(&bytes).map_err(|e| diffusers_error(&weights, e))?;
    let levels = config.ch_mult.len();
    let mut model = UNet::new(config, 0, dtype, &Device::Cpu)?;
    unet_diffusers::load_params(&mut model.params, &st, levels).map_err(|e| diffusers_error(&weights, e))?;
    Ok(Imported { model, scheduler, notes })
}

/// The training configuration an imported model carries: the defaults for
/// its architecture with the scheduler's diffusion settings and no data.
pub fn imported_train_config(imported: &Imported) -> TrainConfig {
    let mut cfg = TrainConfig::for_model(imported.model.config.clone(), PathBuf::new());
    cfg.schedule = imported.scheduler.schedule;
    cfg.timesteps = imported.scheduler.timesteps;
    cfg.target = imported.scheduler.target;
    cfg.sample_ddim_steps = cfg.sample_ddim_steps.min(cfg.timesteps);
    cfg
}

/// Writes `imported` as a step-0 checkpoint: weights and EMA weights both
/// the imported ones, fresh optimiser moments.
pub fn write_checkpoint(imported: &Imported, out: &Path) -> Result<()> {
    let cfg = imported_train_config(imported);
    cfg.validate()?;
    let model = &imported.model;
    // Model, EMA and two moments; their bytes; the serialised file.
    let weights = Footprint::of(&model.config)?.weight_bytes();
    MemoryBudget::global()?.check(
        format!("the checkpoint {}", out.display()),
        &Need::one("model, EMA and optimiser moments", mul(weights, 4))
            .add("their bytes", mul(weights, 4))
            .add("the file", mul(weights, 4)),
    )?;
    let ema = Ema::new(&model.params, cfg.ema_decay, cfg.ema_warmup)?;
    let hyper = AdamWParams {
        lr: cfg.lr,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.adam_eps,
        weight_decay: cfg.weight_decay,
    };
    let opt = AdamW::new(&model.params, hyper)?;
    let state = TrainState {
        step: 0,
        loader: LoaderState { epoch: 0, position: 0 },
        ema_updates: 0,
        loss_watch: Default::default(),
    };
    checkpoint::save_with_variance(out, &cfg, model, &ema, &opt, state, imported.scheduler.variance)
}

/// `diffuse import --from diffusers`: reads `dir`, writes the checkpoint
/// `out`, returns what was read.
pub fn import(dir: &Path, out: &Path) -> Result<Imported> {
    let imported = read(dir)?;
    write_checkpoint(&imported, out)?;
    Ok(imported)
}

/// `diffuse export --to diffusers`: writes config.json,
/// diffusion_pytorch_model.safetensors (the EMA weights when `ema`) and
/// scheduler_config.json into `out`, creating it if needed.
pub fn export(ckpt: &Checkpoint, ema: bool, out: &Path) -> Result<()> {
    let model = ckpt.load_model(&Device::Cpu, ema)?;
    let config = unet_diffusers::config_to_diffusers(&model.config)?;
    let tc = &ckpt.train_config;
    let scheduler = scheduler_to_diffusers(&SchedulerSettings {
        schedule: tc.schedule,
        timesteps: tc.timesteps,
        target: tc.target,
        variance: ckpt.sample_variance,
    });
    let entries = unet_diffusers::param_entries(&model.params, model.config.ch_mult.len())?;
    // torch's save_file writes exactly this metadata.
    let weights = serialize(&entries, HashMap::from([("format".to_string(), "pt".to_string())]))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    write_atomic(&out.join(CONFIG_FILE), pretty(&config).as_bytes())?;
    write_atomic(&out.join(SCHEDULER_FILE), pretty(&scheduler).as_bytes())?;
    write_atomic(&out.join(WEIGHTS_FILE), &weights)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: Value) -> Result<SchedulerSettings> {
        scheduler_from_diffusers(&json, &mut Vec::new())
    }

    #[test]
    fn scheduler_round_trips() {
        for schedule in [Schedule::Linear, Schedule::Cosine] {
            for timesteps in [1000, 500, 4000] {
                for target in [Target::Eps, Target::X0, Target::V] {
                    for variance in [Variance::FixedLarge, Variance::FixedSmall] {
                        let s = SchedulerSettings { schedule, timesteps, target, variance: Some(variance) };
                        assert_eq!(settings(scheduler_to_diffusers(&s)).unwrap(), s);
                    }
                }
            }
        }
    }

    #[test]
    fn empty_ddpm_scheduler_is_the_paper_with_small_variance() {
        let s = settings(json!({"_class_name": "DDPMScheduler"})).unwrap();
        assert_eq!(s, SchedulerSettings { variance: Some(Variance::FixedSmall), ..SchedulerSettings::default() });
    }

    #[test]
    fn schedules_we_cannot_reproduce_are_refused_by_name() {
        let cases = [
            (json!({"beta_schedule": "scaled_linear"}), "beta_schedule = \"scaled_linear\""),
            (json!({"beta_end": 0.012}), "beta_end = 0.012"),
            (json!({"num_train_timesteps": 500}), "beta_start = 0.0001"),
            (json!({"trained_betas": [0.1, 0.2]}), "trained_betas"),
            (json!({"prediction_type": "flow"}), "prediction_type = \"flow\""),
            (json!({"variance_type": "learned_range"}), "variance_type = \"learned_range\""),
            (json!({"rescale_betas_zero_snr": true}), "rescale_betas_zero_snr = true"),
            (json!({"num_train_timesteps": 1}), "num_train_timesteps = 1"),
        ];
        for (json, want) in cases {
            let e = settings(json.clone()).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn sampling_only_differences_are_notes() {
        let mut notes = Vec::new();
        scheduler_from_diffusers(&json!({"clip_sample": false, "thresholding": true}), &mut notes).unwrap();
        assert_eq!(notes.len(), 2, "{notes:?}");
    }
}
