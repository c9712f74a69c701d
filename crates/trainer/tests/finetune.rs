//! LoRA merging: the merged plain model computes what base plus adapters
//! compute, to float32 rounding; the base hash identifies the weights.

use diffuse_tensor::{ops, DType, Device, Tensor};
use diffuse_trainer::config::{LoraConfig, TrainConfig};
use diffuse_trainer::finetune;
use diffuse_unet::UNetConfig;

fn lora_config(targets: &[&str]) -> TrainConfig {
    let mut cfg = TrainConfig::for_model(UNetConfig::tiny(), "unused".into());
    cfg.lora = Some(LoraConfig {
        rank: 3,
        alpha: 5.0,
        targets: targets.iter().map(|s| s.to_string()).collect(),
        base: "unused".into(),
        base_sha256: String::new(),
    });
    cfg
}

#[test]
fn merged_weights_give_the_adapted_output_to_float32_rounding() {
    let cfg = lora_config(&["*"]);
    let mut m = finetune::build_model(&cfg, 2, &Device::Cpu).unwrap();
    // Random base and adapters (B is zero when fresh, which would prove nothing).
    let ids: Vec<_> = m.params.ids().collect();
    for (k, id) in ids.into_iter().enumerate() {
        let dims = m.params.value(id).dims().to_vec();
        let fan = if dims.len() > 1 { dims[1..].iter().product::<usize>() } else { 1 } as f64;
        let v = Tensor::randn(dims, 21, k as u32, DType::F32, &Device::Cpu).unwrap();
        m.params.set(id, ops::scale(&v, 1.0 / fan.sqrt()).unwrap()).unwrap();
    }
    let merged = finetune::merge_adapters(&m, cfg.lora.as_ref().unwrap()).unwrap();
    let convs = finetune::conv_layer_names(&merged).len();
    assert_eq!(merged.params.len() + 2 * convs, m.params.len(), "every conv had A and B");
    let x = Tensor::randn([2, 1, 8, 8], 4, 0, DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![17.0f32, 901.0], [2]).unwrap();
    let a = m.forward(&x, &t).unwrap().to_vec_f32().unwrap();
    let b = merged.forward(&x, &t).unwrap().to_vec_f32().unwrap();
    let num: f64 = a.iter().zip(&b).map(|(p, q)| ((p - q) as f64).powi(2)).sum::<f64>().sqrt();
    let den: f64 = a.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
    let max = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    println!("merged vs base+adapter output: rel err {:.3e}, max abs diff {max:.3e}", num / den);
    assert!(num / den < 1e-5, "rel err {:.3e}", num / den);
    // The base hash ignores adapters and sees any change of a base weight.
    let h = finetune::base_sha256(&m).unwrap();
    let id = merged.params.id("conv_out.bias").unwrap();
    let mut changed = finetune::build_model(&cfg, 2, &Device::Cpu).unwrap();
    finetune::copy_base(&m, &mut changed).unwrap();
    assert_eq!(finetune::base_sha256(&changed).unwrap(), h);
    let cid = changed.params.id("conv_out.bias").unwrap();
    let bumped = ops::add_scaled(merged.params.value(id), merged.params.value(id), 1e-3).unwrap();
    changed.params.set(cid, bumped).unwrap();
    assert_ne!(finetune::base_sha256(&changed).unwrap(), h);
}

#[test]
fn a_label_filter_keeps_exactly_the_chosen_classes_in_order() {
    use diffuse_trainer::{Dataset, DatasetKind};
    let labels: Vec<u8> = (0..23).map(|i| (i * 7 % 10) as u8).collect();
    let images: Vec<f32> = (0..23 * 4).map(|v| v as f32 / 100.0).collect();
    let d = Dataset::from_vec(images.clone(), Some(labels.clone()), 1, 2, 2, DatasetKind::Mnist, "x").unwrap();
    let kept = d.clone().with_labels(&[0, 1, 2, 3, 4]).unwrap();
    let want: Vec<usize> = (0..23).filter(|&i| labels[i] < 5).collect();
    assert_eq!(kept.len(), want.len());
    assert_eq!(kept.labels().unwrap(), want.iter().map(|&i| labels[i]).collect::<Vec<_>>());
    let img: Vec<f32> = want.iter().flat_map(|&i| images[i * 4..i * 4 + 4].to_vec()).collect();
    let mut got = Vec::new();
    for i in 0..kept.len() {
        got.extend_from_slice(kept.image(i));
    }
    assert_eq!(got, img);
    assert!(d.clone().with_labels(&[42]).unwrap_err().to_string().contains("no image has a label in [42]"));
    let unlabelled = Dataset::from_vec(images, None, 1, 2, 2, DatasetKind::Folder, "x").unwrap();
    assert!(unlabelled.with_labels(&[1]).is_err());
}
