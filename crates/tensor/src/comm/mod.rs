//! Collective communication between the ranks of a data-parallel run: the
//! all-reduce (sum) of f32 tensors, broadcast from one rank, barrier, and a
//! failure path (`abort`) that stops every rank with the failing rank's
//! reason instead of leaving them waiting.
//!
//! Two implementations of [`Communicator`]:
//! - [`local::group`]: ranks are threads of one process; buffers are
//!   staged through host memory and summed in rank order (rank 0 + rank 1 +
//!   ...), so results are bit-identical run to run. Every wait has a
//!   timeout. Used for the emulator and the CPU (tests, CI).
//! - [`nccl::NcclComm`]: NVIDIA's NCCL, loaded at run time (cudarc's `nccl`
//!   bindings with dynamic loading); collectives are queued on the device's
//!   stream. Without libnccl it is an error naming the library.
//!
//! [`rendezvous`] hands NCCL's unique id from rank 0 to the other nodes
//! over TCP.

pub mod local;
pub mod nccl;
pub mod rendezvous;

use crate::{DType, Storage, Tensor, TensorError};

/// What a collective or a rendezvous can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommError {
    /// Another rank failed (or this one was aborted): every rank stops.
    #[error("rank {rank} failed: {reason}")]
    PeerFailed { rank: usize, reason: String },
    #[error("rank {rank} waited {secs} s in {op} for rank(s) {missing} (DIFFUSE_COMM_TIMEOUT_S sets the limit)")]
    Timeout { rank: usize, op: String, secs: u64, missing: String },
    /// The ranks called different collectives, or with different sizes.
    #[error("the ranks disagree in collective #{seq}: {detail}")]
    Mismatch { seq: u64, detail: String },
    #[error("NCCL: {0}")]
    Nccl(String),
    #[error("rendezvous: {0}")]
    Rendezvous(String),
    #[error("{0}")]
    Device(String),
}

impl From<TensorError> for CommError {
    fn from(e: TensorError) -> Self {
        CommError::Device(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, CommError>;

/// One rank's end of a group of `world_size` ranks. Every rank must call
/// the same collectives in the same order with tensors of the same sizes,
/// from one thread; `abort` may come from any thread.
pub trait Communicator: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Replaces each tensor by its elementwise sum over the ranks (f32;
    /// every rank ends with the same values). The tensors are one bucket:
    /// one collective for all of them.
    fn all_reduce_sum(&self, bucket: &mut [&mut Tensor]) -> Result<()>;
    /// Starts [`Communicator::all_reduce_sum`] of a bucket and returns at
    /// once, so that the caller goes on (the backward) while the sum runs:
    /// on a thread of its own in-process, on the device's communication
    /// stream with NCCL. The bucket's tensors must not change until
    /// [`PendingReduce::finish`] is given the same tensors, which writes the
    /// sums there (on a GPU: the compute stream waits for them there). The
    /// result has the bits `all_reduce_sum` would give. The default runs the
    /// sum now.
    fn start_all_reduce_sum(&self, bucket: &mut [&mut Tensor]) -> Result<Box<dyn PendingReduce>> {
        self.all_reduce_sum(bucket)?;
        Ok(Box::new(Finished))
    }
    /// Replaces each tensor by `root`'s.
    fn broadcast(&self, bucket: &mut [&mut Tensor], root: usize) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// This rank has failed: every rank's pending and later collectives
    /// return [`CommError::PeerFailed`] with `reason` (no rank hangs).
    fn abort(&self, reason: &str);
}

/// An all-reduce in flight ([`Communicator::start_all_reduce_sum`]).
pub trait PendingReduce: Send {
    /// Waits for the sums and writes them into `bucket` (the tensors the
    /// all-reduce was started with, in the same order).
    fn finish(self: Box<Self>, bucket: &mut [&mut Tensor]) -> Result<()>;
}

/// An all-reduce that already wrote its result.
struct Finished;

impl PendingReduce for Finished {
    fn finish(self: Box<Self>, _bucket: &mut [&mut Tensor]) -> Result<()> {
        Ok(())
    }
}

/// The timeout of every wait of a collective: `DIFFUSE_COMM_TIMEOUT_S`
/// (seconds), else 30 minutes (rank 0 alone writes checkpoints and sample
/// grids while the others wait at the next collective).
pub fn default_timeout() -> std::time::Duration {
    let secs = std::env::var("DIFFUSE_COMM_TIMEOUT_S").ok().and_then(|s| s.trim().parse::<u64>().ok());
    std::time::Duration::from_secs(secs.filter(|&s| s > 0).unwrap_or(1800))
}

/// The f32 values of a bucket, one after another (a host copy).
pub(crate) fn flatten(bucket: &[&mut Tensor]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(bucket.iter().map(|t| t.numel()).sum());
    for t in bucket {
        out.extend(t.to_vec_f32()?);
    }
    Ok(out)
}

/// Writes `data` back into the bucket's tensors in place (the inverse of
/// [`flatten`]; a GPU tensor keeps its buffer unless another tensor shares it).
pub(crate) fn unflatten(bucket: &mut [&mut Tensor], data: &[f32]) -> Result<()> {
    let mut at = 0;
    for t in bucket.iter_mut() {
        let n = t.numel();
        let part = data.get(at..at + n).ok_or_else(|| CommError::Device("a bucket's result is too short".into()))?;
        write_f32(t, part)?;
        at += n;
    }
    Ok(())
}

fn write_f32(t: &mut Tensor, data: &[f32]) -> Result<()> {
    if let Storage::Gpu(g) = t.storage_mut() {
        if g.dtype() != DType::F32 {
            return Err(crate::TensorError::DTypeMismatch { op: "all_reduce", a: g.dtype(), b: DType::F32 }.into());
        }
        g.make_unique()?;
        g.device().driver().htod(bytemuck::cast_slice(data), g.ptr())?;
        return Ok(());
    }
    match t.dtype() {
        DType::F32 => t.cpu_slice_mut::<f32>()?.copy_from_slice(data),
        DType::F64 => {
            for (d, &s) in t.cpu_slice_mut::<f64>()?.iter_mut().zip(data) {
                *d = s as f64;
            }
        }
        DType::BF16 => return Err(crate::TensorError::bf16_on_cpu().into()),
    }
    Ok(())
}

/// Splits tensors (in order) into buckets of at most `max_elems` elements
/// each (a tensor larger than that is a bucket of its own); returns the
/// index ranges.
pub fn bucket_ranges(sizes: &[usize], max_elems: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut fill) = (0, 0);
    for (i, &n) in sizes.iter().enumerate() {
        if i > start && fill + n > max_elems {
            out.push(start..i);
            (start, fill) = (i, 0);
        }
        fill += n;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::bucket_ranges;

    #[test]
    fn buckets_keep_order_and_cover_every_tensor_once() {
        let sizes = [5, 3, 10, 1, 1, 7, 2];
        let b = bucket_ranges(&sizes, 8);
        assert_eq!(b, vec![0..2, 2..3, 3..5, 5..6, 6..7]);
        assert_eq!(bucket_ranges(&[], 8), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(bucket_ranges(&[100], 8), vec![0..1]);
    }
}
