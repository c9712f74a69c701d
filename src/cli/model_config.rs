//! `--config`: a model preset by name or a JSON file of UNetConfig fields
//! (`diffuse train` builds its model from it, `diffuse info` counts it).

use anyhow::{anyhow, Result};
use diffuse_unet::UNetConfig;

/// A preset name or a JSON file with the reference's UNetConfig fields.
pub fn load_config(spec: &str) -> Result<UNetConfig> {
    if let Some(c) = UNetConfig::preset(spec) {
        return Ok(c);
    }
    let text = std::fs::read_to_string(spec).map_err(|e| {
        anyhow!("--config {spec:?} is neither a preset (tiny, mnist, cifar10) nor a readable file: {e}")
    })?;
    Ok(UNetConfig::from_json(&text)?)
}
