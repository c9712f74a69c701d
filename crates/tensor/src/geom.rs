//! The sizes and constants that describe one op call, shared by the CPU
//! reference (`cpu/`) and the GPU launch code (`gpu/launch/`): `ops/` builds
//! and checks them, and both backends import them from here, never from each
//! other. Backend-specific helpers live with each backend (`impl` blocks in
//! `cpu/<family>.rs`).

// ---- conv2d

/// The sizes of one convolution, checked by `ops::conv2d`: input
/// `[n, ci, h, w]`, kernel `[co, ci, kh, kw]`, output `[n, co, ho, wo]`
/// (bottom/right padding is implied by `ho`, `wo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeom {
    /// Rows of the im2col matrix (the GEMM's reduction length): one per (input channel, kernel tap).
    pub fn k(&self) -> usize {
        self.ci * self.kh * self.kw
    }

    /// Output pixels per image (columns of the im2col matrix per image).
    pub fn p(&self) -> usize {
        self.ho * self.wo
    }
}

// ---- linear

/// Sizes of a linear layer applied to `n` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearDims {
    pub n: usize,
    pub d_in: usize,
    pub d_out: usize,
}

// ---- attention

/// Sizes of an attention problem: `b` items of `c` channels and `n` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    pub b: usize,
    pub c: usize,
    pub n: usize,
}

// ---- group_norm

/// Sizes of a group-norm problem: `n` images of `c` channels of `hw`
/// positions, in `groups` groups of consecutive channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupNormDims {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub groups: usize,
}

impl GroupNormDims {
    pub fn channels_per_group(&self) -> usize {
        self.c / self.groups.max(1)
    }

    /// Elements of one (image, group) slab.
    pub fn slab(&self) -> usize {
        self.channels_per_group() * self.hw
    }

    /// Number of (image, group) slabs.
    pub fn slabs(&self) -> usize {
        self.n * self.groups
    }
}

// ---- optim

/// The scalars of one AdamW step, derived once from the hyper-parameters.
#[derive(Clone, Copy, Debug)]
pub struct AdamWConsts {
    /// 1 - lr * weight_decay: decoupled decay multiplies the parameter.
    pub decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// lr / (1 - beta1^t)
    pub step_size: f64,
    /// sqrt(1 - beta2^t)
    pub bias_correction2_sqrt: f64,
    pub eps: f64,
}

impl AdamWConsts {
    pub fn new(lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64, step: u64) -> Self {
        // powi takes i32; past 2^31 steps beta^t is 0 for any beta < 1 anyway
        let t = step.min(i32::MAX as u64) as i32;
        AdamWConsts {
            decay: 1.0 - lr * weight_decay,
            beta1,
            beta2,
            step_size: lr / (1.0 - beta1.powi(t)),
            bias_correction2_sqrt: (1.0 - beta2.powi(t)).sqrt(),
            eps,
        }
    }
}

// ---- elementwise

/// The binary elementwise ops with one output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    /// a + s * b
    AddScaled(f64),
}
