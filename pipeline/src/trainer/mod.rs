//! Training: the loop, validation, checkpoints, the metrics file and progress display.

pub mod checkpoint;
pub mod metrics_log;
pub mod progress;
