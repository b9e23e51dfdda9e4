//! voxplan's trainer on burn: the only crate that knows burn.

pub mod data_parallel;
pub mod device;
pub mod dice;
pub mod error;
pub mod experiment;
pub mod job_plan;
pub mod label_report;
pub mod loss;
pub mod memory;
pub mod model;
pub mod optim;
pub mod precision;
pub mod predict;
pub mod sliding_window;
pub mod step_probe;
pub mod step_probe_cuda;
pub mod trainer;

pub use device::{ComputeDevice, DeviceRequest, DevicesRequest};
pub use error::PipelineError;
pub use experiment::{Experiment, TrainConfig};
pub use loss::DiceCeLoss;
pub use model::{UNet, UNetConfig, parameter_count};
pub use optim::{LrSchedule, TrainOptimizer, build_optimizer};
pub use precision::{LossScaler, unscale_and_check};
pub use predict::{PredictOptions, PredictedFile, predict};
pub use trainer::{TrainOptions, TrainSummary, train};
