//! diffuse-trainer: schedules, losses, optimiser, training loop, samplers,
//! datasets, checkpoints, metrics and image output.

pub mod data;
pub mod error;
pub mod image_io;
pub mod metrics;

pub use data::{Batch, Dataset, DatasetKind, Loader, LoaderConfig, LoaderState};
pub use error::{Error, Result};
