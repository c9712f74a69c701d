//! End-to-end tests of class-conditional training and guided sampling:
//! the run records its classes, resume stays bit-identical with class
//! dropout, `sample --class` draws a row per class, diffusers export/import
//! keeps the class table, and bad requests are one clear error.

mod cli_common;
use cli_common::*;
use std::path::{Path, PathBuf};

const FAST: &[&str] = &[
    "--config",
    "tiny-mnist",
    "--device",
    "cpu",
    "--batch-size",
    "8",
    "--sample-every",
    "0",
    "--log-every",
    "1",
    "--conditional",
    "--class-dropout",
    "0.5",
];

fn train(out: &Path, steps: u64, extra: &[&str]) -> String {
    let steps = steps.to_string();
    let out = s(out);
    let mut args = vec!["train", "--out", &out, "--steps", &steps];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    ok(&args)
}

fn checkpoints(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn tensors_equal(a: &Path, b: &Path) {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (ta, tb) =
        (safetensors::SafeTensors::deserialize(&a).unwrap(), safetensors::SafeTensors::deserialize(&b).unwrap());
    let mut names = ta.names();
    names.sort();
    assert!(names.iter().any(|n| n.contains("class_emb.weight")), "no class table in {names:?}");
    for n in names {
        assert_eq!(ta.tensor(n).unwrap().data(), tb.tensor(n).unwrap().data(), "tensor {n} differs after resume");
    }
}

#[test]
fn a_conditional_run_records_its_classes_and_resumes_bit_identically() {
    let d = tempfile::tempdir().unwrap();
    let (straight, split) = (d.path().join("straight"), d.path().join("split"));
    let extra = ["--checkpoint-every", "4", "--keep", "5"];
    train(&straight, 8, &extra);
    train(&split, 4, &extra);
    let split_s = s(&split);
    ok(&["train", "--resume", &split_s, "--steps", "8", "--device", "cpu"]);
    tensors_equal(checkpoints(&straight).last().unwrap(), checkpoints(&split).last().unwrap());

    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model"]["num_classes"], 10);
    assert_eq!(cfg["class_dropout"], 0.5);
    assert_eq!(cfg["class_names"][7], "7");

    // one row per class: 10 rows of 2, in class order
    let grid = d.path().join("all.png");
    let npy = d.path().join("all.npy");
    let run = s(&straight);
    let out = ok(&[
        "sample",
        "--checkpoint",
        &run,
        "--class",
        "all",
        "--n",
        "20",
        "--steps",
        "4",
        "--out",
        &s(&grid),
        "--npy",
        &s(&npy),
        "--device",
        "cpu",
    ]);
    assert!(out.contains("class all (guidance 2)"), "{out}");
    let img = image::open(&grid).unwrap();
    let per_row = 2 * 28;
    assert!(img.width() < 2 * per_row && img.height() > 9 * 28, "{}x{}", img.width(), img.height());
    let bytes = std::fs::read(&npy).unwrap();
    assert!(String::from_utf8_lossy(&bytes[..128]).contains("(20, 1, 28, 28)"));

    // class by name, a guidance scale, and the emulator agree with the CPU path's checks
    ok(&[
        "sample",
        "--checkpoint",
        &run,
        "--class",
        "3",
        "--guidance",
        "4",
        "--n",
        "2",
        "--steps",
        "3",
        "--out",
        &s(&d.path().join("threes.png")),
        "--device",
        "cpu",
    ]);
    let e = fails(&["sample", "--checkpoint", &run, "--class", "10", "--n", "2", "--out", &s(&grid)]);
    assert!(e.contains("outside the model's classes 0..9"), "{e}");
    let e = fails(&["sample", "--checkpoint", &run, "--class", "seven", "--n", "2", "--out", &s(&grid)]);
    assert!(e.contains("not a class number"), "{e}");
    let e = fails(&["sample", "--checkpoint", &run, "--class", "all", "--n", "5", "--out", &s(&grid)]);
    assert!(e.contains("at least one image per class"), "{e}");

    // diffusers: num_class_embeds = 11 and class_embedding.weight, and back
    let hf = d.path().join("hf");
    ok(&["export", "--to", "diffusers", &run, "--out", &s(&hf)]);
    let hf_cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(hf_cfg["num_class_embeds"], 11);
    let back = d.path().join("back.safetensors");
    ok(&["import", "--from", "diffusers", &s(&hf), "--out", &s(&back)]);
    let (a, b) = (d.path().join("a.npy"), d.path().join("b.npy"));
    for (ckpt, npy) in [(run.clone(), &a), (s(&back), &b)] {
        ok(&[
            "sample",
            "--checkpoint",
            &ckpt,
            "--class",
            "5",
            "--n",
            "2",
            "--steps",
            "3",
            "--out",
            &s(&d.path().join("x.png")),
            "--npy",
            &s(npy),
            "--device",
            "cpu",
        ]);
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "exported and re-imported samples differ");
}

#[test]
fn conditional_requests_without_classes_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    // an unlabelled folder (images at the top level)
    let folder = d.path().join("faces");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..3 {
        image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * i) % 256) as u8]))
            .save(folder.join(format!("{i}.png")))
            .unwrap();
    }
    let out = s(&d.path().join("run"));
    let e = fails(&[
        "train",
        "--out",
        &out,
        "--data",
        &s(&folder),
        "--conditional",
        "--config",
        "tiny-mnist",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("needs labelled data"), "{e}");

    // --class on an unconditional model
    let plain = d.path().join("plain");
    ok(&[
        "train",
        "--out",
        &s(&plain),
        "--config",
        "tiny-mnist",
        "--batch-size",
        "4",
        "--steps",
        "1",
        "--sample-every",
        "0",
        "--device",
        "cpu",
    ]);
    let e = fails(&[
        "sample",
        "--checkpoint",
        &s(&plain),
        "--class",
        "1",
        "--n",
        "1",
        "--out",
        &s(&d.path().join("x.png")),
    ]);
    assert!(e.contains("unconditional"), "{e}");
}

#[test]
fn an_image_folder_with_class_subfolders_trains_conditionally_with_named_classes() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("shapes");
    for (c, name) in ["circle", "square", "zigzag"].iter().enumerate() {
        let dir = data.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..2u32 {
            image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * (c as u32 + 1) + y * i) % 256) as u8]))
                .save(dir.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let run = d.path().join("run");
    ok(&[
        "train",
        "--out",
        &s(&run),
        "--data",
        &s(&data),
        "--conditional",
        "--config",
        "tiny-mnist",
        "--batch-size",
        "3",
        "--steps",
        "2",
        "--sample-every",
        "0",
        "--device",
        "cpu",
    ]);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model"]["num_classes"], 3);
    assert_eq!(cfg["class_names"], serde_json::json!(["circle", "square", "zigzag"]));
    let out = ok(&[
        "sample",
        "--checkpoint",
        &s(&run),
        "--class",
        "zigzag",
        "--n",
        "1",
        "--steps",
        "2",
        "--out",
        &s(&d.path().join("z.png")),
        "--device",
        "cpu",
    ]);
    assert!(out.contains("class zigzag"), "{out}");
}
