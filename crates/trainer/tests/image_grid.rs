//! PNG grids and trajectories, and the value-to-byte mapping of images.

use diffuse_trainer::image_grid::{make_grid, save_grid, save_trajectory, GRID_PADDING};
use diffuse_trainer::raster::{signed_to_unit, unit_to_u8, ValueRange};
use diffuse_trainer::Error;
use diffuse_unet::atomic_file::TEMP_PREFIX;

/// Fails if `dir` holds a temporary file of an atomic write.
fn no_temp_files(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(TEMP_PREFIX), "left a temporary file {name}");
    }
}

#[test]
fn value_conversion() {
    assert_eq!(ValueRange::Signed.to_u8(-1.0), 0);
    assert_eq!(ValueRange::Signed.to_u8(1.0), 255);
    assert_eq!(ValueRange::Signed.to_u8(0.0), 128);
    assert_eq!(ValueRange::Unit.to_u8(0.5), 128);
    assert_eq!(ValueRange::Unit.to_u8(-3.0), 0);
    assert_eq!(ValueRange::Unit.to_u8(7.0), 255);
    assert_eq!(ValueRange::Unit.to_u8(f32::NAN), 0);
    assert_eq!(signed_to_unit(-1.0), 0.0);
    assert_eq!(unit_to_u8(1.0 / 255.0), 1);
}

#[test]
fn png_grid_has_the_right_size_and_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("grid.png");
    let (n, c, h, w) = (10, 1, 28, 28);
    let data: Vec<f32> = (0..n * c * h * w).map(|i| ((i / (h * w)) as f32 / 9.0) * 2.0 - 1.0).collect();
    save_grid(&p, &data, [n, c, h, w], 4, ValueRange::Signed).unwrap();
    let img = image::open(&p).unwrap();
    assert_eq!(img.color(), image::ColorType::L8);
    let pad = GRID_PADDING as u32;
    assert_eq!(pad, 2);
    assert_eq!(img.width(), 4 * (28 + pad) + pad);
    assert_eq!(img.height(), 3 * (28 + pad) + pad);
    let g = img.to_luma8();
    // Padding is black, image k fills its cell with its value.
    assert_eq!(g.get_pixel(0, 0).0[0], 0);
    assert_eq!(g.get_pixel(2, 2).0[0], 0); // image 0 = -1
    let k = 6; // row 1, col 2
    let (x, y) = (2 + 2 * 30 + 5, 2 + 30 + 5);
    assert_eq!(g.get_pixel(x, y).0[0], ValueRange::Signed.to_u8(k as f32 / 9.0 * 2.0 - 1.0));
    assert_eq!(g.get_pixel(2 + 3 * 30 + 27, 2 + 2 * 30 + 27).0[0], 0, "empty cell");
    no_temp_files(tmp.path());
}

#[test]
fn rgb_grid_keeps_channels_apart() {
    let (n, c, h, w) = (2, 3, 4, 5);
    let mut data = vec![0f32; n * c * h * w];
    // Image 1: red plane 1, green 0.5, blue 0.
    for i in 0..h * w {
        data[60 + i] = 1.0;
        data[60 + 20 + i] = 0.5;
    }
    let g = make_grid(&data, [n, c, h, w], 8, ValueRange::Unit).unwrap();
    assert_eq!((g.width, g.height, g.channels), (2 * 7 + 2, 4 + 4, 3));
    let o = (2 * g.width + 2 + 7) * 3;
    assert_eq!(&g.pixels[o..o + 3], &[255, 128, 0]);
    let png = g.to_png().unwrap();
    let back = image::load_from_memory(&png).unwrap();
    assert_eq!(back.color(), image::ColorType::Rgb8);
    assert_eq!(back.to_rgb8().as_raw(), &g.pixels);
    // Errors.
    assert!(matches!(make_grid(&data[1..], [n, c, h, w], 8, ValueRange::Unit), Err(Error::Shape(_))));
    assert!(make_grid(&data, [n, c, h, w], 0, ValueRange::Unit).is_err());
    assert!(make_grid(&data[..40], [2, 2, 2, 5], 1, ValueRange::Unit).is_err());
}

#[test]
fn trajectory_rows_are_samples_and_columns_timesteps() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("traj.png");
    let (n, h, w, t) = (3, 6, 5, 4);
    let frames: Vec<Vec<f32>> =
        (0..t).map(|ti| (0..n * h * w).map(|i| ((i / (h * w)) * 10 + ti) as f32 / 40.0).collect()).collect();
    let refs: Vec<&[f32]> = frames.iter().map(|f| f.as_slice()).collect();
    save_trajectory(&p, &refs, [n, 1, h, w], ValueRange::Unit).unwrap();
    let g = image::open(&p).unwrap().to_luma8();
    assert_eq!(g.width() as usize, t * (w + 2) + 2);
    assert_eq!(g.height() as usize, n * (h + 2) + 2);
    for s in 0..n {
        for ti in 0..t {
            let x = 2 + ti * (w + 2) + 1;
            let y = 2 + s * (h + 2) + 1;
            let want = unit_to_u8((s * 10 + ti) as f32 / 40.0);
            assert_eq!(g.get_pixel(x as u32, y as u32).0[0], want, "sample {s} frame {ti}");
        }
    }
}
