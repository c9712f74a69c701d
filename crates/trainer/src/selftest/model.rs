//! Whole-model checks against the CPU: a training step of the tiny U-Net
//! (dropout 0.1: the Philox masks are the same on every device), a LoRA
//! step with the base frozen, and the reverse process of the samplers, as
//! `tests/unet_step_per_device.rs` does for the first two.

use super::rng::TensorRng;
use super::{Checker, Options};
use crate::diffusion::{Diffusion, Schedule, Target};
use crate::sampler::{self, Sampler, Variance};
use crate::Result;
use diffuse_tensor::{ops, DType, Device, Tensor};
use diffuse_unet::layers::LoraPlan;
use diffuse_unet::{ForwardMode, UNet, UNetConfig};

/// Relative error of a whole step (forward, loss, every gradient), as the
/// tests' bound.
const TOL: f64 = 1e-4;

/// Eps prediction, loss and every parameter's gradient (None where the
/// backward gave it none) of one training forward + backward.
struct Step {
    eps: Tensor,
    loss: Tensor,
    grads: Vec<(String, Option<Tensor>)>,
}

fn forward_backward(model: UNet, x: &Tensor, t: &Tensor, noise: &Tensor) -> Result<Step> {
    forward_backward_cond(model, x, t, None, noise)
}

fn forward_backward_cond(
    mut model: UNet,
    x: &Tensor,
    t: &Tensor,
    labels: Option<&[usize]>,
    noise: &Tensor,
) -> Result<Step> {
    let device = model.device();
    let (x, t, noise) = (x.to_device(&device)?, t.to_device(&device)?, noise.to_device(&device)?);
    let (eps, cache) = model.forward_train_cond(&x, &t, labels, ForwardMode::train(1234, 17))?;
    let loss = ops::mse_loss_forward(&eps, &noise)?;
    let deps = ops::mse_loss_backward(&eps, &noise, 1.0)?;
    model.params.zero_grads();
    model.backward(&cache, &deps)?;
    let grads =
        model.params.ids().map(|id| (model.params.name(id).to_string(), model.params.grad(id).cloned())).collect();
    Ok(Step { eps, loss, grads })
}

/// Every gradient of the device's step against the CPU's; analytically zero
/// ones (attention's key bias) are measured against the whole model's
/// gradient norm, as verify_step does. Returns how many were compared.
fn check_step(c: &mut Checker, what: &str, case: &str, want: &Step, got: &Step) -> Result<usize> {
    c.check(&format!("{what} forward eps"), case, &got.eps, &want.eps, TOL)?;
    c.check(&format!("{what} loss"), case, &got.loss, &want.loss, TOL)?;
    let mut total = 0.0;
    for g in want.grads.iter().filter_map(|(_, g)| g.as_ref()) {
        total += super::norm_f32(&g.to_vec_f32()?).powi(2);
    }
    let total = total.sqrt();
    let mut compared = 0;
    for ((name, g), (_, gg)) in want.grads.iter().zip(&got.grads) {
        let op = format!("{what} backward (param grads)");
        match (g, gg) {
            (Some(g), Some(gg)) => {
                c.check_floor(&op, name, gg, g, TOL, 1e-4 * total)?;
                compared += 1;
            }
            (None, None) => {}
            _ => c.check_scalar(&op, &format!("{name}: a gradient on one device only"), 1.0, 0.0, TOL),
        }
    }
    Ok(compared)
}

pub fn unet_step(c: &mut Checker, _: &Options) -> Result<()> {
    let mut rng = TensorRng::new(151);
    let x = rng.tensor(&[3, 1, 8, 8])?;
    let t = Tensor::from_vec(vec![0f32, 517.0, 999.0], [3])?;
    let noise = rng.tensor_in(&[3, 1, 8, 8], -2.0, 2.0)?;
    let config = UNetConfig { dropout: 0.1, ..UNetConfig::tiny() };
    let step = |device: &Device| -> Result<Step> {
        forward_backward(UNet::new(config.clone(), 5, DType::F32, device)?, &x, &t, &noise)
    };
    let want = step(&Device::Cpu)?;
    let got = step(c.device())?;
    check_step(c, "unet", "tiny, dropout 0.1, batch 3", &want, &got)?;

    // Class-conditional: two images of one class (their table rows sum) and one "no class".
    let config = config.with_classes(4);
    let labels = [2, 4, 2];
    let step = |device: &Device| -> Result<Step> {
        forward_backward_cond(UNet::new(config.clone(), 5, DType::F32, device)?, &x, &t, Some(&labels), &noise)
    };
    let want = step(&Device::Cpu)?;
    let got = step(c.device())?;
    check_step(c, "conditional unet", "tiny, 4 classes, labels [2, none, 2]", &want, &got)?;
    Ok(())
}

pub fn lora_step(c: &mut Checker, _: &Options) -> Result<()> {
    let mut rng = TensorRng::new(154);
    let x = rng.tensor(&[2, 1, 8, 8])?;
    let t = Tensor::from_vec(vec![3f32, 640.0], [2])?;
    let noise = rng.tensor_in(&[2, 1, 8, 8], -2.0, 2.0)?;
    let step = |device: &Device| -> Result<Step> {
        let every_conv = |_: &str| true;
        let plan = LoraPlan { rank: 3, alpha: 6.0, targets: &every_conv };
        let mut model = UNet::with_lora(UNetConfig::tiny(), 5, DType::F32, device, plan)?;
        // the B matrices randomised so that every adapter gets a gradient
        let mut rng = TensorRng::new(153);
        let ids: Vec<_> = model.params.ids().collect();
        for id in ids {
            let adapter = model.params.is_adapter(id);
            model.params.set_trainable(id, adapter);
            if model.params.name(id).ends_with("lora_B.weight") {
                let dims = model.params.value(id).dims().to_vec();
                model.params.set(id, rng.tensor_in(&dims, -0.1, 0.1)?.to_device(device)?)?;
            }
        }
        forward_backward(model, &x, &t, &noise)
    };
    let want = step(&Device::Cpu)?;
    let got = step(c.device())?;
    let compared = check_step(c, "lora", "tiny, rank 3 on every conv, batch 2", &want, &got)?;
    // the frozen base has no gradient on either device: only adapters compared
    let adapters = want.grads.iter().filter(|(n, g)| n.contains("lora_") && g.is_some()).count();
    c.check_scalar("lora adapters with a gradient", "tiny", compared as f64, adapters as f64, 1e-12);
    Ok(())
}

pub fn sampler(c: &mut Checker, _: &Options) -> Result<()> {
    let config = UNetConfig::tiny();
    let cpu_model = UNet::new(config.clone(), 9, DType::F32, &Device::Cpu)?;
    let dev_model = UNet::new(config.clone(), 9, DType::F32, c.device())?;
    let samplers = [
        ("ddpm fixed-large, T 20", 20, Sampler::Ddpm { variance: Variance::FixedLarge }),
        ("ddpm fixed-small, T 20", 20, Sampler::Ddpm { variance: Variance::FixedSmall }),
        ("ddim 5 steps eta 0, T 100", 100, Sampler::Ddim { steps: 5, eta: 0.0 }),
        ("ddim 5 steps eta 1, T 100", 100, Sampler::Ddim { steps: 5, eta: 1.0 }),
    ];
    let shape = [3, config.in_ch, config.image_size, config.image_size];
    for (name, timesteps, s) in samplers {
        let d = Diffusion::new(Schedule::Linear, timesteps, Target::Eps)?;
        let ts = sampler::timesteps(&d, s)?;
        let x_t = Tensor::randn(shape, 21, 7, DType::F32, &Device::Cpu)?;
        let want = sampler::reverse_from(&cpu_model, &d, s, true, &x_t, &ts, 21, |_, _| {})?;
        let got = sampler::reverse_from(&dev_model, &d, s, true, &c.on(&x_t)?, &ts, 21, |_, _| {})?;
        c.check("sampler (x_0 after every step)", &format!("{name}, tiny, batch 3"), &got, &want, TOL)?;
    }
    Ok(())
}
