//! The memory budget: sizes parsed and printed, and every input-sized
//! allocation refused before it is made (a counting allocator measures the
//! peak of each call): a gzip bomb behind a small IDX header, IDX headers,
//! CIFAR-10 files and image folders larger than the budget, checkpoints
//! whose config asks for a huge model, and `--n` past memory.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{peak_bytes, use_test_budget, TEST_BUDGET};
use diffuse_tensor::ops::AdamWParams;
use diffuse_tensor::{DType, Device};
use diffuse_trainer::checkpoint::{self, Checkpoint, TrainState};
use diffuse_trainer::config::TrainConfig;
use diffuse_trainer::diffusion::{Diffusion, Schedule, Target};
use diffuse_trainer::memory_budget::{
    format_bytes, parse_size, sampling_need, training_need, BudgetSource, MemoryBudget, Need,
};
use diffuse_trainer::optim::{AdamW, Ema};
use diffuse_trainer::sampler::{sample, SampleSpec, Sampler};
use diffuse_trainer::{Dataset, Error, LoaderState};
use diffuse_unet::{UNet, UNetConfig};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn idx_header(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    [0x803u32, n, rows, cols].iter().flat_map(|x| x.to_be_bytes()).collect()
}

/// The error is a memory refusal that names the need and the limit.
fn assert_memory_error(e: &Error, needle: &str) {
    let s = e.to_string();
    assert!(matches!(e, Error::Memory { .. }), "expected a memory refusal, got: {s}");
    assert!(s.contains(needle), "{s:?} does not mention {needle:?}");
    assert!(s.contains("more than the memory limit of 128.0 MiB"), "{s}");
    assert!(s.contains("DIFFUSE_MEMORY_LIMIT") && !s.contains('\n'), "{s}");
}

#[test]
fn sizes_parse_and_print() {
    assert_eq!(parse_size("1000000"), Some(1_000_000));
    assert_eq!(parse_size("512K"), Some(512 << 10));
    assert_eq!(parse_size("512M"), Some(512 << 20));
    assert_eq!(parse_size("8G"), Some(8 << 30));
    assert_eq!(parse_size("8 GB"), Some(8 << 30));
    assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
    assert_eq!(parse_size("2t"), Some(2 << 40));
    for bad in ["", "G", "-1G", "12x", "1e3", "99999999999T", "NaN"] {
        assert_eq!(parse_size(bad), None, "{bad:?}");
    }
    assert_eq!(format_bytes(1023), "1023 B");
    assert_eq!(format_bytes(1536), "1.5 KiB");
    assert_eq!(format_bytes(3 << 29), "1.5 GiB");
    assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    let need = Need::one("a", 1 << 20).add("b", 1 << 21);
    assert_eq!(need.total(), 3 << 20);
    assert_eq!(need.to_string(), "3.0 MiB (a 1.0 MiB + b 2.0 MiB)");
    assert_eq!(Need::one("x", u64::MAX).add("y", 5).total(), u64::MAX);
}

#[test]
fn a_budget_refuses_past_its_limit_only() {
    let b = MemoryBudget::new(1000, BudgetSource::Env);
    assert!(b.check_bytes("ok", 1000).is_ok());
    let e = b.check("ten images", &Need::one("pixels", 1001)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "ten images needs 1001 B (pixels 1001 B), more than the memory limit of 1000 B (set by DIFFUSE_MEMORY_LIMIT); \
         set DIFFUSE_MEMORY_LIMIT or pass --memory-limit (e.g. 16G) to change the limit"
    );
    assert!(MemoryBudget::from_flag("2G").unwrap().limit == 2 << 30);
    assert!(MemoryBudget::from_flag("lots").is_err());
    // The default is a share of the physical memory (or a fixed fallback).
    let p = MemoryBudget::physical();
    assert!(p.limit > 0);
    if let BudgetSource::Physical { total } = p.source {
        assert_eq!(p.limit, (total as f64 * 0.8) as u64);
    }
}

/// 10 images of 28x28 in the header, then 256 MiB of zeros, compressed to
/// about 256 KiB: only the header's 7,840 bytes (and one more) are inflated.
#[test]
fn gzip_bomb_behind_a_small_idx_header_is_not_inflated() {
    use_test_budget();
    let tmp = tempfile::tempdir().unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&idx_header(10, 28, 28)).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        e.write_all(&zeros).unwrap();
    }
    let gz = e.finish().unwrap();
    drop(zeros);
    assert!(gz.len() < 2 << 20, "{}", gz.len());
    let p = write(tmp.path(), "bomb-images-idx3-ubyte.gz", &gz);
    drop(gz);
    let (r, peak) = peak_bytes(|| Dataset::open(&p, 1, 28));
    let e = r.unwrap_err();
    assert!(matches!(e, Error::BadDims { .. }) && e.to_string().contains("decompressed data is longer"), "{e}");
    assert!(peak < 4 << 20, "inflating the bomb allocated {peak} bytes at the peak");
}

#[test]
fn idx_headers_past_the_budget_are_refused_before_reading() {
    use_test_budget();
    let tmp = tempfile::tempdir().unwrap();
    // 60,000 images of 1000x1000: 300 GB as f32 + bytes. Compressed, the
    // size cannot be checked against the file: the budget refuses it.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&idx_header(60_000, 1000, 1000)).unwrap();
    e.write_all(&[0u8; 4096]).unwrap();
    let p = write(tmp.path(), "big.gz", &e.finish().unwrap());
    let (r, peak) = peak_bytes(|| Dataset::open(&p, 1, 28));
    assert_memory_error(&r.unwrap_err(), "the header's 60000x1000x1000 images");
    assert!(peak < 1 << 20, "{peak}");
    // Plain: the file's length gives it away first.
    let p = write(tmp.path(), "big", &idx_header(60_000, 1000, 1000));
    let e = Dataset::open(&p, 1, 28).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
}

#[test]
fn cifar_files_past_the_budget_are_refused_before_reading() {
    use_test_budget();
    let tmp = tempfile::tempdir().unwrap();
    // 12,000 records (37 MB; sparse on disk) are 147 MB as f32.
    let f = std::fs::File::create(tmp.path().join("data_batch_1.bin")).unwrap();
    f.set_len(12_000 * 3073).unwrap();
    let (r, peak) = peak_bytes(|| Dataset::open(tmp.path(), 3, 32));
    assert_memory_error(&r.unwrap_err(), "12000 CIFAR-10 records");
    assert!(peak < 1 << 20, "{peak}");
}

#[test]
fn image_folders_past_the_budget_are_refused_before_decoding() {
    use_test_budget();
    let tmp = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30]));
    img.save(tmp.path().join("a.png")).unwrap();
    img.save(tmp.path().join("b.png")).unwrap();
    // Two images at 4096x4096x3 are 402 MB as f32.
    let (r, peak) = peak_bytes(|| Dataset::open(tmp.path(), 3, 4096));
    assert_memory_error(&r.unwrap_err(), "2 images of 3x4096x4096");
    assert!(peak < 1 << 20, "{peak}");
    // A PNG whose header claims 60000x60000 pixels is refused by the decoder's limit.
    let mut png = std::fs::read(tmp.path().join("a.png")).unwrap();
    png[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    std::fs::write(tmp.path().join("b.png"), &png).unwrap();
    let (r, peak) = peak_bytes(|| Dataset::open(tmp.path(), 3, 4));
    let e = r.unwrap_err();
    assert!(matches!(e, Error::Image { .. }), "{e}");
    assert!(peak < 1 << 20, "{peak}");
}

fn small_model() -> UNetConfig {
    UNetConfig {
        in_ch: 1,
        ch: 4,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![],
        dropout: 0.0,
        groups: 2,
        image_size: 4,
        num_classes: 0,
    }
}

/// A checkpoint of the small model whose metadata claims `model`.
fn checkpoint_claiming(dir: &Path, model: &UNetConfig) -> PathBuf {
    let cfg = TrainConfig::for_model(small_model(), PathBuf::from("data"));
    let net = UNet::new(cfg.model.clone(), 3, DType::F32, &Device::Cpu).unwrap();
    let hyper = AdamWParams { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let ema = Ema::new(&net.params, 0.999, true).unwrap();
    let opt = AdamW::new(&net.params, hyper).unwrap();
    let state = TrainState {
        step: 1,
        loader: LoaderState { epoch: 0, position: 0 },
        ema_updates: 1,
        loss_watch: Default::default(),
    };
    let claimed = TrainConfig { model: model.clone(), ..cfg };
    let p = dir.join("ckpt-00000001.safetensors");
    checkpoint::save(&p, &claimed, &net, &ema, &opt, state).unwrap();
    p
}

#[test]
fn checkpoints_whose_config_asks_for_a_huge_model_are_refused_before_building_it() {
    use_test_budget();
    let tmp = tempfile::tempdir().unwrap();
    // Within the hard limits, but 1.2 billion parameters (4.5 GiB).
    let huge = UNetConfig { ch: 4096, ..small_model() };
    let p = checkpoint_claiming(tmp.path(), &huge);
    let (r, peak) = peak_bytes(|| Checkpoint::open(&p).and_then(|c| c.load_model(&Device::Cpu, true)));
    assert_memory_error(&r.err().expect("refused"), "the model of");
    assert!(peak < 4 << 20, "{peak}");
    // Past the hard limits: refused when opened.
    let p = checkpoint_claiming(tmp.path(), &UNetConfig { ch: 100_000, ..small_model() });
    let e = Checkpoint::open(&p).err().expect("refused");
    assert!(e.to_string().contains("ch 100000 is above the limit of 8192"), "{e}");
}

#[test]
fn sampling_and_training_needs_are_checked() {
    use_test_budget();
    let budget = MemoryBudget::global().unwrap();
    assert_eq!(budget.limit, TEST_BUDGET);
    // sample --n 100000000 of 28x28 images: about 1.4 TiB of outputs.
    let need = sampling_need(&UNetConfig::mnist(), 0, 100_000_000, 64, true).unwrap();
    assert!(need.total() > 1 << 40, "{need}");
    assert_memory_error(&budget.check("sampling", &need).unwrap_err(), "100000000 images");
    // The sampler itself refuses an output past the budget before sampling.
    let model = UNet::new(small_model(), 0, DType::F32, &Device::Cpu).unwrap();
    let d = Diffusion::new(Schedule::Linear, 10, Target::Eps).unwrap();
    let spec = SampleSpec::new(100_000_000, Sampler::Ddim { steps: 2, eta: 0.0 }, 0);
    let (r, peak) = peak_bytes(|| sample(&model, &d, &spec, |_, _| {}).map(|_| ()));
    assert_memory_error(&r.unwrap_err(), "100000000 samples");
    assert!(peak < 1 << 20, "{peak}");
    let spec = SampleSpec::new(usize::MAX / 2, Sampler::Ddim { steps: 2, eta: 0.0 }, 0);
    assert!(sample(&model, &d, &spec, |_, _| {}).is_err());
    // Training the CIFAR-10 model at batch 64 needs gigabytes.
    let cfg = TrainConfig::for_model(UNetConfig::cifar10(), PathBuf::from("data"));
    let need = training_need(&cfg, true).unwrap();
    assert!(need.total() > 2 << 30, "{need}");
    assert_memory_error(&budget.check("training this model", &need).unwrap_err(), "activations (batch 64)");
}

#[test]
fn absurd_timestep_counts_are_refused_before_the_schedule_is_built() {
    let (r, peak) = peak_bytes(|| Diffusion::new(Schedule::Cosine, 100_000_000_000, Target::Eps).map(|_| ()));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("100000000000 diffusion timesteps is above the limit of 100000"), "{e}");
    assert!(peak < 1 << 20, "{peak}");
    assert!(Diffusion::new(Schedule::Linear, 100_000, Target::Eps).is_ok());
}
