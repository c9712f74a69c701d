//! Launch code of kernels/elementwise.cu: add, sub, mul, scale, a + s*b and
//! the in-place add and scale, on flat buffers of equal length.

use super::{alloc, grid_for, run, u64_arg};
use crate::geom::Binary;
use crate::gpu::kernels;
use crate::gpu::{GpuDevice, GpuStorage, KernelArg};
use crate::Result;

/// out = a (op) b elementwise; `a` and `b` hold the same number of elements.
/// `Binary::AddScaled(s)` is a + s*b with s rounded to f32.
pub fn binary(dev: &GpuDevice, op: Binary, a: &GpuStorage, b: &GpuStorage) -> Result<GpuStorage> {
    let n = a.len();
    let out = alloc(dev, n)?;
    if n == 0 {
        return Ok(out);
    }
    let (kernel, s) = match op {
        Binary::Add => (&kernels::elementwise::ADD_FWD_F32, None),
        Binary::Sub => (&kernels::elementwise::SUB_FWD_F32, None),
        Binary::Mul => (&kernels::elementwise::MUL_FWD_F32, None),
        Binary::AddScaled(s) => (&kernels::elementwise::ADD_SCALED_FWD_F32, Some(s as f32)),
    };
    let mut args = vec![out.arg(), a.arg(), b.arg()];
    if let Some(s) = s {
        args.push(KernelArg::F32(s));
    }
    args.push(u64_arg(n));
    run(dev, kernel, grid_for(n as u64), &args)?;
    Ok(out)
}

/// out = s * x, s rounded to f32 (as the CPU's `T::from_f64`).
pub fn scale(dev: &GpuDevice, x: &GpuStorage, s: f64) -> Result<GpuStorage> {
    let n = x.len();
    let out = alloc(dev, n)?;
    if n > 0 {
        run(
            dev,
            &kernels::elementwise::SCALE_FWD_F32,
            grid_for(n as u64),
            &[out.arg(), x.arg(), KernelArg::F32(s as f32), u64_arg(n)],
        )?;
    }
    Ok(out)
}

/// acc += x, in place (a buffer shared with another tensor is copied first).
pub fn add_in_place(dev: &GpuDevice, acc: &mut GpuStorage, x: &GpuStorage) -> Result<()> {
    let n = acc.len();
    if n == 0 {
        return Ok(());
    }
    acc.make_unique()?;
    run(dev, &kernels::elementwise::ADD_INPLACE_F32, grid_for(n as u64), &[acc.arg(), x.arg(), u64_arg(n)])
}

/// t *= s, in place (s rounded to f32).
pub fn scale_in_place(dev: &GpuDevice, t: &mut GpuStorage, s: f64) -> Result<()> {
    let n = t.len();
    if n == 0 {
        return Ok(());
    }
    t.make_unique()?;
    run(
        dev,
        &kernels::elementwise::SCALE_INPLACE_F32,
        grid_for(n as u64),
        &[t.arg(), KernelArg::F32(s as f32), u64_arg(n)],
    )
}
