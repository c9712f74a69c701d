//! What a training step reports — the loss of each micro-batch and the
//! gradients' sum of squares — kept where it was computed until the loop
//! reads it on a log step, so that a GPU training step never waits for the
//! device: the values go into one device buffer (a copy per loss, the norm
//! written there by the clipping kernels) and one download reads every
//! step since the last read. On the CPU the values are plain numbers.
//! On a GPU a step writes its figures into one fixed row and one launch
//! copies that row into the log's row for the step, read from the step
//! scalars (`step_scalars`): the same launches every step, so a captured
//! training graph logs each replay in its own row.

use crate::optim::clip_grad_norm_unchecked;
use crate::Result;
use diffuse_tensor::{ops, DType, Device, Tensor};
use diffuse_unet::ParamStore;

/// One step's figures, read back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    /// The mean of the micro-batch losses (summed in f64 in order).
    pub loss: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
}

struct Pending {
    step: u64,
    lr: f64,
    /// CPU: the losses and the norm, already known.
    host: Option<(Vec<f64>, f64)>,
}

pub struct StepLog {
    accum: usize,
    /// f32 slots per step: the losses, padding to even, two for the f64 sum of squares.
    width: usize,
    capacity: usize,
    buf: Option<Tensor>,
    /// The current step's row (GPU), copied into `buf` when it closes.
    row: Option<Tensor>,
    pending: Vec<Pending>,
    /// The step being recorded (CPU values).
    current: Vec<f64>,
}

impl StepLog {
    /// A log for up to `capacity` steps of `accum` micro-batches each.
    pub fn new(device: &Device, accum: usize, capacity: usize) -> Result<StepLog> {
        let capacity = capacity.max(1);
        let width = accum.next_multiple_of(2) + 2;
        let (buf, row) = match device {
            Device::Cpu => (None, None),
            Device::Gpu(_) => (
                Some(Tensor::zeros([capacity * width], DType::F32, device)?),
                Some(Tensor::zeros([width], DType::F32, device)?),
            ),
        };
        Ok(StepLog { accum, width, capacity, buf, row, pending: Vec::new(), current: Vec::new() })
    }

    pub fn is_full(&self) -> bool {
        self.pending.len() >= self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The log's row of the step being recorded (what the step scalars hold).
    pub fn next_row(&self) -> u64 {
        self.pending.len() as u64
    }

    /// The loss (one element) of micro-batch `micro` of the current step.
    pub fn record_loss(&mut self, micro: usize, loss: &Tensor) -> Result<()> {
        match &mut self.row {
            Some(row) => ops::copy_into(row, micro, loss)?,
            None => self.current.push(loss.scalar_f64()?),
        }
        Ok(())
    }

    /// Global-norm clipping of the store's gradients, the norm kept for the
    /// log; on a GPU the step's row is then copied into the log's row whose
    /// index is the u64 at device address `row_at` ([`StepLog::next_row`]).
    pub fn clip(&mut self, store: &mut ParamStore, max_norm: f64, row_at: Option<u64>) -> Result<()> {
        let slot = self.accum.next_multiple_of(2);
        match (&mut self.buf, &mut self.row) {
            (Some(buf), Some(row)) => {
                let row_at =
                    row_at.ok_or_else(|| crate::Error::Config("a GPU step log needs the step scalars".into()))?;
                let mut grads = store.grads_mut();
                ops::clip_grad_norm_on_device(&mut grads, max_norm, row, slot)?;
                ops::copy_to_row_at(buf, row, row_at)?;
            }
            _ => {
                let norm = clip_grad_norm_unchecked(store, max_norm)?;
                let losses = std::mem::take(&mut self.current);
                self.pending.push(Pending { step: 0, lr: 0.0, host: Some((losses, norm)) });
                return Ok(());
            }
        }
        self.pending.push(Pending { step: 0, lr: 0.0, host: None });
        Ok(())
    }

    /// Records a step whose device work (losses, clipping, the row's copy)
    /// was a replay of a captured graph.
    pub fn replayed(&mut self) {
        self.pending.push(Pending { step: 0, lr: 0.0, host: None });
    }

    /// Closes the step (after [`StepLog::clip`]).
    pub fn finish_step(&mut self, step: u64, lr: f64) {
        if let Some(p) = self.pending.last_mut() {
            p.step = step;
            p.lr = lr;
        }
    }

    /// Every step recorded since the last read, in order; one download on a GPU.
    pub fn read(&mut self) -> Result<Vec<StepRecord>> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let device_values = match &self.buf {
            Some(buf) => buf.to_vec_f32()?,
            None => Vec::new(),
        };
        let records = self
            .pending
            .drain(..)
            .enumerate()
            .map(|(k, p)| {
                let (losses, grad_norm) = match p.host {
                    Some(h) => h,
                    None => {
                        let row = &device_values[k * self.width..(k + 1) * self.width];
                        let losses = row[..self.accum].iter().map(|&l| l as f64).collect();
                        let s = self.accum.next_multiple_of(2);
                        let sumsq: [f32; 2] = [row[s], row[s + 1]];
                        (losses, f64::from_le_bytes(bytemuck_f64(sumsq)).sqrt())
                    }
                };
                let mut sum = 0.0;
                for l in &losses {
                    sum += l;
                }
                StepRecord { step: p.step, loss: sum / self.accum as f64, grad_norm, lr: p.lr }
            })
            .collect();
        Ok(records)
    }
}

/// The 8 bytes of two f32 slots holding one f64.
fn bytemuck_f64(pair: [f32; 2]) -> [u8; 8] {
    let (a, b) = (pair[0].to_le_bytes(), pair[1].to_le_bytes());
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}
