//! `diffuse bench`: performance measurements from the binary itself.
//! `bench kernels` times every op at the presets' sizes (kernels.rs);
//! `bench step` times whole training or sampling steps (step.rs).

mod counting;
mod inventory;
pub mod kernels;
mod peaks;
pub mod step;

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
    /// Time whole training or sampling steps after warm-up; one JSON line (--counters: driver calls per step).
    Step(step::BenchStepArgs),
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.command {
        BenchCommand::Kernels(k) => kernels::run(k),
        BenchCommand::Step(s) => step::run(s),
    }
}
