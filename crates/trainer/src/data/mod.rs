//! Datasets and the batch loader.
//!
//! Every dataset is held in memory as one contiguous `Vec<f32>` of
//! `N * C * H * W` values in `[-1, 1]` (byte `v` maps to `v / 127.5 - 1`), one
//! image after another, each image channel-major (C, H, W) — the NCHW layout
//! of the tensors.
//!
//! Formats, detected by [`Dataset::open`]:
//! - MNIST IDX image files (magic `0x00000803`), plain or gzip (detected by
//!   the gzip magic bytes, not the extension); a directory holding
//!   `train-images-idx3-ubyte[.gz]`; labels read from the matching
//!   `*-labels-idx1-ubyte[.gz]` when present.
//! - CIFAR-10 binary batches: a directory of `data_batch_*.bin` (or such a
//!   directory's `cifar-10-batches-bin/` subdirectory), or one `.bin` file.
//! - A directory (searched recursively) of PNG/JPEG images, resized so the
//!   shorter side is the model's size (Triangle filter, antialiased when
//!   shrinking), centre-cropped to a square and converted to grey or RGB.
//!
//! IDX and CIFAR data are never resized or converted: if they do not fit the
//! model the error says what the data has and what the model expects.

mod cifar;
mod folder;
mod loader;
mod mnist;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use cifar::load_cifar10;
pub use folder::{list_images, load_image_folder};
pub use loader::{epoch_permutation, flip_decision, Batch, Loader, LoaderConfig, LoaderState};
pub use mnist::{load_idx_images, load_idx_labels, read_maybe_gzip};

/// Which format a dataset was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// MNIST-style IDX image file (plain or gzip).
    Mnist,
    /// CIFAR-10 binary batches.
    Cifar10,
    /// A folder of PNG/JPEG images.
    Folder,
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Folder => "folder",
        })
    }
}

/// An in-memory image dataset: `len()` images of `channels x height x width`
/// f32 values in `[-1, 1]`, stored contiguously (NCHW).
#[derive(Debug, Clone)]
pub struct Dataset {
    images: Vec<f32>,
    labels: Option<Vec<u8>>,
    /// The name of each class (label k is `class_names[k]`), when labelled.
    class_names: Vec<String>,
    len: usize,
    channels: usize,
    height: usize,
    width: usize,
    kind: DatasetKind,
    source: PathBuf,
}

/// Converts a byte to the model's value range: `0 -> -1.0`, `255 -> 1.0`.
#[inline]
pub fn byte_to_signed(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

impl Dataset {
    /// Builds a dataset from values already in `[-1, 1]`.
    ///
    /// `images.len()` must be `n * channels * height * width` for some `n`
    /// (`n = 0` is refused), and `labels`, when given, must have `n` entries.
    pub fn from_vec(
        images: Vec<f32>,
        labels: Option<Vec<u8>>,
        channels: usize,
        height: usize,
        width: usize,
        kind: DatasetKind,
        source: impl Into<PathBuf>,
    ) -> Result<Dataset> {
        let source = source.into();
        let per = channels * height * width;
        if per == 0 {
            return Err(Error::BadDims {
                path: source,
                reason: format!("image dimensions {channels}x{height}x{width} contain a zero"),
            });
        }
        if !images.len().is_multiple_of(per) {
            return Err(Error::Shape(format!(
                "{} values is not a whole number of {channels}x{height}x{width} images",
                images.len()
            )));
        }
        let len = images.len() / per;
        if len == 0 {
            return Err(Error::Empty { path: source, reason: "no images".into() });
        }
        if let Some(l) = &labels {
            if l.len() != len {
                return Err(Error::Labels { path: source, reason: format!("{} labels for {len} images", l.len()) });
            }
        }
        // Default names: the labels' numbers (MNIST digits); loaders with
        // real names (CIFAR-10, image folders) set them.
        let class_names = match &labels {
            Some(l) => (0..=l.iter().copied().max().unwrap_or(0)).map(|k| k.to_string()).collect(),
            None => Vec::new(),
        };
        Ok(Dataset { images, labels, class_names, len, channels, height, width, kind, source })
    }

    /// Names the classes (one per label value; every label must have one).
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<Dataset> {
        if let Some(l) = &self.labels {
            if let Some(&max) = l.iter().max() {
                if max as usize >= names.len() {
                    return Err(Error::Labels {
                        path: self.source.clone(),
                        reason: format!("label {max} but only {} class names", names.len()),
                    });
                }
            }
        }
        self.class_names = names;
        Ok(self)
    }

    /// Only the images whose label is in `keep` (e.g. digits 0-4), in their
    /// original order. A dataset without labels, or a selection that keeps
    /// nothing, is an error.
    pub fn with_labels(self, keep: &[u8]) -> Result<Dataset> {
        let Some(labels) = &self.labels else {
            return Err(Error::Labels {
                path: self.source.clone(),
                reason: "no labels to select by (MNIST needs its *-labels-idx1-ubyte file beside the images)".into(),
            });
        };
        let per = self.channels * self.height * self.width;
        let picked: Vec<usize> = (0..self.len).filter(|&i| keep.contains(&labels[i])).collect();
        if picked.is_empty() {
            return Err(Error::Empty {
                path: self.source.clone(),
                reason: format!("no image has a label in {keep:?}"),
            });
        }
        let images = picked.iter().flat_map(|&i| self.images[i * per..(i + 1) * per].iter().copied()).collect();
        let labels = picked.iter().map(|&i| labels[i]).collect();
        // Class ids (and so names) keep their meaning in the selection.
        Dataset::from_vec(images, Some(labels), self.channels, self.height, self.width, self.kind, self.source)?
            .with_class_names(self.class_names)
    }

    /// Opens the dataset at `path` (file or directory), detecting its kind,
    /// and checks it fits a model of `channels` input channels and
    /// `image_size x image_size` images.
    ///
    /// IDX and CIFAR data must already have the model's shape (MNIST is
    /// 1x28x28, CIFAR-10 3x32x32); folders of images are resized,
    /// centre-cropped and converted to the model's channels.
    pub fn open(path: impl AsRef<Path>, channels: usize, image_size: usize) -> Result<Dataset> {
        let path = path.as_ref();
        if channels != 1 && channels != 3 {
            return Err(Error::InvalidArgument(format!(
                "model has {channels} input channels; datasets give 1 (grey) or 3 (RGB)"
            )));
        }
        if image_size == 0 {
            return Err(Error::InvalidArgument("image size 0".into()));
        }
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound { path: path.to_path_buf() })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let ds = if meta.is_dir() {
            if let Some(images) = mnist::find_idx_in_dir(path) {
                mnist::load_mnist(&images)?
            } else if let Some(files) = cifar::find_batches_in_dir(path)? {
                cifar::load_cifar_files(path, &files)?
            } else {
                return folder::load_image_folder(path, channels, image_size);
            }
        } else if cifar::looks_like_cifar_file(path) {
            cifar::load_cifar_files(path, &[path.to_path_buf()])?
        } else if folder::is_image_file(path) {
            return Err(Error::UnknownFormat {
                path: path.to_path_buf(),
                reason: "a single image is not a dataset; pass the folder that holds the images".into(),
            });
        } else {
            mnist::load_mnist(path)?
        };
        ds.check_fits(channels, image_size)?;
        Ok(ds)
    }

    /// Errors unless the images are `channels x size x size`.
    pub fn check_fits(&self, channels: usize, image_size: usize) -> Result<()> {
        if self.channels == channels && self.height == image_size && self.width == image_size {
            return Ok(());
        }
        let describe = |c: usize, h: usize, w: usize| {
            let colour = match c {
                1 => " (grey)",
                3 => " (RGB)",
                _ => "",
            };
            format!("{c}x{h}x{w}{colour}")
        };
        let hint = match self.kind {
            DatasetKind::Mnist => "MNIST is 1x28x28: use --config mnist (or tiny-mnist), or a --config JSON file with \"in_ch\": 1 and \"image_size\": 28",
            DatasetKind::Cifar10 => "CIFAR-10 is 3x32x32: use --config cifar10, or a --config JSON file with \"in_ch\": 3 and \"image_size\": 32",
            DatasetKind::Folder => "images are resized to the model's size when loaded",
        };
        Err(Error::ConfigMismatch {
            path: self.source.clone(),
            has: describe(self.channels, self.height, self.width),
            expected: describe(channels, image_size, image_size),
            hint: hint.into(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: an empty dataset cannot be built.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Channels per image (1 or 3).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Image height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Image width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// `(channels, height, width)` of every image.
    pub fn dims(&self) -> (usize, usize, usize) {
        (self.channels, self.height, self.width)
    }

    /// Values per image, `C * H * W`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// All images, `len() * C * H * W` values in `[-1, 1]`.
    pub fn images(&self) -> &[f32] {
        &self.images
    }

    /// Image `i` as `C * H * W` values. Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Class labels, when the dataset has them (MNIST with its labels file,
    /// CIFAR-10).
    pub fn labels(&self) -> Option<&[u8]> {
        self.labels.as_deref()
    }

    /// The class names (empty for an unlabelled dataset); a class-conditional
    /// model has one class per name.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The format the data was read from.
    pub fn kind(&self) -> DatasetKind {
        self.kind
    }

    /// The path the data was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }
}
