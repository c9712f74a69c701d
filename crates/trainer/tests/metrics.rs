//! MSE, PSNR and SSIM against hand-computed values and scikit-image.

use diffuse_trainer::metrics::{
    gaussian_window, mse, psnr, psnr_per_image, ssim, ssim_per_image, ssim_with, SsimOptions,
};
use diffuse_trainer::Error;

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} vs {b} (tolerance {tol})");
}

fn image(h: usize, w: usize, f: impl Fn(usize, usize) -> f64) -> Vec<f32> {
    (0..h * w).map(|i| f(i / w, i % w) as f32).collect()
}

/// The two 16x16 test images (exact in f32 and f64 alike).
fn pair16() -> (Vec<f32>, Vec<f32>) {
    let x = image(16, 16, |r, c| ((r * 7 + c * 13) % 17) as f64 / 16.0);
    let y = image(16, 16, |r, c| ((r * 5 + c * 3 + (r * c) % 7) % 19) as f64 / 18.0);
    (x, y)
}

/// Two smooth 20x24 images.
fn pair_smooth() -> (Vec<f32>, Vec<f32>) {
    let a = image(20, 24, |r, c| 0.5 + 0.4 * (r as f64 * 0.3).sin() * (c as f64 * 0.2).cos());
    let b = image(20, 24, |r, c| {
        0.5 + 0.4 * (r as f64 * 0.3 + 0.2).sin() * (c as f64 * 0.2).cos() + 0.05 * (((r * c) % 3) as f64 - 1.0)
    });
    (a, b)
}

/// A deterministic pseudo-random sequence in [-0.5, 0.5).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f64 / (1u64 << 24) as f64 - 0.5) as f32
        })
        .collect()
}

#[test]
fn mse_and_psnr_hand_values() {
    let a = vec![0.0f32; 100];
    let b = vec![0.1f32; 100];
    close(mse(&a, &b).unwrap(), 0.01, 1e-9);
    close(psnr(&a, &b, 1.0).unwrap(), 20.0, 1e-6);
    close(psnr(&a, &b, 2.0).unwrap(), 20.0 + 20.0 * 2f64.log10(), 1e-6);
    let c = [0.0f32, 1.0, 0.5, 0.25];
    let d = [1.0f32, 1.0, 0.0, 0.25];
    close(mse(&c, &d).unwrap(), (1.0 + 0.25) / 4.0, 1e-12);
    // Identical inputs: MSE 0 and PSNR +inf.
    assert_eq!(mse(&c, &c).unwrap(), 0.0);
    assert_eq!(psnr(&c, &c, 1.0).unwrap(), f64::INFINITY);
    // Per image.
    let mut e = a.clone();
    e.extend_from_slice(&b);
    let mut f = a.clone();
    f.extend_from_slice(&a);
    let per = psnr_per_image(&e, &f, [2, 1, 10, 10], 1.0).unwrap();
    assert_eq!(per[0], f64::INFINITY);
    close(per[1], 20.0, 1e-6);
    // Against scikit-image's peak_signal_noise_ratio.
    let (x, y) = pair16();
    close(mse(&x, &y).unwrap(), 0.16314847760755308, 1e-12);
    close(psnr(&x, &y, 1.0).unwrap(), 7.874169744027613, 1e-9);
}

#[test]
fn ssim_of_identical_images_is_one() {
    let (x, _) = pair16();
    close(ssim(&x, &x, [1, 1, 16, 16]).unwrap(), 1.0, 1e-12);
    let z = vec![0.3f32; 3 * 2 * 32 * 32];
    close(ssim(&z, &z, [3, 2, 32, 32]).unwrap(), 1.0, 1e-12);
}

#[test]
fn ssim_of_constant_images_is_the_luminance_term() {
    // sigma = 0 everywhere: SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    let (a, b) = (0.2f32, 0.6f32);
    let x = vec![a; 15 * 15];
    let y = vec![b; 15 * 15];
    let c1 = (0.01f64 * 1.0).powi(2);
    let (a, b) = (a as f64, b as f64);
    let want = (2.0 * a * b + c1) / (a * a + b * b + c1);
    close(ssim(&x, &y, [1, 1, 15, 15]).unwrap(), want, 1e-9);
}

#[test]
fn ssim_matches_scikit_image() {
    // skimage.metrics.structural_similarity(x, y, gaussian_weights=True,
    // sigma=1.5, use_sample_covariance=False, data_range=...) on the same
    // images (float32 values taken to float64).
    let (x, y) = pair16();
    close(ssim(&x, &y, [1, 1, 16, 16]).unwrap(), 0.1349850191334378, 1e-7);
    let (a, b) = pair_smooth();
    close(ssim(&a, &b, [1, 1, 20, 24]).unwrap(), 0.8868625512883355, 1e-6);
    let a2: Vec<f32> = a.iter().map(|v| v * 2.0 - 1.0).collect();
    let b2: Vec<f32> = b.iter().map(|v| v * 2.0 - 1.0).collect();
    close(ssim_with(&a2, &b2, [1, 1, 20, 24], &SsimOptions::with_data_range(2.0)).unwrap(), 0.7205829162558656, 1e-6);
}

#[test]
fn ssim_averages_channels_and_images() {
    let (x, y) = pair16();
    // Image 0: channel 0 identical, channel 1 the test pair.
    // Image 1: both channels the test pair.
    let mut a = x.clone();
    a.extend_from_slice(&x);
    a.extend_from_slice(&x);
    a.extend_from_slice(&x);
    let mut b = x.clone();
    b.extend_from_slice(&y);
    b.extend_from_slice(&y);
    b.extend_from_slice(&y);
    let v = 0.1349850191334378;
    let per = ssim_per_image(&a, &b, [2, 2, 16, 16], &SsimOptions::default()).unwrap();
    close(per[0], (1.0 + v) / 2.0, 1e-7);
    close(per[1], v, 1e-7);
    close(ssim(&a, &b, [2, 2, 16, 16]).unwrap(), (per[0] + per[1]) / 2.0, 1e-12);
}

#[test]
fn ssim_is_symmetric() {
    let (x, y) = pair16();
    let s1 = ssim(&x, &y, [1, 1, 16, 16]).unwrap();
    let s2 = ssim(&y, &x, [1, 1, 16, 16]).unwrap();
    close(s1, s2, 1e-14);
}

#[test]
fn more_noise_lowers_ssim_and_psnr() {
    let (a, _) = pair_smooth();
    let n = noise(a.len(), 9);
    let mut last_ssim = 1.0;
    let mut last_psnr = f64::INFINITY;
    for level in [0.01f32, 0.05, 0.1, 0.3, 1.0] {
        let b: Vec<f32> = a.iter().zip(&n).map(|(v, e)| v + level * e).collect();
        let s = ssim(&a, &b, [1, 1, 20, 24]).unwrap();
        let p = psnr(&a, &b, 1.0).unwrap();
        assert!(s < last_ssim, "ssim {s} at noise {level} not below {last_ssim}");
        assert!(p < last_psnr);
        last_ssim = s;
        last_psnr = p;
    }
    assert!(last_ssim < 0.5);
}

#[test]
fn small_images_use_a_smaller_window() {
    // 5x5: the window shrinks to 5x5, one SSIM position.
    let x = image(5, 5, |r, c| (r * 5 + c) as f64 / 24.0);
    let y = image(5, 5, |r, c| ((r * 5 + c) % 7) as f64 / 6.0);
    let s = ssim(&x, &y, [1, 1, 5, 5]).unwrap();
    // By hand: Gaussian-weighted statistics over the one 5x5 window.
    let g = gaussian_window(5, 1.5);
    let (mut mx, mut my, mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for r in 0..5 {
        for c in 0..5 {
            let wgt = g[r] * g[c];
            let (a, b) = (x[r * 5 + c] as f64, y[r * 5 + c] as f64);
            mx += wgt * a;
            my += wgt * b;
            xx += wgt * a * a;
            yy += wgt * b * b;
            xy += wgt * a * b;
        }
    }
    let (c1, c2) = (1e-4, 9e-4);
    let (vx, vy, cxy) = (xx - mx * mx, yy - my * my, xy - mx * my);
    let want = (2.0 * mx * my + c1) * (2.0 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
    close(s, want, 1e-12);
    close(gaussian_window(11, 1.5).iter().sum::<f64>(), 1.0, 1e-15);
}

#[test]
fn metric_shape_errors() {
    assert!(matches!(mse(&[1.0, 2.0], &[1.0]), Err(Error::Shape(_))));
    assert!(matches!(mse(&[], &[]), Err(Error::Shape(_))));
    assert!(psnr(&[1.0], &[0.0], 0.0).is_err());
    let x = vec![0.0f32; 64];
    assert!(matches!(ssim(&x, &x, [1, 1, 8, 9]), Err(Error::Shape(_))));
    let even = SsimOptions { window: 10, ..Default::default() };
    assert!(ssim_with(&x, &x, [1, 1, 8, 8], &even).is_err());
}
