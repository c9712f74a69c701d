//! Whole-model checks: parameter counts and names of the presets, config
//! validation, a float64 finite-difference check of every parameter tensor
//! of the tiny model, inference = training forward, and gradient
//! accumulation.

use diffuse_tensor::{ops, DType, Device, Tensor};
use diffuse_unet::{ForwardMode, UNet, UNetConfig};

fn count(cfg: UNetConfig) -> usize {
    UNet::new(cfg, 0, DType::F32, &Device::Cpu).unwrap().num_params()
}

#[test]
fn preset_parameter_counts_match_pytorch() {
    assert_eq!(count(UNetConfig::tiny()), 176_849);
    assert_eq!(count(UNetConfig::mnist()), 1_623_169);
    assert_eq!(count(UNetConfig::cifar10()), 35_746_307);
}

#[test]
fn parameter_names_follow_pytorch_state_dict() {
    let m = UNet::new(UNetConfig::mnist(), 0, DType::F32, &Device::Cpu).unwrap();
    for name in [
        "temb_dense0.weight",
        "conv_in.bias",
        "down.0.blocks.1.conv1.weight",
        "down.0.downsample.conv.weight",
        "down.1.blocks.0.nin_shortcut.weight",
        "down.2.attns.1.q.weight",
        "mid_attn.proj_out.bias",
        "mid_block2.temb_proj.weight",
        "up.0.blocks.2.norm2.bias",
        "up.2.upsample.conv.weight",
        "norm_out.weight",
        "conv_out.bias",
    ] {
        assert!(m.params.id(name).is_some(), "missing {name}");
    }
    assert!(m.params.id("down.2.downsample.conv.weight").is_none());
    assert!(m.params.id("up.0.upsample.conv.weight").is_none());
}

#[test]
fn config_validation_gives_clear_errors() {
    let mut c = UNetConfig::mnist();
    c.groups = 7;
    let e = UNet::new(c, 0, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("groups 7 does not divide"), "{e}");
    let mut c = UNetConfig::mnist();
    c.image_size = 26; // 26 -> 13 -> 7: 13 cannot be halved for the skip to line up
    let e = UNet::new(c, 0, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("cannot be halved"), "{e}");
    let mut c = UNetConfig::mnist();
    c.attn_resolutions = vec![5];
    assert!(UNet::new(c, 0, DType::F32, &Device::Cpu).is_err());
    let mut c = UNetConfig::mnist();
    c.ch_mult = vec![];
    assert!(UNet::new(c, 0, DType::F32, &Device::Cpu).is_err());
}

#[test]
fn wrong_input_shape_is_an_error() {
    let m = UNet::new(UNetConfig::tiny(), 0, DType::F32, &Device::Cpu).unwrap();
    let x = Tensor::zeros([2, 1, 9, 9], DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::zeros([2], DType::F32, &Device::Cpu).unwrap();
    assert!(m.forward(&x, &t).is_err());
    let x = Tensor::zeros([2, 1, 8, 8], DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::zeros([3], DType::F32, &Device::Cpu).unwrap();
    assert!(m.forward(&x, &t).is_err());
}

/// A tiny model with every weight random (none of the near-zero inits), so
/// every gradient is non-trivial.
fn random_model(dtype: DType, dropout: f32) -> UNet {
    let mut cfg = UNetConfig::tiny();
    cfg.dropout = dropout;
    let mut m = UNet::new(cfg, 3, dtype, &Device::Cpu).unwrap();
    let ids: Vec<_> = m.params.ids().collect();
    for (k, id) in ids.into_iter().enumerate() {
        let dims = m.params.value(id).dims().to_vec();
        let v = Tensor::randn(dims.clone(), 11, k as u32, DType::F64, &Device::Cpu).unwrap();
        let fan = if dims.len() > 1 { dims[1..].iter().product::<usize>() } else { 1 } as f64;
        let scaled = ops::scale(&v, if dims.len() > 1 { 1.0 / fan.sqrt() } else { 0.3 }).unwrap();
        let shifted = if m.params.name(id).ends_with("norm1.weight") || m.params.name(id).ends_with("norm2.weight") {
            ops::add(&scaled, &Tensor::full(dims, 1.0, DType::F64, &Device::Cpu).unwrap()).unwrap()
        } else {
            scaled
        };
        m.params.set(id, shifted).unwrap();
    }
    m
}

fn inputs(dtype: DType) -> (Tensor, Tensor, Tensor) {
    let x = Tensor::randn([2, 1, 8, 8], 5, 0, dtype, &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![3.0f64, 731.0], [2]).unwrap().to_dtype(dtype).unwrap();
    let r = Tensor::randn([2, 1, 8, 8], 5, 1, dtype, &Device::Cpu).unwrap();
    (x, t, r)
}

/// The backward against central finite differences of the training forward
/// (same seed and step, so the same dropout masks), one coordinate of every
/// parameter tensor; returns the relative error.
fn gradients_vs_finite_differences(dropout: f32) -> f64 {
    let mut m = random_model(DType::F64, dropout);
    let (x, t, r) = inputs(DType::F64);
    let mode = ForwardMode::train(4, 9);
    let (_, cache) = m.forward_train(&x, &t, mode).unwrap();
    m.backward(&cache, &r).unwrap();
    let loss = |m: &UNet| -> f64 {
        let y = m.forward_train(&x, &t, mode).unwrap().0.to_vec_f64().unwrap();
        y.iter().zip(r.to_vec_f64().unwrap()).map(|(a, b)| a * b).sum()
    };
    // One coordinate of every parameter tensor, chosen by a fixed stride.
    let ids: Vec<_> = m.params.ids().collect();
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for (k, id) in ids.into_iter().enumerate() {
        let n = m.params.value(id).numel();
        let i = (k * 7919 + 13) % n;
        let g = m.params.grad(id).unwrap().to_vec_f64().unwrap()[i];
        let orig = m.params.value(id).to_vec_f64().unwrap();
        let h = 1e-5;
        let mut plus = orig.clone();
        plus[i] += h;
        m.params.set(id, Tensor::from_vec(plus, m.params.value(id).dims().to_vec()).unwrap()).unwrap();
        let fp = loss(&m);
        let mut minus = orig.clone();
        minus[i] -= h;
        m.params.set(id, Tensor::from_vec(minus, m.params.value(id).dims().to_vec()).unwrap()).unwrap();
        let fm = loss(&m);
        m.params.set(id, Tensor::from_vec(orig, m.params.value(id).dims().to_vec()).unwrap()).unwrap();
        got.push(g);
        want.push((fp - fm) / (2.0 * h));
    }
    let num: f64 = got.iter().zip(&want).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
    let den: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
    println!(
        "tiny model, dropout {dropout}, {} parameter tensors: backward vs finite differences rel err {:.3e}",
        got.len(),
        num / den
    );
    num / den
}

#[test]
fn tiny_model_gradients_match_finite_differences_in_f64() {
    let err = gradients_vs_finite_differences(0.0);
    assert!(err < 1e-6, "rel err {err:.3e}");
}

#[test]
fn gradients_with_dropout_match_finite_differences() {
    // The CPU backward rebuilds each block's dropout mask from its Philox
    // coordinates instead of caching the masked activation: a mask drawn at
    // other coordinates would give other gradients.
    let err = gradients_vs_finite_differences(0.3);
    assert!(err < 1e-6, "rel err {err:.3e}");
}

#[test]
fn inference_forward_equals_training_forward_without_dropout() {
    let m = random_model(DType::F32, 0.0);
    let (x, t, _) = inputs(DType::F32);
    let a = m.forward(&x, &t).unwrap().to_vec_f32().unwrap();
    let (b, _) = m.forward_train(&x, &t, ForwardMode::train(1, 2)).unwrap();
    assert_eq!(a, b.to_vec_f32().unwrap());
}

#[test]
fn dropout_changes_training_forward_only_and_is_seeded() {
    let m = random_model(DType::F32, 0.3);
    let (x, t, _) = inputs(DType::F32);
    let inf = m.forward(&x, &t).unwrap().to_vec_f32().unwrap();
    let a = m.forward_train(&x, &t, ForwardMode::train(1, 2)).unwrap().0.to_vec_f32().unwrap();
    let b = m.forward_train(&x, &t, ForwardMode::train(1, 2)).unwrap().0.to_vec_f32().unwrap();
    let c = m.forward_train(&x, &t, ForwardMode::train(1, 3)).unwrap().0.to_vec_f32().unwrap();
    assert_eq!(a, b, "same seed and step give the same masks");
    assert_ne!(a, c, "another step draws other masks");
    assert_ne!(a, inf, "dropout is off at inference");
}

#[test]
fn gradients_accumulate_over_backward_passes() {
    let mut m = random_model(DType::F64, 0.0);
    let (x, t, r) = inputs(DType::F64);
    let (_, cache) = m.forward_train(&x, &t, ForwardMode::train(0, 0)).unwrap();
    m.backward(&cache, &r).unwrap();
    let once: Vec<Vec<f64>> = m.params.ids().map(|id| m.params.grad(id).unwrap().to_vec_f64().unwrap()).collect();
    m.backward(&cache, &r).unwrap();
    for (id, g1) in m.params.ids().zip(once) {
        let g2 = m.params.grad(id).unwrap().to_vec_f64().unwrap();
        for (a, b) in g2.iter().zip(&g1) {
            assert!((a - 2.0 * b).abs() <= 1e-12 * (1.0 + b.abs()));
        }
    }
}

#[test]
fn training_cache_of_mnist_batch_64_is_reported() {
    // The figure BENCHMARKS.md quotes; PyTorch's whole process peaks at 1.5 GB.
    let m = UNet::new(UNetConfig::mnist(), 0, DType::F32, &Device::Cpu).unwrap();
    let x = Tensor::randn([64, 1, 28, 28], 1, 0, DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::full([64], 500.0, DType::F32, &Device::Cpu).unwrap();
    let (_, cache) = m.forward_train(&x, &t, ForwardMode::train(0, 0)).unwrap();
    let mb = cache.bytes() as f64 / 1e6;
    println!("mnist preset, batch 64: training forward caches {mb:.1} MB of activations");
    assert!(mb < 1500.0);
}
