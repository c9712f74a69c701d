//! Kernels with deliberate bugs (tests/kernels/emu_planted_bugs.cu): the
//! emulator must catch every one, as a launch error naming the kernel and
//! the threads involved, or as NaN poison in the output.

mod common;

use common::{emu, launch, ORDERS};
use diffuse_emu::{Arg, EmuError, ThreadOrder};

#[test]
fn missing_syncthreads_is_a_race_in_every_order() {
    let emu = emu();
    let (nb, nt) = (4usize, 256usize);
    let input: Vec<f32> = (0..nb * nt).map(|i| i as f32).collect();
    let x = emu.upload(&input).unwrap();
    let y = emu.alloc(nb * nt * 4).unwrap();
    let expected: Vec<f32> = (0..nb * nt).map(|g| if g % nt == 0 { 0.0 } else { input[g - 1] }).collect();
    let args = [Arg::Ptr(y), Arg::Ptr(x)];
    for o in ORDERS {
        emu.set_thread_order(o);
        launch(&emu, "emu_fixed_missing_sync", nb as u32, nt as u32, 0, &args).unwrap();
        assert_eq!(emu.download::<f32>(y, nb * nt).unwrap(), expected, "order {o}");
        let r = launch(&emu, "emu_bug_missing_sync", nb as u32, nt as u32, 0, &args);
        let msg = expect_fault(
            r,
            &["emu_bug_missing_sync", "shared memory race", "`s`", "byte offset", "emu_planted_bugs.cu:", "threadIdx"],
        );
        assert!(msg.contains("read-after-write") || msg.contains("write-after-read"), "{msg}");
    }
}

#[test]
fn missing_syncthreads_without_the_detector_is_caught_by_reverse_and_shuffled_orders() {
    let emu = emu();
    emu.set_race_check(false);
    let (nb, nt) = (4usize, 256usize);
    let input: Vec<f32> = (0..nb * nt).map(|i| i as f32).collect();
    let x = emu.upload(&input).unwrap();
    let y = emu.alloc(nb * nt * 4).unwrap();
    let expected: Vec<f32> = (0..nb * nt).map(|g| if g % nt == 0 { 0.0 } else { input[g - 1] }).collect();
    let run = |kernel: &str, order: ThreadOrder| {
        emu.set_thread_order(order);
        launch(&emu, kernel, nb as u32, nt as u32, 0, &[Arg::Ptr(y), Arg::Ptr(x)]).unwrap();
        emu.download::<f32>(y, nb * nt).unwrap()
    };
    // The fixed kernel is right in every order.
    for o in ORDERS {
        assert_eq!(run("emu_fixed_missing_sync", o), expected, "order {o}");
    }
    // The buggy one happens to pass forwards (each thread's left neighbour
    // already ran) -- the order a careless test would use...
    assert_eq!(run("emu_bug_missing_sync", ThreadOrder::Forward), expected);
    // ...and fails in the others: it reads shared memory no thread wrote yet.
    for o in [ThreadOrder::Reverse, ThreadOrder::Shuffle(1), ThreadOrder::Shuffle(2), ThreadOrder::WarpAheadReverse] {
        let got = run("emu_bug_missing_sync", o);
        let nans = got.iter().filter(|v| v.is_nan()).count();
        assert!(nans > 0, "order {o}: the missing barrier went unnoticed");
        assert_ne!(got, expected, "order {o}");
    }
}

fn expect_fault(r: Result<(), EmuError>, needles: &[&str]) -> String {
    let e = r.expect_err("the bug must be a launch error");
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "`{n}` missing from: {msg}");
    }
    msg
}

#[test]
fn out_of_bounds_write_hits_the_guard_page() {
    let emu = emu();
    let n = 1000; // 4000 bytes, a multiple of 16: the buffer ends at the guard page
    let y = emu.alloc(n * 4).unwrap();
    for o in ORDERS {
        emu.set_thread_order(o);
        let r = launch(&emu, "emu_bug_oob_write", 8u32, 128u32, 0, &[Arg::Ptr(y), Arg::I32(n as i32)]);
        let msg =
            expect_fault(r, &["emu_bug_oob_write", "out-of-bounds", "past the end of device allocation", "thread"]);
        assert!(matches!(
            launch(&emu, "emu_bug_oob_write", 8u32, 128u32, 0, &[Arg::Ptr(y), Arg::I32(n as i32)]),
            Err(EmuError::Fault(_))
        ));
        let _ = msg;
    }
    // The emulator is still usable afterwards.
    launch(&emu, "emu_bug_oob_write", 1u32, 100u32, 0, &[Arg::Ptr(y), Arg::I32(n as i32)]).unwrap();
}

#[test]
fn small_overrun_into_the_alignment_slack_is_caught_by_the_canary() {
    let emu = emu();
    let n = 1001; // 4004 bytes: 12 bytes of slack before the guard page
    let y = emu.alloc(n * 4).unwrap();
    let r = launch(&emu, "emu_bug_oob_write", 1u32, 1002u32, 0, &[Arg::Ptr(y), Arg::I32(n as i32)]);
    expect_fault(r, &["emu_bug_oob_write", "out-of-bounds write found after the launch", "past the end"]);
}

#[test]
fn out_of_bounds_reads_past_the_end_and_before_the_start() {
    let emu = emu();
    let n = 512;
    let x = emu.upload(&vec![1.0f32; n]).unwrap();
    let y = emu.alloc(n * 4).unwrap();
    let r = launch(&emu, "emu_bug_oob_read", 4u32, 128u32, 0, &[Arg::Ptr(y), Arg::Ptr(x), Arg::I32(n as i32)]);
    let msg = expect_fault(r, &["emu_bug_oob_read", "0 bytes past the end"]);
    assert!(msg.contains("thread 127"), "names the faulting thread: {msg}");
    let r = launch(&emu, "emu_bug_underrun", 4u32, 128u32, 0, &[Arg::Ptr(y), Arg::Ptr(x), Arg::I32(n as i32)]);
    expect_fault(r, &["emu_bug_underrun", "before the start of device allocation"]);
}

#[test]
fn unwritten_output_element_is_nan_from_the_poison() {
    let emu = emu();
    let n = 300;
    let x = emu.upload(&vec![1.5f32; n]).unwrap();
    let y = emu.alloc(n * 4).unwrap(); // never cleared: starts as NaN
    launch(&emu, "emu_bug_unwritten", 3u32, 128u32, 0, &[Arg::Ptr(y), Arg::Ptr(x), Arg::I32(n as i32)]).unwrap();
    let v: Vec<f32> = emu.download(y, n).unwrap();
    let unwritten: Vec<usize> = (0..n).filter(|&i| v[i].is_nan()).collect();
    assert_eq!(unwritten, vec![n - 1], "exactly the forgotten element is NaN");
    assert!(v[..n - 1].iter().all(|&e| e == 3.0));
}

#[test]
fn divergent_full_mask_shuffle_names_the_lanes() {
    let emu = emu();
    let y = emu.alloc(64 * 4).unwrap();
    for o in ORDERS {
        emu.set_thread_order(o);
        let r = launch(&emu, "emu_bug_divergent_shfl", 1u32, 64u32, 0, &[Arg::Ptr(y)]);
        let msg = expect_fault(
            r,
            &[
                "emu_bug_divergent_shfl",
                "__shfl_xor_sync(mask=0xffffffff)",
                "lanes 0-15",
                "lanes 16-31",
                "__syncthreads",
            ],
        );
        assert!(
            matches!(launch(&emu, "emu_bug_divergent_shfl", 1u32, 64u32, 0, &[Arg::Ptr(y)]), Err(EmuError::Sync(_))),
            "{msg}"
        );
    }
}

#[test]
fn barrier_after_early_exit_is_an_error() {
    let emu = emu();
    let y = emu.alloc(256 * 4).unwrap();
    for o in ORDERS {
        emu.set_thread_order(o);
        let r = launch(&emu, "emu_bug_barrier_after_exit", 1u32, 256u32, 0, &[Arg::Ptr(y), Arg::I32(200)]);
        expect_fault(
            r,
            &[
                "emu_bug_barrier_after_exit",
                "__syncthreads() reached by threads 0-199",
                "after threads 200-255 had exited",
            ],
        );
    }
    // With every thread taking part it is fine.
    launch(&emu, "emu_bug_barrier_after_exit", 1u32, 256u32, 0, &[Arg::Ptr(y), Arg::I32(256)]).unwrap();
}

#[test]
fn lane_missing_from_its_own_mask() {
    let emu = emu();
    let y = emu.alloc(32 * 4).unwrap();
    let r = launch(&emu, "emu_bug_lane_not_in_mask", 1u32, 32u32, 0, &[Arg::Ptr(y)]);
    expect_fault(r, &["emu_bug_lane_not_in_mask", "missing from its own mask", "mask=0x0000ffff", "lanes: 0-15"]);
}

#[test]
fn shuffle_reading_an_exited_lane() {
    let emu = emu();
    let y = emu.alloc(32 * 4).unwrap();
    let r = launch(&emu, "emu_bug_shfl_reads_exited", 1u32, 32u32, 0, &[Arg::Ptr(y)]);
    expect_fault(r, &["emu_bug_shfl_reads_exited", "__shfl_down_sync", "reads lane 16", "has exited"]);
}

#[test]
fn mismatched_collectives_deadlock_is_reported() {
    let emu = emu();
    let y = emu.alloc(32 * 4).unwrap();
    let r = launch(&emu, "emu_bug_mismatched_collectives", 1u32, 32u32, 0, &[Arg::Ptr(y)]);
    let msg = expect_fault(r, &["emu_bug_mismatched_collectives", "divergent warp collective"]);
    assert!(msg.contains("__syncwarp") && msg.contains("__ballot_sync"), "{msg}");
}

#[test]
fn dynamic_shared_memory_overrun_faults() {
    let emu = emu();
    let y = emu.alloc(64 * 4).unwrap();
    let r = launch(&emu, "emu_bug_dynamic_smem_oob", 1u32, 64u32, 256, &[Arg::Ptr(y)]);
    expect_fault(r, &["emu_bug_dynamic_smem_oob", "dynamic shared memory", "256 bytes"]);
}

#[test]
fn integer_division_by_zero_is_a_launch_error() {
    let emu = emu();
    let y = emu.alloc(32 * 4).unwrap();
    let r = launch(&emu, "emu_bug_div_zero", 1u32, 32u32, 0, &[Arg::Ptr(y), Arg::I32(0)]);
    expect_fault(r, &["emu_bug_div_zero", "integer division by zero"]);
    launch(&emu, "emu_bug_div_zero", 1u32, 32u32, 0, &[Arg::Ptr(y), Arg::I32(10)]).unwrap();
    assert_eq!(emu.download::<i32>(y, 32).unwrap(), vec![100; 32]);
}

#[test]
fn failed_device_assert_names_the_thread() {
    let emu = emu();
    let y = emu.alloc(32 * 4).unwrap();
    let r = launch(&emu, "emu_bug_assert", 1u32, 32u32, 0, &[Arg::Ptr(y), Arg::I32(20)]);
    let msg = expect_fault(r, &["emu_bug_assert", "assertion failed", "emu_planted_bugs.cu"]);
    assert!(
        matches!(launch(&emu, "emu_bug_assert", 1u32, 32u32, 0, &[Arg::Ptr(y), Arg::I32(20)]), Err(EmuError::Trap(_))),
        "{msg}"
    );
    launch(&emu, "emu_bug_assert", 1u32, 32u32, 0, &[Arg::Ptr(y), Arg::I32(32)]).unwrap();
}

#[test]
fn fiber_stack_overflow_is_a_launch_error() {
    let emu = emu();
    let y = emu.alloc(4 * 4).unwrap();
    let r = launch(&emu, "emu_bug_stack_overflow", 1u32, 4u32, 0, &[Arg::Ptr(y)]);
    expect_fault(r, &["emu_bug_stack_overflow", "stack overflow"]);
}

#[test]
fn null_pointer_write_is_a_launch_error() {
    let emu = emu();
    let r = launch(&emu, "emu_bug_null_write", 1u32, 4u32, 0, &[Arg::Ptr(0)]);
    expect_fault(r, &["emu_bug_null_write", "null pointer"]);
}
