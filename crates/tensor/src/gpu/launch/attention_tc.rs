//! Launch code of the tensor-core attention (kernels/attention_tc.cu): the
//! forward (two passes over the keys), the backward's dk/dv and dq passes,
//! and attention.cu's f64 row dot D = rowsum(dout * out) between them.
//!
//! Tiles: the forward's query tile and the backward's tile are the larger of
//! 32 and 16 whose shared memory fits the budget (`attention::smem_budget`);
//! the kernels' sums walk keys (forward, dq) or queries (dk, dv) in order
//! from 0 to n whatever the tile. `Precision::Fp32` runs `attention.rs`
//! (today's kernels, bit for bit).

use super::attention::{
    self as fp32, launch_backward, launch_forward, smem_budget, BackwardLaunch, ForwardLaunch, Saved,
};
use crate::geom::AttentionDims;
use crate::gpu::kernels::{self, Kernel};
use crate::gpu::{GpuDevice, GpuStorage};
use crate::{Precision, Result, TensorError};

/// Threads of a block (4 warps).
pub const THREADS: u32 = 128;

/// Tile sizes tried, largest first (multiples of the 16-row wmma tile).
const TILES: [usize; 2] = [32, 16];

/// Key tile of the forward (ATT_TC_BKV: one key per lane in its softmax).
const BKV: usize = 32;

/// `bytes` rounded up to 128, as `att_tc_take` carves the buffer.
fn region(bytes: usize) -> usize {
    bytes.div_ceil(128) * 128
}

/// Bytes of one staged element: bf16 2, tf32 (held in f32) 4.
fn element_bytes(p: Precision) -> usize {
    if p == Precision::Bf16 {
        2
    } else {
        4
    }
}

/// Bytes of dynamic shared memory of the forward at query tile `bq`
/// (the layout in attention_tc.cu's header).
pub fn fwd_smem(p: Precision, c: usize, bq: usize) -> usize {
    let (cp, es) = (c.next_multiple_of(16), element_bytes(p));
    region(cp * (bq + 8) * es)
        + region(cp * (BKV + 8) * es)
        + region(bq * (BKV + 4) * 4)
        + region(bq * (BKV + 8) * es)
        + region(cp * (bq + 4) * 4)
        + 2 * region(bq * 4)
}

/// Bytes of the dk/dv pass at tile `t`.
pub fn dkdv_smem(p: Precision, c: usize, t: usize) -> usize {
    let (cp, es) = (c.next_multiple_of(16), element_bytes(p));
    4 * region(cp * (t + 8) * es)
        + 2 * region(t * (t + 4) * 4)
        + 2 * region(t * (t + 8) * es)
        + 2 * region(cp * (t + 4) * 4)
        + 2 * region(t * 4)
}

/// Bytes of the dq pass at tile `t`.
pub fn dq_smem(p: Precision, c: usize, t: usize) -> usize {
    let (cp, es) = (c.next_multiple_of(16), element_bytes(p));
    4 * region(cp * (t + 8) * es)
        + 2 * region(t * (t + 4) * 4)
        + region(t * (t + 8) * es)
        + region(cp * (t + 4) * 4)
        + 2 * region(t * 4)
}

/// The forward's query tile for `c` channels within `budget` bytes.
pub fn forward_tile(p: Precision, c: usize, budget: usize) -> Option<usize> {
    TILES.into_iter().find(|&t| fwd_smem(p, c, t) <= budget)
}

/// The tile of both backward passes (dk/dv needs more than dq).
pub fn backward_tile(p: Precision, c: usize, budget: usize) -> Option<usize> {
    TILES.into_iter().find(|&t| dkdv_smem(p, c, t) <= budget)
}

fn pick(p: Precision, bf16: &'static Kernel, tf32: &'static Kernel) -> &'static Kernel {
    if p == Precision::Bf16 {
        bf16
    } else {
        tf32
    }
}

fn too_wide(op: &'static str, p: Precision, c: usize, budget: usize) -> TensorError {
    TensorError::invalid(
        op,
        format!(
            "{c} channels do not fit the {p} tensor-core attention kernels' shared memory ({budget} bytes a block on \
             this device); use --precision fp32"
        ),
    )
}

/// (out [b, c, n], lse [b, n]) with the products on tensor cores at `p`.
pub fn attention_forward(
    dev: &GpuDevice,
    q: &GpuStorage,
    k: &GpuStorage,
    v: &GpuStorage,
    d: AttentionDims,
    p: Precision,
) -> Result<(GpuStorage, GpuStorage)> {
    const OP: &str = "attention_forward";
    let bf16_in = super::bf16_input(OP, "q, k, v", q, p)?; // the ops check k, v share q's dtype
    if p == Precision::Fp32 || d.b * d.n == 0 || d.c == 0 {
        // fp32, or nothing for a tensor core to multiply (the fp32 path's
        // special cases: empty outputs, lse = ln n)
        return fp32::attention_forward(dev, q, k, v, d);
    }
    super::check_i32(OP, "C*N", d.c.next_multiple_of(16) * d.n.next_multiple_of(BKV))?;
    let budget = smem_budget(dev.max_shared_bytes());
    let bq = forward_tile(p, d.c, budget).ok_or_else(|| too_wide(OP, p, d.c, budget))?;
    use kernels::attention_tc::{ATTENTION_FWD_TC_BF16IN_F32, ATTENTION_FWD_TC_BF16_F32, ATTENTION_FWD_TC_TF32_F32};
    let launch = ForwardLaunch {
        kernel: if bf16_in {
            &ATTENTION_FWD_TC_BF16IN_F32
        } else {
            pick(p, &ATTENTION_FWD_TC_BF16_F32, &ATTENTION_FWD_TC_TF32_F32)
        },
        threads: THREADS,
        tile: bq,
        shared_bytes: fwd_smem(p, d.c, bq),
    };
    launch_forward(OP, dev, &launch, (q, k, v), d)
}

/// (dq, dk, dv), each [b, c, n], with the products on tensor cores at `p`.
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
    p: Precision,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    const OP: &str = "attention_backward";
    let bf16_in = super::bf16_input(OP, "q, k, v", q, p)?; // the ops check k, v share q's dtype
    let len = d.b * d.c * d.n;
    if p == Precision::Fp32 || len == 0 {
        return fp32::attention_backward(dev, dout, q, k, v, out, lse, d);
    }
    super::check_i32(OP, "C*N", d.c.next_multiple_of(16) * d.n.next_multiple_of(32))?;
    super::check_i32(OP, "B*N", d.b * d.n)?;
    let budget = smem_budget(dev.max_shared_bytes());
    let t = backward_tile(p, d.c, budget).ok_or_else(|| too_wide(OP, p, d.c, budget))?;
    use kernels::attention_tc::*;
    let launch = BackwardLaunch {
        dkdv: match bf16_in {
            true => &ATTENTION_BWD_DKDV_TC_BF16IN_F32,
            false => pick(p, &ATTENTION_BWD_DKDV_TC_BF16_F32, &ATTENTION_BWD_DKDV_TC_TF32_F32),
        },
        dq: match bf16_in {
            true => &ATTENTION_BWD_DQ_TC_BF16IN_F32,
            false => pick(p, &ATTENTION_BWD_DQ_TC_BF16_F32, &ATTENTION_BWD_DQ_TC_TF32_F32),
        },
        threads: THREADS,
        tile: t,
        dkdv_bytes: dkdv_smem(p, d.c, t),
        dq_bytes: dq_smem(p, d.c, t),
    };
    launch_backward(OP, dev, &launch, dout, &Saved { q, k, v, out, lse }, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_u_nets_attention_fits_a100_and_h100_at_both_precisions() {
        // mnist C = 64, cifar10 C = 256; 160 KiB is the budget on both
        for p in [Precision::Bf16, Precision::Tf32] {
            for c in [64, 256] {
                assert_eq!(forward_tile(p, c, 160 * 1024), Some(32), "{p} C={c}");
                assert!(backward_tile(p, c, 160 * 1024).is_some(), "{p} C={c}");
                assert!(dq_smem(p, c, 16) <= dkdv_smem(p, c, 16));
            }
        }
        // bf16 at C = 256: 94 KiB at tile 16
        assert_eq!(dkdv_smem(Precision::Bf16, 256, 16), 94464);
        assert_eq!(backward_tile(Precision::Bf16, 256, 160 * 1024), Some(16));
        assert_eq!(backward_tile(Precision::Tf32, 4096, 160 * 1024), None);
    }
}
