//! Training: the entry point, the loop, validation, checkpoints, the metrics file and progress display.

pub mod checkpoint;
pub mod metrics_log;
mod oom_watch;
pub mod progress;
pub mod ranks;
pub mod run_lock;
pub mod session;
pub mod step;
pub mod stop;
pub mod train_loop;
pub mod validation;

pub use session::{TrainOptions, TrainSummary, train};
pub use stop::StopRequest;
