//! A whole U-Net training step on every device: the PyTorch test vector of
//! the tiny model (forward output, loss and every parameter gradient to
//! 1e-4), and a forward + backward of the tiny model with dropout 0.1
//! against the same step on the CPU (Philox masks are the same on every
//! device), every gradient to 1e-4 relative; and a LoRA step with the base
//! frozen (adapters on every conv): frozen tensors get no gradient, adapter
//! gradients match the CPU to 1e-4; and the min-SNR weighted loss and its
//! gradient against the CPU in f64.
//!
//! The mnist test vector is left out here: on the emulator it is too slow
//! for this suite (the CPU suite checks it).

mod common;

use common::*;
use diffuse_tensor::{ops, DType, Device, Precision, Tensor};
use diffuse_trainer::loss_weighting::weighted_mse;
use diffuse_unet::verify::{step_tolerance, verify_step, verify_step_with};
use diffuse_unet::{ForwardMode, UNet, UNetConfig};

const TOL: f64 = 1e-4;

fn tiny_test_vector_step(dut: &DeviceUnderTest) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/testvectors/unet_tiny_step.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let mut r = Report::new("training", dut);
    let e = verify_step(&bytes, &dut.device, DType::F32).unwrap();
    log(&format!(
        "per-device training on {}: tiny test vector: output {:.2e}, loss {:.2e}, worst grad {:.2e} ({}), {} params",
        dut.label, e.output, e.loss, e.worst_grad, e.worst_grad_name, e.params
    ));
    r.check_scalar("verify_step (tiny) max error", "unet_tiny_step", e.max(), 0.0, TOL);
    assert!(e.max() < TOL, "tiny test vector on {}: {e:?}", dut.label);
}

per_device!(tiny_test_vector_step, tiny_test_vector_step_cpu, tiny_test_vector_step_emu, tiny_test_vector_step_cuda);

/// The tiny step with the convolutions' and linear layers' GEMM inputs
/// rounded to tf32 and bf16 (tensor cores on a GPU, the rounding reference
/// on the CPU) against PyTorch's f64 step: within `step_tolerance` (32 unit
/// roundoffs), and visibly rounded (above fp32's error), so the reduced
/// path did run.
fn tiny_test_vector_step_reduced_precision(dut: &DeviceUnderTest) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/testvectors/unet_tiny_step.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let mut r = Report::new("training", dut);
    for p in [Precision::Tf32, Precision::Bf16] {
        let e = verify_step_with(&bytes, &dut.device, DType::F32, p).unwrap();
        let bound = step_tolerance(p);
        log(&format!(
            "per-device training on {} at {p}: tiny test vector: output {:.2e}, loss {:.2e}, worst grad {:.2e} ({}), \
             bound {bound:.2e}",
            dut.label, e.output, e.loss, e.worst_grad, e.worst_grad_name
        ));
        r.check_scalar(&format!("verify_step (tiny, {p}) max error"), "unet_tiny_step", e.max(), 0.0, bound);
        assert!(e.max() < bound, "tiny test vector at {p} on {}: {e:?}", dut.label);
        assert!(e.max() > 0.05 * p.input_unit_roundoff(), "no rounding visible at {p} on {}: {e:?}", dut.label);
    }
}

per_device!(
    tiny_test_vector_step_reduced_precision,
    tiny_test_vector_step_reduced_precision_cpu,
    tiny_test_vector_step_reduced_precision_emu,
    tiny_test_vector_step_reduced_precision_cuda
);

/// The class-conditional tiny step (PyTorch vector with labels) on every device.
fn tiny_conditional_test_vector_step(dut: &DeviceUnderTest) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/testvectors/unet_tiny_cond_step.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let mut r = Report::new("training", dut);
    let e = verify_step(&bytes, &dut.device, DType::F32).unwrap();
    log(&format!(
        "per-device training on {}: tiny conditional vector: output {:.2e}, loss {:.2e}, worst grad {:.2e} ({})",
        dut.label, e.output, e.loss, e.worst_grad, e.worst_grad_name
    ));
    r.check_scalar("verify_step (tiny conditional) max error", "unet_tiny_cond_step", e.max(), 0.0, TOL);
    assert!(e.max() < TOL, "tiny conditional vector on {}: {e:?}", dut.label);
}

per_device!(
    tiny_conditional_test_vector_step,
    tiny_conditional_test_vector_step_cpu,
    tiny_conditional_test_vector_step_emu,
    tiny_conditional_test_vector_step_cuda
);

/// One training forward + backward: (eps prediction, loss, grads by name).
fn train_step(device: &Device, x: &Tensor, t: &Tensor, noise: &Tensor) -> (Tensor, Tensor, Vec<(String, Tensor)>) {
    let config = UNetConfig { dropout: 0.1, ..UNetConfig::tiny() };
    let mut model = UNet::new(config, 5, DType::F32, device).unwrap();
    let (x, t, noise) = (on(x, device), on(t, device), on(noise, device));
    let (eps, cache) = model.forward_train(&x, &t, ForwardMode::train(1234, 17)).unwrap();
    let loss = ops::mse_loss_forward(&eps, &noise).unwrap();
    let deps = ops::mse_loss_backward(&eps, &noise, 1.0).unwrap();
    model.params.zero_grads();
    model.backward(&cache, &deps).unwrap();
    let grads = model
        .params
        .ids()
        .map(|id| {
            let name = model.params.name(id).to_string();
            let g = model.params.grad(id).unwrap_or_else(|| panic!("{name}: no gradient")).clone();
            (name, g)
        })
        .collect();
    (eps, loss, grads)
}
fn tiny_unet_step_with_dropout(dut: &DeviceUnderTest) {
    let mut rng = TensorRng::new(151);
    let x = rng.tensor(&[3, 1, 8, 8]);
    let t = Tensor::from_vec(vec![0f32, 517.0, 999.0], [3]).unwrap();
    let noise = rng.tensor_in(&[3, 1, 8, 8], -2.0, 2.0);
    let (eps, loss, grads) = train_step(&Device::Cpu, &x, &t, &noise);
    // (dropout_changes_the_tiny_unet_step checks that the masks are applied)
    let mut r = Report::new("training", dut);
    let (eps_g, loss_g, grads_g) = train_step(&dut.device, &x, &t, &noise);
    r.check("unet forward (dropout 0.1) eps", "tiny, batch 3", &eps_g, &eps, TOL);
    r.check("unet loss", "tiny, batch 3", &loss_g, &loss, TOL);
    assert_eq!(grads.len(), grads_g.len());
    // analytically zero gradients (attention's key bias) are measured
    // against the whole model's gradient norm, as verify_step does
    let total = grads.iter().map(|(_, g)| norm_f32(&g.to_vec_f32().unwrap()).powi(2)).sum::<f64>().sqrt();
    for ((name, g), (name_g, gg)) in grads.iter().zip(&grads_g) {
        assert_eq!(name, name_g);
        r.check_floor("unet backward (every param grad)", name, gg, g, TOL, 1e-4 * total);
    }
}

per_device!(
    tiny_unet_step_with_dropout,
    tiny_unet_step_with_dropout_cpu,
    tiny_unet_step_with_dropout_emu,
    tiny_unet_step_with_dropout_cuda
);

fn dropout_changes_the_tiny_unet_step(dut: &DeviceUnderTest) {
    // guards the test above: with dropout 0.1 the training output differs
    // from inference (masks are really applied)
    let mut rng = TensorRng::new(152);
    let x = rng.tensor(&[1, 1, 8, 8]);
    let t = Tensor::from_vec(vec![250f32], [1]).unwrap();
    let config = UNetConfig { dropout: 0.1, ..UNetConfig::tiny() };
    let device = &dut.device;
    let model = UNet::new(config, 5, DType::F32, device).unwrap();
    let (xd, td) = (on(&x, device), on(&t, device));
    let train = model.forward_train(&xd, &td, ForwardMode::train(1234, 17)).unwrap().0;
    let infer = model.forward(&xd, &td).unwrap();
    assert_ne!(train.to_vec_f32().unwrap(), infer.to_vec_f32().unwrap(), "dropout had no effect on {}", dut.label);
}

per_device!(
    dropout_changes_the_tiny_unet_step,
    dropout_changes_the_tiny_unet_step_cpu,
    dropout_changes_the_tiny_unet_step_emu,
    dropout_changes_the_tiny_unet_step_cuda
);

/// One LoRA fine-tuning step (issue 21): adapters on every conv of the tiny
/// model, the base frozen, the B matrices randomised so that every adapter
/// gets a non-zero gradient. Returns eps, the loss and each parameter's
/// gradient (None where the backward skipped it).
type NamedGrads = Vec<(String, Option<Tensor>)>;

fn lora_step(device: &Device, x: &Tensor, t: &Tensor, noise: &Tensor) -> (Tensor, Tensor, NamedGrads) {
    let every_conv = |_: &str| true;
    let plan = diffuse_unet::layers::LoraPlan { rank: 3, alpha: 6.0, targets: &every_conv };
    let mut model = UNet::with_lora(UNetConfig::tiny(), 5, DType::F32, device, plan).unwrap();
    let mut rng = TensorRng::new(153);
    let ids: Vec<_> = model.params.ids().collect();
    for id in ids {
        let adapter = model.params.is_adapter(id);
        model.params.set_trainable(id, adapter);
        if model.params.name(id).ends_with("lora_B.weight") {
            let dims = model.params.value(id).dims().to_vec();
            model.params.set(id, on(&rng.tensor_in(&dims, -0.1, 0.1), device)).unwrap();
        }
    }
    let (x, t, noise) = (on(x, device), on(t, device), on(noise, device));
    let (eps, cache) = model.forward_train(&x, &t, ForwardMode::train(1234, 17)).unwrap();
    let loss = ops::mse_loss_forward(&eps, &noise).unwrap();
    let deps = ops::mse_loss_backward(&eps, &noise, 1.0).unwrap();
    model.params.zero_grads();
    model.backward(&cache, &deps).unwrap();
    let grads =
        model.params.ids().map(|id| (model.params.name(id).to_string(), model.params.grad(id).cloned())).collect();
    (eps, loss, grads)
}

fn tiny_lora_step_with_frozen_base(dut: &DeviceUnderTest) {
    let mut rng = TensorRng::new(154);
    let x = rng.tensor(&[2, 1, 8, 8]);
    let t = Tensor::from_vec(vec![3f32, 640.0], [2]).unwrap();
    let noise = rng.tensor_in(&[2, 1, 8, 8], -2.0, 2.0);
    let (eps, loss, grads) = lora_step(&Device::Cpu, &x, &t, &noise);
    let mut r = Report::new("training", dut);
    let (eps_g, loss_g, grads_g) = lora_step(&dut.device, &x, &t, &noise);
    r.check("LoRA unet forward eps", "tiny, batch 2", &eps_g, &eps, TOL);
    r.check("LoRA unet loss", "tiny, batch 2", &loss_g, &loss, TOL);
    let total = grads
        .iter()
        .filter_map(|(_, g)| g.as_ref())
        .map(|g| norm_f32(&g.to_vec_f32().unwrap()).powi(2))
        .sum::<f64>()
        .sqrt();
    let mut adapters = 0;
    for ((name, g), (name_g, gg)) in grads.iter().zip(&grads_g) {
        assert_eq!(name, name_g);
        let is_adapter = name.contains("lora_");
        match (g, gg) {
            (Some(g), Some(gg)) if is_adapter => {
                assert!(norm_f32(&g.to_vec_f32().unwrap()) > 0.0, "{name}: zero gradient on the CPU");
                r.check_floor("LoRA backward (adapter grads)", name, gg, g, TOL, 1e-4 * total);
                adapters += 1;
            }
            (None, None) if !is_adapter => {}
            _ => panic!(
                "{name}: gradient presence differs or a frozen tensor got one (cpu {}, {} {})",
                g.is_some(),
                dut.label,
                gg.is_some()
            ),
        }
    }
    assert!(adapters > 0);
}

per_device!(
    tiny_lora_step_with_frozen_base,
    tiny_lora_step_with_frozen_base_cpu,
    tiny_lora_step_with_frozen_base_emu,
    tiny_lora_step_with_frozen_base_cuda
);

/// The per-image weighted loss of training (`--loss-weighting`) and its
/// gradient on this device against the CPU in f64.
fn weighted_loss(dut: &DeviceUnderTest) {
    let pred = Tensor::randn([3, 2, 5, 7], 1, 0, DType::F32, &Device::Cpu).unwrap();
    let target = Tensor::randn([3, 2, 5, 7], 2, 0, DType::F32, &Device::Cpu).unwrap();
    let w = [0.3, 1.7, 0.05];
    let f64_of = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let (want, want_g) = weighted_mse(&f64_of(&pred), &f64_of(&target), Some(&w), 0.5).unwrap();
    let (l, g) = weighted_mse(&on(&pred, &dut.device), &on(&target, &dut.device), Some(&w), 0.5).unwrap();
    let (l, want) = (l.scalar_f64().unwrap(), want.scalar_f64().unwrap());
    assert!((l - want).abs() < 1e-6 * want, "{}: loss {l} vs {want}", dut.label);
    let (g, want_g) = (g.to_vec_f64().unwrap(), want_g.to_vec_f64().unwrap());
    let scale = want_g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (a, b) in g.iter().zip(&want_g) {
        assert!((a - b).abs() < 1e-6 * scale, "{}: gradient {a} vs {b}", dut.label);
    }
}

per_device!(weighted_loss, weighted_loss_cpu, weighted_loss_emu, weighted_loss_cuda);

/// bf16 activation storage (issue 13): a bf16 training step with the
/// convolutions' bf16-only inputs kept in bf16 gives the same bits (output,
/// loss, every gradient) as with them kept in f32, and its cache is smaller
/// by exactly half of what those tensors took in f32. On the CPU the
/// setting changes nothing (no bf16 storage; the CPU rebuilds them anyway).
fn bf16_activations_change_memory_not_bits(dut: &DeviceUnderTest) {
    let device = &dut.device;
    let mut rng = TensorRng::new(152);
    let x = on(&rng.tensor(&[2, 1, 8, 8]), device);
    let t = on(&Tensor::from_vec(vec![3f32, 811.0], [2]).unwrap(), device);
    let noise = on(&rng.tensor_in(&[2, 1, 8, 8], -2.0, 2.0), device);
    let run = |keep: bool| {
        let config = UNetConfig { dropout: 0.1, ..UNetConfig::tiny() };
        let mut model = UNet::new(config, 5, DType::F32, device).unwrap();
        model.params.set_precision(Precision::Bf16);
        model.params.set_bf16_activations(keep);
        let (eps, cache) = model.forward_train(&x, &t, ForwardMode::train(99, 4)).unwrap();
        let loss = ops::mse_loss_forward(&eps, &noise).unwrap();
        model.params.zero_grads();
        model.backward(&cache, &ops::mse_loss_backward(&eps, &noise, 1.0).unwrap()).unwrap();
        let mut all = vec![eps.to_vec_f32().unwrap(), loss.to_vec_f32().unwrap()];
        all.extend(model.params.ids().map(|id| model.params.grad(id).unwrap().to_vec_f32().unwrap()));
        (all, cache.bytes(), cache.bytes_of(DType::BF16))
    };
    let (on_bits, on_bytes, bf16_bytes) = run(true);
    let (off_bits, off_bytes, off_bf16) = run(false);
    assert_eq!(off_bf16, 0, "bf16 tensors in the cache with bf16 activations off");
    for (i, (a, b)) in on_bits.iter().zip(&off_bits).enumerate() {
        assert!(
            a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "output {i} (0 eps, 1 loss, then the gradients) differs with bf16 activations on {}",
            dut.label
        );
    }
    if dut.is_cpu() {
        assert_eq!((bf16_bytes, on_bytes), (0, off_bytes), "the CPU cache changed");
        log("bf16 activations on the CPU: no bf16 storage, the same cache and bits");
        return;
    }
    assert!(bf16_bytes > 0, "no activation was kept in bf16 on {}", dut.label);
    // each bf16 tensor took twice its bytes in f32
    assert_eq!(off_bytes - on_bytes, bf16_bytes, "cache {off_bytes} -> {on_bytes} bytes, bf16 part {bf16_bytes}");
    log(&format!(
        "bf16 activations on {}: the same bits; training cache {off_bytes} -> {on_bytes} bytes ({:.1}% less)",
        dut.label,
        100.0 * (off_bytes - on_bytes) as f64 / off_bytes as f64
    ));
}

per_device!(
    bf16_activations_change_memory_not_bits,
    bf16_activations_change_memory_not_bits_cpu,
    bf16_activations_change_memory_not_bits_emu,
    bf16_activations_change_memory_not_bits_cuda
);
