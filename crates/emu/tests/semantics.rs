//! CUDA semantics the emulator must reproduce, each checked under several
//! thread orders (tests/kernels/emu_semantics.cu).

mod common;

use common::{emu, launch, Rng, ORDERS};
use diffuse_emu::{Arg, ArgKind, Emulator, ThreadOrder};

fn for_each_order(emu: &Emulator, mut f: impl FnMut(ThreadOrder)) {
    for o in ORDERS {
        emu.set_thread_order(o);
        f(o);
    }
}

#[test]
fn builtins_in_3d_grids_and_blocks() {
    let emu = emu();
    let (grid, block) = ((3u32, 2u32, 2u32), (4u32, 3u32, 2u32));
    let nt = 4 * 3 * 2;
    let nb = 3 * 2 * 2;
    let out = emu.alloc(nb * nt * 12 * 4).unwrap();
    for_each_order(&emu, |o| {
        launch(&emu, "emu_test_index3d", grid, block, 0, &[Arg::Ptr(out)]).unwrap();
        let v: Vec<u32> = emu.download(out, nb * nt * 12).unwrap();
        let mut i = 0;
        for bz in 0..2 {
            for by in 0..2 {
                for bx in 0..3 {
                    for tz in 0..2 {
                        for ty in 0..3 {
                            for tx in 0..4 {
                                let want = [tx, ty, tz, bx, by, bz, 4, 3, 2, 3, 2, 2];
                                assert_eq!(&v[12 * i..12 * i + 12], &want, "order {o}, element {i}");
                                i += 1;
                            }
                        }
                    }
                }
            }
        }
    });
}

#[test]
fn static_shared_memory_reverse() {
    let emu = emu();
    let n = 5 * 256;
    let input: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let x = emu.upload(&input).unwrap();
    let y = emu.alloc(n * 4).unwrap();
    for_each_order(&emu, |o| {
        launch(&emu, "emu_test_reverse_static", 5u32, 256u32, 0, &[Arg::Ptr(y), Arg::Ptr(x)]).unwrap();
        let v: Vec<f32> = emu.download(y, n).unwrap();
        for b in 0..5 {
            for t in 0..256 {
                assert_eq!(v[b * 256 + t], input[b * 256 + 255 - t], "order {o}");
            }
        }
    });
}

#[test]
fn dynamic_shared_memory_names_alias_one_buffer() {
    let emu = emu();
    let (nb, nt) = (3usize, 128usize);
    let input: Vec<f32> = (0..nb * nt).map(|i| i as f32 + 0.25).collect();
    let x = emu.upload(&input).unwrap();
    let y = emu.alloc(nb * nt * 4).unwrap();
    let bits = emu.alloc(nb * nt * 4).unwrap();
    for_each_order(&emu, |o| {
        let args = [Arg::Ptr(y), Arg::Ptr(bits), Arg::Ptr(x)];
        launch(&emu, "emu_test_dynamic_shared", nb as u32, nt as u32, (nt * 4) as u32, &args).unwrap();
        let v: Vec<f32> = emu.download(y, nb * nt).unwrap();
        let u: Vec<u32> = emu.download(bits, nb * nt).unwrap();
        for b in 0..nb {
            for t in 0..nt {
                let want = input[b * nt + nt - 1 - t] * 2.0;
                assert_eq!(v[b * nt + t], want, "order {o}");
                assert_eq!(u[b * nt + t], want.to_bits(), "order {o}");
            }
        }
    });
}

#[test]
fn shared_memory_starts_as_nan_poison_in_every_block() {
    let emu = emu();
    let out = emu.alloc(8 * 256 * 4).unwrap();
    launch(&emu, "emu_test_dynamic_poison", 8u32, 256u32, 1024, &[Arg::Ptr(out)]).unwrap();
    let v: Vec<u32> = emu.download(out, 8 * 256).unwrap();
    assert!(v.iter().all(|&b| b == 0xffff_ffff), "dynamic shared memory is poisoned");
    // Blocks run one after another on each worker and leave 7s behind:
    // the next block must still see poison, not the previous block's data.
    launch(&emu, "emu_test_static_poison", 8u32, 256u32, 0, &[Arg::Ptr(out), Arg::I32(1)]).unwrap();
    let v: Vec<u32> = emu.download(out, 8 * 256).unwrap();
    assert!(v.iter().all(|&b| b == 0xffff_ffff), "static shared memory is poisoned per block");
    assert!(f32::from_bits(v[0]).is_nan());
}

#[test]
fn syncthreads_count_and_or() {
    let emu = emu();
    let (nb, nt) = (4usize, 96usize);
    let mut preds = vec![0i32; nb * nt];
    // block 0: none, block 1: all, block 2: one, block 3: every third
    preds[nt..2 * nt].iter_mut().for_each(|p| *p = 5);
    preds[2 * nt + 77] = 1;
    for t in 0..nt {
        preds[3 * nt + t] = -((t % 3 == 0) as i32);
    }
    let p = emu.upload(&preds).unwrap();
    let out = emu.alloc(nb * 3 * 4).unwrap();
    for_each_order(&emu, |o| {
        launch(&emu, "emu_test_sync_preds", nb as u32, nt as u32, 0, &[Arg::Ptr(out), Arg::Ptr(p)]).unwrap();
        let v: Vec<i32> = emu.download(out, nb * 3).unwrap();
        assert_eq!(v, vec![0, 0, 0, 96, 1, 1, 1, 0, 1, 32, 0, 1], "order {o}");
    });
}

/// PTX shfl.sync: which lane `lane` reads (its own when out of range).
fn shfl_src(mode: i32, lane: i32, b: i32, width: i32) -> i32 {
    let segmask = (32 - width) & 31;
    let bval = b & 31;
    let clamp = if mode == 1 { 0 } else { 31 };
    let max_lane = (lane & segmask) | (clamp & !segmask);
    let min_lane = lane & segmask;
    let (j, ok) = match mode {
        0 => {
            let j = min_lane | (bval & !segmask);
            (j, j <= max_lane)
        }
        1 => (lane - bval, lane - bval >= max_lane),
        2 => (lane + bval, lane + bval <= max_lane),
        _ => (lane ^ bval, (lane ^ bval) <= max_lane),
    };
    if ok {
        j
    } else {
        lane
    }
}

#[test]
fn shuffles_follow_ptx_semantics_for_every_width() {
    let emu = emu();
    let (nb, nt) = (2usize, 64usize);
    let n = nb * nt;
    let oi = emu.alloc(n * 4).unwrap();
    let of = emu.alloc(n * 4).unwrap();
    let ol = emu.alloc(n * 8).unwrap();
    let bl = emu.alloc(32 * 4).unwrap();
    let mut rng = Rng(7);
    let mut cases = 0;
    for mode in 0..4 {
        for width in [1, 2, 4, 8, 16, 32] {
            let patterns: Vec<Vec<i32>> = vec![
                vec![1; 32],
                vec![3; 32],
                vec![16; 32],
                (0..32).map(|l| (l * 7 + 3) % 37).collect(),
                (0..32).map(|_| (rng.next_u32() % 40) as i32).collect(),
            ];
            for bs in patterns {
                emu.htod(&bs.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(), bl).unwrap();
                let o = ORDERS[cases % ORDERS.len()];
                emu.set_thread_order(o);
                cases += 1;
                let args = [Arg::Ptr(oi), Arg::Ptr(of), Arg::Ptr(ol), Arg::Ptr(bl), Arg::I32(mode), Arg::I32(width)];
                launch(&emu, "emu_test_shfl", nb as u32, nt as u32, 0, &args).unwrap();
                let vi: Vec<i32> = emu.download(oi, n).unwrap();
                let vf: Vec<f32> = emu.download(of, n).unwrap();
                let vl: Vec<u64> = emu.download(ol, n).unwrap();
                for g in 0..n as i32 {
                    let lane = g & 31;
                    let src = g - lane + shfl_src(mode, lane, bs[lane as usize], width);
                    let ctx = format!("mode {mode} width {width} b {:?} lane {lane} order {o}", bs[lane as usize]);
                    assert_eq!(vi[g as usize], src * 10 + 3, "{ctx}");
                    assert_eq!(vf[g as usize], 0.5 + src as f32, "{ctx}");
                    assert_eq!(vl[g as usize], 0x1_0000_0000 * src as u64 + 0xabcd, "{ctx}");
                }
            }
        }
    }
}

#[test]
fn ballot_all_any_match_with_partial_masks() {
    let emu = emu();
    let (nb, nt) = (2usize, 64usize);
    let n = nb * nt;
    let mut rng = Rng(99);
    let out = emu.alloc(n * 16).unwrap();
    for (mi, mask) in [0xffff_ffffu32, 0x0000_ffff, 0xaaaa_aaaa, 0x8000_0001].into_iter().enumerate() {
        for pattern in 0..3 {
            let preds: Vec<i32> = (0..n)
                .map(|g| match pattern {
                    0 => 1,
                    1 => 0,
                    _ => rng.next_u32().is_multiple_of(3) as i32 * (g as i32 + 1),
                })
                .collect();
            let p = emu.upload(&preds).unwrap();
            emu.memset(out, 0, n * 16).unwrap();
            emu.set_thread_order(ORDERS[(mi + pattern) % ORDERS.len()]);
            launch(&emu, "emu_test_vote", nb as u32, nt as u32, 0, &[Arg::Ptr(out), Arg::Ptr(p), Arg::U32(mask)])
                .unwrap();
            let v: Vec<u32> = emu.download(out, n * 4).unwrap();
            for w in 0..n / 32 {
                let mut ballot = 0u32;
                for l in 0..32 {
                    if mask >> l & 1 == 1 && preds[w * 32 + l] != 0 {
                        ballot |= 1 << l;
                    }
                }
                for l in 0..32 {
                    let g = w * 32 + l;
                    let r = &v[4 * g..4 * g + 4];
                    if mask >> l & 1 == 0 {
                        assert_eq!(r, &[0, 0, 0, 0]);
                        continue;
                    }
                    let same: u32 = (0..32)
                        .filter(|&h| mask >> h & 1 == 1 && preds[w * 32 + h] == preds[g])
                        .fold(0, |m, h| m | 1 << h);
                    assert_eq!(r[0], ballot, "ballot, mask {mask:#x}");
                    assert_eq!(r[1], (ballot == mask) as u32, "all, mask {mask:#x}");
                    assert_eq!(r[2], (ballot != 0) as u32, "any, mask {mask:#x}");
                    assert_eq!(r[3], same, "match_any, mask {mask:#x}");
                }
            }
        }
    }
}

#[test]
fn warp_and_block_reductions() {
    let emu = emu();
    let (nb, nt) = (7usize, 256usize);
    let mut rng = Rng(3);
    let input: Vec<f32> = (0..nb * nt).map(|_| (rng.next_u32() % 1000) as f32).collect();
    let x = emu.upload(&input).unwrap();
    let y = emu.alloc(nb * 4).unwrap();
    for_each_order(&emu, |o| {
        launch(&emu, "emu_test_block_sum", nb as u32, nt as u32, 0, &[Arg::Ptr(y), Arg::Ptr(x)]).unwrap();
        let v: Vec<f32> = emu.download(y, nb).unwrap();
        for b in 0..nb {
            let want: f32 = input[b * nt..(b + 1) * nt].iter().sum();
            assert_eq!(v[b], want, "order {o}"); // integers: exact in any order
        }
    });
}

#[test]
fn half_warps_with_their_own_masks() {
    let emu = emu();
    let out = emu.alloc(64 * 4).unwrap();
    for_each_order(&emu, |o| {
        launch(&emu, "emu_test_half_warps", 1u32, 64u32, 0, &[Arg::Ptr(out)]).unwrap();
        let v: Vec<i32> = emu.download(out, 64).unwrap();
        for (t, &got) in v.iter().enumerate() {
            let want = if t % 32 < 16 { (0..16).sum::<i32>() } else { (16..32).sum::<i32>() };
            assert_eq!(got, want, "order {o} thread {t}");
        }
    });
}

#[test]
fn histogram_with_atomics_across_blocks() {
    let emu = emu();
    let n = 100_000usize;
    let nbins = 37usize;
    let mut rng = Rng(11);
    let data: Vec<u32> = (0..n).map(|_| rng.next_u32()).collect();
    let mut want = vec![0u32; nbins];
    for d in &data {
        want[*d as usize % nbins] += 1;
    }
    let d = emu.upload(&data).unwrap();
    let h = emu.alloc(nbins * 4).unwrap();
    for_each_order(&emu, |o| {
        emu.memset(h, 0, nbins * 4).unwrap();
        let args = [Arg::Ptr(h), Arg::Ptr(d), Arg::I32(n as i32), Arg::I32(nbins as i32)];
        launch(&emu, "emu_test_histogram", 64u32, 128u32, (nbins * 4) as u32, &args).unwrap();
        assert_eq!(emu.download::<u32>(h, nbins).unwrap(), want, "order {o}");
    });
}

#[test]
fn atomics_of_every_type() {
    let emu = emu();
    let (nb, nt) = (50usize, 128usize);
    let n = nb * nt;
    let acc = emu.alloc(8 * 4).unwrap();
    let uacc = emu.alloc(4 * 4).unwrap();
    let lacc = emu.alloc(8).unwrap();
    let facc = emu.alloc(4).unwrap();
    let dacc = emu.alloc(8).unwrap();
    let tickets = emu.alloc(n * 4).unwrap();
    for_each_order(&emu, |o| {
        emu.htod(&[0i32, -1, 0, 0, 0, -7, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>(), acc).unwrap();
        emu.htod(&[0u32, 1_000_000, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>(), uacc).unwrap();
        emu.memset(lacc, 0, 8).unwrap();
        emu.memset(facc, 0, 4).unwrap();
        emu.memset(dacc, 0, 8).unwrap();
        let args = [Arg::Ptr(acc), Arg::Ptr(uacc), Arg::Ptr(lacc), Arg::Ptr(facc), Arg::Ptr(dacc), Arg::Ptr(tickets)];
        launch(&emu, "emu_test_atomics", nb as u32, nt as u32, 0, &args).unwrap();
        let a: Vec<i32> = emu.download(acc, 8).unwrap();
        assert_eq!(a[0], n as i32, "order {o}");
        assert_eq!(a[1], n as i32 - 1);
        assert_eq!(a[2], -(n as i32 - 1));
        assert_eq!(a[4], n as i32);
        assert!((0..n as i32).contains(&a[5]));
        let u: Vec<u32> = emu.download(uacc, 4).unwrap();
        assert_eq!(u[0], (n % 1000) as u32, "atomicInc wraps");
        assert_eq!(u[1], 1_000_000 - n as u32);
        assert_eq!(u[2], u32::MAX);
        assert_eq!(emu.download::<u64>(lacc, 1).unwrap()[0], (n as u64) << 33);
        assert_eq!(emu.download::<f32>(facc, 1).unwrap()[0], n as f32 * 0.5);
        assert_eq!(emu.download::<f64>(dacc, 1).unwrap()[0], n as f64 * 0.25);
        let mut t: Vec<i32> = emu.download(tickets, n).unwrap();
        t.sort_unstable();
        assert_eq!(t, (0..n as i32).collect::<Vec<_>>(), "every CAS ticket is distinct");
    });
}

#[test]
fn math_functions_match_rust() {
    let emu = emu();
    let mut rng = Rng(5);
    let mut input: Vec<f32> = (0..1000).map(|_| rng.uniform(-8.0, 8.0)).collect();
    input.extend([0.0, -0.0, 1.0, -1.0, 0.25, 1e-6, 3.0, -3.5]);
    let n = input.len();
    let x = emu.upload(&input).unwrap();
    let y = emu.alloc(n * 20 * 4).unwrap();
    launch(&emu, "emu_test_math", n.div_ceil(128) as u32, 128u32, 0, &[Arg::Ptr(y), Arg::Ptr(x), Arg::I32(n as i32)])
        .unwrap();
    let v: Vec<f32> = emu.download(y, n * 20).unwrap();
    let erf = |x: f64| {
        // Abramowitz-Stegun 7.1.26 is too coarse; integrate instead.
        let steps = 2000;
        let h = x / steps as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for k in 1..steps {
            s += f(k as f64 * h) * if k % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    };
    for (i, &x) in input.iter().enumerate() {
        let xd = x as f64;
        let xp1 = (x.abs() + 1.0) as f64; // |x| + 1 rounded in f32, as the kernel does
        let want: [f64; 20] = [
            xd.exp(),
            xp1.ln(),
            xd.abs().sqrt(),
            1.0 / xp1.sqrt(),
            xd.sin(),
            xd.cos(),
            xd.sin(),
            xd.cos(),
            xd.tanh(),
            xd.abs().powf(1.5),
            xd.max(0.25),
            xd.min(0.25),
            xd.exp(),
            xp1.ln(),
            xd / 3.0,
            xd.max(-0.5),
            xd.min(2.0),
            xd.clamp(0.0, 1.0),
            erf(xd),
            xd.exp2(),
        ];
        for (j, w) in want.iter().enumerate() {
            let got = v[20 * i + j] as f64;
            let tol = 2e-6 * w.abs().max(1e-3);
            assert!((got - w).abs() <= tol, "function {j} of {x}: got {got}, want {w}");
        }
    }
}

#[test]
fn integer_intrinsics_match_rust() {
    let emu = emu();
    let mut rng = Rng(17);
    let mut a: Vec<u32> = (0..500).map(|_| rng.next_u32()).collect();
    let mut b: Vec<u32> = (0..500).map(|_| rng.next_u32()).collect();
    a.extend([0, 1, u32::MAX, 0x8000_0000]);
    b.extend([0, u32::MAX, 1, 0x8000_0000]);
    let n = a.len();
    let (da, db) = (emu.upload(&a).unwrap(), emu.upload(&b).unwrap());
    let out = emu.alloc(n * 12 * 4).unwrap();
    let args = [Arg::Ptr(out), Arg::Ptr(da), Arg::Ptr(db), Arg::I32(n as i32)];
    launch(&emu, "emu_test_int_ops", n.div_ceil(64) as u32, 64u32, 0, &args).unwrap();
    let v: Vec<u32> = emu.download(out, n * 12).unwrap();
    for i in 0..n {
        let (x, y) = (a[i], b[i]);
        let byte_perm = {
            let s = 0x5140u32;
            let bytes = ((y as u64) << 32 | x as u64).to_le_bytes();
            (0..4).fold(0u32, |r, k| r | (bytes[((s >> (4 * k)) & 7) as usize] as u32) << (8 * k))
        };
        let funnel = (((y as u64) << 32 | x as u64) << (y & 31) >> 32) as u32;
        let f2i = (f32::from_bits(0x3f80_0000 + (x & 0xffff)) * 1000.5).round_ties_even() as i32 as u32;
        let want = [
            ((x as u64 * y as u64) >> 32) as u32,
            x.count_ones(),
            x.leading_zeros(),
            x.reverse_bits(),
            if x == 0 { 0 } else { x.trailing_zeros() + 1 },
            x,
            x.min(y),
            (x as i32).max(y as i32) as u32,
            ((x as i32 as i64 * y as i32 as i64) >> 32) as i32 as u32,
            byte_perm,
            f2i,
            funnel,
        ];
        assert_eq!(&v[12 * i..12 * i + 12], &want, "element {i}: a={x:#x} b={y:#x}");
    }
}

fn sgemm_reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for p in 0..k {
                acc += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = acc;
        }
    }
    c
}

#[test]
fn sgemm_naive_and_tiled_match_the_reference() {
    let emu = emu();
    let (m, n, k) = (70usize, 45usize, 33usize);
    let mut rng = Rng(23);
    let a: Vec<f32> = (0..m * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let want = sgemm_reference(&a, &b, m, n, k);
    let (da, db) = (emu.upload(&a).unwrap(), emu.upload(&b).unwrap());
    let dc = emu.alloc(m * n * 4).unwrap();
    let grid = (n.div_ceil(16) as u32, m.div_ceil(16) as u32);
    for_each_order(&emu, |o| {
        for kernel in ["emu_test_sgemm_naive", "emu_test_sgemm_tiled"] {
            emu.memset(dc, 0xff, m * n * 4).unwrap();
            let args =
                [Arg::Ptr(dc), Arg::Ptr(da), Arg::Ptr(db), Arg::I32(m as i32), Arg::I32(n as i32), Arg::I32(k as i32)];
            launch(&emu, kernel, grid, (16u32, 16u32), 0, &args).unwrap();
            let c: Vec<f32> = emu.download(dc, m * n).unwrap();
            for i in 0..m * n {
                assert!((c[i] - want[i]).abs() <= 1e-5, "{kernel} order {o} element {i}: {} vs {}", c[i], want[i]);
            }
        }
    });
}

#[test]
fn nanosleep_lets_a_spinning_thread_wait_for_another() {
    let emu = emu();
    let out = emu.alloc(3 * 4).unwrap();
    for_each_order(&emu, |o| {
        emu.memset(out, 0, 12).unwrap();
        launch(&emu, "emu_test_spin", 3u32, 96u32, 0, &[Arg::Ptr(out)]).unwrap();
        assert_eq!(emu.download::<i32>(out, 3).unwrap(), vec![42; 3], "order {o}");
    });
}

#[test]
fn ucontext_fallback_gives_the_same_results() {
    let emu = emu();
    emu.set_ucontext(true);
    assert_eq!(emu.switch_kind(), "ucontext fibers");
    let (nb, nt) = (3usize, 256usize);
    let input: Vec<f32> = (0..nb * nt).map(|i| (i % 97) as f32).collect();
    let x = emu.upload(&input).unwrap();
    let y = emu.alloc(nb * 4).unwrap();
    for_each_order(&emu, |o| {
        launch(&emu, "emu_test_block_sum", nb as u32, nt as u32, 0, &[Arg::Ptr(y), Arg::Ptr(x)]).unwrap();
        let v: Vec<f32> = emu.download(y, nb).unwrap();
        for b in 0..nb {
            assert_eq!(v[b], input[b * nt..(b + 1) * nt].iter().sum::<f32>(), "order {o}");
        }
    });
}

#[test]
fn registry_describes_kernel_signatures() {
    let emu = emu();
    let k = emu.kernel("emu_test_shfl").expect("registered");
    assert_eq!(k.file, "crates/emu/tests/kernels/emu_semantics.cu");
    assert_eq!(k.arg_names, ["out_i", "out_f", "out_l", "b_per_lane", "mode", "width"]);
    assert_eq!(k.arg_sizes, [8, 8, 8, 8, 4, 4]);
    assert_eq!(k.arg_kinds, [ArgKind::Ptr, ArgKind::Ptr, ArgKind::Ptr, ArgKind::Ptr, ArgKind::I32, ArgKind::I32]);
    let k = emu.kernel("emu_test_to16").unwrap();
    assert_eq!(k.arg_kinds[2], ArgKind::U64);
    assert!(emu.kernel_names().contains(&"emu_bug_oob_write"));
    assert!(emu.workers() >= 1);
    assert!(diffuse_emu::probe().starts_with("CUDA emulator"), "{}", diffuse_emu::probe());
}
