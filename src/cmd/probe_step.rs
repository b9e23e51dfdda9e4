//! `voxplan probe-step` (hidden): measures one zoo configuration's training step in this process and
//! prints the measurement as JSON. `bench planner` and `calibrate` run it as a child process per
//! configuration, so that heap peaks and allocator state never carry over between configurations.

use std::io::Read;

use anyhow::Context;
use voxplan_pipeline::step_probe::{ProbeRequest, probe};

/// Reads a `ProbeRequest` JSON on stdin, writes the `MeasuredStep` JSON on stdout.
pub fn run() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("reading the probe request on stdin")?;
    let req: ProbeRequest = serde_json::from_str(&input).context("parsing the probe request")?;
    let measured = probe(&req).with_context(|| format!("probing {}", req.config.name))?;
    println!("{}", serde_json::to_string(&measured)?);
    Ok(())
}
