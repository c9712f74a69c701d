//! Elementwise arithmetic: add, sub, mul, scale, a + s*b, and the in-place
//! accumulate / scale used for gradient sums.
//!
//! Operands must share shape, dtype and device exactly (no broadcasting:
//! every broadcast the U-Net needs has its own op, e.g. `add_channel_bias`).

use super::{check_same, check_same_shape, gpu_of, gpu_of_mut};
use crate::cpu::elementwise as kernels;
use crate::geom::Binary;
use crate::gpu::launch;
use crate::{with_element, Result, Storage, Tensor};

/// a + b.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("add");
    binary("add", a, b, Binary::Add)
}

/// a - b.
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("sub");
    binary("sub", a, b, Binary::Sub)
}

/// a * b, elementwise.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("mul");
    binary("mul", a, b, Binary::Mul)
}

/// a + s * b.
pub fn add_scaled(a: &Tensor, b: &Tensor, s: f64) -> Result<Tensor> {
    let _timer = crate::profile::op("add_scaled");
    binary("add_scaled", a, b, Binary::AddScaled(s))
}

/// s * x.
pub fn scale(x: &Tensor, s: f64) -> Result<Tensor> {
    let _timer = crate::profile::op("scale");
    match x.storage() {
        Storage::Cpu(st) => with_element!(st.dtype(), T, {
            let mut out = crate::cpu::recycle::output::<T>(x.numel());
            kernels::scale(x.cpu_slice::<T>()?, s, &mut out);
            Ok(Tensor::from_cpu(x.shape().clone(), out))
        }),
        Storage::Gpu(g) => Ok(Tensor::from_gpu(x.shape().clone(), launch::elementwise::scale(g.device(), g, s)?)),
    }
}

/// acc += x.
pub fn add_in_place(acc: &mut Tensor, x: &Tensor) -> Result<()> {
    let _timer = crate::profile::op("add_in_place");
    check_same("add_in_place", &[acc, x])?;
    check_same_shape("add_in_place", acc, x)?;
    match acc.storage() {
        Storage::Cpu(st) => with_element!(st.dtype(), T, {
            kernels::add_assign(acc.cpu_slice_mut::<T>()?, x.cpu_slice::<T>()?);
            Ok(())
        }),
        Storage::Gpu(g) => {
            let dev = g.device().clone();
            let xs = gpu_of("add_in_place", x)?;
            launch::elementwise::add_in_place(&dev, gpu_of_mut("add_in_place", acc)?, xs)
        }
    }
}

/// t *= s.
pub fn scale_in_place(t: &mut Tensor, s: f64) -> Result<()> {
    let _timer = crate::profile::op("scale_in_place");
    match t.storage() {
        Storage::Cpu(st) => with_element!(st.dtype(), T, {
            kernels::scale_assign(t.cpu_slice_mut::<T>()?, s);
            Ok(())
        }),
        Storage::Gpu(g) => {
            let dev = g.device().clone();
            launch::elementwise::scale_in_place(&dev, gpu_of_mut("scale_in_place", t)?, s)
        }
    }
}

/// The shared body of the two-operand ops: checks, then one kernel call.
fn binary(op: &'static str, a: &Tensor, b: &Tensor, kind: Binary) -> Result<Tensor> {
    check_same(op, &[a, b])?;
    check_same_shape(op, a, b)?;
    match a.storage() {
        Storage::Cpu(st) => with_element!(st.dtype(), T, {
            let mut out = crate::cpu::recycle::output::<T>(a.numel());
            kernels::binary(kind, a.cpu_slice::<T>()?, b.cpu_slice::<T>()?, &mut out);
            Ok(Tensor::from_cpu(a.shape().clone(), out))
        }),
        Storage::Gpu(g) => {
            let out = launch::elementwise::binary(g.device(), kind, g, gpu_of(op, b)?)?;
            Ok(Tensor::from_gpu(a.shape().clone(), out))
        }
    }
}
