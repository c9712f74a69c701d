//! Folders of PNG/JPEG images.
//!
//! The folder is searched recursively (hidden entries and symlinked
//! directories skipped) for `.png`, `.jpg` and `.jpeg` files (any case),
//! taken in sorted path order. Each is decoded by its content, resized so the
//! shorter side is the model's size with a Triangle (bilinear) filter — whose
//! support widens when shrinking, so downscaling is antialiased — then
//! centre-cropped to a square, and converted to grey (Rec. 709 luma) or RGB
//! (alpha dropped) to match the model's channels. Decoding runs in parallel.
//!
//! Classes follow torchvision's ImageFolder convention: when the folder
//! holds no image directly but subfolders of images, each subfolder is a
//! class (label = its index among the subfolders sorted by name, which are
//! kept as the class names); otherwise the images are unlabelled.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{Dataset, DatasetKind};
use crate::error::{Error, Result};
use crate::memory_budget::{mul, MemoryBudget, Need};
use crate::raster::{load_image_limited, Resize};

const MAX_DEPTH: usize = 32;

/// The most one image's decoder may allocate (the `image` crate's default):
/// a header claiming a larger image is refused before its pixels are.
const MAX_DECODE_BYTES: u64 = 512 << 20;

/// True for a path whose extension is png, jpg or jpeg (any case).
pub(super) fn is_image_file(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        e.eq_ignore_ascii_case("png") || e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")
    })
}

fn collect(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if ft.is_dir() {
            collect(&path, depth + 1, out)?;
        } else if is_image_file(&path) && path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Every PNG/JPEG file under `dir`, sorted.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect(dir, 0, &mut files)?;
    files.sort();
    Ok(files)
}

/// Decodes one image and writes it, resized, cropped and converted, into
/// `out` (`channels * size * size` values in `[-1, 1]`).
fn load_one(path: &Path, channels: usize, size: usize, max_decode: u64, out: &mut [f32]) -> Result<()> {
    out.copy_from_slice(&load_image_limited(path, channels, size, Resize::Smooth, max_decode)?.values);
    Ok(())
}

/// Loads every PNG/JPEG under `dir` as `channels x size x size` images.
pub fn load_image_folder(dir: &Path, channels: usize, size: usize) -> Result<Dataset> {
    if channels != 1 && channels != 3 {
        return Err(Error::InvalidArgument(format!("{channels} channels: image folders load as 1 (grey) or 3 (RGB)")));
    }
    if size == 0 {
        return Err(Error::InvalidArgument("image size 0".into()));
    }
    if !dir.exists() {
        return Err(Error::NotFound { path: dir.to_path_buf() });
    }
    let files = list_images(dir)?;
    if files.is_empty() {
        return Err(Error::Empty {
            path: dir.to_path_buf(),
            reason:
                "no MNIST IDX file, no CIFAR-10 data_batch_*.bin and no PNG/JPEG images found (searched recursively)"
                    .into(),
        });
    }
    let per = channels * size * size;
    // Every decoder in flight (one per thread) may use up to MAX_DECODE_BYTES.
    let budget = MemoryBudget::global()?;
    let threads = rayon::current_num_threads() as u64;
    let max_decode = MAX_DECODE_BYTES.min(budget.limit / (threads + 1)).max(1);
    let images_bytes = mul(mul(files.len() as u64, per as u64), 4);
    budget.check(
        format!("{}: {} images of {channels}x{size}x{size}", dir.display(), files.len()),
        &Need::one("f32 images", images_bytes).add("decoders", mul(threads, max_decode)),
    )?;
    let mut images = vec![0f32; files.len() * per];
    let results: Vec<Result<()>> = images
        .par_chunks_mut(per)
        .zip(files.par_iter())
        .map(|(out, f)| load_one(f, channels, size, max_decode, out))
        .collect();
    if let Some(e) = results.into_iter().find_map(|r| r.err()) {
        return Err(e);
    }
    let (labels, names) = match classes_of(dir, &files)? {
        Some((labels, names)) => (Some(labels), names),
        None => (None, Vec::new()),
    };
    let d = Dataset::from_vec(images, labels, channels, size, size, DatasetKind::Folder, dir)?;
    if names.is_empty() {
        Ok(d)
    } else {
        d.with_class_names(names)
    }
}

/// The ImageFolder labels of `files` (all under `dir`): the index of each
/// file's first path component among the sorted class folders, or None when
/// some image sits directly in `dir` (an unlabelled folder).
fn classes_of(dir: &Path, files: &[PathBuf]) -> Result<Option<(Vec<u8>, Vec<String>)>> {
    let mut class_of_file = Vec::with_capacity(files.len());
    for f in files {
        let rel = f.strip_prefix(dir).unwrap_or(f);
        let mut parts = rel.components();
        let first = parts.next().map(|c| c.as_os_str().to_string_lossy().into_owned());
        match (first, parts.next()) {
            (Some(class), Some(_)) => class_of_file.push(class),
            _ => return Ok(None),
        }
    }
    let mut names: Vec<String> = class_of_file.clone();
    names.sort();
    names.dedup();
    if names.len() > 256 {
        return Err(Error::Labels {
            path: dir.to_path_buf(),
            reason: format!("{} class folders; at most 256 classes are supported", names.len()),
        });
    }
    let labels = class_of_file.iter().map(|c| names.binary_search(c).unwrap_or(0) as u8).collect();
    Ok(Some((labels, names)))
}
