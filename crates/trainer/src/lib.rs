//! diffuse-trainer: schedules, losses, optimiser, training loop, samplers,
//! datasets, checkpoints, metrics and image output.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod data_parallel;
pub mod diffusers;
pub mod diffusion;
pub mod divergence;
pub mod error;
pub mod finetune;
pub mod flat_state;
pub mod grad_buckets;
pub mod guidance;
pub mod image_grid;
pub mod loss_weighting;
pub mod memory_budget;
pub mod metrics;
pub mod noise_levels;
pub mod npy;
pub mod optim;
pub mod param_select;
pub mod plot;
pub mod raster;
pub mod restore;
pub mod run_lock;
pub mod sampler;
pub mod selftest;
pub mod solvers;
pub mod step_inputs;
pub mod step_log;
pub mod step_scalars;
pub mod train;

pub use data::{Batch, Dataset, DatasetKind, Loader, LoaderConfig, LoaderState};
pub use error::{Error, Result};
