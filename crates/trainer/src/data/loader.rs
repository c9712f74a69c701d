//! The batch loader: seeded shuffling per epoch, optional random horizontal
//! flips, and a small state that a checkpoint can save and restore exactly.
//!
//! - The order of epoch `e` is [`epoch_permutation`]`(n, seed, e)`: a
//!   Fisher-Yates shuffle driven by SplitMix64 seeded from `(seed, e)`, a pure
//!   function of those three numbers (identity order when shuffling is off).
//! - An epoch yields `n / batch_size` full batches. The last partial batch is
//!   dropped: those `n % batch_size` images are skipped in this epoch and the
//!   next epoch starts with a fresh permutation (so every batch has exactly
//!   `batch_size` images, and over epochs every image is seen).
//! - Whether the image at position `p` of epoch `e` is flipped is
//!   [`flip_decision`]`(seed, e, p)`, independent of the batch size.
//! - [`LoaderState`] `{ epoch, position }` points at the next batch to hand
//!   out; [`Loader::set_state`] on a loader built with the same dataset and
//!   config gives exactly the batches the saved loader would have given.

use serde::{Deserialize, Serialize};

use super::Dataset;
use crate::error::{Error, Result};

/// Where a loader is: the epoch and the index into that epoch's permutation
/// of the first image of the next batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct LoaderState {
    pub epoch: u64,
    pub position: u64,
}

/// How a [`Loader`] draws batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Images per batch (at least 1, at most the dataset's size).
    pub batch_size: usize,
    /// Seed of the shuffling and of the flips.
    pub seed: u64,
    /// Shuffle every epoch (otherwise dataset order).
    pub shuffle: bool,
    /// Flip each image horizontally with probability 1/2.
    pub hflip: bool,
}

impl LoaderConfig {
    /// Shuffled, not flipped.
    pub fn new(batch_size: usize, seed: u64) -> Self {
        LoaderConfig { batch_size, seed, shuffle: true, hflip: false }
    }

    /// The same with random horizontal flips on or off.
    pub fn with_hflip(mut self, hflip: bool) -> Self {
        self.hflip = hflip;
        self
    }

    /// The same with shuffling on or off.
    pub fn with_shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }
}

/// One batch: `batch_size` images of `C x H x W` (NCHW, values in `[-1, 1]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `batch_size * C * H * W` values.
    pub images: Vec<f32>,
    /// Labels of the images, when the dataset has labels.
    pub labels: Option<Vec<u8>>,
    /// Dataset index of each image.
    pub indices: Vec<usize>,
    /// Whether each image was flipped.
    pub flipped: Vec<bool>,
    /// The loader's state before this batch (its epoch and the position of
    /// its first image).
    pub state: LoaderState,
    /// `[batch_size, C, H, W]`.
    pub shape: [usize; 4],
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const PERM_DOMAIN: u64 = 0x7065_726d_7574_6521; // "permute!"
const FLIP_DOMAIN: u64 = 0x666c_6970_666c_6970; // "flipflip"

/// The SplitMix64 output function (a bijective 64-bit mixer).
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64 (Steele, Lea and Flood 2014).
struct SplitMix64(u64);

impl SplitMix64 {
    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    /// Uniform in `0..bound` by the multiply-shift method (bias below
    /// `bound / 2^64`, negligible for any dataset).
    #[inline]
    fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }
}

/// The order of epoch `epoch`: a permutation of `0..n`, a pure function of
/// `(n, seed, epoch)`.
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(mix64(seed ^ PERM_DOMAIN) ^ mix64(epoch.wrapping_add(GOLDEN)));
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    perm
}

/// Whether the image at `position` of epoch `epoch` is flipped (when flips
/// are on): a pure function of `(seed, epoch, position)`, true half the time.
pub fn flip_decision(seed: u64, epoch: u64, position: u64) -> bool {
    let h = mix64(mix64(mix64(seed ^ FLIP_DOMAIN) ^ epoch) ^ position.wrapping_mul(GOLDEN));
    h >> 63 == 1
}

/// Hands out batches of a [`Dataset`], forever, epoch after epoch.
#[derive(Debug, Clone)]
pub struct Loader {
    dataset: Dataset,
    config: LoaderConfig,
    state: LoaderState,
    perm: Vec<usize>,
    perm_epoch: Option<u64>,
}

impl Loader {
    /// A loader at epoch 0, position 0. Errors if the batch size is 0 or
    /// larger than the dataset.
    pub fn new(dataset: Dataset, config: LoaderConfig) -> Result<Loader> {
        if config.batch_size == 0 {
            return Err(Error::InvalidArgument("batch size 0".into()));
        }
        if config.batch_size > dataset.len() {
            return Err(Error::InvalidArgument(format!(
                "batch size {} is larger than the dataset ({} images in {})",
                config.batch_size,
                dataset.len(),
                dataset.source().display()
            )));
        }
        Ok(Loader { dataset, config, state: LoaderState::default(), perm: Vec::new(), perm_epoch: None })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// Gives the dataset back.
    pub fn into_dataset(self) -> Dataset {
        self.dataset
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Full batches per epoch, `n / batch_size`.
    pub fn batches_per_epoch(&self) -> usize {
        self.dataset.len() / self.config.batch_size
    }

    /// `[batch_size, C, H, W]`.
    pub fn batch_shape(&self) -> [usize; 4] {
        let (c, h, w) = self.dataset.dims();
        [self.config.batch_size, c, h, w]
    }

    /// The state: where the next batch starts.
    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// Moves to a saved state, so that the next batches are those the saved
    /// loader would have given. A position that leaves less than a full
    /// batch in its epoch (as after a change of batch size) moves to the
    /// start of the next epoch; a position past the end of the dataset is an
    /// error.
    pub fn set_state(&mut self, state: LoaderState) -> Result<()> {
        let n = self.dataset.len() as u64;
        if state.position > n {
            return Err(Error::InvalidArgument(format!(
                "loader state at position {} of epoch {} but the dataset has {n} images",
                state.position, state.epoch
            )));
        }
        self.state = state;
        self.normalise();
        Ok(())
    }

    fn normalise(&mut self) {
        let n = self.dataset.len() as u64;
        if self.state.position + self.config.batch_size as u64 > n {
            self.state.epoch += 1;
            self.state.position = 0;
        }
    }

    fn ensure_perm(&mut self) {
        if self.perm_epoch == Some(self.state.epoch) {
            return;
        }
        let n = self.dataset.len();
        self.perm = if self.config.shuffle {
            epoch_permutation(n, self.config.seed, self.state.epoch)
        } else {
            (0..n).collect()
        };
        self.perm_epoch = Some(self.state.epoch);
    }

    /// The next batch; advances the state.
    pub fn next_batch(&mut self) -> Batch {
        self.next_batch_part(0..self.config.batch_size)
    }

    /// Samples `part` of the next batch (a data-parallel rank's shard): the
    /// values `next_batch` gives for them, with only their images copied
    /// and flipped; advances the state past the whole batch.
    pub fn next_batch_part(&mut self, part: std::ops::Range<usize>) -> Batch {
        self.ensure_perm();
        let b = self.config.batch_size;
        let part = part.start.min(b)..part.end.min(b).max(part.start.min(b));
        let per = self.dataset.image_len();
        let (c, h, w) = self.dataset.dims();
        let start = self.state;
        let pos = start.position as usize;
        let indices: Vec<usize> = self.perm[pos + part.start..pos + part.end].to_vec();
        let flipped: Vec<bool> = part
            .clone()
            .map(|k| self.config.hflip && flip_decision(self.config.seed, start.epoch, (pos + k) as u64))
            .collect();
        let mut images = Vec::with_capacity(part.len() * per);
        for (&i, &flip) in indices.iter().zip(&flipped) {
            let img = self.dataset.image(i);
            if flip {
                for row in img.chunks_exact(w) {
                    images.extend(row.iter().rev());
                }
            } else {
                images.extend_from_slice(img);
            }
        }
        let labels = self.dataset.labels().map(|l| indices.iter().map(|&i| l[i]).collect());
        self.state.position += b as u64;
        self.normalise();
        Batch { images, labels, indices, flipped, state: start, shape: [part.len(), c, h, w] }
    }
}

impl Iterator for Loader {
    type Item = Batch;

    /// Never `None`: the loader runs epoch after epoch.
    fn next(&mut self) -> Option<Batch> {
        Some(self.next_batch())
    }
}
