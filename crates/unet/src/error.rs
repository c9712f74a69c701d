//! Errors of the U-Net crate.

use diffuse_tensor::TensorError;

#[derive(Debug, thiserror::Error)]
pub enum UNetError {
    #[error(transparent)]
    Tensor(#[from] TensorError),

    #[error("invalid U-Net config: {0}")]
    Config(String),

    #[error("parameter {name}: expected shape {expected:?}, file has {got:?}")]
    ParamShape { name: String, expected: Vec<usize>, got: Vec<usize> },

    #[error("parameter {0} is missing from the file")]
    MissingParam(String),

    /// A diffusers model outside the layout we speak, or a mismatch in its weights.
    #[error("{0}")]
    Diffusers(String),

    #[error("safetensors: {0}")]
    Safetensors(String),

    /// The gradient hook of `UNet::backward_with` stopped the backward.
    #[error("the backward was stopped: {0}")]
    GradHook(String),

    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, UNetError>;

impl From<crate::atomic_file::WriteError> for UNetError {
    fn from(e: crate::atomic_file::WriteError) -> Self {
        UNetError::Io { path: e.path.display().to_string(), source: e.source }
    }
}
