//! The DDPM U-Net (Ho et al. 2020) with manual autograd: every layer has an
//! explicit forward that caches what it needs and a hand-written backward.
//! Parameters carry PyTorch's state_dict names, so weights load from and
//! save to safetensors files that map one to one onto the reference model.

pub mod atomic_file;
pub mod config;
pub mod diffusers;
pub mod error;
pub mod footprint;
pub mod io;
pub mod layers;
pub mod params;
pub mod unet;
pub mod verify;

pub use config::UNetConfig;
pub use error::{Result, UNetError};
pub use footprint::Footprint;
pub use layers::ForwardMode;
pub use params::{ParamId, ParamStore};
pub use unet::{GradReady, UNet, UNetCache};
