//! How the end-to-end tests run the `voxplan` binary that cargo built for them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Compute threads of every command that trains or measures memory: the project's machines have 2, and a
/// pinned count makes the step the same on any host (each thread holds gemm's L2 slab and a conv gather
/// buffer, so a 64-core host would otherwise train and measure a different step).
pub const TEST_THREADS: &str = "2";

/// Runs `voxplan args…`: (exit success, stdout, stderr).
pub fn voxplan_text(args: &[&str]) -> (bool, String, String) {
    text(Command::new(env!("CARGO_BIN_EXE_voxplan")).args(args).output().expect("run voxplan"))
}

/// [`voxplan_text`] on [`TEST_THREADS`] compute threads, for commands that measure steps (`calibrate`,
/// `bench planner`).
pub fn voxplan_measuring(args: &[&str]) -> (bool, String, String) {
    let command =
        Command::new(env!("CARGO_BIN_EXE_voxplan")).args(args).env("RAYON_NUM_THREADS", TEST_THREADS).output();
    text(command.expect("run voxplan"))
}

/// Runs a training or prediction command on [`TEST_THREADS`] compute threads, logging only warnings.
pub fn voxplan_quiet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voxplan"))
        .args(args)
        .env("RAYON_NUM_THREADS", TEST_THREADS)
        .env("VOXPLAN_LOG", "warn")
        .output()
        .expect("the voxplan binary runs")
}

fn text(out: Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The tiny experiment of the batch-job tests (signals, queue, Slurm): a two-stage U-Net on 16³ patches of
/// four 24³ phantoms, `epochs` × 12 SGD steps of batch 2 (about a second an epoch on 2 cores), long enough
/// to be signalled, queued or requeued mid-run. `checkpoint_every_minutes = 0` checkpoints after every step.
pub fn tiny_experiment_text(name: &str, epochs: usize, workers: usize, checkpoint_every_minutes: u32) -> String {
    format!(
        r#"
name = "{name}"
seed = 4
[network]
in_channels = 1
num_classes = 3
norm = {{ kind = "group", groups = 4 }}
stages = [{{ features = 4, stride = [1, 1, 1] }}, {{ features = 8, stride = [2, 2, 2] }}]
[plan]
patch_size = [16, 16, 16]
target_effective_batch = 2
optimizer = "sgd"
warmup_steps = 2
[data]
source = {{ kind = "phantom", cases = 4, shape = [24, 24, 24], structures = 2, seed = 5 }}
validation_fraction = 0.25
[loader]
workers = {workers}
queue_length = 4
samples_per_volume = 2
[train]
epochs = {epochs}
steps_per_epoch = 12
max_validation_cases = 1
checkpoint_every_minutes = {checkpoint_every_minutes}
"#
    )
}

/// Writes an experiment's `text` as `DIR/NAME.toml`.
pub fn write_experiment(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("the test's temporary folder is writable");
    path
}
