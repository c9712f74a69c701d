//! PNG grids, trajectories, NPY arrays, the loss plot and atomic writes.

use diffuse_trainer::image_io::{
    load_npy, make_grid, npy_bytes, render_loss_plot, save_grid, save_loss_plot, save_npy, save_trajectory,
    signed_to_unit, unit_to_u8, PlotOptions, ValueRange, GRID_PADDING,
};
use diffuse_trainer::Error;

fn pattern(n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    (0..n * c * h * w).map(|i| (i % 97) as f32 / 96.0).collect()
}

fn no_temp_files(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "left a temporary file {name}");
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
fn npy_header_bytes_are_exact() {
    let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let bytes = npy_bytes(&data, &[2, 1, 3, 4]).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    assert_eq!(&bytes[6..8], &[1, 0]);
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "data must start 64-byte aligned");
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 3, 4), }"));
    assert!(header.ends_with('\n'));
    assert!(header[..hlen - 1].trim_end().ends_with('}'));
    assert_eq!(bytes.len(), 10 + hlen + 24 * 4);
    let body = &bytes[10 + hlen..];
    assert_eq!(&body[..4], &(-3.0f32).to_le_bytes());
    assert_eq!(&body[4..8], &(-2.5f32).to_le_bytes());
    // The exact NumPy header for a 1-D array: "(5,)" with its trailing comma.
    let b = npy_bytes(&[0.0; 5], &[5]).unwrap();
    let h = std::str::from_utf8(&b[10..]).unwrap();
    assert!(h.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }"));
    // Shape mismatch.
    assert!(matches!(npy_bytes(&[0.0; 5], &[2, 3]), Err(Error::Shape(_))));
}

#[test]
fn npy_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("samples.npy");
    let data = pattern(3, 3, 5, 7);
    save_npy(&p, &data, &[3, 3, 5, 7]).unwrap();
    let (back, shape) = load_npy(&p).unwrap();
    assert_eq!(shape, vec![3, 3, 5, 7]);
    assert_eq!(back, data);
    // Overwrite in place.
    save_npy(&p, &data[..105], &[1, 3, 5, 7]).unwrap();
    assert_eq!(load_npy(&p).unwrap().1, vec![1, 3, 5, 7]);
    no_temp_files(tmp.path());
    // A truncated file is an error.
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
    assert!(matches!(load_npy(&p), Err(Error::Truncated { .. })));
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

#[test]
fn loss_plot_draws_something() {
    let tmp = tempfile::tempdir().unwrap();
    let pts: Vec<(u64, f64)> = (0..2000u64)
        .map(|s| {
            let noise = ((s * 7919) % 101) as f64 / 101.0 - 0.5;
            (s, 0.8 * (-(s as f64) / 400.0).exp() + 0.03 + 0.02 * noise)
        })
        .collect();
    for log_y in [true, false] {
        let opts = PlotOptions { log_y, ..Default::default() };
        let img = render_loss_plot(&pts, &opts);
        assert_eq!((img.width, img.height, img.channels), (800, 480, 3));
        let dark_blue = img.pixels.chunks_exact(3).filter(|p| p == &[20, 60, 170]).count();
        assert!(dark_blue > 500, "moving average drawn ({dark_blue} px)");
        let black = img.pixels.chunks_exact(3).filter(|p| p == &[0, 0, 0]).count();
        assert!(black > 500, "axes and labels drawn ({black} px)");
    }
    let p = tmp.path().join("loss.png");
    save_loss_plot(&p, &pts, &PlotOptions::default()).unwrap();
    let img = image::open(&p).unwrap();
    assert_eq!((img.width(), img.height()), (800, 480));
    // Degenerate inputs still give a picture.
    render_loss_plot(&[], &PlotOptions::default());
    render_loss_plot(&[(5, 0.1)], &PlotOptions::default());
    render_loss_plot(&[(0, f64::NAN), (1, -1.0), (2, 0.0)], &PlotOptions::default());
    no_temp_files(tmp.path());
}

#[test]
fn writing_into_a_missing_directory_is_an_error() {
    let e = save_npy("/nonexistent/dir/x.npy", &[1.0], &[1]).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/dir/x.npy"));
}
