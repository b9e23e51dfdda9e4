//! How the end-to-end tests run the `voxplan` binary that cargo built for them.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `voxplan args…`: (exit success, stdout, stderr).
pub fn voxplan_text(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_voxplan")).args(args).output().expect("run voxplan");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a training or prediction command on the 2 cores CI has, logging only warnings.
pub fn voxplan_quiet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voxplan"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .env("VOXPLAN_LOG", "warn")
        .output()
        .expect("the voxplan binary runs")
}
