//! voxplan's trainer on burn: the only crate that knows burn.

pub mod device;
pub mod error;
pub mod experiment;
pub mod memory;
pub mod trainer;

pub use error::PipelineError;
pub use experiment::{Experiment, TrainConfig};
