//! The planner's one error type.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PlanError {
    /// A field of the network spec, patch or request is invalid; `field` is its path in the experiment TOML.
    #[error("invalid {field}: {problem}")]
    InvalidSpec { field: String, problem: String },
    /// A size given on the command line (`--budget`) could not be read.
    #[error("invalid {field} {value:?}: {problem}")]
    InvalidSize { field: String, value: String, problem: String },
    /// `--gpu NAME` names no GPU in `configs/devices/gpus.toml`.
    #[error("unknown GPU {name:?} for --gpu; known: {known}")]
    UnknownGpu { name: String, known: String },
    /// The device could not be queried (no NVML, no such CUDA index, ...).
    #[error("cannot query device {device}: {problem}")]
    Device { device: String, problem: String },
    /// An embedded device table failed to parse (a build-time bug, reported rather than panicking).
    #[error("device table {file}: {problem}")]
    DeviceTable { file: String, problem: String },
    /// Nothing fits, not even batch 1 at the smallest legal patch with every memory saving allowed.
    #[error(
        "nothing fits in the budget of {budget}: the smallest plan (batch 1, patch {patch:?}, {how}) needs {needed}; \
         a budget of at least {needed_budget} would work"
    )]
    DoesNotFit { budget: String, patch: [usize; 3], how: String, needed: String, needed_budget: String },
    /// A zoo or device-profile file could not be read or parsed.
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
    /// Calibration samples cannot determine the constants.
    #[error("calibration: {0}")]
    Calibration(String),
}
