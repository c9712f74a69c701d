//! Backward pass of the mnist U-Net (batch 16, CPU) with everything
//! trainable, with frozen parts (whose skipped work is the speed-up), and
//! with LoRA adapters on a frozen base. Forward time is the same in each
//! setting (LoRA adds its small adapter convs), so only the backward is timed.
//!
//!     cargo bench --bench finetune_step

use criterion::{criterion_group, criterion_main, Criterion};
use diffuse_tensor::{DType, Device, Tensor};
use diffuse_unet::layers::LoraPlan;
use diffuse_unet::{ForwardMode, UNet, UNetConfig};
use std::time::Duration;

fn freeze(m: &mut UNet, frozen: &dyn Fn(&str) -> bool) {
    let ids: Vec<_> = m.params.ids().collect();
    for id in ids {
        let f = frozen(m.params.name(id));
        m.params.set_trainable(id, !f);
    }
}

fn attention_projection(layer: &str) -> bool {
    layer.contains("attn") && ["q", "k", "v", "proj_out"].iter().any(|p| layer.ends_with(&format!(".{p}")))
}

fn benches(c: &mut Criterion) {
    let cfg = UNetConfig::mnist();
    let batch = 16;
    let x = Tensor::randn([batch, 1, 28, 28], 1, 0, DType::F32, &Device::Cpu).unwrap();
    let dy = Tensor::randn([batch, 1, 28, 28], 1, 1, DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::from_vec((0..batch).map(|i| (i * 97 % 1000) as f32).collect::<Vec<_>>(), [batch]).unwrap();
    type Setting = (&'static str, fn(&str) -> bool);
    let settings: [Setting; 4] = [
        ("all trainable", |_| false),
        ("time embedding frozen", |n| n.starts_with("temb_")),
        ("down path + mid + conv_in + temb frozen", |n| {
            n.starts_with("down.") || n.starts_with("mid_") || n.starts_with("conv_in") || n.starts_with("temb_")
        }),
        ("train only up.0 + output", |n| !(n.starts_with("up.0.") || n.contains("_out"))),
    ];
    let mut g = c.benchmark_group("finetune backward mnist B16");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    for (name, frozen) in settings {
        let mut model = UNet::new(cfg.clone(), 0, DType::F32, &Device::Cpu).unwrap();
        freeze(&mut model, &frozen);
        let (_, cache) = model.forward_train(&x, &t, ForwardMode::train(0, 0)).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                model.params.zero_grads();
                model.backward(&cache, &dy).unwrap();
            })
        });
    }
    let plan = LoraPlan { rank: 4, alpha: 4.0, targets: &attention_projection };
    let mut model = UNet::with_lora(cfg, 0, DType::F32, &Device::Cpu, plan).unwrap();
    let ids: Vec<_> = model.params.ids().collect();
    for id in ids {
        let adapter = model.params.is_adapter(id);
        model.params.set_trainable(id, adapter);
    }
    let (_, cache) = model.forward_train(&x, &t, ForwardMode::train(0, 0)).unwrap();
    g.bench_function("LoRA r4 on attention, base frozen", |b| {
        b.iter(|| {
            model.params.zero_grads();
            model.backward(&cache, &dy).unwrap();
        })
    });
    g.finish();
}

criterion_group!(finetune_step, benches);
criterion_main!(finetune_step);
