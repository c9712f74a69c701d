//! The footprint computed from a config alone against a built model: the
//! parameter count equals `UNet::num_params`, the cached floats equal what a
//! training forward really caches; the hard limits refuse absurd configs
//! before anything is allocated.

use diffuse_tensor::{DType, Device, Tensor};
use diffuse_unet::config::limits;
use diffuse_unet::{Footprint, ForwardMode, UNet, UNetConfig, UNetError};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};

/// Fixed seed in CI; `DIFFUSE_EXPLORE=1` runs 20x the cases from a fresh seed.
fn fixed_seed(cases: u32, seed: u64) -> ProptestConfig {
    let explore = std::env::var("DIFFUSE_EXPLORE").is_ok_and(|v| v == "1");
    ProptestConfig {
        cases: if explore { cases * 20 } else { cases },
        rng_seed: if explore { RngSeed::Random } else { RngSeed::Fixed(seed) },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[test]
fn preset_counts_match_pytorch_without_building() {
    for (cfg, want) in
        [(UNetConfig::tiny(), 176_849), (UNetConfig::mnist(), 1_623_169), (UNetConfig::cifar10(), 35_746_307)]
    {
        assert_eq!(Footprint::of(&cfg).unwrap().params, want);
    }
}

/// Small valid configs of awkward shapes: 1 to 3 levels, sides that halve
/// evenly, attention at any subset of the levels.
fn small_config() -> impl Strategy<Value = UNetConfig> {
    (1usize..=3, 1usize..=2, 1usize..=3, prop::sample::select(vec![4usize, 8, 12]), 0u8..8, 0usize..3)
        .prop_flat_map(|(levels, blocks, in_ch, ch, attn_mask, last_side)| {
            (prop::collection::vec(1usize..=3, levels), Just((levels, blocks, in_ch, ch, attn_mask, last_side)))
        })
        .prop_map(|(ch_mult, (levels, blocks, in_ch, ch, attn_mask, last_side))| {
            let image_size = [3, 4, 5][last_side] << (levels - 1);
            let mut c = UNetConfig {
                in_ch,
                ch,
                ch_mult,
                num_res_blocks: blocks,
                attn_resolutions: vec![],
                dropout: 0.0,
                groups: 2,
                image_size,
                num_classes: 0,
            };
            c.attn_resolutions = c
                .resolutions()
                .into_iter()
                .enumerate()
                .filter(|(i, _)| attn_mask & (1 << i) != 0)
                .map(|(_, r)| r)
                .collect();
            c
        })
}

proptest! {
    #![proptest_config(fixed_seed(32, 0x0f00_7001))]

    #[test]
    fn footprint_matches_a_built_model(cfg in small_config(), n in 1usize..=2) {
        let fp = Footprint::of(&cfg).unwrap();
        let model = UNet::new(cfg.clone(), 1, DType::F32, &Device::Cpu).unwrap();
        prop_assert_eq!(fp.params, model.num_params() as u64);
        let s = cfg.image_size;
        let x = Tensor::randn([n, cfg.in_ch, s, s], 3, 0, DType::F32, &Device::Cpu).unwrap();
        let t = Tensor::from_vec(vec![5.0f32; n], [n]).unwrap();
        let (_, cache) = model.forward_train(&x, &t, ForwardMode::train(0, 0)).unwrap();
        prop_assert_eq!(fp.cache_per_image * 4 * n as u64, cache.bytes() as u64);
        // The estimates cover at least the cache, and inference needs less than training.
        prop_assert!(fp.training_activation_bytes(n, 2) >= cache.bytes() as u64);
        prop_assert!(fp.inference_activation_bytes(n, 2) < fp.training_activation_bytes(n, 2));
    }
}

fn config_error(c: &UNetConfig) -> String {
    match Footprint::of(c) {
        Err(UNetError::Config(m)) => m,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn absurd_sizes_are_refused_by_the_hard_limits() {
    let base = UNetConfig::mnist();
    let c = UNetConfig { ch: 100_000, groups: 8, ..base.clone() };
    assert!(config_error(&c).contains("ch 100000 is above the limit of 8192"), "{}", config_error(&c));
    let c = UNetConfig { num_res_blocks: 100_000, ..base.clone() };
    assert!(config_error(&c).contains("num_res_blocks 100000 is above the limit"));
    let c = UNetConfig { image_size: 100_000, attn_resolutions: vec![], ..base.clone() };
    assert!(config_error(&c).contains("image_size 100000 is above the limit"));
    let c = UNetConfig { ch_mult: vec![1; 9], image_size: 256, attn_resolutions: vec![], ..base.clone() };
    assert!(config_error(&c).contains("levels"));
    let c = UNetConfig { ch_mult: vec![1, usize::MAX], ..base.clone() };
    assert!(config_error(&c).contains("above the limit"));
    let c = UNetConfig { in_ch: 1000, ..base };
    assert!(config_error(&c).contains("in_ch 1000"));
}

#[test]
fn the_largest_allowed_config_is_counted_without_overflow_or_allocation() {
    let c = UNetConfig {
        in_ch: limits::MAX_IN_CH,
        ch: limits::MAX_CHANNELS,
        ch_mult: vec![1; limits::MAX_LEVELS],
        num_res_blocks: limits::MAX_RES_BLOCKS,
        attn_resolutions: vec![limits::MAX_IMAGE_SIZE],
        dropout: 0.0,
        groups: 32,
        image_size: limits::MAX_IMAGE_SIZE,
        num_classes: limits::MAX_CLASSES,
    };
    let fp = Footprint::of(&c).unwrap();
    // About 1.8e11 parameters (more than 700 GB of weights): counted, not built.
    assert!(fp.params > 100_000_000_000, "{}", fp.params);
    assert!(fp.training_activation_bytes(usize::MAX, usize::MAX) == u64::MAX);
}

/// KERNELS.md's occupancy table assumes each preset's attention width
/// (`gpu::occupancy::PRESET_ATTENTION_CHANNELS`): every attention block of
/// the preset, the middle one included, has that many channels.
#[test]
fn occupancy_table_knows_each_presets_attention_channels() {
    use diffuse_tensor::gpu::occupancy::PRESET_ATTENTION_CHANNELS;
    for (name, c) in PRESET_ATTENTION_CHANNELS {
        let cfg = diffuse_unet::UNetConfig::preset(name).unwrap();
        let res = cfg.resolutions();
        let mut widths: Vec<usize> = (0..res.len())
            .filter(|&i| cfg.attn_resolutions.contains(&res[i]))
            .map(|i| cfg.ch * cfg.ch_mult[i])
            .collect();
        widths.push(cfg.ch * cfg.ch_mult.last().unwrap()); // the middle block
        assert!(widths.iter().all(|&w| w == c), "{name}: attention widths {widths:?}, the table assumes {c}");
    }
}
