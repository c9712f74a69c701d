//! Frozen parameters and LoRA adapters: a backward that skips frozen work
//! gives the trainable tensors exactly the gradients of a full backward, and
//! the adapters' hand-written backward matches finite differences in f64.

use diffuse_tensor::{ops, DType, Device, Tensor};
use diffuse_unet::layers::{ForwardMode, LoraPlan};
use diffuse_unet::{UNet, UNetConfig};

/// Every weight random (none of the zero or near-zero inits), so every
/// gradient is non-trivial; adapters included.
fn randomise(m: &mut UNet, dtype: DType) {
    let ids: Vec<_> = m.params.ids().collect();
    for (k, id) in ids.into_iter().enumerate() {
        let dims = m.params.value(id).dims().to_vec();
        let v = Tensor::randn(dims.clone(), 11, k as u32, DType::F64, &Device::Cpu).unwrap();
        let fan = if dims.len() > 1 { dims[1..].iter().product::<usize>() } else { 1 } as f64;
        let mut t = ops::scale(&v, if dims.len() > 1 { 1.0 / fan.sqrt() } else { 0.3 }).unwrap();
        let name = m.params.name(id);
        if name.contains("norm") && name.ends_with(".weight") {
            t = ops::add(&t, &Tensor::full(dims, 1.0, DType::F64, &Device::Cpu).unwrap()).unwrap();
        }
        m.params.set(id, t.to_dtype(dtype).unwrap()).unwrap();
    }
}

fn config(dropout: f32) -> UNetConfig {
    UNetConfig { dropout, ..UNetConfig::tiny() }
}

fn inputs(dtype: DType) -> (Tensor, Tensor, Tensor) {
    let x = Tensor::randn([3, 1, 8, 8], 5, 0, dtype, &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![3.0f64, 731.0, 402.0], [3]).unwrap().to_dtype(dtype).unwrap();
    let r = Tensor::randn([3, 1, 8, 8], 5, 1, dtype, &Device::Cpu).unwrap();
    (x, t, r)
}

fn freeze_where(m: &mut UNet, frozen: &dyn Fn(&str) -> bool) {
    let ids: Vec<_> = m.params.ids().collect();
    for id in ids {
        let f = frozen(m.params.name(id));
        m.params.set_trainable(id, !f);
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32().unwrap().into_iter().map(f32::to_bits).collect()
}

#[test]
fn trainable_gradients_are_those_of_a_full_backward_to_the_bit() {
    type Rule = (&'static str, fn(&str) -> bool);
    let rules: [Rule; 7] = [
        ("time embedding frozen", |n| n.starts_with("temb_")),
        ("train only up.0", |n| !n.starts_with("up.0.")),
        ("train only the output layers", |n| !(n.starts_with("norm_out") || n.starts_with("conv_out"))),
        ("norms frozen", |n| n.contains("norm")),
        ("down path, conv_in and time embedding frozen", |n| {
            n.starts_with("down.") || n.starts_with("conv_in") || n.starts_with("temb_")
        }),
        ("train only the time embedding", |n| !n.starts_with("temb_")),
        ("attention and temb_proj frozen", |n| n.contains("attn") || n.contains("temb_proj")),
    ];
    let (x, t, r) = inputs(DType::F32);
    let mode = ForwardMode::train(9, 4);
    let mut full = UNet::new(config(0.1), 3, DType::F32, &Device::Cpu).unwrap();
    randomise(&mut full, DType::F32);
    let (_, cache) = full.forward_train(&x, &t, mode).unwrap();
    full.backward(&cache, &r).unwrap();
    for (what, frozen) in rules {
        let mut m = UNet::new(config(0.1), 3, DType::F32, &Device::Cpu).unwrap();
        randomise(&mut m, DType::F32);
        freeze_where(&mut m, &frozen);
        let (_, cache) = m.forward_train(&x, &t, mode).unwrap();
        m.backward(&cache, &r).unwrap();
        let mut trained = 0;
        for id in m.params.ids() {
            let name = m.params.name(id);
            match (frozen(name), m.params.grad(id)) {
                (true, None) => {}
                (true, Some(_)) => panic!("{what}: frozen {name} got a gradient"),
                (false, None) => panic!("{what}: trainable {name} got no gradient"),
                (false, Some(g)) => {
                    let want = full.params.grad(full.params.id(name).unwrap()).unwrap();
                    assert_eq!(bits(g), bits(want), "{what}: {name}");
                    trained += 1;
                }
            }
        }
        assert!(trained > 0, "{what}");
    }
}

fn every_conv(_: &str) -> bool {
    true
}

fn lora_model(dtype: DType, alpha: f64) -> UNet {
    let plan = LoraPlan { rank: 3, alpha, targets: &every_conv };
    UNet::with_lora(config(0.0), 3, dtype, &Device::Cpu, plan).unwrap()
}

#[test]
fn fresh_adapters_change_neither_the_base_init_nor_the_output() {
    let plain = UNet::new(config(0.0), 3, DType::F32, &Device::Cpu).unwrap();
    let mut lora = lora_model(DType::F32, 6.0);
    for (name, v) in plain.params.iter() {
        let id = lora.params.id(name).unwrap();
        assert_eq!(bits(lora.params.value(id)), bits(v), "{name}");
        assert!(!lora.params.is_adapter(id));
    }
    let adapters: Vec<_> = lora.params.ids().filter(|&id| lora.params.is_adapter(id)).collect();
    // Every conv of the tiny model gets A and B.
    let convs = plain.params.iter().filter(|(_, v)| v.dims().len() == 4).count();
    assert_eq!(adapters.len(), 2 * convs);
    for &id in &adapters {
        let name = lora.params.name(id).to_string();
        let v = lora.params.value(id).to_vec_f32().unwrap();
        if name.ends_with("lora_B.weight") {
            assert!(v.iter().all(|&x| x == 0.0), "{name} starts at zero");
        } else {
            // Kaiming-uniform: bound 1/sqrt(fan_in), and not all zero.
            let dims = lora.params.value(id).dims().to_vec();
            let bound = 1.0 / ((dims[1] * dims[2] * dims[3]) as f32).sqrt();
            assert!(v.iter().all(|x| x.abs() <= bound) && v.iter().any(|&x| x != 0.0), "{name}");
        }
    }
    // Base weights random, adapters fresh: the output is the base's, bit for bit.
    let mut plain = plain;
    randomise(&mut plain, DType::F32);
    let ids: Vec<_> = lora.params.ids().filter(|&id| !lora.params.is_adapter(id)).collect();
    for id in ids {
        let v = plain.params.value(plain.params.id(lora.params.name(id)).unwrap()).clone();
        lora.params.set(id, v).unwrap();
    }
    let (x, t, _) = inputs(DType::F32);
    assert_eq!(bits(&lora.forward(&x, &t).unwrap()), bits(&plain.forward(&x, &t).unwrap()));
}

/// d<out, r>/d(one coordinate of every tensor) by central differences.
fn finite_difference_check(m: &mut UNet, x: &Tensor, t: &Tensor, r: &Tensor, only: &dyn Fn(&str) -> bool) -> f64 {
    let (_, cache) = m.forward_train(x, t, ForwardMode::train(0, 0)).unwrap();
    m.backward(&cache, r).unwrap();
    let loss = |m: &UNet| -> f64 {
        let y = m.forward(x, t).unwrap().to_vec_f64().unwrap();
        y.iter().zip(r.to_vec_f64().unwrap()).map(|(a, b)| a * b).sum()
    };
    let ids: Vec<_> = m.params.ids().filter(|&id| only(m.params.name(id))).collect();
    let (mut num, mut den) = (0.0, 0.0);
    for (k, id) in ids.into_iter().enumerate() {
        let dims = m.params.value(id).dims().to_vec();
        let orig = m.params.value(id).to_vec_f64().unwrap();
        // Two coordinates of every tensor, chosen by fixed strides.
        for i in [(k * 7919 + 13) % orig.len(), (k * 104_729 + 5) % orig.len()] {
            let g = m.params.grad(id).unwrap().to_vec_f64().unwrap()[i];
            let h = 1e-5;
            let mut at = |delta: f64| {
                let mut v = orig.clone();
                v[i] += delta;
                m.params.set(id, Tensor::from_vec(v, dims.clone()).unwrap()).unwrap();
                loss(m)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            num += (g - fd) * (g - fd);
            den += fd * fd;
        }
        m.params.set(id, Tensor::from_vec(orig, dims.clone()).unwrap()).unwrap();
    }
    (num / den).sqrt()
}

#[test]
fn lora_gradients_match_finite_differences_in_f64() {
    let (x, t, r) = inputs(DType::F64);
    // Base frozen (the LoRA setting): adapters on every conv, including the
    // strided downsample, the 3x3s, the 1x1 attention projections and
    // shortcuts, and conv_in (whose adapter needs no dx).
    let mut m = lora_model(DType::F64, 6.0);
    randomise(&mut m, DType::F64);
    let ids: Vec<_> = m.params.ids().collect();
    for id in ids {
        let adapter = m.params.is_adapter(id);
        m.params.set_trainable(id, adapter);
    }
    let err = finite_difference_check(&mut m, &x, &t, &r, &|n| n.contains(".lora_"));
    println!("LoRA adapters (base frozen) vs finite differences: rel err {err:.3e}");
    assert!(err < 1e-6, "rel err {err:.3e}");
    // Everything trainable: the base's gradients include the adapters' dx.
    let mut m = lora_model(DType::F64, 2.0);
    randomise(&mut m, DType::F64);
    let err = finite_difference_check(&mut m, &x, &t, &r, &|_| true);
    println!("LoRA model, every tensor trainable, vs finite differences: rel err {err:.3e}");
    assert!(err < 1e-6, "rel err {err:.3e}");
}
