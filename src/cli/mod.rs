//! The `diffuse` command line: one module per subcommand, plus the argument
//! types they share (`device`, `model_config`) and the progress bar.

pub mod bench;
pub mod data_parallel;
pub mod denoise;
pub mod device;
pub mod eval;
pub mod export;
pub mod forward;
pub mod image_verbs;
pub mod img2img;
pub mod import;
pub mod info;
pub mod inpaint;
pub mod merge_lora;
pub mod model_config;
pub mod progress;
pub mod sample;
pub mod selftest;
pub mod signals;
pub mod train;
pub mod verify;
pub mod writable;
