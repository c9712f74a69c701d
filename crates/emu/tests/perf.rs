//! Speed: the fiber switch must make a 256^3 SGEMM with 16 x 16 blocks run
//! in well under a second. Prints the timings it measures. A timing check,
//! so not part of the default run (speed is benchmarked, never asserted in
//! CI): `cargo test -p diffuse-emu --test perf -- --ignored` on a quiet
//! machine.

mod common;

use common::{emu, launch, Rng};
use diffuse_emu::Arg;
use std::time::Instant;

#[test]
#[ignore = "timing check: run with --ignored on a quiet machine"]
fn sgemm_256_cubed_runs_in_well_under_a_second() {
    let emu = emu();
    emu.set_ucontext(false); // measure the fast switch even under DIFFUSE_EMU_UCONTEXT=1
    let fast = emu.switch_kind() == "x86-64 fibers";
    let n = 256usize;
    let mut rng = Rng(1);
    let a: Vec<f32> = (0..n * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let b: Vec<f32> = (0..n * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let (da, db) = (emu.upload(&a).unwrap(), emu.upload(&b).unwrap());
    let dc = emu.alloc(n * n * 4).unwrap();
    let args = [Arg::Ptr(dc), Arg::Ptr(da), Arg::Ptr(db), Arg::I32(n as i32), Arg::I32(n as i32), Arg::I32(n as i32)];
    let grid = ((n / 16) as u32, (n / 16) as u32);
    let mut report = Vec::new();
    // The switch is measured with the hazard detector off (its hooks are
    // still called); its cost with the detector on is printed, not asserted.
    for race_check in [false, true] {
        emu.set_race_check(race_check);
        for kernel in ["emu_test_sgemm_naive", "emu_test_sgemm_tiled"] {
            launch(&emu, kernel, grid, (16u32, 16u32), 0, &args).unwrap(); // warm up
            let mut best = f64::MAX;
            for _ in 0..if race_check { 1 } else { 3 } {
                let t = Instant::now();
                launch(&emu, kernel, grid, (16u32, 16u32), 0, &args).unwrap();
                best = best.min(t.elapsed().as_secs_f64());
            }
            let detector = if race_check { " (hazard detector on)" } else { "" };
            report.push(format!("{kernel}{detector}: {:.1} ms", best * 1e3));
            if fast && !race_check {
                assert!(best < 1.0, "{kernel} took {best:.3} s");
            }
        }
    }
    emu.set_race_check(false);
    // spot-check the result
    let c: Vec<f32> = emu.download(dc, n * n).unwrap();
    for &(i, j) in &[(0usize, 0usize), (17, 200), (255, 255)] {
        let want: f32 = (0..n).map(|k| a[i * n + k] * b[k * n + j]).sum();
        assert!((c[i * n + j] - want).abs() < 1e-4);
    }
    let kind = emu.switch_kind();
    emu.set_ucontext(true);
    let t = Instant::now();
    launch(&emu, "emu_test_sgemm_tiled", grid, (16u32, 16u32), 0, &args).unwrap();
    report.push(format!("emu_test_sgemm_tiled with ucontext: {:.1} ms", t.elapsed().as_secs_f64() * 1e3));
    eprintln!("256^3 SGEMM, {} workers, {kind}: {}", emu.workers(), report.join(", "));
}
