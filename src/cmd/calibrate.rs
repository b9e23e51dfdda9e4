//! `voxplan calibrate`: runs real steps of a zoo's calibration half (each in its own child process), fits
//! the planner's backend constants to them with `planner::calibration::fit`, and writes a profile TOML that
//! says how it was obtained. The hold-out half is never measured here, so `voxplan bench planner --profile`
//! on it shows the accuracy a user of the profile can expect.

use std::path::PathBuf;

use anyhow::Context;
use voxplan_pipeline::step_probe::{ProbeRequest, probe_in_child};
use voxplan_planner::accuracy::simulate_config;
use voxplan_planner::calibration::{Sample, fit, profile_file, profile_toml};
use voxplan_planner::device::{CalibrationRecord, embedded_backend_model_for_this_machine};
use voxplan_planner::zoo::ZooHalf;

use crate::cmd::bench_planner::{ZooRunArgs, planning_profile};

#[derive(clap::Args)]
pub struct Args {
    /// Which steps to run; only the zoo's `half = "calibration"` entries are measured.
    #[command(flatten)]
    run: ZooRunArgs,
    /// Where to write the profile (e.g. configs/devices/flex-calibrated.toml).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (compute, zoo, zoo_origin) = args.run.resolve()?;
    let zoo: Vec<_> = zoo.into_iter().filter(|c| c.half == ZooHalf::Calibration).collect();
    anyhow::ensure!(zoo.len() >= 3, "{} has {} calibration entries; the fit needs at least 3", zoo_origin, zoo.len());
    // Components are simulated with the embedded constants, which the fit then rescales; its intercept
    // replaces the whole step overhead, per-thread scratch included.
    let mut device = planning_profile(compute, None)?;
    device.backend = embedded_backend_model_for_this_machine(device.backend.kind)?;
    let exe = std::env::current_exe().context("locating the voxplan binary for the probe child")?;
    let mut samples = Vec::new();
    for cfg in &zoo {
        let timeline = simulate_config(cfg, cfg.batch, &device)?;
        let req = ProbeRequest {
            warmup_steps: args.run.warmup,
            measured_steps: args.run.steps,
            ..ProbeRequest::new(cfg.clone(), compute)
        };
        let measured = probe_in_child(&exe, &req)?;
        // Compare like with like: the fit sees the step's bytes, not the process's fixed overhead.
        let mut components = timeline.peak_components;
        components.fixed_bytes = 0;
        println!(
            "{:<28} predicted {:>8.1} MiB (embedded constants)  measured {:>8.1} MiB",
            cfg.name,
            (timeline.peak_bytes - device.backend.fixed_overhead_bytes) as f64 / (1u64 << 20) as f64,
            measured.peak_bytes as f64 / (1u64 << 20) as f64
        );
        samples.push(Sample { components, measured_bytes: measured.peak_bytes });
    }
    let fitted = fit(&samples)?;
    println!(
        "fit: activation scale ×{:.4}, workspace factors ×{:.4}, step overhead {:.1} MiB; residual {:.2} % rms over {} samples",
        fitted.activation_scale,
        fitted.workspace_factor_scale,
        fitted.fixed_overhead_bytes as f64 / (1u64 << 20) as f64,
        100.0 * fitted.rms_relative_error,
        samples.len()
    );
    let record = CalibrationRecord {
        machine: machine_description(&device.name),
        date: utc_now(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        zoo: zoo_origin.clone(),
        samples: samples.len(),
        rms_relative_error: fitted.rms_relative_error,
        activation_scale_factor: fitted.activation_scale,
        workspace_factor_scale: fitted.workspace_factor_scale,
    };
    let text = profile_toml(&profile_file(&device.backend, &fitted, record))?;
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// The CPU model (from /proc/cpuinfo where there is one) and the device name the planner uses.
fn machine_description(device: &str) -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string())
    });
    match model {
        Some(m) => format!("{device}, {m}"),
        None => device.to_string(),
    }
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock.
fn utc_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", now.year(), u8::from(now.month()), now.day(), now.hour(), now.minute())
}
