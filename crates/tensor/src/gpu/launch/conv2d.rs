//! Launch code of kernels/conv2d.cu: implicit-GEMM convolution passes in
//! three output-tile shapes (chosen from the GEMM's row count alone), 256
//! threads, split-K for the weight gradient, a split bias reduction.
//!
//! The geometry is `geom::ConvGeom`, built and checked by `ops::conv2d`
//! (input [n, ci, h, w], weight [co, ci, kh, kw], output [n, co, ho, wo],
//! stride, pad_top, pad_left).

use super::reduce::{split_terms, sum_splits};
use super::{alloc, grid_dim_yz, int, run, run_shared, BLOCK};
use crate::geom::ConvGeom;
use crate::gpu::kernels::{self, Kernel};
use crate::gpu::{Dim3, GpuDevice, GpuStorage, KernelArg};
use crate::{Result, TensorError};

/// The tile the weight-gradient split-K is sized for (64 x 64, the wide
/// shape) whatever tile runs, and the K step (CV_BK) of conv2d.cu.
const SPLIT_TILE: usize = 64;
const KSTEP: usize = 16;

/// Blocks the weight-gradient split-K aims for (about two waves on a
/// 132-SM H100). A constant, never the device's SM count, so the split, and
/// with it the summation order, is the same on every device and the emulator.
pub const WEIGHT_GRAD_TARGET_BLOCKS: usize = 256;

/// Fewest bias terms (pixels) a split of the bias gradient sums: 4 a thread.
const BIAS_MIN_TERMS: usize = 1024;

/// The output-tile shapes of conv2d.cu's GEMMs. Every output is the same
/// serial sum over k in each, so they give the same bits; the shape only
/// changes how much of the tile is padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvTile {
    /// 64 x 64 (`conv2d_*_f32`).
    Wide,
    /// 32 x 128 (`conv2d_*_narrow_f32`): 32-channel layers.
    Narrow,
    /// 4 x 256 (`conv2d_*_few_f32`): 1 to 4 channels.
    Few,
}

impl ConvTile {
    pub const ALL: [ConvTile; 3] = [ConvTile::Wide, ConvTile::Narrow, ConvTile::Few];

    /// (rows, columns) of the tile: GEMM M (channels) by GEMM N.
    pub fn dims(self) -> (usize, usize) {
        match self {
            ConvTile::Wide => (64, 64),
            ConvTile::Narrow => (32, 128),
            ConvTile::Few => (4, 256),
        }
    }

    /// The shape for a GEMM with `m` rows: few for m <= 4, else the one
    /// that pads m least (wide on a tie).
    pub fn for_rows(m: usize) -> ConvTile {
        if m <= 4 {
            ConvTile::Few
        } else if m.next_multiple_of(32) < m.next_multiple_of(64) {
            ConvTile::Narrow
        } else {
            ConvTile::Wide
        }
    }

    fn pick(self, wide: &'static Kernel, narrow: &'static Kernel, few: &'static Kernel) -> &'static Kernel {
        match self {
            ConvTile::Wide => wide,
            ConvTile::Narrow => narrow,
            ConvTile::Few => few,
        }
    }

    /// The grid of a GEMM with `rows` x `cols` outputs.
    fn grid(self, op: &'static str, cols: usize, rows: usize) -> Result<Dim3> {
        let (bm, bn) = self.dims();
        let x = u32::try_from(cols.div_ceil(bn).max(1))
            .map_err(|_| TensorError::invalid(op, format!("{cols} GEMM columns")))?;
        Ok(Dim3::new(x, grid_dim_yz(op, "channel tiles", rows.div_ceil(bm).max(1))?, 1))
    }
}

pub(crate) fn geometry_args(op: &'static str, g: &ConvGeom) -> Result<[KernelArg; 12]> {
    // every per-image size and flattened GEMM dimension the kernels index with int
    for (what, v) in [
        ("Ci*KH*KW", g.ci * g.kh * g.kw),
        ("Co*KH*KW", g.co * g.kh * g.kw),
        ("H*W", g.h * g.w),
        ("Ho*Wo", g.ho * g.wo),
        ("Ci*H*W", g.ci * g.h * g.w),
        ("Co*Ho*Wo", g.co * g.ho * g.wo),
        ("N*Ho*Wo + 16", g.n * g.ho * g.wo + KSTEP),
        ("N*H*W", g.n * g.h * g.w),
        ("Co*Ci*KH*KW", g.co * g.ci * g.kh * g.kw),
        ("padded input", (g.h + g.pad_top + g.kh) * g.stride.max(1)),
        ("padded width", (g.w + g.pad_left + g.kw) * g.stride.max(1)),
    ] {
        super::check_i32(op, what, v)?;
    }
    Ok([
        int(op, "N", g.n)?,
        int(op, "Ci", g.ci)?,
        int(op, "H", g.h)?,
        int(op, "W", g.w)?,
        int(op, "Co", g.co)?,
        int(op, "KH", g.kh)?,
        int(op, "KW", g.kw)?,
        int(op, "stride", g.stride)?,
        int(op, "pad_top", g.pad_top)?,
        int(op, "pad_left", g.pad_left)?,
        int(op, "Ho", g.ho)?,
        int(op, "Wo", g.wo)?,
    ])
}

/// y [n, co, ho, wo] = conv(x, w) + b, in the tile shape for Co rows.
pub fn conv2d_forward(
    dev: &GpuDevice,
    x: &GpuStorage,
    w: &GpuStorage,
    b: Option<&GpuStorage>,
    g: &ConvGeom,
) -> Result<GpuStorage> {
    conv2d_forward_tiled(dev, x, w, b, g, ConvTile::for_rows(g.co))
}

/// One convolution pass's operands, whichever kernel runs it (a SIMT tile
/// shape here, the tensor cores in `conv2d_tc.rs`): the output buffer, the
/// kernel arguments, the GEMM extent the grid covers (columns x rows) and,
/// for the weight gradient, the split-K partials in `out`.
pub(crate) struct ConvPass {
    pub out: GpuStorage,
    pub args: Vec<KernelArg>,
    pub cols: usize,
    pub rows: usize,
    splits: usize,
    count: usize,
}

/// A pass to launch, or its (empty) result when there is nothing to compute.
pub(crate) enum Prepared {
    Done(GpuStorage),
    Launch(ConvPass),
}

impl ConvPass {
    /// y [n, co, ho, wo] = conv(x, w) (+ b): args (y, x, w, bias, has_bias, geometry).
    pub(crate) fn forward(
        op: &'static str,
        dev: &GpuDevice,
        x: &GpuStorage,
        w: &GpuStorage,
        b: Option<&GpuStorage>,
        g: &ConvGeom,
    ) -> Result<Prepared> {
        let geo = geometry_args(op, g)?;
        let y = alloc(dev, g.n * g.co * g.ho * g.wo)?;
        if g.n * g.co * g.ho * g.wo == 0 {
            return Ok(Prepared::Done(y));
        }
        let (bias, has) = match b {
            Some(b) => (b.arg(), 1),
            None => (KernelArg::Ptr(0), 0),
        };
        let mut args = vec![y.arg(), x.arg(), w.arg(), bias, KernelArg::I32(has)];
        args.extend_from_slice(&geo);
        Ok(Prepared::Launch(ConvPass { out: y, args, cols: g.n * g.ho * g.wo, rows: g.co, splits: 1, count: 0 }))
    }

    /// dx [n, ci, h, w] from dy and w: args (dx, dy, w, geometry).
    pub(crate) fn backward_data(
        op: &'static str,
        dev: &GpuDevice,
        dy: &GpuStorage,
        w: &GpuStorage,
        g: &ConvGeom,
    ) -> Result<Prepared> {
        let geo = geometry_args(op, g)?;
        let dx = alloc(dev, g.n * g.ci * g.h * g.w)?;
        if g.n * g.ci * g.h * g.w == 0 {
            return Ok(Prepared::Done(dx));
        }
        let mut args = vec![dx.arg(), dy.arg(), w.arg()];
        args.extend_from_slice(&geo);
        Ok(Prepared::Launch(ConvPass { out: dx, args, cols: g.n * g.h * g.w, rows: g.ci, splits: 1, count: 0 }))
    }

    /// The split-K partials of dw [co, ci, kh, kw] from dy and x: args
    /// (workspace of splits * |w|, dy, x, geometry, K per split).
    pub(crate) fn backward_weight(
        op: &'static str,
        dev: &GpuDevice,
        dy: &GpuStorage,
        x: &GpuStorage,
        g: &ConvGeom,
    ) -> Result<Prepared> {
        let geo = geometry_args(op, g)?;
        let count = g.co * g.ci * g.kh * g.kw;
        if count == 0 {
            return Ok(Prepared::Done(alloc(dev, 0)?));
        }
        let (splits, per_split) = weight_grad_splits(g);
        super::check_i32(op, "N*Ho*Wo per split", per_split)?;
        let ws = alloc(dev, splits * count)?;
        let mut args = vec![ws.arg(), dy.arg(), x.arg()];
        args.extend_from_slice(&geo);
        args.push(KernelArg::I32(per_split as i32));
        Ok(Prepared::Launch(ConvPass { out: ws, args, cols: g.ci * g.kh * g.kw, rows: g.co, splits, count }))
    }

    /// The grid's z extent: the split-K splits (1 for the other passes).
    pub(crate) fn grid_z(&self, op: &'static str) -> Result<u32> {
        grid_dim_yz(op, "splits", self.splits)
    }

    /// The pass's result once its kernel ran: the weight gradient's splits
    /// added in split order (`sum_splits`), the output as it is otherwise.
    pub(crate) fn finish(self, dev: &GpuDevice, op: &'static str) -> Result<GpuStorage> {
        if self.splits == 1 {
            return Ok(self.out);
        }
        sum_splits(dev, op, &self.out, self.splits, self.count)
    }
}

impl Prepared {
    /// Runs the pass with `kernel` in blocks of `block` on the grid `grid_xy`
    /// gives for its GEMM extent (columns, rows), the splits in z, and
    /// finishes it; a pass with nothing to compute returns its result.
    pub(crate) fn launch(
        self,
        op: &'static str,
        dev: &GpuDevice,
        kernel: &'static Kernel,
        block: Dim3,
        grid_xy: impl FnOnce(usize, usize) -> Result<Dim3>,
    ) -> Result<GpuStorage> {
        let pass = match self {
            Prepared::Done(out) => return Ok(out),
            Prepared::Launch(p) => p,
        };
        let mut grid = grid_xy(pass.cols, pass.rows)?;
        grid.z = pass.grid_z(op)?;
        run_shared(dev, kernel, grid, block, 0, &pass.args)?;
        pass.finish(dev, op)
    }
}

/// Runs a prepared pass with `kernel` on the tile grid of `tile`.
fn run_tiled(
    op: &'static str,
    dev: &GpuDevice,
    pass: Prepared,
    kernel: &'static Kernel,
    tile: ConvTile,
) -> Result<GpuStorage> {
    pass.launch(op, dev, kernel, Dim3::x(BLOCK), |cols, rows| tile.grid(op, cols, rows))
}

/// [`conv2d_forward`] in a given tile shape (tests compare the shapes' bits).
pub fn conv2d_forward_tiled(
    dev: &GpuDevice,
    x: &GpuStorage,
    w: &GpuStorage,
    b: Option<&GpuStorage>,
    g: &ConvGeom,
    tile: ConvTile,
) -> Result<GpuStorage> {
    const OP: &str = "conv2d_forward";
    use kernels::conv2d::{CONV2D_FWD_F32, CONV2D_FWD_FEW_F32, CONV2D_FWD_NARROW_F32};
    let kernel = tile.pick(&CONV2D_FWD_F32, &CONV2D_FWD_NARROW_F32, &CONV2D_FWD_FEW_F32);
    run_tiled(OP, dev, ConvPass::forward(OP, dev, x, w, b, g)?, kernel, tile)
}

/// dx [n, ci, h, w] from dy [n, co, ho, wo] and w, in the tile shape for Ci rows.
pub fn conv2d_backward_data(dev: &GpuDevice, dy: &GpuStorage, w: &GpuStorage, g: &ConvGeom) -> Result<GpuStorage> {
    conv2d_backward_data_tiled(dev, dy, w, g, ConvTile::for_rows(g.ci))
}

/// [`conv2d_backward_data`] in a given tile shape.
pub fn conv2d_backward_data_tiled(
    dev: &GpuDevice,
    dy: &GpuStorage,
    w: &GpuStorage,
    g: &ConvGeom,
    tile: ConvTile,
) -> Result<GpuStorage> {
    const OP: &str = "conv2d_backward_data";
    use kernels::conv2d::{CONV2D_BWD_DATA_F32, CONV2D_BWD_DATA_FEW_F32, CONV2D_BWD_DATA_NARROW_F32};
    let kernel = tile.pick(&CONV2D_BWD_DATA_F32, &CONV2D_BWD_DATA_NARROW_F32, &CONV2D_BWD_DATA_FEW_F32);
    run_tiled(OP, dev, ConvPass::backward_data(OP, dev, dy, w, g)?, kernel, tile)
}

/// The split-K of the weight gradient: (splits, GEMM-K elements per split).
/// A function of the shape alone (sized for 64 x 64 tiles whichever shape
/// runs, so every shape sums the same splits).
pub fn weight_grad_splits(g: &ConvGeom) -> (usize, usize) {
    let k = g.n * g.ho * g.wo;
    let tiles = (g.co.div_ceil(SPLIT_TILE) * (g.ci * g.kh * g.kw).div_ceil(SPLIT_TILE)).max(1);
    let steps = k.div_ceil(KSTEP).max(1);
    let want = WEIGHT_GRAD_TARGET_BLOCKS.div_ceil(tiles).clamp(1, steps.min(65535));
    let per_split = steps.div_ceil(want) * KSTEP;
    (k.div_ceil(per_split).max(1), per_split)
}

/// dw [co, ci, kh, kw] from dy [n, co, ho, wo] and x, in the tile shape for
/// Co rows.
pub fn conv2d_backward_weight(dev: &GpuDevice, dy: &GpuStorage, x: &GpuStorage, g: &ConvGeom) -> Result<GpuStorage> {
    conv2d_backward_weight_tiled(dev, dy, x, g, ConvTile::for_rows(g.co))
}

/// [`conv2d_backward_weight`] in a given tile shape. Split-K: each split
/// writes a partial gradient into a workspace of splits * |w| floats, then
/// `sum_splits` adds the splits in order (skipped with a single split).
pub fn conv2d_backward_weight_tiled(
    dev: &GpuDevice,
    dy: &GpuStorage,
    x: &GpuStorage,
    g: &ConvGeom,
    tile: ConvTile,
) -> Result<GpuStorage> {
    const OP: &str = "conv2d_backward_weight";
    use kernels::conv2d::{CONV2D_BWD_WEIGHT_F32, CONV2D_BWD_WEIGHT_FEW_F32, CONV2D_BWD_WEIGHT_NARROW_F32};
    let kernel = tile.pick(&CONV2D_BWD_WEIGHT_F32, &CONV2D_BWD_WEIGHT_NARROW_F32, &CONV2D_BWD_WEIGHT_FEW_F32);
    run_tiled(OP, dev, ConvPass::backward_weight(OP, dev, dy, x, g)?, kernel, tile)
}

/// The split of the bias gradient: (splits, flattened (image, pixel) terms
/// per split), from the shape alone.
pub fn bias_grad_splits(n: usize, co: usize, howo: usize) -> (usize, usize) {
    split_terms(co, n * howo, BIAS_MIN_TERMS)
}

/// db [co] = sum of dy [n, co, ho, wo] over images and pixels: grid (Co,
/// splits) of fixed-order partial sums, then `sum_splits` in split order.
pub fn conv2d_backward_bias(dev: &GpuDevice, dy: &GpuStorage, n: usize, co: usize, howo: usize) -> Result<GpuStorage> {
    const OP: &str = "conv2d_backward_bias";
    if co == 0 {
        return alloc(dev, 0);
    }
    if n * howo == 0 {
        return dev.zeros_f32(co);
    }
    super::check_i32(OP, "N*Ho*Wo + 256", n * howo + super::BLOCK as usize)?;
    let (splits, chunk) = bias_grad_splits(n, co, howo);
    let part = alloc(dev, splits * co)?;
    let x = u32::try_from(co).map_err(|_| TensorError::invalid(OP, "too many channels"))?;
    let grid = Dim3::new(x, grid_dim_yz(OP, "bias splits", splits)?, 1);
    run(
        dev,
        &kernels::conv2d::CONV2D_BWD_BIAS_F32,
        grid,
        &[
            part.arg(),
            dy.arg(),
            int(OP, "N", n)?,
            int(OP, "Co", co)?,
            int(OP, "Ho*Wo", howo)?,
            int(OP, "chunk", chunk)?,
        ],
    )?;
    if splits == 1 {
        return Ok(part);
    }
    sum_splits(dev, OP, &part, splits, co)
}
