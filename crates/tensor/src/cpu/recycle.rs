//! Output buffers without a memset. Most CPU ops write every element of
//! their output, so the zeros of `vec![0; n]` are written only to be
//! overwritten (calloc on a reused heap block is a memset: ~5% of a CPU
//! training step). Buffers of dropped tensors are kept here by exact length
//! and handed to the next op that asks for that length; a training or
//! sampling step asks for the same lengths every time, so after the first
//! step almost every large output comes from here. On a miss, every kept
//! buffer is freed before the allocator is asked, so the pool does not make
//! the heap grow (BENCHMARKS.md, 2026-11-30: a faster step and no more peak
//! memory than zeroed buffers).
//!
//! A recycled buffer holds stale values: only ops that overwrite every
//! element take one ([`output`]). Debug builds (the tests) fill every buffer
//! handed out with NaN, so an op that misses an element fails its reference
//! test instead of leaking a stale value.

use crate::Element;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Mutex;

/// Buffers smaller than this go back to the allocator: zeroing a few KB is free.
const MIN_BYTES: usize = 64 << 10;
/// The most bytes kept at once; beyond it, dropped buffers are freed.
const MAX_BYTES: usize = 256 << 20;

#[derive(Default)]
struct Pool {
    f32: HashMap<usize, Vec<Vec<f32>>>,
    f64: HashMap<usize, Vec<Vec<f64>>>,
    bytes: usize,
}

impl Pool {
    fn shelf<T: Element>(&mut self) -> Option<&mut HashMap<usize, Vec<Vec<T>>>> {
        (&mut self.f32 as &mut dyn Any).downcast_mut().or_else(|| (&mut self.f64 as &mut dyn Any).downcast_mut())
    }

    /// Keeps `v` if its length is one some op has asked for (other buffers
    /// would wait here for nothing) and the pool has room.
    fn put<T: Element>(&mut self, v: Vec<T>) {
        let size = bytes::<T>(v.len());
        if self.bytes + size > MAX_BYTES {
            return;
        }
        if let Some(shelf) = self.shelf::<T>().and_then(|s| s.get_mut(&v.len())) {
            shelf.push(v);
            self.bytes += size;
        }
    }

    /// A kept buffer of length `n`. On a miss the allocator has to find
    /// `n` elements, and kept buffers would only stand in its way: all of
    /// them are freed first, so that keeping buffers never makes the heap
    /// grow (freeing only enough of them leaves holes between live
    /// buffers: measured, 30-60 MB more peak memory at mnist batch 128).
    fn take<T: Element>(&mut self, n: usize) -> Option<Vec<T>> {
        let shelf = self.shelf::<T>()?;
        if let Some(v) = shelf.entry(n).or_default().pop() {
            self.bytes -= bytes::<T>(n);
            return Some(v);
        }
        self.f32.values_mut().for_each(Vec::clear);
        self.f64.values_mut().for_each(Vec::clear);
        self.bytes = 0;
        None
    }
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> R {
    // A panic while holding the lock leaves the pool consistent (every
    // update is a single push or pop), so a poisoned lock is still usable.
    let mut guard = match POOL.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    f(guard.get_or_insert_with(Pool::default))
}

fn bytes<T>(len: usize) -> usize {
    len * std::mem::size_of::<T>()
}

/// A buffer of `n` elements for an op that writes every one of them. Its
/// contents are unspecified (NaN in debug builds).
pub fn output<T: Element>(n: usize) -> Vec<T> {
    let reused = if bytes::<T>(n) >= MIN_BYTES { with_pool(|p| p.take::<T>(n)) } else { None };
    #[allow(unused_mut)]
    let mut v = reused.unwrap_or_else(|| vec![T::zero(); n]);
    #[cfg(debug_assertions)]
    v.fill(T::nan());
    v
}

/// Takes back the buffer of a dropped tensor (called by `CpuStorage`'s drop).
pub(crate) fn recycle<T: Element>(v: Vec<T>) {
    if bytes::<T>(v.len()) < MIN_BYTES || v.capacity() != v.len() {
        return;
    }
    with_pool(|p| p.put(v));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(n: usize, mark: f32) -> Vec<f32> {
        vec![mark; n]
    }

    #[test]
    fn a_kept_buffer_goes_to_the_next_request_of_its_length_and_type() {
        let mut p = Pool::default();
        assert!(p.take::<f32>(1000).is_none(), "nothing kept yet");
        p.put(marked(1000, 7.0));
        p.put(marked(999, 8.0)); // never asked for: not kept
        assert_eq!(p.bytes, 4000);
        let v = p.take::<f32>(1000).expect("the kept buffer");
        assert_eq!((v.len(), v[0]), (1000, 7.0));
        assert_eq!(p.bytes, 0);
        p.put(v);
        assert!(p.take::<f64>(1000).is_none(), "an f64 request never gets an f32 buffer");
    }

    #[test]
    fn a_miss_frees_every_kept_buffer() {
        let mut p = Pool::default();
        for n in [100, 200] {
            assert!(p.take::<f32>(n).is_none());
            assert!(p.take::<f64>(n).is_none());
        }
        p.put(marked(100, 1.0));
        p.put(marked(200, 2.0));
        p.put(vec![3.0f64; 100]);
        assert_eq!(p.bytes, 4 * 300 + 8 * 100);
        assert_eq!(p.take::<f32>(200).map(|v| v[0]), Some(2.0), "a hit frees nothing else");
        assert_eq!(p.bytes, 4 * 100 + 8 * 100);
        assert!(p.take::<f32>(150).is_none());
        assert_eq!(p.bytes, 0);
        assert!(p.take::<f32>(100).is_none() && p.take::<f64>(100).is_none());
    }

    #[test]
    fn debug_builds_hand_out_nan() {
        // What makes an op that skips an element fail its reference test.
        let small: Vec<f64> = output(5);
        let large: Vec<f32> = output(MIN_BYTES);
        if cfg!(debug_assertions) {
            assert!(small.iter().all(|x| x.is_nan()) && large.iter().all(|x| x.is_nan()));
        }
    }
}
