//! Folders of PNG/JPEG images.
//!
//! The folder is searched recursively (hidden entries and symlinked
//! directories skipped) for `.png`, `.jpg` and `.jpeg` files (any case),
//! taken in sorted path order. Each is decoded by its content, resized so the
//! shorter side is the model's size with a Triangle (bilinear) filter — whose
//! support widens when shrinking, so downscaling is antialiased — then
//! centre-cropped to a square, and converted to grey (Rec. 709 luma) or RGB
//! (alpha dropped) to match the model's channels. Decoding runs in parallel.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{Dataset, DatasetKind};
use crate::error::{Error, Result};
use crate::raster::{load_image, Resize};

const MAX_DEPTH: usize = 32;

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
fn load_one(path: &Path, channels: usize, size: usize, out: &mut [f32]) -> Result<()> {
    out.copy_from_slice(&load_image(path, channels, size, Resize::Smooth)?.values);
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
    let mut images = vec![0f32; files.len() * per];
    let results: Vec<Result<()>> =
        images.par_chunks_mut(per).zip(files.par_iter()).map(|(out, f)| load_one(f, channels, size, out)).collect();
    if let Some(e) = results.into_iter().find_map(|r| r.err()) {
        return Err(e);
    }
    Dataset::from_vec(images, None, channels, size, size, DatasetKind::Folder, dir)
}
