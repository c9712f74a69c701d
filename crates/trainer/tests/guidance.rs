//! Classifier-free guidance and class-conditional sampling: guidance 0 is
//! the unconditional model and guidance 1 the conditional one (exactly);
//! any other w is out_u + w (out_c - out_u) of two separate forwards; the
//! emulator samples what the CPU samples; bad classes are errors.

use diffuse_tensor::{DType, Device, Tensor};
use diffuse_trainer::diffusion::{Diffusion, Schedule, Target};
use diffuse_trainer::guidance::{self, Conditioning};
use diffuse_trainer::noise_levels::Spacing;
use diffuse_trainer::sampler::{sample, SampleSpec, Sampler};
use diffuse_unet::{UNet, UNetConfig};

const CLASSES: usize = 4;

/// A tiny conditional model with random weights everywhere (a fresh one
/// has zero-initialised output convolutions, so labels would not show),
/// scaled as ../shared/reference/make_vectors.py does: N(0, 1/fan_in).
fn model(device: &Device) -> UNet {
    let mut m = UNet::new(UNetConfig::tiny().with_classes(CLASSES), 11, DType::F32, &Device::Cpu).unwrap();
    let ids: Vec<_> = m.params.ids().collect();
    for (k, id) in ids.into_iter().enumerate() {
        let dims = m.params.value(id).dims().to_vec();
        let fan: usize = if dims.len() > 1 { dims[1..].iter().product() } else { dims[0] };
        let std = if dims.len() > 1 { 1.0 / (fan as f64).sqrt() } else { 0.1 };
        let r = Tensor::randn(dims.clone(), 99, k as u32, DType::F32, &Device::Cpu).unwrap();
        let v: Vec<f32> = r.to_vec_f32().unwrap().iter().map(|&z| (z as f64 * std) as f32).collect();
        m.params.set(id, Tensor::from_vec(v, dims).unwrap()).unwrap();
    }
    m.params.convert(DType::F32, device).unwrap();
    m
}

fn input(n: usize) -> (Tensor, Tensor) {
    let x = Tensor::randn([n, 1, 8, 8], 5, 0, DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::from_vec((0..n).map(|i| (i * 97 % 1000) as f32).collect::<Vec<_>>(), [n]).unwrap();
    (x, t)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max)
}

#[test]
fn guided_prediction_is_the_affine_combination_of_both_branches() {
    let m = model(&Device::Cpu);
    let (x, t) = input(5);
    let labels = [0, 3, 1, 1, 2];
    let cond = m.forward_cond(&x, &t, Some(&labels)).unwrap().to_vec_f32().unwrap();
    let uncond = m.forward_cond(&x, &t, None).unwrap().to_vec_f32().unwrap();
    let spread = max_abs_diff(&cond, &uncond);
    assert!(spread > 1e-3, "labels must change the output for this test to mean anything ({spread})");
    for w in [-0.5, 0.3, 2.0, 4.0, 7.5] {
        let got = guidance::predict(&m, &x, &t, Conditioning { labels: Some(&labels), scale: w }).unwrap();
        let want: Vec<f32> =
            cond.iter().zip(&uncond).map(|(&c, &u)| (u as f64 + w * (c as f64 - u as f64)) as f32).collect();
        // Two f32 roundings of values of size ~|w| max(|c|, |u|), plus the
        // batched (2N) forward against two N forwards (the same math summed
        // in the same order per image; allow a few ulps of the outputs).
        let scale = cond.iter().chain(&uncond).map(|v| v.abs() as f64).fold(0.0, f64::max) * (1.0 + w.abs());
        let err = max_abs_diff(&got.to_vec_f32().unwrap(), &want);
        assert!(err <= 8.0 * f32::EPSILON as f64 * scale, "w = {w}: error {err:.3e} (scale {scale:.3})");
    }
    // w = 0 and w = 1 are one branch, exactly.
    let w0 = guidance::predict(&m, &x, &t, Conditioning { labels: Some(&labels), scale: 0.0 }).unwrap();
    assert_eq!(w0.to_vec_f32().unwrap(), uncond);
    let w1 = guidance::predict(&m, &x, &t, Conditioning { labels: Some(&labels), scale: 1.0 }).unwrap();
    assert_eq!(w1.to_vec_f32().unwrap(), cond);
}

fn sample_with(m: &UNet, labels: Option<Vec<usize>>, w: f64) -> Vec<f32> {
    sample_by(m, Sampler::Ddim { steps: 5, eta: 0.5 }, labels, w)
}

fn sample_by(m: &UNet, sampler: Sampler, labels: Option<Vec<usize>>, w: f64) -> Vec<f32> {
    let d = Diffusion::new(Schedule::Linear, 40, Target::Eps).unwrap();
    let mut spec = SampleSpec::new(6, sampler, 3);
    spec.batch = 4; // two chunks: labels must follow the images across chunks
    spec.labels = labels;
    spec.guidance = w;
    sample(m, &d, &spec, |_, _| {}).unwrap().images.to_vec_f32().unwrap()
}

#[test]
fn guidance_zero_samples_the_unconditional_model_and_one_the_conditional() {
    let m = model(&Device::Cpu);
    let labels = vec![2, 0, 3, 3, 1, 0];
    let null = m.null_class().unwrap();
    assert_eq!(null, CLASSES);
    let unconditional = sample_with(&m, None, 1.0);
    assert_eq!(sample_with(&m, Some(labels.clone()), 0.0), unconditional);
    assert_eq!(sample_with(&m, Some(vec![null; 6]), 1.0), unconditional, "the null class is the unconditional model");
    let conditional = sample_with(&m, Some(labels.clone()), 1.0);
    assert_ne!(conditional, unconditional);
    // The first chunk of a conditional run does not depend on the second chunk's labels.
    let other = sample_with(&m, Some(vec![2, 0, 3, 3, 0, 1]), 1.0);
    assert_eq!(conditional[..4 * 64], other[..4 * 64]);
    assert_ne!(conditional[4 * 64..], other[4 * 64..]);

    // The noise-level samplers take labels and guidance the same way.
    for sampler in [
        Sampler::DpmSolver { steps: 4, spacing: Spacing::Karras, sde: true },
        Sampler::Heun { steps: 3, spacing: Spacing::LogSnr },
    ] {
        let unconditional = sample_by(&m, sampler, None, 1.0);
        assert_eq!(sample_by(&m, sampler, Some(labels.clone()), 0.0), unconditional, "{sampler:?}");
        let guided = sample_by(&m, sampler, Some(labels.clone()), 3.0);
        assert_ne!(guided, unconditional, "{sampler:?}");
        assert_ne!(guided, sample_by(&m, sampler, Some(labels.clone()), 1.0), "{sampler:?}");
    }
}

#[test]
fn guided_samples_on_the_emulator_match_the_cpu() {
    // The emulator is part of the build: failing to open it is a failure.
    let emu = diffuse_tensor::gpu::emu::emu_device().expect("the CUDA emulator");
    let labels = Some(vec![1, 2, 3, 0, 0, 1]);
    let cpu = sample_with(&model(&Device::Cpu), labels.clone(), 2.5);
    let gpu = sample_with(&model(&emu), labels, 2.5);
    let scale = cpu.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
    let err = max_abs_diff(&cpu, &gpu);
    println!("guided DDIM samples, emulator vs CPU: max abs diff {err:.3e} (max |x| {scale:.3})");
    assert!(err < 1e-4 * scale.max(1.0), "{err}");
}

#[test]
fn bad_classes_and_scales_are_errors() {
    let m = model(&Device::Cpu);
    assert!(guidance::check(&m, Some(&[0, CLASSES + 1]), 2.0).is_err());
    assert!(guidance::check(&m, Some(&[CLASSES]), 2.0).is_ok(), "the null class may be asked for");
    assert!(guidance::check(&m, Some(&[1]), f64::NAN).is_err());
    let plain = UNet::new(UNetConfig::tiny(), 1, DType::F32, &Device::Cpu).unwrap();
    let e = guidance::check(&plain, Some(&[1]), 2.0).unwrap_err().to_string();
    assert!(e.contains("unconditional"), "{e}");
    let (x, t) = input(2);
    assert!(m.forward_cond(&x, &t, Some(&[0])).is_err(), "one label for two images");
    assert!(plain.forward_cond(&x, &t, Some(&[0, 0])).is_err());
}
