//! One training step of a LoRA-wrapped U-Net against PyTorch: the vectors
//! in tests/data/lora/lora_step.safetensors were written by
//! tests/data/lora/make_lora_vectors.py (output, loss and every adapter
//! gradient, base frozen; adapters on the attention projections, a strided
//! downsample conv, a 3x3 conv and conv_in).

use diffuse_tensor::{DType, Device, Tensor};
use diffuse_unet::io::{metadata, parse, view_to_tensor};
use diffuse_unet::layers::{ForwardMode, LoraPlan};
use diffuse_unet::verify::rel_err;
use diffuse_unet::{UNet, UNetConfig};

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/lora/lora_step.safetensors");

fn step(dtype: DType) -> (f64, f64, f64, String) {
    let bytes = std::fs::read(FILE).unwrap();
    let meta = metadata(&bytes).unwrap();
    let config = UNetConfig::from_json(&meta["config"]).unwrap();
    let rank: usize = meta["rank"].parse().unwrap();
    let alpha: f64 = meta["alpha"].parse().unwrap();
    let targets: Vec<String> = serde_json::from_str(&meta["targets"]).unwrap();
    let st = parse(&bytes).unwrap();
    // Weights are float32 (read by the library), inputs, outputs and gradients float64.
    let get = |name: &str| {
        let view = st.tensor(name).unwrap();
        let t = if view.dtype() == safetensors::Dtype::F64 {
            let v: Vec<f64> = view.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
            Tensor::from_vec(v, view.shape().to_vec()).unwrap()
        } else {
            view_to_tensor(name, &view).unwrap()
        };
        t.to_dtype(dtype).unwrap()
    };

    let is_target = |layer: &str| targets.iter().any(|t| t == layer);
    let plan = LoraPlan { rank, alpha, targets: &is_target };
    let mut m = UNet::with_lora(config, 0, dtype, &Device::Cpu, plan).unwrap();
    let ids: Vec<_> = m.params.ids().collect();
    let mut adapters = 0;
    for id in ids {
        let name = m.params.name(id).to_string();
        let adapter = m.params.is_adapter(id);
        let v = get(&format!("{}.{name}", if adapter { "lora" } else { "param" }));
        m.params.set(id, v).unwrap();
        m.params.set_trainable(id, adapter);
        adapters += usize::from(adapter);
    }
    assert_eq!(adapters, 2 * targets.len());

    let (x, t, target) = (get("input.x"), get("input.t"), get("input.target"));
    let (y, cache) = m.forward_train(&x, &t, ForwardMode::train(0, 0)).unwrap();
    let (yv, tv) = (y.to_vec_f64().unwrap(), target.to_vec_f64().unwrap());
    let n = yv.len() as f64;
    let loss: f64 = yv.iter().zip(&tv).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / n;
    let dy: Vec<f64> = yv.iter().zip(&tv).map(|(a, b)| 2.0 * (a - b) / n).collect();
    let dy = Tensor::from_vec(dy, y.dims().to_vec()).unwrap().to_dtype(dtype).unwrap();
    m.backward(&cache, &dy).unwrap();

    let out_err = rel_err(&yv, &get("output.y").to_vec_f64().unwrap());
    let loss_err = rel_err(&[loss], &get("output.loss").to_vec_f64().unwrap());
    let (mut worst, mut worst_name) = (0.0, String::new());
    for id in m.params.ids() {
        let name = m.params.name(id);
        match (m.params.is_adapter(id), m.params.grad(id)) {
            (true, Some(g)) => {
                let e = rel_err(&g.to_vec_f64().unwrap(), &get(&format!("grad.{name}")).to_vec_f64().unwrap());
                if e > worst {
                    (worst, worst_name) = (e, name.to_string());
                }
            }
            (true, None) => panic!("adapter {name} got no gradient"),
            (false, g) => assert!(g.is_none(), "frozen {name} got a gradient"),
        }
    }
    (out_err, loss_err, worst, worst_name)
}

#[test]
fn lora_step_matches_pytorch_in_f64_and_f32() {
    for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
        let (out, loss, grad, name) = step(dtype);
        println!("{dtype:?}: output rel err {out:.3e}, loss {loss:.3e}, worst adapter gradient {grad:.3e} ({name})");
        assert!(out < tol && loss < tol && grad < tol, "{dtype:?}: {out:.3e} {loss:.3e} {grad:.3e} ({name})");
    }
}
