//! `diffuse bench`: measurements of the engine (`step`: whole training or
//! sampling steps).

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time whole training or sampling steps after warm-up; one JSON line.
    Step(super::bench_step::BenchStepArgs),
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.command {
        BenchCommand::Step(s) => super::bench_step::run(s),
    }
}
