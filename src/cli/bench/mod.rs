//! `diffuse bench`: performance measurements from the binary itself.
//! `bench kernels` times every op at the presets' sizes (kernels.rs).

mod counting;
mod inventory;
pub mod kernels;
mod peaks;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time every op of a training step at the mnist and cifar10 sizes (counts only on the emulator).
    Kernels(kernels::KernelsArgs),
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.command {
        BenchCommand::Kernels(k) => kernels::run(k),
    }
}
