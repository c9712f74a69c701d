//! The emulator's API: memory operations, launch-configuration and argument
//! checks, thread-order parsing.

mod common;

use common::{emu, launch};
use diffuse_emu::{Arg, EmuError, ThreadOrder};
use std::ffi::c_void;

#[test]
fn memory_round_trip_and_bounds_checks() {
    let emu = emu();
    let p = emu.upload(&[1u32, 2, 3, 4, 5]).unwrap();
    assert_eq!(emu.alloc_info(p), Some((p, 20)));
    assert_eq!(emu.alloc_info(p + 8), Some((p, 20)));
    assert_eq!(p % 16, 0, "allocations are 16-byte aligned");
    assert_eq!(emu.download::<u32>(p, 5).unwrap(), vec![1, 2, 3, 4, 5]);
    // fresh memory is NaN
    let q = emu.alloc(8).unwrap();
    assert!(emu.download::<f32>(q, 2).unwrap().iter().all(|v| v.is_nan()));
    emu.memset(q, 0, 8).unwrap();
    assert_eq!(emu.download::<f32>(q, 2).unwrap(), vec![0.0, 0.0]);
    emu.dtod(p + 4, q, 8).unwrap();
    assert_eq!(emu.download::<u32>(q, 2).unwrap(), vec![2, 3]);
    // out of range copies are errors, not memory corruption
    assert!(matches!(emu.htod(&[0u8; 24], p), Err(EmuError::Memory(_))));
    let mut big = vec![0u8; 12];
    let e = emu.dtoh(p + 12, &mut big).unwrap_err().to_string();
    assert!(e.contains("4 bytes past the end"), "{e}");
    assert!(matches!(emu.dtoh(12345, &mut big), Err(EmuError::Memory(_))));
    assert!(matches!(emu.memset(q, 0, 9), Err(EmuError::Memory(_))));
    // zero-byte allocations exist and can be freed
    let z = emu.alloc(0).unwrap();
    emu.free(z).unwrap();
    emu.free(q).unwrap();
    let e = emu.free(q).unwrap_err().to_string();
    assert!(e.contains("already freed"), "{e}");
    assert!(matches!(emu.free(0xdead_0000), Err(EmuError::Memory(_))));
}

#[test]
fn launch_configuration_errors() {
    let emu = emu();
    let y = emu.alloc(4096).unwrap();
    let args = [Arg::Ptr(y), Arg::I32(1)];
    let cfg = |r: Result<(), EmuError>, needle: &str| {
        let e = r.unwrap_err();
        assert!(matches!(e, EmuError::Config(_)), "{e}");
        assert!(e.to_string().contains(needle), "`{needle}` missing from {e}");
    };
    cfg(launch(&emu, "emu_bug_oob_write", 1u32, 1025u32, 0, &args), "maximum is 1024");
    cfg(launch(&emu, "emu_bug_oob_write", 1u32, (64u32, 32u32), 0, &args), "2048 threads");
    cfg(launch(&emu, "emu_bug_oob_write", 1u32, (1u32, 1u32, 65u32), 0, &args), "z <= 64");
    cfg(launch(&emu, "emu_bug_oob_write", 0u32, 32u32, 0, &args), "at least 1");
    cfg(launch(&emu, "emu_bug_oob_write", (1u32, 70000u32), 32u32, 0, &args), "exceeds");
    cfg(launch(&emu, "emu_bug_oob_write", 1u32, 32u32, 227 * 1024 + 1, &args), "227 KiB");
    // the largest legal shapes work
    launch(&emu, "emu_test_dynamic_poison", 1u32, 1024u32, 227 * 1024, &[Arg::Ptr(y)]).unwrap();
}

/// A smaller device (an RTX 40xx grants 99 KiB a block) rejects launches
/// above its limit, naming the kernel and both sizes, and runs those within.
#[test]
fn shared_memory_limit_is_configurable() {
    let emu = emu();
    if std::env::var_os("DIFFUSE_EMU_MAX_SMEM").is_none() {
        assert_eq!(emu.max_shared_bytes(), diffuse_emu::MAX_SHARED_BYTES);
    }
    let y = emu.alloc(4096).unwrap();
    emu.set_max_shared_bytes(99 * 1024).unwrap();
    let e = launch(&emu, "emu_test_dynamic_poison", 1u32, 32u32, 99 * 1024 + 4, &[Arg::Ptr(y)]).unwrap_err();
    assert!(matches!(e, EmuError::Config(_)), "{e}");
    let msg = e.to_string();
    for needle in ["emu_test_dynamic_poison", "101380 bytes", "allows 101376 bytes (99 KiB)", "DIFFUSE_EMU_MAX_SMEM"] {
        assert!(msg.contains(needle), "`{needle}` missing from {msg}");
    }
    launch(&emu, "emu_test_dynamic_poison", 1u32, 32u32, 99 * 1024, &[Arg::Ptr(y)]).unwrap();
    assert!(emu.set_max_shared_bytes(0).is_err());
    assert!(emu.set_max_shared_bytes(diffuse_emu::MAX_SHARED_BYTES + 1).is_err());
    assert_eq!(emu.max_shared_bytes(), 99 * 1024, "a refused limit leaves the old one");
}

#[test]
fn argument_errors() {
    let emu = emu();
    let y = emu.alloc(64).unwrap();
    let e = launch(&emu, "emu_bug_oob_write", 1u32, 4u32, 0, &[Arg::Ptr(y)]).unwrap_err();
    assert!(
        matches!(e, EmuError::Arguments(_)) && e.to_string().contains("1 arguments given, the kernel takes 2"),
        "{e}"
    );
    // an f32 where the kernel takes an int: right size, wrong kind
    let e = launch(&emu, "emu_bug_oob_write", 1u32, 4u32, 0, &[Arg::Ptr(y), Arg::F32(4.0)]).unwrap_err();
    assert!(e.to_string().contains("argument 1 (`n`)"), "{e}");
    // a 64-bit value where the kernel takes an int, through the raw interface
    let n = 4u64;
    let raw = [(&y as *const u64 as *const c_void, 8usize), (&n as *const u64 as *const c_void, 8)];
    // SAFETY: both pointers point at live 8-byte values.
    let e = unsafe { emu.launch("emu_bug_oob_write", 1u32, 4u32, 0, &raw) }.unwrap_err();
    assert!(e.to_string().contains("argument 1 (n) is 8 bytes, the kernel expects 4"), "{e}");
    // a pointer that is not device memory
    let host = [0f32; 16];
    let e =
        launch(&emu, "emu_bug_oob_write", 1u32, 4u32, 0, &[Arg::Ptr(host.as_ptr() as u64), Arg::I32(4)]).unwrap_err();
    assert!(e.to_string().contains("not a pointer into a live device allocation"), "{e}");
    // a freed buffer
    let f = emu.alloc(64).unwrap();
    emu.free(f).unwrap();
    let e = launch(&emu, "emu_bug_oob_write", 1u32, 4u32, 0, &[Arg::Ptr(f), Arg::I32(4)]).unwrap_err();
    assert!(e.to_string().contains("freed"), "{e}");
    // unknown kernels
    assert!(matches!(launch(&emu, "no_such_kernel", 1u32, 1u32, 0, &[]), Err(EmuError::UnknownKernel(_))));
}

#[test]
fn thread_orders_parse() {
    assert_eq!("forward".parse::<ThreadOrder>().unwrap(), ThreadOrder::Forward);
    assert_eq!("reverse".parse::<ThreadOrder>().unwrap(), ThreadOrder::Reverse);
    assert_eq!("shuffle:42".parse::<ThreadOrder>().unwrap(), ThreadOrder::Shuffle(42));
    assert_eq!(ThreadOrder::Shuffle(9).to_string(), "shuffle:9");
    for o in [ThreadOrder::WarpAhead, ThreadOrder::WarpAheadReverse] {
        assert_eq!(o.to_string().parse::<ThreadOrder>().unwrap(), o);
    }
    assert_eq!("warp-ahead-reverse".parse::<ThreadOrder>().unwrap(), ThreadOrder::WarpAheadReverse);
    assert!("sideways".parse::<ThreadOrder>().is_err());
    assert!("shuffle:x".parse::<ThreadOrder>().is_err());
    let emu = emu();
    emu.set_thread_order(ThreadOrder::Reverse);
    assert_eq!(emu.thread_order(), ThreadOrder::Reverse);
}

#[test]
fn dropping_an_emulator_frees_its_allocations() {
    let e1 = emu();
    let before = e1.live_allocations();
    let e2 = emu();
    let p = e2.alloc(1 << 20).unwrap();
    assert!(e1.alloc_info(p).is_some(), "one address space for every handle");
    drop(e2);
    assert!(e1.alloc_info(p).is_none());
    assert!(e1.live_allocations() <= before + 8); // other tests run concurrently
}
