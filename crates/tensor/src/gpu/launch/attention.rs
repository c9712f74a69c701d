//! Launch code of kernels/attention.cu: flash-style forward, the three
//! backward passes, and the explicit weights (for tests).
//!
//! Tiles: the largest of 32, 16, ..., 1 whose shared memory fits the
//! budget, `min(SMEM_BUDGET, the device's opt-in maximum)` (A100/H100: the
//! 160 KiB preference; sm_86/89/120: 99 KiB; sm_75: 64 KiB). The CUDA
//! driver raises a kernel's limit when a launch asks for more than the
//! default 48 KiB. The tile never changes what is summed in which order:
//! scores sum over c, the forward's online softmax walks keys in fixed
//! tiles of 32 (`BKV`), and the backward accumulators walk queries (dk, dv)
//! or keys (dq) one by one from 0 to n, whatever the tile. So every tile
//! gives the same bits (tests/attention.rs checks 227, 99 and 64 KiB).

use super::{alloc, grid_dim_yz, int, run, run_shared, BLOCK};
use crate::geom::AttentionDims;
use crate::gpu::kernels::{self, Kernel};
use crate::gpu::{Dim3, GpuDevice, GpuStorage, KernelArg};
use crate::{Result, TensorError};

/// The most dynamic shared memory a tile choice uses even where the device
/// allows more (A100 allows 163 KiB, H100 227 KiB): bigger tiles would only
/// cost occupancy.
pub const SMEM_BUDGET: usize = 160 * 1024;

/// Tile sizes tried, largest first.
const TILES: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// Key tile of the forward (ATT_BKV in attention.cu: one key per lane).
const BKV: usize = 32;

fn fwd_smem(c: usize, bq: usize) -> usize {
    4 * (2 * c * bq + BKV * c + BKV * (bq + 1) + 3 * bq)
}

fn dkdv_smem(c: usize, t: usize) -> usize {
    4 * (6 * c * t + 2 * t * (t + 1) + 2 * t)
}

fn dq_smem(c: usize, t: usize) -> usize {
    4 * (5 * c * t + t * (t + 1) + 2 * t)
}

/// The shared memory attention tiles may use on a device that grants
/// `device_max` bytes a block.
pub fn smem_budget(device_max: u32) -> usize {
    SMEM_BUDGET.min(device_max as usize)
}

/// The query tile of the forward for `c` channels within `budget` bytes.
pub fn forward_tile(c: usize, budget: usize) -> Option<usize> {
    TILES.into_iter().find(|&t| fwd_smem(c, t) <= budget)
}

/// The tile of both backward kernels for `c` channels within `budget` bytes
/// (dq needs less than dk/dv).
pub fn backward_tile(c: usize, budget: usize) -> Option<usize> {
    TILES.into_iter().find(|&t| dkdv_smem(c, t) <= budget)
}

/// Bytes of dynamic shared memory of (forward, dk/dv, dq) at those tiles.
pub fn shared_bytes(c: usize, forward_tile: usize, backward_tile: usize) -> (usize, usize, usize) {
    (fwd_smem(c, forward_tile), dkdv_smem(c, backward_tile), dq_smem(c, backward_tile))
}

/// The softmax scale C^-0.5, in f64 rounded to f32 (the CPU's T::from_f64);
/// every attention kernel, fp32 or tensor-core, gets the same value.
pub(super) fn scale(c: usize) -> KernelArg {
    KernelArg::F32((c as f64).sqrt().recip() as f32)
}

/// A forward kernel with its block size, query tile and shared memory: the
/// fp32 kernel and the tensor-core ones take the same arguments.
pub(super) struct ForwardLaunch {
    pub kernel: &'static Kernel,
    pub threads: u32,
    pub tile: usize,
    pub shared_bytes: usize,
}

/// Runs a forward kernel: (out [b, c, n], lse [b, n]). The caller has
/// handled the empty cases (b * n == 0, c == 0).
pub(super) fn launch_forward(
    op: &'static str,
    dev: &GpuDevice,
    f: &ForwardLaunch,
    (q, k, v): (&GpuStorage, &GpuStorage, &GpuStorage),
    d: AttentionDims,
) -> Result<(GpuStorage, GpuStorage)> {
    let out = alloc(dev, d.b * d.c * d.n)?;
    let lse = alloc(dev, d.b * d.n)?;
    let grid = Dim3::new(d.n.div_ceil(f.tile) as u32, grid_dim_yz(op, "batch", d.b)?, 1);
    let args = [
        out.arg(),
        lse.arg(),
        q.arg(),
        k.arg(),
        v.arg(),
        int(op, "C", d.c)?,
        int(op, "N", d.n)?,
        scale(d.c),
        KernelArg::I32(f.tile as i32),
    ];
    run_shared(dev, f.kernel, grid, Dim3::x(f.threads), f.shared_bytes as u32, &args)?;
    Ok((out, lse))
}

/// The two backward kernels (dk/dv, then dq) with their block size, tile
/// and shared memory.
pub(super) struct BackwardLaunch {
    pub dkdv: &'static Kernel,
    pub dq: &'static Kernel,
    pub threads: u32,
    pub tile: usize,
    pub dkdv_bytes: usize,
    pub dq_bytes: usize,
}

/// The forward's tensors the backward reads, besides dout.
pub(super) struct Saved<'a> {
    pub q: &'a GpuStorage,
    pub k: &'a GpuStorage,
    pub v: &'a GpuStorage,
    pub out: &'a GpuStorage,
    pub lse: &'a GpuStorage,
}

/// Runs a backward: the f64 row dot D = rowsum(dout * out) [b, n], then the
/// dk/dv and dq kernels. Returns (dq, dk, dv); the caller has handled
/// b * c * n == 0 and checked the index ranges.
pub(super) fn launch_backward(
    op: &'static str,
    dev: &GpuDevice,
    f: &BackwardLaunch,
    dout: &GpuStorage,
    s: &Saved<'_>,
    d: AttentionDims,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    let len = d.b * d.c * d.n;
    let (c, n, b) = (int(op, "C", d.c)?, int(op, "N", d.n)?, int(op, "B", d.b)?);
    let (dq, dk, dv) = (alloc(dev, len)?, alloc(dev, len)?, alloc(dev, len)?);
    let dvec = alloc(dev, d.b * d.n)?;
    run(
        dev,
        &kernels::attention::ATTENTION_BWD_ROWDOT_F32,
        Dim3::x((d.b * d.n).div_ceil(BLOCK as usize) as u32),
        &[dvec.arg(), dout.arg(), s.out.arg(), b, c, n],
    )?;
    let grid = Dim3::new(d.n.div_ceil(f.tile) as u32, grid_dim_yz(op, "batch", d.b)?, 1);
    let tile = KernelArg::I32(f.tile as i32);
    let (q, k, v, lse) = (s.q.arg(), s.k.arg(), s.v.arg(), s.lse.arg());
    let args = [dk.arg(), dv.arg(), dout.arg(), q, k, v, lse, dvec.arg(), c, n, scale(d.c), tile];
    run_shared(dev, f.dkdv, grid, Dim3::x(f.threads), f.dkdv_bytes as u32, &args)?;
    let args = [dq.arg(), dout.arg(), q, k, v, lse, dvec.arg(), c, n, scale(d.c), tile];
    run_shared(dev, f.dq, grid, Dim3::x(f.threads), f.dq_bytes as u32, &args)?;
    Ok((dq, dk, dv))
}

fn too_wide(op: &'static str, c: usize, budget: usize) -> TensorError {
    TensorError::invalid(
        op,
        format!("{c} channels do not fit the attention kernels' shared memory ({budget} bytes a block on this device)"),
    )
}

/// (out [b, c, n], lse [b, n]) of single-head attention over q, k, v [b, c, n].
pub fn attention_forward(
    dev: &GpuDevice,
    q: &GpuStorage,
    k: &GpuStorage,
    v: &GpuStorage,
    d: AttentionDims,
) -> Result<(GpuStorage, GpuStorage)> {
    const OP: &str = "attention_forward";
    if d.b * d.n == 0 {
        return Ok((alloc(dev, d.b * d.c * d.n)?, alloc(dev, d.b * d.n)?));
    }
    if d.c == 0 {
        // no channels: out is empty and every score is 0, lse = ln(n), as the CPU
        let (out, lse) = (alloc(dev, 0)?, alloc(dev, d.b * d.n)?);
        dev.driver().htod(bytemuck::cast_slice(&vec![(d.n as f32).ln(); d.b * d.n]), lse.ptr())?;
        return Ok((out, lse));
    }
    super::check_i32(OP, "C*N", d.c * d.n)?;
    let budget = smem_budget(dev.max_shared_bytes());
    let bq = forward_tile(d.c, budget).ok_or_else(|| too_wide(OP, d.c, budget))?;
    let launch = ForwardLaunch {
        kernel: &kernels::attention::ATTENTION_FWD_F32,
        threads: BLOCK,
        tile: bq,
        shared_bytes: fwd_smem(d.c, bq),
    };
    launch_forward(OP, dev, &launch, (q, k, v), d)
}

/// (dq, dk, dv), each [b, c, n], from dout and the forward's q, k, v, out,
/// lse. Workspace: D = rowsum(dout * out) [b, n].
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dev: &GpuDevice,
    dout: &GpuStorage,
    q: &GpuStorage,
    k: &GpuStorage,
    v: &GpuStorage,
    out: &GpuStorage,
    lse: &GpuStorage,
    d: AttentionDims,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    const OP: &str = "attention_backward";
    let len = d.b * d.c * d.n;
    if len == 0 {
        return Ok((alloc(dev, len)?, alloc(dev, len)?, alloc(dev, len)?));
    }
    super::check_i32(OP, "C*N", d.c * d.n)?;
    super::check_i32(OP, "B*N", d.b * d.n)?;
    let budget = smem_budget(dev.max_shared_bytes());
    let t = backward_tile(d.c, budget).ok_or_else(|| too_wide(OP, d.c, budget))?;
    let launch = BackwardLaunch {
        dkdv: &kernels::attention::ATTENTION_BWD_DKDV_F32,
        dq: &kernels::attention::ATTENTION_BWD_DQ_F32,
        threads: BLOCK,
        tile: t,
        dkdv_bytes: dkdv_smem(d.c, t),
        dq_bytes: dq_smem(d.c, t),
    };
    launch_backward(OP, dev, &launch, dout, &Saved { q, k, v, out, lse }, d)
}

/// The softmax weights p [b, n, n] (runs the forward for the lse first).
pub fn attention_weights(dev: &GpuDevice, q: &GpuStorage, k: &GpuStorage, d: AttentionDims) -> Result<GpuStorage> {
    const OP: &str = "attention_weights";
    let total = d.b * d.n * d.n;
    let p = alloc(dev, total)?;
    if total == 0 {
        return Ok(p);
    }
    // the forward's lse; k stands in for v (the output is discarded)
    let (_, lse) = attention_forward(dev, q, k, k, d)?;
    let args =
        [p.arg(), q.arg(), k.arg(), lse.arg(), int(OP, "B", d.b)?, int(OP, "C", d.c)?, int(OP, "N", d.n)?, scale(d.c)];
    run(dev, &kernels::attention::ATTENTION_WEIGHTS_FWD_F32, super::grid_for(total as u64), &args)?;
    Ok(p)
}
