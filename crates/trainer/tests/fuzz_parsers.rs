//! Fuzzing every parser that reads user files: MNIST IDX (plain and gzip),
//! CIFAR-10 batches, image folders (PNG, JPEG), checkpoints (safetensors and
//! our metadata), config JSON and diffusers model folders. Each property starts from a valid file,
//! applies a few mutations (bit flips, byte edits, truncations, extensions,
//! header fields set to big values) and asserts that the parser returns an
//! error or a result that is consistent, never panics, and never allocates
//! more than [`CAP`] (a counting global allocator measures the peak).
//!
//! Fixed seeds in CI; `DIFFUSE_EXPLORE=1` runs 50x the cases from fresh seeds.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{fixed_seed, peak_bytes, use_test_budget, TEST_BUDGET};
use diffuse_tensor::ops::AdamWParams;
use diffuse_tensor::{DType, Device};
use diffuse_trainer::checkpoint::{self, Checkpoint, TrainState};
use diffuse_trainer::config::TrainConfig;
use diffuse_trainer::data::{load_idx_images, load_idx_labels};
use diffuse_trainer::diffusers;
use diffuse_trainer::memory_budget;
use diffuse_trainer::optim::{AdamW, Ema};
use diffuse_trainer::{Dataset, LoaderState};
use diffuse_unet::{Footprint, UNet, UNetConfig};
use proptest::prelude::*;
use serde_json::{json, Value};

/// The most any one parse may allocate at its peak. The inputs are a few
/// KiB; the image decoders may take up to a third of the test budget.
const CAP: usize = 64 << 20;

/// One edit of a file.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        value: u8,
    },
    /// A big-endian u32 written at `at` (IDX header fields are big-endian u32s).
    SetU32Be {
        at: usize,
        value: u32,
    },
    /// A little-endian u64 written at `at` (the safetensors header length).
    SetU64Le {
        at: usize,
        value: u64,
    },
    Truncate {
        keep: usize,
    },
    Extend {
        bytes: Vec<u8>,
    },
}

/// Values that break sizes: zero, one, powers of two and the largest ones.
fn big_u32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(1), Just(0x7fff_ffff), Just(u32::MAX), Just(1 << 16), Just(100_000), any::<u32>()]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Positions are taken modulo the file's length when applied.
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        // Header fields: early positions, mostly aligned.
        3 => (0usize..24, big_u32()).prop_map(|(at, value)| Mutation::SetU32Be { at, value }),
        1 => prop_oneof![Just(0u64), Just(u64::MAX), Just(1 << 40), any::<u64>()]
            .prop_map(|value| Mutation::SetU64Le { at: 0, value }),
        2 => any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(|bytes| Mutation::Extend { bytes }),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..4)
}

fn apply(base: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut v = base.to_vec();
    for m in muts {
        let len = v.len().max(1);
        match m {
            Mutation::FlipBit { at, bit } => {
                if let Some(b) = v.get_mut(at % len) {
                    *b ^= 1 << bit;
                }
            }
            Mutation::SetByte { at, value } => {
                if let Some(b) = v.get_mut(at % len) {
                    *b = *value;
                }
            }
            Mutation::SetU32Be { at, value } => write_at(&mut v, *at, &value.to_be_bytes()),
            Mutation::SetU64Le { at, value } => write_at(&mut v, *at, &value.to_le_bytes()),
            Mutation::Truncate { keep } => v.truncate(keep % (v.len() + 1)),
            Mutation::Extend { bytes } => v.extend_from_slice(bytes),
        }
    }
    v
}

fn write_at(v: &mut [u8], at: usize, bytes: &[u8]) {
    if v.len() >= bytes.len() {
        let at = at.min(v.len() - bytes.len());
        v[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("temp dir is writable");
    p
}

/// Runs a parse under the allocation cap.
fn within_cap<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    let (out, peak) = peak_bytes(f);
    prop_assert!(peak <= CAP, "{what}: allocated {peak} bytes at the peak, cap {CAP}");
    Ok(out)
}

/// The error, if any, is one line (a clear `error:` for the command line).
fn one_line<T, E: std::fmt::Display>(r: &Result<T, E>) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        prop_assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
    }
    Ok(())
}

// ---------------------------------------------------------------- IDX

/// 5 images of 6x7 with distinct bytes, and 5 labels.
fn idx_files() -> (Vec<u8>, Vec<u8>) {
    let mut images = Vec::new();
    for x in [0x803u32, 5, 6, 7] {
        images.extend_from_slice(&x.to_be_bytes());
    }
    images.extend((0..5 * 6 * 7).map(|i| (i * 37 % 256) as u8));
    let mut labels = Vec::new();
    for x in [0x801u32, 5] {
        labels.extend_from_slice(&x.to_be_bytes());
    }
    labels.extend([3u8, 1, 4, 1, 5]);
    (images, labels)
}

fn check_idx(images: &Path, labels: Option<&Path>) -> Result<(), TestCaseError> {
    let r = within_cap("IDX images", || load_idx_images(images))?;
    one_line(&r)?;
    if let Ok((bytes, n, rows, cols)) = r {
        prop_assert_eq!(bytes.len(), n * rows * cols);
        prop_assert!(n > 0 && rows > 0 && cols > 0);
    }
    if let Some(labels) = labels {
        let r = within_cap("IDX labels", || load_idx_labels(labels))?;
        one_line(&r)?;
    }
    Ok(())
}

fn check_dataset(path: &Path, channels: usize, size: usize) -> Result<(), TestCaseError> {
    let r = within_cap("dataset", || Dataset::open(path, channels, size))?;
    one_line(&r)?;
    if let Ok(ds) = r {
        prop_assert!(!ds.is_empty());
        prop_assert_eq!(ds.dims(), (channels, size, size));
        prop_assert_eq!(ds.images().len(), ds.len() * ds.image_len());
        prop_assert!(ds.images().iter().all(|v| (-1.0..=1.0).contains(v)));
        if let Some(l) = ds.labels() {
            prop_assert_eq!(l.len(), ds.len());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(fixed_seed(96, 0x1d8_0001))]

    #[test]
    fn idx_plain_mutations(muts in mutations(), on_labels in any::<bool>()) {
        use_test_budget();
        let (images, labels) = idx_files();
        let tmp = tempfile::tempdir().unwrap();
        let (images, labels) = if on_labels { (images, apply(&labels, &muts)) } else { (apply(&images, &muts), labels) };
        let p = write(tmp.path(), "train-images-idx3-ubyte", &images);
        let l = write(tmp.path(), "train-labels-idx1-ubyte", &labels);
        check_idx(&p, Some(&l))?;
        check_dataset(tmp.path(), 1, 7)?;
    }

    #[test]
    fn idx_gzip_mutations(muts in mutations(), compressed in any::<bool>()) {
        use_test_budget();
        let (images, _) = idx_files();
        // Mutate the compressed bytes (corrupt streams) or the plain bytes
        // before compressing (valid streams of bad IDX data).
        let bytes = if compressed { apply(&gzip(&images), &muts) } else { gzip(&apply(&images, &muts)) };
        let tmp = tempfile::tempdir().unwrap();
        let p = write(tmp.path(), "train-images-idx3-ubyte.gz", &bytes);
        check_idx(&p, None)?;
        check_dataset(&p, 1, 7)?;
    }
}

// ---------------------------------------------------------------- CIFAR-10

fn cifar_records(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for r in 0..n {
        v.push((r % 10) as u8);
        v.extend((0..3072).map(|i| ((i * 7 + r * 13) % 256) as u8));
    }
    v
}

proptest! {
    #![proptest_config(fixed_seed(64, 0x1d8_0002))]

    #[test]
    fn cifar_mutations(muts in mutations(), as_file in any::<bool>()) {
        use_test_budget();
        let tmp = tempfile::tempdir().unwrap();
        let p = write(tmp.path(), "data_batch_1.bin", &apply(&cifar_records(3), &muts));
        write(tmp.path(), "data_batch_2.bin", &cifar_records(1));
        check_dataset(if as_file { &p } else { tmp.path() }, 3, 32)?;
    }
}

// ---------------------------------------------------------------- image folders

fn png_bytes() -> Vec<u8> {
    let img = image::RgbImage::from_fn(5, 3, |x, y| image::Rgb([(x * 50) as u8, (y * 80) as u8, 200]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("encoding to memory");
    out.into_inner()
}

fn jpeg_bytes() -> Vec<u8> {
    let img = image::RgbImage::from_fn(9, 6, |x, y| image::Rgb([(x * 25) as u8, (y * 40) as u8, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).expect("encoding to memory");
    out.into_inner()
}

/// Sets a PNG's IHDR width and height and fixes the chunk's CRC, so the
/// decoder believes the sizes (the header-field edit a CRC would hide).
fn png_with_size(png: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut v = png.to_vec();
    // 8-byte signature, 4-byte length, "IHDR", then width and height.
    v[16..20].copy_from_slice(&width.to_be_bytes());
    v[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&v[12..29]);
    v[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    v
}

proptest! {
    #![proptest_config(fixed_seed(48, 0x1d8_0003))]

    #[test]
    fn image_folder_mutations(muts in mutations(), jpeg in any::<bool>(), size in (big_u32(), big_u32())) {
        use_test_budget();
        let tmp = tempfile::tempdir().unwrap();
        let (name, base) = if jpeg {
            ("a.jpg", jpeg_bytes())
        } else {
            ("a.png", png_with_size(&png_bytes(), size.0, size.1))
        };
        write(tmp.path(), name, &apply(&base, &muts));
        write(tmp.path(), "b.png", &png_bytes());
        check_dataset(tmp.path(), 3, 4)?;
        check_dataset(tmp.path(), 1, 4)?;
    }
}

// ---------------------------------------------------------------- checkpoints

fn small_model() -> UNetConfig {
    UNetConfig {
        in_ch: 1,
        ch: 4,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![2],
        dropout: 0.0,
        groups: 2,
        image_size: 4,
        num_classes: 0,
    }
}

fn checkpoint_bytes(dir: &Path) -> Vec<u8> {
    let cfg = TrainConfig::for_model(small_model(), PathBuf::from("data"));
    let model = UNet::new(cfg.model.clone(), 3, DType::F32, &Device::Cpu).unwrap();
    let hyper = AdamWParams { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let ema = Ema::new(&model.params, 0.999, true).unwrap();
    let opt = AdamW::new(&model.params, hyper).unwrap();
    let state = TrainState {
        step: 7,
        loader: LoaderState { epoch: 1, position: 3 },
        ema_updates: 7,
        loss_watch: Default::default(),
    };
    let p = dir.join("base.safetensors");
    checkpoint::save(&p, &cfg, &model, &ema, &opt, state).unwrap();
    std::fs::read(&p).unwrap()
}

/// Replaces the `k`-th run of digits in the safetensors JSON header (shapes,
/// offsets, and the numbers of the config held in the metadata) by `value`,
/// and fixes the header length.
fn edit_header_number(file: &[u8], k: usize, value: &str) -> Vec<u8> {
    edit_header_number_after(file, "", k, value)
}

/// [`edit_header_number`] among the digit runs of the string value of the
/// metadata `key`: `"train_config"` edits the run's config.
fn edit_header_number_after(file: &[u8], key: &str, k: usize, value: &str) -> Vec<u8> {
    let Some(n) = file.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize) else {
        return file.to_vec();
    };
    let Some(header) = file.get(8..8 + n) else { return file.to_vec() };
    let text = String::from_utf8_lossy(header).into_owned();
    // The value's span: from the key to the first quote not escaped.
    let (from, to) = match text.find(key) {
        Some(k) if !key.is_empty() => {
            let start = k + key.len() + 3;
            let b = text.as_bytes();
            let end = (start..b.len()).find(|&i| b[i] == b'"' && b[i - 1] != b'\\').unwrap_or(b.len());
            (start, end)
        }
        _ => (0, text.len()),
    };
    let runs: Vec<(usize, usize)> = {
        let b = text.as_bytes();
        let mut v = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                let s = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                v.push((s, i));
            } else {
                i += 1;
            }
        }
        v.retain(|&(s, _)| s >= from && s < to);
        v
    };
    let Some(&(s, e)) = runs.get(k % runs.len().max(1)) else { return file.to_vec() };
    let new_header = format!("{}{}{}", &text[..s], value, &text[e..]);
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(new_header.as_bytes());
    out.extend_from_slice(&file[8 + n..]);
    out
}

fn check_checkpoint(path: &Path) -> Result<(), TestCaseError> {
    let r = within_cap("checkpoint", || {
        let c = Checkpoint::open(path)?;
        let model = c.load_model(&Device::Cpu, true)?;
        let mut raw = c.load_model(&Device::Cpu, false)?;
        let hyper = AdamWParams { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let mut ema = Ema::new(&raw.params, 0.999, true)?;
        let mut opt = AdamW::new(&raw.params, hyper)?;
        c.load_training_state(&raw, &mut ema, &mut opt)?;
        raw.params.zero_grads();
        Ok::<_, diffuse_trainer::Error>((c.state, model.num_params(), Footprint::of(c.model_config())?.params))
    })?;
    one_line(&r)?;
    if let Ok((_, built, counted)) = r {
        prop_assert_eq!(built as u64, counted);
    }
    Ok(())
}

proptest! {
    #![proptest_config(fixed_seed(64, 0x1d8_0004))]

    #[test]
    fn checkpoint_mutations(muts in mutations(), edit in any::<usize>(), value in prop_oneof![
        Just("0".to_string()), Just("100000".to_string()), Just("4294967295".to_string()),
        Just("18446744073709551615".to_string()), Just("99999999999999999999999".to_string()),
        (0u64..5000).prop_map(|v| v.to_string())
    ], mode in 0u8..3) {
        use_test_budget();
        let tmp = tempfile::tempdir().unwrap();
        let base = checkpoint_bytes(tmp.path());
        let bytes = match mode {
            0 => apply(&base, &muts),
            1 => edit_header_number(&base, edit, &value),
            _ => edit_header_number_after(&base, "train_config", edit, &value),
        };
        let p = write(tmp.path(), "ckpt-00000007.safetensors", &bytes);
        check_checkpoint(&p)?;
    }
}

// ---------------------------------------------------------------- config JSON

proptest! {
    #![proptest_config(fixed_seed(128, 0x1d8_0005))]

    #[test]
    fn config_json_mutations(muts in prop::collection::vec(mutation(), 0..3), edit in any::<usize>(), value in prop_oneof![
        Just("0"), Just("2"), Just("64"), Just("100000"), Just("4294967295"), Just("18446744073709551615"),
        Just("1e308"), Just("-1"), Just("NaN")
    ], train in any::<bool>()) {
        use_test_budget();
        let text = if train {
            TrainConfig::for_model(UNetConfig::mnist(), PathBuf::from("data")).to_json()
        } else {
            serde_json::to_string(&UNetConfig::mnist()).unwrap()
        };
        // A number edit as a header edit, then byte mutations.
        let mut fake = (text.len() as u64).to_le_bytes().to_vec();
        fake.extend_from_slice(text.as_bytes());
        let edited = edit_header_number(&fake, edit, value);
        let bytes = apply(&edited[8..], &muts);
        let s = String::from_utf8_lossy(&bytes);
        let r = within_cap("config", || -> Result<u64, Box<dyn std::error::Error>> {
            if train {
                let c = TrainConfig::from_json(&s)?;
                c.validate()?;
                Ok(memory_budget::training_need(&c, true)?.total())
            } else {
                let c = UNetConfig::from_json(&s)?;
                Ok(Footprint::of(&c)?.params)
            }
        })?;
        one_line(&r)?;
    }
}

// ---------------------------------------------------------------- diffusers import

/// The diffusers fixture: a small UNet2DModel folder with its scheduler.
fn diffusers_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/diffusers/ddpm-1ch")
}

/// A JSON field edit: `field` picks a key of the object (one past the end
/// adds an unknown one); `None` removes it.
#[derive(Clone, Debug)]
struct FieldEdit {
    field: usize,
    value: Option<Value>,
}

/// Values that break configs: wrong types, zero, big numbers and lists
/// that describe models far past the memory budget.
fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        Just(json!("linear")),
        Just(json!("squaredcos_cap_v2")),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(2)),
        Just(json!(16)),
        Just(json!(8192)),
        Just(json!(100_000)),
        Just(json!(u64::MAX)),
        Just(json!(1e308)),
        Just(json!(0.02)),
        Just(json!([])),
        Just(json!({})),
        Just(json!([8192, 8192, 8192])),
        Just(json!([512, 1024, 2048])),
        Just(json!([8, 8, 16, 32])),
        Just(json!([8, 8, 16, 32, 64, 128, 256, 512, 1024])),
        Just(json!(["AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"])),
        Just(json!(["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D"])),
        Just(json!([4096, 4096])),
        any::<u32>().prop_map(|v| json!(v)),
    ]
}

fn field_edits() -> impl Strategy<Value = Vec<FieldEdit>> {
    let edit = (any::<usize>(), prop::option::weighted(0.85, json_value()))
        .prop_map(|(field, value)| FieldEdit { field, value });
    prop::collection::vec(edit, 1..4)
}

fn edit_json(text: &[u8], edits: &[FieldEdit]) -> Vec<u8> {
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(text) else { return text.to_vec() };
    for e in edits {
        let keys: Vec<String> = obj.keys().cloned().collect();
        let key = keys.get(e.field % (keys.len() + 1)).cloned().unwrap_or_else(|| "an_unknown_field".into());
        match &e.value {
            Some(v) => obj.insert(key, v.clone()),
            None => obj.remove(&key),
        };
    }
    serde_json::to_vec_pretty(&Value::Object(obj)).unwrap_or_default()
}

/// Imports `dir` as `diffuse import` does; an imported model's checkpoint
/// opens and holds the model it reported.
fn check_import(dir: &Path) -> Result<(), TestCaseError> {
    let out = dir.join("imported.safetensors");
    let r = within_cap("diffusers import", || diffusers::import(dir, &out))?;
    one_line(&r)?;
    if let Ok(imported) = r {
        let c = within_cap("imported checkpoint", || Checkpoint::open(&out))?;
        let c = c.map_err(|e| TestCaseError::fail(format!("the imported checkpoint does not open: {e}")))?;
        prop_assert_eq!(c.model_config(), &imported.model.config);
        let model = c.load_model(&Device::Cpu, true).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(model.num_params(), imported.model.num_params());
    } else {
        prop_assert!(!out.exists(), "a failed import left {}", out.display());
    }
    Ok(())
}

/// Copies the fixture folder into a fresh temp dir.
fn diffusers_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for name in [diffusers::CONFIG_FILE, diffusers::SCHEDULER_FILE, diffusers::WEIGHTS_FILE] {
        std::fs::copy(diffusers_fixture().join(name), tmp.path().join(name)).unwrap();
    }
    tmp
}

proptest! {
    #![proptest_config(fixed_seed(200, 0x1d8_0006))]

    #[test]
    fn diffusers_import_mutations(edits in field_edits(), muts in prop::collection::vec(mutation(), 0..3),
        edit in any::<usize>(), value in prop_oneof![
            Just("0".to_string()), Just("1".to_string()), Just("100000".to_string()),
            Just("4294967295".to_string()), Just("18446744073709551615".to_string()),
            Just("99999999999999999999999".to_string()), (0u64..400_000).prop_map(|v| v.to_string())
        ], target in 0u8..5) {
        use_test_budget();
        let tmp = diffusers_copy();
        let file = match target {
            0 | 1 => diffusers::CONFIG_FILE,
            2 => diffusers::SCHEDULER_FILE,
            _ => diffusers::WEIGHTS_FILE,
        };
        let path = tmp.path().join(file);
        let base = std::fs::read(&path).unwrap();
        let bytes = match target {
            // JSON field edits, then (sometimes) byte mutations of the text.
            0 | 2 => apply(&edit_json(&base, &edits), &muts),
            // Number edits of the text: a UNet of another size.
            1 => {
                let mut fake = (base.len() as u64).to_le_bytes().to_vec();
                fake.extend_from_slice(&base);
                edit_header_number(&fake, edit, &value)[8..].to_vec()
            }
            // Shapes and offsets in the safetensors header.
            3 => edit_header_number(&base, edit, &value),
            _ if muts.is_empty() => apply(&base, &[Mutation::Truncate { keep: edit }]),
            _ => apply(&base, &muts),
        };
        std::fs::write(&path, bytes).unwrap();
        check_import(tmp.path())?;
    }
}

/// A config.json describing a model past the memory budget is refused
/// before the model is built (it was built, then aborted in the allocator).
#[test]
fn diffusers_import_of_a_model_past_the_budget_is_refused() {
    use_test_budget();
    let tmp = diffusers_copy();
    let path = tmp.path().join(diffusers::CONFIG_FILE);
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["block_out_channels"] = json!([128, 256, 256]);
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let out = tmp.path().join("imported.safetensors");
    let (r, peak) = peak_bytes(|| diffusers::import(tmp.path(), &out));
    let e = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("more than the memory limit"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    assert!(peak < 16 << 20, "allocated {peak} bytes before refusing");
}

/// The budget the tests run under is what the parsers see.
#[test]
fn tests_run_under_the_test_budget() {
    use_test_budget();
    assert_eq!(diffuse_trainer::memory_budget::MemoryBudget::global().unwrap().limit, TEST_BUDGET);
}
