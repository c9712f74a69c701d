//! Using a trained model on images: denoising a noisy image, inpainting
//! (RePaint) and image-to-image (SDEdit), plus the pieces they share: the
//! map between a pixel noise level and a timestep, inpainting masks and a
//! classical denoiser to compare against. All images are NCHW `f32` in the
//! model's `[-1, 1]` unless a function says otherwise.

pub mod baseline;
pub mod denoise;
pub mod img2img;
pub mod inpaint;
pub mod masks;
pub mod noise_level;

/// Philox streams of the restoration verbs (the sampler uses 7 and 8, the
/// trainer 0 and 1): noise added to a clean image, SDEdit's starting noise,
/// RePaint's known-region re-noising and its jumps back up.
pub(crate) const ADDED_NOISE_STREAM: u32 = 11;
pub(crate) const SDEDIT_STREAM: u32 = 12;
pub(crate) const REPAINT_KNOWN_STREAM: u32 = 9;
pub(crate) const REPAINT_JUMP_STREAM: u32 = 10;
