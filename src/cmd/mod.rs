//! One file per subcommand: its clap arguments and a `run` that calls the libraries.

pub mod bench;
pub mod bench_loader;
pub mod bench_planner;
pub mod calibrate;
pub mod dataset;
pub mod inspect;
pub mod phantoms;
pub mod plan;
pub mod predict;
pub mod probe_step;
pub mod queue;
pub mod slurm;
pub mod train;
