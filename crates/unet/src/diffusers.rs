//! Hugging Face diffusers' `UNet2DModel` in the DDPM layout, both ways:
//! its `config.json` to and from [`UNetConfig`], and its parameter names
//! and shapes to and from ours.
//!
//! The layout we speak: `DownBlock2D` / `AttnDownBlock2D` down,
//! `UpBlock2D` / `AttnUpBlock2D` up (mirrored), `UNetMidBlock2D`, one
//! attention head, SiLU, GroupNorm eps 1e-6, `downsample_padding` 0 (the
//! TF 'SAME' pad right/bottom), `flip_sin_to_cos` false, `freq_shift` 1
//! (sin first, frequencies 10000^(-i/(half-1))), the default time-scale
//! shift. Any other value of any field is refused, naming field and value.

use crate::io::{view_to_tensor, Entry};
use crate::params::ParamStore;
use crate::{Result, UNetConfig, UNetError};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde_json::{json, Map, Value};
use std::collections::HashSet;

/// The diffusers version the fixtures and the export were checked with.
pub const TESTED_DIFFUSERS_VERSION: &str = "0.42.1";

/// Every `UNet2DModel.__init__` argument with diffusers' default (which
/// applies when config.json leaves the field out).
fn defaults() -> Vec<(&'static str, Value)> {
    vec![
        ("sample_size", Value::Null),
        ("in_channels", json!(3)),
        ("out_channels", json!(3)),
        ("center_input_sample", json!(false)),
        ("time_embedding_type", json!("positional")),
        ("time_embedding_dim", Value::Null),
        ("freq_shift", json!(0)),
        ("flip_sin_to_cos", json!(true)),
        ("down_block_types", json!(["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"])),
        ("mid_block_type", json!("UNetMidBlock2D")),
        ("up_block_types", json!(["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"])),
        ("block_out_channels", json!([224, 448, 672, 896])),
        ("layers_per_block", json!(2)),
        ("mid_block_scale_factor", json!(1)),
        ("downsample_padding", json!(1)),
        ("downsample_type", json!("conv")),
        ("upsample_type", json!("conv")),
        ("dropout", json!(0.0)),
        ("act_fn", json!("silu")),
        ("attention_head_dim", json!(8)),
        ("norm_num_groups", json!(32)),
        ("attn_norm_num_groups", Value::Null),
        ("norm_eps", json!(1e-5)),
        ("resnet_time_scale_shift", json!("default")),
        ("add_attention", json!(true)),
        ("class_embed_type", Value::Null),
        ("num_class_embeds", Value::Null),
        ("num_train_timesteps", Value::Null),
    ]
}

fn err(m: String) -> UNetError {
    UNetError::Diffusers(m)
}

/// "field = value is not supported: why".
fn unsupported(field: &str, value: &Value, why: &str) -> UNetError {
    err(format!("config.json: unsupported {field} = {value}: {why}"))
}

/// A config.json with diffusers' defaults filled in, field by field.
struct Fields(Map<String, Value>);

impl Fields {
    fn new(json: &Value) -> Result<Fields> {
        let obj = json.as_object().ok_or_else(|| err("config.json is not a JSON object".into()))?;
        if let Some(class) = obj.get("_class_name") {
            if class != "UNet2DModel" {
                return Err(unsupported("_class_name", class, "only UNet2DModel is understood"));
            }
        }
        let defaults = defaults();
        let known: HashSet<&str> = defaults.iter().map(|(k, _)| *k).collect();
        if let Some((k, v)) = obj.iter().find(|(k, _)| !k.starts_with('_') && !known.contains(k.as_str())) {
            return Err(unsupported(k, v, "a UNet2DModel field this version of diffuse does not know"));
        }
        let mut m = Map::new();
        for (k, d) in defaults {
            m.insert(k.to_string(), obj.get(k).cloned().unwrap_or(d));
        }
        Ok(Fields(m))
    }

    fn get(&self, k: &str) -> &Value {
        self.0.get(k).unwrap_or(&Value::Null)
    }

    /// The field must equal `want` (numbers compared as numbers).
    fn require(&self, k: &str, want: Value, why: &str) -> Result<()> {
        let v = self.get(k);
        let same = match (v.as_f64(), want.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * b.abs().max(1.0),
            _ => *v == want,
        };
        if same {
            Ok(())
        } else {
            Err(unsupported(k, v, why))
        }
    }

    fn usize(&self, k: &str) -> Result<usize> {
        let v = self.get(k);
        v.as_u64()
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| unsupported(k, v, "expected a positive integer"))
    }

    fn usize_list(&self, k: &str) -> Result<Vec<usize>> {
        let v = self.get(k);
        let bad = || unsupported(k, v, "expected a non-empty list of positive integers");
        let list = v.as_array().filter(|a| !a.is_empty()).ok_or_else(bad)?;
        list.iter().map(|x| x.as_u64().filter(|&n| n > 0).map(|n| n as usize).ok_or_else(bad)).collect()
    }

    fn str_list(&self, k: &str) -> Result<Vec<String>> {
        let v = self.get(k);
        let bad = || unsupported(k, v, "expected a list of block type names");
        let list = v.as_array().ok_or_else(bad)?;
        list.iter().map(|x| x.as_str().map(str::to_string).ok_or_else(bad)).collect()
    }
}

/// Whether each level has attention, from down_block_types and the
/// mirrored up_block_types (which must agree).
fn attention_levels(f: &Fields, levels: usize) -> Result<Vec<bool>> {
    let down = f.str_list("down_block_types")?;
    let up = f.str_list("up_block_types")?;
    for (k, list) in [("down_block_types", &down), ("up_block_types", &up)] {
        if list.len() != levels {
            return Err(unsupported(
                k,
                f.get(k),
                &format!("{} entries, but block_out_channels has {levels}", list.len()),
            ));
        }
    }
    let mut attn = Vec::with_capacity(levels);
    for (i, d) in down.iter().enumerate() {
        let a = match d.as_str() {
            "DownBlock2D" => false,
            "AttnDownBlock2D" => true,
            _ => {
                return Err(unsupported(
                    "down_block_types",
                    f.get("down_block_types"),
                    &format!("entry {i} is {d:?}; only DownBlock2D and AttnDownBlock2D are supported"),
                ))
            }
        };
        // up_block_types run from the deepest level back to the first.
        let u = &up[levels - 1 - i];
        let ua = match u.as_str() {
            "UpBlock2D" => false,
            "AttnUpBlock2D" => true,
            _ => {
                return Err(unsupported(
                    "up_block_types",
                    f.get("up_block_types"),
                    &format!("entry {} is {u:?}; only UpBlock2D and AttnUpBlock2D are supported", levels - 1 - i),
                ))
            }
        };
        if a != ua {
            return Err(unsupported(
                "up_block_types",
                f.get("up_block_types"),
                &format!(
                    "entry {} is {u:?} but down_block_types entry {i} is {d:?}; diffuse puts attention at the same \
                     levels on the way down and up",
                    levels - 1 - i
                ),
            ));
        }
        attn.push(a);
    }
    Ok(attn)
}

/// Our configuration of a diffusers `UNet2DModel` config.json, or an error
/// naming the first field (and its value) outside the DDPM layout.
pub fn config_from_diffusers(json: &Value) -> Result<UNetConfig> {
    let f = Fields::new(json)?;
    let ddpm = "diffuse's U-Net is the DDPM layout";
    f.require("center_input_sample", json!(false), "inputs are taken as they are")?;
    f.require("time_embedding_type", json!("positional"), "only the sinusoidal time embedding is supported")?;
    f.require("flip_sin_to_cos", json!(false), "the DDPM embedding puts sin before cos (false)")?;
    f.require("freq_shift", json!(1), "the DDPM embedding divides by half-1 (freq_shift 1)")?;
    f.require("mid_block_type", json!("UNetMidBlock2D"), ddpm)?;
    f.require("mid_block_scale_factor", json!(1), "resnet outputs are not rescaled (1)")?;
    f.require("downsample_padding", json!(0), "downsampling pads right/bottom only, TF 'SAME' (0)")?;
    f.require("downsample_type", json!("conv"), ddpm)?;
    f.require("upsample_type", json!("conv"), ddpm)?;
    f.require("act_fn", json!("silu"), "the activation is SiLU")?;
    f.require("norm_eps", json!(1e-6), "GroupNorm eps is 1e-6")?;
    f.require("resnet_time_scale_shift", json!("default"), "the time embedding is added, not a scale-shift")?;
    f.require("add_attention", json!(true), "the middle block has attention")?;
    f.require("class_embed_type", Value::Null, "class labels index a learned table (class_embed_type null)")?;
    // num_class_embeds = our classes + the "no class" row (the last one).
    let num_classes = match f.get("num_class_embeds") {
        Value::Null => 0,
        v => match v.as_u64() {
            Some(k) if k >= 2 => k as usize - 1,
            _ => {
                return Err(unsupported(
                    "num_class_embeds",
                    v,
                    "expected null or an integer of at least 2 (the classes and a last \"no class\" row)",
                ))
            }
        },
    };

    let in_ch = f.usize("in_channels")?;
    if f.get("out_channels") != f.get("in_channels") {
        return Err(unsupported("out_channels", f.get("out_channels"), "must equal in_channels (a noise prediction)"));
    }
    let image_size = match f.get("sample_size") {
        Value::Number(n) => n.as_u64().filter(|&n| n > 0).map(|n| n as usize),
        Value::Array(a) if a.len() == 2 && a[0] == a[1] => a[0].as_u64().filter(|&n| n > 0).map(|n| n as usize),
        _ => None,
    }
    .ok_or_else(|| unsupported("sample_size", f.get("sample_size"), "diffuse needs one square image size"))?;

    let channels = f.usize_list("block_out_channels")?;
    let ch = channels[0];
    if let Some(c) = channels.iter().find(|&&c| c % ch != 0) {
        return Err(unsupported(
            "block_out_channels",
            f.get("block_out_channels"),
            &format!("{c} is not a multiple of the first entry {ch}"),
        ));
    }
    let levels = channels.len();
    let attn = attention_levels(&f, levels)?;
    let num_res_blocks = f.usize("layers_per_block")?;
    let groups = f.usize("norm_num_groups")?;
    match f.get("attn_norm_num_groups") {
        Value::Null => {}
        v if v.as_u64() == Some(groups as u64) => {}
        v => return Err(unsupported("attn_norm_num_groups", v, "attention norms use norm_num_groups (null)")),
    }
    if let Some(t) = f.get("time_embedding_dim").as_u64() {
        if t as usize != 4 * ch {
            return Err(unsupported(
                "time_embedding_dim",
                f.get("time_embedding_dim"),
                &format!("the time embedding has 4 x block_out_channels[0] = {} channels (null)", 4 * ch),
            ));
        }
    } else if !f.get("time_embedding_dim").is_null() {
        return Err(unsupported("time_embedding_dim", f.get("time_embedding_dim"), "expected null or an integer"));
    }
    // One head: attention_head_dim null, or equal to the channels of every
    // attention block (the attention levels and the middle block).
    let head_dim = f.get("attention_head_dim");
    if !head_dim.is_null() {
        let attn_channels =
            channels.iter().zip(&attn).filter(|(_, &a)| a).map(|(&c, _)| c).chain([channels[levels - 1]]);
        for c in attn_channels {
            if head_dim.as_u64() != Some(c as u64) {
                return Err(unsupported(
                    "attention_head_dim",
                    head_dim,
                    &format!("attention over {c} channels would have several heads; diffuse's has one (null)"),
                ));
            }
        }
    }
    let dropout = f.get("dropout").as_f64().ok_or_else(|| unsupported("dropout", f.get("dropout"), "not a number"))?;

    let mut config = UNetConfig {
        in_ch,
        ch,
        ch_mult: channels.iter().map(|c| c / ch).collect(),
        num_res_blocks,
        attn_resolutions: Vec::new(),
        dropout: dropout as f32,
        groups,
        image_size,
        num_classes,
    };
    let sides = config.resolutions();
    config.attn_resolutions = sides.iter().zip(&attn).filter(|(_, &a)| a).map(|(&s, _)| s).collect();
    config.validate()?;
    Ok(config)
}

/// The diffusers config.json of our configuration. Every field is written,
/// since diffusers' defaults (flip_sin_to_cos, freq_shift, padding, eps,
/// head size) are not the DDPM ones.
pub fn config_to_diffusers(c: &UNetConfig) -> Result<Value> {
    c.validate()?;
    if c.ch_mult[0] != 1 {
        return Err(err(format!(
            "ch_mult {:?} cannot be expressed in diffusers: its first level has the input convolution's {} channels \
             (ch_mult[0] must be 1)",
            c.ch_mult, c.ch
        )));
    }
    let sides = c.resolutions();
    let attn: Vec<bool> = sides.iter().map(|s| c.attn_resolutions.contains(s)).collect();
    let down: Vec<&str> = attn.iter().map(|&a| if a { "AttnDownBlock2D" } else { "DownBlock2D" }).collect();
    let up: Vec<&str> = attn.iter().rev().map(|&a| if a { "AttnUpBlock2D" } else { "UpBlock2D" }).collect();
    let channels: Vec<usize> = c.ch_mult.iter().map(|m| m * c.ch).collect();
    Ok(json!({
        "_class_name": "UNet2DModel",
        "_diffusers_version": TESTED_DIFFUSERS_VERSION,
        "act_fn": "silu",
        "add_attention": true,
        "attention_head_dim": null,
        "attn_norm_num_groups": null,
        "block_out_channels": channels,
        "center_input_sample": false,
        "class_embed_type": null,
        "down_block_types": down,
        "downsample_padding": 0,
        "downsample_type": "conv",
        // The shortest decimal of the f32 (0.1, not 0.10000000149011612).
        "dropout": c.dropout.to_string().parse::<f64>().unwrap_or(0.0),
        "flip_sin_to_cos": false,
        "freq_shift": 1,
        "in_channels": c.in_ch,
        "layers_per_block": c.num_res_blocks,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2D",
        "norm_eps": 1e-6,
        "norm_num_groups": c.groups,
        "num_class_embeds": if c.num_classes > 0 { json!(c.num_classes + 1) } else { Value::Null },
        "num_train_timesteps": null,
        "out_channels": c.in_ch,
        "resnet_time_scale_shift": "default",
        "sample_size": c.image_size,
        "time_embedding_dim": null,
        "time_embedding_type": "positional",
        "up_block_types": up,
        "upsample_type": "conv",
    }))
}

fn resnet_layer(ours: &str) -> Option<&'static str> {
    Some(match ours {
        "norm1" => "norm1",
        "conv1" => "conv1",
        "temb_proj" => "time_emb_proj",
        "norm2" => "norm2",
        "conv2" => "conv2",
        "nin_shortcut" => "conv_shortcut",
        _ => return None,
    })
}

fn attn_layer(ours: &str) -> Option<&'static str> {
    Some(match ours {
        "norm" => "group_norm",
        "q" => "to_q",
        "k" => "to_k",
        "v" => "to_v",
        "proj_out" => "to_out.0",
        _ => return None,
    })
}

/// The diffusers name of one of our parameters (`levels` = len(ch_mult)):
/// `down.1.blocks.0.temb_proj.weight` -> `down_blocks.1.resnets.0.time_emb_proj.weight`,
/// `up.0.attns.2.q.bias` -> `up_blocks.<levels-1>.attentions.2.to_q.bias`.
pub fn diffusers_name(ours: &str, levels: usize) -> Option<String> {
    let parts: Vec<&str> = ours.split('.').collect();
    let (&leaf, module) = parts.split_last()?;
    if leaf != "weight" && leaf != "bias" {
        return None;
    }
    let up_index = |i: &str| i.parse::<usize>().ok().filter(|&i| i < levels).map(|i| levels - 1 - i);
    let down_index = |i: &str| i.parse::<usize>().ok().filter(|&i| i < levels);
    let j_ok = |j: &str| j.parse::<usize>().is_ok();
    let path = match module {
        ["temb_dense0"] => "time_embedding.linear_1".to_string(),
        ["temb_dense1"] => "time_embedding.linear_2".to_string(),
        ["class_emb"] => "class_embedding".to_string(),
        ["conv_in"] => "conv_in".to_string(),
        ["conv_out"] => "conv_out".to_string(),
        ["norm_out"] => "conv_norm_out".to_string(),
        ["mid_block1", l] => format!("mid_block.resnets.0.{}", resnet_layer(l)?),
        ["mid_attn", l] => format!("mid_block.attentions.0.{}", attn_layer(l)?),
        ["mid_block2", l] => format!("mid_block.resnets.1.{}", resnet_layer(l)?),
        ["down", i, "blocks", j, l] if j_ok(j) => {
            format!("down_blocks.{}.resnets.{j}.{}", down_index(i)?, resnet_layer(l)?)
        }
        ["down", i, "attns", j, l] if j_ok(j) => {
            format!("down_blocks.{}.attentions.{j}.{}", down_index(i)?, attn_layer(l)?)
        }
        ["down", i, "downsample", "conv"] => format!("down_blocks.{}.downsamplers.0.conv", down_index(i)?),
        ["up", i, "blocks", j, l] if j_ok(j) => format!("up_blocks.{}.resnets.{j}.{}", up_index(i)?, resnet_layer(l)?),
        ["up", i, "attns", j, l] if j_ok(j) => format!("up_blocks.{}.attentions.{j}.{}", up_index(i)?, attn_layer(l)?),
        ["up", i, "upsample", "conv"] => format!("up_blocks.{}.upsamplers.0.conv", up_index(i)?),
        _ => return None,
    };
    Some(format!("{path}.{leaf}"))
}

/// The names old diffusers checkpoints (as on the Hub for the Google DDPM
/// models) used for the attention projections; diffusers renames them on
/// load, and so do we.
fn deprecated_name(name: &str) -> Option<String> {
    [(".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."), (".to_out.0.", ".proj_attn.")]
        .iter()
        .find(|(new, _)| name.contains(new))
        .map(|(new, old)| name.replace(new, old))
}

/// diffusers' attention projections are Linear layers ([C, C]); ours are
/// 1x1 convolutions ([C, C, 1, 1]) with the same numbers in the same order.
fn diffusers_shape(ours: &str, shape: &[usize]) -> Vec<usize> {
    let is_attn = ours.contains(".attns.") || ours.starts_with("mid_attn.");
    let proj = [".q.weight", ".k.weight", ".v.weight", ".proj_out.weight"].iter().any(|s| ours.ends_with(s));
    if is_attn && proj && shape.len() == 4 {
        shape[..2].to_vec()
    } else {
        shape.to_vec()
    }
}

fn name_of(ours: &str, levels: usize) -> Result<String> {
    diffusers_name(ours, levels).ok_or_else(|| err(format!("parameter {ours} has no diffusers name")))
}

/// Loads every parameter of `store` (a model of `levels` levels) from a
/// diffusers state dict, checking shapes and dtypes; a tensor of the file
/// that the model has no place for is an error (as is a missing one), and
/// on error nothing is changed.
pub fn load_params(store: &mut ParamStore, st: &SafeTensors<'_>, levels: usize) -> Result<()> {
    let mut used = HashSet::new();
    let mut loaded = Vec::with_capacity(store.len());
    for id in store.ids() {
        let ours = store.name(id);
        let name = name_of(ours, levels)?;
        let (name, view) = match st.tensor(&name) {
            Ok(v) => (name, v),
            Err(_) => {
                let old = deprecated_name(&name).ok_or_else(|| UNetError::MissingParam(name.clone()))?;
                let v = st.tensor(&old).map_err(|_| UNetError::MissingParam(name.clone()))?;
                (old, v)
            }
        };
        if view.dtype() != Dtype::F32 {
            return Err(err(format!(
                "tensor {name} is {:?}; diffuse imports float32 weights (load the model in diffusers with \
                 torch_dtype=torch.float32 and save_pretrained it)",
                view.dtype()
            )));
        }
        let want = store.value(id).dims().to_vec();
        if view.shape() != diffusers_shape(ours, &want) {
            return Err(UNetError::ParamShape {
                name,
                expected: diffusers_shape(ours, &want),
                got: view.shape().to_vec(),
            });
        }
        let t = view_to_tensor(&name, &view)?.reshape(want)?;
        loaded.push((id, t));
        used.insert(name);
    }
    let mut extra: Vec<String> = st.names().into_iter().filter(|n| !used.contains(*n)).map(str::to_string).collect();
    if !extra.is_empty() {
        extra.sort();
        let more = if extra.len() > 3 { format!(" and {} more", extra.len() - 3) } else { String::new() };
        return Err(err(format!(
            "the weights hold tensors this configuration has no place for: {}{more}",
            extra[..extra.len().min(3)].join(", ")
        )));
    }
    for (id, t) in loaded {
        store.set(id, t)?;
    }
    Ok(())
}

/// The parameters of `store` under their diffusers names and shapes, ready
/// for `io::serialize` (with metadata {"format": "pt"}, as torch writes).
pub fn param_entries(store: &ParamStore, levels: usize) -> Result<Vec<Entry>> {
    store
        .iter()
        .map(|(n, t)| Ok((name_of(n, levels)?, diffusers_shape(n, t.dims()), crate::io::tensor_bytes(t)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UNet;
    use diffuse_tensor::{DType, Device};

    #[test]
    fn a_conditional_config_round_trips_with_the_null_row_in_num_class_embeds() {
        let cfg = UNetConfig::tiny().with_classes(10);
        let json = config_to_diffusers(&cfg).unwrap();
        assert_eq!(json["num_class_embeds"], json!(11));
        assert_eq!(config_from_diffusers(&json).unwrap(), cfg);
        assert_eq!(config_to_diffusers(&UNetConfig::tiny()).unwrap()["num_class_embeds"], Value::Null);
        let mut one = json.clone();
        one["num_class_embeds"] = json!(1);
        let e = config_from_diffusers(&one).unwrap_err().to_string();
        assert!(e.contains("num_class_embeds = 1"), "{e}");
        let mut typed = json;
        typed["class_embed_type"] = json!("timestep");
        assert!(config_from_diffusers(&typed).unwrap_err().to_string().contains("class_embed_type"));
        assert_eq!(diffusers_name("class_emb.weight", 2).as_deref(), Some("class_embedding.weight"));
    }

    #[test]
    fn names_map_one_to_one_and_cover_the_model() {
        for cfg in [UNetConfig::tiny(), UNetConfig::tiny().with_classes(3), UNetConfig::mnist(), UNetConfig::cifar10()]
        {
            let model = UNet::new(cfg.clone(), 0, DType::F32, &Device::Cpu).unwrap();
            let levels = cfg.ch_mult.len();
            let names: Vec<String> = model.params.iter().map(|(n, _)| diffusers_name(n, levels).unwrap()).collect();
            let unique: HashSet<&String> = names.iter().collect();
            assert_eq!(unique.len(), names.len());
        }
    }

    #[test]
    fn known_names() {
        let cases = [
            ("temb_dense0.weight", "time_embedding.linear_1.weight"),
            ("temb_dense1.bias", "time_embedding.linear_2.bias"),
            ("norm_out.weight", "conv_norm_out.weight"),
            ("down.0.blocks.1.temb_proj.weight", "down_blocks.0.resnets.1.time_emb_proj.weight"),
            ("down.1.blocks.0.nin_shortcut.bias", "down_blocks.1.resnets.0.conv_shortcut.bias"),
            ("down.2.attns.1.proj_out.weight", "down_blocks.2.attentions.1.to_out.0.weight"),
            ("down.0.downsample.conv.weight", "down_blocks.0.downsamplers.0.conv.weight"),
            ("mid_attn.norm.weight", "mid_block.attentions.0.group_norm.weight"),
            ("mid_block2.conv1.weight", "mid_block.resnets.1.conv1.weight"),
            ("up.0.blocks.2.conv2.weight", "up_blocks.3.resnets.2.conv2.weight"),
            ("up.3.upsample.conv.bias", "up_blocks.0.upsamplers.0.conv.bias"),
            ("up.1.attns.0.k.weight", "up_blocks.2.attentions.0.to_k.weight"),
        ];
        for (ours, theirs) in cases {
            assert_eq!(diffusers_name(ours, 4).as_deref(), Some(theirs), "{ours}");
        }
        assert_eq!(diffusers_name("up.4.blocks.0.conv1.weight", 4), None);
        assert_eq!(diffusers_name("down.0.blocks.0.bogus.weight", 4), None);
    }

    #[test]
    fn config_round_trips() {
        for cfg in [UNetConfig::tiny(), UNetConfig::tiny_mnist(), UNetConfig::mnist(), UNetConfig::cifar10()] {
            let json = config_to_diffusers(&cfg).unwrap();
            assert_eq!(config_from_diffusers(&json).unwrap(), cfg);
        }
    }

    #[test]
    fn ch_mult_not_starting_at_one_is_refused_on_export() {
        let cfg = UNetConfig { ch_mult: vec![2, 2], groups: 4, ..UNetConfig::tiny() };
        let e = config_to_diffusers(&cfg).unwrap_err().to_string();
        assert!(e.contains("ch_mult"), "{e}");
    }
}
