//! Sinusoidal timestep embedding (Vaswani et al.; as in the DDPM reference
//! `get_timestep_embedding`): row n is [sin(t_n f_0..), cos(t_n f_0..)] with
//! f_k = exp(-k ln(10000) / (half - 1)), plus a zero column when dim is odd.
//!
//! The class embedding is a learned table gathered by label; its backward
//! sums each row's gradient over the batch in increasing sample order (the
//! order kernels/embedding.cu uses, so both devices give the same bits).
//!
//! The timestep embedding is computed in f64 whatever T is: t reaches ~1000, so an f32 product t * f_k
//! would already be off by ~1e-4 before the sine.

use crate::Element;
use rayon::prelude::*;

/// The frequency of column k of `half` sine (or cosine) columns.
/// With half == 1 the formula's 0/0 is taken as frequency 1, the k = 0 value
/// of every other width.
pub fn frequency(k: usize, half: usize) -> f64 {
    if k == 0 {
        return 1.0;
    }
    (-(k as f64) * 10000f64.ln() / (half - 1) as f64).exp()
}

/// emb [n, dim] from t [n]; `dim >= 2` is checked by the caller.
pub fn timestep_embedding<T: Element>(t: &[T], dim: usize, emb: &mut [T]) {
    let half = dim / 2;
    let freqs: Vec<f64> = (0..half).map(|k| frequency(k, half)).collect();
    emb.par_chunks_mut(dim).zip(t.par_iter()).for_each(|(row, &t)| {
        let t = t.to_f64();
        let (sin, rest) = row.split_at_mut(half);
        let (cos, pad) = rest.split_at_mut(half);
        for ((s, c), &f) in sin.iter_mut().zip(cos.iter_mut()).zip(&freqs) {
            let (sv, cv) = (t * f).sin_cos();
            *s = T::from_f64(sv);
            *c = T::from_f64(cv);
        }
        // odd dim: the last column stays zero
        pad.iter_mut().for_each(|p| *p = T::zero());
    });
}

/// out [n, dim] = table rows picked by `labels` (each `< rows`, checked by the caller).
pub fn class_embedding<T: Element>(table: &[T], labels: &[usize], dim: usize, out: &mut [T]) {
    out.par_chunks_mut(dim).zip(labels.par_iter()).for_each(|(row, &k)| {
        row.copy_from_slice(&table[k * dim..(k + 1) * dim]);
    });
}

/// dtable [rows, dim]: row k is the sum of dout's rows whose label is k, in
/// increasing sample order (rows no label picks are zero).
pub fn class_embedding_backward<T: Element>(dout: &[T], labels: &[usize], dim: usize, dtable: &mut [T]) {
    dtable.par_chunks_mut(dim).enumerate().for_each(|(k, row)| {
        row.iter_mut().for_each(|v| *v = T::zero());
        for (r, _) in labels.iter().enumerate().filter(|(_, &l)| l == k) {
            for (acc, &d) in row.iter_mut().zip(&dout[r * dim..(r + 1) * dim]) {
                *acc += d;
            }
        }
    });
}
