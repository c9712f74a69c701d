//! A shard of a batch (data parallelism) draws exactly the noise and the
//! dropout mask the whole batch gives those elements: `noise_add_at` and
//! `dropout_*_at` at an element offset equal the matching slice of the
//! whole draw, bit for bit, for aligned and unaligned offsets, on every
//! device.

use diffuse_tensor::{gpu, ops, Device, Tensor};

fn host(n: usize, salt: u32) -> Vec<f32> {
    (0..n).map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ salt) % 2001) as f32 / 1000.0 - 1.0).collect()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32().expect("host").iter().map(|x| x.to_bits()).collect()
}

fn shards_match_the_whole_batch(dev: &Device) {
    // per-sample sizes: aligned (12, 784) and not (7, 49)
    for (n, per) in [(6usize, 7usize), (5, 12), (4, 49), (3, 784)] {
        let x = host(n * per, 7);
        let a: Vec<f32> = (0..n).map(|s| 0.3 + 0.1 * s as f32).collect();
        let b: Vec<f32> = (0..n).map(|s| 0.9 - 0.1 * s as f32).collect();
        let up =
            |v: &[f32], shape: &[usize]| Tensor::from_slice(v, shape.to_vec()).expect("t").to_device(dev).expect("dev");
        let whole = ops::noise_add(&up(&x, &[n, per]), &up(&a, &[n]), &up(&b, &[n]), 42, 3, 0).expect("noise");
        let drop_whole = ops::dropout_forward(&up(&x, &[n, per]), 0.3, 9, 4, 2).expect("dropout");
        let (eps, xt, dw) = (bits(&whole.eps), bits(&whole.x_t), bits(&drop_whole));
        // every split of the batch into a prefix and a shard
        for first in 0..n {
            for len in 1..=(n - first) {
                let r = first * per..(first + len) * per;
                let xs = up(&x[r.clone()], &[len, per]);
                let off = (first * per) as u64;
                let o = ops::noise_add_at(
                    &xs,
                    &up(&a[first..first + len], &[len]),
                    &up(&b[first..first + len], &[len]),
                    42,
                    3,
                    0,
                    off,
                )
                .expect("noise shard");
                assert_eq!(bits(&o.eps), eps[r.clone()], "eps n={n} per={per} first={first} len={len}");
                assert_eq!(bits(&o.x_t), xt[r.clone()], "x_t n={n} per={per} first={first} len={len}");
                let d = ops::dropout_forward_at(&xs, 0.3, 9, 4, 2, off).expect("dropout shard");
                assert_eq!(bits(&d), dw[r.clone()], "dropout n={n} per={per} first={first} len={len}");
                let db = ops::dropout_backward_at(&xs, 0.3, 9, 4, 2, off).expect("dropout bwd shard");
                assert_eq!(bits(&db), dw[r.clone()], "dropout bwd n={n} per={per} first={first} len={len}");
            }
        }
    }
}

#[test]
fn philox_shards_match_the_whole_batch_cpu() {
    shards_match_the_whole_batch(&Device::Cpu);
}

#[test]
fn philox_shards_match_the_whole_batch_emu() {
    shards_match_the_whole_batch(&gpu::emu::emu_device().expect("emulator"));
}
