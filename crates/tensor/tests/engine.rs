//! The GPU engine on the emulator: counted driver calls, the caching
//! allocator's steady state, poisoning of reused blocks, and the
//! no-reuse mode that keeps use-after-free visible.

use diffuse_tensor::gpu::emu::EmuDriver;
use diffuse_tensor::gpu::{kernels, AllocConfig, AllocMode, Dim3, GpuDevice, KernelArg, Launch};
use diffuse_tensor::{ops, Device, Tensor};
use std::sync::Arc;

fn emu(mode: AllocMode) -> GpuDevice {
    let driver = EmuDriver::new().expect("the emulator starts");
    GpuDevice::with_alloc(Arc::new(driver), AllocConfig { mode, limit: None })
}

/// Awkward-sized values, not zeros.
fn values(n: usize, salt: u32) -> Vec<f32> {
    (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ salt) % 1000) as f32 / 250.0 - 2.0).collect()
}

/// One forward and backward of conv2d + SiLU: allocations of many sizes.
fn conv_silu_step(x: &Tensor, w: &Tensor) -> Vec<f32> {
    let p = ops::Conv2dParams::same(3);
    let y = ops::conv2d_forward(x, w, None, &p).expect("conv forward");
    let a = ops::silu_forward(&y).expect("silu");
    let da = ops::silu_backward(&a, &y).expect("silu backward");
    let dx = ops::conv2d_backward_data(&da, w, x.shape(), &p).expect("conv backward data");
    let dw = ops::conv2d_backward_weight(&da, x, w.shape(), &p).expect("conv backward weight");
    let mut out = dx.to_vec_f32().expect("download");
    out.extend(dw.to_vec_f32().expect("download"));
    out
}

#[test]
fn steady_state_steps_make_no_allocation_or_free_and_match_direct_mode() {
    let cpu_x = Tensor::from_vec(values(2 * 5 * 7 * 9, 1), [2, 5, 7, 9]).unwrap();
    let cpu_w = Tensor::from_vec(values(6 * 5 * 3 * 3, 2), [6, 5, 3, 3]).unwrap();
    let mut results = Vec::new();
    for mode in [AllocMode::Caching, AllocMode::Direct] {
        let g = emu(mode);
        let dev = Device::Gpu(g.clone());
        let (x, w) = (cpu_x.to_device(&dev).unwrap(), cpu_w.to_device(&dev).unwrap());
        let first = conv_silu_step(&x, &w);
        let before = g.counts();
        let again = conv_silu_step(&x, &w);
        let d = g.counts() - before;
        assert_eq!(first, again, "{mode:?}: a step is deterministic");
        assert!(d.launches >= 4, "{mode:?}: {d:?}");
        assert_eq!(d.dtoh, 2, "{mode:?}: {d:?}");
        match mode {
            AllocMode::Caching => assert_eq!((d.allocs, d.frees), (0, 0), "steady state: {d:?}"),
            AllocMode::Direct => assert!(d.allocs >= 4 && d.frees == d.allocs, "{d:?}"),
        }
        results.push(first);
    }
    assert_eq!(results[0], results[1], "memory reuse does not change a result");
}

#[test]
fn reused_blocks_read_as_nan_like_fresh_memory() {
    let g = emu(AllocMode::Caching);
    let n = 1234;
    let s = g.upload_f32(&values(n, 3)).unwrap();
    let ptr = s.ptr();
    drop(s);
    let again = g.alloc_f32(n).unwrap();
    assert_eq!(again.ptr(), ptr, "the block is reused");
    assert!(again.download_f32().unwrap().iter().all(|v| v.is_nan()), "a reused block is poisoned");
    assert_eq!(g.pool_stats().hits, 1);
}

#[test]
fn overruns_of_a_cached_block_still_hit_the_guard_page() {
    let g = emu(AllocMode::Caching);
    // 300 floats: class 1536 bytes, the pointer placed so the data ends at the block's end
    let s = g.alloc_f32(300).unwrap();
    let n = 304u64; // past the 16-byte-rounded end
    let args = [s.arg(), s.arg(), KernelArg::U64(n)];
    let l = Launch {
        kernel: &kernels::silu::SILU_FWD_F32,
        grid: Dim3::x(2),
        block: Dim3::x(256),
        shared_bytes: 0,
        args: &args,
    };
    let err = g.launch(&l).expect_err("an overrun is a launch error").to_string();
    assert!(err.contains("silu_fwd_f32"), "{err}");
}

#[test]
fn direct_mode_catches_use_after_free() {
    for (mode, caught) in [(AllocMode::Direct, true), (AllocMode::Caching, false)] {
        let g = emu(mode);
        let s = g.upload_f32(&values(512, 4)).unwrap();
        let stale = s.ptr();
        drop(s);
        let args = [KernelArg::Ptr(stale), KernelArg::Ptr(stale), KernelArg::U64(512)];
        let l = Launch {
            kernel: &kernels::silu::SILU_FWD_F32,
            grid: Dim3::x(2),
            block: Dim3::x(256),
            shared_bytes: 0,
            args: &args,
        };
        assert_eq!(g.launch(&l).is_err(), caught, "{mode:?}");
    }
}

#[test]
fn counts_name_every_kind_of_call() {
    let g = emu(AllocMode::Caching);
    let c0 = g.counts();
    let a = g.upload_f32(&values(100, 5)).unwrap(); // alloc + htod
    let z = g.zeros_f32(100).unwrap(); // alloc + memset
    let b = a.deep_copy().unwrap(); // alloc + dtod
    let _ = b.download_f32().unwrap(); // dtoh (a host sync)
    g.synchronize().unwrap(); // a host sync
    drop((a, z, b));
    let d = g.counts() - c0;
    assert_eq!((d.allocs, d.frees, d.htod, d.memsets, d.dtod, d.dtoh, d.host_syncs), (3, 0, 1, 1, 1, 1, 2), "{d:?}");
    assert_eq!((d.htod_bytes, d.dtoh_bytes), (400, 400));
    g.empty_cache();
    assert_eq!((g.counts() - c0).frees, 3);
}

#[test]
fn bad_allocator_settings_are_errors() {
    // from_env reads the process environment; test the parser it uses
    assert_eq!(diffuse_tensor::gpu::pool::parse_bytes("64M"), Some(64 << 20));
    assert!(diffuse_tensor::gpu::pool::parse_bytes("lots").is_none());
}

/// Clipping on the device (norm into a log slot, one scaling launch) gives
/// the bits of the host path (download the norm, scale each tensor), with
/// and without clipping, over tensors of awkward sizes.
#[test]
fn clipping_on_the_device_is_bit_identical_to_the_host_path() {
    let g = emu(AllocMode::Caching);
    let dev = Device::Gpu(g.clone());
    let lens = [1usize, 4095, 4096, 4097, 10_000, 3, 777];
    let host: Vec<Tensor> = lens
        .iter()
        .enumerate()
        .map(|(k, &n)| Tensor::from_vec(values(n, 10 + k as u32), [n]).unwrap().to_device(&dev).unwrap())
        .collect();
    for max_norm in [0.0, 1e9, 7.25, 0.3] {
        // host path, as optim::clip_grad_norm does it
        let mut a: Vec<Tensor> =
            host.iter().map(|t| t.to_device(&Device::Cpu).unwrap().to_device(&dev).unwrap()).collect();
        let norm = ops::global_l2_norm(&a.iter().collect::<Vec<_>>()).unwrap();
        if max_norm > 0.0 && norm > max_norm {
            for t in a.iter_mut() {
                ops::scale_in_place(t, max_norm / (norm + 1e-6)).unwrap();
            }
        }
        // device path
        let mut b: Vec<Tensor> =
            host.iter().map(|t| t.to_device(&Device::Cpu).unwrap().to_device(&dev).unwrap()).collect();
        let mut log = Tensor::zeros([6], diffuse_tensor::DType::F32, &dev).unwrap();
        let before = g.counts();
        ops::clip_grad_norm_on_device(&mut b.iter_mut().collect::<Vec<_>>(), max_norm, &mut log, 4).unwrap();
        let d = g.counts() - before;
        assert_eq!(d.host_syncs, 0, "no sync: {d:?}");
        if max_norm > 0.0 {
            // new tensors each round: their pointer table is a new constant
            // table (kept by the table cache, so its block and at most one
            // more are driver allocations); nothing else is allocated
            assert!(d.allocs <= 2 && d.htod <= 1, "steady state, all memory cached: {d:?}");
        }
        assert_eq!(d.launches, if max_norm > 0.0 { 3 } else { 2 }, "{d:?}");
        let slots = log.to_vec_f32().unwrap();
        let bytes: Vec<u8> = slots[4..6].iter().flat_map(|v| v.to_le_bytes()).collect();
        let sumsq = f64::from_le_bytes(bytes.try_into().unwrap());
        assert_eq!(sumsq.sqrt().to_bits(), norm.to_bits(), "max_norm {max_norm}");
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (x.to_vec_f32().unwrap(), y.to_vec_f32().unwrap());
            assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()), "max_norm {max_norm}");
        }
        if max_norm == 0.3 {
            assert_ne!(b[0].to_vec_f32().unwrap(), host[0].to_vec_f32().unwrap(), "clipping happened");
        }
    }
}

#[test]
fn copy_into_writes_a_slice_on_every_device() {
    for dev in [Device::Cpu, Device::Gpu(emu(AllocMode::Caching))] {
        let mut dst = Tensor::from_vec(values(10, 20), [10]).unwrap().to_device(&dev).unwrap();
        let src = Tensor::from_vec(vec![1.5f32, -2.0], [2]).unwrap().to_device(&dev).unwrap();
        ops::copy_into(&mut dst, 7, &src).unwrap();
        let mut want = values(10, 20);
        want[7..9].copy_from_slice(&[1.5, -2.0]);
        assert_eq!(dst.to_vec_f32().unwrap(), want);
        assert!(ops::copy_into(&mut dst, 9, &src).is_err(), "an overrun is an error");
    }
}

/// Multi-tensor AdamW and EMA (one launch each) give the bits of one launch
/// per tensor, with a different learning rate per tensor, over several steps.
#[test]
fn multi_tensor_adamw_and_ema_are_bit_identical_to_per_tensor_launches() {
    let g = emu(AllocMode::Caching);
    let dev = Device::Gpu(g.clone());
    let lens = [3usize, 4096, 5000, 1, 12_289];
    let up = |n: usize, salt: u32| Tensor::from_vec(values(n, salt), [n]).unwrap().to_device(&dev).unwrap();
    let fresh = |salt: u32| lens.iter().enumerate().map(|(k, &n)| up(n, salt + k as u32)).collect::<Vec<_>>();
    let hypers: Vec<ops::AdamWParams> = (0..lens.len())
        .map(|k| ops::AdamWParams {
            lr: 1e-3 * (k as f64 + 0.7),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.03,
        })
        .collect();
    let (mut p1, mut m1, mut v1, mut e1) = (fresh(100), fresh(200), fresh(300), fresh(400));
    let (mut p2, mut m2, mut v2, mut e2) = (fresh(100), fresh(200), fresh(300), fresh(400));
    for k in 0..lens.len() {
        // moments must be >= 0 in v
        v1[k] = ops::mul(&v1[k], &v1[k]).unwrap();
        v2[k] = ops::mul(&v2[k], &v2[k]).unwrap();
    }
    for step in 1..=3u64 {
        let grads = fresh(500 + 10 * step as u32);
        for k in 0..lens.len() {
            ops::adamw_step(&mut p1[k], &grads[k], &mut m1[k], &mut v1[k], &hypers[k], step).unwrap();
            ops::ema_update(&mut e1[k], &p1[k], 0.95).unwrap();
        }
        let before = g.counts();
        let gs: Vec<&Tensor> = grads.iter().collect();
        ops::adamw_step_many(
            &mut p2.iter_mut().collect::<Vec<_>>(),
            &gs,
            &mut m2.iter_mut().collect::<Vec<_>>(),
            &mut v2.iter_mut().collect::<Vec<_>>(),
            &hypers,
            step,
        )
        .unwrap();
        ops::ema_update_many(&mut e2.iter_mut().collect::<Vec<_>>(), &p2.iter().collect::<Vec<_>>(), 0.95).unwrap();
        let d = g.counts() - before;
        assert_eq!((d.launches, d.host_syncs), (2, 0), "{d:?}");
    }
    for (a, b) in [(&p1, &p2), (&m1, &m2), (&v1, &v2), (&e1, &e2)] {
        for (x, y) in a.iter().zip(b) {
            let (x, y) = (x.to_vec_f32().unwrap(), y.to_vec_f32().unwrap());
            assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
    }
    assert_ne!(p2[0].to_vec_f32().unwrap(), values(3, 100), "the parameters moved");
}

/// Flat buffers (issue 12): tensors moved into one allocation keep their
/// values, sit 256-byte aligned, are written in place (no copy) unless
/// cloned, and multi-tensor AdamW/EMA over views give the bits of separate
/// tensors while uploading their pointer tables only once.
#[test]
fn flat_views_keep_values_write_in_place_and_upload_tables_once_emu() {
    let g = emu(AllocMode::Caching);
    let dev = Device::Gpu(g.clone());
    let lens = [3usize, 4096, 5000, 1, 12_289];
    let up = |n: usize, salt: u32| Tensor::from_vec(values(n, salt), [n]).unwrap().to_device(&dev).unwrap();
    let fresh = |salt: u32| lens.iter().enumerate().map(|(k, &n)| up(n, salt + k as u32)).collect::<Vec<_>>();
    let h = ops::AdamWParams { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
    let (mut p1, mut m1, mut v1, mut e1) = (fresh(100), fresh(200), fresh(300), fresh(400));
    let (mut p2, mut m2, mut v2, mut e2) = (fresh(100), fresh(200), fresh(300), fresh(400));
    for k in 0..lens.len() {
        v1[k] = ops::mul(&v1[k], &v1[k]).unwrap();
        v2[k] = ops::mul(&v2[k], &v2[k]).unwrap();
    }
    let before = g.counts();
    let flat: Vec<Tensor> = [&mut p2, &mut m2, &mut v2, &mut e2]
        .into_iter()
        .map(|ts| ops::flatten(&mut ts.iter_mut().collect::<Vec<_>>()).unwrap().expect("GPU tensors"))
        .collect();
    let d = g.counts() - before;
    assert!(d.allocs <= 4, "at most one allocation each: {d:?}");
    assert_eq!((d.memsets, d.dtod), (4, 4 * lens.len() as u64), "one buffer each: {d:?}");
    let (offsets, total) = diffuse_tensor::gpu::GpuStorage::view_offsets(&lens);
    assert_eq!(flat[0].numel(), total);
    assert!(offsets.iter().all(|o| o % 64 == 0) && offsets.windows(2).all(|w| w[1] > w[0]));
    for (a, b) in [(&p1, &p2), (&m1, &m2), (&v1, &v2), (&e1, &e2)] {
        for (x, y) in a.iter().zip(b) {
            assert!(ops::is_flat_view(y));
            assert_eq!(x.to_vec_f32().unwrap(), y.to_vec_f32().unwrap(), "flattening keeps values");
        }
    }
    // The flat tensor reads what the views hold, at their offsets.
    let whole = flat[1].to_vec_f32().unwrap();
    assert_eq!(&whole[offsets[2]..offsets[2] + lens[2]], &m1[2].to_vec_f32().unwrap()[..]);
    assert!(whole[offsets[0] + lens[0]..offsets[1]].iter().all(|&x| x == 0.0), "padding is zero");

    let hypers = vec![h; lens.len()];
    let mut uploads = Vec::new();
    for step in 1..=3u64 {
        let grads = fresh(500 + 10 * step as u32);
        for k in 0..lens.len() {
            ops::adamw_step(&mut p1[k], &grads[k], &mut m1[k], &mut v1[k], &h, step).unwrap();
            ops::ema_update(&mut e1[k], &p1[k], 0.95).unwrap();
        }
        let gs: Vec<&Tensor> = grads.iter().collect();
        let before = g.counts();
        ops::adamw_step_many(
            &mut p2.iter_mut().collect::<Vec<_>>(),
            &gs,
            &mut m2.iter_mut().collect::<Vec<_>>(),
            &mut v2.iter_mut().collect::<Vec<_>>(),
            &hypers,
            step,
        )
        .unwrap();
        ops::ema_update_many(&mut e2.iter_mut().collect::<Vec<_>>(), &p2.iter().collect::<Vec<_>>(), 0.95).unwrap();
        let d = g.counts() - before;
        assert_eq!((d.launches, d.dtod), (2, 0), "in place, no copy of a view: {d:?}");
        uploads.push(d.htod);
    }
    // The gradients move every step (their table is new); the views' tables,
    // the lengths and the chunks are uploaded on the first step only.
    assert!(uploads[0] >= 7 && uploads[1..].iter().all(|&u| u <= 2), "{uploads:?}");
    for (a, b) in [(&p1, &p2), (&m1, &m2), (&v1, &v2), (&e1, &e2)] {
        for (x, y) in a.iter().zip(b) {
            assert!(ops::is_flat_view(y), "still a view after the steps");
            let (x, y) = (x.to_vec_f32().unwrap(), y.to_vec_f32().unwrap());
            assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
    }
    // A clone of a view shares it: writing either copies, the other keeps its bits.
    let kept = p2[2].clone();
    let before_bits = kept.to_vec_f32().unwrap();
    ops::scale_in_place(&mut p2[2], 2.0).unwrap();
    assert!(!ops::is_flat_view(&p2[2]), "a shared view is copied out before a write");
    assert_eq!(kept.to_vec_f32().unwrap(), before_bits);
    assert_eq!(flat[0].to_vec_f32().unwrap()[offsets[2]..offsets[2] + lens[2]], before_bits[..]);
}

/// Pinned staging buffers: counted allocations and frees, one asynchronous
/// copy each, a wait for the previous copy before the host writes again,
/// and a clear error for a copy that does not fit.
#[test]
fn pinned_buffers_copy_what_the_host_wrote_and_are_counted_emu() {
    let g = emu(AllocMode::Caching);
    let dst = g.zeros_f32(1000).unwrap();
    let before = g.counts();
    let mut pinned = diffuse_tensor::gpu::PinnedBuffer::new(&g, 777).unwrap();
    for round in 0..3u32 {
        let v = values(777, round);
        pinned.write().unwrap().copy_from_slice(&v);
        pinned.copy_to(777, &dst, 101).unwrap();
        let back = dst.download_f32().unwrap();
        assert_eq!(&back[101..878], &v[..], "round {round}");
        assert!(back[..101].iter().chain(&back[878..]).all(|&x| x == 0.0), "nothing else written");
    }
    let err = pinned.copy_to(777, &dst, 500).unwrap_err().to_string();
    assert!(err.contains("777 elements") && err.contains("at 500"), "{err}");
    drop(pinned);
    let d = g.counts() - before;
    assert_eq!((d.pinned_allocs, d.pinned_frees, d.htod, d.htod_bytes), (1, 1, 3, 3 * 777 * 4), "{d:?}");
    assert_eq!(d.event_waits, 3, "rounds 2 and 3 and the drop wait for the copy before: {d:?}");
}

/// copy_many: every pair copied exactly, in one launch on a GPU (awkward
/// lengths across chunk boundaries; a view as destination stays a view).
#[test]
fn copy_many_copies_every_tensor_in_one_launch_emu() {
    let g = emu(AllocMode::Caching);
    let dev = Device::Gpu(g.clone());
    let lens = [1usize, 4095, 4097, 9000, 3];
    let srcs_cpu: Vec<Tensor> =
        lens.iter().enumerate().map(|(k, &n)| Tensor::from_vec(values(n, 70 + k as u32), [n]).unwrap()).collect();
    let srcs: Vec<Tensor> = srcs_cpu.iter().map(|t| t.to_device(&dev).unwrap()).collect();
    let shapes: Vec<diffuse_tensor::Shape> = lens.iter().map(|&n| vec![n].into()).collect();
    let (_whole, mut dsts) = ops::flat_zeros(&shapes, &dev).unwrap().expect("a GPU");
    let before = g.counts();
    ops::copy_many(&mut dsts.iter_mut().collect::<Vec<_>>(), &srcs.iter().collect::<Vec<_>>()).unwrap();
    let d = g.counts() - before;
    assert_eq!((d.launches, d.dtod), (1, 0), "{d:?}");
    let mut cpu_dsts: Vec<Tensor> = lens.iter().map(|&n| Tensor::from_vec(vec![0f32; n], [n]).unwrap()).collect();
    ops::copy_many(&mut cpu_dsts.iter_mut().collect::<Vec<_>>(), &srcs_cpu.iter().collect::<Vec<_>>()).unwrap();
    for ((d, c), s) in dsts.iter().zip(&cpu_dsts).zip(&srcs_cpu) {
        assert!(ops::is_flat_view(d));
        let want = s.to_vec_f32().unwrap();
        assert_eq!(d.to_vec_f32().unwrap(), want);
        assert_eq!(c.to_vec_f32().unwrap(), want);
    }
    let err = ops::copy_many(&mut dsts.iter_mut().collect::<Vec<_>>(), &srcs[..2].iter().collect::<Vec<_>>());
    assert!(err.unwrap_err().to_string().contains("differ in count"));
}
