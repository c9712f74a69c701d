//! The `diffuse` command line: one module per subcommand.

pub mod device;
pub mod eval;
pub mod export;
pub mod forward;
pub mod import;
pub mod info;
pub mod progress;
pub mod sample;
pub mod train;
pub mod verify;
