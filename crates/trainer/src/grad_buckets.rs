//! The data-parallel all-reduce of the gradients, in buckets that overlap
//! the backward (as PyTorch's DDP): the trainable parameters are cut into
//! buckets in the reverse of their registration order (the order the
//! backward finishes them), and each bucket is started
//! ([`Communicator::start_all_reduce_sum`]) as soon as the backward reports
//! its last gradient final ([`GradReady`]), so that the sums run while the
//! backward goes on; the optimiser waits for all of them ([`GradBuckets::finish`]).
//!
//! Only the step's last backward (the last micro-batch of gradient
//! accumulation) reports: earlier ones still add to every gradient. The
//! sums are those of the same buckets started after the backward
//! (`overlap` off): the same collectives in the same order, so the same bits.

use diffuse_tensor::comm::{bucket_ranges, CommError, Communicator, PendingReduce};
use diffuse_unet::{GradReady, ParamId, ParamStore};
use std::sync::Arc;

/// Gradients are all-reduced in buckets of at most this many f32 (16 MiB)
/// unless `DIFFUSE_BUCKET_MB` says otherwise.
pub const DEFAULT_BUCKET_ELEMS: usize = 1 << 22;

/// The first bucket (the last layers' gradients, ready first) holds at most
/// this many f32 (1 MiB), as DDP's first bucket does: the first all-reduce
/// starts early in the backward even when the model fits one bucket (the
/// mnist preset's 6.5 MB of gradients).
pub const FIRST_BUCKET_ELEMS: usize = 1 << 18;

/// The bucket size in f32 elements: `DIFFUSE_BUCKET_MB` (MiB, fractions
/// allowed, as DDP's `bucket_cap_mb`) or [`DEFAULT_BUCKET_ELEMS`].
pub fn bucket_elems_from_env() -> usize {
    let mb = std::env::var("DIFFUSE_BUCKET_MB").ok().and_then(|s| s.trim().parse::<f64>().ok());
    match mb {
        Some(mb) if mb.is_finite() && mb > 0.0 => ((mb * (1u64 << 20) as f64 / 4.0) as usize).max(1),
        _ => DEFAULT_BUCKET_ELEMS,
    }
}

/// When each bucket of the last step was started (a record for tests and
/// `BENCHMARKS.md`, not a timing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverlapReport {
    /// Layer backwards reported in the step's last backward.
    pub layers: usize,
    /// For each bucket, in launch order: how many layer backwards had
    /// completed when it was started (`layers`: after the backward).
    pub launched_after: Vec<usize>,
    /// The f32 elements of each bucket.
    pub bucket_elems: Vec<usize>,
}

/// A bucket started and not yet finished.
struct Started {
    /// The parameters whose gradients it sums (those present when started).
    ids: Vec<ParamId>,
    pending: Box<dyn PendingReduce>,
}

/// One rank's gradient buckets.
pub struct GradBuckets {
    comm: Arc<dyn Communicator>,
    /// Each bucket's parameters, from the last registered to the first.
    buckets: Vec<Vec<ParamId>>,
    /// Start buckets during the backward (else all after it).
    overlap: bool,
    started: Vec<Started>,
    /// Layer backwards reported so far this step, and when each bucket started.
    layers: usize,
    launched_after: Vec<usize>,
    /// The first failure of a start during the backward (the backward
    /// itself only sees that it was stopped).
    failed: Option<CommError>,
    report: OverlapReport,
}

impl GradBuckets {
    /// Buckets of at most `max_elems` elements (the first at most
    /// [`FIRST_BUCKET_ELEMS`]) over the trainable parameters of `ps`, in
    /// reverse registration order.
    pub fn new(comm: Arc<dyn Communicator>, ps: &ParamStore, max_elems: usize, overlap: bool) -> GradBuckets {
        let mut ids: Vec<ParamId> = ps.ids().filter(|&id| ps.is_trainable(id)).collect();
        ids.reverse();
        let sizes: Vec<usize> = ids.iter().map(|&id| ps.value(id).numel()).collect();
        // a small first bucket, then buckets of max_elems over the rest
        let first = bucket_ranges(&sizes, max_elems.min(FIRST_BUCKET_ELEMS)).into_iter().next().map_or(0, |r| r.end);
        let rest = bucket_ranges(&sizes[first..], max_elems).into_iter().map(|r| r.start + first..r.end + first);
        let buckets: Vec<Vec<ParamId>> =
            std::iter::once(0..first).filter(|r| !r.is_empty()).chain(rest).map(|r| ids[r].to_vec()).collect();
        let bucket_elems = buckets.iter().map(|b| b.iter().map(|&id| ps.value(id).numel()).sum()).collect();
        GradBuckets {
            comm,
            buckets,
            overlap,
            started: Vec::new(),
            layers: 0,
            launched_after: Vec::new(),
            failed: None,
            report: OverlapReport { bucket_elems, ..OverlapReport::default() },
        }
    }

    /// When the last step's buckets were started.
    pub fn report(&self) -> &OverlapReport {
        &self.report
    }

    /// The failure that stopped the backward, if a start failed there.
    pub fn take_failure(&mut self) -> Option<CommError> {
        self.failed.take()
    }

    /// Starts the next bucket (in order) if every one of its parameters
    /// registered at or after `first` is final.
    fn start_ready(&mut self, ps: &mut ParamStore, first: usize) -> Result<(), CommError> {
        while let Some(bucket) = self.buckets.get(self.started.len()) {
            // a bucket's lowest parameter is its last one (reverse order)
            if bucket.last().is_some_and(|id| id.index() < first) {
                break;
            }
            let present: Vec<ParamId> = bucket.iter().copied().filter(|&id| ps.grad(id).is_some()).collect();
            let mut grads = ps.grads_of_mut(&present);
            let pending = self.comm.start_all_reduce_sum(&mut grads)?;
            self.started.push(Started { ids: present, pending });
            self.launched_after.push(self.layers);
        }
        Ok(())
    }

    /// Starts what the backward did not (every bucket without overlap),
    /// waits for every bucket and leaves the sums in the gradients.
    pub fn finish(&mut self, ps: &mut ParamStore) -> Result<(), CommError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let started = self.start_ready(ps, 0);
        let layers = std::mem::take(&mut self.layers);
        let launched_after = std::mem::take(&mut self.launched_after);
        let all = std::mem::take(&mut self.started);
        started?;
        for s in all {
            s.pending.finish(&mut ps.grads_of_mut(&s.ids))?;
        }
        self.report.layers = layers;
        self.report.launched_after = launched_after;
        Ok(())
    }
}

impl GradReady for GradBuckets {
    fn grads_final_from(&mut self, ps: &mut ParamStore, first: ParamId) -> Result<(), String> {
        self.layers += 1;
        if !self.overlap {
            return Ok(());
        }
        self.start_ready(ps, first.index()).map_err(|e| {
            let msg = e.to_string();
            self.failed = Some(e);
            msg
        })
    }
}
