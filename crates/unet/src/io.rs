//! Reading and writing parameters as safetensors (f32, PyTorch names).

use crate::atomic_file::write_atomic;
use crate::params::ParamStore;
use crate::{Result, UNetError};
use diffuse_tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// A tensor read from a safetensors file, as f32 (int32 is converted, so
/// timesteps read too).
pub fn view_to_tensor(name: &str, v: &TensorView<'_>) -> Result<Tensor> {
    let shape = v.shape().to_vec();
    let bytes = v.data();
    let data: Vec<f32> = match v.dtype() {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::I32 => bytes.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32).collect(),
        Dtype::I64 => bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        other => return Err(UNetError::Safetensors(format!("tensor {name} has dtype {other:?}; expected F32"))),
    };
    Ok(Tensor::from_vec(data, shape)?)
}

/// Reads the whole file, with the path in any error.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| UNetError::Io { path: path.display().to_string(), source })
}

pub fn parse(bytes: &[u8]) -> Result<SafeTensors<'_>> {
    SafeTensors::deserialize(bytes).map_err(|e| UNetError::Safetensors(format!("not a valid safetensors file: {e}")))
}

/// The metadata map of a safetensors file (empty if it has none).
pub fn metadata(bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| UNetError::Safetensors(format!("not a valid safetensors file: {e}")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Loads every parameter of `store` from tensors named `prefix + name`,
/// checking shapes; a missing or misshapen tensor is an error and nothing
/// is changed.
pub fn load_params(store: &mut ParamStore, st: &SafeTensors<'_>, prefix: &str) -> Result<()> {
    let mut loaded = Vec::with_capacity(store.len());
    for id in store.ids() {
        let name = format!("{prefix}{}", store.name(id));
        let view = st.tensor(&name).map_err(|_| UNetError::MissingParam(name.clone()))?;
        let t = view_to_tensor(&name, &view)?;
        let want = store.value(id).dims();
        if t.dims() != want {
            return Err(UNetError::ParamShape { name, expected: want.to_vec(), got: t.dims().to_vec() });
        }
        loaded.push((id, t));
    }
    for (id, t) in loaded {
        store.set(id, t)?;
    }
    Ok(())
}

/// Little-endian f32 bytes of a tensor (from any device).
pub fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(t.to_vec_f32()?.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// One tensor to serialise: name, shape, little-endian f32 bytes.
pub type Entry = (String, Vec<usize>, Vec<u8>);

/// Serialises named tensors with metadata.
pub fn serialize(tensors: &[Entry], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| UNetError::Safetensors(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| UNetError::Safetensors(e.to_string()))
}

/// The parameters of `store` as `(prefix + name, shape, bytes)` entries.
pub fn param_entries(store: &ParamStore, prefix: &str) -> Result<Vec<Entry>> {
    store.iter().map(|(n, t)| Ok((format!("{prefix}{n}"), t.dims().to_vec(), tensor_bytes(t)?))).collect()
}

/// Saves a model's parameters (PyTorch names) to a safetensors file.
pub fn save_params(store: &ParamStore, path: &Path, metadata: HashMap<String, String>) -> Result<()> {
    let bytes = serialize(&param_entries(store, "")?, metadata)?;
    Ok(write_atomic(path, &bytes)?)
}
