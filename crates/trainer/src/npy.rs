//! NumPy `.npy` arrays of little-endian float32 in C order: written as
//! NPY v1.0 (as NumPy writes them), read in versions 1 to 3.

use std::path::Path;

use diffuse_unet::atomic_file::write_atomic;

use crate::error::{Error, Result};

const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The bytes of an NPY v1.0 file holding `data` as little-endian float32 of
/// `shape` (C order). The header is padded with spaces and ends in `\n` so
/// that the data starts at a multiple of 64 bytes, as NumPy writes it.
pub fn npy_bytes(data: &[f32], shape: &[usize]) -> Result<Vec<u8>> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(data.len()) {
        return Err(Error::Shape(format!("{} values given for an array of shape {shape:?}", data.len())));
    }
    let shape_text = match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    let unpadded = NPY_MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let hlen = u16::try_from(header.len())
        .map_err(|_| Error::InvalidArgument(format!("NPY header too long for shape {shape:?}")))?;
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&hlen.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Saves `data` as an NPY v1.0 float32 array of `shape` (for images,
/// `[n, c, h, w]`), atomically.
pub fn save_npy(path: impl AsRef<Path>, data: &[f32], shape: &[usize]) -> Result<()> {
    Ok(write_atomic(path.as_ref(), &npy_bytes(data, shape)?)?)
}

/// Parses an NPY file (v1, v2 or v3) of little-endian float32 in C order:
/// returns the values and the shape.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    let bad = |reason: String| Error::BadDims { path: path.to_path_buf(), reason };
    if bytes.len() < 10 || &bytes[..6] != NPY_MAGIC {
        return Err(bad("not an NPY file (no \\x93NUMPY magic)".into()));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad(format!("unsupported NPY version {v}"))),
    };
    let header = bytes
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("NPY header truncated or not text".into()))?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[i..].trim_start();
        Some(rest.strip_prefix(':')?.trim_start())
    };
    let descr = field("descr").ok_or_else(|| bad("NPY header has no 'descr'".into()))?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("\"<f4\"")) {
        return Err(bad(format!(
            "NPY dtype {} is not little-endian float32 '<f4'",
            descr.split(',').next().unwrap_or("")
        )));
    }
    let fortran = field("fortran_order").ok_or_else(|| bad("NPY header has no 'fortran_order'".into()))?;
    if !fortran.starts_with("False") {
        return Err(bad("NPY array in Fortran order".into()));
    }
    let shape_text = field("shape").ok_or_else(|| bad("NPY header has no 'shape'".into()))?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(format!("NPY shape {shape_text} is not a tuple")))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(format!("NPY shape ({inner}) is not a tuple of integers")))?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("NPY shape {shape:?} too large")))?;
    let payload = &bytes[start + hlen..];
    if payload.len() != count.saturating_mul(4) {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: format!("an NPY float32 array of shape {shape:?}"),
            expected: (start + hlen + count * 4) as u64,
            found: bytes.len() as u64,
        });
    }
    let data = payload.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok((data, shape))
}

/// Loads an NPY float32 array: the values and the shape.
pub fn load_npy(path: impl AsRef<Path>) -> Result<(Vec<f32>, Vec<usize>)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound { path: path.to_path_buf() }
        } else {
            Error::io(path, e)
        }
    })?;
    parse_npy(&bytes, path)
}
