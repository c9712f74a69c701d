//! What a U-Net config costs in memory, computed from the config alone
//! (nothing is allocated), so that a config can be counted (`diffuse info`)
//! or refused before the model is built.
//!
//! The walk below mirrors `Arch::build` and `Arch::forward` in `unet.rs`:
//! the parameter count and the cached floats per image are exact (the tests
//! compare them with a built model and its `UNetCache::bytes()`); the
//! transient terms (skip connections, the largest feature map, per-thread
//! im2col and attention scratch) are upper-bound estimates.

use crate::config::UNetConfig;
use crate::Result;

/// Sizes of a model, in f32 values unless named otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Parameters (scalars).
    pub params: u64,
    /// Values a training forward caches per image (exactly `UNetCache::bytes() / 4 / N`).
    pub cache_per_image: u64,
    /// Values of the skip connections per image, held from the down path to the up path.
    pub skips_per_image: u64,
    /// The largest single feature map per image (the up path's concatenated inputs included).
    pub largest_map_per_image: u64,
    /// The largest per-thread convolution scratch (im2col plus output) for one image.
    pub conv_scratch_per_image: u64,
    /// The largest convolution weight (the CPU weight gradient sums up to 16 partial copies).
    pub largest_conv_weight: u64,
    /// Tokens (H x W) of the largest attention; the CPU attention keeps an n x n
    /// score matrix per thread (two in the backward).
    pub max_attn_tokens: u64,
}

/// Partial copies of a weight gradient the CPU convolution may keep (`MAX_WEIGHT_SLOTS`).
const WEIGHT_GRAD_SLOTS: u128 = 16;
/// Feature maps that may be alive at once besides the cache and the skips
/// (input, output, gradient in and out of a layer).
const TRANSIENT_MAPS: u128 = 4;

fn to_u64(x: u128) -> u64 {
    x.min(u64::MAX as u128) as u64
}

impl Footprint {
    /// The footprint of a config; the config is validated first, so every
    /// size is bounded by its hard limits and nothing overflows.
    pub fn of(c: &UNetConfig) -> Result<Footprint> {
        c.validate()?;
        Ok(Walk::new(c).run())
    }

    /// Bytes of the weights (f32).
    pub fn weight_bytes(&self) -> u64 {
        to_u64(4 * self.params as u128)
    }

    /// Bytes of activations and scratch for one training step (forward with
    /// cache, then backward) of `batch` images on `threads` CPU threads,
    /// without the weights, gradients and optimiser state.
    pub fn training_activation_bytes(&self, batch: usize, threads: usize) -> u64 {
        let per_image = self.cache_per_image as u128
            + self.skips_per_image as u128
            + TRANSIENT_MAPS * self.largest_map_per_image as u128;
        let tokens = self.max_attn_tokens as u128;
        let per_thread = self.conv_scratch_per_image as u128 + 2 * tokens * tokens;
        to_u64(
            4 * (batch as u128 * per_image
                + threads as u128 * per_thread
                + WEIGHT_GRAD_SLOTS * self.largest_conv_weight as u128),
        )
    }

    /// Bytes of activations and scratch for one inference forward of `batch` images.
    pub fn inference_activation_bytes(&self, batch: usize, threads: usize) -> u64 {
        let per_image = self.skips_per_image as u128 + TRANSIENT_MAPS * self.largest_map_per_image as u128;
        let tokens = self.max_attn_tokens as u128;
        let per_thread = self.conv_scratch_per_image as u128 + tokens * tokens;
        to_u64(4 * (batch as u128 * per_image + threads as u128 * per_thread))
    }
}

/// Accumulates the sizes while walking the architecture.
struct Walk<'a> {
    c: &'a UNetConfig,
    params: u128,
    cache: u128,
    skips: u128,
    largest_map: u128,
    conv_scratch: u128,
    largest_conv_weight: u128,
    max_tokens: u128,
}

impl<'a> Walk<'a> {
    fn new(c: &'a UNetConfig) -> Self {
        Walk {
            c,
            params: 0,
            cache: 0,
            skips: 0,
            largest_map: 0,
            conv_scratch: 0,
            largest_conv_weight: 0,
            max_tokens: 0,
        }
    }

    fn map(&mut self, channels: u128, side: u128) -> u128 {
        let m = channels * side * side;
        self.largest_map = self.largest_map.max(m);
        m
    }

    fn conv(&mut self, cin: u128, cout: u128, k: u128, side_in: u128) {
        let w = cout * cin * k * k;
        self.params += w + cout;
        self.largest_conv_weight = self.largest_conv_weight.max(w);
        self.conv_scratch = self.conv_scratch.max((cin * k * k + cout) * side_in * side_in);
    }

    fn linear(&mut self, fan_in: u128, fan_out: u128) {
        self.params += fan_out * fan_in + fan_out;
    }

    /// GroupNorm parameters; its cache is mean and rstd, one per group.
    fn group_norm(&mut self, c: u128) -> u128 {
        self.params += 2 * c;
        2 * self.c.groups as u128
    }

    fn resnet(&mut self, cin: u128, cout: u128, side: u128) {
        let temb_ch = 4 * self.c.ch as u128;
        let n1 = self.group_norm(cin);
        self.conv(cin, cout, 3, side);
        self.linear(temb_ch, cout);
        let n2 = self.group_norm(cout);
        self.conv(cout, cout, 3, side);
        if cin != cout {
            self.conv(cin, cout, 1, side);
        }
        // Cache (host memory, the CPU path): x (cin), h2 (cout), both norms'
        // statistics; a1 = silu(norm1(x)) and a2 = dropout(silu(norm2(h2)))
        // are rebuilt in the backward (a GPU keeps them: one more cin and
        // cout map there, in device memory).
        let (xin, xout) = (self.map(cin, side), self.map(cout, side));
        self.cache += xin + xout + n1 + n2;
    }

    fn attention(&mut self, c: u128, side: u128) {
        let n = self.group_norm(c);
        for _ in 0..4 {
            self.conv(c, c, 1, side);
        }
        // Cache: x, h, q, k, v, out (c each), lse (one per token), norm statistics.
        let m = self.map(c, side);
        self.cache += 6 * m + side * side + n;
        self.max_tokens = self.max_tokens.max(side * side);
    }

    fn run(mut self) -> Footprint {
        let c = self.c;
        let ch = c.ch as u128;
        let in_ch = c.in_ch as u128;
        let size = c.image_size as u128;
        // Time embedding: dense0 (ch -> 4ch), dense1 (4ch -> 4ch); cache
        // sinusoid, h0, a0, plus the U-Net's temb_out and silu_temb.
        self.linear(ch, 4 * ch);
        self.linear(4 * ch, 4 * ch);
        self.cache += ch + 4 * 4 * ch;
        // A conditional model's class table: num_classes + 1 rows of 4ch
        // (the labels it keeps are host data).
        if c.num_classes > 0 {
            self.params += (c.num_classes as u128 + 1) * 4 * ch;
        }
        // The input image is cached; conv_in's output is the first skip.
        self.cache += self.map(in_ch, size);
        self.conv(in_ch, ch, 3, size);
        self.skips += self.map(ch, size);

        let levels = c.ch_mult.len();
        let mut side = size;
        let mut skip_ch = vec![ch];
        let mut cin = ch;
        for (i, &mult) in c.ch_mult.iter().enumerate() {
            let cout = ch * mult as u128;
            for _ in 0..c.num_res_blocks {
                self.resnet(cin, cout, side);
                cin = cout;
                if c.attn_resolutions.contains(&(side as usize)) {
                    self.attention(cin, side);
                }
                skip_ch.push(cin);
                self.skips += self.map(cin, side);
            }
            if i + 1 != levels {
                // Downsample: caches its input; its output is a skip.
                self.conv(cin, cin, 3, side);
                self.cache += self.map(cin, side);
                skip_ch.push(cin);
                side = side.div_ceil(2);
                self.skips += self.map(cin, side);
            }
        }
        self.resnet(cin, cin, side);
        self.attention(cin, side);
        self.resnet(cin, cin, side);
        for i in (0..levels).rev() {
            let cout = ch * c.ch_mult[i] as u128;
            for _ in 0..=c.num_res_blocks {
                let skip = skip_ch.pop().unwrap_or(0);
                self.resnet(cin + skip, cout, side);
                cin = cout;
                if c.attn_resolutions.contains(&(side as usize)) {
                    self.attention(cin, side);
                }
            }
            if i != 0 {
                // Upsample: on the CPU caches the map before upsampling (a
                // GPU keeps its conv's input, four times as large).
                self.cache += self.map(cin, side);
                side *= 2;
                self.conv(cin, cin, 3, side);
            }
        }
        // norm_out (cache: its input and statistics; the CPU rebuilds its
        // output in the backward, a GPU keeps it), conv_out.
        let n = self.group_norm(cin);
        self.cache += self.map(cin, side) + n;
        self.conv(cin, in_ch, 3, side);
        Footprint {
            params: to_u64(self.params),
            cache_per_image: to_u64(self.cache),
            skips_per_image: to_u64(self.skips),
            largest_map_per_image: to_u64(self.largest_map),
            conv_scratch_per_image: to_u64(self.conv_scratch),
            largest_conv_weight: to_u64(self.largest_conv_weight),
            max_attn_tokens: to_u64(self.max_tokens),
        }
    }
}
