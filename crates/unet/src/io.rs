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
    let bytes =
        safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| UNetError::Safetensors(e.to_string()))?;
    sort_header(bytes)
}

/// safetensors writes the metadata map in hash order, which changes from
/// run to run; rewriting it with its keys sorted makes the same tensors and
/// metadata always give the same bytes. The map comes first in the header
/// and keeps its length, so nothing else moves.
fn sort_header(mut bytes: Vec<u8>) -> Result<Vec<u8>> {
    const PREFIX: &[u8] = b"{\"__metadata__\":";
    let start = 8 + PREFIX.len();
    if bytes.get(8..start) != Some(PREFIX) {
        return Ok(bytes);
    }
    let mut stream =
        serde_json::Deserializer::from_slice(&bytes[start..]).into_iter::<std::collections::BTreeMap<String, String>>();
    let sorted = match stream.next() {
        Some(Ok(map)) => serde_json::to_vec(&map).map_err(|e| UNetError::Safetensors(e.to_string()))?,
        _ => return Ok(bytes),
    };
    let end = start + stream.byte_offset();
    if end - start == sorted.len() {
        bytes[start..end].copy_from_slice(&sorted);
    }
    Ok(bytes)
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

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn same_tensors_and_metadata_give_the_same_bytes() {
        let entries = vec![("w".to_string(), vec![2], vec![0u8; 8]), ("b".to_string(), vec![1], vec![1u8; 4])];
        let meta = || (0..12).map(|i| (format!("key{i}"), format!("value \"{i}\""))).collect::<HashMap<_, _>>();
        let first = serialize(&entries, meta()).unwrap();
        for _ in 0..8 {
            // Each map has its own hash seed, so its own iteration order.
            assert_eq!(serialize(&entries, meta()).unwrap(), first);
        }
        assert_eq!(metadata(&first).unwrap(), meta());
        assert_eq!(parse(&first).unwrap().tensor("b").unwrap().data(), &[1u8; 4]);
    }
}
