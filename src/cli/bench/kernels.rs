//! `diffuse bench kernels`: every op of a training step at the sizes of the
//! mnist and cifar10 presets, forward and backward, one JSON line per
//! kernel pass (or a table), with the achieved GFLOP/s and GB/s beside the
//! device's peak (peaks.rs), and a per-preset line with the launches of a
//! whole training step and the H100 step-time estimate of KERNELS.md.
//!
//! Timing: on a GPU, CUDA events recorded on the device's stream before and
//! after `reps` calls (cuEventRecord / cuEventElapsedTime through the
//! driver interface: device time, including the gaps between launches when
//! the host cannot keep up); on the CPU, wall time; on the emulator nothing is timed (the
//! emulator's speed says nothing about a GPU's): each pass runs once
//! through the counting driver (counting.rs) and its launches, grids,
//! allocations and copies are printed instead.

use super::counting::{CountingDriver, Counts};
use super::inventory::{self, Op};
use super::peaks::{self, Peak};
use crate::cli::device::DeviceSpec;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use diffuse_tensor::ops::AdamWParams;
use diffuse_tensor::{ops, DType, Device, Precision, Tensor};
use diffuse_trainer::diffusion::{Diffusion, Schedule, Target};
use diffuse_trainer::optim::{clip_grad_norm, AdamW, Ema};
use diffuse_trainer::sampler::{self, Sampler, StepNoise};
use diffuse_unet::{ForwardMode, UNet, UNetConfig};
use std::io::Write;
use std::time::Instant;

/// Host cost of one eager kernel launch through the driver API (cuLaunchKernel
/// plus argument packing): a few microseconds on current CPUs.
pub const HOST_LAUNCH_US: f64 = 3.0;
/// The smallest gap between two dependent kernels on the device, also the
/// cost of one kernel node of a replayed CUDA graph.
pub const DEVICE_GAP_US: f64 = 1.0;
/// Host cost of one cuMemAlloc or cuMemFree (cuMemFree also synchronises).
pub const ALLOC_US: f64 = 5.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    Mnist,
    Cifar10,
}

impl Preset {
    fn config(self) -> UNetConfig {
        match self {
            Preset::Mnist => UNetConfig::mnist(),
            Preset::Cifar10 => UNetConfig::cifar10(),
        }
    }

    /// The batch the preset trains at (cifar10: the paper's 128).
    fn batch(self) -> usize {
        match self {
            Preset::Mnist => 64,
            Preset::Cifar10 => 128,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Preset::Mnist => "mnist",
            Preset::Cifar10 => "cifar10",
        }
    }
}

#[derive(Args)]
pub struct KernelsArgs {
    /// Device: cpu, emu (counts, no times) or cuda[:N].
    #[arg(long)]
    pub device: DeviceSpec,
    /// One preset (default: mnist and cifar10).
    #[arg(long, value_enum)]
    pub config: Option<Preset>,
    /// Images per batch (default: 64 for mnist, 128 for cifar10).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Timed calls per pass after one warm-up call (default: 20 on a GPU, 3 on the CPU).
    #[arg(long)]
    pub reps: Option<u32>,
    /// One JSON object per kernel pass (and per preset) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Arithmetic of the convolutions' and linear layers' passes: fp32, tf32
    /// or bf16 (tensor cores) [default: bf16 on GPUs of compute capability
    /// 8.0+, else fp32].
    #[arg(long, value_parser = crate::cli::train::parse_precision)]
    pub precision: Option<Precision>,
}

/// How a pass was measured.
enum Mode {
    /// CUDA events around the calls (a GPU).
    Events,
    /// Wall time (the CPU).
    Wall,
    /// Counted on the counting driver, not run (the emulator).
    Counted,
}

impl Mode {
    fn label(&self) -> &'static str {
        match self {
            Mode::Events => "cuda events (cuEventElapsedTime around the calls)",
            Mode::Wall => "wall",
            Mode::Counted => "counted (emulator: launches, not times)",
        }
    }
}

pub fn run(a: KernelsArgs) -> Result<()> {
    if a.batch_size == Some(0) || a.reps == Some(0) {
        anyhow::bail!("--batch-size and --reps must be at least 1");
    }
    let (mode, device, counter) = match a.device {
        DeviceSpec::Emu => {
            // the emulator must start, even though the passes are only counted
            a.device.open().context("cannot open --device emu")?;
            let c = CountingDriver::new();
            (Mode::Counted, c.device(), Some(c))
        }
        DeviceSpec::Cpu => (Mode::Wall, Device::Cpu, None),
        spec => (Mode::Events, spec.open().with_context(|| format!("cannot open --device {spec}"))?, None),
    };
    let device_name = if a.device == DeviceSpec::Emu { "emu".to_string() } else { device.to_string() };
    let peak = peaks::for_device_name(&device_name);
    let precision = a.precision.unwrap_or_else(|| Precision::default_for(&device));
    let reps = a.reps.unwrap_or(if matches!(mode, Mode::Events) { 20 } else { 3 });
    let presets = a.config.map(|p| vec![p]).unwrap_or_else(|| vec![Preset::Mnist, Preset::Cifar10]);
    if !a.json {
        println!(
            "device {device_name}; timing: {}; peak: {}; conv/linear at {precision}",
            mode.label(),
            peak_text(peak)
        );
    }
    for preset in presets {
        let batch = a.batch_size.unwrap_or(preset.batch());
        let config = preset.config();
        let step_ops = inventory::training_step(&config, batch)?;
        let h100 = peaks::h100();
        let mut measured_sum = 0.0;
        let mut h100_floor_sum = 0.0;
        let mut h100_bf16_floor_sum = 0.0;
        if !a.json {
            println!("\n{} (batch {batch}): {} distinct ops", preset.name(), step_ops.len());
            println!(
                "{:<22} {:<16} {:<34} {:>5} {:>10} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9}",
                "op", "pass", "sizes", "/step", "time_us", "GFLOP/s", "GB/s", "%peak", "H100_us", "bf16_us", "launches"
            );
        }
        for (op, &count) in &step_ops {
            for &pass in op.passes() {
                let (flops, bytes) = op.cost(pass);
                let h100_floor = h100.floor_us(flops, bytes);
                h100_floor_sum += h100_floor * f64::from(count);
                // Passes without a tensor-core kernel keep their FP32 floor.
                let h100_bf16_floor =
                    if op.has_tensor_core_kernel(pass) { h100.bf16_floor_us(flops, bytes) } else { h100_floor };
                h100_bf16_floor_sum += h100_bf16_floor * f64::from(count);
                let mut runner = op
                    .runner(pass, &device, !matches!(mode, Mode::Counted), precision)
                    .with_context(|| format!("{} {pass} {}", op.name(), op.sizes()))?;
                let (time_us, counts) = match (&mode, &counter) {
                    (Mode::Counted, Some(c)) => {
                        c.take();
                        runner()?;
                        (None, Some(c.take()))
                    }
                    _ => (Some(time(&mut runner, &device, reps)?), None),
                };
                if let Some(t) = time_us {
                    measured_sum += t * f64::from(count);
                }
                let line = PassLine {
                    preset,
                    batch,
                    op,
                    pass,
                    count,
                    flops,
                    bytes,
                    time_us,
                    peak,
                    h100_floor,
                    h100_bf16_floor,
                    precision,
                    counts,
                };
                if a.json {
                    println!("{}", line.json(&device_name, &mode));
                } else {
                    println!("{}", line.row());
                }
                let _ = std::io::stdout().flush();
            }
        }
        let (train, sample) = count_steps(&config, batch)?;
        let est = Estimate::new(h100_floor_sum, &train);
        let summary = serde_json::json!({
            "kind": "step",
            "preset": preset.name(),
            "batch": batch,
            "device": device_name,
            "timing": mode.label(),
            "precision": precision.to_string(),
            "measured_kernel_sum_us": (!matches!(mode, Mode::Counted)).then_some(measured_sum),
            "h100_floor_sum_us": h100_floor_sum,
            "h100_bf16_floor_sum_us": h100_bf16_floor_sum,
            "train_step": train.to_json(),
            "sample_step": sample.to_json(),
            "h100_estimate_us": {
                "current_engine": est.current,
                "eager_no_alloc": est.eager,
                "cuda_graph": est.graph,
                "assumptions": format!(
                    "floor at {} TFLOP/s FP32 and {} TB/s; {HOST_LAUNCH_US} us host per eager launch, \
                     {DEVICE_GAP_US} us device gap per kernel (graph node), {ALLOC_US} us per alloc or free",
                    h100.fp32_tflops, h100.dram_tbps
                ),
            },
        });
        if a.json {
            println!("{summary}");
        } else {
            println!(
                "{} step: {} launches, {} allocs, {} frees, {} host syncs per training step ({} launches per sampling step); \
                 H100 floor {:.0} us ({:.0} us with bf16 tensor cores), estimate {:.0} us now, {:.0} us eager without allocation, \
                 {:.0} us as a CUDA graph{}",
                preset.name(),
                train.launches,
                train.allocs,
                train.frees,
                train.syncs + train.dtoh,
                sample.launches,
                h100_floor_sum,
                h100_bf16_floor_sum,
                est.current,
                est.eager,
                est.graph,
                if matches!(mode, Mode::Counted) {
                    String::new()
                } else {
                    format!("; measured kernel sum {measured_sum:.0} us")
                }
            );
        }
    }
    Ok(())
}

fn peak_text(p: Option<Peak>) -> String {
    p.map_or("unknown (not a GPU in the table)".into(), |p| {
        format!("{} ({} TFLOP/s FP32, {} TB/s)", p.gpu, p.fp32_tflops, p.dram_tbps)
    })
}

/// Mean microseconds of one call: one warm-up call, then `reps` calls timed
/// by two CUDA events on a GPU (wall time where the driver has no device
/// clock, and on the CPU).
fn time(runner: &mut dyn FnMut() -> Result<()>, device: &Device, reps: u32) -> Result<f64> {
    runner()?;
    let Device::Gpu(g) = device else {
        let start = Instant::now();
        for _ in 0..reps {
            runner()?;
        }
        return Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(reps));
    };
    let d = g.driver();
    g.synchronize()?;
    let wall = Instant::now();
    let start = d.event_record()?;
    let timed = (|| -> Result<Option<f32>> {
        for _ in 0..reps {
            runner()?;
        }
        let end = d.event_record()?;
        let ms = d.event_wait(end).and_then(|()| d.event_elapsed_ms(start, end));
        d.event_destroy(end);
        Ok(ms?)
    })();
    d.event_destroy(start);
    let micros = match timed? {
        Some(ms) => f64::from(ms) * 1e3,
        None => {
            g.synchronize()?;
            wall.elapsed().as_secs_f64() * 1e6
        }
    };
    Ok(micros / f64::from(reps))
}

/// One pass of one op, as printed.
struct PassLine<'a> {
    preset: Preset,
    batch: usize,
    op: &'a Op,
    pass: &'a str,
    count: u32,
    flops: f64,
    bytes: f64,
    time_us: Option<f64>,
    peak: Option<Peak>,
    h100_floor: f64,
    /// The floor with the conv and linear GEMMs on bf16 tensor cores.
    h100_bf16_floor: f64,
    /// The arithmetic the pass ran at (only GEMM passes differ).
    precision: Precision,
    counts: Option<Counts>,
}

impl PassLine<'_> {
    /// (GFLOP/s, GB/s, % of the peak that bounds the pass).
    fn rates(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let Some(t) = self.time_us.filter(|&t| t > 0.0) else { return (None, None, None) };
        let (gflops, gbps) = (self.flops / t / 1e3, self.bytes / t / 1e3);
        let pct = self.peak.map(|p| {
            if p.compute_bound(self.flops, self.bytes) {
                100.0 * gflops / (p.fp32_tflops * 1e3)
            } else {
                100.0 * gbps / (p.dram_tbps * 1e3)
            }
        });
        (Some(gflops), Some(gbps), pct)
    }

    fn json(&self, device: &str, mode: &Mode) -> serde_json::Value {
        let (gflops, gbps, pct) = self.rates();
        let bound = self.peak.unwrap_or_else(peaks::h100);
        serde_json::json!({
            "kind": "kernel",
            "preset": self.preset.name(),
            "batch": self.batch,
            "op": self.op.name(),
            "pass": self.pass,
            "sizes": self.op.sizes(),
            "per_step": self.count,
            "device": device,
            "timing": mode.label(),
            "precision": if self.op.has_tensor_core_kernel(self.pass) { self.precision } else { Precision::Fp32 }.to_string(),
            "time_us": self.time_us,
            "flop": self.flops,
            "bytes": self.bytes,
            "gflops": gflops,
            "gbps": gbps,
            "peak": self.peak.map(|p| serde_json::json!({"gpu": p.gpu, "cc": format!("{}.{}", p.cc.0, p.cc.1), "fp32_tflops": p.fp32_tflops, "bf16_tflops": p.bf16_tflops, "dram_tbps": p.dram_tbps})),
            "pct_of_peak": pct,
            "bound": if bound.compute_bound(self.flops, self.bytes) { "compute" } else { "memory" },
            "h100_floor_us": self.h100_floor,
            "h100_bf16_floor_us": self.h100_bf16_floor,
            "counts": self.counts.as_ref().map(Counts::to_json),
        })
    }

    fn row(&self) -> String {
        let (gflops, gbps, pct) = self.rates();
        let f = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
        let launches = self.counts.as_ref().map_or("-".to_string(), |c| c.launches.to_string());
        format!(
            "{:<22} {:<16} {:<34} {:>5} {:>10} {:>9} {:>9} {:>7} {:>9.2} {:>9.2} {:>9}",
            self.op.name(),
            self.pass,
            self.op.sizes(),
            self.count,
            f(self.time_us, 1),
            f(gflops, 1),
            f(gbps, 1),
            f(pct, 1),
            self.h100_floor,
            self.h100_bf16_floor,
            launches
        )
    }
}

/// The H100 step-time estimates of KERNELS.md, in microseconds.
struct Estimate {
    /// Today's engine: every op allocates and frees (cuMemFree synchronises),
    /// so launches, allocations and kernels run one after another.
    current: f64,
    /// Eager launches on a stream with no allocation: the host issues while
    /// the device runs; the slower of the two sets the pace.
    eager: f64,
    /// A replayed CUDA graph: the kernels plus one device gap each.
    graph: f64,
}

impl Estimate {
    fn new(floor: f64, step: &Counts) -> Self {
        let launches = step.launches as f64;
        let graph = floor + launches * DEVICE_GAP_US;
        Estimate {
            current: floor + launches * HOST_LAUNCH_US + (step.allocs + step.frees) as f64 * ALLOC_US,
            eager: graph.max(launches * HOST_LAUNCH_US),
            graph,
        }
    }
}

/// The driver calls of one steady-state training step (the second of two:
/// loss read back, gradient clipping at 1, AdamW, EMA) and of one DDIM
/// sampling step, on the counting driver.
pub fn count_steps(config: &UNetConfig, batch: usize) -> Result<(Counts, Counts)> {
    let counter = CountingDriver::new();
    let dev = counter.device();
    let mut model = UNet::new(config.clone(), 0, DType::F32, &dev)?;
    let hyper = AdamWParams { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let mut opt = AdamW::new(&model.params, hyper)?;
    let mut ema = Ema::new(&model.params, 0.9999, true)?;
    let d = Diffusion::new(Schedule::Linear, 1000, Target::Eps)?;
    let shape = [batch, config.in_ch, config.image_size, config.image_size];
    let mut train = Counts::default();
    for step in 0..2u32 {
        counter.take();
        let x0 = Tensor::randn(shape, 3, 0, DType::F32, &Device::Cpu)?.to_device(&dev)?;
        let ts = d.draw_timesteps(batch, 0, step);
        let (x_t, eps) = d.q_sample(&x0, &ts, 0, step)?;
        let t = Tensor::from_vec(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), [batch])?.to_device(&dev)?;
        model.params.zero_grads();
        let (pred, cache) = model.forward_train(&x_t, &t, ForwardMode::train(5, step))?;
        let _loss = ops::mse_loss_forward(&pred, &eps)?.scalar_f64()?;
        let dpred = ops::mse_loss_backward(&pred, &eps, 1.0)?;
        drop(pred);
        model.backward(&cache, &dpred)?;
        drop(cache);
        clip_grad_norm(&mut model.params, 1.0)?;
        opt.step(&mut model.params, 2e-4)?;
        ema.update(&model.params)?;
        model.params.zero_grads();
        train = counter.take();
    }
    let sampler = Sampler::Ddim { steps: 50, eta: 0.0 };
    let x = Tensor::randn(shape, 4, 7, DType::F32, &Device::Cpu)?.to_device(&dev)?;
    counter.take();
    drop(sampler::reverse_step(&model, &d, sampler, true, &x, 980, 960, StepNoise { seed: 1, step: 980 })?);
    Ok((train, counter.take()))
}
