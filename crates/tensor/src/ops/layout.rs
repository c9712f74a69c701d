//! NCHW layout ops of the U-Net: nearest 2x upsampling, the channel concat of
//! skip connections (and its split for backward), and the per-(sample,
//! channel) bias that injects the timestep embedding into a feature map.

use super::{check_same, gpu_of};
use crate::cpu::layout as kernels;
use crate::gpu::launch;
use crate::{with_element, Result, Storage, Tensor, TensorError};

/// x [N,C,H,W] -> [N,C,2H,2W], each pixel repeated into a 2x2 block.
pub fn upsample_nearest2x_forward(x: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("upsample_nearest2x_forward");
    let (n, c, h, w) = x.shape().nchw("upsample_nearest2x_forward")?;
    match x.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut y = crate::cpu::recycle::output::<T>(x.numel() * 4);
            kernels::upsample_nearest2x_forward(x.cpu_slice::<T>()?, h, w, &mut y);
            Ok(Tensor::from_cpu([n, c, 2 * h, 2 * w].into(), y))
        }),
        Storage::Gpu(g) => {
            let y = launch::layout::upsample_nearest2x_forward(g.device(), g, n * c, h, w)?;
            Ok(Tensor::from_gpu([n, c, 2 * h, 2 * w].into(), y))
        }
    }
}

/// dy [N,C,2H,2W] -> dx [N,C,H,W], the sum of each 2x2 block.
pub fn upsample_nearest2x_backward(dy: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("upsample_nearest2x_backward");
    const OP: &str = "upsample_nearest2x_backward";
    let (n, c, h2, w2) = dy.shape().nchw(OP)?;
    if h2 % 2 != 0 || w2 % 2 != 0 {
        return Err(TensorError::shape(OP, "[N, C, 2H, 2W] with even height and width", dy.shape()));
    }
    let (h, w) = (h2 / 2, w2 / 2);
    match dy.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut dx = crate::cpu::recycle::output::<T>(n * c * h * w);
            kernels::upsample_nearest2x_backward(dy.cpu_slice::<T>()?, h, w, &mut dx);
            Ok(Tensor::from_cpu([n, c, h, w].into(), dx))
        }),
        Storage::Gpu(g) => {
            let dx = launch::layout::upsample_nearest2x_backward(g.device(), g, n * c, h, w)?;
            Ok(Tensor::from_gpu([n, c, h, w].into(), dx))
        }
    }
}

/// a [N,Ca,H,W] and b [N,Cb,H,W] -> [N,Ca+Cb,H,W].
pub fn concat_channels(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("concat_channels");
    const OP: &str = "concat_channels";
    check_same(OP, &[a, b])?;
    let (n, ca, h, w) = a.shape().nchw(OP)?;
    let (nb, cb, hb, wb) = b.shape().nchw(OP)?;
    if (nb, hb, wb) != (n, h, w) {
        return Err(TensorError::shape(OP, format!("[{n}, Cb, {h}, {w}] (N, H, W of the first operand)"), b.shape()));
    }
    match a.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut out = crate::cpu::recycle::output::<T>(a.numel() + b.numel());
            kernels::concat_channels(a.cpu_slice::<T>()?, ca * h * w, b.cpu_slice::<T>()?, cb * h * w, &mut out);
            Ok(Tensor::from_cpu([n, ca + cb, h, w].into(), out))
        }),
        Storage::Gpu(g) => {
            let out = launch::layout::concat_channels(g.device(), g, gpu_of(OP, b)?, n, ca * h * w, cb * h * w)?;
            Ok(Tensor::from_gpu([n, ca + cb, h, w].into(), out))
        }
    }
}

/// d [N,C,H,W] -> (d[:, :ca], d[:, ca:]); the backward of `concat_channels`.
pub fn split_channels(d: &Tensor, ca: usize) -> Result<(Tensor, Tensor)> {
    let _timer = crate::profile::op("split_channels");
    const OP: &str = "split_channels";
    let (n, c, h, w) = d.shape().nchw(OP)?;
    if ca > c {
        return Err(TensorError::invalid(OP, format!("cannot split {ca} channels off a tensor of {c} channels")));
    }
    let cb = c - ca;
    match d.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut a = crate::cpu::recycle::output::<T>(n * ca * h * w);
            let mut b = crate::cpu::recycle::output::<T>(n * cb * h * w);
            kernels::split_channels(d.cpu_slice::<T>()?, ca * h * w, cb * h * w, &mut a, &mut b);
            Ok((Tensor::from_cpu([n, ca, h, w].into(), a), Tensor::from_cpu([n, cb, h, w].into(), b)))
        }),
        Storage::Gpu(g) => {
            let (a, b) = launch::layout::split_channels(g.device(), g, n, ca * h * w, cb * h * w)?;
            Ok((Tensor::from_gpu([n, ca, h, w].into(), a), Tensor::from_gpu([n, cb, h, w].into(), b)))
        }
    }
}

/// x [N,C,H,W] + bias [N,C] broadcast over H and W.
pub fn add_channel_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("add_channel_bias");
    const OP: &str = "add_channel_bias";
    check_same(OP, &[x, bias])?;
    let (n, c, h, w) = x.shape().nchw(OP)?;
    bias.shape().expect(OP, &[n, c])?;
    match x.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut y = crate::cpu::recycle::output::<T>(x.numel());
            kernels::add_channel_bias(x.cpu_slice::<T>()?, bias.cpu_slice::<T>()?, h * w, &mut y);
            Ok(Tensor::from_cpu(x.shape().clone(), y))
        }),
        Storage::Gpu(g) => {
            let y = launch::layout::add_channel_bias(g.device(), g, gpu_of(OP, bias)?, n * c, h * w)?;
            Ok(Tensor::from_gpu(x.shape().clone(), y))
        }
    }
}

/// dy [N,C,H,W] -> dbias [N,C], the sum over H and W.
pub fn channel_bias_backward(dy: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("channel_bias_backward");
    const OP: &str = "channel_bias_backward";
    let (n, c, h, w) = dy.shape().nchw(OP)?;
    match dy.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut db = vec![T::default(); n * c];
            kernels::channel_bias_backward(dy.cpu_slice::<T>()?, h * w, &mut db);
            Ok(Tensor::from_cpu([n, c].into(), db))
        }),
        Storage::Gpu(g) => {
            Ok(Tensor::from_gpu([n, c].into(), launch::layout::channel_bias_backward(g.device(), g, n * c, h * w)?))
        }
    }
}
