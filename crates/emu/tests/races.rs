//! The hazard detector (tests/kernels/emu_races.cu): each planted race is a
//! launch error naming the kernel, the memory and both threads, in every
//! thread order; each correct twin computes the right result in every
//! order with the detector on.

mod common;

use common::{emu, launch, Rng, ORDERS};
use diffuse_emu::{Arg, EmuError, Emulator, ThreadOrder};

fn race_error(r: Result<(), EmuError>, needles: &[&str]) -> String {
    let msg = match r {
        Err(EmuError::Race(m)) => m,
        other => panic!("expected a race error, got {other:?}"),
    };
    for n in needles {
        assert!(msg.contains(n), "`{n}` missing from: {msg}");
    }
    eprintln!("caught: {msg}");
    msg
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

/// Per-block sums (f64) of `x` and of its squares, broadcast to every element.
fn block_sums(x: &[f32], nt: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut s, mut q) = (Vec::new(), Vec::new());
    for chunk in x.chunks(nt) {
        let a: f64 = chunk.iter().map(|&v| v as f64).sum();
        let b: f64 = chunk.iter().map(|&v| v as f64 * v as f64).sum();
        s.extend(std::iter::repeat_n(a, nt));
        q.extend(std::iter::repeat_n(b, nt));
    }
    (s, q)
}

fn close(got: &[f32], want: &[f64], tol: f64) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(&g, &w)| (g as f64 - w).abs() <= tol * (1.0 + w.abs()))
}

#[test]
fn block_reduction_without_its_last_barrier() {
    let emu = emu();
    let (nb, nt) = (3usize, 256usize);
    let x = random(nb * nt, 11);
    let (want_s, want_q) = block_sums(&x, nt);
    let dx = emu.upload(&x).unwrap();
    let (ds, dq) = (emu.alloc(nb * nt * 4).unwrap(), emu.alloc(nb * nt * 4).unwrap());
    let args = [Arg::Ptr(ds), Arg::Ptr(dq), Arg::Ptr(dx)];
    for o in ORDERS {
        emu.set_thread_order(o);
        launch(&emu, "emu_fixed_block_sum", nb as u32, nt as u32, 0, &args).unwrap();
        assert!(close(&emu.download::<f32>(ds, nb * nt).unwrap(), &want_s, 1e-5), "order {o}");
        assert!(close(&emu.download::<f32>(dq, nb * nt).unwrap(), &want_q, 1e-5), "order {o}");
        let r = launch(&emu, "emu_race_block_sum", nb as u32, nt as u32, 0, &args);
        race_error(
            r,
            &["emu_race_block_sum", "shared memory race", "`partials`", "different warps", "emu_races.cu:", "warp "],
        );
    }
}

/// What the issue describes: with the detector off, the missing barrier
/// passes in the orders that run every thread to each collective before
/// any goes on, and only the warp-ahead orders expose it, as wrong sums.
#[test]
fn without_the_detector_only_warp_ahead_orders_expose_the_reduction_race() {
    let emu = emu();
    emu.set_race_check(false);
    let (nb, nt) = (2usize, 256usize);
    let x = random(nb * nt, 12);
    let (want_s, want_q) = block_sums(&x, nt);
    let dx = emu.upload(&x).unwrap();
    let (ds, dq) = (emu.alloc(nb * nt * 4).unwrap(), emu.alloc(nb * nt * 4).unwrap());
    let args = [Arg::Ptr(ds), Arg::Ptr(dq), Arg::Ptr(dx)];
    for o in ORDERS {
        emu.set_thread_order(o);
        launch(&emu, "emu_race_block_sum", nb as u32, nt as u32, 0, &args).unwrap();
        let ok = close(&emu.download::<f32>(ds, nb * nt).unwrap(), &want_s, 1e-5)
            && close(&emu.download::<f32>(dq, nb * nt).unwrap(), &want_q, 1e-5);
        let warp_ahead = matches!(o, ThreadOrder::WarpAhead | ThreadOrder::WarpAheadReverse);
        assert_eq!(ok, !warp_ahead, "order {o}: the racy reduction {}", if ok { "passed" } else { "failed" });
    }
}

#[test]
fn tiled_gemm_without_the_barrier_after_the_tile_load() {
    let emu = emu();
    let n = 40usize; // not a multiple of the tile: partial tiles too
    let (a, b) = (random(n * n, 21), random(n * n, 22));
    let want: Vec<f64> =
        (0..n * n).map(|e| (0..n).map(|k| a[e / n * n + k] as f64 * b[k * n + e % n] as f64).sum()).collect();
    let (da, db, dc) = (emu.upload(&a).unwrap(), emu.upload(&b).unwrap(), emu.alloc(n * n * 4).unwrap());
    let args = [Arg::Ptr(dc), Arg::Ptr(da), Arg::Ptr(db), Arg::I32(n as i32)];
    let grid = (n.div_ceil(16) as u32, n.div_ceil(16) as u32);
    for o in ORDERS {
        emu.set_thread_order(o);
        launch(&emu, "emu_fixed_gemm_tile", grid, (16u32, 16u32), 0, &args).unwrap();
        assert!(close(&emu.download::<f32>(dc, n * n).unwrap(), &want, 1e-5), "order {o}");
        let r = launch(&emu, "emu_race_gemm_tile", grid, (16u32, 16u32), 0, &args);
        let msg = race_error(r, &["emu_race_gemm_tile", "shared memory race", "emu_races.cu:", "tiled_gemm"]);
        assert!(msg.contains("`As`") || msg.contains("`Bs`"), "names the tile: {msg}");
        assert!(msg.contains("read-after-write") || msg.contains("write-after-read"), "{msg}");
    }
}

#[test]
fn two_blocks_writing_one_output() {
    let emu = emu();
    let (rows, cols) = (6usize, 300usize);
    let x = random(rows * cols, 31);
    let want: Vec<f64> = x.chunks(cols).map(|r| r.iter().map(|&v| v as f64).sum()).collect();
    let dx = emu.upload(&x).unwrap();
    let out = emu.alloc(rows * 4).unwrap();
    let args = [Arg::Ptr(out), Arg::Ptr(dx), Arg::I32(cols as i32)];
    for o in ORDERS {
        emu.set_thread_order(o);
        launch(&emu, "emu_fixed_two_blocks_one_output", rows as u32, 128u32, 0, &args).unwrap();
        assert!(close(&emu.download::<f32>(out, rows).unwrap(), &want, 1e-5), "order {o}");
        let r = launch(&emu, "emu_race_two_blocks_one_output", rows as u32, 128u32, 0, &args);
        let msg = race_error(
            r,
            &[
                "emu_race_two_blocks_one_output",
                "global memory race between blocks",
                "writes device allocation",
                &format!("0x{out:x} ({} bytes)", rows * 4),
                "thread 0 (threadIdx (0,0,0))",
                "which block (",
                "wrote",
                "emu_races.cu:",
            ],
        );
        // the two blocks of one output are 2k and 2k+1
        assert!(
            msg.contains("at byte offset 0") || msg.contains("at byte offset 4") || msg.contains("at byte offset 8")
        );
    }
}

#[test]
fn a_block_reading_another_blocks_output() {
    let emu = emu();
    let n = 8usize;
    let x = random(n, 41);
    let dx = emu.upload(&x).unwrap();
    let out = emu.alloc(n * 4).unwrap();
    for o in ORDERS {
        emu.set_thread_order(o);
        let r = launch(&emu, "emu_race_reads_other_blocks_output", n as u32, 32u32, 0, &[Arg::Ptr(out), Arg::Ptr(dx)]);
        let msg = race_error(r, &["emu_race_reads_other_blocks_output", "global memory race between blocks"]);
        assert!(msg.contains("reads device allocation") || msg.contains("writes device allocation"), "{msg}");
    }
}

#[test]
fn lanes_reading_neighbours_without_syncwarp() {
    let emu = emu();
    let (nb, nt) = (2usize, 96usize); // three warps per block
    let x = random(nb * nt, 51);
    let want: Vec<f64> = (0..nb * nt).map(|i| x[(i & !31) + ((i + 1) & 31)] as f64).collect();
    let dx = emu.upload(&x).unwrap();
    let out = emu.alloc(nb * nt * 4).unwrap();
    let args = [Arg::Ptr(out), Arg::Ptr(dx)];
    for o in ORDERS {
        emu.set_thread_order(o);
        launch(&emu, "emu_fixed_missing_syncwarp", nb as u32, nt as u32, 0, &args).unwrap();
        assert!(close(&emu.download::<f32>(out, nb * nt).unwrap(), &want, 0.0), "order {o}");
        launch(&emu, "emu_fixed_exchange_after_shuffle", nb as u32, 64u32, 0, &args).unwrap();
        let r = launch(&emu, "emu_race_missing_syncwarp", nb as u32, nt as u32, 0, &args);
        let msg = race_error(
            r,
            &[
                "emu_race_missing_syncwarp",
                "shared memory race",
                "`slots`",
                "same warp, and no __syncwarp() or warp collective between them",
                "rotate_in_warp",
            ],
        );
        assert!(msg.contains("read-after-write") || msg.contains("write-after-read"), "{msg}");
    }
}

#[test]
fn atomics_are_not_races() {
    let emu = emu();
    let n = 1000usize;
    let mut rng = Rng(61);
    let keys: Vec<u32> = (0..n).map(|_| rng.next_u32()).collect();
    let mut want = [0u32; 8];
    for k in &keys {
        want[(k & 7) as usize] += 1;
    }
    let dk = emu.upload(&keys).unwrap();
    let bins = emu.alloc(32).unwrap();
    for o in ORDERS {
        emu.set_thread_order(o);
        emu.memset(bins, 0, 32).unwrap();
        launch(
            &emu,
            "emu_fixed_atomic_histogram",
            n.div_ceil(128) as u32,
            128u32,
            0,
            &[Arg::Ptr(bins), Arg::Ptr(dk), Arg::I32(n as i32)],
        )
        .unwrap();
        assert_eq!(emu.download::<u32>(bins, 8).unwrap(), want, "order {o}");
    }
}

/// The detector can be turned off; the emulator is usable after a race.
#[test]
fn the_detector_can_be_turned_off() {
    let emu = Emulator::new().unwrap();
    assert!(emu.race_check(), "on by default");
    let x = emu.upload(&random(64, 71)).unwrap();
    let out = emu.alloc(64 * 4).unwrap();
    let args = [Arg::Ptr(out), Arg::Ptr(x)];
    assert!(matches!(launch(&emu, "emu_race_missing_syncwarp", 1u32, 64u32, 0, &args), Err(EmuError::Race(_))));
    emu.set_race_check(false);
    launch(&emu, "emu_race_missing_syncwarp", 1u32, 64u32, 0, &args).unwrap();
    emu.set_race_check(true);
    launch(&emu, "emu_fixed_missing_syncwarp", 1u32, 64u32, 0, &args).unwrap();
}
