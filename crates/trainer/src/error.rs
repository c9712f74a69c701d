//! Errors of the trainer crate. Every variant renders as one clear line that
//! names the file involved and what was wrong with it.

use std::path::PathBuf;

/// Result type of the trainer crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading data, writing images or
/// computing metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The dataset path (file or directory) does not exist.
    #[error("{}: no such file or directory", path.display())]
    NotFound { path: PathBuf },

    /// An operating-system error while reading or writing a file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The gzip stream could not be decompressed.
    #[error("{}: corrupt gzip data: {reason}", path.display())]
    CorruptGzip { path: PathBuf, reason: String },

    /// An IDX file whose magic number is not the expected one.
    #[error("{}: not an IDX {what} file: magic number 0x{found:08x}, expected 0x{expected:08x}", path.display())]
    BadMagic { path: PathBuf, what: &'static str, found: u32, expected: u32 },

    /// A file shorter than its header says (or than one whole header).
    #[error("{}: truncated: {what} needs {expected} bytes but the file has {found}", path.display())]
    Truncated { path: PathBuf, what: String, expected: u64, found: u64 },

    /// Dimensions in a header that make no sense (zero, overflow, extra bytes,
    /// a record that is not whole).
    #[error("{}: bad dimensions: {reason}", path.display())]
    BadDims { path: PathBuf, reason: String },

    /// The data does not fit the model configuration (channels or size).
    #[error("{}: the data is {has} but the model expects {expected} ({hint})", path.display())]
    ConfigMismatch { path: PathBuf, has: String, expected: String, hint: String },

    /// A dataset with no images in it.
    #[error("{}: dataset is empty: {reason}", path.display())]
    Empty { path: PathBuf, reason: String },

    /// The path exists but is no dataset format we know.
    #[error("{}: unrecognised dataset: {reason}", path.display())]
    UnknownFormat { path: PathBuf, reason: String },

    /// An image file that could not be decoded or encoded.
    #[error("{}: image error: {reason}", path.display())]
    Image { path: PathBuf, reason: String },

    /// Labels that do not match the images.
    #[error("{}: labels do not match the images: {reason}", path.display())]
    Labels { path: PathBuf, reason: String },

    /// Slices whose lengths do not match the shape given with them, or two
    /// arrays that should have the same shape but do not.
    #[error("shape mismatch: {0}")]
    Shape(String),

    /// An argument out of range (batch size 0, nrow 0, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A tensor op failed (shape, device, kernel launch...).
    #[error(transparent)]
    Tensor(#[from] diffuse_tensor::TensorError),

    /// The model could not be built, loaded or saved.
    #[error(transparent)]
    Model(#[from] diffuse_unet::UNetError),

    /// A checkpoint that is truncated, foreign or does not fit.
    #[error("{}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },

    /// Another process trains into this run directory.
    #[error("{}: run directory is in use by another diffuse train{} (one writer per run directory; wait for it to finish or use another --out)", dir.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { dir: PathBuf, pid: Option<u32> },

    /// The loss stopped being finite or grew far past its running mean.
    #[error("training diverged at step {step}: {reason}; {kept} (try a lower --lr, or --grad-clip 1)")]
    Diverged { step: u64, reason: String, kept: String },
    /// An allocation sized by the input that would pass the memory budget.
    #[error(
        "{what} needs {need}, more than the memory limit of {limit} ({origin}); \
         set DIFFUSE_MEMORY_LIMIT or pass --memory-limit (e.g. 16G) to change the limit"
    )]
    Memory { what: String, need: String, limit: String, origin: String },

    /// A training or sampling configuration that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A collective of a data-parallel run failed (another rank failed, a
    /// timeout, NCCL, the rendezvous).
    #[error("data parallel: {0}")]
    Comm(#[from] diffuse_tensor::comm::CommError),

    /// A failure injected by a test (`DIFFUSE_TEST_RANK_FAIL`).
    #[error("injected failure: {0}")]
    TestFailure(String),

    /// One rank of a data-parallel run failed; every rank stopped.
    #[error("rank {rank}: {error}")]
    Rank { rank: usize, error: Box<Error> },
}

/// A failed atomic write is an I/O error on its destination.
impl From<diffuse_unet::atomic_file::WriteError> for Error {
    fn from(e: diffuse_unet::atomic_file::WriteError) -> Self {
        Error::Io { path: e.path, source: e.source }
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
