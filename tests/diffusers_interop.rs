//! diffusers interop against fixtures made once with diffusers itself
//! (scripts/make-diffusers-fixtures.py; versions in
//! tests/data/diffusers/requirements.txt): each fixture is a random
//! UNet2DModel in the DDPM layout with its input and its output computed by
//! diffusers in float32 and float64. No Python runs here.

mod cli_common;
use cli_common::*;
use diffuse_tensor::{DType, Tensor};
use diffuse_trainer::checkpoint::Checkpoint;
use diffuse_trainer::diffusers::{self, CONFIG_FILE, SCHEDULER_FILE, WEIGHTS_FILE};
use diffuse_trainer::diffusion::{Schedule, Target};
use diffuse_trainer::sampler::Variance;
use diffuse_unet::io::{parse, serialize, view_to_tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const FIXTURES: [&str; 2] = ["ddpm-1ch", "ddpm-3ch"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/diffusers").join(name)
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// x, t and diffusers' outputs (f32 and f64) of a fixture.
struct Io {
    x: Tensor,
    t: Tensor,
    out: Vec<f64>,
    out_f64: Vec<f64>,
}

fn io(name: &str) -> Io {
    let bytes = std::fs::read(fixture(name).join("io.safetensors")).unwrap();
    let st = parse(&bytes).unwrap();
    let get = |n: &str| view_to_tensor(n, &st.tensor(n).unwrap()).unwrap();
    // out_f64 is stored as float64; read it by hand (view_to_tensor is f32-only).
    let v = st.tensor("out_f64").unwrap();
    let out_f64 = v.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
    Io { x: get("x"), t: get("t"), out: get("out").to_vec_f64().unwrap(), out_f64 }
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().map(|x| x.abs()).fold(0.0, f64::max)
}

#[test]
fn import_reproduces_the_diffusers_output() {
    for name in FIXTURES {
        let io = io(name);
        // In f64 the mapping alone is tested: any mixed-up name, reshape or
        // layout detail would show far above f64 rounding.
        let m64 = diffusers::read_as(&fixture(name), DType::F64).unwrap().model;
        let y64 = m64.forward(&io.x.to_dtype(DType::F64).unwrap(), &io.t.to_dtype(DType::F64).unwrap()).unwrap();
        let d64 = max_abs_diff(&y64.to_vec_f64().unwrap(), &io.out_f64);
        // In f32 we must agree with diffusers' own f32 output as closely as
        // diffusers' f32 agrees with its f64 output (float32 rounding).
        let m32 = diffusers::read(&fixture(name)).unwrap().model;
        let y32 = m32.forward(&io.x, &io.t).unwrap().to_vec_f64().unwrap();
        let d32 = max_abs_diff(&y32, &io.out);
        let torch_rounding = max_abs_diff(&io.out, &io.out_f64);
        eprintln!(
            "{name}: |out| max {:.3}; f64 vs diffusers f64 {d64:.2e}; f32 vs diffusers f32 {d32:.2e} (diffusers f32 \
             vs f64 {torch_rounding:.2e}; ours f32 vs f64 {:.2e})",
            max_abs(&io.out),
            max_abs_diff(&y32, &io.out_f64)
        );
        assert!(d64 < 1e-10, "{name}: f64 output differs from diffusers' by {d64:e}");
        assert!(
            d32 <= 4.0 * torch_rounding + 1e-6,
            "{name}: f32 output differs by {d32:e} (rounding {torch_rounding:e})"
        );
    }
}

#[test]
fn the_scheduler_config_is_read() {
    let a = diffusers::read(&fixture("ddpm-1ch")).unwrap();
    assert_eq!(
        (a.scheduler.schedule, a.scheduler.timesteps, a.scheduler.target, a.scheduler.variance),
        (Schedule::Linear, 1000, Target::Eps, Some(Variance::FixedSmall))
    );
    let b = diffusers::read(&fixture("ddpm-3ch")).unwrap();
    assert_eq!(
        (b.scheduler.schedule, b.scheduler.timesteps, b.scheduler.target, b.scheduler.variance),
        (Schedule::Cosine, 500, Target::V, Some(Variance::FixedLarge))
    );
}

#[test]
fn export_then_import_gives_identical_bytes() {
    for name in FIXTURES {
        let dir = tmp();
        let first = dir.path().join("first.safetensors");
        diffusers::import(&fixture(name), &first).unwrap();
        let out = dir.path().join("export");
        diffusers::export(&Checkpoint::open(&first).unwrap(), true, &out).unwrap();
        // The weights file is byte for byte the one diffusers wrote.
        assert_eq!(
            std::fs::read(out.join(WEIGHTS_FILE)).unwrap(),
            std::fs::read(fixture(name).join(WEIGHTS_FILE)).unwrap(),
            "{name}: exported weights differ from diffusers' file"
        );
        let second = dir.path().join("second.safetensors");
        diffusers::import(&out, &second).unwrap();
        assert!(std::fs::read(&first).unwrap() == std::fs::read(&second).unwrap(), "{name}: checkpoints differ");
        // Every field diffusers wrote is written back with the same value
        // (ours may add fields, never change one).
        for file in [CONFIG_FILE, SCHEDULER_FILE] {
            let theirs: Value =
                serde_json::from_str(&std::fs::read_to_string(fixture(name).join(file)).unwrap()).unwrap();
            let ours: Value = serde_json::from_str(&std::fs::read_to_string(out.join(file)).unwrap()).unwrap();
            for (k, v) in theirs.as_object().unwrap() {
                assert_eq!(ours.get(k), Some(v), "{name}/{file}: field {k}");
            }
        }
    }
}

/// A copy of a fixture's config.json with `edit` applied, in a folder of its own.
fn with_config(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> tempfile::TempDir {
    let dir = tmp();
    let src = fixture("ddpm-1ch");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(src.join(CONFIG_FILE)).unwrap()).unwrap();
    edit(cfg.as_object_mut().unwrap());
    std::fs::write(dir.path().join(CONFIG_FILE), serde_json::to_string(&cfg).unwrap()).unwrap();
    std::fs::copy(src.join(WEIGHTS_FILE), dir.path().join(WEIGHTS_FILE)).unwrap();
    dir
}

fn import_error(dir: &Path) -> String {
    match diffusers::read(dir) {
        Ok(_) => panic!("{} was imported", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn each_config_outside_the_layout_gives_its_error() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("flip_sin_to_cos", json!(true), "flip_sin_to_cos = true"),
        ("freq_shift", json!(0), "freq_shift = 0"),
        ("downsample_padding", json!(1), "downsample_padding = 1"),
        ("norm_eps", json!(1e-5), "norm_eps = 0.00001"),
        ("attention_head_dim", json!(8), "attention_head_dim = 8"),
        ("act_fn", json!("gelu"), "act_fn = \"gelu\""),
        ("resnet_time_scale_shift", json!("scale_shift"), "resnet_time_scale_shift = \"scale_shift\""),
        ("time_embedding_type", json!("fourier"), "time_embedding_type = \"fourier\""),
        ("time_embedding_dim", json!(64), "time_embedding_dim = 64"),
        ("mid_block_type", Value::Null, "mid_block_type = null"),
        ("mid_block_scale_factor", json!(1.414), "mid_block_scale_factor = 1.414"),
        ("class_embed_type", json!("timestep"), "class_embed_type = \"timestep\""),
        // 2 or more is a conditional model (the last row "no class"); 1 is not
        ("num_class_embeds", json!(1), "num_class_embeds = 1"),
        ("center_input_sample", json!(true), "center_input_sample = true"),
        ("out_channels", json!(2), "out_channels = 2"),
        ("sample_size", Value::Null, "sample_size = null"),
        ("sample_size", json!([8, 16]), "sample_size = [8,16]"),
        ("block_out_channels", json!([8, 12, 16]), "block_out_channels = [8,12,16]"),
        ("downsample_type", json!("resnet"), "downsample_type = \"resnet\""),
        ("upsample_type", json!("resnet"), "upsample_type = \"resnet\""),
        ("add_attention", json!(false), "add_attention = false"),
        ("attn_norm_num_groups", json!(2), "attn_norm_num_groups = 2"),
        ("layers_per_block", json!(0), "layers_per_block = 0"),
        ("dropout", json!("lots"), "dropout = \"lots\""),
        ("_class_name", json!("UNet2DConditionModel"), "_class_name = \"UNet2DConditionModel\""),
        ("cross_attention_dim", json!(768), "cross_attention_dim = 768"),
        (
            "down_block_types",
            json!(["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]),
            "entry 1 is \"CrossAttnDownBlock2D\"",
        ),
        ("down_block_types", json!(["DownBlock2D", "DownBlock2D"]), "2 entries"),
        ("up_block_types", json!(["UpBlock2D", "UpBlock2D", "AttnUpBlock2D"]), "entry 2 is \"AttnUpBlock2D\""),
        ("up_block_types", json!(["UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"]), "ResnetUpsampleBlock2D"),
    ];
    for (field, value, want) in cases {
        let dir = with_config(|c| {
            c.insert(field.to_string(), value.clone());
        });
        let e = import_error(dir.path());
        assert!(e.contains(want), "{field} = {value}: error does not say {want:?}: {e}");
        assert!(e.contains("config.json"), "{field}: error does not name the file: {e}");
    }
    // A field left out takes diffusers' default, which is not the DDPM one.
    let dir = with_config(|c| {
        c.remove("freq_shift");
    });
    assert!(import_error(dir.path()).contains("freq_shift = 0"));
    // Our own config rules still apply (groups must divide the channels).
    let dir = with_config(|c| {
        c.insert("norm_num_groups".into(), json!(3));
    });
    assert!(import_error(dir.path()).contains("groups 3"));
}

#[test]
fn pickles_are_refused_with_a_hint() {
    let dir = with_config(|_| {});
    std::fs::remove_file(dir.path().join(WEIGHTS_FILE)).unwrap();
    // Not even a valid pickle: it must never be opened.
    std::fs::write(dir.path().join("diffusion_pytorch_model.bin"), b"\x80\x02not a pickle").unwrap();
    let e = import_error(dir.path());
    assert!(e.contains("never loads pickles") && e.contains("safe_serialization=True"), "{e}");
    std::fs::remove_file(dir.path().join("diffusion_pytorch_model.bin")).unwrap();
    assert!(import_error(dir.path()).contains("no diffusion_pytorch_model.safetensors"));
    assert!(import_error(&dir.path().join("nowhere")).contains("no such file"));
}

/// The fixture's tensors, renamed by `rename` (None drops one), plus `extra`.
fn rewrite_weights(dst: &Path, rename: impl Fn(&str) -> Option<String>, extra: Option<&str>) {
    let bytes = std::fs::read(fixture("ddpm-1ch").join(WEIGHTS_FILE)).unwrap();
    let st = parse(&bytes).unwrap();
    let mut entries: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(n, v)| rename(&n).map(|n| (n, v.shape().to_vec(), v.data().to_vec())))
        .collect();
    if let Some(e) = extra {
        entries.push((e.to_string(), vec![2], vec![0; 8]));
    }
    let out = serialize(&entries, HashMap::from([("format".to_string(), "pt".to_string())])).unwrap();
    std::fs::write(dst.join(WEIGHTS_FILE), out).unwrap();
}

#[test]
fn old_attention_names_and_the_pipeline_layout_load() {
    // Old checkpoints (as on the Hub) name the projections query/key/value/proj_attn.
    let dir = tmp();
    let unet = dir.path().join("unet");
    let sched = dir.path().join("scheduler");
    std::fs::create_dir_all(&unet).unwrap();
    std::fs::create_dir_all(&sched).unwrap();
    std::fs::copy(fixture("ddpm-1ch").join(CONFIG_FILE), unet.join(CONFIG_FILE)).unwrap();
    std::fs::copy(fixture("ddpm-1ch").join(SCHEDULER_FILE), sched.join(SCHEDULER_FILE)).unwrap();
    let old = |n: &str| {
        Some(
            n.replace(".to_q.", ".query.")
                .replace(".to_k.", ".key.")
                .replace(".to_v.", ".value.")
                .replace(".to_out.0.", ".proj_attn."),
        )
    };
    rewrite_weights(&unet, old, None);
    let a = diffusers::read(dir.path()).unwrap();
    assert_eq!(a.scheduler.variance, Some(Variance::FixedSmall));
    let io = io("ddpm-1ch");
    let y = a.model.forward(&io.x, &io.t).unwrap().to_vec_f64().unwrap();
    assert!(max_abs_diff(&y, &io.out) < 1e-5);
}

#[test]
fn missing_and_unexpected_tensors_are_named() {
    let dir = with_config(|_| {});
    rewrite_weights(dir.path(), |n| (n != "mid_block.resnets.1.conv2.bias").then(|| n.to_string()), None);
    let e = import_error(dir.path());
    assert!(e.contains("mid_block.resnets.1.conv2.bias") && e.contains("missing"), "{e}");
    rewrite_weights(dir.path(), |n| Some(n.to_string()), Some("down_blocks.9.resnets.0.conv1.bias"));
    let e = import_error(dir.path());
    assert!(e.contains("down_blocks.9.resnets.0.conv1.bias"), "{e}");
    // A config that does not match the weights names the tensor and both shapes.
    let dir = with_config(|c| {
        c.insert("block_out_channels".into(), json!([8, 8, 8]));
    });
    assert!(import_error(dir.path()).contains("expected shape"));
}

// --- the command line -------------------------------------------------------

/// A folder of eight small grey PNGs to fine-tune and evaluate on.
fn image_folder(dir: &Path) -> PathBuf {
    let imgs = dir.join("images");
    std::fs::create_dir_all(&imgs).unwrap();
    for i in 0..8 {
        let data: Vec<f32> = (0..64).map(|k| ((k * (i + 3)) % 17) as f32 / 8.0 - 1.0).collect();
        diffuse_trainer::image_grid::save_grid(
            imgs.join(format!("{i}.png")),
            &data,
            [1, 1, 8, 8],
            1,
            diffuse_trainer::raster::ValueRange::Signed,
        )
        .unwrap();
    }
    imgs
}

#[test]
fn cli_import_sample_eval_finetune_export() {
    let dir = tmp();
    let ckpt = dir.path().join("imported/ddpm.safetensors");
    let out = ok(&["import", "--from", "diffusers", &s(&fixture("ddpm-1ch")), "--out", &s(&ckpt)]);
    assert!(out.contains("70785 parameters") && out.contains("variance small"), "{out}");
    let png = dir.path().join("s.png");
    ok(&["sample", "--checkpoint", &s(&ckpt), "--n", "2", "--steps", "3", "--out", &s(&png), "--device", "cpu"]);
    assert!(png.is_file());
    let imgs = image_folder(dir.path());
    let eval =
        ok(&["eval", "--checkpoint", &s(&ckpt), "--data", &s(&imgs), "--n", "4", "--t", "10,500", "--device", "cpu"]);
    assert!(eval.contains("500"), "{eval}");
    let run = dir.path().join("run");
    ok(&[
        "train",
        "--init-from",
        &s(&ckpt),
        "--data",
        &s(&imgs),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--out",
        &s(&run),
        "--sample-every",
        "0",
        "--device",
        "cpu",
    ]);
    let export = dir.path().join("export");
    let out = ok(&["export", "--to", "diffusers", &s(&run), "--out", &s(&export)]);
    assert!(out.contains("EMA weights"), "{out}");
    let again = dir.path().join("again.safetensors");
    ok(&["import", "--from", "diffusers", &s(&export), "--out", &s(&again)]);
    // The hidden forward command gives diffusers' output on the imported model.
    let y = dir.path().join("y.safetensors");
    ok(&[
        "forward",
        "--checkpoint",
        &s(&ckpt),
        "--input",
        &s(&fixture("ddpm-1ch").join("io.safetensors")),
        "--out",
        &s(&y),
    ]);
    let bytes = std::fs::read(&y).unwrap();
    let st = parse(&bytes).unwrap();
    let got = view_to_tensor("out", &st.tensor("out").unwrap()).unwrap().to_vec_f64().unwrap();
    assert!(max_abs_diff(&got, &io("ddpm-1ch").out) < 1e-5);
}

#[test]
fn cli_errors_are_one_line() {
    let dir = tmp();
    let bad = with_config(|c| {
        c.insert("flip_sin_to_cos".into(), json!(true));
    });
    let o = diffuse(&["import", "--from", "diffusers", &s(bad.path()), "--out", &s(&dir.path().join("x.safetensors"))]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.starts_with("error: ") && err.lines().count() == 1, "{err}");
    assert!(err.contains("flip_sin_to_cos = true"), "{err}");
    assert!(!dir.path().join("x.safetensors").exists());
    let o = diffuse(&["export", "--to", "diffusers", &s(&dir.path().join("none")), "--out", &s(dir.path())]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.starts_with("error: "), "{err}");
}
