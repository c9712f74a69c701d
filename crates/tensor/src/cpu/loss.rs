//! Mean squared error, the DDPM training loss ||eps_theta - eps||^2 averaged
//! over every element. The sum is accumulated in f64 over fixed chunks added
//! in order, so the loss has the same bits on any thread count.

use super::elementwise::{chunked_sum_f64, lane_sum_f64, PAR_CHUNK};
use crate::Element;
use rayon::prelude::*;

/// mean((pred - target)^2) in f64; `pred` is not empty (checked by the caller).
pub fn mse_loss_forward<T: Element>(pred: &[T], target: &[T]) -> f64 {
    let sum = chunked_sum_f64(pred.len(), |r| {
        lane_sum_f64(&pred[r.clone()], &target[r], |p, t| {
            let d = p.to_f64() - t.to_f64();
            d * d
        })
    });
    sum / pred.len() as f64
}

/// dpred = dloss * 2 (pred - target) / numel.
pub fn mse_loss_backward<T: Element>(pred: &[T], target: &[T], dloss: f64, dpred: &mut [T]) {
    let c = T::from_f64(2.0 * dloss / pred.len() as f64);
    dpred.par_chunks_mut(PAR_CHUNK).zip(pred.par_chunks(PAR_CHUNK).zip(target.par_chunks(PAR_CHUNK))).for_each(
        |(d, (p, t))| {
            for ((d, &p), &t) in d.iter_mut().zip(p).zip(t) {
                *d = c * (p - t);
            }
        },
    );
}
