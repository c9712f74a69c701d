//! The class embedding of a class-conditional U-Net: a learned table of
//! `num_classes + 1` rows of the time-embedding width, added to the time
//! embedding after its dense layers (diffusers' `class_embedding` with
//! `num_class_embeds`). The last row is "no class", used by classifier-free
//! guidance for the unconditional branch and by class dropout in training.

use super::Builder;
use crate::params::{ParamId, ParamStore};
use crate::{Result, UNetError};
use diffuse_tensor::{ops, Tensor};

pub struct ClassEmbedding {
    table: ParamId,
    num_classes: usize,
}

impl ClassEmbedding {
    /// Initialised N(0, 1) as torch.nn.Embedding is.
    pub fn new(b: &mut Builder, num_classes: usize, dim: usize) -> Result<Self> {
        let table = b.normal("class_emb.weight".into(), vec![num_classes + 1, dim], 1.0)?;
        Ok(ClassEmbedding { table, num_classes })
    }

    /// The row index of "no class".
    pub fn null_class(&self) -> usize {
        self.num_classes
    }

    pub fn first_param(&self) -> ParamId {
        self.table
    }

    pub fn last_param(&self) -> ParamId {
        self.table
    }

    /// Checks that every label is a class or the null class.
    pub fn check_labels(&self, labels: &[usize]) -> Result<()> {
        match labels.iter().find(|&&l| l > self.num_classes) {
            Some(l) => Err(UNetError::Config(format!(
                "class label {l} is outside the model's {} classes (0..={}, and {} for \"no class\")",
                self.num_classes,
                self.num_classes.saturating_sub(1),
                self.num_classes
            ))),
            None => Ok(()),
        }
    }

    /// [N, dim]: the table's rows for `labels`.
    /// `labels_at`: the labels (f32) in device memory (see `ForwardMode`).
    pub fn forward(&self, ps: &ParamStore, labels: &[usize], labels_at: Option<u64>) -> Result<Tensor> {
        Ok(ops::class_embedding_at(ps.value(self.table), labels, labels_at)?)
    }

    /// Accumulates the table's gradient (when it trains) from d temb [N, dim].
    pub fn backward(
        &self,
        ps: &mut ParamStore,
        labels: &[usize],
        labels_at: Option<u64>,
        dtemb: &Tensor,
    ) -> Result<()> {
        if ps.is_trainable(self.table) {
            let g = ops::class_embedding_backward_at(dtemb, labels, self.num_classes + 1, labels_at)?;
            ps.accumulate_grad(self.table, g)?;
        }
        Ok(())
    }
}
