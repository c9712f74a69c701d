//! Datasets (MNIST IDX, CIFAR-10 binary, image folders) and the loader.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use diffuse_trainer::data::{epoch_permutation, flip_decision};
use diffuse_trainer::{Dataset, DatasetKind, Error, Loader, LoaderConfig, LoaderState};

fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist10k")
}

fn gunzip(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An IDX images file: header for `n` images of `rows x cols`, then `data`.
fn idx_images(magic: u32, n: u32, rows: u32, cols: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [magic, n, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The error's message is one line that names the file.
fn assert_one_line(e: &Error, needle: &str) {
    let s = e.to_string();
    assert!(!s.contains('\n'), "multi-line error: {s}");
    assert!(s.contains(needle), "error {s:?} does not mention {needle:?}");
}

// ---------------------------------------------------------------- MNIST

#[test]
fn mnist_bundled_directory_loads() {
    let ds = Dataset::open(mnist_dir(), 1, 28).unwrap();
    assert_eq!(ds.kind(), DatasetKind::Mnist);
    assert_eq!(ds.len(), 9000);
    assert_eq!(ds.dims(), (1, 28, 28));
    assert_eq!(ds.images().len(), 9000 * 784);
    assert!(ds.images().iter().all(|&v| (-1.0..=1.0).contains(&v)));
    assert_eq!(ds.images().iter().cloned().fold(f32::MIN, f32::max), 1.0);
    assert_eq!(ds.images().iter().cloned().fold(f32::MAX, f32::min), -1.0);
    // The first digit is not blank: background -1 with some bright strokes.
    let first = ds.image(0);
    assert_eq!(first[0], -1.0);
    assert!(first.iter().filter(|&&v| v > 0.0).count() > 30);
    let labels = ds.labels().expect("labels beside the images");
    assert_eq!(labels.len(), 9000);
    assert!(labels.iter().all(|&l| l <= 9));
    for d in 0..10u8 {
        assert!(labels.iter().filter(|&&l| l == d).count() > 700);
    }
}

#[test]
fn mnist_file_path_and_test_split() {
    let ds = Dataset::open(mnist_dir().join("t10k-images-idx3-ubyte.gz"), 1, 28).unwrap();
    assert_eq!(ds.len(), 1000);
    assert_eq!(ds.labels().map(|l| l.len()), Some(1000));
}

#[test]
fn mnist_gzip_and_plain_are_the_same_and_detected_by_content() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = gunzip(&mnist_dir().join("t10k-images-idx3-ubyte.gz"));
    // Plain bytes behind a .gz name, gzip bytes behind a plain name.
    let a = write(tmp.path(), "plain.gz", &plain);
    let b = write(tmp.path(), "compressed", &gzip(&plain));
    let da = Dataset::open(&a, 1, 28).unwrap();
    let db = Dataset::open(&b, 1, 28).unwrap();
    let dc = Dataset::open(mnist_dir().join("t10k-images-idx3-ubyte.gz"), 1, 28).unwrap();
    assert_eq!(da.images(), db.images());
    assert_eq!(da.images(), dc.images());
    // No labels file beside them.
    assert!(da.labels().is_none());
    // A plain-IDX directory works as well as the gzip one.
    let dir = tmp.path().join("plain_dir");
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "train-images-idx3-ubyte", &plain);
    write(&dir, "train-labels-idx1-ubyte", &gunzip(&mnist_dir().join("t10k-labels-idx1-ubyte.gz")));
    let dd = Dataset::open(&dir, 1, 28).unwrap();
    assert_eq!(dd.images(), dc.images());
    assert_eq!(dd.labels(), dc.labels());
}

#[test]
fn mnist_values_scale_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "x", &idx_images(0x803, 1, 1, 3, &[0, 255, 51]));
    let ds = Dataset::open(&p, 1, 1).err().unwrap();
    // 1x3 images do not fit a 1x1 model.
    assert!(matches!(ds, Error::ConfigMismatch { .. }));
    let p = write(tmp.path(), "y", &idx_images(0x803, 3, 1, 1, &[0, 255, 51]));
    let ds = Dataset::open(&p, 1, 1).unwrap();
    assert_eq!(ds.images(), &[-1.0, 1.0, 51.0 / 127.5 - 1.0]);
}

#[test]
fn mnist_wrong_model_config_is_a_clear_error() {
    let e = Dataset::open(mnist_dir(), 3, 28).unwrap_err();
    assert!(matches!(e, Error::ConfigMismatch { .. }), "{e}");
    assert_one_line(&e, "1x28x28");
    assert_one_line(&e, "3x28x28");
    let e = Dataset::open(mnist_dir(), 1, 32).unwrap_err();
    assert!(matches!(e, Error::ConfigMismatch { .. }), "{e}");
    assert_one_line(&e, "1x32x32");
}

#[test]
fn missing_path_is_not_found() {
    let e = Dataset::open("/nonexistent/diffuse/data", 1, 28).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert_one_line(&e, "/nonexistent/diffuse/data");
}

#[test]
fn truncated_idx_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    // Header says 10 images of 4x4 but only 3 follow.
    let p = write(tmp.path(), "trunc", &idx_images(0x803, 10, 4, 4, &[7u8; 48]));
    let e = Dataset::open(&p, 1, 4).unwrap_err();
    assert!(matches!(e, Error::Truncated { expected: 176, found: 64, .. }), "{e}");
    assert_one_line(&e, "trunc");
    // Truncated inside the header.
    let p = write(tmp.path(), "short", &[0, 0, 8, 3, 0, 0]);
    let e = Dataset::open(&p, 1, 4).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
    // The same, gzip-compressed: the decompressed size is what counts.
    let p = write(tmp.path(), "trunc.gz", &gzip(&idx_images(0x803, 10, 4, 4, &[7u8; 48])));
    let e = Dataset::open(&p, 1, 4).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
}

#[test]
fn wrong_magic_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    // A labels file given as images.
    let e = Dataset::open(mnist_dir().join("train-labels-idx1-ubyte.gz"), 1, 28).unwrap_err();
    match &e {
        Error::BadMagic { found, expected, .. } => {
            assert_eq!((*found, *expected), (0x801, 0x803));
        }
        other => panic!("expected BadMagic, got {other}"),
    }
    assert_one_line(&e, "0x00000801");
    // Random text.
    let p = write(tmp.path(), "notes.txt", b"hello world, this is not IDX");
    let e = Dataset::open(&p, 1, 28).unwrap_err();
    assert!(matches!(e, Error::BadMagic { .. }), "{e}");
}

#[test]
fn corrupt_gzip_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(mnist_dir().join("t10k-images-idx3-ubyte.gz")).unwrap();
    // Cut in half.
    let p = write(tmp.path(), "half.gz", &good[..good.len() / 2]);
    let e = Dataset::open(&p, 1, 28).unwrap_err();
    assert!(matches!(e, Error::CorruptGzip { .. }), "{e}");
    assert_one_line(&e, "truncated");
    // Bytes overwritten in the middle of the deflate stream.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    for b in &mut bad[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let p = write(tmp.path(), "flipped.gz", &bad);
    let e = Dataset::open(&p, 1, 28).unwrap_err();
    assert!(matches!(e, Error::CorruptGzip { .. }), "{e}");
    assert_one_line(&e, "flipped.gz");
    // Just the gzip magic.
    let p = write(tmp.path(), "magic_only", &[0x1f, 0x8b]);
    let e = Dataset::open(&p, 1, 28).unwrap_err();
    assert!(matches!(e, Error::CorruptGzip { .. }), "{e}");
}

#[test]
fn bad_dims_and_empty_idx_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    // More bytes than the header says.
    let p = write(tmp.path(), "long", &idx_images(0x803, 1, 2, 2, &[1u8; 5]));
    let e = Dataset::open(&p, 1, 2).unwrap_err();
    assert!(matches!(e, Error::BadDims { .. }), "{e}");
    // Zero-sized images.
    let p = write(tmp.path(), "zero", &idx_images(0x803, 2, 0, 28, &[]));
    let e = Dataset::open(&p, 1, 28).unwrap_err();
    assert!(matches!(e, Error::BadDims { .. }), "{e}");
    // No images.
    let p = write(tmp.path(), "none", &idx_images(0x803, 0, 28, 28, &[]));
    let e = Dataset::open(&p, 1, 28).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e}");
    // Absurd dimensions do not allocate or overflow.
    let p = write(tmp.path(), "huge", &idx_images(0x803, u32::MAX, u32::MAX, u32::MAX, &[]));
    assert!(Dataset::open(&p, 1, 28).is_err());
}

#[test]
fn labels_that_do_not_match_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "train-images-idx3-ubyte", &idx_images(0x803, 3, 2, 2, &[0u8; 12]));
    let mut labels = Vec::new();
    labels.extend_from_slice(&0x801u32.to_be_bytes());
    labels.extend_from_slice(&2u32.to_be_bytes());
    labels.extend_from_slice(&[1, 2]);
    write(tmp.path(), "train-labels-idx1-ubyte", &labels);
    let e = Dataset::open(tmp.path(), 1, 2).unwrap_err();
    assert!(matches!(e, Error::Labels { .. }), "{e}");
    assert_one_line(&e, "2 labels for 3 images");
}

// ---------------------------------------------------------------- CIFAR-10

/// A CIFAR-10 record whose R, G and B planes are filled with `r`, `g`, `b`
/// except pixel (row 1, col 2) of the red plane, which is 255.
fn cifar_record(label: u8, r: u8, g: u8, b: u8) -> Vec<u8> {
    let mut v = vec![label];
    v.extend(std::iter::repeat_n(r, 1024));
    v.extend(std::iter::repeat_n(g, 1024));
    v.extend(std::iter::repeat_n(b, 1024));
    v[1 + 32 + 2] = 255;
    v
}

#[test]
fn cifar_synthetic_batches_load() {
    let tmp = tempfile::tempdir().unwrap();
    let mut f1 = Vec::new();
    for (k, lab) in [3u8, 0, 9].iter().enumerate() {
        f1.extend(cifar_record(*lab, 10 * k as u8, 100, 200));
    }
    write(tmp.path(), "data_batch_2.bin", &f1);
    // data_batch_10 sorts after data_batch_2 numerically.
    write(tmp.path(), "data_batch_10.bin", &cifar_record(7, 0, 0, 0));
    // The test batch is not training data.
    write(tmp.path(), "test_batch.bin", &cifar_record(1, 0, 0, 0));
    let ds = Dataset::open(tmp.path(), 3, 32).unwrap();
    assert_eq!(ds.kind(), DatasetKind::Cifar10);
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.dims(), (3, 32, 32));
    assert_eq!(ds.labels(), Some(&[3u8, 0, 9, 7][..]));
    let img = ds.image(1);
    let s = |v: u8| v as f32 / 127.5 - 1.0;
    assert_eq!(img[0], s(10));
    assert_eq!(img[32 + 2], 1.0);
    assert_eq!(img[1024], s(100));
    assert_eq!(img[2048 + 1023], s(200));

    // One file on its own.
    let one = Dataset::open(tmp.path().join("data_batch_2.bin"), 3, 32).unwrap();
    assert_eq!(one.len(), 3);
    assert_eq!(one.images(), &ds.images()[..3 * 3072]);

    // The cifar-10-batches-bin subdirectory of an extracted archive.
    let outer = tempfile::tempdir().unwrap();
    let inner = outer.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&inner).unwrap();
    write(&inner, "data_batch_1.bin", &f1);
    assert_eq!(Dataset::open(outer.path(), 3, 32).unwrap().len(), 3);
}

#[test]
fn cifar_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut f = cifar_record(1, 0, 0, 0);
    f.extend(cifar_record(2, 0, 0, 0));
    // Partial record.
    let p = write(tmp.path(), "data_batch_1.bin", &f[..f.len() - 100]);
    let e = Dataset::open(&p, 3, 32).unwrap_err();
    assert!(matches!(e, Error::BadDims { .. }), "{e}");
    assert_one_line(&e, "partial");
    // The directory form reports the same.
    let e = Dataset::open(tmp.path(), 3, 32).unwrap_err();
    assert!(matches!(e, Error::BadDims { .. }), "{e}");
    // Wrong model configuration.
    let p = write(tmp.path(), "data_batch_1.bin", &f);
    let e = Dataset::open(&p, 1, 32).unwrap_err();
    assert!(matches!(e, Error::ConfigMismatch { .. }), "{e}");
    assert_one_line(&e, "3x32x32");
    let e = Dataset::open(&p, 3, 28).unwrap_err();
    assert!(matches!(e, Error::ConfigMismatch { .. }), "{e}");
    // Empty file.
    let p = write(tmp.path(), "data_batch_1.bin", &[]);
    let e = Dataset::open(&p, 3, 32).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e}");
    // A label out of range (CIFAR-100-like data).
    let mut r = cifar_record(1, 0, 0, 0);
    r[0] = 57;
    let p = write(tmp.path(), "data_batch_1.bin", &r);
    let e = Dataset::open(&p, 3, 32).unwrap_err();
    assert!(matches!(e, Error::Labels { .. }), "{e}");
}

// ---------------------------------------------------------------- folders

fn save_rgb(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    img.save(path).unwrap();
}

#[test]
fn folder_of_images_of_different_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Solid red, 40x30.
    save_rgb(&d.join("a.png"), 40, 30, |_, _| [255, 0, 0]);
    // 30x10: left third red, middle green, right third blue; the centre
    // crop of a 10x10 model keeps only the green.
    save_rgb(&d.join("b.png"), 30, 10, |x, _| match x / 10 {
        0 => [255, 0, 0],
        1 => [0, 255, 0],
        _ => [0, 0, 255],
    });
    // Grey 16-bit-free luma image, 7x23, in a subdirectory.
    std::fs::create_dir(d.join("sub")).unwrap();
    image::GrayImage::from_fn(7, 23, |_, _| image::Luma([128u8])).save(d.join("sub/c.PNG")).unwrap();
    // RGBA, 64x64.
    image::RgbaImage::from_fn(64, 64, |x, _| image::Rgba([0, 0, (x * 4) as u8, 255]))
        .save(d.join("sub/d.png"))
        .unwrap();
    // A JPEG.
    save_rgb(&d.join("e.jpg"), 50, 20, |_, _| [0, 0, 255]);
    // Not images: ignored.
    std::fs::write(d.join("README.txt"), "hello").unwrap();
    std::fs::write(d.join(".hidden.png"), "not a png").unwrap();

    let ds = Dataset::open(d, 3, 10).unwrap();
    assert_eq!(ds.kind(), DatasetKind::Folder);
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.dims(), (3, 10, 10));
    assert!(ds.labels().is_none());
    assert!(ds.images().iter().all(|&v| (-1.0..=1.0).contains(&v)));
    let plane = |i: usize, c: usize| &ds.image(i)[c * 100..(c + 1) * 100];
    // Sorted order: a.png, b.png, e.jpg, sub/c.PNG, sub/d.png.
    let near = |xs: &[f32], v: f32| xs.iter().all(|&x| (x - v).abs() <= 2.0 / 127.5);
    assert!(near(plane(0, 0), 1.0) && near(plane(0, 1), -1.0) && near(plane(0, 2), -1.0));
    assert!(near(plane(1, 0), -1.0) && near(plane(1, 1), 1.0) && near(plane(1, 2), -1.0));
    assert!(near(plane(2, 2), 1.0) && near(plane(2, 0), -1.0), "JPEG blue");
    let g = 128.0 / 127.5 - 1.0;
    assert!(near(plane(3, 0), g) && near(plane(3, 1), g) && near(plane(3, 2), g));
    // The horizontal ramp survives the resize: increasing left to right.
    let blue = plane(4, 2);
    assert!(blue[9] > blue[0] + 1.0);

    // Grey model.
    let grey = Dataset::open(d, 1, 12).unwrap();
    assert_eq!(grey.dims(), (1, 12, 12));
    assert_eq!(grey.len(), 5);
}

#[test]
fn folder_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Dataset::open(tmp.path(), 3, 32).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e}");
    assert_one_line(&e, "no PNG/JPEG images");
    std::fs::write(tmp.path().join("broken.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let e = Dataset::open(tmp.path(), 3, 32).unwrap_err();
    assert!(matches!(e, Error::Image { .. }), "{e}");
    assert_one_line(&e, "broken.png");
    // A model with 2 channels fits no dataset.
    let e = Dataset::open(tmp.path(), 2, 32).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}

// ---------------------------------------------------------------- loader

fn toy(n: usize) -> Dataset {
    // Image i is 1x2x3 with values i*10 + k, labels i % 256.
    let images: Vec<f32> = (0..n).flat_map(|i| (0..6).map(move |k| (i * 10 + k) as f32)).collect();
    let labels = (0..n).map(|i| i as u8).collect();
    Dataset::from_vec(images, Some(labels), 1, 2, 3, DatasetKind::Folder, "toy").unwrap()
}

#[test]
fn permutation_is_a_pure_function() {
    let p = epoch_permutation(1000, 42, 3);
    assert_eq!(p, epoch_permutation(1000, 42, 3));
    let mut s = p.clone();
    s.sort();
    assert_eq!(s, (0..1000).collect::<Vec<_>>());
    assert_ne!(p, epoch_permutation(1000, 42, 4));
    assert_ne!(p, epoch_permutation(1000, 43, 3));
    assert_ne!(p, (0..1000).collect::<Vec<_>>());
    let flips = (0..10_000).filter(|&i| flip_decision(7, 1, i)).count();
    assert!((4700..5300).contains(&flips), "{flips}");
    assert_eq!(flip_decision(7, 1, 5), flip_decision(7, 1, 5));
}

#[test]
fn loader_epochs_drop_the_partial_batch() {
    let mut l = Loader::new(toy(10), LoaderConfig::new(3, 1)).unwrap();
    assert_eq!(l.batches_per_epoch(), 3);
    assert_eq!(l.batch_shape(), [3, 1, 2, 3]);
    let mut seen = Vec::new();
    for k in 0..3 {
        let b = l.next_batch();
        assert_eq!(b.state, LoaderState { epoch: 0, position: 3 * k });
        assert_eq!(b.images.len(), 18);
        assert_eq!(b.shape, [3, 1, 2, 3]);
        for (j, &i) in b.indices.iter().enumerate() {
            assert_eq!(&b.images[j * 6..(j + 1) * 6], toy(10).image(i));
            assert_eq!(b.labels.as_ref().unwrap()[j], i as u8);
        }
        seen.extend(b.indices);
    }
    // Nine distinct images: the tenth is dropped this epoch.
    let mut s = seen.clone();
    s.sort();
    s.dedup();
    assert_eq!(s.len(), 9);
    assert_eq!(seen, epoch_permutation(10, 1, 0)[..9].to_vec());
    assert_eq!(l.state(), LoaderState { epoch: 1, position: 0 });
    let b = l.next_batch();
    assert_eq!(b.state.epoch, 1);
    assert_eq!(b.indices, epoch_permutation(10, 1, 1)[..3].to_vec());
}

#[test]
fn loader_is_deterministic_and_seed_dependent() {
    let cfg = LoaderConfig::new(4, 99).with_hflip(true);
    let a: Vec<_> = Loader::new(toy(23), cfg.clone()).unwrap().take(20).collect();
    let b: Vec<_> = Loader::new(toy(23), cfg.clone()).unwrap().take(20).collect();
    assert_eq!(a, b);
    let c: Vec<_> = Loader::new(toy(23), LoaderConfig::new(4, 100).with_hflip(true)).unwrap().take(20).collect();
    assert_ne!(a, c);
    // Without shuffling: dataset order.
    let mut l = Loader::new(toy(23), LoaderConfig::new(4, 99).with_shuffle(false)).unwrap();
    assert_eq!(l.next_batch().indices, vec![0, 1, 2, 3]);
    assert_eq!(l.next_batch().indices, vec![4, 5, 6, 7]);
}

#[test]
fn loader_flips_rows() {
    let mut l = Loader::new(toy(50), LoaderConfig::new(50, 5).with_hflip(true)).unwrap();
    let b = l.next_batch();
    let flipped = b.flipped.iter().filter(|&&f| f).count();
    assert!((10..40).contains(&flipped), "{flipped}");
    for (j, &i) in b.indices.iter().enumerate() {
        let src: Vec<f32> = toy(50).image(i).to_vec();
        let got = &b.images[j * 6..(j + 1) * 6];
        let want: Vec<f32> = if b.flipped[j] { vec![src[2], src[1], src[0], src[5], src[4], src[3]] } else { src };
        assert_eq!(got, &want[..]);
        assert_eq!(b.flipped[j], flip_decision(5, 0, j as u64));
    }
    // Off by default.
    let mut l = Loader::new(toy(50), LoaderConfig::new(50, 5)).unwrap();
    assert!(l.next_batch().flipped.iter().all(|&f| !f));
}

#[test]
fn loader_resumes_exactly_from_saved_state() {
    let cfg = LoaderConfig::new(5, 2024).with_hflip(true);
    let mut a = Loader::new(toy(37), cfg.clone()).unwrap();
    for _ in 0..11 {
        a.next_batch();
    }
    let saved = a.state();
    // Through JSON, as a checkpoint would store it.
    let json = serde_json::to_string(&saved).unwrap();
    let restored: LoaderState = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, saved);
    let rest_a: Vec<_> = (0..17).map(|_| a.next_batch()).collect();

    let mut b = Loader::new(toy(37), cfg).unwrap();
    b.set_state(restored).unwrap();
    let rest_b: Vec<_> = (0..17).map(|_| b.next_batch()).collect();
    assert_eq!(rest_a, rest_b);
    assert_eq!(a.state(), b.state());
}

#[test]
fn loader_argument_errors() {
    assert!(Loader::new(toy(4), LoaderConfig::new(0, 1)).is_err());
    let e = Loader::new(toy(4), LoaderConfig::new(5, 1)).unwrap_err();
    assert!(e.to_string().contains("larger than the dataset"), "{e}");
    let mut l = Loader::new(toy(10), LoaderConfig::new(4, 1)).unwrap();
    assert!(l.set_state(LoaderState { epoch: 3, position: 11 }).is_err());
    // A position that leaves less than a batch moves to the next epoch.
    l.set_state(LoaderState { epoch: 3, position: 8 }).unwrap();
    assert_eq!(l.state(), LoaderState { epoch: 4, position: 0 });
}

#[test]
fn the_parts_of_a_batch_are_its_slices_and_advance_as_the_whole_batch() {
    // 13 images, batches of 6 (an epoch ends after 2), flips on: every part
    // over several epochs is the slice of the whole batch, and the states agree
    let cfg = LoaderConfig::new(6, 17).with_hflip(true);
    let mut whole = Loader::new(toy(13), cfg.clone()).unwrap();
    for world in [1usize, 2, 3, 6] {
        let mut parts: Vec<Loader> = (0..world).map(|_| Loader::new(toy(13), cfg.clone()).unwrap()).collect();
        whole.set_state(LoaderState::default()).unwrap();
        for _ in 0..5 {
            let b = whole.next_batch();
            let local = 6 / world;
            for (r, l) in parts.iter_mut().enumerate() {
                let p = l.next_batch_part(r * local..(r + 1) * local);
                let (lo, hi) = (r * local, (r + 1) * local);
                assert_eq!(p.images, b.images[lo * 6..hi * 6], "world {world} rank {r}");
                assert_eq!(p.labels.as_deref(), b.labels.as_ref().map(|l| &l[lo..hi]));
                assert_eq!((p.indices.as_slice(), p.flipped.as_slice()), (&b.indices[lo..hi], &b.flipped[lo..hi]));
                assert_eq!((p.state, p.shape), (b.state, [local, 1, 2, 3]));
                assert_eq!(l.state(), whole.state());
            }
        }
    }
}
