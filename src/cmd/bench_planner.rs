//! `voxplan bench planner`: plans every configuration of a zoo, runs real training steps of each in its
//! own child process, and prints predicted against measured peak, the relative error, and the phase where
//! the two disagree most; the hold-out half's median and worst error close the table.

use std::path::PathBuf;

use anyhow::Context;
use voxplan_pipeline::step_probe::{ProbeRequest, probe_in_child};
use voxplan_pipeline::{ComputeDevice, DeviceRequest};
use voxplan_planner::accuracy::{Comparison, compare, predict};
use voxplan_planner::accuracy_report::{markdown, text_header, text_row, text_summary};
use voxplan_planner::device::load_profile;
use voxplan_planner::zoo::{CPU_ZOO_TOML, CUDA_ZOO_TOML, ZooConfig, load_zoo, parse_zoo, select};
use voxplan_planner::{CpuHost, DeviceProfile, DeviceSelector, device_profile_with_cpu};

/// What both zoo commands (`bench planner`, `calibrate`) take: which steps to run and how.
#[derive(clap::Args)]
pub struct ZooRunArgs {
    /// Device whose steps are measured: cpu or cuda (cuda:N).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Zoo file; default: the built-in `configs/zoo/cpu.toml` or `configs/zoo/cuda.toml` for the device.
    #[arg(long)]
    pub zoo: Option<PathBuf>,
    /// Only these configurations (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Warm-up steps before measuring.
    #[arg(long, default_value_t = voxplan_pipeline::step_probe::DEFAULT_WARMUP_STEPS)]
    pub warmup: usize,
    /// Measured steps per configuration (each figure is the largest over them).
    #[arg(long, default_value_t = voxplan_pipeline::step_probe::DEFAULT_MEASURED_STEPS)]
    pub steps: usize,
}

impl ZooRunArgs {
    /// The device to measure on and the selected zoo entries, with where the zoo came from.
    pub fn resolve(&self) -> anyhow::Result<(ComputeDevice, Vec<ZooConfig>, String)> {
        let compute = compute_device(&self.device)?;
        let (zoo, origin) = zoo_for(self.zoo.as_deref(), compute)?;
        Ok((compute, select(zoo, &self.only)?, origin))
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: ZooRunArgs,
    /// Plan with a calibrated profile (written by `voxplan calibrate`) instead of the embedded constants.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Write the Markdown table (for docs/planner-accuracy.md) here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write every prediction and measurement as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Reuse the measurements in this JSON (written by an earlier `--json`) for configurations whose entry is
    /// unchanged, and only re-plan them: the probe's measurement does not depend on the planner's constants,
    /// so a model change can be checked against the same real steps without re-running them.
    #[arg(long)]
    measured: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (compute, zoo, zoo_origin) = args.run.resolve()?;
    let profile = planning_profile(compute, args.profile.as_deref())?;
    eprintln!(
        "{} configurations from {} on {} (planner constants: {})",
        zoo.len(),
        zoo_origin,
        profile.name,
        profile.backend.source
    );
    let earlier: Vec<Comparison> = match &args.measured {
        Some(path) => {
            serde_json::from_str(&std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => Vec::new(),
    };
    println!("{}", text_header());
    let mut results = Vec::new();
    for cfg in &zoo {
        let reused = earlier.iter().find(|e| e.config.as_ref() == Some(cfg)).map(|e| e.measured);
        let c = match reused {
            Some(m) => compare(cfg, predict(cfg, &profile)?, m),
            None => measure(cfg, compute, &profile, args.run.warmup, args.run.steps)?,
        };
        println!("{}", text_row(&c));
        results.push(c);
    }
    println!("{}", text_summary(&results));
    if let Some(path) = &args.markdown {
        std::fs::write(path, markdown(&results, &profile.name))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Plans and measures one configuration (the measurement in a child process of this binary).
pub fn measure(
    cfg: &ZooConfig,
    compute: ComputeDevice,
    profile: &DeviceProfile,
    warmup: usize,
    steps: usize,
) -> anyhow::Result<Comparison> {
    let predicted = predict(cfg, profile)?;
    let exe = std::env::current_exe().context("locating the voxplan binary for the probe child")?;
    let req = ProbeRequest { warmup_steps: warmup, measured_steps: steps, ..ProbeRequest::new(cfg.clone(), compute) };
    let measured = probe_in_child(&exe, &req)?;
    Ok(compare(cfg, predicted, measured))
}

/// `cpu` or `cuda[:N]`. A CUDA device is not probed here: that would create a CUDA context in this parent
/// process, whose memory the driver's figure for every child would then include. A device that does not
/// work makes the first child fail with the reason.
pub fn compute_device(text: &str) -> anyhow::Result<ComputeDevice> {
    match text.parse::<DeviceRequest>()? {
        DeviceRequest::Cuda(i) => Ok(ComputeDevice::Cuda(i)),
        other => Ok(voxplan_pipeline::device::resolve(other)?),
    }
}

/// The zoo to run and where it came from: `path` when given, else the zoo compiled in for the device kind.
pub fn zoo_for(path: Option<&std::path::Path>, compute: ComputeDevice) -> anyhow::Result<(Vec<ZooConfig>, String)> {
    if let Some(path) = path {
        return Ok((load_zoo(path)?, path.display().to_string()));
    }
    let (text, origin) = match compute {
        ComputeDevice::Cpu => (CPU_ZOO_TOML, "configs/zoo/cpu.toml (built in)"),
        ComputeDevice::Cuda(_) => (CUDA_ZOO_TOML, "configs/zoo/cuda.toml (built in)"),
    };
    Ok((parse_zoo(text, origin)?, origin.to_string()))
}

/// The device profile predictions are made with: the device's own, with a calibrated backend if given.
pub fn planning_profile(compute: ComputeDevice, profile: Option<&std::path::Path>) -> anyhow::Result<DeviceProfile> {
    let selector = match compute {
        ComputeDevice::Cpu => DeviceSelector::Cpu,
        ComputeDevice::Cuda(i) => DeviceSelector::Cuda(i),
    };
    // Predictions are compared with steps measured in child processes here: this machine as it is (their
    // rayon pools follow the same rule), not a CPU stated for `voxplan plan`.
    let mut device = device_profile_with_cpu(&selector, CpuHost::this_machine())?;
    if let Some(path) = profile {
        let file = load_profile(path)?;
        anyhow::ensure!(
            file.backend.kind == device.backend.kind,
            "{} is a {:?} profile, but the device runs {:?}",
            path.display(),
            file.backend.kind,
            device.backend.kind
        );
        device.backend = file.backend;
    }
    Ok(device)
}
