//! `diffuse selftest --device D`: every GPU-vs-CPU comparison of the test
//! suite run from inside the binary (diffuse_trainer::selftest), printed as
//! a table with each bound; non-zero exit on any failure.

use super::device::DeviceSpec;
use anyhow::{bail, Context, Result};
use clap::Args;
use diffuse_trainer::selftest::{self, Options};
use std::io::Write;

#[derive(Args)]
pub struct SelftestArgs {
    /// Device to check against the CPU reference: cpu, emu, cuda or cuda:N.
    #[arg(long)]
    pub device: DeviceSpec,
    /// Leave out the largest sizes (grid-stride wrap, MNIST-sized convolutions, 512-channel attention).
    #[arg(long)]
    pub quick: bool,
    /// One JSON object per row on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: SelftestArgs) -> Result<()> {
    let device = a.device.open().with_context(|| format!("cannot open --device {}", a.device))?;
    let opts = Options { quick: a.quick };
    let outcome = selftest::run(&device, &opts, |family| {
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e, "selftest on {device}: {family}");
    });
    if a.json {
        for row in &outcome.rows {
            println!("{}", row.to_json(&outcome.device));
        }
    } else {
        print!("{}", outcome.table());
    }
    let (rows, failed) = (outcome.rows.len(), outcome.failed());
    let checks: usize = outcome.rows.iter().map(|r| r.cases).sum();
    let mode = if a.quick { " (quick)" } else { "" };
    if failed > 0 {
        bail!(
            "selftest on {}{mode}: {failed} of {rows} ops failed ({checks} checks, {:.1} s)",
            outcome.device,
            outcome.seconds
        );
    }
    eprintln!(
        "selftest on {}{mode}: all {rows} ops passed ({checks} checks, {:.1} s)",
        outcome.device, outcome.seconds
    );
    Ok(())
}
