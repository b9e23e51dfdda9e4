//! `voxplan slurm`: writes (and with `--submit`, submits) an sbatch script sized from the experiment's plan
//! for a GPU from the built-in table (docs/jobs.md).

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use voxplan_jobs::slurm::{DEFAULT_SIGNAL_SECONDS, Gres, SlurmRequest, sbatch_script};
use voxplan_pipeline::Experiment;
use voxplan_pipeline::job_plan::PlanInputs;
use voxplan_planner::{DeviceSelector, device_profile, format_bytes};

use crate::exit::BadInput;

#[derive(clap::Args)]
pub struct Args {
    /// The experiment TOML (copied into the run directory; the job trains that copy).
    experiment: PathBuf,
    /// The cluster's GPU, from the built-in table (T4, V100-32GB, A100-80GB, H100, …): what the job is
    /// planned for.
    #[arg(long)]
    gpu: String,
    #[arg(long)]
    partition: Option<String>,
    /// Time limit, as sbatch takes it (`2-00:00:00`, `12:00:00`).
    #[arg(long)]
    time: Option<String>,
    #[arg(long)]
    account: Option<String>,
    /// The site shares cards in shards of this many GiB: ask for enough shards to hold the planned
    /// budget (`--gres=shard:N`) instead of a whole card, and train within them.
    #[arg(long)]
    shard_gib: Option<f64>,
    /// The run directory (default: runs/<experiment name>, made absolute).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// The device inside the job (`cuda:0`: the job sees its own cards only); `cpu` for a test cluster.
    #[arg(long, default_value = "cuda:0")]
    device: String,
    /// Seconds before the time limit at which the job checkpoints (sbatch --signal=B:USR1@S).
    #[arg(long, default_value_t = DEFAULT_SIGNAL_SECONDS)]
    signal_seconds: u32,
    /// One more #SBATCH option, verbatim (repeatable), e.g. --sbatch=--qos=long.
    #[arg(long = "sbatch", allow_hyphen_values = true)]
    sbatch_options: Vec<String>,
    /// Where to write the script (default: <run dir>/slurm.sbatch).
    #[arg(long)]
    script: Option<PathBuf>,
    /// Submit it with `sbatch` and print the job id.
    #[arg(long)]
    submit: bool,
    /// More `voxplan train` options, after `--`.
    #[arg(last = true)]
    extra: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let experiment = Experiment::load(Some(&args.experiment))?;
    let profile = device_profile(&DeviceSelector::Gpu(args.gpu.clone()))?;
    let inputs = PlanInputs::read(&experiment).context("reading the experiment's dataset")?;
    let report = inputs.plan(&profile, None)?;
    let budgets = inputs.training_budgets(&profile)?.ok_or_else(|| {
        voxplan_jobs::JobsError::DoesNotFit(format!(
            "experiment {:?} does not fit a whole {}",
            experiment.name, profile.name
        ))
    })?;
    let (gres, budget_bytes) = match args.shard_gib {
        None => (Gres::Gpus(1), None),
        Some(g) if g.is_finite() && g > 0.0 => {
            let shard = (g * (1u64 << 30) as f64) as u64;
            let shards = budgets.full_bytes.div_ceil(shard.max(1)).max(1);
            (Gres::Shards(shards as usize), Some(shards * shard))
        }
        Some(g) => return Err(BadInput(format!("--shard-gib must be a positive number, got {g}")).into()),
    };
    let run_dir = std::path::absolute(args.run_dir.unwrap_or_else(|| PathBuf::from("runs").join(&experiment.name)))?;
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let snapshot = run_dir.join("experiment.toml");
    if std::path::absolute(&args.experiment)? != snapshot {
        std::fs::copy(&args.experiment, &snapshot).with_context(|| format!("copying to {}", snapshot.display()))?;
    }
    let host = inputs.host_memory_bytes(&report.training, report.parameters);
    let request = SlurmRequest {
        job_name: experiment.name.clone(),
        voxplan: std::env::current_exe().context("locating the voxplan binary")?,
        experiment: snapshot,
        run_dir: run_dir.clone(),
        device: args.device,
        budget_bytes,
        gres: Some(gres),
        cpus_per_task: experiment.loader.workers + 1,
        mem_mib: host.div_ceil(1 << 20),
        time: args.time,
        partition: args.partition,
        account: args.account,
        signal_seconds: args.signal_seconds,
        extra: args.sbatch_options,
        train_args: args.extra,
    };
    let script = args.script.unwrap_or_else(|| run_dir.join("slurm.sbatch"));
    std::fs::write(&script, sbatch_script(&request)).with_context(|| format!("writing {}", script.display()))?;
    let t = &report.training;
    println!("script       {}", script.display());
    println!(
        "plan         {} on {}: patch {:?}, batch {} × {} accumulation, {:?}, predicted peak {}",
        experiment.name,
        profile.name,
        t.patch_size,
        t.batch_size,
        t.accumulation_steps,
        t.precision,
        format_bytes(t.predicted_peak_bytes)
    );
    println!(
        "asks for     {}, {} CPUs, {} host memory",
        match gres {
            Gres::Gpus(n) => format!("{n} GPU(s)"),
            Gres::Shards(n) => format!("{n} shard(s) = {}", format_bytes(budget_bytes.unwrap_or(0))),
        },
        request.cpus_per_task,
        format_bytes(host)
    );
    if args.submit {
        let out = Command::new("sbatch")
            .arg("--parsable")
            .arg(&script)
            .output()
            .context("running sbatch (is this a Slurm submit host?)")?;
        if !out.status.success() {
            anyhow::bail!("sbatch refused {}: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        let id = String::from_utf8_lossy(&out.stdout);
        let id = id.trim().split(';').next().unwrap_or_default();
        println!("submitted    batch job {id}");
    }
    Ok(())
}
