//! Optimiser kernels, in place: one AdamW step (PyTorch's decoupled weight
//! decay form), the EMA of the weights used for sampling, and the global L2
//! norm of all gradients (for clipping and logging).
//!
//! AdamW works per element in f64 and rounds once to T on store: the moments
//! of f32 parameters then lose nothing to the update arithmetic itself.

use super::elementwise::{sum_squares_f64, PAR_CHUNK};
use crate::geom::AdamWConsts;
use crate::Element;
use rayon::prelude::*;

impl AdamWConsts {
    /// One element: returns the new (param, m, v).
    #[inline]
    pub fn update(&self, p: f64, g: f64, m: f64, v: f64) -> (f64, f64, f64) {
        let p = p * self.decay;
        let m = self.beta1 * m + (1.0 - self.beta1) * g;
        let v = self.beta2 * v + (1.0 - self.beta2) * g * g;
        let denom = v.sqrt() / self.bias_correction2_sqrt + self.eps;
        (p - self.step_size * m / denom, m, v)
    }
}

/// One AdamW step over equally long slices.
pub fn adamw_step<T: Element>(param: &mut [T], grad: &[T], m: &mut [T], v: &mut [T], c: &AdamWConsts) {
    param
        .par_chunks_mut(PAR_CHUNK)
        .zip(m.par_chunks_mut(PAR_CHUNK).zip(v.par_chunks_mut(PAR_CHUNK)))
        .zip(grad.par_chunks(PAR_CHUNK))
        .for_each(|((p, (m, v)), g)| {
            for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                let (np, nm, nv) = c.update(p.to_f64(), g.to_f64(), m.to_f64(), v.to_f64());
                *p = T::from_f64(np);
                *m = T::from_f64(nm);
                *v = T::from_f64(nv);
            }
        });
}

/// ema = decay * ema + (1 - decay) * param.
pub fn ema_update<T: Element>(ema: &mut [T], param: &[T], decay: f64) {
    let (d, k) = (T::from_f64(decay), T::from_f64(1.0 - decay));
    ema.par_chunks_mut(PAR_CHUNK).zip(param.par_chunks(PAR_CHUNK)).for_each(|(e, p)| {
        for (e, &p) in e.iter_mut().zip(p) {
            *e = d * *e + k * p;
        }
    });
}

/// Sum of squares of one tensor's elements in f64 (deterministic).
pub fn sum_squares<T: Element>(x: &[T]) -> f64 {
    sum_squares_f64(x)
}
