//! Launch code of kernels/optim.cu (AdamW, EMA, in place) and
//! kernels/optim.cu's global_norm_* (global L2 norm of many tensors in one launch).

use super::{alloc_f64, download_f64, grid_for, run, u64_arg, upload_u64};
use crate::geom::AdamWConsts;
use crate::gpu::kernels;
use crate::gpu::{Dim3, GpuDevice, GpuStorage, KernelArg};
use crate::{Result, TensorError};

/// One AdamW step in place over equally long param, grad, m, v (buffers
/// shared with other tensors are copied first). `c` is
/// `AdamWConsts::new(lr, beta1, beta2, eps, weight_decay, step)`; the kernel
/// works in f64 like the CPU.
pub fn adamw_step(
    dev: &GpuDevice,
    param: &mut GpuStorage,
    grad: &GpuStorage,
    m: &mut GpuStorage,
    v: &mut GpuStorage,
    c: &AdamWConsts,
) -> Result<()> {
    let n = param.len();
    if n == 0 {
        return Ok(());
    }
    param.make_unique()?;
    m.make_unique()?;
    v.make_unique()?;
    let mut args = vec![param.arg(), grad.arg(), m.arg(), v.arg(), u64_arg(n)];
    // each f64 constant exactly, as its bits
    for x in [c.decay, c.beta1, c.beta2, c.step_size, c.bias_correction2_sqrt, c.eps] {
        args.push(KernelArg::U64(x.to_bits()));
    }
    run(dev, &kernels::optim::ADAMW_STEP_F32, grid_for(n as u64), &args)
}

/// ema = decay * ema + (1 - decay) * param, in place (both factors rounded
/// to f32, as the CPU).
pub fn ema_update(dev: &GpuDevice, ema: &mut GpuStorage, param: &GpuStorage, decay: f64) -> Result<()> {
    let n = ema.len();
    if n == 0 {
        return Ok(());
    }
    ema.make_unique()?;
    let args = [ema.arg(), param.arg(), KernelArg::F32(decay as f32), KernelArg::F32((1.0 - decay) as f32), u64_arg(n)];
    run(dev, &kernels::optim::EMA_UPDATE_F32, grid_for(n as u64), &args)
}

/// Elements per partial sum of optim.cu's global norm (NORM_CHUNK).
pub const NORM_CHUNK: usize = 4096;

/// The tensor table of a multi-tensor launch (global norm, clipping):
/// device pointers, lengths and first chunks, as constant tables
/// (`GpuDevice::constant_table`: uploaded only when they changed).
pub struct ChunkTable {
    ptrs: u64,
    lens: u64,
    first: u64,
    chunks: u32,
    count: i32,
}

impl ChunkTable {
    /// None when the tensors hold no element.
    pub fn new(dev: &GpuDevice, tensors: &[&GpuStorage]) -> Result<Option<ChunkTable>> {
        let mut first_chunk = Vec::with_capacity(tensors.len() + 1);
        let mut total = 0u64;
        for t in tensors {
            first_chunk.push(total);
            total += t.len().div_ceil(NORM_CHUNK) as u64;
        }
        first_chunk.push(total);
        if total == 0 {
            return Ok(None);
        }
        let chunks = u32::try_from(total).map_err(|_| TensorError::invalid("global_l2_norm", "too many elements"))?;
        let count =
            i32::try_from(tensors.len()).map_err(|_| TensorError::invalid("global_l2_norm", "too many tensors"))?;
        let ptrs: Vec<u64> = tensors.iter().map(|t| t.ptr()).collect();
        let lens: Vec<u64> = tensors.iter().map(|t| t.len() as u64).collect();
        let (ptrs, lens) = (dev.constant_table(&ptrs)?, dev.constant_table(&lens)?);
        let first = dev.constant_table(&first_chunk)?;
        Ok(Some(ChunkTable { ptrs, lens, first, chunks, count }))
    }

    fn args(&self) -> [KernelArg; 4] {
        [KernelArg::Ptr(self.ptrs), KernelArg::Ptr(self.lens), KernelArg::Ptr(self.first), KernelArg::I32(self.count)]
    }
}

/// Queues the sum of squares of every element of the table's tensors, in
/// f64, into the double at device address `out` (two launches, no host
/// synchronisation).
pub fn queue_sum_squares(dev: &GpuDevice, table: &ChunkTable, out: u64) -> Result<()> {
    let partials = alloc_f64(dev, table.chunks as usize)?;
    let [p, l, f, c] = table.args();
    run(dev, &kernels::optim::GLOBAL_NORM_PARTIAL_F32, Dim3::x(table.chunks), &[partials.arg(), p, l, f, c])?;
    let final_args = [KernelArg::Ptr(out), partials.arg(), KernelArg::U32(table.chunks)];
    run(dev, &kernels::optim::GLOBAL_NORM_FINAL_F32, Dim3::x(1), &final_args)
}

/// Queues gradient clipping: every tensor of the table is scaled in place
/// by max_norm / (norm + 1e-6) when norm = sqrt(*sumsq) exceeds max_norm
/// (the caller made the buffers unique). One launch.
pub fn queue_clip(dev: &GpuDevice, table: &ChunkTable, sumsq: u64, max_norm: f64) -> Result<()> {
    let [p, l, f, c] = table.args();
    let args = [KernelArg::Ptr(sumsq), KernelArg::U64(max_norm.to_bits()), p, l, f, c];
    run(dev, &kernels::optim::CLIP_GRADS_F32, Dim3::x(table.chunks), &args)
}

/// The sum of squares of every element of every tensor, in f64, in one
/// launch (plus one for the final sum); deterministic.
pub fn sum_squares(dev: &GpuDevice, tensors: &[&GpuStorage]) -> Result<f64> {
    let Some(table) = ChunkTable::new(dev, tensors)? else { return Ok(0.0) };
    let out = alloc_f64(dev, 1)?;
    queue_sum_squares(dev, &table, out.ptr())?;
    download_f64(&out)
}

/// sqrt(sum of squares of all elements of all tensors), f64.
pub fn global_l2_norm(dev: &GpuDevice, tensors: &[&GpuStorage]) -> Result<f64> {
    Ok(sum_squares(dev, tensors)?.sqrt())
}

/// Chunks per tensor and their prefix sums (first_chunk[count] = total).
fn first_chunks(lens: &[u64]) -> Result<(Vec<u64>, u32)> {
    let mut first = Vec::with_capacity(lens.len() + 1);
    let mut total = 0u64;
    for &n in lens {
        first.push(total);
        total += n.div_ceil(NORM_CHUNK as u64);
    }
    first.push(total);
    let total = u32::try_from(total).map_err(|_| TensorError::invalid("multi-tensor apply", "too many elements"))?;
    Ok((first, total))
}

/// One AdamW tensor of a multi-tensor step: its buffers (made unique by the
/// caller where written) and its constants.
pub struct AdamWTensor<'a> {
    pub param: &'a GpuStorage,
    pub grad: &'a GpuStorage,
    pub m: &'a GpuStorage,
    pub v: &'a GpuStorage,
    pub consts: AdamWConsts,
}

/// The constants of `adamw_multi_f32` for these tensors: 6 f64 bit
/// patterns per tensor (decay, beta1, beta2, step_size, bc2_sqrt, eps), the
/// words a training graph's per-step scalars hold.
pub fn adamw_consts_words(consts: impl Iterator<Item = AdamWConsts>) -> Vec<u64> {
    consts
        .flat_map(|c| [c.decay, c.beta1, c.beta2, c.step_size, c.bias_correction2_sqrt, c.eps].map(f64::to_bits))
        .collect()
}

/// AdamW over every tensor in one launch (`adamw_multi_f32`): each element
/// gets the bits `adamw_step` would give it. The constants are uploaded, or
/// read at `consts_at` (device memory the caller filled with
/// [`adamw_consts_words`] of these tensors and keeps alive).
pub fn adamw_multi(dev: &GpuDevice, tensors: &[AdamWTensor<'_>], consts_at: Option<u64>) -> Result<()> {
    let lens: Vec<u64> = tensors.iter().map(|t| t.param.len() as u64).collect();
    let (first, chunks) = first_chunks(&lens)?;
    if chunks == 0 {
        return Ok(());
    }
    let table = |f: &dyn Fn(&AdamWTensor<'_>) -> u64| dev.constant_table(&tensors.iter().map(f).collect::<Vec<_>>());
    let (p, g) = (table(&|t| t.param.ptr())?, table(&|t| t.grad.ptr())?);
    let (m, v) = (table(&|t| t.m.ptr())?, table(&|t| t.v.ptr())?);
    let (lens_d, first_d) = (dev.constant_table(&lens)?, dev.constant_table(&first)?);
    // each f64 constant exactly, as its bits (as adamw_step's arguments);
    // they change every step (bias corrections, warmup): one upload, or
    // the caller's per-step scalars
    let uploaded = match consts_at {
        Some(_) => None,
        None => Some(upload_u64(dev, &adamw_consts_words(tensors.iter().map(|t| t.consts)))?),
    };
    let consts_ptr = consts_at.or(uploaded.as_ref().map(|u| u.ptr())).unwrap_or(0);
    let count = KernelArg::I32(tensors.len() as i32);
    let ptr = KernelArg::Ptr;
    let args = [ptr(p), ptr(g), ptr(m), ptr(v), ptr(lens_d), ptr(first_d), ptr(consts_ptr), count];
    run(dev, &kernels::optim::ADAMW_MULTI_F32, Dim3::x(chunks), &args)
}

/// ema = d * ema + (1 - d) * param over every pair in one launch
/// (`ema_multi_f32`), the bits of `ema_update` per tensor. With `dk_at` the
/// kernel reads d and 1 - d (two f32, rounded as here) from device memory.
pub fn ema_multi(dev: &GpuDevice, pairs: &[(&GpuStorage, &GpuStorage)], decay: f64, dk_at: Option<u64>) -> Result<()> {
    let lens: Vec<u64> = pairs.iter().map(|(e, _)| e.len() as u64).collect();
    let (first, chunks) = first_chunks(&lens)?;
    if chunks == 0 {
        return Ok(());
    }
    let emas = dev.constant_table(&pairs.iter().map(|(e, _)| e.ptr()).collect::<Vec<_>>())?;
    let params = dev.constant_table(&pairs.iter().map(|(_, p)| p.ptr()).collect::<Vec<_>>())?;
    let (lens_d, first_d) = (dev.constant_table(&lens)?, dev.constant_table(&first)?);
    let args = [
        KernelArg::Ptr(emas),
        KernelArg::Ptr(params),
        KernelArg::Ptr(lens_d),
        KernelArg::Ptr(first_d),
        KernelArg::F32(decay as f32),
        KernelArg::F32((1.0 - decay) as f32),
        KernelArg::I32(pairs.len() as i32),
        KernelArg::Ptr(dk_at.unwrap_or(0)),
    ];
    run(dev, &kernels::optim::EMA_MULTI_F32, Dim3::x(chunks), &args)
}

/// dst = src for every pair in one launch (`copy_multi_f32`); equal lengths
/// (checked by the caller), dsts made unique by the caller.
pub fn copy_multi(dev: &GpuDevice, pairs: &[(&GpuStorage, &GpuStorage)]) -> Result<()> {
    let lens: Vec<u64> = pairs.iter().map(|(d, _)| d.len() as u64).collect();
    let (first, chunks) = first_chunks(&lens)?;
    if chunks == 0 {
        return Ok(());
    }
    let dsts = dev.constant_table(&pairs.iter().map(|(d, _)| d.ptr()).collect::<Vec<_>>())?;
    // The sources are fresh gradients wherever the allocator put them this
    // step: a per-call table (caching it would keep a block per pointer set
    // and shift where the next step's gradients go). Under a graph capture
    // they stay where they are for every replay (the graph holds its
    // memory): a constant table, held by the graph.
    let src_ptrs: Vec<u64> = pairs.iter().map(|(_, s)| s.ptr()).collect();
    let uploaded = match dev.is_capturing() {
        true => None,
        false => Some(upload_u64(dev, &src_ptrs)?),
    };
    let srcs = match &uploaded {
        Some(u) => u.ptr(),
        None => dev.constant_table(&src_ptrs)?,
    };
    let (lens_d, first_d) = (dev.constant_table(&lens)?, dev.constant_table(&first)?);
    let ptr = KernelArg::Ptr;
    let args = [ptr(srcs), ptr(dsts), ptr(lens_d), ptr(first_d), KernelArg::I32(pairs.len() as i32)];
    run(dev, &kernels::optim::COPY_MULTI_F32, Dim3::x(chunks), &args)
}

/// dst[row * width ..][..width] = src with row = the u64 at device address
/// `row_at` (`copy_to_row_f32`; nothing written when row >= dst.len() /
/// width): a copy whose destination changes every step under a graph.
pub fn copy_to_row(dev: &GpuDevice, dst: &GpuStorage, src: &GpuStorage, row_at: u64) -> Result<()> {
    let width = src.len();
    if width == 0 {
        return Ok(());
    }
    let rows = dst.len() / width;
    let args = [dst.arg(), src.arg(), u64_arg(width), u64_arg(rows), KernelArg::Ptr(row_at)];
    run(dev, &kernels::optim::COPY_TO_ROW_F32, grid_for(width as u64), &args)
}
