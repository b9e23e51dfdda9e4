//! voxplan's trainer on burn: the only crate that knows burn.

pub mod error;
pub mod experiment;

pub use error::PipelineError;
pub use experiment::{Experiment, TrainConfig};
