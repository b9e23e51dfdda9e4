//! The volumes crate's one error type. Every variant that concerns a file names it.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum VolumeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not NIfTI-1/2 (wrong sizeof_hdr or magic), or a header field is invalid.
    #[error("{path}: not a valid NIfTI file: {problem}")]
    BadHeader { path: PathBuf, problem: String },
    /// The file holds fewer bytes than its header promises.
    #[error(
        "{path}: truncated: header needs {expected} bytes of voxel data from offset {offset}, file has {available}"
    )]
    Truncated { path: PathBuf, offset: u64, expected: u64, available: u64 },
    #[error("{path}: corrupt gzip stream: {problem}")]
    CorruptGzip { path: PathBuf, problem: String },
    /// A valid NIfTI file that training cannot use (complex, RGB, more than 4 non-trivial dimensions, …).
    #[error("{path}: unsupported for training: {problem}")]
    Unsupported { path: PathBuf, problem: String },
    /// A file read as a label map holds values that are not class indices (fractional, negative, > 65535).
    #[error("{path}: not a label map: {problem}")]
    NotLabels { path: PathBuf, problem: String },
    /// Values cannot be stored in the requested NIfTI datatype without loss.
    #[error("{path}: cannot write as {datatype}: {problem}")]
    Unrepresentable { path: PathBuf, datatype: String, problem: String },
    /// Files that must share a voxel grid (the channels and label of one case) do not.
    #[error("{path}: does not match {reference}: {problem}")]
    Mismatch { path: PathBuf, reference: PathBuf, problem: String },
    /// A dataset folder or dataset.json is malformed or incomplete.
    #[error("{path}: bad dataset: {problem}")]
    Dataset { path: PathBuf, problem: String },
    /// A configuration value is out of range; `field` is its path in the experiment TOML.
    #[error("invalid {field}: {problem}")]
    Config { field: String, problem: String },
    /// The loader's worker threads stopped (a worker failed; its error is reported first).
    #[error("patch loader stopped: {0}")]
    LoaderStopped(String),
}

impl VolumeError {
    /// Wraps an I/O error with the file it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

pub type Result<T, E = VolumeError> = std::result::Result<T, E>;
