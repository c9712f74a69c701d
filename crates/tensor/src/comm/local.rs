//! The in-process communicator: ranks are threads of one process sharing a
//! slot table. Each collective, every rank copies its bucket to the host
//! and leaves it in its slot; the last rank to arrive combines the slots
//! (a sum in rank order: ((r0 + r1) + r2) + ..., so the bits never depend on
//! which thread came last) and publishes the result, which every rank
//! copies back. A failure (`abort`, a timeout, a mismatch) is recorded in
//! the shared state and wakes every waiting rank with it.

use super::{flatten, unflatten, CommError, Communicator, Result};
use crate::Tensor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a collective does with the slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Sum,
    Broadcast(usize),
    Barrier,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Sum => "all-reduce",
            Op::Broadcast(_) => "broadcast",
            Op::Barrier => "barrier",
        }
    }
}

struct State {
    /// Collectives completed so far.
    done: u64,
    /// This collective's contributions, by rank.
    slots: Vec<Option<(Op, Vec<f32>)>>,
    /// The result of collective number `done - 1`.
    result: Arc<Vec<f32>>,
    /// Set once: the first failure, which every rank returns from then on.
    failed: Option<CommError>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    world: usize,
    timeout: Duration,
}

/// The communicators of one in-process group: `world` of them, one per
/// rank (hand each to its thread), with [`super::default_timeout`].
pub fn group(world: usize) -> Vec<LocalComm> {
    group_with_timeout(world, super::default_timeout())
}

/// [`group`] with every wait limited to `timeout`.
pub fn group_with_timeout(world: usize, timeout: Duration) -> Vec<LocalComm> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { done: 0, slots: vec![None; world], result: Arc::new(Vec::new()), failed: None }),
        wake: Condvar::new(),
        world,
        timeout,
    });
    (0..world).map(|rank| LocalComm { rank, shared: shared.clone(), seq: AtomicU64::new(0) }).collect()
}

/// One rank of a [`group`].
pub struct LocalComm {
    rank: usize,
    shared: Arc<Shared>,
    /// Collectives this rank has entered.
    seq: AtomicU64,
}

impl LocalComm {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked while holding the lock left consistent data
        // (slots are written whole); go on and let abort speak.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, st: &mut State, e: CommError) -> CommError {
        let e = st.failed.get_or_insert(e).clone();
        self.shared.wake.notify_all();
        e
    }

    /// Enters collective `op` with this rank's data; returns the result.
    fn collective(&self, op: Op, data: Vec<f32>) -> Result<Arc<Vec<f32>>> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut st = self.lock();
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        st.slots[self.rank] = Some((op, data));
        if st.slots.iter().all(Option::is_some) {
            let slots: Vec<(Op, Vec<f32>)> = st.slots.iter_mut().filter_map(Option::take).collect();
            match combine(seq, &slots) {
                Ok(r) => {
                    st.result = Arc::new(r);
                    st.done = seq + 1;
                    self.shared.wake.notify_all();
                    return Ok(st.result.clone());
                }
                Err(e) => return Err(self.fail(&mut st, e)),
            }
        }
        let deadline = Instant::now() + self.shared.timeout;
        loop {
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.done > seq {
                return Ok(st.result.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<String> =
                    (0..self.shared.world).filter(|&r| st.slots[r].is_none()).map(|r| r.to_string()).collect();
                let e = CommError::Timeout {
                    rank: self.rank,
                    op: format!("{} #{seq}", op.name()),
                    secs: self.shared.timeout.as_secs(),
                    missing: missing.join(", "),
                };
                return Err(self.fail(&mut st, e));
            }
            st = self.shared.wake.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// The result of one collective from every rank's (op, data), in rank order.
fn combine(seq: u64, slots: &[(Op, Vec<f32>)]) -> Result<Vec<f32>> {
    let (op, first) = &slots[0];
    for (r, (o, d)) in slots.iter().enumerate() {
        if o != op {
            return Err(CommError::Mismatch {
                seq,
                detail: format!("rank 0 called {} but rank {r} called {}", op.name(), o.name()),
            });
        }
        if *op == Op::Sum && d.len() != first.len() {
            return Err(CommError::Mismatch {
                seq,
                detail: format!("rank 0 sums {} values but rank {r} sums {}", first.len(), d.len()),
            });
        }
    }
    Ok(match op {
        Op::Sum => {
            let mut acc = first.clone();
            for (_, d) in &slots[1..] {
                for (a, &x) in acc.iter_mut().zip(d) {
                    *a += x;
                }
            }
            acc
        }
        Op::Broadcast(root) => match slots.get(*root) {
            Some((_, d)) => d.clone(),
            None => return Err(CommError::Mismatch { seq, detail: format!("no rank {root} to broadcast from") }),
        },
        Op::Barrier => Vec::new(),
    })
}

impl Communicator for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_sum(&self, bucket: &mut [&mut Tensor]) -> Result<()> {
        let data = flatten(bucket)?;
        let sum = self.collective(Op::Sum, data)?;
        unflatten(bucket, &sum)
    }

    fn broadcast(&self, bucket: &mut [&mut Tensor], root: usize) -> Result<()> {
        let data = if self.rank == root { flatten(bucket)? } else { Vec::new() };
        let got = self.collective(Op::Broadcast(root), data)?;
        let want: usize = bucket.iter().map(|t| t.numel()).sum();
        if got.len() != want {
            let e = CommError::Mismatch {
                seq: self.seq.load(Ordering::Relaxed) - 1,
                detail: format!("rank {root} broadcast {} values, rank {} expected {want}", got.len(), self.rank),
            };
            return Err(self.fail(&mut self.lock(), e));
        }
        unflatten(bucket, &got)
    }

    fn barrier(&self) -> Result<()> {
        self.collective(Op::Barrier, Vec::new()).map(drop)
    }

    fn abort(&self, reason: &str) {
        let mut st = self.lock();
        self.fail(&mut st, CommError::PeerFailed { rank: self.rank, reason: reason.to_string() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(rank: usize, n: usize) -> Vec<f32> {
        // awkward magnitudes, so the summation order shows in the bits
        (0..n).map(|i| ((i * 7919 + rank * 104_729) % 1000) as f32 * 1e-3 * 10f32.powi((i % 7) as i32 - 3)).collect()
    }

    fn run_group<T: Send>(world: usize, f: impl Fn(LocalComm) -> T + Sync) -> Vec<T> {
        let comms = group_with_timeout(world, Duration::from_secs(20));
        std::thread::scope(|s| {
            let hs: Vec<_> = comms.into_iter().map(|c| s.spawn(|| f(c))).collect();
            hs.into_iter().map(|h| h.join().expect("rank thread")).collect()
        })
    }

    #[test]
    fn all_reduce_is_the_rank_ordered_sum_on_every_rank() {
        for world in [1, 2, 3, 4] {
            let sizes = [13usize, 1, 250];
            let got = run_group(world, |c| {
                let mut ts: Vec<Tensor> = sizes
                    .iter()
                    .enumerate()
                    .map(|(k, &n)| Tensor::from_vec(values(c.rank() * 3 + k, n), [n]).expect("tensor"))
                    .collect();
                let mut bucket: Vec<&mut Tensor> = ts.iter_mut().collect();
                c.all_reduce_sum(&mut bucket).expect("all-reduce");
                ts.iter().map(|t| t.to_vec_f32().expect("host")).collect::<Vec<_>>()
            });
            for (k, &n) in sizes.iter().enumerate() {
                // the reference: f32 adds in rank order
                let mut want = values(k, n);
                for r in 1..world {
                    for (w, x) in want.iter_mut().zip(values(r * 3 + k, n)) {
                        *w += x;
                    }
                }
                for rank_result in &got {
                    assert_eq!(
                        rank_result[k].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        "world {world} tensor {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn broadcast_and_barrier() {
        let got = run_group(3, |c| {
            let mut t = Tensor::from_vec(values(c.rank(), 9), [3, 3]).expect("tensor");
            c.barrier().expect("barrier");
            c.broadcast(&mut [&mut t], 2).expect("broadcast");
            t.to_vec_f32().expect("host")
        });
        for g in got {
            assert_eq!(g, values(2, 9));
        }
    }

    #[test]
    fn an_aborted_rank_stops_every_rank_with_its_reason() {
        let start = Instant::now();
        let got = run_group(4, |c| {
            let mut t = Tensor::from_vec(vec![1f32; 4], [4]).expect("tensor");
            for step in 0..10 {
                if c.rank() == 1 && step == 3 {
                    c.abort("injected failure at step 3");
                    return Err(CommError::Device("failed".into()));
                }
                c.all_reduce_sum(&mut [&mut t])?;
            }
            Ok(())
        });
        assert!(start.elapsed() < Duration::from_secs(10));
        for (r, g) in got.iter().enumerate() {
            match g {
                Err(CommError::PeerFailed { rank: 1, reason }) => assert!(reason.contains("step 3")),
                Err(CommError::Device(_)) if r == 1 => {}
                other => panic!("rank {r}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_missing_rank_is_a_timeout_naming_it() {
        let mut comms = group_with_timeout(3, Duration::from_millis(200));
        let _absent = comms.pop();
        let got = std::thread::scope(|s| {
            let hs: Vec<_> = comms.into_iter().map(|c| s.spawn(move || c.barrier())).collect();
            hs.into_iter().map(|h| h.join().expect("rank thread")).collect::<Vec<_>>()
        });
        for g in got {
            match g {
                Err(CommError::Timeout { missing, .. }) => assert_eq!(missing, "2"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn mismatched_sizes_are_an_error_on_every_rank() {
        let got = run_group(2, |c| {
            let mut t = Tensor::from_vec(vec![1f32; 3 + c.rank()], [3 + c.rank()]).expect("tensor");
            c.all_reduce_sum(&mut [&mut t])
        });
        for g in got {
            assert!(matches!(g, Err(CommError::Mismatch { .. })), "{g:?}");
        }
    }
}
