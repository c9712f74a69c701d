//! A whole DDPM training step (forward, backward, AdamW) and one sampling
//! step (forward only) of the U-Net on the CPU, the figures PyTorch's
//! ../shared/reference/train_step.py reports for the same configs.

use criterion::{criterion_group, criterion_main, Criterion};
use diffuse_tensor::ops::{self, AdamWParams};
use diffuse_tensor::{DType, Device, Tensor};
use diffuse_unet::{ForwardMode, UNet, UNetConfig};
use std::time::Duration;

fn inputs(cfg: &UNetConfig, batch: usize) -> (Tensor, Tensor, Tensor) {
    let s = cfg.image_size;
    let x = Tensor::randn([batch, cfg.in_ch, s, s], 1, 0, DType::F32, &Device::Cpu).unwrap();
    let noise = Tensor::randn([batch, cfg.in_ch, s, s], 1, 1, DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::from_vec((0..batch).map(|i| (i * 997 % 1000) as f32).collect::<Vec<_>>(), [batch]).unwrap();
    (x, t, noise)
}

fn bench_config(c: &mut Criterion, name: &str, cfg: UNetConfig, batch: usize) {
    let mut model = UNet::new(cfg.clone(), 0, DType::F32, &Device::Cpu).unwrap();
    let (x, t, noise) = inputs(&cfg, batch);
    let hyper = AdamWParams { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let mut m: Vec<Tensor> =
        model.params.iter().map(|(_, p)| Tensor::zeros(p.dims().to_vec(), DType::F32, &Device::Cpu).unwrap()).collect();
    let mut v = m.clone();
    let mut step = 0u64;
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(15));
    g.bench_function(format!("training step B{batch}"), |b| {
        b.iter(|| {
            let (y, cache) = model.forward_train(&x, &t, ForwardMode::train(0, step as u32)).unwrap();
            let dy = ops::mse_loss_backward(&y, &noise, 1.0).unwrap();
            model.params.zero_grads();
            model.backward(&cache, &dy).unwrap();
            step += 1;
            let ids: Vec<_> = model.params.ids().collect();
            for (k, id) in ids.into_iter().enumerate() {
                let (p, grad) = model.params.value_and_grad_mut(id);
                ops::adamw_step(p, grad.unwrap(), &mut m[k], &mut v[k], &hyper, step).unwrap();
            }
        })
    });
    g.bench_function(format!("sampling step B{batch}"), |b| b.iter(|| model.forward(&x, &t).unwrap()));
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_config(c, "unet mnist", UNetConfig::mnist(), 64);
    bench_config(c, "unet cifar10", UNetConfig::cifar10(), 8);
}

criterion_group!(train_step, benches);
criterion_main!(train_step);
