//! Data-parallel training in one process: one worker thread per device,
//! each a [`Trainer`] rank joined by a [`Communicator`]. The first local
//! rank runs on the calling thread (with the caller's observer); the
//! others on scoped threads with a silent one. When a rank fails, it aborts
//! the group, so every other rank's next (or pending) collective returns at
//! once, and the failing rank's own error is the one returned.

use crate::config::TrainConfig;
use crate::train::{Observer, RunSummary, Silent, Start, Trainer};
use crate::{Error, Result};
use diffuse_tensor::comm::{CommError, Communicator};
use diffuse_tensor::Device;
use std::path::PathBuf;
use std::sync::Arc;

/// How a rank gets its communicator (NCCL's init blocks until every rank
/// calls it, so it runs on the rank's own thread).
pub type CommFactory = Box<dyn FnOnce() -> std::result::Result<Arc<dyn Communicator>, CommError> + Send>;

/// One local rank: its global rank, device and communicator.
pub struct RankSetup {
    pub rank: usize,
    pub device: Device,
    pub comm: CommFactory,
}

/// An in-process group over `devices` (ranks 0..n, [`diffuse_tensor::comm::local`]).
pub fn local_ranks(devices: Vec<Device>) -> Vec<RankSetup> {
    let comms = diffuse_tensor::comm::local::group(devices.len());
    devices
        .into_iter()
        .zip(comms)
        .enumerate()
        .map(|(rank, (device, comm))| {
            let comm: Arc<dyn Communicator> = Arc::new(comm);
            RankSetup { rank, device, comm: Box::new(move || Ok(comm)) }
        })
        .collect()
}

/// Aborts the group if the rank's thread leaves without disarming it (an
/// error or a panic), so no other rank waits for it.
struct AbortOnExit {
    comm: Option<Arc<dyn Communicator>>,
    reason: String,
}

impl Drop for AbortOnExit {
    fn drop(&mut self) {
        if let Some(c) = self.comm.take() {
            c.abort(&self.reason);
        }
    }
}

fn run_rank(
    setup: RankSetup,
    cfg: TrainConfig,
    start: Start,
    out: PathBuf,
    obs: &mut dyn Observer,
    inspect: &mut dyn FnMut(&Trainer),
) -> Result<RunSummary> {
    let comm = (setup.comm)()?;
    let mut guard = AbortOnExit { comm: Some(comm.clone()), reason: format!("rank {} stopped", setup.rank) };
    let result = Trainer::new_rank(cfg, start, out, setup.device, Some(comm)).and_then(|mut t| {
        inspect(&t);
        t.run(obs)
    });
    match &result {
        Ok(_) => guard.comm = None,
        Err(e) => guard.reason = e.to_string(),
    }
    result
}

/// Trains `ranks` (this process's share of the group) to the end. Returns
/// the first local rank's summary, or the error of the rank that failed
/// first (by rank order among those that did not just stop because another
/// failed). `inspect` sees the first local rank's trainer once it is built.
pub fn train_ranks(
    cfg: TrainConfig,
    start: Start,
    out: PathBuf,
    ranks: Vec<RankSetup>,
    obs: &mut dyn Observer,
    inspect: &mut dyn FnMut(&Trainer),
) -> Result<RunSummary> {
    let mut ranks = ranks.into_iter();
    let Some(first) = ranks.next() else {
        return Err(Error::Config("no device to train on".into()));
    };
    let rest: Vec<RankSetup> = ranks.collect();
    let world_hint = rest.len() + 1;
    let results: Vec<(usize, Result<RunSummary>)> = std::thread::scope(|s| {
        let handles: Vec<_> = rest
            .into_iter()
            .map(|setup| {
                let (cfg, start, out) = (cfg.clone(), start.clone(), out.clone());
                let rank = setup.rank;
                let h = std::thread::Builder::new()
                    .name(format!("rank-{rank}"))
                    .spawn_scoped(s, move || run_rank(setup, cfg, start, out, &mut Silent, &mut |_| {}));
                (rank, h)
            })
            .collect();
        let first_rank = first.rank;
        let mut results = vec![(first_rank, run_rank(first, cfg.clone(), start.clone(), out.clone(), obs, inspect))];
        for (rank, h) in handles {
            let r = match h {
                Ok(h) => h.join().unwrap_or_else(|_| Err(Error::Config(format!("rank {rank}'s thread panicked")))),
                Err(e) => Err(Error::Config(format!("cannot start the thread of rank {rank}: {e}"))),
            };
            results.push((rank, r));
        }
        results
    });
    pick_result(results, world_hint)
}

/// The leader's summary when every rank succeeded, else the root failure.
fn pick_result(mut results: Vec<(usize, Result<RunSummary>)>, world_hint: usize) -> Result<RunSummary> {
    results.sort_by_key(|(r, _)| *r);
    let is_echo = |e: &Error| matches!(e, Error::Comm(CommError::PeerFailed { .. }));
    let root = results.iter().position(|(_, r)| r.as_ref().is_err_and(|e| !is_echo(e)));
    let any = results.iter().position(|(_, r)| r.is_err());
    let Some(i) = root.or(any) else {
        // every rank succeeded: the first local rank's summary
        return results.into_iter().next().map(|(_, r)| r).unwrap_or_else(|| Err(Error::Config("no rank".into())));
    };
    let (rank, r) = results.swap_remove(i);
    match r {
        Err(e) if world_hint > 1 || rank > 0 => Err(Error::Rank { rank, error: Box::new(e) }),
        other => other,
    }
}
