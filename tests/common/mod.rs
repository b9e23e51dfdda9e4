//! How the end-to-end tests run the `voxplan` binary that cargo built for them.
#![allow(dead_code)]

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
