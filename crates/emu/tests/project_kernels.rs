//! The project's own kernels (kernels/*.cu) compile under the shim and are
//! registered with sane signatures; a few run here as smoke tests (the
//! tensor crate compares every op on the emulator against the CPU).

mod common;

use common::{emu, launch, Rng, ORDERS};
use diffuse_emu::{Arg, ArgKind};

#[test]
fn every_kernel_file_is_compiled_and_registered() {
    let emu = emu();
    let files: Vec<&str> = env!("DIFFUSE_EMU_KERNEL_FILES").split(',').filter(|f| f.starts_with("kernels/")).collect();
    assert!(!files.is_empty(), "kernels/*.cu found");
    for f in &files {
        let n = emu.kernels().iter().filter(|k| k.file == *f).count();
        assert!(n > 0, "{f}: no extern \"C\" __global__ kernel registered");
    }
    for k in emu.kernels().iter().filter(|k| k.file.starts_with("kernels/")) {
        assert_eq!(k.arg_names.len(), k.arg_sizes.len(), "{}", k.name);
        for (i, kind) in k.arg_kinds.iter().enumerate() {
            // the tensor crate passes pointers, i32, u32, u64 and f32 only
            assert!(
                matches!(kind, ArgKind::Ptr | ArgKind::I32 | ArgKind::U32 | ArgKind::U64 | ArgKind::I64 | ArgKind::F32),
                "{}: parameter {} (`{}`) has kind {kind:?}, which KernelArg cannot pass",
                k.name,
                i,
                k.arg_names[i]
            );
        }
    }
}

#[test]
fn silu_runs_and_matches_the_formula_in_every_order() {
    let emu = emu();
    let Some(k) = emu.kernel("silu_fwd_f32") else {
        return;
    };
    if k.arg_kinds != [ArgKind::Ptr, ArgKind::Ptr, ArgKind::U64] {
        return; // the signature changed: the tensor crate's tests cover it
    }
    let n = 5000usize;
    let mut rng = Rng(4);
    let x: Vec<f32> = (0..n).map(|_| rng.uniform(-6.0, 6.0)).collect();
    let dx = emu.upload(&x).unwrap();
    let dy = emu.alloc(n * 4).unwrap();
    for o in ORDERS {
        emu.set_thread_order(o);
        launch(
            &emu,
            "silu_fwd_f32",
            n.div_ceil(256) as u32,
            256u32,
            0,
            &[Arg::Ptr(dy), Arg::Ptr(dx), Arg::U64(n as u64)],
        )
        .unwrap();
        let y: Vec<f32> = emu.download(dy, n).unwrap();
        for i in 0..n {
            let want = x[i] as f64 / (1.0 + (-x[i] as f64).exp());
            assert!((y[i] as f64 - want).abs() <= 1e-6 * want.abs().max(1.0), "order {o}: {} vs {want}", y[i]);
        }
    }
}
