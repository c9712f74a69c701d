//! The loss plot.

use diffuse_trainer::plot::{render_loss_plot, save_loss_plot, PlotOptions};
use diffuse_unet::atomic_file::TEMP_PREFIX;

/// Fails if `dir` holds a temporary file of an atomic write.
fn no_temp_files(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(TEMP_PREFIX), "left a temporary file {name}");
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
