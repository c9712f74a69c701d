//! The `diffuse` command line: one module per subcommand, plus the argument
//! types they share (`device`, `model_config`) and the progress bar.

pub mod device;
pub mod eval;
pub mod info;
pub mod merge_lora;
pub mod model_config;
pub mod progress;
pub mod sample;
pub mod train;
pub mod verify;
