//! The U-Net configuration, its validation and the presets.

use crate::{Result, UNetError};
use serde::{Deserialize, Serialize};

/// Hard limits on the architecture knobs. They are far above any model this
/// code is meant to train (the CIFAR-10 model has 4 levels, 512 channels,
/// 2 res blocks, 32x32 images), and they keep every size computed from a
/// config (parameter counts, activation bytes) far from overflowing, so a
/// typo such as `ch: 100000` is refused with a message instead of an
/// allocation failure. What a valid config needs in memory is checked
/// separately, against the machine's memory budget.
pub mod limits {
    /// Input (and output) channels.
    pub const MAX_IN_CH: usize = 16;
    /// Channels of any level, `ch x ch_mult[i]`.
    pub const MAX_CHANNELS: usize = 8192;
    /// Resolution levels (`ch_mult.len()`).
    pub const MAX_LEVELS: usize = 8;
    /// Res blocks per level.
    pub const MAX_RES_BLOCKS: usize = 16;
    /// Image side in pixels.
    pub const MAX_IMAGE_SIZE: usize = 4096;
    /// Classes of a conditional model.
    pub const MAX_CLASSES: usize = 100_000;
}

/// The architecture knobs of ../shared/reference/ddpm_unet.py's UNetConfig,
/// with the same field names so its JSON reads directly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    pub in_ch: usize,
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub attn_resolutions: Vec<usize>,
    pub dropout: f32,
    pub groups: usize,
    pub image_size: usize,
    /// Classes of a class-conditional model (0: unconditional). The class
    /// table has one more row, "no class", for classifier-free guidance.
    /// Absent from unconditional configs, so they read and write as before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_classes: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl UNetConfig {
    /// The 8x8 test-vector model (176,849 parameters).
    pub fn tiny() -> Self {
        UNetConfig {
            in_ch: 1,
            ch: 16,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![4],
            dropout: 0.0,
            groups: 4,
            image_size: 8,
            num_classes: 0,
        }
    }

    /// A small 28x28 model for fast training tests on the bundled digits:
    /// 28 -> 14, attention at 14.
    pub fn tiny_mnist() -> Self {
        UNetConfig {
            in_ch: 1,
            ch: 16,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![14],
            dropout: 0.0,
            groups: 4,
            image_size: 28,
            num_classes: 0,
        }
    }

    /// The MNIST model: 28 -> 14 -> 7, attention at 7 (1,623,169 parameters).
    pub fn mnist() -> Self {
        UNetConfig {
            in_ch: 1,
            ch: 32,
            ch_mult: vec![1, 2, 2],
            num_res_blocks: 2,
            attn_resolutions: vec![7],
            dropout: 0.1,
            groups: 8,
            image_size: 28,
            num_classes: 0,
        }
    }

    /// The CIFAR-10 model of the paper (35,746,307 parameters).
    pub fn cifar10() -> Self {
        UNetConfig {
            in_ch: 3,
            ch: 128,
            ch_mult: vec![1, 2, 2, 2],
            num_res_blocks: 2,
            attn_resolutions: vec![16],
            dropout: 0.1,
            groups: 32,
            image_size: 32,
            num_classes: 0,
        }
    }

    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "tiny-mnist" => Some(Self::tiny_mnist()),
            "mnist" => Some(Self::mnist()),
            "cifar10" | "cifar" => Some(Self::cifar10()),
            _ => None,
        }
    }

    /// The same architecture conditioned on `num_classes` classes.
    pub fn with_classes(self, num_classes: usize) -> Self {
        UNetConfig { num_classes, ..self }
    }

    pub fn is_conditional(&self) -> bool {
        self.num_classes > 0
    }

    pub fn from_json(s: &str) -> Result<Self> {
        let c: UNetConfig = serde_json::from_str(s).map_err(|e| UNetError::Config(format!("cannot parse: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    /// The feature-map side at each level: image_size, then halved (rounding
    /// up, as the stride-2 'SAME' convolution does) once per level but the last.
    pub fn resolutions(&self) -> Vec<usize> {
        let mut r = Vec::with_capacity(self.ch_mult.len());
        let mut s = self.image_size;
        for _ in &self.ch_mult {
            r.push(s);
            s = s.div_ceil(2);
        }
        r
    }

    /// Checks everything the model relies on, with one clear message.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(UNetError::Config(m));
        if self.in_ch == 0 || self.ch == 0 || self.image_size == 0 || self.groups == 0 {
            return bad("in_ch, ch, image_size and groups must be positive".into());
        }
        if self.ch_mult.is_empty() || self.ch_mult.contains(&0) {
            return bad("ch_mult must be a non-empty list of positive multipliers".into());
        }
        if self.num_res_blocks == 0 {
            return bad("num_res_blocks must be at least 1".into());
        }
        self.check_limits()?;
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is outside [0, 1)", self.dropout));
        }
        if !self.ch.is_multiple_of(2) {
            return bad(format!("ch {} must be even (the sinusoidal embedding has ch/2 frequencies)", self.ch));
        }
        if self.ch < 4 {
            return bad(format!("ch {} is below 4 (the embedding needs at least 2 frequencies)", self.ch));
        }
        for m in &self.ch_mult {
            let c = self.ch * m;
            if !c.is_multiple_of(self.groups) {
                return bad(format!(
                    "groups {} does not divide the channel count {} (ch {} x mult {})",
                    self.groups, c, self.ch, m
                ));
            }
        }
        // Upsampling doubles the side, so each level but the last must have an
        // even side for the skip connections to line up.
        let res = self.resolutions();
        for (i, &r) in res.iter().enumerate().take(res.len() - 1) {
            if r % 2 != 0 {
                return bad(format!(
                    "image size {} cannot be halved {} times: level {} has odd side {}",
                    self.image_size,
                    res.len() - 1,
                    i,
                    r
                ));
            }
        }
        for a in &self.attn_resolutions {
            if !res.contains(a) {
                return bad(format!("attention resolution {a} is not one of the levels' sides {res:?}"));
            }
        }
        Ok(())
    }

    /// Checks the hard [`limits`] (called by [`UNetConfig::validate`]).
    fn check_limits(&self) -> Result<()> {
        use limits::*;
        let over = |what: String, value: usize, limit: usize| {
            Err(UNetError::Config(format!("{what} {value} is above the limit of {limit}")))
        };
        if self.in_ch > MAX_IN_CH {
            return over("in_ch".into(), self.in_ch, MAX_IN_CH);
        }
        if self.image_size > MAX_IMAGE_SIZE {
            return over("image_size".into(), self.image_size, MAX_IMAGE_SIZE);
        }
        if self.ch_mult.len() > MAX_LEVELS {
            return over("the number of levels (ch_mult entries)".into(), self.ch_mult.len(), MAX_LEVELS);
        }
        if self.num_res_blocks > MAX_RES_BLOCKS {
            return over("num_res_blocks".into(), self.num_res_blocks, MAX_RES_BLOCKS);
        }
        if self.ch > MAX_CHANNELS {
            return over("ch".into(), self.ch, MAX_CHANNELS);
        }
        for m in &self.ch_mult {
            // ch <= MAX_CHANNELS, so a multiplier above it overflows the limit anyway.
            let c = self.ch.saturating_mul(*m);
            if c > MAX_CHANNELS {
                return over(format!("the channel count ch {} x mult {m} =", self.ch), c, MAX_CHANNELS);
            }
        }
        if self.num_classes > MAX_CLASSES {
            return over("num_classes".into(), self.num_classes, MAX_CLASSES);
        }
        if self.attn_resolutions.len() > MAX_LEVELS {
            return over("the number of attn_resolutions".into(), self.attn_resolutions.len(), MAX_LEVELS);
        }
        Ok(())
    }
}
