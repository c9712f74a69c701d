//! CIFAR-10 binary batches: records of 1 label byte and 3072 image bytes
//! (1024 red, then 1024 green, then 1024 blue, each row-major 32x32).

use std::path::{Path, PathBuf};

use super::{byte_to_signed, Dataset, DatasetKind};
use crate::error::{Error, Result};
use crate::memory_budget::{mul, MemoryBudget, Need};

fn open_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::NotFound { path: path.to_path_buf() }
    } else {
        Error::io(path, e)
    }
}

/// Image side of CIFAR-10.
pub const CIFAR_SIZE: usize = 32;
/// CIFAR-10's classes, in label order (batches.meta.txt).
pub const CLASS_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Bytes of one record: 1 label + 3x32x32 pixels.
pub const CIFAR_RECORD: usize = 1 + 3 * CIFAR_SIZE * CIFAR_SIZE;

/// Loads CIFAR-10 training data from a directory of `data_batch_*.bin` (or
/// its `cifar-10-batches-bin/` subdirectory) or from one `.bin` file.
pub fn load_cifar10(path: &Path) -> Result<Dataset> {
    if path.is_dir() {
        match find_batches_in_dir(path)? {
            Some(files) => load_cifar_files(path, &files),
            None => Err(Error::Empty { path: path.to_path_buf(), reason: "no data_batch_*.bin files".into() }),
        }
    } else if path.exists() {
        load_cifar_files(path, &[path.to_path_buf()])
    } else {
        Err(Error::NotFound { path: path.to_path_buf() })
    }
}

/// True for a file whose extension is `.bin`.
pub(super) fn looks_like_cifar_file(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("bin"))
}

/// The `data_batch_*.bin` files of `dir` (or of `dir/cifar-10-batches-bin`),
/// in numeric order; `None` when there are none.
pub(super) fn find_batches_in_dir(dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    for d in [dir.to_path_buf(), dir.join("cifar-10-batches-bin")] {
        if !d.is_dir() {
            continue;
        }
        let mut found: Vec<(u64, String, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(mid) = name.strip_prefix("data_batch_").and_then(|r| r.strip_suffix(".bin")) {
                let p = entry.path();
                if p.is_file() {
                    found.push((mid.parse().unwrap_or(u64::MAX), name, p));
                }
            }
        }
        if !found.is_empty() {
            found.sort();
            return Ok(Some(found.into_iter().map(|(_, _, p)| p).collect()));
        }
    }
    Ok(None)
}

/// Loads and concatenates CIFAR-10 batch files. `source` names the dataset
/// in errors about the whole of it.
pub(super) fn load_cifar_files(source: &Path, files: &[PathBuf]) -> Result<Dataset> {
    // Sizes first, from the file system: the f32 images of every record and
    // the largest file's bytes must fit the memory budget before any is read.
    let mut total = 0u64;
    let mut largest = 0u64;
    for f in files {
        let len = std::fs::metadata(f).map_err(|e| open_error(f, e))?.len();
        total = total.saturating_add(len);
        largest = largest.max(len);
    }
    let records = total / CIFAR_RECORD as u64;
    MemoryBudget::global()?.check(
        format!("{}: {records} CIFAR-10 records", source.display()),
        &Need::one("f32 images", mul(records, 4 * (CIFAR_RECORD as u64 - 1))).add("file bytes", largest),
    )?;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| open_error(f, e))?;
        if bytes.len() % CIFAR_RECORD != 0 {
            return Err(Error::BadDims {
                path: f.clone(),
                reason: format!(
                    "{} bytes is {} whole CIFAR-10 records of {CIFAR_RECORD} bytes and a partial one of {} bytes (truncated or not CIFAR-10)",
                    bytes.len(),
                    bytes.len() / CIFAR_RECORD,
                    bytes.len() % CIFAR_RECORD
                ),
            });
        }
        images.reserve(bytes.len() / CIFAR_RECORD * (CIFAR_RECORD - 1));
        for (i, rec) in bytes.chunks_exact(CIFAR_RECORD).enumerate() {
            if rec[0] > 9 {
                return Err(Error::Labels {
                    path: f.clone(),
                    reason: format!("record {i} has label {}, CIFAR-10 labels are 0..=9 (is this CIFAR-100?)", rec[0]),
                });
            }
            labels.push(rec[0]);
            images.extend(rec[1..].iter().map(|&b| byte_to_signed(b)));
        }
    }
    if labels.is_empty() {
        return Err(Error::Empty {
            path: source.to_path_buf(),
            reason: "the CIFAR-10 batch files hold no records".into(),
        });
    }
    Dataset::from_vec(images, Some(labels), 3, CIFAR_SIZE, CIFAR_SIZE, DatasetKind::Cifar10, source)?
        .with_class_names(CLASS_NAMES.iter().map(|s| s.to_string()).collect())
}
