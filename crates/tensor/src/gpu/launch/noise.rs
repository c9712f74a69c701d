//! Launch code of kernels/noise.cu: q(x_t | x_0) with the noise drawn in the
//! kernel from Philox, its backward, and a plain normal fill.

use super::{alloc, grid_for, philox_blocks, run, u64_arg};
use crate::gpu::kernels;
use crate::gpu::{GpuDevice, GpuStorage, KernelArg};
use crate::philox::PhiloxStep;
use crate::Result;

/// (x_t, eps) with eps[i] = philox::normal(seed, step, stream, offset + i) and
/// x_t = sqrt_abar[s] * x0 + sqrt_one_minus_abar[s] * eps, s = i / per_sample.
/// x0 [N, ...] holds N * per_sample elements; the two scales are [N]. The
/// kernel reads the step from `step.at` when set ([`PhiloxStep`]).
#[allow(clippy::too_many_arguments)]
pub fn noise_add(
    dev: &GpuDevice,
    x0: &GpuStorage,
    sqrt_abar: &GpuStorage,
    sqrt_one_minus_abar: &GpuStorage,
    per_sample: usize,
    seed: u64,
    step: PhiloxStep,
    stream: u32,
    offset: u64,
) -> Result<(GpuStorage, GpuStorage)> {
    let total = x0.len();
    let x_t = alloc(dev, total)?;
    let eps = alloc(dev, total)?;
    if total > 0 && per_sample > 0 {
        let args = [
            x_t.arg(),
            eps.arg(),
            x0.arg(),
            sqrt_abar.arg(),
            sqrt_one_minus_abar.arg(),
            u64_arg(per_sample),
            u64_arg(total),
            KernelArg::U64(seed),
            KernelArg::U32(step.value),
            KernelArg::U32(stream),
            KernelArg::U64(offset),
            KernelArg::Ptr(step.at.unwrap_or(0)),
        ];
        run(dev, &kernels::noise::NOISE_ADD_FWD_F32, grid_for(philox_blocks(offset, total)), &args)?;
    }
    Ok((x_t, eps))
}

/// dx0 = sqrt_abar[s] * dx_t (eps does not depend on x0).
pub fn noise_add_backward(
    dev: &GpuDevice,
    dx_t: &GpuStorage,
    sqrt_abar: &GpuStorage,
    per_sample: usize,
) -> Result<GpuStorage> {
    let total = dx_t.len();
    let dx0 = alloc(dev, total)?;
    if total > 0 && per_sample > 0 {
        run(
            dev,
            &kernels::noise::NOISE_ADD_BWD_F32,
            grid_for(total as u64),
            &[dx0.arg(), dx_t.arg(), sqrt_abar.arg(), u64_arg(per_sample), u64_arg(total)],
        )?;
    }
    Ok(dx0)
}

/// `len` standard normals, element i = philox::normal(seed, step, stream, i).
pub fn fill_normal(dev: &GpuDevice, len: usize, seed: u64, step: u32, stream: u32) -> Result<GpuStorage> {
    let out = alloc(dev, len)?;
    if len > 0 {
        let args = [out.arg(), u64_arg(len), KernelArg::U64(seed), KernelArg::U32(step), KernelArg::U32(stream)];
        run(dev, &kernels::noise::NORMAL_FILL_FWD_F32, grid_for(len.div_ceil(4) as u64), &args)?;
    }
    Ok(out)
}

/// `len` raw Philox words, word i = philox::block_bits(seed, step, stream,
/// i / 4)[i % 4], downloaded (the integer stream behind noise, dropout and
/// timesteps; tests check it is the CPU's on every device).
pub fn philox_words(dev: &GpuDevice, len: usize, seed: u64, step: u32, stream: u32) -> Result<Vec<u32>> {
    let out = alloc(dev, len)?; // 4-byte elements: read back as u32
    if len > 0 {
        let args = [out.arg(), u64_arg(len), KernelArg::U64(seed), KernelArg::U32(step), KernelArg::U32(stream)];
        run(dev, &kernels::noise::PHILOX_WORDS_FILL_U32, grid_for(len.div_ceil(4) as u64), &args)?;
    }
    let mut words = vec![0u32; len];
    dev.driver().dtoh(out.ptr(), bytemuck::cast_slice_mut(&mut words))?;
    Ok(words)
}
