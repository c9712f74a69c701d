//! The U-Net's forward output, loss and every parameter gradient against
//! PyTorch's float64 training step (../shared/testvectors, copied into
//! tests/data/testvectors). Bound: 1e-4 relative error.

use diffuse_tensor::{DType, Device};
use diffuse_unet::verify::verify_step;
use std::path::PathBuf;

fn vectors(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/testvectors").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn check(name: &str, device: &Device) {
    let e = verify_step(&vectors(name), device, DType::F32).expect("verify step");
    println!(
        "{name} on {device}: {} params, output rel err {:.3e}, loss rel err {:.3e}, worst grad rel err {:.3e} ({})",
        e.params, e.output, e.loss, e.worst_grad, e.worst_grad_name
    );
    assert!(e.output < 1e-4, "output rel err {:.3e}", e.output);
    assert!(e.loss < 1e-4, "loss rel err {:.3e}", e.loss);
    assert!(e.worst_grad < 1e-4, "grad {} rel err {:.3e}", e.worst_grad_name, e.worst_grad);
}

#[test]
fn tiny_step_matches_pytorch_on_cpu() {
    check("unet_tiny_step.safetensors", &Device::Cpu);
}

/// Class-conditional: the class table's gradient sums two images of class 3
/// and one of "no class".
#[test]
fn tiny_conditional_step_matches_pytorch_on_cpu() {
    check("unet_tiny_cond_step.safetensors", &Device::Cpu);
}

#[test]
fn mnist_step_matches_pytorch_on_cpu() {
    check("unet_mnist_step.safetensors", &Device::Cpu);
}

#[test]
#[ignore]
fn dump_errors() {
    for n in ["unet_tiny_step.safetensors", "unet_mnist_step.safetensors"] {
        let e = verify_step(&vectors(n), &Device::Cpu, DType::F32).unwrap();
        for (name, err) in &e.grads {
            if *err > 1e-5 {
                println!("{n} {name} {err:.3e}");
            }
        }
    }
}
