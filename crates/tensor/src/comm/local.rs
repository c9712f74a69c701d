//! The in-process communicator: ranks are threads of one process sharing a
//! slot table. Each collective, every rank copies its bucket to the host
//! and leaves it in its slot; the last rank to arrive combines the slots
//! (a sum in rank order: ((r0 + r1) + r2) + ..., so the bits never depend on
//! which thread came last) and publishes the result, which every rank
//! copies back. A failure (`abort`, a timeout, a mismatch) is recorded in
//! the shared state and wakes every waiting rank with it.
//!
//! Each rank's collectives run on a communication thread of its own (started
//! at the first one), in the order the rank called them: a started
//! all-reduce ([`Communicator::start_all_reduce_sum`]) waits for the other
//! ranks and is summed there while the rank's thread goes on with its
//! backward; a blocking call is a start and a wait.

use super::{flatten, unflatten, CommError, Communicator, PendingReduce, Result};
use crate::Tensor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
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
    (0..world)
        .map(|rank| LocalComm {
            inner: Arc::new(RankEnd { rank, shared: shared.clone(), seq: AtomicU64::new(0) }),
            worker: Mutex::new(None),
        })
        .collect()
}

/// One rank of a [`group`].
pub struct LocalComm {
    inner: Arc<RankEnd>,
    /// The queue of the rank's communication thread (None before the first
    /// collective). Dropping it ends the thread once its queue is done.
    worker: Mutex<Option<Sender<Job>>>,
}

/// What the communication thread runs: one collective, answered on `reply`.
struct Job {
    op: Op,
    data: Vec<f32>,
    reply: Sender<Result<Arc<Vec<f32>>>>,
}

/// The rank's side of the shared state (used by its communication thread).
struct RankEnd {
    rank: usize,
    shared: Arc<Shared>,
    /// Collectives this rank has entered.
    seq: AtomicU64,
}

impl LocalComm {
    /// Queues collective `op` on the rank's communication thread (started
    /// here the first time); the answer comes on the returned receiver.
    fn submit(&self, op: Op, data: Vec<f32>) -> Result<Receiver<Result<Arc<Vec<f32>>>>> {
        let mut worker = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if worker.is_none() {
            let (tx, rx) = channel::<Job>();
            let end = self.inner.clone();
            std::thread::Builder::new()
                .name(format!("comm-rank-{}", end.rank))
                .spawn(move || {
                    for job in rx {
                        // the rank may have stopped waiting (an error): nobody to tell
                        let _ = job.reply.send(end.collective(job.op, job.data));
                    }
                })
                .map_err(|e| CommError::Device(format!("cannot start the communication thread: {e}")))?;
            *worker = Some(tx);
        }
        let (reply, answer) = channel();
        let queued = worker.as_ref().is_some_and(|w| w.send(Job { op, data, reply }).is_ok());
        if !queued {
            return Err(self.stopped());
        }
        Ok(answer)
    }

    /// Runs collective `op` (queued behind any started one) and waits for it.
    fn run(&self, op: Op, data: Vec<f32>) -> Result<Arc<Vec<f32>>> {
        self.submit(op, data)?.recv().map_err(|_| self.stopped())?
    }

    fn stopped(&self) -> CommError {
        CommError::Device(format!("the communication thread of rank {} stopped", self.inner.rank))
    }
}

/// An all-reduce queued on the communication thread.
struct LocalPending {
    answer: Receiver<Result<Arc<Vec<f32>>>>,
    rank: usize,
}

impl PendingReduce for LocalPending {
    fn finish(self: Box<Self>, bucket: &mut [&mut Tensor]) -> Result<()> {
        let rank = self.rank;
        let sum = self
            .answer
            .recv()
            .map_err(|_| CommError::Device(format!("the communication thread of rank {rank} stopped")))??;
        let want: usize = bucket.iter().map(|t| t.numel()).sum();
        if sum.len() != want {
            return Err(CommError::Device(format!(
                "an all-reduce was started with {} values and finished with {want}",
                sum.len()
            )));
        }
        unflatten(bucket, &sum)
    }
}

impl RankEnd {
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
        self.inner.rank
    }

    fn world_size(&self) -> usize {
        self.inner.shared.world
    }

    fn all_reduce_sum(&self, bucket: &mut [&mut Tensor]) -> Result<()> {
        self.start_all_reduce_sum(bucket)?.finish(bucket)
    }

    fn start_all_reduce_sum(&self, bucket: &mut [&mut Tensor]) -> Result<Box<dyn PendingReduce>> {
        let data = flatten(bucket)?;
        let answer = self.submit(Op::Sum, data)?;
        Ok(Box::new(LocalPending { answer, rank: self.inner.rank }))
    }

    fn broadcast(&self, bucket: &mut [&mut Tensor], root: usize) -> Result<()> {
        let rank = self.inner.rank;
        let data = if rank == root { flatten(bucket)? } else { Vec::new() };
        let got = self.run(Op::Broadcast(root), data)?;
        let want: usize = bucket.iter().map(|t| t.numel()).sum();
        if got.len() != want {
            let e = CommError::Mismatch {
                seq: self.inner.seq.load(Ordering::Relaxed) - 1,
                detail: format!("rank {root} broadcast {} values, rank {rank} expected {want}", got.len()),
            };
            return Err(self.inner.fail(&mut self.inner.lock(), e));
        }
        unflatten(bucket, &got)
    }

    fn barrier(&self) -> Result<()> {
        self.run(Op::Barrier, Vec::new()).map(drop)
    }

    fn abort(&self, reason: &str) {
        let mut st = self.inner.lock();
        self.inner.fail(&mut st, CommError::PeerFailed { rank: self.inner.rank, reason: reason.to_string() });
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

    /// A started all-reduce completes while its rank's own thread is busy
    /// elsewhere: rank 1 starts, then blocks until rank 0 has its sum, which
    /// needs rank 1's part. A blocking start would deadlock here (and fail
    /// by the receive's timeout).
    #[test]
    fn a_started_all_reduce_runs_while_its_rank_does_other_work() {
        let mut comms = group_with_timeout(2, Duration::from_secs(20)).into_iter();
        let (c0, c1) = (comms.next().expect("rank 0"), comms.next().expect("rank 1"));
        let (to_rank0, started) = channel::<()>();
        let (to_rank1, summed) = channel::<Vec<f32>>();
        let wait = Duration::from_secs(10);
        let (r0, r1) = std::thread::scope(|s| {
            let h0 = s.spawn(move || {
                let mut t = Tensor::from_vec(values(0, 37), [37]).expect("tensor");
                started.recv_timeout(wait).expect("rank 1 started its all-reduce");
                c0.all_reduce_sum(&mut [&mut t]).expect("all-reduce");
                to_rank1.send(t.to_vec_f32().expect("host")).expect("send");
                t.to_vec_f32().expect("host")
            });
            let h1 = s.spawn(move || {
                let mut t = Tensor::from_vec(values(1, 37), [37]).expect("tensor");
                let pending = c1.start_all_reduce_sum(&mut [&mut t]).expect("start");
                to_rank0.send(()).expect("send");
                // "the backward": blocked until rank 0 holds the sum
                let seen = summed.recv_timeout(wait).expect("rank 0 summed");
                pending.finish(&mut [&mut t]).expect("finish");
                assert_eq!(seen, t.to_vec_f32().expect("host"));
                t.to_vec_f32().expect("host")
            });
            (h0.join().expect("rank 0"), h1.join().expect("rank 1"))
        });
        let want: Vec<f32> = values(0, 37).iter().zip(values(1, 37)).map(|(a, b)| a + b).collect();
        assert_eq!((r0, r1), (want.clone(), want));
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
