//! Fine-tuning end to end with the `diffuse` binary: frozen tensors stay
//! bit-identical and keep no optimiser state, the patterns survive resume,
//! bad patterns name close parameters, LoRA checkpoints hold only adapters
//! and refuse a wrong base, and merged checkpoints sample.

mod cli_common;
use cli_common::*;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

const FAST: &[&str] =
    &["--config", "tiny-mnist", "--device", "cpu", "--batch-size", "4", "--sample-every", "0", "--log-every", "1"];

fn train(out: &Path, steps: u64, extra: &[&str]) -> String {
    let (steps, out) = (steps.to_string(), s(out));
    let mut args = vec!["train", "--out", &out, "--steps", &steps];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    ok(&args)
}

fn newest_checkpoint(run: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v.pop().expect("a checkpoint")
}

fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st.tensors().into_iter().map(|(n, t)| (n, t.data().to_vec())).collect();
    v.sort();
    v
}

fn get<'a>(t: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    t.iter().find(|(n, _)| n == name).map(|(_, d)| d.as_slice())
}

fn is_frozen(name: &str) -> bool {
    name.starts_with("down.") || name.starts_with("conv_in.") || name.starts_with("temb_")
}

#[test]
fn frozen_tensors_stay_bit_identical_keep_no_adam_state_and_resume_keeps_the_patterns() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    train(&base, 3, &[]);
    let base_t = tensors(&newest_checkpoint(&base));
    let base_s = s(&base);
    let extra = [
        "--init-from",
        &base_s,
        "--freeze",
        "down.*",
        "conv_in.*",
        "temb_*",
        "--lr-scale",
        "up.1.*=0.5",
        "--keep",
        "5",
    ];
    let tuned = d.path().join("tuned");
    let out = train(&tuned, 4, &[&extra[..], &["--checkpoint-every", "2"]].concat());
    assert!(out.contains("trainable)"), "{out}");
    let t = tensors(&newest_checkpoint(&tuned));
    let (mut frozen, mut trained) = (0, 0);
    for (name, data) in t.iter().filter(|(n, _)| n.starts_with("model.")) {
        let p = &name["model.".len()..];
        let from = get(&base_t, &format!("ema.{p}")).unwrap();
        if is_frozen(p) {
            assert_eq!(data.as_slice(), from, "frozen {p} changed");
            assert_eq!(get(&t, &format!("ema.{p}")).unwrap(), from, "frozen {p}'s EMA changed");
            assert!(get(&t, &format!("adam_m.{p}")).is_none() && get(&t, &format!("adam_v.{p}")).is_none(), "{p}");
            frozen += 1;
        } else {
            assert!(get(&t, &format!("adam_m.{p}")).is_some(), "trainable {p} has no AdamW state");
            trained += usize::from(data.as_slice() != from);
        }
    }
    assert!(frozen > 10 && trained > 10, "frozen {frozen}, changed {trained}");
    let config = std::fs::read_to_string(tuned.join("config.json")).unwrap();
    assert!(config.contains("\"down.*\"") && config.contains("\"up.1.*\""), "{config}");

    // Stop at 2, resume to 4: the same bits as the straight run, the same patterns.
    let split = d.path().join("split");
    train(&split, 2, &[&extra[..], &["--checkpoint-every", "2"]].concat());
    let split_s = s(&split);
    let mut args = vec!["train", "--resume", &split_s, "--steps", "4"];
    args.extend_from_slice(FAST);
    ok(&args);
    assert_eq!(tensors(&newest_checkpoint(&split)), t, "resume differs from the straight run");
    assert_eq!(std::fs::read_to_string(split.join("config.json")).unwrap(), config);
    // Patterns cannot be changed on resume.
    fails(&["train", "--resume", &split_s, "--steps", "5", "--freeze", "up.*"]);
}

#[test]
fn patterns_that_match_nothing_are_errors_listing_close_names() {
    let d = tempfile::tempdir().unwrap();
    let run = s(&d.path().join("r"));
    let mut args = vec!["train", "--out", &run, "--steps", "1", "--freeze", "down.0.block.*"];
    args.extend_from_slice(FAST);
    let e = fails(&args);
    assert!(e.contains("--freeze \"down.0.block.*\" matches no parameter") && e.contains("down.0.blocks.*"), "{e}");
    let mut args = vec!["train", "--out", &run, "--steps", "1", "--lr-scale", "conv_ot.*=2"];
    args.extend_from_slice(FAST);
    let e = fails(&args);
    assert!(e.contains("close names: conv_out.*"), "{e}");
    let mut args = vec!["train", "--out", &run, "--steps", "1", "--train-only", "norm_out.*", "--freeze", "norm_out.*"];
    args.extend_from_slice(FAST);
    assert!(fails(&args).contains("nothing would train"));
}

#[test]
fn info_params_lists_tensors_and_groups() {
    let out = ok(&["info", "--params", "--config", "tiny"]);
    assert!(out.contains("down.0.blocks.0.conv1.weight") && out.contains("[16, 16, 3, 3]"), "{out}");
    assert!(out.contains("144 tensors, 176849 parameters"), "{out}");
    for g in ["temb_*", "*attn*", "*norm*", "down.1.*", "up.1.attns.0.*", "mid_block1.*"] {
        assert!(out.lines().any(|l| l.split_whitespace().any(|w| w == g)), "group {g} missing:\n{out}");
    }
}

#[test]
fn lora_runs_store_only_adapters_refuse_a_wrong_base_and_merge_into_a_plain_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    train(&base, 2, &[]);
    let base_s = s(&base);
    let lora = d.path().join("lora");
    let extra = ["--init-from", &base_s, "--lora-rank", "2", "--lora-alpha", "4", "--lr", "1e-2"];
    train(&lora, 3, &[&extra[..], &["--lora-targets", "*attn*.q", "*attn*.v", "up.*.conv1"]].concat());
    let ckpt = newest_checkpoint(&lora);
    let t = tensors(&ckpt);
    assert!(!t.is_empty() && t.iter().all(|(n, _)| n.contains(".lora_A.") || n.contains(".lora_B.")), "{t:?}");
    assert!(
        get(&t, "model.mid_attn.q.lora_A.weight").is_some()
            && get(&t, "model.up.0.blocks.0.conv1.lora_B.weight").is_some()
    );
    assert!(get(&t, "model.mid_attn.k.lora_A.weight").is_none());
    let info = ok(&["info", "--params", "--checkpoint", &s(&ckpt)]);
    assert!(info.lines().any(|l| l.starts_with("mid_attn.q.weight") && l.ends_with("frozen")), "{info}");
    assert!(info.lines().any(|l| l.starts_with("mid_attn.q.lora_B.weight") && l.ends_with("trainable")), "{info}");

    // Sampling a LoRA checkpoint loads its base; merging gives a plain checkpoint.
    let grid = d.path().join("s.png");
    let sample = |k: &Path| {
        ok(&["sample", "--checkpoint", &s(k), "--n", "2", "--steps", "3", "--device", "cpu", "--out", &s(&grid)])
    };
    sample(&ckpt);
    let merged = d.path().join("merged.safetensors");
    ok(&["merge-lora", &s(&newest_checkpoint(&base)), &s(&ckpt), "--out", &s(&merged)]);
    assert!(tensors(&merged).iter().all(|(n, _)| !n.contains("lora")));
    sample(&merged);

    // Another base (different weights) is refused.
    let other = d.path().join("other");
    train(&other, 2, &["--seed", "7"]);
    let e = fails(&["merge-lora", &s(&other), &s(&ckpt), "--out", &s(&d.path().join("m2.safetensors"))]);
    assert!(e.contains("is not the base these adapters were trained on"), "{e}");
    let e = fails(&["merge-lora", &s(&newest_checkpoint(&base)), &s(&merged), "--out", &s(&d.path().join("m3"))]);
    assert!(e.contains("holds no LoRA adapters"), "{e}");
    let e = fails(&[
        "train",
        "--out",
        &s(&d.path().join("x")),
        "--init-from",
        &base_s,
        "--lora-rank",
        "2",
        "--lora-targets",
        "*atn*.q",
    ]);
    assert!(e.contains("--lora-targets \"*atn*.q\" matches no parameter"), "{e}");
}

/// The weights of a run predict its target under its schedule: fine-tuning
/// keeps the checkpoint's noise process unless the flags name another.
#[test]
fn fine_tuning_keeps_the_checkpoints_noise_process_unless_told_otherwise() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    train(&base, 2, &["--target", "v", "--schedule", "cosine", "--timesteps", "500"]);
    let base_s = s(&base);
    let noise = |run: &Path| {
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
        (cfg["target"].to_string(), cfg["schedule"].to_string(), cfg["timesteps"].as_u64())
    };
    let kept = d.path().join("kept");
    train(&kept, 1, &["--init-from", &base_s]);
    assert_eq!(noise(&kept), ("\"v\"".into(), "\"cosine\"".into(), Some(500)));
    let told = d.path().join("told");
    train(&told, 1, &["--init-from", &base_s, "--target", "eps", "--timesteps", "1000"]);
    assert_eq!(noise(&told), ("\"eps\"".into(), "\"cosine\"".into(), Some(1000)));
}
