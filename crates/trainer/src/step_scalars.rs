//! The per-step scalars of a GPU training step: everything that changes from
//! one step to the next and that kernels would otherwise get as arguments or
//! as a fresh upload — the Philox step of the noise and dropout masks of
//! each micro-batch, the EMA's two factors, the step log's row and AdamW's
//! constants (bias corrections and learning rate, per tensor) — in ONE small
//! fixed device buffer, written by ONE asynchronous copy from pinned memory
//! queued before the step's work. The kernels read them there, so a captured
//! training graph replays unchanged and still sees each step's values; the
//! eager step reads the same words, so both give the same bits.
//!
//! Layout, in u64 words: `[0, accum)` the Philox step of micro-batch k (a
//! u32 in the low half); `accum` the EMA's d and 1 - d (two f32);
//! `accum + 1` the step log's row; then 6 words per AdamW tensor
//! (`ops::adamw_consts_words`).

use crate::Result;
use diffuse_tensor::gpu::{GpuDevice, GpuStorage, PinnedBuffer};
use diffuse_tensor::{DType, Device, Storage, Tensor};

/// One step's values, as the host computes them.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalarValues {
    /// The Philox step of each micro-batch.
    pub philox: Vec<u32>,
    /// The EMA's factors (`ops::ema_factors`).
    pub ema: [f32; 2],
    /// The step log's row of this step.
    pub log_row: u64,
    /// AdamW's constants (`ops::adamw_consts_words`).
    pub adamw: Vec<u64>,
}

pub struct StepScalars {
    accum: usize,
    adamw_words: usize,
    /// The fixed device buffer (u64 words as pairs of f32 slots).
    device: Tensor,
    /// Two pinned buffers used in turn (one may still be read by its copy).
    pinned: [PinnedBuffer; 2],
    turn: usize,
    /// The values written last (what the kernels of this step read).
    written: Option<ScalarValues>,
}

impl StepScalars {
    /// Scalars for steps of `accum` micro-batches and `adamw_tensors` AdamW
    /// tensors; None on the CPU.
    pub fn new(device: &Device, accum: usize, adamw_tensors: usize) -> Result<Option<StepScalars>> {
        let Device::Gpu(g) = device else { return Ok(None) };
        let words = accum + 2 + 6 * adamw_tensors;
        let buf = Tensor::zeros([2 * words], DType::F32, device)?;
        let pinned = [PinnedBuffer::new(g, 2 * words)?, PinnedBuffer::new(g, 2 * words)?];
        Ok(Some(StepScalars { accum, adamw_words: 6 * adamw_tensors, device: buf, pinned, turn: 0, written: None }))
    }

    fn storage(&self) -> Result<&GpuStorage> {
        match self.device.storage() {
            Storage::Gpu(s) => Ok(s),
            Storage::Cpu(_) => Err(crate::Error::Config("the step scalars are not on the GPU".into())),
        }
    }

    /// The device the scalars live on.
    pub fn gpu(&self) -> Result<GpuDevice> {
        Ok(self.storage()?.device().clone())
    }

    fn word_at(&self, word: usize) -> u64 {
        self.storage().map_or(0, |s| s.ptr() + 8 * word as u64)
    }

    /// Where micro-batch `micro`'s Philox step is.
    pub fn philox_at(&self, micro: usize) -> Option<u64> {
        (micro < self.accum).then(|| self.word_at(micro))
    }

    pub fn ema_at(&self) -> u64 {
        self.word_at(self.accum)
    }

    pub fn log_row_at(&self) -> u64 {
        self.word_at(self.accum + 1)
    }

    pub fn adamw_at(&self) -> u64 {
        self.word_at(self.accum + 2)
    }

    /// The values the kernels of the current step read.
    pub fn written(&self) -> Option<&ScalarValues> {
        self.written.as_ref()
    }

    /// Packs `v` into a pinned buffer and queues its one copy to the device
    /// (behind the work queued so far, ahead of the step's kernels).
    pub fn write(&mut self, v: ScalarValues) -> Result<()> {
        if v.philox.len() != self.accum || v.adamw.len() != self.adamw_words {
            return Err(crate::Error::Config(format!(
                "step scalars for {} micro-batches and {} AdamW words, given {} and {}",
                self.accum,
                self.adamw_words,
                v.philox.len(),
                v.adamw.len()
            )));
        }
        let mut words: Vec<u64> = v.philox.iter().map(|&s| u64::from(s)).collect();
        words.push(u64::from(v.ema[0].to_bits()) | (u64::from(v.ema[1].to_bits()) << 32));
        words.push(v.log_row);
        words.extend_from_slice(&v.adamw);
        let buf = &mut self.pinned[self.turn];
        self.turn ^= 1;
        let out = buf.write()?;
        for (k, w) in words.iter().enumerate() {
            // little endian: the low half first, as a u32 or f32 reads it
            out[2 * k] = f32::from_bits(*w as u32);
            out[2 * k + 1] = f32::from_bits((*w >> 32) as u32);
        }
        let n = 2 * words.len();
        let dst = match self.device.storage() {
            Storage::Gpu(s) => s,
            Storage::Cpu(_) => return Err(crate::Error::Config("the step scalars are not on the GPU".into())),
        };
        buf.copy_to(n, dst, 0)?;
        self.written = Some(v);
        Ok(())
    }
}
