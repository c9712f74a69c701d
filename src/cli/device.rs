//! `--device auto|cpu|cuda[:N]|emu`: a typed clap value, so `--help` lists
//! the choices and a wrong one is clap's own error.

use anyhow::Result;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser, ValueParserFactory};
use clap::error::ErrorKind;
use diffuse_tensor::Device;
use std::ffi::OsStr;
use std::fmt;

/// A device as named on the command line (opened later by [`DeviceSpec::open`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first CUDA GPU if there is one, else the CPU.
    Auto,
    Cpu,
    /// The CUDA GPU of this ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
    /// The CUDA emulator.
    Emu,
}

impl DeviceSpec {
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto => Ok(cuda(0).unwrap_or(Device::Cpu)),
            DeviceSpec::Cuda(ordinal) => cuda(ordinal),
            DeviceSpec::Emu => emu(),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Emu => f.write_str("emu"),
        }
    }
}

/// Parses `--device` values; its possible values are what `--help` shows.
#[derive(Clone, Copy)]
pub struct DeviceParser;

impl DeviceParser {
    fn choices() -> [PossibleValue; 5] {
        [
            PossibleValue::new("auto").help("The first CUDA GPU if there is one, else the CPU"),
            PossibleValue::new("cpu").help("The CPU (rayon threads)"),
            PossibleValue::new("cuda").help("CUDA GPU 0"),
            PossibleValue::new("cuda:N").help("CUDA GPU number N"),
            PossibleValue::new("emu").help("The CUDA emulator (kernels run on the CPU)"),
        ]
    }
}

impl TypedValueParser for DeviceParser {
    type Value = DeviceSpec;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<DeviceSpec, clap::Error> {
        if let Some(n) = value.to_str().and_then(|s| s.strip_prefix("cuda:")).and_then(|n| n.parse().ok()) {
            return Ok(DeviceSpec::Cuda(n));
        }
        // Anything else must be one of the names; clap words the error and
        // lists the possible values.
        match PossibleValuesParser::new(Self::choices()).parse_ref(cmd, arg, value)?.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "emu" => Ok(DeviceSpec::Emu),
            _ => Err(clap::Error::raw(
                ErrorKind::InvalidValue,
                "a device number is needed in place of N: cuda:0, cuda:1, ...\n",
            )
            .with_cmd(cmd)),
        }
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(Self::choices().into_iter()))
    }
}

impl ValueParserFactory for DeviceSpec {
    type Parser = DeviceParser;
    fn value_parser() -> DeviceParser {
        DeviceParser
    }
}

fn cuda(ordinal: usize) -> Result<Device> {
    Ok(diffuse_tensor::gpu::cuda::cuda_device(ordinal)?)
}

fn emu() -> Result<Device> {
    Ok(diffuse_tensor::gpu::emu::emu_device()?)
}

pub fn cuda_probe() -> String {
    diffuse_tensor::gpu::cuda::cuda_probe()
}

pub fn emu_probe() -> String {
    diffuse_tensor::gpu::emu::emu_probe()
}
