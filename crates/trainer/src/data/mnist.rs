//! MNIST IDX files (images `0x00000803`, labels `0x00000801`), plain or gzip.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{byte_to_signed, Dataset, DatasetKind};
use crate::error::{Error, Result};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads a whole file, decompressing it if it starts with the gzip magic
/// bytes (whatever its extension).
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound { path: path.to_path_buf() }
        } else {
            Error::io(path, e)
        }
    })?;
    if raw.len() < 2 || raw[..2] != GZIP_MAGIC {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| Error::CorruptGzip {
        path: path.to_path_buf(),
        reason: if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "unexpected end of the compressed stream (the file is truncated)".into()
        } else {
            e.to_string()
        },
    })?;
    Ok(out)
}

/// Parses an IDX header: checks the magic and returns the dimensions and the
/// payload that follows the header (checked to be exactly the right size).
fn parse_idx<'a>(bytes: &'a [u8], path: &Path, magic: u32, what: &'static str) -> Result<(Vec<usize>, &'a [u8])> {
    let ndim = (magic & 0xff) as usize;
    if bytes.len() < 4 {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: "the IDX magic number".into(),
            expected: 4,
            found: bytes.len() as u64,
        });
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        return Err(Error::BadMagic { path: path.to_path_buf(), what, found, expected: magic });
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: format!("the IDX header ({ndim} dimensions)"),
            expected: header as u64,
            found: bytes.len() as u64,
        });
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&c| c <= (usize::MAX / 4) as u64)
        .ok_or_else(|| Error::BadDims {
            path: path.to_path_buf(),
            reason: format!("dimensions {dims:?} are too large"),
        })?;
    let payload = &bytes[header..];
    let dims_text = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    if (payload.len() as u64) < count {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: format!("the header's {dims_text} {what}"),
            expected: header as u64 + count,
            found: bytes.len() as u64,
        });
    }
    if payload.len() as u64 > count {
        return Err(Error::BadDims {
            path: path.to_path_buf(),
            reason: format!(
                "the header says {dims_text} {what} ({} bytes) but {} bytes follow it",
                count,
                payload.len()
            ),
        });
    }
    Ok((dims, payload))
}

/// Loads an IDX image file (plain or gzip): returns the raw bytes and
/// `(n, rows, cols)`.
pub fn load_idx_images(path: &Path) -> Result<(Vec<u8>, usize, usize, usize)> {
    let bytes = read_maybe_gzip(path)?;
    let (dims, payload) = parse_idx(&bytes, path, IDX_IMAGES_MAGIC, "images")?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if n == 0 {
        return Err(Error::Empty { path: path.to_path_buf(), reason: "the IDX header says 0 images".into() });
    }
    if rows == 0 || cols == 0 {
        return Err(Error::BadDims { path: path.to_path_buf(), reason: format!("images of {rows}x{cols} pixels") });
    }
    Ok((payload.to_vec(), n, rows, cols))
}

/// Loads an IDX label file (plain or gzip).
pub fn load_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gzip(path)?;
    let (_, payload) = parse_idx(&bytes, path, IDX_LABELS_MAGIC, "labels")?;
    Ok(payload.to_vec())
}

/// The image file of an MNIST directory, if it has one.
pub(super) fn find_idx_in_dir(dir: &Path) -> Option<PathBuf> {
    ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "train-images.idx3-ubyte", "train-images.idx3-ubyte.gz"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// The labels file that goes with an images file, if there is one: the same
/// name with `images-idx3`/`images.idx3` replaced by `labels-idx1`/
/// `labels.idx1`, with or without `.gz`.
fn labels_for(images: &Path) -> Option<PathBuf> {
    let name = images.file_name()?.to_str()?;
    let swapped = if name.contains("images-idx3") {
        name.replace("images-idx3", "labels-idx1")
    } else if name.contains("images.idx3") {
        name.replace("images.idx3", "labels.idx1")
    } else {
        return None;
    };
    let base = swapped.strip_suffix(".gz").unwrap_or(&swapped).to_string();
    let dir = images.parent().unwrap_or(Path::new("."));
    [base.clone(), format!("{base}.gz")].into_iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Loads an MNIST images file and, when present beside it, its labels.
pub(super) fn load_mnist(path: &Path) -> Result<Dataset> {
    let (bytes, n, rows, cols) = load_idx_images(path)?;
    let labels = match labels_for(path) {
        Some(lp) => {
            let l = load_idx_labels(&lp)?;
            if l.len() != n {
                return Err(Error::Labels {
                    path: lp,
                    reason: format!("{} labels for {n} images in {}", l.len(), path.display()),
                });
            }
            Some(l)
        }
        None => None,
    };
    let images: Vec<f32> = bytes.iter().map(|&b| byte_to_signed(b)).collect();
    Dataset::from_vec(images, labels, 1, rows, cols, DatasetKind::Mnist, path)
}
