//! End-to-end tests of `diffuse denoise`, `inpaint` and `img2img` on a tiny
//! model trained here on the bundled digits: the model beats the noisy image
//! at several noise levels, inpainting keeps the known pixels exactly,
//! img2img at strength 0 is the identity, PSNR/SSIM agree with scikit-image,
//! and every bad input gives one `error:` line, a non-zero exit and no file.

use diffuse_trainer::metrics::{psnr_per_image, ssim_per_image, SsimOptions};
use diffuse_trainer::raster::RasterImage;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn diffuse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run diffuse")
}

fn ok(args: &[&str]) -> (String, String) {
    let o = diffuse(args);
    let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(o.status.success(), "diffuse {args:?} failed:\n{out}\n{err}");
    (out, err)
}

/// Runs a command that must fail with one clear error line; returns it.
fn fails(args: &[&str]) -> String {
    let o = diffuse(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "diffuse {args:?} should have failed");
    assert!(err.starts_with("error: "), "diffuse {args:?}: expected one clear error line, got:\n{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "diffuse {args:?}: more than one line:\n{err}");
    assert!(!err.contains("panicked"), "diffuse {args:?} panicked:\n{err}");
    err
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

const DIGITS: &str = "data/mnist10k/t10k-images-idx3-ubyte.gz";

/// A tiny-mnist model trained for 200 steps (shared by the tests).
fn model() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let run = dir.join("run");
        ok(&[
            "train",
            "--config",
            "tiny-mnist",
            "--device",
            "cpu",
            "--batch-size",
            "8",
            "--steps",
            "200",
            "--lr",
            "1e-3",
            "--sample-every",
            "0",
            "--log-every",
            "50",
            "--checkpoint-every",
            "200",
            "--out",
            &s(&run),
        ]);
        run
    })
}

fn read_png(p: &Path) -> image::GrayImage {
    image::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).to_luma8()
}

/// Pixel (x, y) of panel k of a side-by-side PNG of 28x28 panels (2 px padding).
fn panel_px(img: &image::GrayImage, k: u32, x: u32, y: u32) -> u8 {
    img.get_pixel(2 + k * 30 + x, 2 + y)[0]
}

/// A 28x28 grey PNG of seeded random bytes with a brighter blob.
fn write_grey_png(path: &Path, seed: u64) -> Vec<u8> {
    let pixels: Vec<u8> = (0..28 * 28)
        .map(|i| {
            let (y, x) = (i / 28, i % 28);
            let blob = if (10..18).contains(&y) && (8..20).contains(&x) { 150 } else { 0 };
            let r = (diffuse_tensor::philox::bits(seed, 0, 0, i as u64) % 100) as usize;
            (blob + r).min(255) as u8
        })
        .collect();
    RasterImage { width: 28, height: 28, channels: 1, pixels: pixels.clone() }.save_png(path).unwrap();
    pixels
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn psnr_and_ssim_of_rgb_images_of_awkward_size_match_scikit_image() {
    // Made by (numpy 2.4.6, scikit-image 0.26.0):
    //   python3 -m venv v && v/bin/pip install scikit-image numpy pillow
    //   x[n,c,i,j] = ((n*131 + c*71 + i*31 + j*17 + (i*j)%7) % 97) / 96
    //   y = clip(x + (((i*13 + j*7 + c*5 + n*3) % 11) - 5) / 40, 0, 1), both cast to float32
    //   peak_signal_noise_ratio(x[n], y[n], data_range=1.0)
    //   structural_similarity(x[n], y[n], gaussian_weights=True, sigma=1.5,
    //       use_sample_covariance=False, data_range=1.0, channel_axis=0)
    let (n, c, h, w) = (2, 3, 17, 29);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for n in 0..n {
        for c in 0..c {
            for i in 0..h {
                for j in 0..w {
                    let v = ((n * 131 + c * 71 + i * 31 + j * 17 + (i * j) % 7) % 97) as f64 / 96.0;
                    let d = (((i * 13 + j * 7 + c * 5 + n * 3) % 11) as f64 - 5.0) / 40.0;
                    x.push(v as f32);
                    y.push((v as f32 as f64 + d).clamp(0.0, 1.0) as f32);
                }
            }
        }
    }
    let shape = [n, c, h, w];
    let psnr = psnr_per_image(&x, &y, shape, 1.0).unwrap();
    let ssim = ssim_per_image(&x, &y, shape, &SsimOptions::default()).unwrap();
    let want_psnr = [22.360489593132247, 22.376351400242278];
    let want_ssim = [0.9657864390741295, 0.9665762446330478];
    for k in 0..2 {
        assert!((psnr[k] - want_psnr[k]).abs() < 1e-6, "psnr {k}: {} vs {}", psnr[k], want_psnr[k]);
        assert!((ssim[k] - want_ssim[k]).abs() < 1e-6, "ssim {k}: {} vs {}", ssim[k], want_ssim[k]);
    }
}

#[test]
fn the_model_lowers_the_error_at_several_noise_levels() {
    let run = model();
    let dir = tempfile::tempdir().unwrap();
    for sigma in ["0.1", "0.2", "0.4"] {
        let out = dir.path().join(format!("d{sigma}"));
        let (stdout, _) = ok(&[
            "denoise",
            "--checkpoint",
            &s(run),
            "--device",
            "cpu",
            "--input",
            DIGITS,
            "--n",
            "12",
            "--add-noise",
            sigma,
            "--steps",
            "20",
            "--out",
            &s(&out),
        ]);
        println!("{stdout}");
        let m = json(&out.join("metrics.json"));
        let mean = |k: &str, q: &str| m["mean"][k][q].as_f64().unwrap();
        let (noisy, model) = (mean("noisy", "psnr_db"), mean("model", "psnr_db"));
        // PSNR of the noisy image is about -20 log10(sigma).
        let want = -20.0 * sigma.parse::<f64>().unwrap().log10();
        assert!((noisy - want).abs() < 0.5, "sigma {sigma}: noisy PSNR {noisy}, expected about {want}");
        // Clipping alone gains a lot on the black background of digits; the
        // model must do better than that.
        let clipped = mean("noisy_clipped", "psnr_db");
        assert!(model > clipped + 2.0, "sigma {sigma}: model {model} dB vs noisy clipped {clipped} dB");
        assert!(mean("model", "ssim") > mean("noisy", "ssim"), "sigma {sigma}: SSIM");
        assert!(mean("gaussian", "psnr_db") > noisy, "sigma {sigma}: the tuned filter should help too");
        assert_eq!(m["images"].as_array().unwrap().len(), 12);
        let panel = read_png(&out.join("t10k-images-idx3-ubyte-00000.png"));
        assert_eq!(panel.dimensions(), (3 * 30 + 2, 32));
        assert!(out.join("overview.png").is_file());
    }
}

#[test]
fn ddpm_denoising_of_one_png_with_a_given_t_writes_png_and_json() {
    let run = model();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("digit.png");
    write_grey_png(&input, 3);
    let out = dir.path().join("one.png");
    let (stdout, _) = ok(&[
        "denoise",
        "--checkpoint",
        &s(run),
        "--input",
        &s(&input),
        "--t",
        "30",
        "--sampler",
        "ddpm",
        "--out",
        &s(&out),
        "--device",
        "cpu",
    ]);
    assert!(stdout.contains("31 model call(s)"), "{stdout}");
    assert_eq!(read_png(&out).dimensions(), (2 * 30 + 2, 32));
    let m = json(&dir.path().join("one-metrics.json"));
    assert_eq!(m["t"], 30);
    assert!(m.get("mean").is_none(), "no clean reference, no scores");
}

#[test]
fn inpainting_keeps_the_known_pixels_exactly() {
    let run = model();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    let pixels = write_grey_png(&input, 7);
    // A mask picture: a white diagonal band to fill.
    let mask: Vec<u8> = (0..28 * 28usize).map(|i| if (i / 28).abs_diff(i % 28) < 4 { 255 } else { 0 }).collect();
    let mask_path = dir.path().join("mask.png");
    RasterImage { width: 28, height: 28, channels: 1, pixels: mask.clone() }.save_png(&mask_path).unwrap();
    for (label, extra) in
        [("picture", vec!["--mask", mask_path.to_str().unwrap()]), ("box", vec!["--mask-shape", "box"])]
    {
        let out = dir.path().join(format!("{label}.png"));
        let mut args = vec!["inpaint", "--device", "cpu", "--steps", "20", "--jump-length", "3", "--jump-count", "2"];
        let (ck, i, o) = (s(run), s(&input), s(&out));
        args.extend(["--checkpoint", &ck, "--input", &i, "--out", &o]);
        args.extend(extra.iter().copied());
        ok(&args);
        let img = read_png(&out);
        let (mut kept, mut changed) = (0, 0);
        for y in 0..28u32 {
            for x in 0..28u32 {
                let k = (y * 28 + x) as usize;
                let fill = if label == "box" { (7..21).contains(&y) && (7..21).contains(&x) } else { mask[k] == 255 };
                assert_eq!(panel_px(&img, 0, x, y), pixels[k], "{label}: input panel at ({x}, {y})");
                if fill {
                    changed += usize::from(panel_px(&img, 2, x, y) != pixels[k]);
                } else {
                    assert_eq!(panel_px(&img, 2, x, y), pixels[k], "{label}: known pixel ({x}, {y}) changed");
                    kept += 1;
                }
            }
        }
        assert!(kept > 300 && changed > 20, "{label}: kept {kept}, changed {changed}");
    }
}

#[test]
fn img2img_at_strength_zero_is_the_input_and_runs_from_rgb_jpeg_of_another_size() {
    let run = model();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    let pixels = write_grey_png(&input, 11);
    let out0 = dir.path().join("s0.png");
    ok(&["img2img", "--checkpoint", &s(run), "--input", &s(&input), "--strength", "0", "--out", &s(&out0)]);
    let img = read_png(&out0);
    for y in 0..28 {
        for x in 0..28 {
            assert_eq!(panel_px(&img, 1, x, y), pixels[(y * 28 + x) as usize]);
        }
    }
    // An RGB JPEG of 40x30: converted to grey and resized, with warnings.
    let rgb = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 128]));
    let jpeg = dir.path().join("colour.jpg");
    rgb.save(&jpeg).unwrap();
    let out = dir.path().join("both");
    let (stdout, stderr) = ok(&[
        "img2img",
        "--checkpoint",
        &s(run),
        "--input",
        &s(&jpeg),
        &s(&input),
        "--strength",
        "0.3",
        "--steps",
        "20",
        "--device",
        "cpu",
        "--out",
        &s(&out),
    ]);
    assert!(stdout.contains("t = 299"), "{stdout}");
    assert!(stderr.contains("resized") && stderr.contains("converted to grey"), "{stderr}");
    for f in ["colour.png", "in.png", "overview.png"] {
        assert!(out.join(f).is_file(), "{f}");
    }
}

/// No file or folder in `dir` but those listed.
fn only(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    found.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want, "files written on failure");
}

#[test]
fn bad_inputs_give_one_clear_error_and_write_nothing() {
    let run = model();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = d.join("good.png");
    write_grey_png(&good, 1);
    let text = d.join("notes.png");
    std::fs::write(&text, "not an image at all").unwrap();
    let small_mask = d.join("small-mask.png");
    RasterImage::filled(20, 20, 1, 255).save_png(&small_mask).unwrap();
    let missing = d.join("missing.png");
    let out = d.join("out.png");
    let ck = s(run);
    let (g, t, m, o) = (s(&good), s(&text), s(&missing), s(&out));
    let base = |verb: &'static str| -> Vec<String> {
        let mut v = vec![verb.to_string(), "--checkpoint".into(), ck.clone(), "--device".into(), "cpu".into()];
        v.extend(["--out".to_string(), o.clone()]);
        v.extend(match verb {
            "denoise" => vec!["--sigma".to_string(), "0.2".into()],
            "inpaint" => vec!["--mask-shape".to_string(), "box".into()],
            _ => vec!["--strength".to_string(), "0.5".into()],
        });
        v
    };
    let mut cases: Vec<(Vec<String>, &str)> = Vec::new();
    for verb in ["denoise", "inpaint", "img2img"] {
        let mut missing_case = base(verb);
        missing_case.extend(["--input".to_string(), m.clone()]);
        cases.push((missing_case, "no such file"));
        let mut text_case = base(verb);
        text_case.extend(["--input".to_string(), t.clone()]);
        cases.push((text_case, "not a readable PNG/JPEG image"));
    }
    let mut mask_case = vec!["inpaint", "--checkpoint", &ck, "--input", &g, "--out", &o, "--mask"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    mask_case.push(s(&small_mask));
    cases.push((mask_case, "the mask is 20x20 but the input good is 28x28"));
    for strength in ["1.5", "-0.1"] {
        let v = ["img2img", "--checkpoint", &ck, "--input", &g, "--out", &o, "--strength", strength];
        cases.push((v.into_iter().map(String::from).collect(), "--strength must be in [0, 1]"));
    }
    let v = ["denoise", "--checkpoint", &ck, "--input", &g, "--out", &o];
    cases.push((v.into_iter().map(String::from).collect(), "say how noisy the input is"));
    let v = ["denoise", "--checkpoint", &ck, "--input", &g, "--out", &o, "--add-noise", "2"];
    cases.push((v.into_iter().map(String::from).collect(), "--add-noise must be in (0, 1]"));
    let v = ["denoise", "--checkpoint", &ck, "--input", &g, "--out", &o, "--sigma", "-0.2"];
    cases.push((v.into_iter().map(String::from).collect(), "--sigma must be in (0, 1]"));
    let v = ["denoise", "--checkpoint", &ck, "--input", &g, "--out", &s(&d.join("x.jpg")), "--sigma", "0.2"];
    cases.push((v.into_iter().map(String::from).collect(), "the output is a PNG"));
    let v = ["inpaint", "--checkpoint", &ck, "--input", &g, "--out", &o, "--mask-shape", "box", "--steps", "5000"];
    cases.push((v.into_iter().map(String::from).collect(), "--steps must be in 1..=1000"));
    let v = ["inpaint", "--checkpoint", &ck, "--input", &g, "--out", &o, "--mask", &t];
    cases.push((v.into_iter().map(String::from).collect(), "not a readable PNG/JPEG image"));
    let v = ["denoise", "--checkpoint", &ck, "--input", &g, "--out", &o, "--t", "1000"];
    cases.push((v.into_iter().map(String::from).collect(), "--t 1000 is outside"));
    let v = ["denoise", "--checkpoint", &ck, "--input", &g, "--out", &o, "--add-noise", "0"];
    cases.push((v.into_iter().map(String::from).collect(), "--add-noise must be in (0, 1]"));
    let v = ["denoise", "--checkpoint", &s(&d.join("nope")), "--input", &g, "--out", &o, "--sigma", "0.1"];
    cases.push((v.into_iter().map(String::from).collect(), "no such file or directory"));
    for (args, want) in &cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&refs);
        assert!(err.contains(want), "{refs:?}: expected {want:?} in {err}");
        only(d, &["good.png", "notes.png", "small-mask.png"]);
    }
}

#[test]
fn denoising_on_the_cuda_emulator_matches_the_cpu() {
    let run = model();
    let dir = tempfile::tempdir().unwrap();
    let mut psnr = Vec::new();
    for device in ["cpu", "emu"] {
        let out = dir.path().join(device);
        ok(&[
            "denoise",
            "--checkpoint",
            &s(run),
            "--device",
            device,
            "--input",
            DIGITS,
            "--n",
            "2",
            "--add-noise",
            "0.3",
            "--steps",
            "20",
            "--out",
            &s(&out),
        ]);
        psnr.push(json(&out.join("metrics.json"))["mean"]["model"]["psnr_db"].as_f64().unwrap());
    }
    assert!((psnr[0] - psnr[1]).abs() < 0.01, "cpu {} dB vs emu {} dB", psnr[0], psnr[1]);
}
