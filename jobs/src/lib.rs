//! Unattended training: a box-local job queue packed by planned memory, and Slurm batch scripts. It knows
//! nothing of burn: what a job costs comes from the planner through [`JobPlanner`], which the binary
//! implements with the pipeline.
//!
//! - [`job`]: what a job is (kind, command, state, budgets per card kind).
//! - [`store`]: the queue's SQLite database (WAL), safe for concurrent submitters and one runner.
//! - [`inventory`]: the box's GPUs from NVML, or a simulated set from the planner's GPU table.
//! - [`placement`]: which queued job starts on which card with which budget, and why the others wait.
//! - [`process`]: children that die with the runner, and telling a live job process from a reused pid.
//! - [`runner`]: `voxplan queue run`, the loop that starts, watches, re-queues and recovers jobs.
//! - [`slurm`]: `voxplan slurm`, sbatch scripts sized from the plan.

pub mod error;
pub mod inventory;
pub mod job;
pub mod placement;
pub mod process;
pub mod runner;
pub mod slurm;
pub mod store;

pub use error::JobsError;
pub use inventory::{Card, Inventory};
pub use job::{BudgetRange, Job, JobId, JobKind, JobSpec, JobState, NewJob};
pub use placement::{CardState, Decision, place};
pub use runner::{JobPlanner, Runner, RunnerOptions};
pub use store::Queue;
